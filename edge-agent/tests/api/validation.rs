//! Requests the agent cannot serve: unknown products and reservations, and bad requests,
//! each a problem answer that writes nothing.

use super::*;

#[tokio::test]
async fn unknown_products_and_reservations_are_404() {
    // Given: an agent, and ids it never heard of.
    let agent = TestAgent::spawn().await;
    let unknown = shelfsync_common::ProductId::new_v7();

    // When / then: every read and write that names them is a 404.
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
    assert!(agent.outbox().await.is_empty(), "nothing was written");
}

#[tokio::test]
async fn catalog_products_are_found_and_those_without_stock_read_as_zero() {
    // Given: apple and bread with stock here, cheese in the catalog without a stock row.
    let agent = TestAgent::spawn().await;

    // When / then: products are found by SKU and by id...
    let (status, product, _) = call(agent.get("/v1/products?sku=APL-1")).await;
    assert_eq!(
        (status, &product["id"], &product["version"]),
        (200, &json!(agent.catalog.apple), &json!(1)),
        "{product}"
    );
    let (status, product, _) = call(agent.get(&format!("/v1/products/{}", agent.catalog.bread))).await;
    assert_eq!((status, product["sku"].as_str()), (200, Some("BRD-1")));

    // ...cheese reads as zero...
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
    // ...and a delivery of it starts its stream here.
    let (status, _, _) = call(agent.post("/v1/inventory/stock", &agent.stock_body(agent.catalog.cheese, 4))).await;
    assert_eq!(status, 201);
    assert_eq!(agent.stock(agent.catalog.cheese).await["on_hand"], 4);
    assert_eq!(agent.outbox().await.len(), 1);
}

#[tokio::test]
async fn bad_requests_are_problems_and_write_nothing() {
    // Given: an agent. When: requests that are malformed in one way each. Then: each is a
    // problem answer, and nothing is written.
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
async fn outbox_queries_are_validated() {
    // Given: an agent.
    let agent = TestAgent::spawn().await;

    // When / then: an unknown status, or a limit outside 1..=1000, is a bad query.
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
