//! Allocations in a mixed web + till workload: oversells per 10,000 sales, and the cost on
//! a local sale's latency, with an allocation and without one, in the same run.
//!
//! One real hub in-process (demo data) and one store whose sync worker reaches it
//! through a fault proxy. Each of `ROUNDS` rounds: a delivery of `DELIVERY` units booked
//! at the hub; the store's link goes down (the proxy resets every connection); its till
//! tries `SALES` one-unit sales (reserve + commit, on the local store, decided against its
//! view) while a web shop tries `WEB` one-unit orders at the hub (reserve + commit over
//! HTTP), interleaved; the link comes back and the bench waits until the store has
//! uploaded everything and caught up; then the store's rebalance (what its one-second job
//! does) gives the hub its share. Demand (`SALES + WEB`) exceeds supply, so the two sides
//! compete for the last units of each round.
//!
//! `allocation_oversells`: `OversellDetected` events the hub recorded (its fleet view) per
//! 10,000 sales that happened (till sales the store recorded, web orders the hub
//! accepted). Baseline: the same workload (the same interleaving) on a fresh hub and
//! store without an allocation, in the same run (which of the two goes first alternates
//! by run). With one (`PERCENT`% of the stock kept for the hub, default 40), the store
//! refuses a sale past its share (`allocation_exhausted`) and the hub a web order past
//! its share.
//!
//! `allocation_sale_latency`: the p50 of a till sale (reserve + commit on the local store,
//! each answered after the local group commit) of a product with an allocation, against
//! the same sales of a product without one, alternating sale by sale in one run on one
//! agent (online, `LATENCY_SALES` of each), so that fsync weather hits both alike.
//!
//! ```sh
//! cargo bench -p shelfsync-edge --bench allocations
//! RUNS=3 ROUNDS=12 SALES=12 WEB=8 DELIVERY=14 PERCENT=40 cargo bench -p shelfsync-edge --bench allocations
//! ```
//!
//! `SHELFSYNC_BENCH_QUICK=1` runs tiny sizes once (`tests/scripts/bench.sh --quick`).

mod support;

use serde_json::json;
use shelfsync_common::testing::proxy::{FaultProxy, Mode};
use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use shelfsync_common::ReservationId;
use shelfsync_edge::store::LocalError;
use shelfsync_edge::testing::SyncWorker;
use shelfsync_hub::testing::{demo_product, demo_store, TestHub};
use std::time::{Duration, Instant};
use support::{quantile, runtime};

struct Settings {
    runs: usize,
    rounds: usize,
    sales: usize,
    web: usize,
    delivery: u32,
    percent: u8,
}

/// What one workload did.
#[derive(Debug, Default)]
struct Outcome {
    sales: usize,
    web_orders: usize,
    refused_at_till: usize,
    refused_at_hub: usize,
    oversells: u64,
}

impl Outcome {
    fn per_10k(&self) -> f64 {
        self.oversells as f64 * 10_000.0 / (self.sales + self.web_orders).max(1) as f64
    }
}

fn main() {
    let settings = Settings {
        runs: knob("RUNS", 3, 1).max(1),
        rounds: knob("ROUNDS", 12, 2).max(1),
        sales: knob("SALES", 12, 4).max(1),
        web: knob("WEB", 8, 3).max(1),
        delivery: knob("DELIVERY", 14, 5).max(1) as u32,
        percent: knob("PERCENT", 40, 40).min(100) as u8,
    };
    let latency_sales = knob("LATENCY_SALES", 400, 20).max(1);
    println!(
        "allocations: {} runs of {} rounds; each round {} till sales offline and {} web orders against a delivery of {}; allocation: {}% for the hub",
        settings.runs, settings.rounds, settings.sales, settings.web, settings.delivery, settings.percent
    );
    let rt = runtime("bench");
    let mut oversells = Scenario::new("allocation_oversells", "oversells/10k sales", Goal::AtMost(0.0))
        .baseline("the same workload without an allocation");
    let mut latency = Scenario::new(
        "allocation_sale_latency",
        "ms per till sale (p50)",
        Goal::RatioAtMost(1.25),
    )
    .baseline("the same sales without an allocation");
    for run in 0..settings.runs {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let (without, with) = if run % 2 == 0 {
            let without = rt.block_on(workload(&settings, false));
            (without, rt.block_on(workload(&settings, true)))
        } else {
            let with = rt.block_on(workload(&settings, true));
            (rt.block_on(workload(&settings, false)), with)
        };
        for (name, o) in [("without", &without), ("with", &with)] {
            println!(
                "run {} {name:>7}: {} till sales ({} refused), {} web orders ({} refused), {} oversells = {:.0} per 10,000 sales",
                run + 1,
                o.sales,
                o.refused_at_till,
                o.web_orders,
                o.refused_at_hub,
                o.oversells,
                o.per_10k(),
            );
        }
        oversells.record_pair(with.per_10k(), without.per_10k());
        let (allocated, plain) = rt.block_on(sale_latency(latency_sales));
        let p50 = |v: &[f64]| quantile(v, 0.5);
        println!(
            "run {} latency: {latency_sales} sales of each, alternating: with an allocation p50 {:.2} ms, p99 {:.2} ms; without p50 {:.2} ms, p99 {:.2} ms",
            run + 1,
            p50(&allocated),
            quantile(&allocated, 0.99),
            p50(&plain),
            quantile(&plain, 0.99),
        );
        latency.record_pair(p50(&allocated), p50(&plain));
    }
    oversells.report();
    latency.report();
}

async fn workload(settings: &Settings, allocate: bool) -> Outcome {
    let hub = TestHub::spawn().await;
    let (store, product) = (demo_store(0), demo_product(0));
    let proxy = FaultProxy::start("agent", hub.addr()).await;
    let agent = SyncWorker::spawn(&proxy.url(), store, &hub.store_token(store), |config| {
        config.sync.request_timeout_secs = 2;
    })
    .await;
    let stream = json!({"product_id": product, "store_id": store});
    // Start from zero units: every unit sold is one a round delivered.
    let available = hub.stock(product, store).await.available;
    let mut zero = stream.clone();
    zero["delta"] = json!(-available);
    zero["reason"] = json!("bench start");
    created(&hub, "/v1/inventory/adjustments", &zero).await;
    if allocate {
        let mut policy = stream.clone();
        policy["policy"] = json!({"mode": "percent", "percent": settings.percent});
        created(&hub, "/v1/inventory/allocations", &policy).await;
    }
    let mut outcome = Outcome::default();
    let mut order = 0usize;
    for _ in 0..settings.rounds {
        hub.add_stock(product, store, settings.delivery).await;
        caught_up(&hub, &agent).await;
        proxy.set_mode(Mode::Reset);
        // Interleave the till's and the web shop's attempts, as evenly as their counts allow.
        let total = settings.sales + settings.web;
        let (mut till_done, mut web_done) = (0, 0);
        for _ in 0..total {
            order += 1;
            let till_turn = web_done >= settings.web
                || (till_done < settings.sales && till_done * settings.web <= web_done * settings.sales);
            if till_turn {
                till_done += 1;
                match agent.try_sell(product, 1).await {
                    Ok(_) => outcome.sales += 1,
                    Err(LocalError::Domain(_)) => outcome.refused_at_till += 1,
                    Err(error) => panic!("till: {error}"),
                }
            } else {
                web_done += 1;
                if web_order(&hub, &stream, order).await {
                    outcome.web_orders += 1;
                } else {
                    outcome.refused_at_hub += 1;
                }
            }
        }
        proxy.heal();
        caught_up(&hub, &agent).await;
        if allocate {
            // What the store's one-second job does: give the hub what its share lacks.
            shelfsync_edge::jobs::rebalance_allocations(&agent.local, time::OffsetDateTime::now_utc())
                .await
                .expect("the store gives its share");
            caught_up(&hub, &agent).await;
        }
    }
    outcome.oversells = hub
        .fleet()
        .await
        .stores
        .iter()
        .find(|s| s.store.id == store)
        .map_or(0, |s| s.oversells);
    agent.stop().await;
    hub.stop().await;
    outcome
}

/// Till sale latencies (ms, sorted) of a product with an allocation and of one without,
/// `sales` of each, alternating, on one online agent.
async fn sale_latency(sales: usize) -> (Vec<f64>, Vec<f64>) {
    let hub = TestHub::spawn().await;
    let store = demo_store(0);
    let (allocated, plain) = (demo_product(2), demo_product(1));
    let agent = SyncWorker::spawn(&hub.url, store, &hub.store_token(store), |_| {}).await;
    let policy = json!({"product_id": allocated, "store_id": store, "policy": {"mode": "percent", "percent": 40}});
    created(&hub, "/v1/inventory/allocations", &policy).await;
    for product in [allocated, plain] {
        // Enough for every sale in the store's share (the hub keeps 40% of the delivery).
        hub.add_stock(product, store, (sales * 2) as u32).await;
    }
    caught_up(&hub, &agent).await;
    let (mut with, mut without) = (Vec::with_capacity(sales), Vec::with_capacity(sales));
    for _ in 0..sales {
        for (product, into) in [(allocated, &mut with), (plain, &mut without)] {
            let started = Instant::now();
            agent
                .try_sell(product, 1)
                .await
                .expect("a sale within the store's share");
            into.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let shares = agent
        .local
        .read(|view| view.stock(allocated))
        .and_then(|l| l.allocation);
    assert!(
        shares.is_some_and(|a| a.store_share >= 0),
        "the sales stayed in the store's share: {shares:?}"
    );
    agent.stop().await;
    hub.stop().await;
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    (with, without)
}

/// A write at the hub (admin token) that must be answered 201.
async fn created(hub: &TestHub, path: &str, body: &serde_json::Value) {
    let response = hub.post(path, body).send().await.unwrap();
    assert_eq!(response.status(), 201, "{path} {body}");
}

/// Waits (bounded) until the store has uploaded everything and follows the hub's head.
async fn caught_up(hub: &TestHub, agent: &SyncWorker) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let head = hub.head().await;
        if agent.outbox_depth() == 0 && agent.sync().0 == head {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not catch up: {:?}",
            agent.link()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One web order at the hub: reserve, then commit; false when refused for stock.
async fn web_order(hub: &TestHub, stream: &serde_json::Value, n: usize) -> bool {
    let reservation = ReservationId::new_v7();
    let mut hold = stream.clone();
    hold["quantity"] = json!(1);
    hold["reservation_id"] = json!(reservation);
    let response = hub.post("/v1/inventory/reservations", &hold).send().await.unwrap();
    match response.status().as_u16() {
        201 => {}
        409 => return false,
        other => panic!("web order {n}: {other} {}", response.text().await.unwrap_or_default()),
    }
    let path = format!("/v1/inventory/reservations/{reservation}/commit");
    let committed = hub.post(&path, &json!({})).send().await.unwrap();
    assert_eq!(committed.status(), 201, "web order {n} commit");
    true
}
