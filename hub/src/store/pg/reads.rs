//! The read path on PostgreSQL: a pool of asynchronous connections (tokio-postgres, on
//! the hub's runtime), and the event store's reads in PostgreSQL's dialect, each decoding
//! its rows with the same function as on SQLite.

use super::PgSettings;
use crate::store::reader::{
    envelope_from_row, stats_from_row, store_from_row, token_from_row, PageBuilder, StoreStats, TokenRecord,
    VisiblePage, EVENT_COLUMNS, LIVE_TOKEN_COLUMNS, STORES_QUERY, STORE_STATS_QUERY,
};
use crate::store::rows::sql_position;
use crate::store::ReadError;
use shelfsync_common::wire::api::StoreInfo;
use shelfsync_common::{EventEnvelope, StoreId};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::Semaphore;
use tokio_postgres::{Client, NoTls};

/// A pool of read connections to the database.
pub struct PgReads {
    settings: PgSettings,
    idle: Mutex<Vec<Client>>,
    /// Bounds the connections open at once to the configured pool size.
    permits: Semaphore,
}

impl PgReads {
    /// A pool (connections open lazily).
    pub fn new(settings: PgSettings) -> Self {
        Self {
            permits: Semaphore::new(settings.pool_size.max(1)),
            settings,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Closes the idle connections.
    pub fn close_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Runs `query` on a pooled connection (a new one when none is idle); the pool size
    /// bounds the connections in use, so a caller may wait for one. A connection that
    /// broke is not put back.
    pub async fn run<T>(&self, query: impl AsyncFnOnce(&Client) -> Result<T, ReadError>) -> Result<T, ReadError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ReadError::Join(e.to_string()))?;
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let client = match pooled {
            Some(client) if !client.is_closed() => client,
            _ => self.connect().await?,
        };
        let result = query(&client).await;
        if !client.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(client);
            }
        }
        result
    }

    async fn connect(&self) -> Result<Client, ReadError> {
        let (client, connection) = self.settings.config()?.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a PostgreSQL read connection ended");
            }
        });
        Ok(client)
    }
}

/// Events with position greater than `after`, in order, at most `limit`.
pub async fn events_after(client: &Client, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, ReadError> {
    client
        .query(
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"),
            &[&sql_position(after), &(limit as i64)],
        )
        .await?
        .iter()
        .map(envelope_from_row)
        .collect()
}

/// The position of the last committed event.
pub async fn head(client: &Client) -> Result<u64, ReadError> {
    let row = client.query_one("SELECT head FROM log_head", &[]).await?;
    Ok(row.try_get::<_, i64>(0)? as u64)
}

/// See [`crate::store::reader::visible_events_after`].
pub async fn visible_events_after(
    client: &Client,
    store: StoreId,
    after: u64,
    limit: usize,
    scan_window: u64,
) -> Result<VisiblePage, ReadError> {
    let upper = after.saturating_add(scan_window);
    let rows = client
        .query(
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 AND position <= $2 ORDER BY position"),
            &[&sql_position(after), &sql_position(upper)],
        )
        .await?;
    let mut page = PageBuilder::new(store, after, limit);
    for row in &rows {
        if !page.push(row)? {
            break;
        }
    }
    page.finish()
}

/// Every enrolled store, oldest first.
pub async fn stores(client: &Client) -> Result<Vec<StoreInfo>, ReadError> {
    client
        .query(STORES_QUERY, &[])
        .await?
        .iter()
        .map(|row| store_from_row(row, row.try_get(3)?))
        .collect()
}

/// Every store's counters.
pub async fn store_stats(client: &Client) -> Result<HashMap<StoreId, StoreStats>, ReadError> {
    client
        .query(STORE_STATS_QUERY, &[])
        .await?
        .iter()
        .map(stats_from_row)
        .collect()
}

/// Whether a store with this id is enrolled.
pub async fn store_enrolled(client: &Client, id: StoreId) -> Result<bool, ReadError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM stores WHERE id = $1)",
            &[&&id.as_bytes()[..]],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// The live token whose secret has this digest.
pub async fn live_token_by_digest(client: &Client, digest: [u8; 32]) -> Result<Option<TokenRecord>, ReadError> {
    client
        .query_opt(
            &format!("SELECT {LIVE_TOKEN_COLUMNS} FROM tokens WHERE secret_sha256 = $1 AND revoked_at IS NULL"),
            &[&&digest[..]],
        )
        .await?
        .as_ref()
        .map(token_from_row)
        .transpose()
}
