//! A consistent copy of a live SQLite database with SQLite's online backup API: the copy is
//! made page by page in short steps while the database's own writer goes on (a step that
//! meets a write starts over from the changed pages), so a daemon need not stop for it.
//! Both binaries' `backup` commands use it.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// Pages copied per step (4 MiB with SQLite's default 4 KiB pages).
const PAGES_PER_STEP: std::os::raw::c_int = 1024;
/// Pause between steps, so the live writer is not starved.
const PAUSE: Duration = Duration::from_millis(5);

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target exists: a backup never overwrites a file.
    #[error("{0} already exists; choose a new file or directory")]
    TargetExists(String),
    /// SQLite failed (reading the source, writing the copy, or the copy's check).
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The copy does not pass `PRAGMA quick_check`.
    #[error("the copy failed its integrity check: {0}")]
    Damaged(String),
}

/// Copies the database at `source` into the new file `target` (refused if it exists),
/// then checks the copy (`PRAGMA quick_check`). Returns the copy's size in pages.
pub fn backup(source: &Path, target: &Path) -> Result<u64, BackupError> {
    if target.exists() {
        return Err(BackupError::TargetExists(target.display().to_string()));
    }
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut to = Connection::open(target)?;
    rusqlite::backup::Backup::new(&from, &mut to)?.run_to_completion(PAGES_PER_STEP, PAUSE, None)?;
    let check: String = to.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(BackupError::Damaged(check));
    }
    Ok(to.query_row("PRAGMA page_count", [], |row| row.get::<_, i64>(0))? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_database_is_copied_whole_and_a_target_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("live.sqlite");
        let live = Connection::open(&source).unwrap();
        live.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1), (2), (3);")
            .unwrap();
        // The writer still holds the file (and its WAL) open.
        let target = dir.path().join("copy.sqlite");
        assert!(backup(&source, &target).unwrap() > 0);
        let copy = Connection::open(&target).unwrap();
        let sum: i64 = copy.query_row("SELECT SUM(n) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(sum, 6, "rows still in the source's WAL are in the copy");
        assert!(matches!(backup(&source, &target), Err(BackupError::TargetExists(_))));
        drop(live);
    }
}
