//! Tests that run on both storages: [`both_storages!`](crate::both_storages) turns each
//! test into a module with an `on_sqlite` and an `on_postgres` test, and the kit
//! ([`crate::testing::TestHub`], the store's own tests) opens the storage the running test
//! is for ([`storage`]). On PostgreSQL each test gets a database of its own, made on the
//! local server at the start and dropped at the end. Without a reachable server the
//! PostgreSQL run is skipped with a message saying how to run it (and fails instead under
//! `SHELFSYNC_REQUIRE_SERVICES=1`, as in CI).

use crate::config::Storage;
use crate::store::PgSettings;
use std::future::Future;
use std::time::Duration;

tokio::task_local! {
    static STORAGE: Storage;
}

/// The storage the running test is for (SQLite outside [`on`]).
pub fn storage() -> Storage {
    STORAGE.try_with(|s| *s).unwrap_or_default()
}

/// Runs `test` on `storage`; on PostgreSQL only when a server answers.
pub async fn on(storage: Storage, test: impl Future<Output = ()>) {
    if storage == Storage::Postgres && !TestDatabase::server_available().await {
        eprintln!("SKIPPED: this test's PostgreSQL run needs a server (see the first skip message)");
        return;
    }
    STORAGE.scope(storage, test).await
}

/// Each `async fn name() { ... }` becomes `mod name` with the tests `on_sqlite` and
/// `on_postgres`, the same body run on each storage.
#[macro_export]
macro_rules! both_storages {
    ($($(#[doc = $doc:expr])* async fn $name:ident() $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[doc = $doc])*
            async fn run() $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                $crate::testing::storage::on($crate::config::Storage::Sqlite, run()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                $crate::testing::storage::on($crate::config::Storage::Postgres, run()).await
            }
        }
    )*};
}

/// The server tests use, unless `SHELFSYNC_TEST_POSTGRES` names another (a URL whose
/// database the test may connect to in order to create and drop its own).
const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database made for one test, dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    server: String,
    name: String,
    /// The new database's URL.
    pub url: String,
}

fn server() -> String {
    std::env::var("SHELFSYNC_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.into())
}

impl TestDatabase {
    /// A new, empty database; `None` when no server answers and the test should skip.
    pub async fn create() -> Option<Self> {
        let server = server();
        let config: tokio_postgres::Config = server.parse().expect("SHELFSYNC_TEST_POSTGRES is a valid URL");
        let connected = tokio::time::timeout(Duration::from_secs(5), config.connect(tokio_postgres::NoTls)).await;
        let (client, connection) = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => return skip(&server, &error.to_string()),
            Err(_) => return skip(&server, "no answer within 5 s"),
        };
        tokio::spawn(connection);
        let name = format!("shelfsync_test_{:016x}", rand::random::<u64>());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = match server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("SHELFSYNC_TEST_POSTGRES must end with /<database>"),
        };
        Some(Self { server, name, url })
    }

    /// Whether the server answers (checked once per process; a skip says why).
    pub async fn server_available() -> bool {
        static AVAILABLE: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
        *AVAILABLE.get_or_init(|| async { Self::create().await.is_some() }).await
    }

    /// A connection of the test's own to this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }

    /// The store's settings for this database (small pool, short timeouts).
    pub fn settings(&self) -> PgSettings {
        PgSettings {
            url: self.url.clone(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// The write lock held from a second connection: the writer's next batch waits for it
/// (SQLite's write lock on the file, or the `log_head` row lock every hub's batch takes
/// first on PostgreSQL).
pub enum HeldWrites {
    /// `BEGIN IMMEDIATE` on the file.
    Sqlite(shelfsync_common::testing::sqlite::WriteLock),
    /// `SELECT ... FOR UPDATE` on `log_head`, in an open transaction.
    Postgres(tokio_postgres::Client),
}

impl HeldWrites {
    /// Holds SQLite's write lock on the log file at `path`.
    pub fn on_file(path: &std::path::Path) -> Self {
        HeldWrites::Sqlite(shelfsync_common::testing::sqlite::WriteLock::hold(path))
    }

    /// Holds the `log_head` row lock of `db`.
    pub async fn on_database(db: &TestDatabase) -> Self {
        let client = db.connect().await;
        client
            .batch_execute("BEGIN; SELECT head FROM log_head FOR UPDATE")
            .await
            .expect("take the log_head lock");
        HeldWrites::Postgres(client)
    }

    /// Lets the writer go on.
    pub async fn release(self) {
        match self {
            HeldWrites::Sqlite(lock) => lock.release(),
            HeldWrites::Postgres(client) => client.batch_execute("ROLLBACK").await.expect("release the lock"),
        }
    }
}

fn skip<T>(server: &str, why: &str) -> Option<T> {
    let message =
        format!("this test needs PostgreSQL at {server} ({why}); start one, or point SHELFSYNC_TEST_POSTGRES at one");
    assert!(
        std::env::var_os("SHELFSYNC_REQUIRE_SERVICES").is_none_or(|value| value != "1"),
        "{message}"
    );
    eprintln!("SKIPPED: {message}");
    None
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // The blocking client runs its own runtime: on a thread of its own, not the test's.
        let dropped = std::thread::spawn(move || -> Result<(), postgres::Error> {
            let mut client = postgres::Client::connect(&server, postgres::NoTls)?;
            client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}
