//! `shelfsync-hub migrate`: brings a stopped hub's storage to this build's schema and
//! exits, so an upgrade's migrations can run (and be seen to succeed) before the new hub
//! starts: the event log (the SQLite file, or the PostgreSQL database when
//! `storage = "postgres"`), the read model and the analytics file. The hub runs the same
//! migrations at start-up; running them twice applies nothing the second time.

use crate::config::{HubConfig, Storage};
use crate::store::schema::{self, Migrations, ANALYTICS, EVENT_STORE, READ_MODEL};
use crate::store::ReadError;
use std::path::Path;

/// Why the migrations stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A hub has the log open.
    #[error("{0} is in use: stop the hub first")]
    InUse(String),
    /// The data directory could not be made.
    #[error("data_dir {0}: {1}")]
    DataDir(String, std::io::Error),
    /// A file or the database could not be migrated.
    #[error("{what}: {source}")]
    Failed {
        /// Which storage.
        what: String,
        /// Why.
        source: ReadError,
    },
}

/// Applies every pending migration; returns one line per storage saying what it applied.
pub fn run(config: &HubConfig) -> Result<Vec<String>, MigrateError> {
    let dir = &config.data_dir;
    shelfsync_common::sqlite::create_private_dir(dir)
        .map_err(|e| MigrateError::DataDir(dir.display().to_string(), e))?;
    let mut lines = Vec::new();
    // The log first: its lock tells whether a hub runs, before anything is touched.
    let events = dir.join(crate::EVENTS_FILE);
    let mut log = match config.storage {
        Storage::Sqlite => Some(lock_or_create(&events)?),
        Storage::Postgres => None,
    };
    match log.as_mut() {
        Some(conn) => lines.push(apply_sqlite(conn, &events, EVENT_STORE)?),
        None => lines.push(apply_postgres(config)?),
    }
    for (file, migrations) in [(crate::READ_MODEL_FILE, READ_MODEL), (crate::ANALYTICS_FILE, ANALYTICS)] {
        let path = dir.join(file);
        let mut conn = schema::open_durable(&path).map_err(|e| failed(&path, e.into()))?;
        lines.push(apply_sqlite(&mut conn, &path, migrations)?);
    }
    Ok(lines)
}

fn failed(path: &Path, source: ReadError) -> MigrateError {
    MigrateError::Failed {
        what: path.display().to_string(),
        source,
    }
}

/// The log file under an exclusive lock (a new one when there is none yet).
fn lock_or_create(path: &Path) -> Result<rusqlite::Connection, MigrateError> {
    if !path.is_file() {
        return schema::open_durable(path).map_err(|e| failed(path, e.into()));
    }
    schema::lock_exclusive(path)
        .map_err(|e| failed(path, e.into()))?
        .ok_or_else(|| MigrateError::InUse(path.display().to_string()))
}

fn apply_sqlite(conn: &mut rusqlite::Connection, path: &Path, migrations: Migrations) -> Result<String, MigrateError> {
    let applied = schema::migrate(conn, migrations).map_err(|e| failed(path, e.into()))?;
    Ok(describe(&path.display().to_string(), migrations, applied))
}

fn apply_postgres(config: &HubConfig) -> Result<String, MigrateError> {
    let what = "PostgreSQL (postgres.database_url)".to_owned();
    let fail = |source: ReadError| MigrateError::Failed {
        what: what.clone(),
        source,
    };
    let settings = config.postgres.settings().ok_or_else(|| {
        fail(ReadError::Corrupt(
            "storage = \"postgres\" needs postgres.database_url".into(),
        ))
    })?;
    let mut client = postgres::Config::from(settings.config().map_err(fail)?)
        .connect(postgres::NoTls)
        .map_err(|e| fail(e.into()))?;
    let applied = crate::store::migrate_postgres(&mut client).map_err(fail)?;
    Ok(match applied {
        0 => format!("{what}: up to date"),
        n => format!("{what}: applied {n} migrations"),
    })
}

/// "FILE: applied a, b" or "FILE: up to date (N migrations)".
fn describe(what: &str, migrations: Migrations, applied: usize) -> String {
    match applied {
        0 => format!("{what}: up to date ({} migrations)", migrations.len()),
        n => {
            let names: Vec<&str> = migrations[migrations.len() - n..]
                .iter()
                .map(|(name, _)| *name)
                .collect();
            format!("{what}: applied {}", names.join(", "))
        }
    }
}
