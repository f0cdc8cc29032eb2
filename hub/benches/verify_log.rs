//! `shelfsync-hub verify` on a large log: a hub data directory with `VERIFY_EVENTS` events
//! (default 1,000,000) over `STREAMS` inventory streams (default 2,000), deliveries,
//! holds and their commits and releases (at most a few open holds per stream, as a live
//! hub has), its read model and analytics file projected by the hub's own rebuilds; then
//! `verify` timed on it, `RUNS` times (default 3). The baseline is `rebuild-projections`
//! on the same log (the fold alone, with no check): verify reads the log once and folds it
//! twice (read model and analytics).
//!
//! ```sh
//! cargo bench -p shelfsync-hub --bench verify_log
//! VERIFY_EVENTS=3000000 cargo bench -p shelfsync-hub --bench verify_log
//! ```
//!
//! `SHELFSYNC_BENCH_QUICK=1` runs tiny sizes; `BENCH_DIR` sets where the files go.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::params;
use shelfsync_common::domain::inventory::{self, InventoryState};
use shelfsync_common::testing::measure::bench_dir;
use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use shelfsync_common::{EventMetadata, EventPayload, Origin, ProductId, ReservationId, StoreId, StreamId};
use shelfsync_hub::store::schema::{self, EVENT_STORE};
use shelfsync_hub::store::StreamState;
use std::path::Path;
use std::time::Instant;
use time::OffsetDateTime;

/// Events per transaction while generating.
const GENERATE_BATCH: usize = 50_000;

fn main() {
    let events = knob("VERIFY_EVENTS", 1_000_000, 5_000);
    let streams = knob("STREAMS", 2_000, 50);
    let runs = knob("RUNS", 3, 1);
    let dir = tempfile::tempdir_in(bench_dir()).expect("bench dir");
    let started = Instant::now();
    generate(dir.path(), events, streams);
    println!(
        "generated {events} events over {streams} streams in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    shelfsync_hub::rebuild_analytics(dir.path(), false).expect("rebuild analytics");
    println!("analytics projected in {:.1} s", started.elapsed().as_secs_f64());

    let mut scenario = Scenario::new("verify_1m_events", "events/s", Goal::AtLeast(50_000.0))
        .baseline("rebuild-projections on the same log (the fold alone)");
    for run in 1..=runs {
        let started = Instant::now();
        let folded = shelfsync_hub::rebuild_read_model(dir.path(), false).expect("rebuild read model");
        let rebuild = started.elapsed().as_secs_f64();
        assert_eq!(folded, events as u64);
        let started = Instant::now();
        let report = shelfsync_hub::verify::data_dir(dir.path(), false).expect("verify");
        let verify = started.elapsed().as_secs_f64();
        assert!(report.passed(), "{report}");
        assert_eq!(report.events, events as u64);
        println!("run {run}: verify {verify:.2} s, rebuild-projections {rebuild:.2} s");
        scenario.record_pair(events as f64 / verify, events as f64 / rebuild);
    }
    scenario.report();
}

/// Writes the log (and the writer's `streams` rows) as the hub's writer would.
fn generate(dir: &Path, events: usize, streams: usize) {
    let mut rng = StdRng::seed_from_u64(0x7e71_f1ed);
    let stores: Vec<StoreId> = (0..40).map(|_| StoreId::new_v7()).collect();
    let keys: Vec<StreamId> = (0..streams)
        .map(|i| StreamId::inventory(ProductId::new_v7(), stores[i % stores.len()]))
        .collect();
    let mut states = vec![InventoryState::default(); streams];
    let mut last_position = vec![0u64; streams];
    let mut conn = schema::open_durable(&dir.join(shelfsync_hub::EVENTS_FILE)).expect("open");
    schema::migrate(&mut conn, EVENT_STORE).expect("migrate");
    conn.pragma_update(None, "synchronous", "OFF").expect("pragma");
    let expires_at = OffsetDateTime::now_utc() + time::Duration::days(365);
    let mut position = 0u64;
    while (position as usize) < events {
        let tx = conn.transaction().expect("begin");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata, fingerprint)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8)",
                )
                .expect("prepare");
            for _ in 0..GENERATE_BATCH.min(events - position as usize) {
                position += 1;
                let stream = rng.random_range(0..streams);
                let state = &mut states[stream];
                let open = state.reservations.iter().next().map(|(id, hold)| (*id, hold.quantity));
                let payload = match (open, rng.random_range(0..10)) {
                    (Some((reservation_id, quantity)), 0..=2) => EventPayload::ReservationCommitted {
                        reservation_id,
                        quantity,
                    },
                    (Some((reservation_id, quantity)), 3) => EventPayload::StockReleased {
                        reservation_id,
                        quantity,
                        reason: shelfsync_common::domain::event::ReleaseReason::Cancelled,
                    },
                    (_, 4..=6) if state.available() > 5 => EventPayload::StockReserved {
                        reservation_id: ReservationId::new_v7(),
                        quantity: rng.random_range(1..=3),
                        expires_at,
                    },
                    _ => EventPayload::StockAdded {
                        quantity: rng.random_range(1..=20),
                    },
                };
                // Counts the event into the state's version too.
                inventory::apply(state, &payload, Origin::Hub.into());
                last_position[stream] = position;
                let metadata = EventMetadata {
                    origin: Origin::Hub,
                    actor: "channel:web-shop".into(),
                    correlation_id: uuid::Uuid::now_v7(),
                    causation_id: None,
                    occurred_at: OffsetDateTime::now_utc(),
                    recorded_at: None,
                };
                let event_id = uuid::Uuid::now_v7();
                insert
                    .execute(params![
                        position as i64,
                        &event_id.as_bytes()[..],
                        &keys[stream].key()[..],
                        state.version as i64,
                        payload.event_type(),
                        payload.data().to_string(),
                        serde_json::to_string(&metadata).expect("metadata"),
                        &event_id.as_bytes()[..],
                    ])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let tx = conn.transaction().expect("begin");
    for (stream, state) in states.into_iter().enumerate() {
        if state.version == 0 {
            continue;
        }
        let version = state.version as i64;
        let state = serde_json::to_string(&StreamState::Inventory(state)).expect("state");
        tx.execute(
            "INSERT INTO streams (stream_key, version, last_position, state) VALUES (?1, ?2, ?3, ?4)",
            params![&keys[stream].key()[..], version, last_position[stream] as i64, state],
        )
        .expect("streams row");
    }
    tx.commit().expect("commit");
}
