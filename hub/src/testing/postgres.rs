//! A PostgreSQL database of its own for one test: made on the local server at the start,
//! dropped at the end. Without a reachable server the test is skipped with a message
//! saying how to run it (and fails instead under `SHELFSYNC_REQUIRE_SERVICES=1`, as in CI).

use crate::store::PgSettings;
use std::time::Duration;

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
