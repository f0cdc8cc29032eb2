//! The POS API over real HTTP against an in-process agent whose hub is unreachable: sales,
//! refusals that write nothing, idempotent retries, keys, validation, the status page, the
//! operator routes and the OpenAPI document.

mod support;

use serde_json::{json, Value};
use shelfsync_edge::testing::{Options, TestAgent, MANAGER, SNAPSHOT_AT, TERMINAL};
use support::{assert_problem, call};

#[tokio::test]
async fn reserve_and_commit_sell_locally_while_the_hub_is_unreachable() {
    let agent = TestAgent::spawn().await;
    let apple = agent.catalog.apple;

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

    let (status, sold, _) =
        call(agent.post(&format!("/v1/inventory/reservations/{reservation}/commit"), &json!({}))).await;
    assert_eq!(status, 201, "{sold}");
    assert_eq!(
        (sold["type"].as_str(), sold["data"]["quantity"].as_u64()),
        (Some("ReservationCommitted"), Some(3))
    );

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
async fn a_released_hold_gives_the_units_back_and_deliveries_and_corrections_count() {
    let agent = TestAgent::spawn().await;
    let bread = agent.catalog.bread;
    let (_, reserved, _) = call(agent.post("/v1/inventory/reservations", &agent.reserve_body(bread, 2))).await;
    let reservation = reserved["data"]["reservation_id"].as_str().unwrap().to_owned();
    assert_eq!(agent.stock(bread).await["available"], 0);
    // An empty body is fine for release and commit.
    let (status, released, _) = call(
        agent
            .client
            .post(agent.path(&format!("/v1/inventory/reservations/{reservation}/release")))
            .bearer_auth(TERMINAL),
    )
    .await;
    assert_eq!(status, 201, "{released}");
    assert_eq!(
        (
            released["data"]["reason"].as_str(),
            released["stock"]["available"].as_i64()
        ),
        (Some("cancelled"), Some(2))
    );

    let (status, _, _) = call(agent.post("/v1/inventory/stock", &agent.stock_body(bread, 5))).await;
    assert_eq!(status, 201);
    let body = json!({ "product_id": bread, "store_id": agent.store_id, "delta": -1, "reason": "dropped" });
    let (status, adjusted, _) = call(agent.post("/v1/inventory/adjustments", &body)).await;
    assert_eq!(status, 201, "{adjusted}");
    assert_eq!(adjusted["stock"]["on_hand"], 6);
    let zero = json!({ "product_id": bread, "store_id": agent.store_id, "delta": 0, "reason": "x" });
    assert_problem(
        &call(agent.post("/v1/inventory/adjustments", &zero)).await,
        422,
        "zero_adjustment",
    );
    // i64::MIN has no positive counterpart: refused, never negated into a huge stock.
    for delta in [i64::MIN, i64::MAX] {
        let extreme = json!({ "product_id": bread, "store_id": agent.store_id, "delta": delta, "reason": "x" });
        assert_problem(
            &call(agent.post("/v1/inventory/adjustments", &extreme)).await,
            422,
            "adjustment_out_of_range",
        );
    }
}

#[tokio::test]
async fn short_stock_is_refused_and_nothing_is_written() {
    let agent = TestAgent::spawn().await;
    let bread = agent.catalog.bread;
    let before = agent.outbox().await;
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
async fn a_retry_with_the_same_idempotency_key_is_answered_once_and_is_one_sale() {
    let agent = TestAgent::spawn().await;
    let apple = agent.catalog.apple;
    let keyed = |path: &str, body: &Value, key: &str| agent.post(path, body).header("Idempotency-Key", key);

    let (status, first, _) = call(keyed(
        "/v1/inventory/reservations",
        &agent.reserve_body(apple, 4),
        "basket-1/hold",
    ))
    .await;
    assert_eq!(status, 201, "{first}");
    let (status, second, _) = call(keyed(
        "/v1/inventory/reservations",
        &agent.reserve_body(apple, 4),
        "basket-1/hold",
    ))
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["replayed"], true);
    assert_eq!(second["event_id"], first["event_id"]);
    assert_eq!(
        second["data"]["reservation_id"], first["data"]["reservation_id"],
        "the retry gets the same hold"
    );

    let reservation = first["data"]["reservation_id"].as_str().unwrap().to_owned();
    let commit = format!("/v1/inventory/reservations/{reservation}/commit");
    let (status, sold, _) = call(keyed(&commit, &json!({}), "basket-1/sale")).await;
    assert_eq!(status, 201, "{sold}");
    // The till did not hear the answer and sends the sale again: the first answer, not a 404.
    let (status, resold, _) = call(keyed(&commit, &json!({}), "basket-1/sale")).await;
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

    // The same key with another body is refused, and writes nothing.
    let reused = call(keyed(
        "/v1/inventory/reservations",
        &agent.reserve_body(apple, 1),
        "basket-1/hold",
    ))
    .await;
    assert_problem(&reused, 422, "idempotency_key_reused");
    assert_eq!(agent.outbox().await.len(), 2);

    // Keys are scoped by the till: another till's "basket-1/hold" is its own request.
    let (status, other, _) = call(
        keyed(
            "/v1/inventory/reservations",
            &agent.reserve_body(apple, 1),
            "basket-1/hold",
        )
        .header("X-Till-Id", "till-2"),
    )
    .await;
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["event_id"], first["event_id"]);
    assert_eq!(agent.outbox().await.len(), 3);
}

#[tokio::test]
async fn a_repeated_event_id_is_one_event_whichever_way_it_comes() {
    let agent = TestAgent::spawn().await;
    let apple = agent.catalog.apple;
    let event_id = shelfsync_common::EventId::new_v7();
    let mut body = agent.stock_body(apple, 2);
    body["event_id"] = json!(event_id);

    let (status, first, _) = call(agent.post("/v1/inventory/stock", &body)).await;
    assert_eq!((status, &first["event_id"]), (201, &json!(event_id)), "{first}");
    let (status, second, _) = call(agent.post("/v1/inventory/stock", &body)).await;
    assert_eq!(
        (status, &second["event_id"], &second["replayed"]),
        (200, &json!(event_id), &json!(true)),
        "{second}"
    );
    // The same event id for another fact is refused (not a storage failure).
    let mut other = agent.stock_body(apple, 3);
    other["event_id"] = json!(event_id);
    assert_problem(
        &call(agent.post("/v1/inventory/stock", &other)).await,
        422,
        "idempotency_key_reused",
    );

    // An answer's event id sent back as the body's event_id (the till's own retry logic)
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

    assert_eq!(agent.outbox().await.len(), 3);
    assert_eq!(agent.stock(apple).await["on_hand"], 10 + 2 + 1 + 4);
}

#[tokio::test]
async fn the_same_event_id_sent_concurrently_is_recorded_once_and_never_fails_the_batch() {
    let agent = TestAgent::spawn().await;
    let apple = agent.catalog.apple;
    let event_id = shelfsync_common::EventId::new_v7();
    let mut body = agent.stock_body(apple, 1);
    body["event_id"] = json!(event_id);
    // Many copies at once land in the same group commits as other tills' writes.
    let copies = (0..8).map(|_| call(agent.post("/v1/inventory/stock", &body)));
    let others = (0..8).map(|_| call(agent.post("/v1/inventory/stock", &agent.stock_body(apple, 1))));
    let (copies, others) = tokio::join!(
        futures_util::future::join_all(copies),
        futures_util::future::join_all(others)
    );
    let mut statuses: Vec<u16> = copies.iter().map(|(s, _, _)| *s).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 201], "{copies:?}");
    assert!(copies.iter().all(|(_, b, _)| b["event_id"] == json!(event_id)));
    assert!(others.iter().all(|(s, _, _)| *s == 201), "{others:?}");
    assert_eq!(agent.stock(apple).await["on_hand"], 10 + 1 + 8);
    assert_eq!(agent.outbox().await.len(), 9);
}

#[tokio::test]
async fn keys_are_required_and_the_manager_key_opens_everything() {
    let agent = TestAgent::spawn().await;
    let path = format!("/v1/products/{}", agent.catalog.apple);
    let missing = call(agent.client.get(agent.path(&path))).await;
    assert_problem(&missing, 401, "unauthorized");
    let response = agent.client.get(agent.path(&path)).send().await.unwrap();
    assert!(response
        .headers()
        .get("www-authenticate")
        .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")));
    assert_problem(
        &call(agent.client.get(agent.path(&path)).bearer_auth("not-the-key")).await,
        401,
        "unauthorized",
    );
    assert_problem(
        &call(agent.client.get(agent.path(&path)).header("authorization", TERMINAL)).await,
        401,
        "unauthorized",
    );
    let write = agent
        .client
        .post(agent.path("/v1/inventory/stock"))
        .json(&agent.stock_body(agent.catalog.apple, 1));
    assert_problem(&call(write).await, 401, "unauthorized");

    assert_eq!(call(agent.get(&path)).await.0, 200);
    assert_eq!(call(agent.manager_get(&path)).await.0, 200);
    let (status, written, _) = call(
        agent
            .client
            .post(agent.path("/v1/inventory/stock"))
            .bearer_auth(MANAGER)
            .json(&agent.stock_body(agent.catalog.apple, 1)),
    )
    .await;
    assert_eq!(status, 201, "{written}");

    // A bad till name is refused before anything is written.
    let bad_till = agent
        .post("/v1/inventory/stock", &agent.stock_body(agent.catalog.apple, 1))
        .header("X-Till-Id", "till 1");
    assert_problem(&call(bad_till).await, 400, "invalid_till_id");
    assert_eq!(agent.outbox().await.len(), 1);
}

#[tokio::test]
async fn operator_routes_need_the_manager_key() {
    let agent = TestAgent::spawn_with(Options {
        quarantined: 2,
        ..Options::default()
    })
    .await;
    let [first, second] = [agent.quarantined[0], agent.quarantined[1]];
    for path in ["/v1/outbox", "/v1/quarantine"] {
        assert_problem(&call(agent.client.get(agent.path(path))).await, 401, "unauthorized");
        assert_problem(&call(agent.get(path)).await, 403, "forbidden");
    }
    for action in ["retry", "discard"] {
        let path = format!("/v1/quarantine/{first}/{action}");
        assert_problem(
            &call(agent.client.post(agent.path(&path)).bearer_auth(TERMINAL)).await,
            403,
            "forbidden",
        );
        assert_problem(&call(agent.client.post(agent.path(&path))).await, 401, "unauthorized");
    }

    let (status, listed, _) = call(agent.manager_get("/v1/quarantine")).await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.to_string(), first.to_string()], "newest first");
    assert_eq!(listed[0]["reject_reason"], "unknown_product");
    let (_, status, _) = call(agent.client.get(agent.path("/v1/status"))).await;
    assert_eq!(
        (status["quarantined"].as_u64(), status["outbox_depth"].as_u64()),
        (Some(2), Some(0))
    );

    let (status, retried, _) = call(agent.manager_post(&format!("/v1/quarantine/{first}/retry"))).await;
    assert_eq!(
        (status, retried["status"].as_str()),
        (200, Some("pending")),
        "{retried}"
    );
    let (status, discarded, _) = call(agent.manager_post(&format!("/v1/quarantine/{second}/discard"))).await;
    assert_eq!(
        (status, discarded["status"].as_str()),
        (200, Some("discarded")),
        "{discarded}"
    );
    assert_problem(
        &call(agent.manager_post(&format!("/v1/quarantine/{first}/retry"))).await,
        404,
        "quarantined_event_not_found",
    );
    assert_problem(
        &call(agent.manager_post("/v1/quarantine/not-a-uuid/retry")).await,
        400,
        "invalid_path",
    );

    let (_, pending, _) = call(agent.manager_get("/v1/outbox?status=pending")).await;
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["event_id"], json!(first));
    let (_, left, _) = call(agent.manager_get("/v1/quarantine")).await;
    assert_eq!(left, json!([]));
    assert_eq!(
        agent.stock(agent.catalog.bread).await["on_hand"],
        3,
        "the retried delivery is back in the figures"
    );
    let (_, status, _) = call(agent.client.get(agent.path("/v1/status"))).await;
    assert_eq!(
        (status["quarantined"].as_u64(), status["outbox_depth"].as_u64()),
        (Some(0), Some(1))
    );

    assert_problem(
        &call(agent.manager_get("/v1/outbox?status=sent")).await,
        400,
        "invalid_query",
    );
    assert_problem(
        &call(agent.manager_get("/v1/outbox?limit=0")).await,
        400,
        "invalid_query",
    );
    assert_problem(
        &call(agent.manager_get("/v1/outbox?limit=1001")).await,
        400,
        "invalid_query",
    );
}

#[tokio::test]
async fn another_stores_body_is_refused() {
    let agent = TestAgent::spawn().await;
    let other = shelfsync_common::StoreId::new_v7();
    let apple = agent.catalog.apple;
    for (path, body) in [
        (
            "/v1/inventory/stock",
            json!({ "product_id": apple, "store_id": other, "quantity": 1 }),
        ),
        (
            "/v1/inventory/reservations",
            json!({ "product_id": apple, "store_id": other, "quantity": 1 }),
        ),
        (
            "/v1/inventory/adjustments",
            json!({ "product_id": apple, "store_id": other, "delta": 1, "reason": "x" }),
        ),
    ] {
        let refused = call(agent.post(path, &body)).await;
        assert_problem(&refused, 422, "wrong_store");
        assert!(refused.1["detail"]
            .as_str()
            .unwrap()
            .contains(&agent.store_id.to_string()));
    }
    let query = format!("/v1/inventory/availability?product_id={apple}&store_id={other}");
    assert_problem(&call(agent.get(&query)).await, 422, "wrong_store");
    let (status, _, _) = call(agent.get(&format!(
        "/v1/inventory/availability?product_id={apple}&store_id={}",
        agent.store_id
    )))
    .await;
    assert_eq!(status, 200);
    assert!(agent.outbox().await.is_empty());
}

#[tokio::test]
async fn unknown_products_and_reservations_are_404_and_catalog_products_without_stock_read_as_zero() {
    let agent = TestAgent::spawn().await;
    let unknown = shelfsync_common::ProductId::new_v7();
    assert_problem(
        &call(agent.get(&format!("/v1/products/{unknown}"))).await,
        404,
        "product_not_found",
    );
    assert_problem(
        &call(agent.get("/v1/products?sku=NOPE")).await,
        404,
        "product_not_found",
    );
    assert_problem(
        &call(agent.get(&format!("/v1/inventory/products/{unknown}"))).await,
        404,
        "product_not_found",
    );
    assert_problem(
        &call(agent.get(&format!("/v1/inventory/availability?product_id={unknown}"))).await,
        404,
        "product_not_found",
    );
    assert_problem(
        &call(agent.post("/v1/inventory/stock", &agent.stock_body(unknown, 1))).await,
        404,
        "product_not_found",
    );
    assert_problem(
        &call(agent.post("/v1/inventory/reservations", &agent.reserve_body(unknown, 1))).await,
        404,
        "product_not_found",
    );
    let hold = shelfsync_common::ReservationId::new_v7();
    for action in ["release", "commit"] {
        let path = format!("/v1/inventory/reservations/{hold}/{action}");
        assert_problem(&call(agent.post(&path, &json!({}))).await, 404, "reservation_not_found");
    }

    let (status, product, _) = call(agent.get("/v1/products?sku=APL-1")).await;
    assert_eq!(
        (status, &product["id"], &product["version"]),
        (200, &json!(agent.catalog.apple), &json!(1)),
        "{product}"
    );
    let (status, product, _) = call(agent.get(&format!("/v1/products/{}", agent.catalog.bread))).await;
    assert_eq!((status, product["sku"].as_str()), (200, Some("BRD-1")));

    let cheese = agent.stock(agent.catalog.cheese).await;
    assert_eq!(
        (
            cheese["on_hand"].as_i64(),
            cheese["available"].as_i64(),
            cheese["includes_pending"].as_bool()
        ),
        (Some(0), Some(0), Some(false))
    );
    let (_, availability, _) = call(agent.get(&format!(
        "/v1/inventory/availability?product_id={}",
        agent.catalog.cheese
    )))
    .await;
    assert_eq!(
        (availability["requested"].as_u64(), availability["sufficient"].as_bool()),
        (Some(1), Some(false))
    );
    // A delivery of a catalog product starts its stream here.
    let (status, _, _) = call(agent.post("/v1/inventory/stock", &agent.stock_body(agent.catalog.cheese, 4))).await;
    assert_eq!(status, 201);
    assert_eq!(agent.stock(agent.catalog.cheese).await["on_hand"], 4);
    assert_eq!(agent.outbox().await.len(), 1);
}

#[tokio::test]
async fn bad_requests_are_problems_and_write_nothing() {
    let agent = TestAgent::spawn().await;
    let apple = agent.catalog.apple;
    let raw = |body: &str, content_type: &str| {
        agent
            .client
            .post(agent.path("/v1/inventory/stock"))
            .bearer_auth(TERMINAL)
            .header("content-type", content_type)
            .body(body.to_owned())
    };
    assert_problem(
        &call(raw("{\"product_id\":", "application/json")).await,
        400,
        "malformed_json",
    );
    assert_problem(&call(raw("", "application/json")).await, 400, "missing_body");
    assert_problem(
        &call(raw(&agent.stock_body(apple, 1).to_string(), "text/plain")).await,
        415,
        "unsupported_media_type",
    );
    let huge = format!("{{\"reason\":\"{}\"}}", "x".repeat(70 * 1024));
    assert_problem(&call(raw(&huge, "application/json")).await, 413, "body_too_large");
    assert_problem(
        &call(agent.post("/v1/inventory/stock", &agent.stock_body(apple, 0))).await,
        422,
        "invalid_body",
    );
    assert_problem(
        &call(agent.post("/v1/inventory/stock", &agent.stock_body(apple, 1_000_001))).await,
        422,
        "invalid_body",
    );
    let mut typo = agent.stock_body(apple, 1);
    typo["quantiy"] = json!(1);
    assert_problem(
        &call(agent.post("/v1/inventory/stock", &typo)).await,
        422,
        "invalid_body",
    );
    assert_problem(
        &call(agent.post("/v1/inventory/stock", &json!({ "product_id": apple }))).await,
        422,
        "invalid_body",
    );

    let mut ttl = agent.reserve_body(apple, 1);
    ttl["ttl_seconds"] = json!(604_801);
    assert_problem(
        &call(agent.post("/v1/inventory/reservations", &ttl)).await,
        422,
        "invalid_ttl",
    );
    ttl["ttl_seconds"] = json!(0);
    assert_problem(
        &call(agent.post("/v1/inventory/reservations", &ttl)).await,
        422,
        "invalid_ttl",
    );
    let mut versioned = agent.stock_body(apple, 1);
    versioned["expected_version"] = json!(3);
    assert_problem(
        &call(agent.post("/v1/inventory/stock", &versioned)).await,
        422,
        "expected_version_unsupported",
    );
    let if_match = agent
        .post("/v1/inventory/stock", &agent.stock_body(apple, 1))
        .header("If-Match", "\"3\"");
    assert_problem(&call(if_match).await, 422, "expected_version_unsupported");
    let long_key = agent
        .post("/v1/inventory/stock", &agent.stock_body(apple, 1))
        .header("Idempotency-Key", "k".repeat(201));
    assert_problem(&call(long_key).await, 400, "invalid_idempotency_key");
    let bad_correlation = agent
        .post("/v1/inventory/stock", &agent.stock_body(apple, 1))
        .header("X-Correlation-Id", "basket-9");
    assert_problem(&call(bad_correlation).await, 400, "invalid_correlation_id");
    let positional = agent
        .post("/v1/inventory/stock", &json!([apple, agent.store_id, 1]))
        .header("Idempotency-Key", "array-body");
    assert_problem(&call(positional).await, 422, "invalid_body");

    assert_problem(&call(agent.get("/v1/products/not-a-uuid")).await, 400, "invalid_path");
    assert_problem(
        &call(agent.get("/v1/inventory/availability?product_id=x")).await,
        400,
        "invalid_query",
    );
    assert_problem(
        &call(agent.get(&format!("/v1/inventory/availability?product_id={apple}&quantity=0"))).await,
        400,
        "invalid_query",
    );
    assert_problem(&call(agent.get("/v1/nothing-here")).await, 404, "route_not_found");
    assert_problem(
        &call(
            agent
                .client
                .delete(agent.path("/v1/inventory/stock"))
                .bearer_auth(TERMINAL),
        )
        .await,
        405,
        "method_not_allowed",
    );
    assert_problem(
        &call(agent.client.put(agent.path("/v1/products/x")).bearer_auth(TERMINAL)).await,
        405,
        "method_not_allowed",
    );

    assert!(agent.outbox().await.is_empty(), "no bad request wrote anything");
    // With the body valid, the same request goes through (the checks above were not vacuous).
    let mut fine = agent.reserve_body(apple, 1);
    fine["expected_version"] = json!("any");
    fine["ttl_seconds"] = json!(604_800);
    assert_eq!(call(agent.post("/v1/inventory/reservations", &fine)).await.0, 201);
}

#[tokio::test]
async fn the_status_page_reports_link_outbox_and_position_without_a_key() {
    let agent = TestAgent::spawn().await;
    let (status, page, _) = call(agent.client.get(agent.path("/v1/status"))).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["store_id"], json!(agent.store_id));
    assert_eq!(page["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(page["link"], "offline", "the hub is unreachable: {page}");
    assert!(
        ["closed", "open", "half_open"].contains(&page["breaker"].as_str().unwrap()),
        "{page}"
    );
    assert_eq!(page["push_connected"], false);
    assert_eq!(
        (page["outbox_depth"].as_u64(), page["quarantined"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(page["oldest_pending_age_secs"], Value::Null);
    assert_eq!(
        (page["cursor"].as_u64(), page["hub_head"].as_u64()),
        (Some(SNAPSHOT_AT), Some(SNAPSHOT_AT))
    );
    assert_eq!(page["bootstrapped"], true);
    assert!(
        page["last_sync_at"].is_string(),
        "the snapshot was the last exchange: {page}"
    );

    call(agent.post("/v1/inventory/stock", &agent.stock_body(agent.catalog.apple, 1))).await;
    let (_, page, _) = call(agent.client.get(agent.path("/v1/status"))).await;
    assert_eq!(page["outbox_depth"], 1);
    assert!(
        page["oldest_pending_age_secs"].as_u64().is_some_and(|age| age < 60),
        "{page}"
    );
}

#[tokio::test]
async fn an_agent_without_its_snapshot_says_so() {
    let agent = TestAgent::spawn_with(Options {
        not_bootstrapped: true,
        ..Options::default()
    })
    .await;
    let (status, ready, _) = call(agent.client.get(agent.path("/readyz"))).await;
    assert_eq!(
        (status, ready["status"].as_str(), ready["bootstrapped"].as_bool()),
        (200, Some("ready"), Some(false))
    );
    let unknown = shelfsync_common::ProductId::new_v7();
    assert_problem(
        &call(agent.get(&format!("/v1/products/{unknown}"))).await,
        503,
        "not_bootstrapped",
    );
    assert_problem(
        &call(agent.post("/v1/inventory/stock", &agent.stock_body(unknown, 1))).await,
        503,
        "not_bootstrapped",
    );
    let (_, page, _) = call(agent.client.get(agent.path("/v1/status"))).await;
    assert_eq!(page["bootstrapped"], false);
}

#[tokio::test]
async fn ops_routes_answer_and_openapi_lists_every_route() {
    let agent = TestAgent::spawn().await;
    assert_eq!(call(agent.client.get(agent.path("/healthz"))).await.0, 200);
    let (status, ready, _) = call(agent.client.get(agent.path("/readyz"))).await;
    assert_eq!(
        (status, ready["status"].as_str(), ready["bootstrapped"].as_bool()),
        (200, Some("ready"), Some(true))
    );
    call(agent.post("/v1/inventory/stock", &agent.stock_body(agent.catalog.apple, 1))).await;
    let metrics = agent
        .client
        .get(agent.path("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("shelfsync_http_requests_total"), "{metrics}");
    assert!(metrics.contains("shelfsync_edge_writes_total"), "{metrics}");

    let (status, openapi, _) = call(agent.client.get(agent.path("/openapi.json"))).await;
    assert_eq!(status, 200);
    let routes = [
        ("get", "/v1/products"),
        ("get", "/v1/products/{id}"),
        ("post", "/v1/inventory/stock"),
        ("post", "/v1/inventory/adjustments"),
        ("post", "/v1/inventory/reservations"),
        ("post", "/v1/inventory/reservations/{id}/release"),
        ("post", "/v1/inventory/reservations/{id}/commit"),
        ("get", "/v1/inventory/products/{id}"),
        ("get", "/v1/inventory/availability"),
        ("get", "/v1/status"),
        ("get", "/v1/outbox"),
        ("get", "/v1/quarantine"),
        ("post", "/v1/quarantine/{event_id}/retry"),
        ("post", "/v1/quarantine/{event_id}/discard"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    let paths = openapi["paths"].as_object().expect("paths");
    for (method, path) in routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from /openapi.json"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        routes.len(),
        "/openapi.json documents a route this test does not know: {:?}",
        paths.keys()
    );
    // Every documented path is served (none answers route_not_found).
    for (method, path) in routes {
        let concrete = path
            .replace("{id}", &agent.catalog.apple.to_string())
            .replace("{event_id}", &agent.catalog.apple.to_string());
        let request = agent
            .client
            .request(method.parse().unwrap(), agent.path(&concrete))
            .bearer_auth(MANAGER);
        let (_, body, _) = call(request).await;
        assert_ne!(body["code"], "route_not_found", "{method} {path}");
    }
    let schemes = &openapi["components"]["securitySchemes"];
    assert!(
        schemes["terminal"].is_object() && schemes["manager"].is_object(),
        "{schemes}"
    );
    let write_params = openapi["paths"]["/v1/inventory/stock"]["post"]["parameters"].to_string();
    assert!(
        write_params.contains("Idempotency-Key") && write_params.contains("X-Till-Id"),
        "{write_params}"
    );
}

#[tokio::test]
async fn generated_keys_are_written_to_the_data_dir_and_work() {
    let agent = TestAgent::spawn_with(Options {
        generated_keys: true,
        ..Options::default()
    })
    .await;
    let read = |file: &str| {
        std::fs::read_to_string(agent.data_dir.join(file))
            .expect("key file")
            .trim()
            .to_owned()
    };
    let (terminal, manager) = (
        read(shelfsync_edge::TERMINAL_KEY_FILE),
        read(shelfsync_edge::MANAGER_KEY_FILE),
    );
    assert_ne!(terminal, manager);
    let path = format!("/v1/products/{}", agent.catalog.apple);
    assert_eq!(
        call(agent.client.get(agent.path(&path)).bearer_auth(&terminal)).await.0,
        200
    );
    assert_problem(
        &call(agent.client.get(agent.path(&path)).bearer_auth(TERMINAL)).await,
        401,
        "unauthorized",
    );
    assert_eq!(
        call(agent.client.get(agent.path("/v1/outbox")).bearer_auth(&manager))
            .await
            .0,
        200
    );
    assert_problem(
        &call(agent.client.get(agent.path("/v1/outbox")).bearer_auth(&terminal)).await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn recorded_events_carry_the_stores_origin_the_till_and_the_correlation() {
    let agent = TestAgent::spawn().await;
    let correlation = uuid::Uuid::now_v7();
    let request = agent
        .post("/v1/inventory/stock", &agent.stock_body(agent.catalog.apple, 1))
        .header("X-Till-Id", "till-7")
        .header("X-Correlation-Id", correlation.to_string());
    let (status, written, _) = call(request).await;
    assert_eq!(status, 201, "{written}");
    let store_id = agent.store_id;
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

/// One key for tills and manager would make every till the manager: the agent refuses to
/// start (before it opens its store or calls the hub).
#[tokio::test]
async fn the_agent_refuses_to_start_when_the_terminal_key_is_the_managers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let key = "one-key-for-everyone-0123";
    let config = shelfsync_edge::config::EdgeConfig {
        store_id: Some(shelfsync_common::StoreId::new_v7()),
        hub_url: Some("http://127.0.0.1:9".into()),
        hub_token: Some("ss_unused".into()),
        data_dir: dir.path().to_owned(),
        terminal_key: Some(key.into()),
        manager_key: Some(key.into()),
        ..shelfsync_edge::config::EdgeConfig::default()
    };
    let started = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        shelfsync_edge::run(config, listener, std::future::pending()),
    )
    .await
    .expect("the agent must refuse to start, not serve");
    assert!(
        matches!(started, Err(shelfsync_edge::StartError::SameKeys)),
        "{started:?}"
    );
}

/// Why the hub link failed (raw connection errors naming the hub's address) is shown to
/// the manager key only; the open status page and the tills' key see the rest.
#[tokio::test]
async fn the_open_status_page_hides_why_the_hub_link_failed() {
    let agent = TestAgent::spawn().await;
    let page = |key: Option<&str>| {
        let request = agent.client.get(agent.path("/v1/status"));
        let request = match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        async move { call(request).await.1 }
    };
    let mut reason = Value::Null;
    for _ in 0..300 {
        reason = page(Some(MANAGER)).await["breaker_reason"].clone();
        if reason.is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reason.is_string(), "the breaker to the closed hub never opened");
    for key in [None, Some(TERMINAL), Some("not-a-key")] {
        let shown = page(key).await;
        assert_eq!(shown["breaker"], "open", "{shown}");
        assert_eq!(shown["breaker_reason"], Value::Null, "{key:?}: {shown}");
        assert!(!shown.to_string().contains("127.0.0.1:9"), "{shown}");
    }
}

#[tokio::test]
async fn openapi_says_what_the_agent_does() {
    let agent = TestAgent::spawn().await;
    // Valid 3.1, parameters where the routes put them, every error documented with its
    // problem body, and keys needed exactly where the document says.
    let doc = support::openapi::served_contract(&agent.client, &agent.url, &[]).await;

    let mut query = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "query" {
                    query.push(format!("{method} {path} {}", parameter["name"].as_str().unwrap()));
                }
            }
        }
    }
    query.sort();
    assert_eq!(
        query,
        [
            "get /v1/inventory/availability product_id",
            "get /v1/inventory/availability quantity",
            "get /v1/inventory/availability store_id",
            "get /v1/outbox limit",
            "get /v1/outbox status",
            "get /v1/products sku",
            "get /v1/quarantine limit",
        ]
    );

    // A store id in a request can only be this agent's; an expected version only "any".
    let schemas = &doc["components"]["schemas"];
    let this_store = json!([agent.store_id.to_string()]);
    for request in ["AddStockRequest", "AdjustStockRequest", "ReserveStockRequest"] {
        assert_eq!(
            schemas[request]["properties"]["store_id"]["enum"], this_store,
            "{request}"
        );
        assert_eq!(
            schemas[request]["properties"]["expected_version"]["enum"],
            json!(["any"]),
            "{request}"
        );
    }
    // Writes document the replay of a retried request, with its body, and it is real.
    let replay = &doc["paths"]["/v1/inventory/stock"]["post"]["responses"]["200"];
    assert_eq!(
        replay["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/LocalWriteResult"
    );
    let body = agent.stock_body(agent.catalog.apple, 1);
    let add = || {
        agent
            .post("/v1/inventory/stock", &body)
            .header("Idempotency-Key", "openapi-replay")
    };
    let (first, _, _) = call(add()).await;
    let (again, replayed, _) = call(add()).await;
    assert_eq!((first, again, &replayed["replayed"]), (201, 200, &json!(true)));

    let limit = support::openapi::parameter_schema(&doc, "/v1/outbox", "get", "limit");
    assert_eq!(
        (limit["minimum"].as_u64(), limit["maximum"].as_u64()),
        (Some(1), Some(1000))
    );
    let till = support::openapi::parameter_schema(&doc, "/v1/inventory/stock", "post", "X-Till-Id");
    assert_eq!(till["pattern"], "^[A-Za-z0-9._-]{1,64}$");
}
