//! `shelfsync-hub migrate-storage`: moves a hub's event store from its SQLite file to a
//! PostgreSQL database that several hubs will share (docs/operations.md, "Moving a hub
//! from SQLite to PostgreSQL").
//!
//! It owns the offline side of the move and nothing else: the two ends are opened here
//! (the file under an exclusive lock, so a hub still running on it is detected and none
//! can start on it meanwhile; the database after checking that no hub is connected), the
//! schema is brought up with the hubs' own migrations, [`copy`] copies and verifies, and
//! [`tables`] says what the tables are. The read model is not copied: a hub on
//! PostgreSQL projects its own from the log, as after `rebuild-projections`.

mod copy;
mod tables;
mod verify;

pub use copy::{Copied, Summary, CHUNK_EVENTS};

use crate::config::HubConfig;
use crate::store::{PgSettings, ReadError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The application name the copy connects with (hubs connect as `shelfsync-hub`).
const APPLICATION_NAME: &str = "shelfsync-hub migrate-storage";

/// The advisory lock that keeps two copies out of one database at once.
const COPY_LOCK: i64 = 0x5348_454c_4653_0002;

/// Why the copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// `--from` / `--to` do not say what they should.
    #[error("{0}")]
    Usage(String),
    /// The SQLite file cannot be read as a hub's log.
    #[error("the SQLite log: {0}")]
    Source(String),
    /// A hub has the SQLite file open.
    #[error("{0} is in use: stop the hub that runs on it first (and any other program that has it open)")]
    InUse(PathBuf),
    /// The database may not be copied into.
    #[error("PostgreSQL: {0}")]
    Target(String),
    /// The two sides differ after the copy.
    #[error("verification failed: {0}")]
    Mismatch(String),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// The event store's helpers failed (migrations, settings).
    #[error(transparent)]
    Store(#[from] ReadError),
}

/// The SQLite log `--from` names: `sqlite:PATH`, PATH being the log file or the data
/// directory that holds it; the configured data directory when not given.
pub fn source_path(from: Option<&str>, config: &HubConfig) -> Result<PathBuf, MigrateError> {
    let path = match from {
        None => config.data_dir.clone(),
        Some(from) => PathBuf::from(
            from.strip_prefix("sqlite:")
                .filter(|path| !path.is_empty())
                .ok_or_else(|| MigrateError::Usage(format!("--from must be sqlite:PATH, got {from:?}")))?,
        ),
    };
    Ok(if path.is_dir() {
        path.join(crate::EVENTS_FILE)
    } else {
        path
    })
}

/// The database `--to` names: `postgres:URL` (a `postgres://` URL or libpq's `key=value`
/// form), or `postgres` alone (or nothing) for the configured `postgres.database_url`
/// (`SHELFSYNC_HUB_POSTGRES__DATABASE_URL`), which keeps a password off the command line.
pub fn target_settings(to: Option<&str>, config: &HubConfig) -> Result<PgSettings, MigrateError> {
    let configured = config.postgres.database_url.as_deref().map(str::to_owned);
    let url = match to {
        None | Some("postgres" | "postgres:") => configured,
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Some(url.to_owned()),
        Some(to) => Some(
            to.strip_prefix("postgres:")
                .ok_or_else(|| MigrateError::Usage(format!("--to must be postgres:URL, got {to:?}")))?
                .to_owned(),
        ),
    };
    let url = url.ok_or_else(|| {
        MigrateError::Usage(
            "no database: pass --to postgres:URL or set postgres.database_url (SHELFSYNC_HUB_POSTGRES__DATABASE_URL)"
                .into(),
        )
    })?;
    Ok(PgSettings {
        url,
        pool_size: 1,
        connect_timeout: Duration::from_millis(config.postgres.connect_timeout_ms),
        // A copy runs as long as it takes.
        statement_timeout: Duration::ZERO,
    })
}

/// Copies the log at `source` into the database `target` (unless `check_only`) and
/// verifies both sides; shows progress bars on stderr when `progress`. Blocking.
pub fn run(source: &Path, target: &PgSettings, check_only: bool, progress: bool) -> Result<Summary, MigrateError> {
    let sqlite = open_source(source)?;
    let mut pg = open_target(target, !check_only)?;
    let done = copy_then_verify(&sqlite, &mut pg, check_only, progress);
    // Released now, failed or not, rather than when the server notices the connection
    // closed, so that a run right after this one finds it free.
    let released = pg.execute("SELECT pg_advisory_unlock($1)", &[&COPY_LOCK]);
    let summary = done?;
    released?;
    Ok(summary)
}

fn copy_then_verify(
    sqlite: &rusqlite::Connection,
    pg: &mut postgres::Client,
    check_only: bool,
    progress: bool,
) -> Result<Summary, MigrateError> {
    let copied = match check_only {
        true => None,
        false => Some(copy::copy(sqlite, pg, progress)?),
    };
    let summary = copy::verify(sqlite, pg, progress)?;
    Ok(Summary { copied, ..summary })
}

/// Opens the log file with an exclusive lock, held until the copy ends. A hub keeps its
/// connections to the file open while it runs (WAL mode), so taking the lock fails at
/// once while one does; and a hub started during the copy fails to open the file.
fn open_source(path: &Path) -> Result<rusqlite::Connection, MigrateError> {
    if !path.is_file() {
        return Err(MigrateError::Source(format!("no event log at {}", path.display())));
    }
    let conn = crate::store::schema::lock_exclusive(path)?.ok_or_else(|| MigrateError::InUse(path.to_owned()))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let expected = crate::store::schema::EVENT_STORE.len() as i64;
    if version != expected {
        return Err(MigrateError::Source(format!(
            "{} is at schema version {version}, this build's is {expected}: run `shelfsync-hub migrate` \
             (it migrates the file), then copy",
            path.display()
        )));
    }
    Ok(conn)
}

/// Connects to the database, makes sure no hub and no other copy uses it, and brings it
/// to this build's schema when `migrate`.
fn open_target(settings: &PgSettings, migrate: bool) -> Result<postgres::Client, MigrateError> {
    let mut config = settings.config()?;
    config.application_name(APPLICATION_NAME);
    let mut client = postgres::Config::from(config).connect(postgres::NoTls)?;
    // A copy killed a moment ago holds the lock until PostgreSQL notices: wait a little.
    client.batch_execute("SET lock_timeout = '5s'")?;
    match client.execute("SELECT pg_advisory_lock($1)", &[&COPY_LOCK]) {
        Err(error) if error.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            return Err(MigrateError::Target(
                "another migrate-storage is copying into this database".into(),
            ))
        }
        other => other?,
    };
    client.batch_execute("SET lock_timeout = 0")?;
    let hubs: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'shelfsync-hub'",
            &[],
        )?
        .try_get(0)?;
    if hubs > 0 {
        return Err(MigrateError::Target(format!(
            "{hubs} hub connections are open on this database: stop the hubs that use it before copying into it"
        )));
    }
    if migrate {
        crate::store::migrate_postgres(&mut client)?;
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ends_are_read_from_the_arguments_or_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = HubConfig {
            data_dir: dir.path().to_owned(),
            ..HubConfig::default()
        };
        let events = dir.path().join(crate::EVENTS_FILE);
        assert_eq!(source_path(None, &config).unwrap(), events, "the configured data dir");
        let from = format!("sqlite:{}", dir.path().display());
        assert_eq!(source_path(Some(&from), &config).unwrap(), events, "a data dir");
        assert_eq!(
            source_path(Some("sqlite:/x/e.sqlite"), &config).unwrap(),
            PathBuf::from("/x/e.sqlite")
        );
        for bad in ["/x/e.sqlite", "sqlite:", "postgres://h/db"] {
            assert!(
                matches!(source_path(Some(bad), &config), Err(MigrateError::Usage(_))),
                "{bad}"
            );
        }

        assert!(matches!(target_settings(None, &config), Err(MigrateError::Usage(_))));
        let url = "postgres://u@h:5432/db";
        assert_eq!(
            target_settings(Some(&format!("postgres:{url}")), &config).unwrap().url,
            url
        );
        assert_eq!(target_settings(Some(url), &config).unwrap().url, url);
        assert_eq!(
            target_settings(Some("postgres:host=h dbname=db"), &config).unwrap().url,
            "host=h dbname=db"
        );
        assert!(matches!(
            target_settings(Some("mysql://h/db"), &config),
            Err(MigrateError::Usage(_))
        ));
        config.postgres.database_url = Some("postgres://configured/db".into());
        for to in [None, Some("postgres"), Some("postgres:")] {
            assert_eq!(
                target_settings(to, &config).unwrap().url,
                "postgres://configured/db",
                "{to:?}"
            );
        }
        assert_eq!(
            target_settings(None, &config).unwrap().statement_timeout,
            Duration::ZERO
        );
    }
}
