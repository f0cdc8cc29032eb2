//! Schema migrations for the hub's SQLite files, run at start-up. Each migration is a SQL
//! file compiled into the binary; `PRAGMA user_version` records how many have run, and
//! each runs in its own transaction together with the version bump.

use super::StoreError;
use rusqlite::Connection;

/// One database file's ordered migrations.
pub type Migrations = &'static [(&'static str, &'static str)];

/// The event store's migrations, oldest first.
pub const EVENT_STORE: Migrations = &[
    ("0001_event_store", include_str!("../../migrations/0001_event_store.sql")),
    ("0002_store_stats", include_str!("../../migrations/0002_store_stats.sql")),
];

/// The read model's migrations, oldest first (see [`crate::projection`]).
pub const READ_MODEL: Migrations = &[(
    "0001_read_model",
    include_str!("../../migrations/read_model/0001_read_model.sql"),
)];

/// Brings `conn` up to date; returns how many migrations ran.
pub fn migrate(conn: &mut Connection, migrations: Migrations) -> Result<usize, StoreError> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))? as usize;
    if current > migrations.len() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: migrations.len(),
        });
    }
    for (index, (name, sql)) in migrations.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
        tracing::info!(migration = name, "applied schema migration");
    }
    Ok(migrations.len() - current)
}

/// Opens a connection with the pragmas every hub file uses: WAL, full fsync on commit.
pub fn open_durable(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Opens a read-only connection to a WAL file.
pub fn open_read_only(path: &std::path::Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_refuse_a_newer_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_durable(&dir.path().join("t.sqlite")).unwrap();
        assert_eq!(migrate(&mut conn, EVENT_STORE).unwrap(), EVENT_STORE.len());
        assert_eq!(migrate(&mut conn, EVENT_STORE).unwrap(), 0);
        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = migrate(&mut conn, EVENT_STORE).unwrap_err();
        assert!(err.to_string().contains("newer than this build"), "{err}");
    }
}
