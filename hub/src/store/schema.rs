//! The hub's SQLite files and their migrations (run at start-up with
//! [`shelfsync_common::sqlite::migrate`]).

pub use shelfsync_common::sqlite::{migrate, open_durable, open_read_only, Migrations};

use std::path::Path;

/// Opens the existing file at `path` read-write and takes SQLite's exclusive lock on it,
/// kept until the connection closes; `None` when another connection holds it. A running
/// hub keeps its connections to its files open (WAL mode), so this is how an offline
/// command finds out that the hub still runs, and keeps one from starting meanwhile.
pub fn lock_exclusive(path: &Path) -> rusqlite::Result<Option<rusqlite::Connection>> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::ZERO)?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    // Writes nothing; in exclusive mode the lock it takes is kept until the connection closes.
    match conn.execute_batch("BEGIN IMMEDIATE; COMMIT") {
        Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == rusqlite::ErrorCode::DatabaseBusy => Ok(None),
        other => other.map(|()| Some(conn)),
    }
}

/// The event store's migrations, oldest first.
pub const EVENT_STORE: Migrations = &[
    (
        "0001_event_store",
        include_str!("../../migrations/0001_event_store.sql"),
    ),
    (
        "0002_store_stats",
        include_str!("../../migrations/0002_store_stats.sql"),
    ),
    ("0003_secrets", include_str!("../../migrations/0003_secrets.sql")),
    (
        "0004_enrollment_codes",
        include_str!("../../migrations/0004_enrollment_codes.sql"),
    ),
];

/// The read model's migrations, oldest first (see [`crate::read_model`]).
pub const READ_MODEL: Migrations = &[
    (
        "0001_read_model",
        include_str!("../../migrations/read_model/0001_read_model.sql"),
    ),
    (
        "0002_stock_by_store",
        include_str!("../../migrations/read_model/0002_stock_by_store.sql"),
    ),
    (
        "0003_poison_events",
        include_str!("../../migrations/read_model/0003_poison_events.sql"),
    ),
    (
        "0004_allocations",
        include_str!("../../migrations/read_model/0004_allocations.sql"),
    ),
];

/// The analytics file's migrations (see [`crate::analytics`]): the read model's tables,
/// which the analytics worker keeps at its own checkpoint, then its figures and settings.
pub const ANALYTICS: Migrations = &[
    READ_MODEL[0],
    READ_MODEL[1],
    READ_MODEL[2],
    READ_MODEL[3],
    (
        "0005_analytics",
        include_str!("../../migrations/analytics/0005_analytics.sql"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_migrations_apply_to_fresh_files() {
        let dir = tempfile::tempdir().unwrap();
        for (file, migrations) in [
            ("events.sqlite", EVENT_STORE),
            ("read_model.sqlite", READ_MODEL),
            ("analytics.sqlite", ANALYTICS),
        ] {
            let mut conn = open_durable(&dir.path().join(file)).unwrap();
            assert_eq!(migrate(&mut conn, migrations).unwrap(), migrations.len());
            assert_eq!(migrate(&mut conn, migrations).unwrap(), 0);
        }
    }
}
