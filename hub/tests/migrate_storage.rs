//! `shelfsync-hub migrate-storage`, run as the real binary: a stopped hub's SQLite log
//! copied into a fresh PostgreSQL database (each test makes its own and drops it; without
//! a server the tests skip, saying how to run them), a hub started there serving the same
//! data; a copy killed mid-way and resumed; a log grown since the last copy; a tampered
//! row and another hub's log found and refused.

use serde_json::{json, Value};
use shelfsync_common::testing::http::call;
use shelfsync_common::EventPayload;
use shelfsync_hub::testing::storage::TestDatabase;
use shelfsync_hub::testing::{demo_product, demo_store, TestHub};
use std::path::Path;
use std::process::{Command, Output};

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
    let new_store = hub.agent(enrolled.store.id, enrolled.token);
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
    hub.stop().await;
}
