//! Crash tests of the hub: the real `shelfsync-hub` binary, run by the e2e harness
//! (`shelfsync_tests::process`), killed with SIGKILL while clients append over HTTP.
//!
//! After a restart on the same data dir, every acknowledged write must be in the log
//! exactly once, at the position it was acknowledged with; the log must be gap-free with
//! contiguous stream versions; a retry of an acknowledged request must be answered as a
//! duplicate; and the read model must converge to the fold of the log. Then a graceful
//! SIGTERM stop, `shelfsync-hub rebuild-projections`, and the same read-model check on the
//! rebuilt file. A hub killed while it seeds its demo data finishes the seed, once, at the
//! next start.
//!
//! Only acknowledged writes are promised: a request in flight at the kill may or may not
//! be in the log, but never twice, and nothing is in the log that no client sent.
//!
//! - `clients.rs`: the appending clients and the kill;
//! - `checks.rs`: what is checked beyond `shelfsync_tests::checker`.

#![cfg(unix)]

mod checks;
mod clients;

use checks::{
    assert_acks_in_log, assert_log_shape, assert_read_model_is_the_fold, assert_retries_are_duplicates,
    assert_write_side_heads, demo_streams,
};
use clients::{append_and_kill, summary, Ack, Op, Workload};
use serde_json::json;
use shelfsync_common::{EventEnvelope, EventId, StreamId};
use shelfsync_tests::checker::{fold, hub_positions, read_log};
use shelfsync_tests::cluster::{self, Cluster};
use shelfsync_tests::process::{HubProcess, START_TIMEOUT};
use std::path::Path;
use std::time::{Duration, Instant};

/// The hub's head, from `/readyz`.
async fn head(cluster: &Cluster) -> u64 {
    let (head, _) = hub_positions(&cluster.http, &cluster.hub_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    head
}

/// The whole log, read from the hub's file.
async fn log_of(cluster: &Cluster) -> Vec<EventEnvelope> {
    read_log(&cluster.hub.events_file()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_and_the_read_model_converges() {
    // Given a demo hub and eight clients appending to it
    let mut cluster = Cluster::start("acknowledged_writes_survive_sigkill", cluster::seed(), &[]).await;
    let seeded = head(&cluster).await;
    assert!(seeded > 0, "the demo seeds events");

    // When it is SIGKILLed mid-stream and started again on the same data dir
    let logs = append_and_kill(&mut cluster, Workload::Mixed, 8, 2_000, 300, Duration::from_secs(3)).await;
    eprintln!("{}", summary(&logs));
    let acks: Vec<Ack> = logs.iter().flat_map(|l| l.acks.iter().cloned()).collect();
    assert!(
        acks.len() >= 20,
        "too few acknowledged writes before the kill to test anything: {}",
        summary(&logs)
    );
    cluster.start_hub().await;

    // Then every acknowledged write is in the log exactly once, where it was acknowledged
    let log = log_of(&cluster).await;
    let head_now = log.last().map_or(0, |e| e.position);
    assert_eq!(head(&cluster).await, head_now, "the restarted hub's head is the log's");
    assert!(
        head_now >= seeded,
        "the demo must not be seeded again, nor the log shrink"
    );
    assert_log_shape(&log);
    assert_acks_in_log(&log, seeded, &logs);
    assert_eq!(
        log.iter().filter(|e| e.metadata.actor == "demo-seed").count() as u64,
        seeded,
        "the demo seed ran once"
    );
    // and idempotency survives the crash; nothing new is written by retries
    assert_retries_are_duplicates(&cluster, &acks, 8).await;
    assert_eq!(head(&cluster).await, head_now, "retries must not write");
    // and the read model converges to the fold of the log
    assert_read_model_is_the_fold(&cluster.hub_url(), &log, "after SIGKILL and restart").await;
    // and the writer's stream heads are the log's.
    assert_write_side_heads(&cluster, &log).await;

    // When the hub stops gracefully and its read model is rebuilt offline
    cluster.hub.process.terminate().await;
    let log = log_of(&cluster).await;
    assert_log_shape(&log);
    let data_dir = cluster.hub.data_dir.to_string_lossy().into_owned();
    let (status, said, stderr) = cluster
        .hub
        .process
        .run_once(
            "rebuild",
            &["rebuild-projections"],
            &[("SHELFSYNC_HUB_DATA_DIR", &data_dir)],
        )
        .await;
    assert!(
        status.is_some_and(|s| s.success()),
        "rebuild-projections exited {status:?}; stdout: {said}; stderr:\n{stderr}"
    );
    assert!(
        said.contains(&format!("read model rebuilt from {} events", log.len())),
        "{said}"
    );

    // Then the restarted hub's read model is the fold, and the log did not change.
    cluster.start_hub().await;
    assert_eq!(head(&cluster).await, log.len() as u64);
    assert_read_model_is_the_fold(&cluster.hub_url(), &log, "after rebuild-projections").await;
    assert_eq!(log_of(&cluster).await, log, "a restart must not change the log");
    cluster.hub.process.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_reservation_burst_keeps_every_hold_and_never_oversells() {
    // Given a demo hub with 150 more units of one product at one store
    let mut cluster = Cluster::start("sigkill_during_a_reservation_burst", cluster::seed(), &[]).await;
    let product = shelfsync_hub::seed::products()[0].id;
    let store = shelfsync_hub::seed::stores()[0].id;
    let stream = StreamId::inventory(product, store);
    let (status, delivery) = cluster
        .hub_post(
            "/v1/inventory/stock",
            &json!({"product_id": product, "store_id": store, "quantity": 150}),
        )
        .await;
    assert_eq!(status, 201, "{delivery}");
    let seeded = head(&cluster).await;

    // When eight clients hold units on it and the hub is SIGKILLed, then started again
    let logs = append_and_kill(
        &mut cluster,
        Workload::Reservations(product, store),
        8,
        200,
        60,
        Duration::from_secs(2),
    )
    .await;
    eprintln!("{}", summary(&logs));
    let acks: Vec<Ack> = logs.iter().flat_map(|l| l.acks.iter().cloned()).collect();
    assert!(acks.len() >= 10, "too few holds before the kill: {}", summary(&logs));
    cluster.start_hub().await;

    // Then every acknowledged hold is still open, and nothing is oversold
    let log = log_of(&cluster).await;
    assert_log_shape(&log);
    assert_acks_in_log(&log, seeded, &logs);
    let (state, _) = fold(&log).remove(&stream).expect("the stream exists");
    assert!(
        state.available() >= 0,
        "strict reservations must never oversell: {state:?}"
    );
    for ack in &acks {
        if let Op::Reserve { reservation, quantity } = ack.op {
            assert_eq!(
                state.reservations.get(&reservation).map(|r| r.quantity),
                Some(quantity),
                "acknowledged hold {reservation} must still be open after the crash"
            );
        }
    }
    assert_retries_are_duplicates(&cluster, &acks[..acks.len().min(20)], 4).await;
    assert_read_model_is_the_fold(&cluster.hub_url(), &log, "after SIGKILL during reservations").await;

    // and the writer's reservation index survived: every acknowledged hold can be committed
    for ack in &acks {
        let Op::Reserve { reservation, .. } = ack.op else {
            continue;
        };
        let (status, answer) = cluster
            .hub_post(&format!("/v1/inventory/reservations/{reservation}/commit"), &json!({}))
            .await;
        assert_eq!(
            status, 201,
            "committing acknowledged hold {reservation} after the crash: {answer}"
        );
    }
    // and the writer's stock figures are the log's: exactly what is left can be held,
    // not one unit more.
    let log = log_of(&cluster).await;
    let (state, _) = fold(&log).remove(&stream).expect("the stream exists");
    let available = state.available();
    if available > 0 {
        let (status, answer) = cluster
            .hub_post(
                "/v1/inventory/reservations",
                &json!({"product_id": product, "store_id": store, "quantity": available}),
            )
            .await;
        assert_eq!(
            status, 201,
            "holding the {available} units the log says are left: {answer}"
        );
    }
    let (status, answer) = cluster
        .hub_post(
            "/v1/inventory/reservations",
            &json!({"product_id": product, "store_id": store, "quantity": 1}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("insufficient_stock")),
        "the log says nothing is left: {answer}"
    );
    let log = log_of(&cluster).await;
    assert_log_shape(&log);
    assert_read_model_is_the_fold(&cluster.hub_url(), &log, "after committing the holds").await;
    cluster.hub.process.terminate().await;
}

/// Events the demo seed writes: 5 products, then opening stock for 15 product-store pairs.
const SEED_EVENTS: u64 = 20;

/// Starts `demo` on a fresh data dir under `root` and SIGKILLs it as soon as the seed has
/// gone as far as `target` (0: a store is enrolled; n: the log holds n events), watching
/// the log from a read-only connection. Returns (stores, head) as last seen before the
/// kill, or `None` if the hub got past the seed first.
async fn kill_first_start_while_seeding(root: &Path, target: u64) -> Option<(u64, u64)> {
    let mut hub = HubProcess::new(root, &[]);
    hub.process.start_unannounced();
    let events = hub.events_file();
    let wal = hub.data_dir.join(format!("{}-wal", shelfsync_hub::EVENTS_FILE));
    let (hub, seen) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut conn: Option<rusqlite::Connection> = None;
        let mut seen = None;
        while Instant::now() < deadline {
            assert!(
                hub.process.is_running(),
                "the hub exited while seeding; stderr:\n{}",
                hub.process.stderr_tail(40)
            );
            // Only once the file is in WAL mode, so as not to stand in the way of its creation.
            if conn.is_none() && wal.exists() {
                conn = shelfsync_hub::store::schema::open_read_only(&events).ok();
            }
            let Some(db) = &conn else {
                std::thread::yield_now();
                continue;
            };
            let state = db.query_row(
                "SELECT (SELECT COUNT(*) FROM stores), (SELECT COALESCE(MAX(position), 0) FROM events)",
                [],
                |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
            );
            match state {
                Ok((stores, head)) => {
                    let reached = if target == 0 { stores > 0 } else { head >= target };
                    if reached || head >= SEED_EVENTS {
                        seen = Some((stores, head));
                        break;
                    }
                }
                // The schema is not there yet: look again with a fresh connection.
                Err(_) => conn = None,
            }
        }
        drop(conn);
        let mut hub = hub;
        hub.process.kill9();
        (hub, seen)
    })
    .await
    .expect("watching the seed");
    drop(hub);
    let seen = seen.unwrap_or_else(|| panic!("the seed did not reach {target} within {START_TIMEOUT:?}"));
    (seen.1 < SEED_EVENTS).then_some(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_the_first_start_seed_is_finished_by_the_next_start() {
    let seed_ids: Vec<EventId> = (1..=SEED_EVENTS)
        .map(|n| EventId::from_name("demo-seed", &n.to_string()))
        .collect();
    let mut caught = Vec::new();
    for target in [0, 1, 3, 6, 10, 15, 19] {
        // Given a first start of a demo hub, SIGKILLed while it seeds
        let root = tempfile::tempdir().expect("temp dir");
        let seen = kill_first_start_while_seeding(root.path(), target).await;
        caught.extend(seen);

        // When it starts again on the same data dir
        let mut hub = HubProcess::new(root.path(), &[]);
        hub.process.start().await;

        // Then the seed is finished, once, and the read model is its fold.
        let log = read_log(&hub.events_file()).await;
        assert_log_shape(&log);
        let ids: Vec<EventId> = log.iter().map(|e| e.event_id).collect();
        assert_eq!(
            ids, seed_ids,
            "killed while seeding at {seen:?} (stores, head): the next start must finish the seed, once"
        );
        let folded = fold(&log);
        assert!(
            demo_streams()
                .iter()
                .all(|s| folded.get(s).is_some_and(|(state, _)| state.version == 1)),
            "every demo pair has its opening stock: {folded:?}"
        );
        assert_read_model_is_the_fold(&hub.process.url(), &log, "after a kill during the seed").await;
        hub.process.terminate().await;
    }
    eprintln!("killed mid-seed at (stores, head): {caught:?}");
    assert!(
        !caught.is_empty(),
        "no kill landed inside the seed; the test did not test anything"
    );
}
