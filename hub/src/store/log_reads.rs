//! The event store's reads, whichever backend holds the log: SQLite's read-only
//! connections, or PostgreSQL's pool. Each read is one query with one meaning on both.

use super::pg::{self, PgReads};
use super::reader::{self, ReadPool, StoreStats, TokenRecord, VisiblePage};
use super::ReadError;
use shelfsync_common::wire::api::StoreInfo;
use shelfsync_common::{EventEnvelope, StoreId};
use std::collections::HashMap;
use std::sync::Arc;

/// Where the log is read from.
#[derive(Clone)]
pub(crate) enum LogReads {
    /// The SQLite file's read-only connections.
    Sqlite(Arc<ReadPool>),
    /// The PostgreSQL database's pool.
    Postgres(Arc<PgReads>),
}

impl LogReads {
    /// Events after `after` in position order, at most `limit`.
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, ReadError> {
        match self {
            LogReads::Sqlite(reads) => reads.run(move |conn| reader::events_after(conn, after, limit)).await,
            LogReads::Postgres(reads) => {
                reads
                    .run(async |client| pg::reads::events_after(client, after, limit).await)
                    .await
            }
        }
    }

    /// The position of the last committed event.
    pub async fn head(&self) -> Result<u64, ReadError> {
        match self {
            LogReads::Sqlite(reads) => reads.run(reader::head).await,
            LogReads::Postgres(reads) => reads.run(async |client| pg::reads::head(client).await).await,
        }
    }

    /// See [`reader::visible_events_after`].
    pub async fn visible_after(
        &self,
        store: StoreId,
        after: u64,
        limit: usize,
        scan_window: u64,
    ) -> Result<VisiblePage, ReadError> {
        match self {
            LogReads::Sqlite(reads) => {
                reads
                    .run(move |conn| reader::visible_events_after(conn, store, after, limit, scan_window))
                    .await
            }
            LogReads::Postgres(reads) => {
                reads
                    .run(async |client| pg::reads::visible_events_after(client, store, after, limit, scan_window).await)
                    .await
            }
        }
    }

    /// Whether `store` is enrolled.
    pub async fn store_enrolled(&self, store: StoreId) -> Result<bool, ReadError> {
        match self {
            LogReads::Sqlite(reads) => reads.run(move |conn| reader::store_enrolled(conn, store)).await,
            LogReads::Postgres(reads) => {
                reads
                    .run(async |client| pg::reads::store_enrolled(client, store).await)
                    .await
            }
        }
    }

    /// Every enrolled store.
    pub async fn stores(&self) -> Result<Vec<StoreInfo>, ReadError> {
        match self {
            LogReads::Sqlite(reads) => reads.run(reader::stores).await,
            LogReads::Postgres(reads) => reads.run(async |client| pg::reads::stores(client).await).await,
        }
    }

    /// Every enrolled store and every store's counters, read together.
    pub async fn stores_with_stats(&self) -> Result<(Vec<StoreInfo>, HashMap<StoreId, StoreStats>), ReadError> {
        match self {
            LogReads::Sqlite(reads) => {
                reads
                    .run(|conn| Ok((reader::stores(conn)?, reader::store_stats(conn)?)))
                    .await
            }
            LogReads::Postgres(reads) => {
                reads
                    .run(async |client| Ok((pg::reads::stores(client).await?, pg::reads::store_stats(client).await?)))
                    .await
            }
        }
    }

    /// The live token whose secret has this digest.
    pub async fn live_token(&self, digest: [u8; 32]) -> Result<Option<TokenRecord>, ReadError> {
        match self {
            LogReads::Sqlite(reads) => reads.run(move |conn| reader::live_token_by_digest(conn, &digest)).await,
            LogReads::Postgres(reads) => {
                reads
                    .run(async |client| pg::reads::live_token_by_digest(client, digest).await)
                    .await
            }
        }
    }

    /// Takes or renews `holder`'s lease on `job`; whether `holder` runs it. On SQLite, one
    /// hub runs everything.
    pub async fn lead(&self, job: &str, holder: &str, lease: std::time::Duration) -> Result<bool, ReadError> {
        match self {
            LogReads::Sqlite(_) => Ok(true),
            LogReads::Postgres(reads) => pg::cluster::lead(reads, job, holder, lease).await,
        }
    }

    /// Shares this hub's view of its agents with the other hubs (nothing to share on SQLite).
    pub async fn share_presence(&self, hub: &str, seen: &[(StoreId, crate::fleet::Presence)]) -> Result<(), ReadError> {
        match self {
            LogReads::Sqlite(_) => Ok(()),
            LogReads::Postgres(reads) => pg::cluster::share_presence(reads, hub, seen).await,
        }
    }

    /// The other hubs' views of their agents (none on SQLite).
    pub async fn others_presence(&self, hub: &str) -> Result<Vec<(StoreId, crate::fleet::Presence)>, ReadError> {
        match self {
            LogReads::Sqlite(_) => Ok(Vec::new()),
            LogReads::Postgres(reads) => pg::cluster::others_presence(reads, hub).await,
        }
    }

    /// Closes idle connections (at shutdown).
    pub fn close_idle(&self) {
        match self {
            LogReads::Sqlite(reads) => reads.close_idle(),
            LogReads::Postgres(reads) => reads.close_idle(),
        }
    }
}
