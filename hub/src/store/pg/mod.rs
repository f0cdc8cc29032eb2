//! The event store on PostgreSQL, for several hubs sharing one database (design and
//! proof in docs/architecture.md, "Several hubs on PostgreSQL").
//!
//! Each hub still group-commits its own requests through the one writer loop
//! ([`shelfsync_common::sqlite::group_commit`], on [`PgDb`] here), and runs the same batch
//! logic as on SQLite (`store/writer.rs`). What changes is where a batch starts: it takes
//! the row lock on `log_head` first (`batches.rs`), so batches of all hubs commit one
//! after the other; under that lock it brings its in-memory heads up to date with what
//! other hubs committed since its own last batch, and hands out positions from the locked
//! head. Positions are therefore gap-free and in commit order across hubs, and every
//! decision (expected version, stock rules, idempotency by id, names) is taken against
//! the database's current state, not one process's memory.
//!
//! Reads go through a pool of connections (`reads.rs`); each hub's bus is fed from the
//! log by position, woken by `LISTEN/NOTIFY` (`follower.rs`), so a lost notification
//! costs latency, never an event.

mod batches;
pub(super) mod cluster;
mod follower;
mod offline;
pub(super) mod reads;
mod rows;

pub(in crate::store) use batches::PgBatches;
pub use follower::Follower;
pub use offline::PgLog;
pub use reads::PgReads;

use super::writer::{Heads, Started, SETTINGS};
use super::ReadError;
use crate::bus::EventBus;
use postgres::{Client, NoTls};
use shelfsync_common::sqlite::group_commit::Writer;
use std::time::Duration;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// `postgres://user@host:port/database` (libpq's URL form, or its `key=value` form).
    pub url: String,
    /// Most connections this hub opens for reads (the writer and the follower have one
    /// each besides).
    pub pool_size: usize,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Longest a statement may run before PostgreSQL cancels it (0 = no limit). Also
    /// bounds how long a batch waits for another hub's write lock.
    pub statement_timeout: Duration,
}

/// The event store's migrations on PostgreSQL, oldest first.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_event_store",
        include_str!("../../../migrations/postgres/0001_event_store.sql"),
    ),
    (
        "0002_cluster",
        include_str!("../../../migrations/postgres/0002_cluster.sql"),
    ),
    (
        "0003_enrollment_codes",
        include_str!("../../../migrations/postgres/0003_enrollment_codes.sql"),
    ),
];

/// The advisory lock key that serializes migrations of hubs starting at once.
const MIGRATION_LOCK: i64 = 0x5348_454c_4653_0001;

/// The notification channel a commit wakes the other hubs on.
pub const CHANNEL: &str = "shelfsync_log";
/// The notification channel a revocation is announced on (the payload is the store's id),
/// so that every hub ends the revoked store's open push streams, not only the one that
/// took the revocation.
pub const REVOKED_CHANNEL: &str = "shelfsync_revoked";

impl PgSettings {
    /// The connection settings: the URL's, with the timeouts and the application name.
    pub fn config(&self) -> Result<tokio_postgres::Config, ReadError> {
        let mut config: tokio_postgres::Config = self.url.parse()?;
        config.connect_timeout(self.connect_timeout);
        config.application_name("shelfsync-hub");
        let timeout_ms = self.statement_timeout.as_millis();
        config.options(format!(
            "-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}"
        ));
        Ok(config)
    }

    /// Opens one blocking connection (for the writer and follower threads).
    pub fn connect(&self) -> Result<Client, ReadError> {
        Ok(postgres::Config::from(self.config()?).connect(NoTls)?)
    }
}

/// Connects, migrates, loads the heads and starts the writer thread (blocking: run it
/// off the async runtime).
pub fn start(settings: PgSettings, bus: EventBus) -> Result<Started<Writer<PgBatches>>, ReadError> {
    let mut client = settings.connect()?;
    migrate(&mut client)?;
    let id_key = id_key(&mut client)?;
    let head = client
        .query_one("SELECT head FROM log_head", &[])?
        .try_get::<_, i64>(0)? as u64;
    let mut heads = Heads::starting_at(head + 1);
    batches::reload_streams(&mut client, &mut heads, 0)?;
    batches::reload_stores(&mut client, &mut heads)?;
    heads.log_opened();
    let batches = PgBatches::new(heads, bus);
    let writer =
        Writer::start(PgDb::new(settings, client), batches, SETTINGS).map_err(|e| ReadError::Join(e.to_string()))?;
    Ok(Started { writer, head, id_key })
}

/// Brings the database to this build's schema. Hubs starting at once take turns on a
/// transaction-level advisory lock, so exactly one applies each migration.
pub fn migrate(client: &mut Client) -> Result<usize, ReadError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )?;
    let current: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])?
        .get(0);
    let current = current as usize;
    if current > MIGRATIONS.len() {
        return Err(ReadError::Migration(shelfsync_common::sqlite::MigrationError::TooNew {
            found: current,
            known: MIGRATIONS.len(),
        }));
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&((index + 1) as i64), name],
        )?;
        tracing::info!(migration = name, "applied PostgreSQL schema migration");
    }
    tx.commit()?;
    Ok(MIGRATIONS.len() - current)
}

/// The key that derives event ids from idempotency keys, made by the first hub and read
/// by the others (see [`shelfsync_common::IdKey`]).
pub fn id_key(client: &mut Client) -> Result<shelfsync_common::IdKey, ReadError> {
    let fresh: [u8; 32] = rand::random();
    client.execute(
        "INSERT INTO secrets (name, value) VALUES ('id_key', $1) ON CONFLICT (name) DO NOTHING",
        &[&&fresh[..]],
    )?;
    let row = client.query_one("SELECT value FROM secrets WHERE name = 'id_key'", &[])?;
    let bytes: &[u8] = row.try_get(0)?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ReadError::Corrupt("the stored id key is not 32 bytes".into()))?;
    Ok(shelfsync_common::IdKey::from_bytes(bytes))
}

/// The write connection, as the group-commit writer's database. A connection that broke
/// (PostgreSQL restarted, failed over, or the network dropped) is replaced at the start of
/// the next batch; the batch it broke in rolled back and its callers were told to retry.
pub struct PgDb {
    settings: PgSettings,
    client: Option<Client>,
}

impl PgDb {
    /// The writer's database on an open connection.
    pub fn new(settings: PgSettings, client: Client) -> Self {
        Self {
            settings,
            client: Some(client),
        }
    }

    fn client(&mut self) -> Result<&mut Client, ReadError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let client = self.settings.connect()?;
            tracing::info!("reconnected the event store's writer to PostgreSQL");
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| ReadError::Join("no PostgreSQL connection".into()))
    }
}

impl shelfsync_common::sqlite::group_commit::Database for PgDb {
    type Tx<'t> = postgres::Transaction<'t>;
    type Error = ReadError;

    /// Starts the batch's transaction and takes the cluster's write lock (the `log_head`
    /// row) before the writer drains its queue: what arrives while another hub commits
    /// joins this batch rather than waiting for the next one.
    fn begin(&mut self) -> Result<postgres::Transaction<'_>, ReadError> {
        let mut tx = self.client()?.transaction()?;
        tx.execute("SELECT 1 FROM log_head FOR UPDATE", &[])?;
        Ok(tx)
    }

    fn commit(tx: postgres::Transaction<'_>) -> Result<(), ReadError> {
        Ok(tx.commit()?)
    }

    /// Nothing to do: PostgreSQL checkpoints and vacuums by itself.
    fn maintain(&mut self) -> Result<(), ReadError> {
        Ok(())
    }

    /// The blocking client does not notice a connection the server or the network closed
    /// until it uses it: after any failed batch, start the next one on a new connection.
    fn failed(&mut self) {
        self.client = None;
    }
}
