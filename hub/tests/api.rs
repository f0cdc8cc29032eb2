//! The hub's HTTP API over real HTTP: commands, queries, errors, auth, idempotency and
//! optimistic concurrency, against a hub started in-process on a port-0 listener.

use serde_json::{json, Value};
use shelfsync_common::testing::http::call;
use shelfsync_hub::testing::{demo_product, demo_store, TestHub, ADMIN};

fn stock_body(product: impl std::fmt::Display, store: impl std::fmt::Display, quantity: i64) -> Value {
    json!({ "product_id": product.to_string(), "store_id": store.to_string(), "quantity": quantity })
}

/// A header value with bytes outside ASCII (HTTP allows them; the hub must refuse them).
fn non_ascii(bytes: &[u8]) -> reqwest::header::HeaderValue {
    reqwest::header::HeaderValue::from_bytes(bytes).expect("obs-text is a valid header value")
}

async fn head(hub: &TestHub) -> u64 {
    let (_, ready, _) = call(hub.client.get(format!("{}/readyz", hub.url))).await;
    ready["head"].as_u64().expect("head")
}

shelfsync_hub::both_storages! {
    async fn products_register_read_update_with_if_match() {
        let hub = TestHub::spawn().await;
        let (status, body, _) = call(hub.post(
            "/v1/products",
            &json!({"sku": "SOAP-1", "name": "Olive soap", "price_minor": 450}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
        let id = body["events"][0]["data"]["id"].as_str().unwrap().to_owned();
        let position = body["position"].as_u64().unwrap();

        let (status, product, _) = call(hub.get(&format!("/v1/products/{id}?min_position={position}"))).await;
        assert_eq!(status, 200, "{product}");
        assert_eq!(
            (product["sku"].as_str(), product["version"].as_u64()),
            (Some("SOAP-1"), Some(1))
        );
        let (status, by_sku, _) = call(hub.get(&format!("/v1/products?sku=SOAP-1&min_position={position}"))).await;
        assert_eq!((status, by_sku["id"].as_str()), (200, Some(id.as_str())));

        let update = json!({"sku": "SOAP-1", "name": "Olive soap", "price_minor": 399});
        let stale = hub
            .put(&format!("/v1/products/{id}"), &update)
            .header("If-Match", "\"7\"");
        let response = stale.send().await.unwrap();
        assert_eq!(response.status(), 409);
        assert_eq!(response.headers()["x-shelfsync-current-version"], "1");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            (problem["code"].as_str(), problem["current_version"].as_u64()),
            (Some("version_conflict"), Some(1))
        );

        let (status, body, _) = call(
            hub.put(&format!("/v1/products/{id}"), &update)
                .header("If-Match", "\"1\""),
        )
        .await;
        assert_eq!((status, body["stream_version"].as_u64()), (201, Some(2)), "{body}");

        let (status, body, _) = call(hub.post(
            "/v1/products",
            &json!({"sku": "SOAP-1", "name": "Copy", "price_minor": 1}),
        ))
        .await;
        assert_eq!((status, body["code"].as_str()), (409, Some("sku_taken")));
        let (status, body, _) = call(hub.post("/v1/products", &json!({"sku": "", "name": "x", "price_minor": 1}))).await;
        assert_eq!(
            (status, body["code"].as_str(), body["field"].as_str()),
            (422, Some("invalid_product"), Some("sku"))
        );
    }
}

shelfsync_hub::both_storages! {
    async fn bad_input_gets_problem_json_and_writes_nothing() {
        let hub = TestHub::spawn().await;
        let (product, store) = (demo_product(0), demo_store(0));
        let before = head(&hub).await;
        let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
            (
                hub.post("/v1/inventory/stock", &stock_body(product, store, 0)),
                422,
                "invalid_body",
            ),
            (
                hub.post("/v1/inventory/stock", &stock_body(product, store, -5)),
                422,
                "invalid_body",
            ),
            (
                hub.post(
                    "/v1/inventory/stock",
                    &json!({"product_id": product, "store_id": store, "quantity": 1, "qty": 2}),
                ),
                422,
                "invalid_body",
            ),
            (
                hub.client
                    .post(format!("{}/v1/inventory/stock", hub.url))
                    .bearer_auth(ADMIN)
                    .header("content-type", "application/json")
                    .body("{\"product_id\":"),
                400,
                "malformed_json",
            ),
            (
                hub.client
                    .post(format!("{}/v1/inventory/stock", hub.url))
                    .bearer_auth(ADMIN)
                    .body("quantity=1"),
                415,
                "unsupported_media_type",
            ),
            (
                hub.client
                    .post(format!("{}/v1/inventory/stock", hub.url))
                    .bearer_auth(ADMIN)
                    .header("content-type", "application/json")
                    .body(vec![b' '; 2 * 1024 * 1024]),
                413,
                "body_too_large",
            ),
            (
                hub.client
                    .post(format!("{}/v1/inventory/stock", hub.url))
                    .json(&stock_body(product, store, 1)),
                401,
                "unauthorized",
            ),
            (
                hub.post("/v1/inventory/stock", &json!([product, store, 2])),
                422,
                "invalid_body",
            ),
            (
                hub.post("/v1/inventory/stock", &stock_body(product, store, 1))
                    .header("Idempotency-Key", non_ascii(b"retry-\xc3\xa9")),
                400,
                "invalid_idempotency_key",
            ),
            (
                hub.post("/v1/inventory/stock", &stock_body(product, store, 1))
                    .header("If-Match", non_ascii(b"\"1\xff\"")),
                400,
                "invalid_if_match",
            ),
            (
                hub.post("/v1/inventory/stock", &stock_body(product, store, 1))
                    .header("X-Correlation-Id", non_ascii(b"\xc3\xa9")),
                400,
                "invalid_correlation_id",
            ),
            (
                hub.get(&format!(
                    "/v1/inventory/products/{product}/stores/{store}?min_position=999999999"
                )),
                400,
                "min_position_past_head",
            ),
            (hub.get("/v1/products/not-a-uuid"), 400, "invalid_path"),
            (hub.get("/v1/nothing-here"), 404, "route_not_found"),
            (
                hub.post(
                    "/v1/inventory/stock",
                    &stock_body(product, "01935701-0000-7000-8000-0000000000ff", 1),
                ),
                404,
                "store_not_found",
            ),
            (
                hub.post(
                    "/v1/inventory/stock",
                    &stock_body("01939d01-0000-7000-8000-0000000000ff", store, 1),
                ),
                404,
                "product_not_found",
            ),
            (
                hub.post(
                    "/v1/inventory/adjustments",
                    &json!({"product_id": product, "store_id": store, "delta": 0, "reason": "count"}),
                ),
                422,
                "zero_adjustment",
            ),
            (
                hub.post(
                    "/v1/inventory/reservations",
                    &json!({"product_id": product, "store_id": store, "quantity": 1, "ttl_seconds": 0}),
                ),
                422,
                "invalid_ttl",
            ),
            (
                hub.post("/v1/inventory/reservations", &stock_body(product, store, 100_000)),
                409,
                "insufficient_stock",
            ),
        ];
        for (request, status, code) in cases {
            let (got_status, body, content_type) = call(request).await;
            assert_eq!((got_status, body["code"].as_str()), (status, Some(code)), "{body}");
            assert_eq!(content_type, "application/problem+json");
            assert_eq!(body["status"].as_u64(), Some(u64::from(status)));
            assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        }
        assert_eq!(head(&hub).await, before, "a failed request must not write");
    }
}

shelfsync_hub::both_storages! {
    async fn reserve_commit_and_read_your_writes() {
        let hub = TestHub::spawn().await;
        let (product, store) = (demo_product(1), demo_store(1));
        let seeded = head(&hub).await;
        let (_, level, _) = call(hub.get(&format!(
            "/v1/inventory/products/{product}/stores/{store}?min_position={seeded}"
        )))
        .await;
        let on_hand = level["on_hand"].as_i64().unwrap();

        let (status, reserved, _) = call(hub.post(
            "/v1/inventory/reservations",
            &json!({"product_id": product, "store_id": store, "quantity": 2}),
        ))
        .await;
        assert_eq!(status, 201, "{reserved}");
        let reservation = reserved["events"][0]["data"]["reservation_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let position = reserved["position"].as_u64().unwrap();
        let (_, availability, _) = call(hub.get(&format!(
            "/v1/inventory/availability?product_id={product}&store_id={store}&quantity={on_hand}&min_position={position}"
        )))
        .await;
        assert_eq!(availability["available"].as_i64(), Some(on_hand - 2));
        assert_eq!(availability["sufficient"], false);

        let (status, committed, _) = call(
            hub.client
                .post(format!("{}/v1/inventory/reservations/{reservation}/commit", hub.url))
                .bearer_auth(ADMIN),
        )
        .await;
        assert_eq!(status, 201, "{committed}");
        let position = committed["position"].as_u64().unwrap();
        let (_, level, _) = call(hub.get(&format!(
            "/v1/inventory/products/{product}/stores/{store}?min_position={position}"
        )))
        .await;
        assert_eq!(
            (level["on_hand"].as_i64(), level["reserved"].as_i64()),
            (Some(on_hand - 2), Some(0))
        );
        let (_, all, _) = call(hub.get(&format!("/v1/inventory/products/{product}?min_position={position}"))).await;
        assert_eq!(all["stores"].as_array().map(Vec::len), Some(3));

        let (status, body, _) = call(
            hub.client
                .post(format!("{}/v1/inventory/reservations/{reservation}/release", hub.url))
                .bearer_auth(ADMIN),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (404, Some("reservation_not_found")));
        let (status, body, _) = call(hub.get(&format!(
            "/v1/inventory/products/{product}?min_position={}",
            position + 1000
        )))
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("min_position_past_head")),
            "no write has that position: waiting cannot help"
        );
    }
}

shelfsync_hub::both_storages! {
    async fn a_retried_write_with_the_same_idempotency_key_is_one_write() {
        let hub = TestHub::spawn().await;
        let body = stock_body(demo_product(2), demo_store(2), 3);
        let send = |body: &Value| {
            hub.post("/v1/inventory/stock", body)
                .header("Idempotency-Key", "delivery-77")
        };
        let (first_status, first, _) = call(send(&body)).await;
        let (again_status, again, _) = call(send(&body)).await;
        assert_eq!((first_status, again_status), (201, 200));
        assert_eq!(first["position"], again["position"]);
        assert_eq!(first["events"][0]["event_id"], again["events"][0]["event_id"]);
        assert_eq!(again["duplicate"], true);
        let before = head(&hub).await;
        let (status, problem, _) = call(send(&stock_body(demo_product(2), demo_store(2), 4))).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (422, Some("idempotency_key_reused"))
        );
        assert_eq!(head(&hub).await, before);
    }
}

shelfsync_hub::both_storages! {
    async fn a_write_retried_with_the_event_id_of_its_answer_is_the_same_write() {
        // Given a delivery written under an Idempotency-Key,
        let hub = TestHub::spawn().await;
        let body = stock_body(demo_product(2), demo_store(2), 3);
        let (status, first, _) = call(
            hub.post("/v1/inventory/stock", &body)
                .header("Idempotency-Key", "delivery-78"),
        )
        .await;
        assert_eq!(status, 201);
        // when it is sent again naming the event id of its answer in the body,
        let mut named = body.clone();
        named["event_id"] = first["events"][0]["event_id"].clone();
        let (status, again, _) = call(hub.post("/v1/inventory/stock", &named)).await;
        // then it is the same request (the fingerprint leaves the event id out).
        assert_eq!((status, again["duplicate"].as_bool()), (200, Some(true)));
        assert_eq!(again["position"], first["position"]);
    }
}

shelfsync_hub::both_storages! {
    async fn concurrent_writes_with_the_same_if_match_exactly_one_wins() {
        let hub = std::sync::Arc::new(TestHub::spawn().await);
        let (product, store) = (demo_product(3), demo_store(0));
        let seeded = head(&hub).await;
        let (_, level, _) = call(hub.get(&format!(
            "/v1/inventory/products/{product}/stores/{store}?min_position={seeded}"
        )))
        .await;
        let version = level["version"].as_u64().unwrap();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let hub = hub.clone();
            let body = stock_body(product, store, 1);
            tasks.push(tokio::spawn(async move {
                call(
                    hub.post("/v1/inventory/stock", &body)
                        .header("If-Match", format!("\"{version}\"")),
                )
                .await
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            let (status, body, _) = task.await.unwrap();
            outcomes.push(status);
            if status == 409 {
                assert_eq!(body["current_version"].as_u64(), Some(version + 1));
            }
        }
        assert_eq!(outcomes.iter().filter(|s| **s == 201).count(), 1, "{outcomes:?}");
        assert_eq!(outcomes.iter().filter(|s| **s == 409).count(), 19, "{outcomes:?}");
    }
}

shelfsync_hub::both_storages! {
    async fn tokens_scope_what_a_client_may_do() {
        let hub = TestHub::spawn().await;
        let (status, token, _) = call(hub.post("/v1/admin/tokens", &json!({"name": "web-shop"}))).await;
        assert_eq!(status, 201, "{token}");
        let secret = token["secret"].as_str().unwrap().to_owned();
        let (status, _, _) = call(hub.post("/v1/admin/tokens", &json!({"name": "web-shop"}))).await;
        assert_eq!(status, 409);

        let as_shop = |req: reqwest::RequestBuilder| req.bearer_auth(&secret);
        let (status, body, _) = call(
            as_shop(hub.client.post(format!("{}/v1/inventory/stock", hub.url))).json(&stock_body(
                demo_product(0),
                demo_store(0),
                1,
            )),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["events"][0]["metadata"]["actor"], "channel:web-shop");
        let (status, body, _) = call(
            as_shop(hub.client.post(format!("{}/v1/products", hub.url)))
                .json(&json!({"sku": "X", "name": "X", "price_minor": 1})),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));

        let (status, _, _) = call(
            hub.client
                .post(format!("{}/v1/admin/tokens/web-shop/revoke", hub.url))
                .bearer_auth(ADMIN),
        )
        .await;
        assert_eq!(status, 204);
        let (status, _, _) = call(as_shop(hub.client.get(format!(
            "{}/v1/products/{}",
            hub.url,
            demo_product(0)
        ))))
        .await;
        assert_eq!(status, 401, "a revoked token is refused at once");
        let refused = hub
            .client
            .get(format!("{}/v1/products/{}", hub.url, demo_product(0)))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        assert_eq!(
            refused.headers()["www-authenticate"],
            "Bearer realm=\"shelfsync-hub\"",
            "a 401 names the scheme (RFC 9110)"
        );
    }
}

shelfsync_hub::both_storages! {
    async fn ops_routes_answer_and_openapi_lists_every_route() {
        let hub = TestHub::spawn().await;
        let (status, _, _) = call(hub.client.get(format!("{}/healthz", hub.url))).await;
        assert_eq!(status, 200);
        let (status, ready, _) = call(hub.client.get(format!("{}/readyz", hub.url))).await;
        assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
        let (_, openapi, _) = call(hub.client.get(format!("{}/openapi.json", hub.url))).await;
        for path in [
            "/v1/products",
            "/v1/products/{id}",
            "/v1/inventory/stock",
            "/v1/inventory/adjustments",
            "/v1/inventory/reservations",
            "/v1/inventory/reservations/{id}/release",
            "/v1/inventory/reservations/{id}/commit",
            "/v1/inventory/products/{id}",
            "/v1/inventory/products/{id}/stores/{store_id}",
            "/v1/inventory/availability",
            "/v1/admin/tokens",
        ] {
            assert!(
                openapi["paths"].get(path).is_some(),
                "{path} missing from /openapi.json"
            );
        }
        let metrics = hub.metrics().await;
        assert!(metrics.contains("shelfsync_http_requests_total"), "{metrics}");
    }
}

#[tokio::test]
async fn data_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::spawn_at(dir.path().to_owned(), true).await;
    let (status, written, _) =
        call(hub.post("/v1/inventory/stock", &stock_body(demo_product(4), demo_store(0), 9))).await;
    assert_eq!(status, 201);
    let position = written["position"].as_u64().unwrap();
    let (status, _, _) = call(hub.get(&format!(
        "/v1/inventory/products/{}?min_position={position}",
        demo_product(4)
    )))
    .await;
    assert_eq!(status, 200, "a read holds a read-model connection open");
    hub.stop().await;
    for file in ["events.sqlite-wal", "read_model.sqlite-wal"] {
        let left = std::fs::metadata(dir.path().join(file)).map_or(0, |m| m.len());
        assert_eq!(left, 0, "{file}: a clean stop checkpoints and truncates the WAL");
    }
    let hub = TestHub::spawn_at(dir.path().to_owned(), true).await;
    assert_eq!(head(&hub).await, position, "the demo seed must not run twice");
    let (_, level, _) = call(hub.get(&format!(
        "/v1/inventory/products/{}/stores/{}?min_position={position}",
        demo_product(4),
        demo_store(0)
    )))
    .await;
    assert_eq!(level["position"].as_u64(), Some(position));
}

shelfsync_hub::both_storages! {
    async fn reads_of_an_unknown_product_or_store_are_404_not_out_of_stock() {
        let hub = TestHub::spawn().await;
        let (product, store) = (demo_product(0), demo_store(0));
        let nothing = "01900000-0000-7000-8000-00000000dead";
        let cases = [
            (format!("/v1/inventory/products/{nothing}"), "product_not_found"),
            (
                format!("/v1/inventory/products/{nothing}/stores/{store}"),
                "product_not_found",
            ),
            (
                format!("/v1/inventory/products/{product}/stores/{nothing}"),
                "store_not_found",
            ),
            (
                format!("/v1/inventory/availability?product_id={nothing}&store_id={store}"),
                "product_not_found",
            ),
            (
                format!("/v1/inventory/availability?product_id={product}&store_id={nothing}&quantity=1"),
                "store_not_found",
            ),
        ];
        for (path, code) in &cases {
            let (status, body, _) = call(hub.get(path)).await;
            assert_eq!((status, body["code"].as_str()), (404, Some(*code)), "{path}: {body}");
        }

        // Known ids still answer, and a product no store has stocked yet is zero, not 404.
        let (status, body, _) = call(hub.get(&format!(
            "/v1/inventory/availability?product_id={product}&store_id={store}"
        )))
        .await;
        assert_eq!((status, body["sufficient"].as_bool()), (200, Some(true)), "{body}");
        let (status, body, _) = call(hub.post(
            "/v1/products",
            &json!({"sku": "NEW-1", "name": "New", "price_minor": 100}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
        let (new, position) = (
            body["events"][0]["data"]["id"].as_str().unwrap().to_owned(),
            body["position"].as_u64().unwrap(),
        );
        let (status, body, _) = call(hub.get(&format!("/v1/inventory/products/{new}?min_position={position}"))).await;
        assert_eq!((status, body["total_on_hand"].as_i64()), (200, Some(0)), "{body}");
        let (status, body, _) = call(hub.get(&format!(
            "/v1/inventory/availability?product_id={new}&store_id={store}&min_position={position}"
        )))
        .await;
        assert_eq!((status, body["sufficient"].as_bool()), (200, Some(false)), "{body}");
    }
}

shelfsync_hub::both_storages! {
    async fn two_concurrent_enrollments_with_one_name_make_one_store_unless_asked() {
        let hub = TestHub::spawn().await;
        let enroll = |body: Value| {
            let hub = &hub;
            async move { call(hub.post("/v1/admin/stores", &body)).await }
        };
        let name = json!({"name": "Leipzig Hbf"});
        let (first, second) = tokio::join!(enroll(name.clone()), enroll(name.clone()));
        let mut statuses = [first.0, second.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "{} / {}", first.1, second.1);
        let (created, refused) = if first.0 == 201 {
            (first.1, second.1)
        } else {
            (second.1, first.1)
        };
        assert_eq!(refused["code"], "store_name_taken", "{refused}");
        assert_eq!(refused["existing_store_id"], created["store"]["id"], "{refused}");

        let (status, body, _) = enroll(json!({"name": "Leipzig Hbf", "allow_duplicate_name": true})).await;
        assert_eq!(status, 201, "{body}");
        assert_ne!(body["store"]["id"], created["store"]["id"]);
        let (_, stores, _) = call(hub.get("/v1/admin/stores")).await;
        let named = stores
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == "Leipzig Hbf")
            .count();
        assert_eq!(named, 2, "{stores}");
    }
}

shelfsync_hub::both_storages! {
    /// Slow clients cannot hold the hub: a connection that never finishes its headers is
    /// closed after `http.header_read_timeout_secs`, and with three times
    /// `http.max_connections` such connections open, `/healthz` on a new connection still
    /// answers (once the stalled ones ahead of it are cut). Real TCP, no token.
    async fn stalled_connections_are_closed_and_the_hub_keeps_answering() {
        use std::time::{Duration, Instant};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const CAP: usize = 8;
        let hub = TestHub::spawn_with(|config| {
            config.http.header_read_timeout_secs = 1;
            config.http.max_connections = CAP;
        })
        .await;
        let addr = hub.url.trim_start_matches("http://").to_owned();
        let started = Instant::now();
        let mut stalled = Vec::new();
        for _ in 0..3 * CAP {
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n")
                .await
                .expect("partial headers");
            stalled.push(tcp);
        }

        let mut probe = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), probe.read_to_end(&mut answer))
            .await
            .expect("/healthz must answer while stalled connections are open")
            .expect("read");
        let waited = started.elapsed();
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            waited >= Duration::from_millis(900),
            "all {CAP} connection slots were held by stalled clients, yet /healthz answered after {waited:?}: no cap"
        );

        for (n, mut tcp) in stalled.into_iter().enumerate() {
            let mut rest = Vec::new();
            let closed = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut rest)).await;
            assert!(closed.is_ok(), "stalled connection {n} is still open after 20 s");
        }
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

shelfsync_hub::both_storages! {
    /// A SKU that only looks different is the same SKU: fullwidth input is stored in its plain
    /// form (and found by either), and invisible or bidi characters are refused.
    async fn look_alike_skus_are_one_product_or_refused() {
        let hub = TestHub::spawn().await;
        let register = |sku: &str| {
            hub.post(
                "/v1/products",
                &json!({"sku": sku, "name": "Filter coffee 250g", "price_minor": 650}),
            )
        };
        let (status, body, _) = call(register("ＦＩＬ-２５０")).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["events"][0]["data"]["sku"], "FIL-250");
        let position = body["position"].as_u64().unwrap();
        let (status, found, _) = call(hub.get(&format!("/v1/products?sku=ＦＩＬ-250&min_position={position}"))).await;
        assert_eq!((status, found["sku"].as_str()), (200, Some("FIL-250")), "{found}");
        let (status, body, _) = call(register("FIL-250")).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("sku_taken")), "{body}");
        for invisible in ["FIL-250\u{200B}", "FIL-\u{202E}052", "\u{FEFF}FIL-250"] {
            let (status, body, _) = call(register(invisible)).await;
            assert_eq!(
                (status, body["code"].as_str(), body["field"].as_str()),
                (422, Some("invalid_product"), Some("sku")),
                "{invisible:?}: {body}"
            );
        }
    }
}

/// The parameters a document declares in `place`, as (method, path, name).
fn parameters_in(doc: &Value, place: &str) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == place {
                    found.push((
                        method.clone(),
                        path.clone(),
                        parameter["name"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    found.sort();
    found
}

/// The (minimum, maximum, minLength, maxLength) a schema declares.
fn limits(schema: &Value) -> [Option<i64>; 4] {
    ["minimum", "maximum", "minLength", "maxLength"].map(|k| schema[k].as_i64())
}

shelfsync_hub::both_storages! {
    async fn openapi_says_what_the_hub_does() {
        use shelfsync_common::wire::sync::{PROTOCOL_HEADER, PROTOCOL_VERSION};
        let hub = TestHub::spawn().await;
        // Valid 3.1, parameters where the routes put them, every error documented with its
        // problem body, and tokens needed exactly where the document says.
        let doc = shelfsync_common::testing::openapi::served_contract(
            &hub.client,
            &hub.url,
            &[(PROTOCOL_HEADER, PROTOCOL_VERSION)],
        )
        .await;

        let query: Vec<(String, String, String)> = parameters_in(&doc, "query");
        let expected: Vec<(String, String, String)> = [
            ("get", "/v1/admin/webhooks/{id}/deliveries", "limit"),
            ("get", "/v1/admin/webhooks/{id}/deliveries", "status"),
            ("get", "/v1/analytics/alerts", "kind"),
            ("get", "/v1/analytics/alerts", "limit"),
            ("get", "/v1/analytics/alerts", "open"),
            ("get", "/v1/analytics/alerts", "store_id"),
            ("get", "/v1/analytics/sales.csv", "from"),
            ("get", "/v1/analytics/sales.csv", "store_id"),
            ("get", "/v1/analytics/sales.csv", "to"),
            ("get", "/v1/analytics/stores/{id}", "days"),
            ("get", "/v1/analytics/top-sellers", "days"),
            ("get", "/v1/analytics/top-sellers", "limit"),
            ("get", "/v1/analytics/top-sellers", "store_id"),
            ("get", "/v1/inventory/availability", "min_position"),
            ("get", "/v1/inventory/availability", "product_id"),
            ("get", "/v1/inventory/availability", "quantity"),
            ("get", "/v1/inventory/availability", "store_id"),
            ("get", "/v1/inventory/products/{id}", "min_position"),
            ("get", "/v1/inventory/products/{id}/stores/{store_id}", "min_position"),
            ("get", "/v1/products", "min_position"),
            ("get", "/v1/products", "sku"),
            ("get", "/v1/products/{id}", "min_position"),
            ("get", "/v1/sync/events", "after"),
            ("get", "/v1/sync/events", "limit"),
            ("get", "/v1/sync/stream", "after"),
        ]
        .map(|(m, p, n)| (m.to_owned(), p.to_owned(), n.to_owned()))
        .to_vec();
        assert_eq!(query, expected, "the query parameters");

        let open: Vec<&String> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, item)| item["get"]["security"] == json!([{}]))
            .map(|(path, _)| path)
            .collect();
        assert_eq!(
            open,
            ["/healthz", "/metrics", "/openapi.json", "/readyz", "/v1/version"],
            "the open routes"
        );

        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let protocol = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == "X-Shelfsync-Protocol");
                if path.starts_with("/v1/sync/") {
                    let protocol =
                        protocol.unwrap_or_else(|| panic!("{method} {path} does not declare the protocol header"));
                    assert_eq!(
                        (&protocol["in"], &protocol["required"]),
                        (&json!("header"), &json!(true))
                    );
                    for (status, response) in operation["responses"].as_object().unwrap() {
                        assert!(
                            response["headers"]["X-Shelfsync-Protocol"].is_object(),
                            "{method} {path} {status} does not say it carries the protocol header"
                        );
                    }
                } else {
                    assert!(protocol.is_none(), "{method} {path} is no sync route");
                }
            }
        }

        // Writes document the replay of a retried request, with its body.
        for (method, path) in [
            ("post", "/v1/products"),
            ("post", "/v1/inventory/stock"),
            ("post", "/v1/inventory/reservations/{id}/commit"),
        ] {
            let replay = &doc["paths"][path][method]["responses"]["200"];
            assert_eq!(
                replay["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/WriteResult",
                "{method} {path}: {replay}"
            );
            assert!(replay["headers"]["ETag"].is_object() && replay["headers"]["X-Shelfsync-Position"].is_object());
        }
        // A real replay answers what the document says: 200 and the first write's result.
        let body = json!({"product_id": demo_product(0), "store_id": demo_store(0), "quantity": 2});
        let add = || {
            hub.client
                .post(format!("{}/v1/inventory/stock", hub.url))
                .bearer_auth(ADMIN)
                .header("Idempotency-Key", "openapi-replay")
                .json(&body)
        };
        let (first, written, _) = call(add()).await;
        let (again, replayed, _) = call(add()).await;
        assert_eq!((first, again), (201, 200));
        assert_eq!(
            (written["position"].clone(), replayed["duplicate"].clone()),
            (replayed["position"].clone(), json!(true))
        );

        // The upload's events are typed: `type` and `data` are one of the event types.
        let schemas = &doc["components"]["schemas"];
        let upload = &schemas["UploadEvent"]["allOf"];
        assert_eq!(upload[1]["$ref"], "#/components/schemas/EventPayload", "{upload}");
        let branches = schemas["EventPayload"]["oneOf"]
            .as_array()
            .expect("EventPayload is a oneOf");
        let types: Vec<&str> = branches
            .iter()
            .map(|b| b["properties"]["type"]["enum"][0].as_str().unwrap())
            .collect();
        assert_eq!(types, shelfsync_common::domain::event::EVENT_TYPES);
        for branch in branches {
            assert!(
                branch["properties"]["data"].is_object() && branch["required"] == json!(["data", "type"]),
                "{branch}"
            );
        }

        // Value limits are the server's.
        let property = |schema: &str, name: &str| {
            shelfsync_common::testing::openapi::resolve(&doc, &schemas[schema]["properties"][name]).clone()
        };
        assert_eq!(
            limits(&property("AddStockRequest", "quantity")),
            [Some(1), Some(1_000_000), None, None]
        );
        assert_eq!(
            limits(&property("ReserveStockRequest", "ttl_seconds")),
            [Some(1), Some(604_800), None, None]
        );
        assert_eq!(
            limits(&property("RegisterProductRequest", "sku")),
            [None, None, Some(1), Some(64)]
        );
        assert_eq!(
            limits(&property("RegisterProductRequest", "name")),
            [None, None, Some(1), Some(200)]
        );
        assert_eq!(
            property("RegisterProductRequest", "price_minor")["maximum"],
            1_000_000_000_000_u64
        );
        assert_eq!(
            limits(&property("AdjustStockRequest", "reason")),
            [None, None, Some(1), Some(200)]
        );
        let delta = property("AdjustStockRequest", "delta");
        assert_eq!(
            delta["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .map(limits)
                .collect::<Vec<_>>(),
            [
                [Some(1), Some(1_000_000), None, None],
                [Some(-1_000_000), Some(-1), None, None]
            ],
            "a delta is never 0: {delta}"
        );
        assert_eq!(
            limits(&property("Heartbeat", "agent_version")),
            [None, None, Some(1), Some(64)]
        );
        assert_eq!(
            property("Heartbeat", "breaker_state")["pattern"],
            "^(closed|open|half_open)$"
        );
        assert_eq!(property("Heartbeat", "cursor")["maximum"], i64::MAX);
        assert_eq!(
            limits(&property("EventMetadata", "actor")),
            [None, None, Some(1), Some(128)]
        );
        let pull_limit = shelfsync_common::testing::openapi::parameter_schema(&doc, "/v1/sync/events", "get", "limit");
        assert_eq!(limits(&pull_limit), [Some(1), Some(10000), None, None]);
    }
}
