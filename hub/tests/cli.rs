//! The hub's commands, run as the real binary: `store` against a real hub; and
//! `migrate-storage`, a stopped hub's SQLite log copied into a fresh PostgreSQL database
//! (each test makes its own and drops it; without a server those tests skip, saying how to
//! run them), a hub started there serving the same data, a copy killed mid-way and
//! resumed, a log grown since the last copy, a tampered row and another hub's log found.

use serde_json::{json, Value};
use shelfsync_common::testing::http::call;
use shelfsync_common::EventPayload;
use shelfsync_hub::migrate_storage::CHUNK_EVENTS;
use shelfsync_hub::testing::storage::TestDatabase;
use shelfsync_hub::testing::{demo_product, demo_store, TestHub, ADMIN};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn hub_cli(hub: &TestHub, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shelfsync-hub"))
        .args(args)
        .args(["--hub-url", &hub.url])
        .env("SHELFSYNC_HUB_ADMIN_TOKEN", ADMIN)
        // A user's error is one line whatever the environment asks for.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run shelfsync-hub");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_are_enrolled_listed_and_revoked_from_the_command_line() {
    let hub = TestHub::spawn().await;
    let (ok, out, err) = tokio::task::block_in_place(|| hub_cli(&hub, &["store", "add", "Cologne Ehrenfeld"]));
    assert!(ok, "{out}{err}");
    let id = out.split_whitespace().nth(1).expect("store id").to_owned();
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .to_owned();

    let pull = |token: &str| {
        hub.client
            .get(format!("{}/v1/sync/events?after=0&limit=1", hub.url))
            .bearer_auth(token)
            .header("x-shelfsync-protocol", "1.0")
            .send()
    };
    assert_eq!(pull(&token).await.unwrap().status(), 200);

    let (ok, out, err) = tokio::task::block_in_place(|| hub_cli(&hub, &["store", "list"]));
    assert!(
        ok && out.lines().any(|l| l.starts_with(&id) && l.contains("active")),
        "{out}{err}"
    );

    let (ok, out, err) = tokio::task::block_in_place(|| hub_cli(&hub, &["store", "revoke", &id]));
    assert!(ok, "{out}{err}");
    assert_eq!(pull(&token).await.unwrap().status(), 401, "a revoked token is refused");
    let (_, out, _) = tokio::task::block_in_place(|| hub_cli(&hub, &["store", "list"]));
    assert!(
        out.lines().any(|l| l.starts_with(&id) && l.contains("revoked")),
        "{out}"
    );

    let (ok, _, err) =
        tokio::task::block_in_place(|| hub_cli(&hub, &["store", "revoke", "01935701-0000-7000-8000-0000000000ff"]));
    assert!(!ok && err.contains("store_not_found"), "{err}");
}

/// A failed command: exit code 1 and one line on stderr, no backtrace.
fn failed_in_one_line(ok: bool, err: &str) {
    assert!(!ok, "{err}");
    assert_eq!(err.lines().count(), 1, "one line, no backtrace:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_with_the_same_name_needs_to_be_asked_for() {
    let hub = TestHub::spawn().await;
    let add = |args: &[&str]| tokio::task::block_in_place(|| hub_cli(&hub, args));
    let (ok, out, err) = add(&["store", "add", "Bonn Zentrum"]);
    assert!(ok, "{out}{err}");
    let first = out.split_whitespace().nth(1).expect("store id").to_owned();

    let (ok, out, err) = add(&["store", "add", "Bonn Zentrum"]);
    failed_in_one_line(ok, &err);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("409 store_name_taken") && err.contains(&first), "{err}");

    let (ok, out, err) = add(&["store", "add", "Bonn Zentrum", "--allow-duplicate-name"]);
    assert!(ok, "{out}{err}");
    let second = out.split_whitespace().nth(1).expect("store id").to_owned();
    assert_ne!(first, second);
    let (_, list, _) = add(&["store", "list"]);
    assert_eq!(list.matches("Bonn Zentrum").count(), 2, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_url_without_a_scheme_says_so() {
    let hub = TestHub::spawn().await;
    let output = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_shelfsync-hub"))
            .args(["store", "list", "--hub-url", hub.url.trim_start_matches("http://")])
            .env("SHELFSYNC_HUB_ADMIN_TOKEN", ADMIN)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run shelfsync-hub")
    });
    let err = String::from_utf8_lossy(&output.stderr);
    failed_in_one_line(output.status.success(), &err);
    assert!(err.contains("--hub-url must start with http:// or https://"), "{err}");
}

// ---------------------------------------------------------------------------------------
// migrate-storage

/// Runs `shelfsync-hub migrate-storage --from sqlite:DATA_DIR` with `args`, the database
/// URL from the environment (as an operator keeps a password off the command line).
fn migrate(data_dir: &Path, database: &TestDatabase, args: &[&str]) -> (bool, String, String) {
    let output = tokio::task::block_in_place(|| migrate_command(data_dir, database, args).output())
        .expect("run shelfsync-hub migrate-storage");
    outcome(&output)
}

fn migrate_command(data_dir: &Path, database: &TestDatabase, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shelfsync-hub"));
    command
        .args(["migrate-storage", "--from", &format!("sqlite:{}", data_dir.display())])
        .args(args)
        .env("SHELFSYNC_HUB_POSTGRES__DATABASE_URL", &database.url)
        .env("RUST_BACKTRACE", "1");
    command
}

fn outcome(output: &Output) -> (bool, String, String) {
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The "copied N events; M were already there" figures of a run's output.
fn copied(out: &str) -> (u64, u64) {
    let line = out.lines().find(|l| l.starts_with("copied ")).expect("a copied line");
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// A hub on SQLite at `dir` with the demo data, ready.
async fn sqlite_hub(dir: &Path) -> TestHub {
    let hub = TestHub::spawn_at(dir.to_owned(), true).await;
    hub.wait_ready().await;
    hub
}

/// A hub on the PostgreSQL database, with a data dir of its own, ready.
async fn postgres_hub(database: &TestDatabase, dir: &Path) -> TestHub {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = database.url.clone();
    let hub = TestHub::spawn_on(listener, dir.to_owned(), false, |config| {
        config.storage = shelfsync_hub::config::Storage::Postgres;
        config.postgres.database_url = Some(url.into());
    })
    .await;
    hub.wait_ready().await;
    hub
}

/// `count` facts of demo store 0, uploaded in batches of 500.
async fn upload_facts(hub: &TestHub, count: usize) {
    let agent = hub.agent(demo_store(0), hub.demo_store_token(0));
    let facts: Vec<_> = (0..count)
        .map(|n| agent.fact(demo_product(n % 5), EventPayload::StockAdded { quantity: 1 }))
        .collect();
    for batch in facts.chunks(500) {
        agent.upload(batch).await;
    }
}

async fn stock_everywhere(hub: &TestHub) -> Vec<Value> {
    let mut levels = Vec::new();
    for product in 0..5 {
        for store in 0..3 {
            levels.push(serde_json::to_value(hub.stock(demo_product(product), demo_store(store)).await).unwrap());
        }
    }
    levels
}

fn stock_request(hub: &TestHub) -> reqwest::RequestBuilder {
    let body = json!({ "product_id": demo_product(1), "store_id": demo_store(1), "quantity": 4 });
    hub.post("/v1/inventory/stock", &body)
        .header("Idempotency-Key", "delivery-4711")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_hubs_log_moves_to_postgres_and_a_hub_there_serves_the_same() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hub = sqlite_hub(old_dir.path()).await;
    // A delivery with an idempotency key, a store's facts (one an oversell), a new store.
    let (status, first, _) = call(stock_request(&hub)).await;
    assert_eq!(status, 201, "{first}");
    let agent = hub.agent(demo_store(0), hub.demo_store_token(0));
    let oversell = agent.fact(
        demo_product(2),
        EventPayload::StockAdjusted {
            delta: -1000,
            reason: "count".into(),
        },
    );
    agent.upload(&[oversell]).await;
    upload_facts(&hub, 30).await;
    let (enrolled, _) = hub.enroll("Dresden").await;
    let head = hub.head().await;
    let stock = stock_everywhere(&hub).await;
    let (events, _) = agent.pull_all(0).await;

    let (ok, _, err) = migrate(old_dir.path(), &database, &[]);
    assert!(
        !ok && err.contains("is in use: stop the hub"),
        "a running hub is detected: {err}"
    );
    hub.stop().await;

    let (ok, out, err) = migrate(old_dir.path(), &database, &[]);
    assert!(ok, "{out}{err}");
    assert_eq!(copied(&out), (head, 0), "{out}");
    assert!(out.contains(&format!("verified events: {head} on both sides")), "{out}");
    for table in [
        "stores: the same 4 rows",
        "store_stats: the same 1 rows",
        "secrets: the same 1 rows",
    ] {
        assert!(out.contains(table), "{table}: {out}");
    }
    assert!(
        out.contains(&format!("verified log_head: head {head}, stores 4")),
        "{out}"
    );

    let hub = postgres_hub(&database, new_dir.path()).await;
    assert_eq!(hub.head().await, head);
    assert_eq!(
        stock_everywhere(&hub).await,
        stock,
        "the same stock, projected from the copied log"
    );
    let agent = hub.agent(demo_store(0), agent.token.clone());
    assert_eq!(agent.pull_all(0).await.0, events, "the same events, by the same token");
    assert_eq!(hub.fleet().await.stores.len(), 4);
    let new_store = hub.agent(enrolled.store.id, enrolled.token.expose().to_owned());
    assert_eq!(
        new_store.pull(0, 1).await.head,
        head,
        "a store enrolled on SQLite syncs"
    );

    // The id key came along: a retry with the same idempotency key is the first write.
    let (status, retried, _) = call(stock_request(&hub)).await;
    assert_eq!((status, &retried["position"]), (200, &first["position"]), "{retried}");
    assert_eq!(retried["duplicate"], true, "{retried}");
    // The writer goes on from the copied heads.
    let position = hub.add_stock(demo_product(1), demo_store(1), 1).await;
    assert_eq!(position, head + 1);
    let level = hub.stock(demo_product(1), demo_store(1)).await;
    assert_eq!(level.on_hand, stock[4]["on_hand"].as_i64().unwrap() + 1);

    // No copy into a database a hub is using.
    let (ok, out, err) = migrate(old_dir.path(), &database, &[]);
    assert!(
        !ok && err.contains("hub connections are open on this database"),
        "{out}{err}"
    );
    hub.stop().await;
}

/// The copy's backends on the server (a killed copy's lingers until PostgreSQL notices).
const COPY_BACKENDS: &str =
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'shelfsync-hub migrate-storage'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_killed_mid_way_resumes_after_its_last_chunk_and_a_grown_log_copies_only_its_new_events() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hub = sqlite_hub(dir.path()).await;
    upload_facts(&hub, CHUNK_EVENTS as usize + 500).await;
    let head = hub.head().await;
    hub.stop().await;

    // The schema, and a row at the second chunk's first position in a transaction left
    // open: the copy commits its first chunk, then waits in its second.
    let url = database.url.clone();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        shelfsync_hub::store::migrate_postgres(&mut client).unwrap();
    })
    .join()
    .unwrap();
    let blocker = database.connect().await;
    blocker
        .batch_execute(&format!(
            "BEGIN; INSERT INTO events VALUES ({}, '\\x00', '\\x00', 1, 'Blocker', 1, '{{}}', '{{}}', '\\x00')",
            CHUNK_EVENTS + 1
        ))
        .await
        .unwrap();
    let mut copy = migrate_command(dir.path(), &database, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the copy");
    let watcher = database.connect().await;
    let waiting_query = format!("SELECT (SELECT count(*) FROM events), ({COPY_BACKENDS} AND wait_event_type = 'Lock')");
    let mut waiting = false;
    for _ in 0..1200 {
        let row = watcher.query_one(&waiting_query, &[]).await.unwrap();
        let (copied, blocked): (i64, i64) = (row.get(0), row.get(1));
        if copied == CHUNK_EVENTS as i64 && blocked == 1 {
            waiting = true;
            break;
        }
        assert!(
            copy.try_wait().unwrap().is_none(),
            "the copy ended before its second chunk"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting, "the copy committed its first chunk and waits in its second");
    copy.kill().expect("kill -9 the copy");
    copy.wait().unwrap();
    blocker.batch_execute("ROLLBACK").await.unwrap();
    for _ in 0..1200 {
        let backends: i64 = watcher.query_one(COPY_BACKENDS, &[]).await.unwrap().get(0);
        if backends == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row = watcher
        .query_one("SELECT (SELECT count(*) FROM events), (SELECT head FROM log_head)", &[])
        .await
        .unwrap();
    let (count, log_head): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (count, log_head),
        (CHUNK_EVENTS as i64, 0),
        "the first chunk stayed; the head is set only with the last"
    );
    let first_row_version = "SELECT xmin::text FROM events WHERE position = 1";
    let written_by: String = watcher.query_one(first_row_version, &[]).await.unwrap().get(0);

    let (ok, out, err) = migrate(dir.path(), &database, &[]);
    assert!(ok, "{out}{err}");
    assert_eq!(copied(&out), (head - CHUNK_EVENTS, CHUNK_EVENTS), "{out}");
    assert!(out.contains(&format!("verified log_head: head {head}")), "{out}");
    let still: String = watcher.query_one(first_row_version, &[]).await.unwrap().get(0);
    assert_eq!(still, written_by, "the events already there were not written again");

    // The SQLite hub ran on (a trial run, say) and the log grew: only the new events move.
    let hub = sqlite_hub(dir.path()).await;
    upload_facts(&hub, 700).await;
    let grown = hub.head().await;
    hub.stop().await;
    let (ok, out, err) = migrate(dir.path(), &database, &[]);
    assert!(ok, "{out}{err}");
    assert_eq!(copied(&out), (grown - head, head), "{out}");
    assert!(
        out.contains(&format!("verified events: {grown} on both sides")),
        "{out}"
    );
    let still: String = watcher.query_one(first_row_version, &[]).await.unwrap().get(0);
    assert_eq!(still, written_by);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_names_a_tampered_row_and_another_hubs_log_is_refused() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hub = sqlite_hub(dir.path()).await;
    let head = hub.head().await;
    hub.stop().await;
    let (ok, out, err) = migrate(dir.path(), &database, &[]);
    assert!(ok, "{out}{err}");
    let client = database.connect().await;

    // A stream head changed behind the copy's back.
    let changed = client
        .execute(
            "UPDATE streams SET version = version + 1 WHERE last_position = $1",
            &[&(head as i64)],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    let (ok, out, err) = migrate(dir.path(), &database, &["--check-only"]);
    failed_in_one_line(ok, &err);
    assert!(
        err.contains("verification failed: streams: the row with stream_key 0x")
            && err.contains(": column version is "),
        "{out}{err}"
    );
    // A copy puts the tables right again (they are the log's, replaced with the last chunk).
    let (ok, out, err) = migrate(dir.path(), &database, &[]);
    assert!(ok, "{out}{err}");
    assert_eq!(copied(&out), (0, head), "{out}");

    // Another hub's log is refused.
    let other = sqlite_hub(other_dir.path()).await;
    other.stop().await;
    let (ok, out, err) = migrate(other_dir.path(), &database, &[]);
    failed_in_one_line(ok, &err);
    assert!(
        err.contains(&format!(
            "already holds {head} events that are not the start of this log"
        )) && err.contains("the row with position 1: column ")
            && err.contains("another hub's"),
        "{out}{err}"
    );

    // An event changed behind the copy's back: named by position and column, whether
    // checked alone or found by a copy resuming.
    client
        .execute(
            "UPDATE events SET data = '{\"quantity\":999}' WHERE position = $1",
            &[&(head as i64)],
        )
        .await
        .unwrap();
    let (ok, _, err) = migrate(dir.path(), &database, &["--check-only"]);
    failed_in_one_line(ok, &err);
    let at = format!("events: the row with position {head}: column data is ");
    assert!(err.contains(&format!("verification failed: {at}")), "{err}");
    assert!(err.contains(r#"but "{\"quantity\":999}" on PostgreSQL"#), "{err}");
    let (ok, _, err) = migrate(dir.path(), &database, &[]);
    failed_in_one_line(ok, &err);
    assert!(err.contains("not the start of this log") && err.contains(&at), "{err}");
}
