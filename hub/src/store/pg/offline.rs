//! The log on PostgreSQL read by a tool that is not a hub (the end-to-end checker, an
//! operator's check): one connection of its own and the hub's own read functions, so it
//! decodes rows exactly as the hubs do. The PostgreSQL twin of [`crate::store::LogFile`].

use super::reads;
use crate::store::ReadError;
use shelfsync_common::EventEnvelope;
use tokio_postgres::{Client, NoTls};

/// A read connection to a shared log.
pub struct PgLog {
    client: Client,
}

impl PgLog {
    /// Connects to the database at `url` (libpq's URL or `key=value` form).
    pub async fn connect(url: &str) -> Result<Self, ReadError> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a PostgreSQL log reader's connection ended");
            }
        });
        Ok(Self { client })
    }

    /// The position of the last committed event (0 when empty).
    pub async fn head(&self) -> Result<u64, ReadError> {
        reads::head(&self.client).await
    }

    /// Events after `after` in position order, at most `limit`.
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, ReadError> {
        reads::events_after(&self.client, after, limit).await
    }
}
