//! SQLite in tests of a group-commit writer (with feature `sqlite`): hold the database's
//! write lock from a second connection, so that a test decides which jobs share one commit
//! instead of hoping the scheduler arranges it.

use std::path::Path;

/// Holds SQLite's write lock from a second connection. The writer thread can still take
/// jobs off its queue, but it waits in `BEGIN IMMEDIATE` (busy timeout 5 s) until the
/// lock is released, so it cannot commit meanwhile.
pub struct WriteLock(rusqlite::Connection);

impl WriteLock {
    /// Opens `path` and takes its write lock.
    pub fn hold(path: &Path) -> Self {
        let conn = rusqlite::Connection::open(path).expect("second connection");
        conn.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
        Self(conn)
    }

    /// Releases the lock: the writer commits what it holds.
    pub fn release(self) {
        self.0.execute_batch("ROLLBACK").expect("release the write lock");
    }
}
