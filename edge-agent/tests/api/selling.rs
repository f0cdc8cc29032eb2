//! Selling with the hub out of reach: reservations and commits, releases, deliveries and
//! corrections, short stock refused with nothing written, and what a recorded event carries.

use super::*;

#[tokio::test]
async fn reserve_and_commit_sell_locally_while_the_hub_is_unreachable() {
    // Given: an agent whose hub is unreachable, 10 apples on hand.
    let agent = TestAgent::spawn().await;
    let apple = agent.catalog.apple;

    // When: a till holds 3 apples...
    let (status, reserved, _) = call(agent.post("/v1/inventory/reservations", &agent.reserve_body(apple, 3))).await;
    assert_eq!(status, 201, "{reserved}");
    assert_eq!(reserved["type"], "StockReserved");
    assert_eq!(reserved["replayed"], false);
    assert_eq!(reserved["stream"]["store_id"], json!(agent.store_id));
    let stock = &reserved["stock"];
    assert_eq!(
        (
            stock["on_hand"].as_i64(),
            stock["reserved"].as_i64(),
            stock["available"].as_i64()
        ),
        (Some(10), Some(3), Some(7))
    );
    let reservation = reserved["data"]["reservation_id"]
        .as_str()
        .expect("reservation id")
        .to_owned();

    // ...and sells them.
    let (status, sold, _) =
        call(agent.post(&format!("/v1/inventory/reservations/{reservation}/commit"), &json!({}))).await;
    assert_eq!(status, 201, "{sold}");
    assert_eq!(
        (sold["type"].as_str(), sold["data"]["quantity"].as_u64()),
        (Some("ReservationCommitted"), Some(3))
    );

    // Then: the local figures show the sale, pending the hub's confirmation...
    let level = agent.stock(apple).await;
    assert_eq!(
        (
            level["on_hand"].as_i64(),
            level["reserved"].as_i64(),
            level["available"].as_i64()
        ),
        (Some(7), Some(0), Some(7))
    );
    assert_eq!(
        level["includes_pending"], true,
        "the sale is not confirmed by the hub: {level}"
    );
    assert_eq!(
        (level["pending_events"].as_u64(), level["confirmed_version"].as_u64()),
        (Some(2), Some(3))
    );

    let (status, availability, _) =
        call(agent.get(&format!("/v1/inventory/availability?product_id={apple}&quantity=8"))).await;
    assert_eq!(status, 200, "{availability}");
    assert_eq!(availability["available"], 7);
    assert_eq!(availability["sufficient"], false);
    assert_eq!(availability["includes_pending"], true);

    // ...and both events wait in the outbox.
    let outbox = agent.outbox().await;
    let types: Vec<_> = outbox
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        [("ReservationCommitted", "pending"), ("StockReserved", "pending")]
    );

    // The commit a second time, without a key, is a new request: the hold is gone.
    let again = call(agent.post(&format!("/v1/inventory/reservations/{reservation}/commit"), &json!({}))).await;
    assert_problem(&again, 404, "reservation_not_found");
    agent.stop().await;
}

#[tokio::test]
async fn a_released_hold_gives_the_units_back() {
    // Given: all the bread (2) held.
    let agent = TestAgent::spawn().await;
    let bread = agent.catalog.bread;
    let (_, reserved, _) = call(agent.post("/v1/inventory/reservations", &agent.reserve_body(bread, 2))).await;
    let reservation = reserved["data"]["reservation_id"].as_str().unwrap().to_owned();
    assert_eq!(agent.stock(bread).await["available"], 0);

    // When: the hold is released (an empty body is fine for release and commit).
    let (status, released, _) = call(
        agent
            .client
            .post(agent.path(&format!("/v1/inventory/reservations/{reservation}/release")))
            .bearer_auth(TERMINAL),
    )
    .await;

    // Then: the units are available again.
    assert_eq!(status, 201, "{released}");
    assert_eq!(
        (
            released["data"]["reason"].as_str(),
            released["stock"]["available"].as_i64()
        ),
        (Some("cancelled"), Some(2))
    );
}

#[tokio::test]
async fn deliveries_and_corrections_count() {
    // Given: 2 bread on hand.
    let agent = TestAgent::spawn().await;
    let bread = agent.catalog.bread;

    // When: 5 are delivered and one is written off.
    let (status, _, _) = call(agent.post("/v1/inventory/stock", &agent.stock_body(bread, 5))).await;
    assert_eq!(status, 201);
    let body = json!({ "product_id": bread, "store_id": agent.store_id, "delta": -1, "reason": "dropped" });
    let (status, adjusted, _) = call(agent.post("/v1/inventory/adjustments", &body)).await;

    // Then: 6 are on hand.
    assert_eq!(status, 201, "{adjusted}");
    assert_eq!(adjusted["stock"]["on_hand"], 6);
}

#[tokio::test]
async fn a_zero_or_out_of_range_correction_is_refused() {
    // Given: an agent with bread in stock.
    let agent = TestAgent::spawn().await;
    let bread = agent.catalog.bread;

    // When / then: a correction of zero is refused.
    let zero = json!({ "product_id": bread, "store_id": agent.store_id, "delta": 0, "reason": "x" });
    assert_problem(
        &call(agent.post("/v1/inventory/adjustments", &zero)).await,
        422,
        "zero_adjustment",
    );
    // When / then: so are the extremes (i64::MIN has no positive counterpart: refused,
    // never negated into a huge stock).
    for delta in [i64::MIN, i64::MAX] {
        let extreme = json!({ "product_id": bread, "store_id": agent.store_id, "delta": delta, "reason": "x" });
        assert_problem(
            &call(agent.post("/v1/inventory/adjustments", &extreme)).await,
            422,
            "adjustment_out_of_range",
        );
    }
    assert_eq!(agent.stock(bread).await["on_hand"], 2, "nothing was written");
}

#[tokio::test]
async fn short_stock_is_refused_and_nothing_is_written() {
    // Given: 2 bread on hand.
    let agent = TestAgent::spawn().await;
    let bread = agent.catalog.bread;
    let before = agent.outbox().await;

    // When: a till asks to hold 3, and a stock take to remove 3.
    let refused = call(agent.post("/v1/inventory/reservations", &agent.reserve_body(bread, 3))).await;
    assert_problem(&refused, 409, "insufficient_stock");
    assert!(
        refused.1["detail"].as_str().unwrap().contains("available 2"),
        "{}",
        refused.1
    );
    let body = json!({ "product_id": bread, "store_id": agent.store_id, "delta": -3, "reason": "stock take" });
    assert_problem(
        &call(agent.post("/v1/inventory/adjustments", &body)).await,
        409,
        "insufficient_stock",
    );

    // Then: both are refused and nothing was written.
    assert_eq!(agent.outbox().await, before, "a refused command writes nothing");
    let level = agent.stock(bread).await;
    assert_eq!(
        (level["on_hand"].as_i64(), level["includes_pending"].as_bool()),
        (Some(2), Some(false))
    );
    let (_, status, _) = call(agent.client.get(agent.path("/v1/status"))).await;
    assert_eq!(status["outbox_depth"], 0);
}

#[tokio::test]
async fn recorded_events_carry_the_stores_origin_the_till_and_the_correlation() {
    // Given: an agent.
    let agent = TestAgent::spawn().await;

    // When: till 7 books a delivery with a correlation id.
    let correlation = uuid::Uuid::now_v7();
    let request = agent
        .post("/v1/inventory/stock", &agent.stock_body(agent.catalog.apple, 1))
        .header("X-Till-Id", "till-7")
        .header("X-Correlation-Id", correlation.to_string());
    let (status, written, _) = call(request).await;
    assert_eq!(status, 201, "{written}");
    let store_id = agent.store_id;

    // Then: the recorded event carries the till, the correlation and this store's origin.
    let reopened = agent.stop_and_reopen().await;
    let upload = reopened.local.pending_batch(10).await.expect("pending batch");
    assert_eq!(upload.len(), 1, "{upload:?}");
    assert_eq!(upload[0].event_id.to_string(), written["event_id"].as_str().unwrap());
    let metadata = &upload[0].metadata;
    assert_eq!(metadata.actor, "terminal:till-7");
    assert_eq!(metadata.correlation_id, correlation);
    assert_eq!(metadata.origin, shelfsync_common::Origin::Store(store_id));
    reopened.local.close().await;
}
