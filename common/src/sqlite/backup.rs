//! A consistent copy of a live SQLite database with SQLite's online backup API, taken while
//! the database's own writer goes on; both binaries' `backup` commands use it.
//!
//! The copy is made in a single step: one step reads the whole file in one read
//! transaction, which in WAL mode never blocks the writer. A copy made in several steps
//! would start over each time the writer commits, and under a busy till or hub it might
//! never finish. The copy is left without a WAL beside it (journal mode DELETE), owner-only,
//! and checked (`PRAGMA quick_check`) before it counts.

use super::{open_durable, open_read_only};
use rusqlite::backup::{Backup, StepResult};
use std::path::Path;
use std::time::Duration;

/// How often a step that found the source busy is tried again, and how long apart.
const BUSY_RETRIES: u32 = 100;
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target exists: a backup never overwrites a file.
    #[error("{0} already exists; choose a new file or directory")]
    TargetExists(String),
    /// The source stayed locked for every retry.
    #[error("{path} stayed locked for {seconds} s")]
    Busy {
        /// The source.
        path: String,
        /// How long it was tried.
        seconds: u64,
    },
    /// SQLite failed (reading the source, writing the copy, or the copy's check).
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The copy does not pass `PRAGMA quick_check`.
    #[error("the copy failed its integrity check: {0}")]
    Damaged(String),
}

/// Copies the database at `source` into the new file `target` (refused if it exists),
/// then checks the copy. Returns the copy's size in pages.
pub fn backup(source: &Path, target: &Path) -> Result<u64, BackupError> {
    if target.exists() {
        return Err(BackupError::TargetExists(target.display().to_string()));
    }
    let from = open_read_only(source)?;
    let mut to = open_durable(target)?;
    {
        let backup = Backup::new(&from, &mut to)?;
        let mut retries = 0;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::Busy | StepResult::Locked if retries < BUSY_RETRIES => {
                    retries += 1;
                    std::thread::sleep(BUSY_PAUSE);
                }
                StepResult::Busy | StepResult::Locked => {
                    return Err(BackupError::Busy {
                        path: source.display().to_string(),
                        seconds: (BUSY_PAUSE * BUSY_RETRIES).as_secs(),
                    })
                }
                // A step of every page is done in one go; anything else is asked again.
                _ => {}
            }
        }
    }
    // Everything in the file itself, no WAL beside it: the copy is complete as it is.
    to.pragma_update(None, "journal_mode", "DELETE")?;
    let check: String = to.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(BackupError::Damaged(check));
    }
    Ok(to.query_row("PRAGMA page_count", [], |row| row.get::<_, i64>(0))? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

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
