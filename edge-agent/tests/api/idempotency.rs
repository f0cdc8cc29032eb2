//! Retries: an idempotency key or a repeated event id is answered once and recorded once,
//! also when the copies arrive together.

use super::*;

/// A POST of `body` to `path` at `agent` with `Idempotency-Key: key`.
fn keyed(agent: &TestAgent, path: &str, body: &Value, key: &str) -> reqwest::RequestBuilder {
    agent.post(path, body).header("Idempotency-Key", key)
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_is_answered_once_and_is_one_sale() {
    // Given: a till that holds 4 apples and sells them, with keys.
    let agent = TestAgent::spawn().await;
    let apple = agent.catalog.apple;
    let hold = agent.reserve_body(apple, 4);
    let (status, first, _) = call(keyed(&agent, "/v1/inventory/reservations", &hold, "basket-1/hold")).await;
    assert_eq!(status, 201, "{first}");

    // When: it sends the hold again...
    let (status, second, _) = call(keyed(&agent, "/v1/inventory/reservations", &hold, "basket-1/hold")).await;

    // Then: it gets the first answer.
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["replayed"], true);
    assert_eq!(second["event_id"], first["event_id"]);
    assert_eq!(
        second["data"]["reservation_id"], first["data"]["reservation_id"],
        "the retry gets the same hold"
    );

    // When: it did not hear the sale's answer and sends the sale again...
    let reservation = first["data"]["reservation_id"].as_str().unwrap().to_owned();
    let commit = format!("/v1/inventory/reservations/{reservation}/commit");
    let (status, sold, _) = call(keyed(&agent, &commit, &json!({}), "basket-1/sale")).await;
    assert_eq!(status, 201, "{sold}");
    let (status, resold, _) = call(keyed(&agent, &commit, &json!({}), "basket-1/sale")).await;

    // Then: the first answer, not a 404, and one hold and one sale in all.
    assert_eq!(
        (status, &resold["event_id"], &resold["replayed"]),
        (200, &sold["event_id"], &json!(true)),
        "{resold}"
    );
    let level = agent.stock(apple).await;
    assert_eq!(
        (level["on_hand"].as_i64(), level["pending_events"].as_u64()),
        (Some(6), Some(2)),
        "one hold, one sale: {level}"
    );
    assert_eq!(agent.outbox().await.len(), 2);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused_and_writes_nothing() {
    // Given: a hold made with a key.
    let agent = TestAgent::spawn().await;
    let apple = agent.catalog.apple;
    let hold = agent.reserve_body(apple, 4);
    let (status, _, _) = call(keyed(&agent, "/v1/inventory/reservations", &hold, "basket-1/hold")).await;
    assert_eq!(status, 201);

    // When: the key comes again with another body.
    let other = agent.reserve_body(apple, 1);
    let reused = call(keyed(&agent, "/v1/inventory/reservations", &other, "basket-1/hold")).await;

    // Then: refused, and nothing more is recorded.
    assert_problem(&reused, 422, "idempotency_key_reused");
    assert_eq!(agent.outbox().await.len(), 1);
}

#[tokio::test]
async fn keys_are_scoped_by_the_till() {
    // Given: a hold made with a key at the default till.
    let agent = TestAgent::spawn().await;
    let apple = agent.catalog.apple;
    let path = "/v1/inventory/reservations";
    let (_, first, _) = call(keyed(&agent, path, &agent.reserve_body(apple, 4), "basket-1/hold")).await;

    // When: till 2 sends its own request with the same key.
    let request = keyed(&agent, path, &agent.reserve_body(apple, 1), "basket-1/hold").header("X-Till-Id", "till-2");
    let (status, other, _) = call(request).await;

    // Then: it is a request of its own.
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["event_id"], first["event_id"]);
    assert_eq!(agent.outbox().await.len(), 2);
}

#[tokio::test]
async fn a_repeated_event_id_is_one_event_whichever_way_it_comes() {
    // Given: a delivery sent with a client-chosen event id.
    let agent = TestAgent::spawn().await;
    let apple = agent.catalog.apple;
    let event_id = shelfsync_common::EventId::new_v7();
    let mut body = agent.stock_body(apple, 2);
    body["event_id"] = json!(event_id);

    let (status, first, _) = call(agent.post("/v1/inventory/stock", &body)).await;
    assert_eq!((status, &first["event_id"]), (201, &json!(event_id)), "{first}");
    // When / then: sent again, it is answered as a replay.
    let (status, second, _) = call(agent.post("/v1/inventory/stock", &body)).await;
    assert_eq!(
        (status, &second["event_id"], &second["replayed"]),
        (200, &json!(event_id), &json!(true)),
        "{second}"
    );
    // When / then: the same event id for another fact is refused (not a storage failure).
    let mut other = agent.stock_body(apple, 3);
    other["event_id"] = json!(event_id);
    assert_problem(
        &call(agent.post("/v1/inventory/stock", &other)).await,
        422,
        "idempotency_key_reused",
    );

    // When / then: an answer's event id sent back as the body's event_id (the till's own retry logic)
    // is the same event, even though the first request named it with a header key.
    let (_, keyed, _) = call(
        agent
            .post("/v1/inventory/stock", &agent.stock_body(apple, 1))
            .header("Idempotency-Key", "k-1"),
    )
    .await;
    let mut resent = agent.stock_body(apple, 1);
    resent["event_id"] = keyed["event_id"].clone();
    let (status, replay, _) = call(agent.post("/v1/inventory/stock", &resent)).await;
    assert_eq!((status, &replay["event_id"]), (200, &keyed["event_id"]), "{replay}");
    // So is the event id of an answer to a request that named no id at all.
    let (_, fresh, _) = call(agent.post("/v1/inventory/stock", &agent.stock_body(apple, 4))).await;
    let mut resent = agent.stock_body(apple, 4);
    resent["event_id"] = fresh["event_id"].clone();
    let (status, replay, _) = call(agent.post("/v1/inventory/stock", &resent)).await;
    assert_eq!((status, &replay["event_id"]), (200, &fresh["event_id"]), "{replay}");

    // Then: three deliveries in all.
    assert_eq!(agent.outbox().await.len(), 3);
    assert_eq!(agent.stock(apple).await["on_hand"], 10 + 2 + 1 + 4);
}

#[tokio::test]
async fn the_same_event_id_sent_concurrently_is_recorded_once_and_never_fails_the_batch() {
    // Given: a delivery with a client-chosen event id.
    let agent = TestAgent::spawn().await;
    let apple = agent.catalog.apple;
    let event_id = shelfsync_common::EventId::new_v7();
    let mut body = agent.stock_body(apple, 1);
    body["event_id"] = json!(event_id);
    // When: many copies at once land in the same group commits as other tills' writes.
    let copies = (0..8).map(|_| call(agent.post("/v1/inventory/stock", &body)));
    let others = (0..8).map(|_| call(agent.post("/v1/inventory/stock", &agent.stock_body(apple, 1))));
    let (copies, others) = tokio::join!(
        futures_util::future::join_all(copies),
        futures_util::future::join_all(others)
    );
    // Then: one copy is recorded, the others are replays, and the other writes all pass.
    let mut statuses: Vec<u16> = copies.iter().map(|(s, _, _)| *s).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 201], "{copies:?}");
    assert!(copies.iter().all(|(_, b, _)| b["event_id"] == json!(event_id)));
    assert!(others.iter().all(|(s, _, _)| *s == 201), "{others:?}");
    assert_eq!(agent.stock(apple).await["on_hand"], 10 + 1 + 8);
    assert_eq!(agent.outbox().await.len(), 9);
}
