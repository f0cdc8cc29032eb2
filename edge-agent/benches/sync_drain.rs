//! The agent's sync path at fleet scale (issue 15): a reconnect drain and a catch-up, each
//! against a real hub in-process (`TestHub`, 127.0.0.1) and the agent's sync worker
//! (`SyncWorker`) on a local store the bench holds.
//!
//! - `reconnect_drain`: a store recorded `BACKLOG` events offline (deliveries, 64
//!   concurrent writers, over the demo products); its sync worker then starts against the
//!   hub. Figure: seconds from the start until the outbox is empty and the cursor is at the
//!   hub's head (every event uploaded, acknowledged, back on the push stream and confirmed).
//!   No breaker wait is in it (the link is up at once; the breaker's own wait after an
//!   outage is `sync.breaker_open_secs`, 1 s, measured in `docs/benchmarks.md` under the
//!   hub-link breaker). The same run drains `BACKLOG / 2` too (time per 1,000 events at
//!   both sizes: linear or not). During the drain one till writes in a closed loop
//!   (`TILL_PAUSE_MS` between writes) until the outbox is below 1,000: its write latency is
//!   reported. The hub's `shelfsync_hub_sse_dropped_slow_total` and the agent's stream
//!   reconnects are printed (both must stay 0). Baseline: rusqlite on a copy of the agent's
//!   schema, the same number of outbox rows marked acknowledged and then confirmed, 500 and
//!   1,000 rows per transaction with one confirmed-state upsert per product per transaction
//!   (the least the agent's disk must do). Goal: under 5 s for 100,000.
//!   Each run also has a burst: `TILLS` tills write as fast as they can for `BURST_SECS`
//!   with the worker following the hub; printed: events written, how many of them were
//!   confirmed by the end of the burst, and the outbox then (the outbox drains as fast as
//!   it fills when it stays small).
//! - `catch_up`: a store bootstrapped at some position falls `BEHIND` events behind (events
//!   on its own streams, uploaded by another client as this store: all of them are for it
//!   to apply, the worst case); a copy of its store file is started with its sync worker.
//!   Figure: events/s from the start until the cursor is at the head and the stock agrees
//!   (applied and committed). Baseline: the same replay read from the hub's push stream by
//!   a bare client that parses each event and applies nothing (the hub and the wire alone).
//!   Goal: >= 200,000 events/s.
//!
//! ```sh
//! cargo bench -p shelfsync-edge --bench sync_drain
//! RUNS=3 BACKLOG=100000 BEHIND=1000000 TILL_PAUSE_MS=5 TILLS=32 BURST_SECS=5 cargo bench -p shelfsync-edge --bench sync_drain
//! ```
//!
//! `SHELFSYNC_BENCH_QUICK=1` runs tiny sizes once (`tests/scripts/bench.sh --quick`).

mod support;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use rusqlite::{params, Connection};
use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use shelfsync_common::wire::sync::{UploadEvent, PROTOCOL_HEADER, PROTOCOL_VERSION, SSE_CAUGHT_UP, SSE_EVENT};
use shelfsync_common::{
    EventEnvelope, EventId, EventMetadata, InventoryCommand, Origin, ProductId, StockQuantity, StoreId, StreamId,
};
use shelfsync_edge::store::{LocalCommand, LocalStore, Target};
use shelfsync_edge::testing::{record_backlog, SyncWorker};
use shelfsync_hub::testing::{demo_store, TestHub};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{bench_dir, cores, cpu_model, load_average, quantile, runtime};

const LOCAL_DDL: &str = include_str!("../migrations/0001_local_store.sql");
/// The longest any wait of the bench may take before it calls the run stuck.
const PATIENCE: Duration = Duration::from_secs(600);

struct Settings {
    runs: usize,
    backlog: usize,
    behind: usize,
    till_pause: Duration,
    tills: usize,
    burst: Duration,
}

fn main() {
    let settings = Settings {
        runs: knob("RUNS", 3, 1).max(1),
        backlog: knob("BACKLOG", 100_000, 2_000).max(2),
        behind: knob("BEHIND", 1_000_000, 5_000).max(1),
        till_pause: Duration::from_millis(knob("TILL_PAUSE_MS", 5, 5) as u64),
        tills: knob("TILLS", 32, 4).max(1),
        burst: Duration::from_secs(knob("BURST_SECS", 5, 1) as u64),
    };
    println!(
        "sync_drain: {} runs; drain of {} (and {}) offline events; catch-up of {} events",
        settings.runs,
        settings.backlog,
        settings.backlog / 2,
        settings.behind
    );
    println!("machine: {} cores, {}", cores(), cpu_model());
    let hub_rt = runtime("hub");
    let hub = hub_rt.block_on(TestHub::spawn());
    let agent_rt = runtime("agent");
    drain(&settings, &hub, &hub_rt, &agent_rt);
    catch_up(&settings, &hub, &hub_rt, &agent_rt);
    hub_rt.block_on(hub.stop());
}

// ---------------------------------------------------------------------------------------
// reconnect_drain

fn drain(settings: &Settings, hub: &TestHub, hub_rt: &tokio::runtime::Runtime, agent_rt: &tokio::runtime::Runtime) {
    let mut scenario = Scenario::new("reconnect_drain", "s", Goal::AtMost(5.0))
        .baseline("rusqlite: the same rows acknowledged and confirmed, in batches");
    let store = demo_store(0);
    for run in 0..settings.runs {
        let baseline = raw_confirm(settings.backlog);
        let half = drain_once(settings, hub, hub_rt, agent_rt, store, settings.backlog / 2);
        let full = drain_once(settings, hub, hub_rt, agent_rt, store, settings.backlog);
        let per_k = |d: &Drained, n: usize| d.seconds * 1e6 / n as f64;
        println!(
            "run {}: drain {:.2} s ({:.0} events/s; {:.1} ms per 1,000 events, {:.1} ms at half the backlog) | till writes during the drain: {} (p50 {:.1} ms, p99 {:.1} ms) | stream dropped by the hub {}, reconnects {} | baseline {:.2} s | ratio {:.1}x | load {}",
            run + 1,
            full.seconds,
            settings.backlog as f64 / full.seconds,
            per_k(&full, settings.backlog),
            per_k(&half, settings.backlog / 2),
            full.till_writes,
            full.till_ms[0],
            full.till_ms[1],
            full.dropped,
            full.reconnects,
            baseline,
            full.seconds / baseline,
            load_average(),
        );
        scenario.record_pair(full.seconds, baseline);
        burst_once(settings, hub, hub_rt, agent_rt, store);
    }
    scenario.report();
}

/// Tills write flat out for `settings.burst` while the worker follows the hub.
fn burst_once(
    settings: &Settings,
    hub: &TestHub,
    hub_rt: &tokio::runtime::Runtime,
    agent_rt: &tokio::runtime::Runtime,
    store: StoreId,
) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    let local = LocalStore::open(&dir.path().join(shelfsync_edge::STORE_FILE), store).expect("open");
    let snapshot = hub_rt.block_on(hub.agent(store, hub.store_token(store)).snapshot());
    let products: Vec<ProductId> = snapshot.catalog.iter().map(|p| p.product.id).collect();
    agent_rt.block_on(local.bootstrap(snapshot)).expect("bootstrap");
    let _guard = agent_rt.enter();
    let worker = follow_hub(&local, dir.path(), hub, store);
    agent_rt.block_on(async {
        while !worker.link().push_connected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let writing = Arc::new(AtomicBool::new(true));
    let tills: Vec<_> = (0..settings.tills)
        .map(|n| {
            let product = products[n % products.len()];
            agent_rt.spawn(till_loop(
                local.clone(),
                store,
                product,
                writing.clone(),
                Duration::ZERO,
            ))
        })
        .collect();
    std::thread::sleep(settings.burst);
    writing.store(false, Ordering::SeqCst);
    let written: usize = tills
        .into_iter()
        .map(|till| agent_rt.block_on(till).expect("a till").len())
        .sum();
    let left = worker.outbox_depth();
    println!(
        "  burst: {} tills wrote {written} events in {:?} ({:.0}/s); confirmed by its end: {} ({:.0}%); outbox then {left}",
        settings.tills,
        settings.burst,
        written as f64 / settings.burst.as_secs_f64(),
        written as u64 - left,
        (written as u64 - left) as f64 * 100.0 / written as f64,
    );
    agent_rt.block_on(worker.stop());
}

struct Drained {
    seconds: f64,
    till_writes: usize,
    /// p50, p99.
    till_ms: [f64; 2],
    dropped: f64,
    reconnects: f64,
}

fn drain_once(
    settings: &Settings,
    hub: &TestHub,
    hub_rt: &tokio::runtime::Runtime,
    agent_rt: &tokio::runtime::Runtime,
    store: StoreId,
    backlog: usize,
) -> Drained {
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    let local = LocalStore::open(&dir.path().join(shelfsync_edge::STORE_FILE), store).expect("open");
    let snapshot = hub_rt.block_on(hub.agent(store, hub.store_token(store)).snapshot());
    let products: Vec<ProductId> = snapshot.catalog.iter().map(|p| p.product.id).collect();
    agent_rt.block_on(async {
        local.bootstrap(snapshot).await.expect("bootstrap");
        record_backlog(&local, store, &products, backlog).await;
    });
    let counters = |hub: &TestHub| {
        hub_rt.block_on(async {
            (
                hub.metric("shelfsync_hub_sse_dropped_slow_total").await,
                hub.metric("shelfsync_edge_sync_stream_reconnects_total").await,
            )
        })
    };
    let before = counters(hub);
    let started = Instant::now();
    let _guard = agent_rt.enter();
    let worker = follow_hub(&local, dir.path(), hub, store);
    let draining = Arc::new(AtomicBool::new(true));
    let till = agent_rt.spawn(till_loop(
        local.clone(),
        store,
        products[0],
        draining.clone(),
        settings.till_pause,
    ));
    agent_rt.block_on(async {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let depth = worker.outbox_depth();
            if depth < 1000 {
                draining.store(false, Ordering::SeqCst);
            }
            if depth == 0 && worker.sync().0 == hub.head().await {
                break;
            }
            assert!(Instant::now() < deadline, "the drain is stuck: {:?}", worker.sync());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = agent_rt.block_on(till).expect("the till");
    latencies.sort_by(f64::total_cmp);
    agent_rt.block_on(worker.stop());
    let after = counters(hub);
    Drained {
        seconds,
        till_writes: latencies.len(),
        till_ms: [quantile(&latencies, 0.5), quantile(&latencies, 0.99)],
        dropped: after.0 - before.0,
        reconnects: after.1 - before.1,
    }
}

/// One till writing while `draining`; returns each write's latency in ms.
/// The sync worker of `store` on `local`, following `hub` with the store's token (on the
/// runtime entered by the caller).
fn follow_hub(local: &LocalStore, dir: &Path, hub: &TestHub, store: StoreId) -> SyncWorker {
    SyncWorker::spawn_on(local.clone(), dir, &hub.url, store, &hub.store_token(store), |_| {})
}

async fn till_loop(
    local: LocalStore,
    store: StoreId,
    product: ProductId,
    draining: Arc<AtomicBool>,
    pause: Duration,
) -> Vec<f64> {
    let mut latencies = Vec::new();
    while draining.load(Ordering::SeqCst) {
        let command = LocalCommand {
            target: Target::Product(product),
            command: InventoryCommand::AddStock {
                quantity: StockQuantity::new(1).expect("quantity"),
            },
            event_id: EventId::new_v7(),
            idempotency: None,
            metadata: metadata(store, "till-1"),
            over_share: Default::default(),
        };
        let at = Instant::now();
        local.execute(command).await.expect("a till write");
        latencies.push(at.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(pause).await;
    }
    latencies
}

fn metadata(store: StoreId, actor: &str) -> EventMetadata {
    EventMetadata {
        origin: Origin::Store(store),
        actor: actor.into(),
        correlation_id: uuid::Uuid::now_v7(),
        causation_id: None,
        occurred_at: time::OffsetDateTime::now_utc(),
        recorded_at: None,
    }
}

/// The baseline: `rows` outbox rows (inserted untimed) acknowledged 500 per transaction,
/// then confirmed 1,000 per transaction with one confirmed-state upsert per product per
/// transaction; seconds.
fn raw_confirm(rows: usize) -> f64 {
    const PRODUCTS: usize = 8;
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    let mut conn = open_raw(&dir.path().join("raw.sqlite"));
    let ids: Vec<[u8; 16]> = (0..rows).map(|_| *EventId::new_v7().as_bytes()).collect();
    let products: Vec<[u8; 16]> = (0..PRODUCTS).map(|_| *ProductId::new_v7().as_bytes()).collect();
    let tx = conn.transaction().expect("begin");
    for (seq, id) in ids.iter().enumerate() {
        tx.prepare_cached(
            "INSERT INTO outbox (seq, event_id, product_id, event_type, schema_version, data, metadata, status, recorded_at)
             VALUES (?1, ?2, ?3, 'StockAdded', 1, '{\"quantity\":1}', '{}', 'pending', '2026-11-26T19:00:00.000000000Z')",
        )
        .expect("prepare")
        .execute(params![seq as i64 + 1, &id[..], &products[seq % PRODUCTS][..]])
        .expect("insert");
    }
    tx.commit().expect("commit");
    let started = Instant::now();
    for (batch, size, status) in [(0, 500, "acked"), (1, 1000, "confirmed")] {
        for (chunk_at, chunk) in ids.chunks(size).enumerate() {
            let tx = conn.transaction().expect("begin");
            for (i, id) in chunk.iter().enumerate() {
                tx.prepare_cached("UPDATE outbox SET status = ?3, hub_position = ?2 WHERE event_id = ?1")
                    .expect("prepare")
                    .execute(params![&id[..], (chunk_at * size + i) as i64, status])
                    .expect("update");
            }
            if batch == 1 {
                for product in &products {
                    tx.prepare_cached(
                        "INSERT INTO confirmed_streams (product_id, state) VALUES (?1, ?2)
                         ON CONFLICT (product_id) DO UPDATE SET state = excluded.state",
                    )
                    .expect("prepare")
                    .execute(params![
                        &product[..],
                        r#"{"on_hand":1000,"reservations":{},"version":7}"#
                    ])
                    .expect("upsert");
                }
            }
            tx.commit().expect("commit");
        }
    }
    started.elapsed().as_secs_f64()
}

fn open_raw(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("sync");
    conn.execute_batch(LOCAL_DDL).expect("ddl");
    conn
}

// ---------------------------------------------------------------------------------------
// catch_up

fn catch_up(settings: &Settings, hub: &TestHub, hub_rt: &tokio::runtime::Runtime, agent_rt: &tokio::runtime::Runtime) {
    let mut scenario = Scenario::new("catch_up", "events/s", Goal::AtLeast(200_000.0))
        .baseline("the same replay read from the push stream by a bare client, parsed, nothing applied");
    let store = demo_store(1);
    let token = hub.store_token(store);
    // The store as it was before it fell behind.
    let template = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    let snapshot = hub_rt.block_on(hub.agent(store, token.clone()).snapshot());
    let products: Vec<ProductId> = snapshot.catalog.iter().map(|p| p.product.id).collect();
    let from = snapshot.position;
    agent_rt.block_on(async {
        let local = LocalStore::open(&template.path().join(shelfsync_edge::STORE_FILE), store).expect("open");
        local.bootstrap(snapshot).await.expect("bootstrap");
        local.close().await;
    });
    let generating = Instant::now();
    let head = hub_rt.block_on(fall_behind(hub, store, &token, &products, settings.behind));
    println!(
        "catch_up: {} events after position {from} (head {head}) uploaded in {:.1} s",
        head - from,
        generating.elapsed().as_secs_f64()
    );
    for run in 0..settings.runs {
        let bare = hub_rt.block_on(bare_replay(hub, &token, from, head));
        let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
        for file in std::fs::read_dir(template.path()).expect("the template") {
            let file = file.expect("a file");
            std::fs::copy(file.path(), dir.path().join(file.file_name())).expect("copy");
        }
        let local = LocalStore::open(&dir.path().join(shelfsync_edge::STORE_FILE), store).expect("open");
        let started = Instant::now();
        let _guard = agent_rt.enter();
        let worker = SyncWorker::spawn_on(local, dir.path(), &hub.url, store, &token, |_| {});
        agent_rt.block_on(async {
            let deadline = Instant::now() + PATIENCE;
            while worker.sync().0 < head {
                assert!(Instant::now() < deadline, "the catch-up is stuck: {:?}", worker.sync());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let seconds = started.elapsed().as_secs_f64();
        let rate = (head - from) as f64 / seconds;
        agent_rt.block_on(worker.stop());
        println!(
            "run {}: agent {rate:.0} events/s ({seconds:.2} s) | bare replay {bare:.0} events/s | ratio {:.2}x | load {}",
            run + 1,
            rate / bare,
            load_average()
        );
        scenario.record_pair(rate, bare);
    }
    scenario.report();
}

/// Uploads `events` deliveries on `store`'s streams, as `store`, from 4 clients; returns
/// the hub's head after them.
async fn fall_behind(hub: &TestHub, store: StoreId, token: &str, products: &[ProductId], events: usize) -> u64 {
    const CLIENTS: usize = 4;
    const BATCH: usize = 500;
    let batches = events.div_ceil(BATCH);
    let clients = (0..CLIENTS).map(|client| {
        let agent = hub.agent(store, token.to_owned());
        let products = products.to_vec();
        tokio::spawn(async move {
            for batch in (client..batches).step_by(CLIENTS) {
                let size = BATCH.min(events - batch * BATCH);
                let upload: Vec<UploadEvent> = (0..size)
                    .map(|i| UploadEvent {
                        event_id: EventId::new_v7(),
                        stream: StreamId::inventory(products[(batch * BATCH + i) % products.len()], store),
                        event_type: "StockAdded".into(),
                        schema_version: 1,
                        data: serde_json::json!({ "quantity": 1 }),
                        metadata: metadata(store, "another-agent"),
                    })
                    .collect();
                agent.upload(&upload).await;
            }
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await.expect("an uploader");
    }
    hub.head().await
}

/// Reads the push stream's replay from `from` to `head` with a bare client, parsing each
/// event; events/s.
async fn bare_replay(hub: &TestHub, token: &str, from: u64, head: u64) -> f64 {
    let started = Instant::now();
    let response = hub
        .client
        .get(format!("{}/v1/sync/stream", hub.url))
        .bearer_auth(token)
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
        .header("Last-Event-ID", from.to_string())
        .send()
        .await
        .expect("open the stream");
    assert!(response.status().is_success(), "{}", response.status());
    let mut messages = std::pin::pin!(response.bytes_stream().eventsource());
    let mut parsed = 0usize;
    while let Some(message) = tokio::time::timeout(PATIENCE, messages.next())
        .await
        .expect("the replay stalls")
    {
        let message = message.expect("a message");
        match message.event.as_str() {
            SSE_EVENT => {
                let event: EventEnvelope = serde_json::from_str(&message.data).expect("an event");
                parsed += usize::from(event.position > from);
                if event.position >= head {
                    break;
                }
            }
            SSE_CAUGHT_UP => break,
            _ => {}
        }
    }
    assert!(parsed > 0, "the replay brought nothing");
    (head - from) as f64 / started.elapsed().as_secs_f64()
}
