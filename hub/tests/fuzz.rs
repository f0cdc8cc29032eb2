//! Property test (a fuzz target in the normal suite): arbitrary upload batches from two
//! stores and arbitrary API bodies, near-valid and hostile (`i64::MIN`, the year 10000 in
//! disguise, JSON arrays, unknown ids, wrong owners), sent to a real hub over real HTTP.
//!
//! It asserts that nothing is answered with a server error and that, after all of it,
//! the read model equals the fold of the log (`inventory::apply` over every recorded
//! event) with no poison event: whatever the input, what gets recorded can be applied.
//!
//! Seeded (ChaCha, fixed seed) so a run is reproducible; `PROPTEST_CASES` sets how many
//! cases (256 by default, each a sequence of up to 8 requests).

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use shelfsync_common::domain::event::EVENT_TYPES;
use shelfsync_common::domain::inventory::{self, InventoryState};
use shelfsync_common::testing::http::call;
use shelfsync_common::{EventId, ProductId, ReservationId, StoreId, StreamId};
use shelfsync_hub::read_model;
use shelfsync_hub::store::{schema, LogFile};
use shelfsync_hub::testing::{demo_product, demo_store, Agent, TestHub};
use std::collections::BTreeMap;

/// One request of a case.
#[derive(Debug, Clone)]
enum Action {
    /// `POST route` with `body` and the admin token.
    Api { route: String, body: Value },
    /// An upload by store `uploader` (0 or 1) of these events.
    Upload { uploader: usize, events: Vec<FuzzEvent> },
}

/// The parts of an uploaded event, each drawn from valid and hostile values.
#[derive(Debug, Clone)]
struct FuzzEvent {
    event_id: u8,
    product: usize,
    stream_owner: usize,
    origin: usize,
    event_type: String,
    schema_version: u16,
    data: Value,
    occurred_at: Value,
}

fn reservation(n: u8) -> ReservationId {
    ReservationId::from_bytes([n + 1; 16])
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => (1i64..20).prop_map(|n| json!(n)),
        1 => (-20i64..20).prop_map(|n| json!(n)),
        2 => prop::sample::select(vec![
            json!(0),
            json!(1_000_000),
            json!(1_000_001),
            json!(-1_000_000),
            json!(-1_000_001),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(u32::MAX),
            json!(2.5),
            json!("3"),
            json!(null),
        ]),
    ]
}

fn time_text() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!("2030-01-01T00:00:00Z"),
        json!("2026-11-26T10:00:00+02:00"),
        json!("9999-12-31T23:59:59-23:59"),
        json!("0001-01-01T00:00:00+23:59"),
        json!("1969-12-31T23:59:59Z"),
        json!("9999-12-31T23:59:59Z"),
        json!("not a time"),
        json!(12),
    ])
}

fn reason_text() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!("count"),
        json!(""),
        json!("a\u{0}b"),
        json!("x".repeat(201)),
        json!(5),
    ])
}

fn data_for(event_type: &str) -> BoxedStrategy<Value> {
    let rid = (0u8..40).prop_map(|n| json!(reservation(n)));
    match event_type {
        "StockAdded" => number().prop_map(|q| json!({"quantity": q})).boxed(),
        "StockReserved" => (rid, number(), time_text())
            .prop_map(|(r, q, t)| json!({"reservation_id": r, "quantity": q, "expires_at": t}))
            .boxed(),
        "StockReleased" => (
            rid,
            number(),
            prop::sample::select(vec!["cancelled", "expired", "lost"]),
        )
            .prop_map(|(r, q, why)| json!({"reservation_id": r, "quantity": q, "reason": why}))
            .boxed(),
        "ReservationCommitted" => (rid, number())
            .prop_map(|(r, q)| json!({"reservation_id": r, "quantity": q}))
            .boxed(),
        "StockAdjusted" => (number(), reason_text())
            .prop_map(|(d, r)| json!({"delta": d, "reason": r}))
            .boxed(),
        _ => prop::sample::select(vec![json!({}), json!([1, 2]), json!({"quantity": 1}), json!(null)]).boxed(),
    }
}

fn fuzz_event() -> impl Strategy<Value = FuzzEvent> {
    let types: Vec<String> = EVENT_TYPES
        .iter()
        .map(|t| (*t).to_owned())
        .chain(["Teleported".into()])
        .collect();
    prop::sample::select(types).prop_flat_map(|event_type| {
        (
            0u8..12,
            0usize..6,
            // Mostly the uploader's own stream and origin, so most events reach the rules.
            prop::sample::select(vec![0usize, 0, 0, 1, 2]),
            prop::sample::select(vec![0usize, 0, 0, 1, 2]),
            prop::sample::select(vec![1u16, 1, 1, 1, 0, 2]),
            data_for(&event_type),
            // A malformed `occurred_at` fails the whole request: keep it rare.
            prop_oneof![4 => Just(json!("2030-01-01T00:00:00Z")), 1 => time_text()],
        )
            .prop_map(
                move |(event_id, product, stream_owner, origin, schema_version, data, occurred_at)| FuzzEvent {
                    event_id,
                    product,
                    stream_owner,
                    origin,
                    event_type: event_type.clone(),
                    schema_version,
                    data,
                    occurred_at,
                },
            )
    })
}

fn api_action() -> impl Strategy<Value = Action> {
    let product = (0usize..6).prop_map(product_id);
    let store = (0usize..4).prop_map(store_id);
    let rid = (0u8..40).prop_map(reservation);
    prop_oneof![
        (product.clone(), store.clone(), number()).prop_map(|(p, s, q)| (
            "/v1/inventory/stock".to_owned(),
            json!({"product_id": p, "store_id": s, "quantity": q})
        )),
        (product.clone(), store.clone(), number(), reason_text()).prop_map(|(p, s, d, r)| (
            "/v1/inventory/adjustments".to_owned(),
            json!({"product_id": p, "store_id": s, "delta": d, "reason": r})
        )),
        (product.clone(), store.clone(), number(), rid.clone(), number()).prop_map(|(p, s, q, r, ttl)| (
            "/v1/inventory/reservations".to_owned(),
            json!({"product_id": p, "store_id": s, "quantity": q, "reservation_id": r, "ttl_seconds": ttl})
        )),
        (rid.clone(), prop::sample::select(vec!["release", "commit"]))
            .prop_map(|(r, what)| (format!("/v1/inventory/reservations/{r}/{what}"), json!({}))),
        (product, store, number()).prop_map(|(p, s, q)| ("/v1/inventory/stock".to_owned(), json!([p, s, q]))),
    ]
    .prop_map(|(route, body)| Action::Api { route, body })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        api_action(),
        (0usize..2, prop::collection::vec(fuzz_event(), 1..6))
            .prop_map(|(uploader, events)| Action::Upload { uploader, events }),
    ]
}

/// Demo products 0..=4, then one nobody registered.
fn product_id(n: usize) -> ProductId {
    if n < 5 {
        demo_product(n)
    } else {
        ProductId::from_bytes([0xEE; 16])
    }
}

/// Demo stores 0..=2, then one nobody enrolled.
fn store_id(n: usize) -> StoreId {
    if n < 3 {
        demo_store(n)
    } else {
        StoreId::from_bytes([0xDD; 16])
    }
}

fn upload_event(agents: &[Agent; 2], uploader: usize, event: &FuzzEvent) -> Value {
    let owner = match event.stream_owner {
        0 => Some(agents[uploader].store),
        1 => Some(agents[1 - uploader].store),
        _ => None,
    };
    let origin = match event.origin {
        0 => json!(agents[uploader].store),
        1 => json!("hub"),
        _ => json!(agents[1 - uploader].store),
    };
    let stream = StreamId {
        product_id: product_id(event.product),
        store_id: owner,
    };
    json!({
        "event_id": EventId::from_bytes([event.event_id, uploader as u8, 7, 7, 7, 7, 7, 0x70, 0x80, 0, 0, 0, 0, 0, 0, 1]),
        "stream": stream,
        "type": event.event_type,
        "schema_version": event.schema_version,
        "data": event.data,
        "metadata": {
            "origin": origin,
            "actor": "fuzz",
            "correlation_id": uuid::Uuid::nil(),
            "occurred_at": event.occurred_at,
        },
    })
}

#[test]
fn arbitrary_uploads_and_api_bodies_never_break_the_hub_and_the_read_model_is_the_fold() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let hub = runtime.block_on(TestHub::spawn());
    let agents = runtime.block_on(async { [hub.enroll("Fuzz A").await.1, hub.enroll("Fuzz B").await.1] });
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let counts: std::cell::RefCell<BTreeMap<u16, usize>> = Default::default();
    let result = runner.run(&prop::collection::vec(action(), 1..8), |actions| {
        runtime.block_on(async {
            for action in &actions {
                let request = match action {
                    Action::Api { route, body } => hub.post(route, body),
                    Action::Upload { uploader, events } => {
                        let events: Vec<Value> = events.iter().map(|e| upload_event(&agents, *uploader, e)).collect();
                        agents[*uploader]
                            .request(reqwest::Method::POST, "/v1/sync/upload")
                            .json(&json!({ "events": events }))
                    }
                };
                let (status, body, content_type) = call(request).await;
                *counts.borrow_mut().entry(status).or_default() += 1;
                prop_assert!(status < 500, "{action:?} -> {status} {body}");
                if status >= 400 {
                    prop_assert_eq!(content_type.as_str(), "application/problem+json", "{:?}", body);
                    prop_assert!(body["code"].is_string(), "{body}");
                }
            }
            Ok(())
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let counts = counts.into_inner();
    eprintln!("statuses over {cases} cases: {counts:?}");
    assert!(
        counts.keys().any(|s| *s < 300),
        "some requests must have been recorded: {counts:?}"
    );

    // The read model is the fold of the log, with nothing skipped as poison.
    let head = runtime.block_on(hub.head());
    let read_model_path = hub.data_dir.join("read_model.sqlite");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let read_model = loop {
        let conn = schema::open_read_only(&read_model_path).unwrap();
        if read_model::read_checkpoint(&conn).unwrap() >= head {
            break conn;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the projection did not reach {head}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let log = LogFile::open(&hub.data_dir.join("events.sqlite")).unwrap();
    let mut folded: BTreeMap<(ProductId, StoreId), InventoryState> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = log.events_after(after, 10_000).unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in &page {
            if let Some(store) = event.stream.store_id {
                inventory::apply(
                    folded.entry((event.stream.product_id, store)).or_default(),
                    &event.payload,
                    event.metadata.origin.into(),
                );
            }
        }
    }
    let (poison, _) = read_model::read_poison_events(&read_model, 1).unwrap();
    assert_eq!(poison, 0, "everything recorded can be applied");
    let stores = (0..3).map(store_id).chain(agents.iter().map(|a| a.store));
    let mut projected = BTreeMap::new();
    for store in stores {
        for level in read_model::read_store_stock(&read_model, store).unwrap() {
            projected.insert((level.product_id, level.store_id), level);
        }
    }
    assert_eq!(projected.len(), folded.len(), "one stock row per stream");
    for (key, state) in &folded {
        let level = &projected[key];
        assert_eq!(
            (level.on_hand, level.reserved, level.available, level.version),
            (state.on_hand, state.reserved(), state.available(), state.version),
            "{key:?}"
        );
    }
}
