//! SQLite helpers shared by both binaries (cargo feature `sqlite`): durable connections,
//! private data files, schema migrations, the group-commit writer ([`group_commit`]), the
//! one text form of stored times ([`time_text`]), online copies ([`backup`]) and readers of the rows both databases
//! store alike ([`rows`]). Data files are made owner-only (the data
//! directory 0700, each database 0600, which SQLite copies to its `-wal` and `-shm`
//! files) whoever starts the daemon: under systemd the unit's `StateDirectory` already
//! does this for the directory, but a hand-started daemon must not leave stock, sales and
//! token hashes readable by every local user; a file an earlier build left readable by
//! others is made owner-only when opened. Each migration is a SQL file compiled into the binary; `PRAGMA
//! user_version` records how many have run, and each runs in its own transaction with the
//! version bump, so a crash mid-migration leaves the file at the previous version.

pub mod backup;
pub mod group_commit;
pub mod rows;
pub mod time_text;

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// One database file's ordered migrations: (name, SQL).
pub type Migrations = &'static [(&'static str, &'static str)];

/// Why a file could not be migrated.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer build.
    #[error("the database is at schema version {found}, newer than this build knows ({known}); upgrade shelfsync")]
    TooNew {
        /// Version in the file.
        found: usize,
        /// Newest version this build has.
        known: usize,
    },
}

/// Brings `conn` up to date; returns how many migrations ran.
pub fn migrate(conn: &mut Connection, migrations: Migrations) -> Result<usize, MigrationError> {
    let current = conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))? as usize;
    if current > migrations.len() {
        return Err(MigrationError::TooNew {
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

/// Creates `dir` and its missing parents with mode 0700 (an existing directory is left
/// as it is: its owner chose its mode).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the database file at `path`, if it is not there, with mode 0600, before
/// SQLite does (SQLite would make it 0644, and its `-wal` and `-shm` files after it).
fn create_private_file(path: &Path) -> rusqlite::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop).map_err(|error| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("creating {}: {error}", path.display())),
        )
    })
}

/// Takes group and other access away from the database at `path` and its `-wal` and
/// `-shm` files where an earlier build or a hand copy left it (a file made 0644 before
/// data files were owner-only): logged, and only logged if the file is not ours to change.
#[cfg(unix)]
fn tighten_existing(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(name.into());
    }
    for file in files {
        let Ok(meta) = std::fs::metadata(&file) else { continue };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        let owner_only = mode & 0o700;
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(owner_only)) {
            Ok(()) => tracing::warn!(
                file = %file.display(),
                was = format!("{mode:o}"),
                now = format!("{owner_only:o}"),
                "a data file was readable by other users; made it owner-only"
            ),
            Err(error) => tracing::warn!(
                file = %file.display(),
                mode = format!("{mode:o}"),
                %error,
                "a data file is readable by other users and could not be made owner-only: chmod 600 it"
            ),
        }
    }
}

/// Opens a read-write connection: WAL, a full fsync on every commit, foreign keys on. A
/// new file is created owner-only (0600); an existing one readable by others is made so.
pub fn open_durable(path: &Path) -> rusqlite::Result<Connection> {
    create_private_file(path)?;
    #[cfg(unix)]
    tighten_existing(path);
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Opens a read-only connection to a WAL file.
pub fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// This database's [`IdKey`](crate::IdKey), made (32 random bytes) and stored the first
/// time. The file must have a `secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)`
/// table. Kept in the database rather than a file beside it: ids derived before a
/// restore must be derived the same way after it, so the key travels with the records.
pub fn id_key(conn: &Connection) -> rusqlite::Result<crate::IdKey> {
    let stored: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM secrets WHERE name = 'id_key'", [], |row| row.get(0))
        .map(Some)
        .or_else(|error| match error {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })?;
    if let Some(bytes) = stored.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
        return Ok(crate::IdKey::from_bytes(bytes));
    }
    let key = crate::IdKey::from_bytes(rand::random());
    conn.execute(
        "INSERT INTO secrets (name, value) VALUES ('id_key', ?1)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [&key.as_bytes()[..]],
    )?;
    Ok(key)
}

/// The answer owed to one job of a group commit, sent once the batch's fate is known:
/// the job's own result after the commit, or the batch's error after a rollback. Both
/// binaries' single writers collect one per job and settle them after `COMMIT`.
pub struct Deferred<E>(Settle<E>);

/// Sends a job's answer: `None` after a commit, `Some(error)` after a rollback.
type Settle<E> = Box<dyn FnOnce(Option<&E>) + Send>;

impl<E: Clone + Send + 'static> Deferred<E> {
    /// Owes `result` to `reply`.
    pub fn new<T: Send + 'static>(reply: tokio::sync::oneshot::Sender<Result<T, E>>, result: Result<T, E>) -> Self {
        Deferred(Box::new(move |failed: Option<&E>| {
            let _ = reply.send(match failed {
                Some(error) => Err(error.clone()),
                None => result,
            });
        }))
    }

    /// The batch committed: send the job's own result.
    pub fn send(self) {
        (self.0)(None)
    }

    /// The batch rolled back: send its error instead.
    pub fn fail(self, error: &E) {
        (self.0)(Some(error))
    }
}

/// Records what a job owes: its result, or, when SQLite failed while running it, the
/// storage error (which then also fails the batch).
pub fn settle<T: Send + 'static, E: Clone + Send + 'static, DbE>(
    answers: &mut Vec<Deferred<E>>,
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
    result: Result<Result<T, E>, DbE>,
    storage: impl FnOnce(&DbE) -> E,
) -> Result<(), DbE> {
    match result {
        Ok(result) => {
            answers.push(Deferred::new(reply, result));
            Ok(())
        }
        Err(error) => {
            answers.push(Deferred::new(reply, Err(storage(&error))));
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: Migrations = &[
        ("one", "CREATE TABLE a (x INTEGER);"),
        ("two", "CREATE TABLE b (y INTEGER);"),
    ];

    #[test]
    fn migrations_run_once_and_refuse_a_newer_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_durable(&dir.path().join("t.sqlite")).unwrap();
        assert_eq!(migrate(&mut conn, &TWO[..1]).unwrap(), 1);
        assert_eq!(migrate(&mut conn, TWO).unwrap(), 1, "only the new one runs");
        assert_eq!(migrate(&mut conn, TWO).unwrap(), 0);
        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = migrate(&mut conn, TWO).unwrap_err();
        assert!(err.to_string().contains("newer than this build"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn data_files_and_their_directory_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("var/lib/shelfsync");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("t.sqlite");
        let mut conn = open_durable(&file).unwrap();
        migrate(&mut conn, TWO).unwrap();
        conn.execute("INSERT INTO a (x) VALUES (1)", []).unwrap();
        for path in [file.clone(), dir.join("t.sqlite-wal"), dir.join("t.sqlite-shm")] {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        drop(conn);
        let conn = open_durable(&file).unwrap();
        let kept: i64 = conn.query_row("SELECT x FROM a", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 1, "an existing file is opened, not truncated");
    }

    #[cfg(unix)]
    #[test]
    fn a_data_file_left_readable_by_others_is_made_owner_only_when_opened() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.sqlite");
        let mut conn = open_durable(&file).unwrap();
        migrate(&mut conn, TWO).unwrap();
        drop(conn);
        let wal = dir.path().join("t.sqlite-wal");
        std::fs::write(&wal, b"").unwrap();
        for path in [&file, &wal] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let conn = open_durable(&file).unwrap();
        for path in [&file, &wal] {
            assert_eq!(mode(path), 0o600, "{}", path.display());
        }
        let kept: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 2, "the file's content is untouched");
    }

    #[test]
    fn the_id_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let conn = open_durable(&path).unwrap();
        conn.execute_batch("CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);")
            .unwrap();
        let first = id_key(&conn).unwrap();
        drop(conn);
        let reopened = open_durable(&path).unwrap();
        assert_eq!(id_key(&reopened).unwrap(), first, "the same key after a restart");
        let other = tempfile::tempdir().unwrap();
        let elsewhere = open_durable(&other.path().join("t.sqlite")).unwrap();
        elsewhere
            .execute_batch("CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);")
            .unwrap();
        assert_ne!(id_key(&elsewhere).unwrap(), first, "each database has its own");
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_durable(&dir.path().join("t.sqlite")).unwrap();
        let broken: Migrations = &[("one", "CREATE TABLE a (x INTEGER);"), ("bad", "CREATE TABLE c (; ")];
        assert!(migrate(&mut conn, broken).is_err());
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, 1);
    }
}
