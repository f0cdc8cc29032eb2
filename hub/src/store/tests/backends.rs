//! The one store suite, run on both storages (each test in
//! [`both_storages!`](crate::both_storages)): [`new_log`] opens the storage the running
//! test is for, a fresh SQLite file in its own directory or a fresh PostgreSQL database.
//! What a few tests do to the database itself (hold the write lock so that they decide
//! what shares one group commit, make the database refuse an insert, reopen the store) is
//! done here once per storage.

use super::*;
use crate::config::Storage;
use crate::testing::storage::{storage, HeldWrites, TestDatabase};

/// Where a test's log lives.
enum Place {
    Sqlite { _dir: tempfile::TempDir, path: PathBuf },
    Postgres(TestDatabase),
}

/// An event log on a fresh file or database.
pub(super) struct TestLog {
    place: Place,
    pub(super) log: EventStore,
}

/// A fresh log on the running test's backend.
pub(super) async fn new_log() -> TestLog {
    match storage() {
        Storage::Sqlite => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let path = dir.path().join("events.sqlite");
            let log = EventStore::open(&path, EventBus::new()).expect("open the event store");
            TestLog {
                place: Place::Sqlite { _dir: dir, path },
                log,
            }
        }
        Storage::Postgres => {
            let db = TestDatabase::create().await.expect("the server answered a moment ago");
            let log = EventStore::open_postgres(db.settings(), EventBus::new())
                .await
                .expect("open the event store");
            TestLog {
                place: Place::Postgres(db),
                log,
            }
        }
    }
}

impl TestLog {
    /// Opens the same log again (after [`EventStore::close`]), as a restarted hub does.
    pub(super) async fn reopen(&self) -> EventStore {
        match &self.place {
            Place::Sqlite { path, .. } => EventStore::open(path, EventBus::new()).expect("reopen the event store"),
            Place::Postgres(db) => EventStore::open_postgres(db.settings(), EventBus::new())
                .await
                .expect("reopen the event store"),
        }
    }

    /// Holds the write lock (SQLite's, or the `log_head` row lock every hub's batch takes
    /// first) from a second connection until released.
    pub(super) async fn hold_writes(&self) -> HeldWrites {
        match &self.place {
            Place::Sqlite { path, .. } => HeldWrites::on_file(path),
            Place::Postgres(db) => HeldWrites::on_database(db).await,
        }
    }

    /// Makes the database refuse, with the message "poisoned event", every event whose
    /// data contains `needle`, as a full disk or an I/O error would refuse a write.
    pub(super) async fn poison_inserts(&self, needle: &str) {
        match &self.place {
            Place::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .expect("open the file")
                .execute_batch(&format!(
                    "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.data LIKE '%{needle}%'
                     BEGIN SELECT RAISE(ABORT, 'poisoned event'); END;"
                ))
                .expect("create the trigger"),
            Place::Postgres(db) => db
                .connect()
                .await
                .batch_execute(&format!(
                    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                         IF NEW.data LIKE '%{needle}%' THEN RAISE EXCEPTION 'poisoned event'; END IF;
                         RETURN NEW;
                     END $$;
                     CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison();"
                ))
                .await
                .expect("create the trigger"),
        }
    }
}
