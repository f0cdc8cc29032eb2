//! The handle on the event log's writer, whichever storage it writes to: the one
//! group-commit writer running the SQLite batches or the PostgreSQL ones.

use super::pg::PgBatches;
use super::writer::{LogBatches, WriteOp};
use super::WriteError;
#[cfg(test)]
use shelfsync_common::sqlite::group_commit::Answer;
use shelfsync_common::sqlite::group_commit::{Reply, Writer};

/// A handle on the event log's writer, whichever backend it writes to.
#[derive(Clone)]
pub(super) enum LogWriter {
    /// The embedded SQLite file.
    Sqlite(Writer<LogBatches>),
    /// The PostgreSQL database several hubs share.
    Postgres(Writer<PgBatches>),
}

impl LogWriter {
    /// Queues `write` and waits for its answer (after its batch committed).
    pub(super) async fn submit<T>(&self, write: impl FnOnce(Reply<T, WriteError>) -> WriteOp) -> Result<T, WriteError> {
        match self {
            LogWriter::Sqlite(writer) => writer.submit(write).await,
            LogWriter::Postgres(writer) => writer.submit(write).await,
        }
    }

    /// Queues `write` and returns at once with the channel its answer will come on.
    #[cfg(test)]
    pub(super) async fn queue<T>(
        &self,
        write: impl FnOnce(Reply<T, WriteError>) -> WriteOp,
    ) -> Result<Answer<T, WriteError>, WriteError> {
        match self {
            LogWriter::Sqlite(writer) => writer.queue(write).await,
            LogWriter::Postgres(writer) => writer.queue(write).await,
        }
    }

    /// Queues the database's maintenance and returns at once with its answer's channel.
    #[cfg(test)]
    pub(super) async fn queue_checkpoint(&self) -> Result<Answer<(), WriteError>, WriteError> {
        match self {
            LogWriter::Sqlite(writer) => writer.queue_checkpoint().await,
            LogWriter::Postgres(writer) => writer.queue_checkpoint().await,
        }
    }

    /// The database's maintenance (SQLite: the WAL checkpoint), alone between batches.
    pub(super) async fn checkpoint(&self) -> Result<(), WriteError> {
        match self {
            LogWriter::Sqlite(writer) => writer.checkpoint().await,
            LogWriter::Postgres(writer) => writer.checkpoint().await,
        }
    }

    /// Finishes what is queued and stops.
    pub(super) async fn close(&self) {
        match self {
            LogWriter::Sqlite(writer) => writer.close().await,
            LogWriter::Postgres(writer) => writer.close().await,
        }
    }
}
