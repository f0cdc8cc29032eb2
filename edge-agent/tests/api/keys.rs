//! Keys: the tills' and the manager's, which routes each opens, generated keys, and a
//! body for another store refused.

use super::*;

#[tokio::test]
async fn a_request_without_a_valid_key_is_refused() {
    // Given: an agent with configured keys.
    let agent = TestAgent::spawn().await;
    let path = format!("/v1/products/{}", agent.catalog.apple);

    // When / then: no key is a 401 that names the scheme...
    let missing = call(agent.client.get(agent.path(&path))).await;
    assert_problem(&missing, 401, "unauthorized");
    let response = agent.client.get(agent.path(&path)).send().await.unwrap();
    assert!(response
        .headers()
        .get("www-authenticate")
        .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")));
    // ...and so are a wrong key, a key without the scheme, and a write without a key.
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
    assert!(agent.outbox().await.is_empty(), "nothing was written");
}

#[tokio::test]
async fn the_tills_key_and_the_managers_open_the_tills_routes() {
    // Given: an agent with configured keys.
    let agent = TestAgent::spawn().await;
    let path = format!("/v1/products/{}", agent.catalog.apple);

    // When / then: both keys read...
    assert_eq!(call(agent.get(&path)).await.0, 200);
    assert_eq!(call(agent.manager_get(&path)).await.0, 200);
    // ...and the manager's key writes too.
    let (status, written, _) = call(
        agent
            .client
            .post(agent.path("/v1/inventory/stock"))
            .bearer_auth(MANAGER)
            .json(&agent.stock_body(agent.catalog.apple, 1)),
    )
    .await;
    assert_eq!(status, 201, "{written}");
}

#[tokio::test]
async fn a_bad_till_name_is_refused_before_anything_is_written() {
    // Given: an agent.
    let agent = TestAgent::spawn().await;

    // When: a write names a till with a space in it.
    let bad_till = agent
        .post("/v1/inventory/stock", &agent.stock_body(agent.catalog.apple, 1))
        .header("X-Till-Id", "till 1");

    // Then: refused, and nothing is written.
    assert_problem(&call(bad_till).await, 400, "invalid_till_id");
    assert!(agent.outbox().await.is_empty());
}

#[tokio::test]
async fn operator_routes_need_the_manager_key() {
    // Given: an agent with quarantined events.
    let agent = TestAgent::spawn_with(Options {
        quarantined: 2,
        ..Options::default()
    })
    .await;
    let first = agent.quarantined[0];

    // When / then: the quarantine and outbox routes refuse no key (401) and the tills' key
    // (403).
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
    // Then: nothing was retried or discarded.
    assert_eq!(
        call(agent.manager_get("/v1/quarantine"))
            .await
            .1
            .as_array()
            .map(Vec::len),
        Some(2)
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
        allow_insecure_hub: true,
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
