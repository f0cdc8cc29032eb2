//! The status page, the operator's quarantine routes, the ops routes and the OpenAPI
//! document.

use super::*;

#[tokio::test]
async fn the_status_page_reports_link_outbox_and_position_without_a_key() {
    // Given: an agent whose hub is unreachable. When: the status page is read without a
    // key. Then: it shows the link, the outbox and the sync position.
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
    // Given: an agent that never reached its hub. When: it is asked for readiness, a
    // product and a write. Then: it is up, but says it has no snapshot yet.
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
    // Given: an agent. When: its ops routes and OpenAPI document are read. Then: they
    // answer, and every documented path is served.
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
        ("post", "/v1/inventory/allocations/request"),
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

/// Why the hub link failed (raw connection errors naming the hub's address) is shown to
/// the manager key only; the open status page and the tills' key see the rest.
#[tokio::test]
async fn the_open_status_page_hides_why_the_hub_link_failed() {
    // Given: an agent whose hub calls fail. When: the status page is read without a key,
    // then with the manager's. Then: only the manager sees why.
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

#[tokio::test]
async fn an_operator_retries_or_discards_quarantined_events() {
    // Given: two events the hub rejected.
    let agent = TestAgent::spawn_with(Options {
        quarantined: 2,
        ..Options::default()
    })
    .await;
    let [first, second] = [agent.quarantined[0], agent.quarantined[1]];

    // When: the manager lists them...
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

    // ...retries the first and discards the second.
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
    // Then: neither is in quarantine any more, the retried one is pending again.
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
}
