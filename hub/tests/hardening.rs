//! Inputs that once got through and must not: each test is one finding of the hardening
//! review, reproduced against a real hub over real HTTP, and fails without its fix.
//!
//! - a time that is valid RFC 3339 but lies in the year 10000 in UTC stopped the read side;
//! - `delta = i64::MIN` slipped past the adjustment bound (negation wraps);
//! - a store could claim the event ids that a web shop's `Idempotency-Key` would derive;
//! - a store's fact could strand another stream's reservation;
//! - a request answered "timed out" could still be written;
//! - cursors past `i64::MAX` wrapped and read the whole log again.

use serde_json::{json, Value};
use shelfsync_common::testing::http::call;
use shelfsync_common::{EventId, EventPayload, ReservationId, StoreId};
use shelfsync_hub::testing::{demo_product, demo_store, TestHub};
use std::time::Duration;

/// The hub's `/readyz` answer and the stock of product 0 at `store`, read at `position`.
async fn read_side(hub: &TestHub, store: StoreId, position: u64) -> (u16, u16, Value) {
    let (ready, _, _) = call(hub.get("/readyz")).await;
    let path = format!(
        "/v1/inventory/products/{}/stores/{store}?min_position={position}",
        demo_product(0)
    );
    let (status, body, _) = call(hub.get(&path)).await;
    (ready, status, body)
}

shelfsync_hub::both_storages! {
    async fn a_time_in_the_year_10000_is_refused_and_the_read_side_keeps_going() {
        let hub = TestHub::spawn().await;
        let (_, agent) = hub.enroll("Leipzig").await;
        let mut poison = agent.fact(
            demo_product(0),
            EventPayload::StockReserved {
                reservation_id: ReservationId::new_v7(),
                quantity: 1,
                expires_at: time::OffsetDateTime::now_utc(),
            },
        );
        poison.data["expires_at"] = json!("9999-12-31T23:59:59-23:59");
        let mut late = agent.fact(demo_product(0), EventPayload::StockAdded { quantity: 1 });
        late.metadata.occurred_at = time::OffsetDateTime::parse(
            "9999-12-31T23:59:59-23:59",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let fine = agent.fact(demo_product(0), EventPayload::StockAdded { quantity: 3 });
        let answer = agent.upload(&[poison, late, fine]).await;
        let outcomes: Vec<Value> = answer
            .results
            .iter()
            .map(|r| serde_json::to_value(&r.outcome).unwrap())
            .collect();
        assert_eq!(outcomes[0]["reason"], "out_of_range", "{outcomes:?}");
        assert_eq!(outcomes[1]["reason"], "out_of_range", "{outcomes:?}");
        assert_eq!(outcomes[2]["status"], "appended", "the rest of the batch is recorded");

        let (ready, status, body) = read_side(&hub, agent.store, answer.head).await;
        assert_eq!(ready, 200);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["on_hand"], 3, "{body}");
    }
}

shelfsync_hub::both_storages! {
    async fn an_adjustment_of_i64_min_is_refused_everywhere() {
        let hub = TestHub::spawn().await;
        let store = demo_store(0);
        let stock = |position: u64| {
            hub.get(&format!(
                "/v1/inventory/products/{}/stores/{store}?min_position={position}",
                demo_product(0)
            ))
        };
        let before = call(stock(hub.head().await)).await;
        for delta in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let body = json!({"product_id": demo_product(0), "store_id": store, "delta": delta, "reason": "count"});
            let (status, problem, _) = call(hub.post("/v1/inventory/adjustments", &body)).await;
            assert_eq!(status, 422, "{delta}: {problem}");
            assert_eq!(problem["code"], "adjustment_out_of_range", "{problem}");
        }
        let (_, agent) = hub.enroll("Leipzig").await;
        let mut fact = agent.fact(
            demo_product(0),
            EventPayload::StockAdjusted {
                delta: -1,
                reason: "count".into(),
            },
        );
        fact.data["delta"] = json!(i64::MIN);
        let answer = agent.upload(&[fact]).await;
        let outcome = serde_json::to_value(&answer.results[0].outcome).unwrap();
        assert_eq!(outcome["reason"], "out_of_range", "{outcome}");

        let after = call(stock(hub.head().await)).await;
        assert_eq!(after.1["on_hand"], before.1["on_hand"], "nothing was written");
        let huge = json!({"product_id": demo_product(0), "store_id": store, "quantity": 1_000_000});
        let (status, problem, _) = call(hub.post("/v1/inventory/reservations", &huge)).await;
        assert_eq!(status, 409, "no phantom stock to reserve: {problem}");
    }
}

shelfsync_hub::both_storages! {
    async fn a_store_cannot_claim_the_event_id_of_a_web_shops_idempotency_key() {
        let hub = TestHub::spawn().await;
        let (status, token, _) = call(hub.post("/v1/admin/tokens", &json!({"name": "web-shop"}))).await;
        assert_eq!(status, 201, "{token}");
        let web_shop = token["secret"].as_str().unwrap().to_owned();
        let (_, agent) = hub.enroll("Leipzig").await;
        // What an attacker can compute: the scope and the key are guessable. Before the fix,
        // this was exactly the id the hub derived.
        let guessed = EventId::from_name("channel:web-shop", "order-1001");
        let mut squatter = agent.fact(demo_product(0), EventPayload::StockAdded { quantity: 1 });
        squatter.event_id = guessed;
        let answer = agent.upload(&[squatter]).await;
        assert_eq!(
            serde_json::to_value(&answer.results[0].outcome).unwrap()["status"],
            "appended"
        );

        let order = json!({"product_id": demo_product(0), "store_id": demo_store(0), "quantity": 1});
        let reserve = || {
            hub.client
                .post(format!("{}/v1/inventory/reservations", hub.url))
                .bearer_auth(&web_shop)
                .header("Idempotency-Key", "order-1001")
                .json(&order)
        };
        let (status, body, _) = call(reserve()).await;
        assert_eq!(status, 201, "the web order is recorded, not refused: {body}");
        assert_ne!(body["events"][0]["event_id"], json!(guessed), "{body}");
        let (status, again, _) = call(reserve()).await;
        assert_eq!(status, 200, "and its retry is still recognised: {again}");
        assert_eq!(again["events"][0]["event_id"], body["events"][0]["event_id"]);
    }
}

shelfsync_hub::both_storages! {
    async fn a_store_fact_cannot_strand_another_streams_reservation() {
        let hub = TestHub::spawn().await;
        let hold = ReservationId::new_v7();
        let web_order = json!({
            "product_id": demo_product(0), "store_id": demo_store(1), "quantity": 1, "reservation_id": hold,
        });
        let (status, body, _) = call(hub.post("/v1/inventory/reservations", &web_order)).await;
        assert_eq!(status, 201, "{body}");

        // Another store records facts naming that hold on its own stream.
        let (_, agent) = hub.enroll("Leipzig").await;
        let facts = [
            agent.fact(
                demo_product(0),
                EventPayload::StockReleased {
                    reservation_id: hold,
                    quantity: 1,
                    reason: shelfsync_common::domain::event::ReleaseReason::Cancelled,
                },
            ),
            agent.fact(
                demo_product(0),
                EventPayload::ReservationCommitted {
                    reservation_id: hold,
                    quantity: 1,
                },
            ),
        ];
        agent.upload(&facts).await;

        let (status, body, _) = call(hub.post_empty(&format!("/v1/inventory/reservations/{hold}/commit"))).await;
        assert_eq!(status, 201, "the web order's hold is still the hub's to commit: {body}");
    }
}

shelfsync_hub::both_storages! {
    async fn a_request_answered_timed_out_wrote_nothing_and_a_write_that_landed_is_not_called_a_timeout() {
        let hub = TestHub::spawn_with(|config| config.http.request_timeout_secs = 1).await;
        let body = json!({"product_id": demo_product(2), "store_id": demo_store(0), "quantity": 5});
        let add = |key: &'static str| {
            hub.client
                .post(format!("{}/v1/inventory/stock", hub.url))
                .bearer_auth(shelfsync_hub::testing::ADMIN)
                .header("Idempotency-Key", key)
                .json(&body)
        };
        let head = hub.head().await;
        // Another connection holds the write lock: the writer's next batch waits on it.
        let blocker = hub.hold_writes().await;
        let first = tokio::spawn(call(add("first")));
        tokio::time::sleep(Duration::from_millis(300)).await; // taken up by the writer, now waiting
        let second = tokio::spawn(call(add("second"))); // queued behind it
        tokio::time::sleep(Duration::from_millis(2_000)).await; // both past their 1 s limit
        assert!(second.is_finished(), "the queued request is answered at its time limit");
        blocker.release().await;

        let (status, answer, _) = first.await.unwrap();
        assert_eq!(status, 201, "the write taken up lands, and says so: {answer}");
        let (status, problem, _) = second.await.unwrap();
        assert_eq!(status, 503, "{problem}");
        assert_eq!(problem["code"], "timeout");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(hub.head().await, head + 1, "only the first write is in the log");
        let (status, retried, _) = call(add("second")).await;
        assert_eq!(status, 201, "the retry is the first time it is written: {retried}");
    }
}

shelfsync_hub::both_storages! {
    async fn cursors_past_int64_are_refused_not_wrapped() {
        let hub = TestHub::spawn().await;
        let agent = hub.demo_agent(0).await;
        let too_far = "9223372036854775808";
        let (status, body, _) =
            call(agent.request(reqwest::Method::GET, &format!("/v1/sync/events?after={too_far}"))).await;
        assert_eq!(status, 400, "{body}");
        let (status, body, _) = call(
            agent
                .request(reqwest::Method::GET, "/v1/sync/stream")
                .header("Last-Event-ID", too_far),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "invalid_last_event_id");
        let (status, body, _) =
            call(agent.request(reqwest::Method::GET, &format!("/v1/sync/stream?after={too_far}"))).await;
        assert_eq!(status, 400, "{body}");
        let heartbeat = format!(
            r#"{{"agent_version":"1","cursor":{too_far},"outbox_depth":0,"breaker_state":"closed","quarantined":0}}"#
        );
        let (status, body, _) = call(
            agent
                .request(reqwest::Method::POST, "/v1/sync/heartbeat")
                .header("content-type", "application/json")
                .body(heartbeat),
        )
        .await;
        assert!(status == 400 || status == 422, "{status} {body}");
        let (status, body, _) = call(hub.get(&format!(
            "/v1/inventory/products/{}/stores/{}?min_position={too_far}",
            demo_product(0),
            demo_store(0)
        )))
        .await;
        assert_eq!(status, 400, "{body}");

        // The largest valid cursor is past the head: answered as cursor-ahead, never by
        // reading the log again.
        let (status, body, _) = call(agent.request(
            reqwest::Method::GET,
            &format!("/v1/sync/events?after={}", i64::MAX),
        ))
        .await;
        assert_eq!((status, body["code"].as_str()), (409, Some("cursor_ahead")), "{body}");
    }
}
