//! Retention at a store with a year of sales: the size of the agent's file before and
//! after the prune (`[retention]`, `keep_days` 30) and after a one-off `VACUUM`, how long
//! the prune takes, and how long a till waits while it runs.
//!
//! The store: `DAYS` (365) days of `SALES_PER_DAY` (5,000) sales, spread evenly over each
//! day, ending now. A sale is what a till does (`local_sales`): a reservation and its
//! commit, each with an `Idempotency-Key`, so two outbox rows, two idempotency records and
//! one `own_reservations` row. The rows are copies of the rows one real sale through the
//! local store wrote (the same JSON, so the same sizes), with their own ids, keys and
//! times, written directly in large transactions (fast); all `confirmed` (the hub has
//! them) except `QUARANTINED` sales of the first day, which must survive the prune.
//!
//! Then the agent's store opens the file and one till sells flat out (reserve + commit,
//! each answered after the group commit): `BASELINE_SECS` without the prune (the
//! baseline), then while the retention job (`crate::jobs::prune`, `BATCH_ROWS` rows a
//! step) removes everything older than `KEEP_DAYS`. Reported: the prune's duration, its
//! longest step (search + writer transaction), and the till's p99 and longest write
//! during the prune against the baseline. Then the store closes, and `VACUUM` (with the
//! agent stopped) rewrites the file.
//!
//! ```sh
//! cargo bench -p shelfsync-edge --bench retention
//! DAYS=365 SALES_PER_DAY=5000 KEEP_DAYS=30 BATCH_ROWS=1000 cargo bench -p shelfsync-edge --bench retention
//! ```
//!
//! `SHELFSYNC_BENCH_QUICK=1` runs 40 days of 200 sales (`tests/scripts/bench.sh --quick`).
//! `BENCH_DIR` sets where the file goes (default: the system temp dir; a full run needs
//! about 5 GB there). `KEEP_FILE=1` keeps it (the path is printed; delete it after).

mod support;

use rusqlite::{params, Connection};
use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use shelfsync_common::wire::api::{ProductView, StockLevel};
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::wire::sync::SnapshotResponse;
use shelfsync_common::{
    EventId, EventMetadata, InventoryCommand, Origin, Product, ProductId, ReservationId, StockQuantity, StoreId,
};
use shelfsync_edge::config::RetentionConfig;
use shelfsync_edge::store::{LocalCommand, LocalStore, Target};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{bench_dir, quantile, runtime};
use time::OffsetDateTime;

/// Rows written per transaction while the year is built.
const BUILD_TX_ROWS: usize = 200_000;

struct Settings {
    days: usize,
    per_day: usize,
    keep_days: u32,
    batch_rows: usize,
    quarantined: usize,
    baseline: Duration,
}

/// The rows one real sale wrote: two outbox rows and two idempotency records.
struct Template {
    outbox: Vec<(String, i64, String, String)>,
    idempotency: Vec<(Vec<u8>, String)>,
}

/// What the file holds.
#[derive(Debug, Clone, Copy)]
struct Size {
    bytes: u64,
    free_pages: i64,
    outbox: i64,
    idempotency: i64,
    own_reservations: i64,
}

fn main() {
    let settings = Settings {
        days: knob("DAYS", 365, 40),
        per_day: knob("SALES_PER_DAY", 5000, 200),
        keep_days: knob("KEEP_DAYS", 30, 30) as u32,
        batch_rows: knob("BATCH_ROWS", 1000, 500),
        quarantined: knob("QUARANTINED", 10, 2),
        baseline: Duration::from_secs(knob("BASELINE_SECS", 10, 1) as u64),
    };
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    let path = dir.path().join(shelfsync_edge::STORE_FILE);
    let rt = runtime("agent");
    let store = StoreId::new_v7();
    let product = ProductId::new_v7();

    let template = rt.block_on(one_real_sale(&path, store, product));
    let built = Instant::now();
    let now = OffsetDateTime::now_utc();
    build_year(&path, &settings, &template, now);
    let before = size(&path);
    println!(
        "retention: built {} days x {} sales in {:.1} s: {}",
        settings.days,
        settings.per_day,
        built.elapsed().as_secs_f64(),
        describe(before)
    );

    let local = LocalStore::open(&path, store).expect("open the year");
    let keep = RetentionConfig {
        keep_days: settings.keep_days,
        batch_rows: settings.batch_rows,
        ..RetentionConfig::default()
    };
    let (baseline, during, pruned, took) = rt.block_on(async {
        let baseline = till_for(&local, product, settings.baseline).await;
        let selling = Arc::new(AtomicBool::new(true));
        let till = tokio::spawn(till_until(local.clone(), product, selling.clone()));
        let started = Instant::now();
        let reports = shelfsync_edge::jobs::prune(&local, &keep, OffsetDateTime::now_utc())
            .await
            .expect("prune");
        let took = started.elapsed();
        selling.store(false, Ordering::SeqCst);
        let during = till.await.expect("the till");
        local.close().await;
        (baseline, during, reports, took)
    });
    let after = size(&path);
    let vacuum = Instant::now();
    let conn = Connection::open(&path).expect("open for VACUUM");
    conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("VACUUM");
    drop(conn);
    let vacuum = vacuum.elapsed();
    let vacuumed = size(&path);

    let kept = (settings.keep_days as usize).min(settings.days);
    let expected_outbox = ((settings.days - kept) * settings.per_day - settings.quarantined) * 2;
    let outbox_pruned = pruned.iter().find(|r| r.table == "outbox").expect("outbox");
    let keys_pruned = pruned.iter().find(|r| r.table == "idempotency").expect("idempotency");
    println!("  prune: {:.1} s; {pruned:?}", took.as_secs_f64());
    println!("  after the prune: {}", describe(after));
    println!(
        "  after VACUUM ({:.1} s, agent stopped): {}",
        vacuum.as_secs_f64(),
        describe(vacuumed)
    );
    // Everything older than the retention went, except the quarantined sales.
    assert!(
        outbox_pruned.pruned.abs_diff(expected_outbox as u64) <= (2 * settings.per_day) as u64,
        "outbox: pruned {} of about {expected_outbox}",
        outbox_pruned.pruned
    );
    assert!(after.outbox >= (settings.quarantined * 2) as i64);
    let longest_step = pruned.iter().map(|r| r.longest_step).max().unwrap_or_default();
    let (base_p99, base_max) = percentiles(baseline);
    let (p99, max) = percentiles(during);
    println!(
        "  till writes: {base_p99:.1} ms p99 / {base_max:.1} ms max without the prune; {p99:.1} ms p99 / {max:.1} ms max during it; longest prune step {:.1} ms; outbox {} rows and idempotency {} rows pruned",
        longest_step.as_secs_f64() * 1000.0,
        outbox_pruned.pruned,
        keys_pruned.pruned
    );

    if std::env::var("KEEP_FILE").is_ok_and(|v| v == "1") {
        println!("  kept: {}", dir.keep().join(shelfsync_edge::STORE_FILE).display());
    }
    let mut prune = Scenario::new("retention_prune", "s", Goal::AtMost(600.0));
    prune.record(took.as_secs_f64());
    prune.report();
    let mut wait =
        Scenario::new("retention_till_p99", "ms", Goal::RatioAtMost(3.0)).baseline("the same till without the prune");
    wait.record_pair(p99, base_p99);
    wait.report();
    let mut shrink = Scenario::new("retention_file_after_vacuum", "MB", Goal::RatioAtMost(0.15))
        .baseline("the file before the prune");
    shrink.record_pair(vacuumed.bytes as f64 / 1e6, before.bytes as f64 / 1e6);
    shrink.report();
}

/// Records one real sale (reserve + commit, each with an Idempotency-Key) on a fresh
/// store at `path`, and returns its rows.
async fn one_real_sale(path: &Path, store: StoreId, product: ProductId) -> Template {
    let local = LocalStore::open(path, store).expect("open");
    let item = Product {
        id: product,
        sku: "COFFEE-250".into(),
        name: "Coffee beans, 250 g".into(),
        price_minor: 899,
    };
    let on_hand = 1_000_000_000;
    local
        .bootstrap(SnapshotResponse {
            store_id: store,
            position: 1,
            stock: vec![StockLevel {
                product_id: product,
                store_id: store,
                on_hand,
                reserved: 0,
                available: on_hand,
                version: 1,
                position: 1,
                allocation: None,
            }],
            reservations: Vec::new(),
            catalog: vec![ProductView {
                product: item,
                version: 1,
            }],
        })
        .await
        .expect("bootstrap");
    sell(&local, product, Some("till-01-20261127-000001")).await;
    local.close().await;
    let conn = Connection::open(path).expect("read the sale");
    let outbox = conn
        .prepare("SELECT event_type, schema_version, data, metadata FROM outbox ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let idempotency = conn
        .prepare("SELECT fingerprint, outcome FROM idempotency ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    conn.execute_batch("DELETE FROM outbox; DELETE FROM idempotency; DELETE FROM own_reservations;")
        .unwrap();
    Template { outbox, idempotency }
}

/// Writes the year: every sale's rows, in large transactions.
fn build_year(path: &Path, settings: &Settings, template: &Template, end: OffsetDateTime) {
    let mut conn = Connection::open(path).expect("open to build");
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    let start = end - time::Duration::days(settings.days as i64);
    let step = 86_400.0 / settings.per_day as f64;
    let total = settings.days * settings.per_day;
    let mut seq = 0i64;
    let mut sale = 0usize;
    while sale < total {
        let tx = conn.transaction().unwrap();
        {
            let mut outbox = tx
                .prepare(
                    "INSERT INTO outbox (seq, event_id, product_id, event_type, schema_version, data, metadata, status, hub_position, recorded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .unwrap();
            let mut keys = tx
                .prepare("INSERT INTO idempotency (key, fingerprint, outcome, created_at) VALUES (?1, ?2, ?3, ?4)")
                .unwrap();
            let mut holds = tx
                .prepare("INSERT INTO own_reservations (reservation_id, product_id) VALUES (?1, ?2)")
                .unwrap();
            let last = total.min(sale + BUILD_TX_ROWS / 5);
            for n in sale..last {
                let at = start + time::Duration::seconds_f64(n as f64 * step);
                let at = shelfsync_common::sqlite::time_text::encode(at).unwrap();
                let status = if n < settings.quarantined {
                    "quarantined"
                } else {
                    "confirmed"
                };
                let product = ProductId::new_v7();
                for (i, (event_type, version, data, metadata)) in template.outbox.iter().enumerate() {
                    seq += 1;
                    let event_id = EventId::new_v7();
                    outbox
                        .execute(params![
                            seq,
                            &event_id.as_bytes()[..],
                            &product.as_bytes()[..],
                            event_type,
                            version,
                            data,
                            metadata,
                            status,
                            (status == "confirmed").then_some(seq),
                            at
                        ])
                        .unwrap();
                    let (fingerprint, outcome) = &template.idempotency[i];
                    // The agent keys every record by its event id (docs/edge-api.md).
                    let key = format!("event:{event_id}");
                    keys.execute(params![key, fingerprint, outcome, at]).unwrap();
                }
                holds
                    .execute(params![
                        &ReservationId::new_v7().as_bytes()[..],
                        &product.as_bytes()[..]
                    ])
                    .unwrap();
            }
            sale = last;
        }
        tx.commit().unwrap();
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
}

fn size(path: &Path) -> Size {
    let conn = Connection::open(path).expect("open to measure");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let size = Size {
        bytes: 0,
        free_pages: count("PRAGMA freelist_count"),
        outbox: count("SELECT COUNT(*) FROM outbox"),
        idempotency: count("SELECT COUNT(*) FROM idempotency"),
        own_reservations: count("SELECT COUNT(*) FROM own_reservations"),
    };
    drop(conn);
    Size {
        bytes: std::fs::metadata(path).expect("the file").len(),
        ..size
    }
}

fn describe(size: Size) -> String {
    format!(
        "file {:.0} MB ({:.0} MB of it free pages), outbox {} rows, idempotency {} rows, own_reservations {} rows",
        size.bytes as f64 / 1e6,
        size.free_pages as f64 * 4096.0 / 1e6,
        size.outbox,
        size.idempotency,
        size.own_reservations
    )
}

/// One sale (reserve + commit); returns how long each write took, in ms.
async fn sell(local: &LocalStore, product: ProductId, key: Option<&str>) -> [f64; 2] {
    let reservation_id = ReservationId::new_v7();
    let command = |target, command, suffix: &str| LocalCommand {
        target,
        command,
        event_id: EventId::new_v7(),
        idempotency: key.map(|k| {
            (
                format!("{k}{suffix}"),
                Fingerprint::from_bytes(*EventId::new_v7().as_bytes()),
            )
        }),
        metadata: EventMetadata {
            origin: Origin::Store(local.read(|v| v.store_id)),
            actor: "till-01".into(),
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: None,
            occurred_at: OffsetDateTime::now_utc(),
            recorded_at: None,
        },
        over_share: Default::default(),
    };
    let reserve = InventoryCommand::ReserveStock {
        reservation_id,
        quantity: StockQuantity::new(1).expect("quantity"),
        expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(15),
    };
    let started = Instant::now();
    local
        .execute(command(Target::Product(product), reserve, "-r"))
        .await
        .expect("reserve");
    let first = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let commit = InventoryCommand::CommitReservation { reservation_id };
    local
        .execute(command(Target::Reservation(reservation_id), commit, "-c"))
        .await
        .expect("commit");
    [first, started.elapsed().as_secs_f64() * 1000.0]
}

/// A till selling flat out for `period`; every write's time in ms.
async fn till_for(local: &LocalStore, product: ProductId, period: Duration) -> Vec<f64> {
    let started = Instant::now();
    let mut times = Vec::new();
    let mut n = 0;
    while started.elapsed() < period {
        n += 1;
        times.extend(sell(local, product, Some(&format!("till-02-{n:09}"))).await);
    }
    times
}

/// A till selling flat out until `selling` turns false; every write's time in ms.
async fn till_until(local: LocalStore, product: ProductId, selling: Arc<AtomicBool>) -> Vec<f64> {
    let mut times = Vec::new();
    let mut n = 0;
    while selling.load(Ordering::SeqCst) {
        n += 1;
        times.extend(sell(&local, product, Some(&format!("till-03-{n:09}"))).await);
    }
    times
}

/// (p99, max) of write times in ms.
fn percentiles(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (quantile(&times, 0.99), times.last().copied().unwrap_or(f64::NAN))
}
