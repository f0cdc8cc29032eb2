//! Three hubs on one PostgreSQL database, in-process over real HTTP: what one hub takes
//! is seen through the others (read-your-writes with `min_position`, push streams, token
//! revocation, the fleet view), and a scheduled job runs on one hub at a time. Skipped
//! with a message without a PostgreSQL server (a failure under SHELFSYNC_REQUIRE_SERVICES=1).

use shelfsync_common::testing::http::call;
use shelfsync_common::testing::proxy::{FaultProxy, Mode};
use shelfsync_common::wire::sync::{FleetResponse, Heartbeat};
use shelfsync_common::StoreId;
use shelfsync_hub::testing::storage::TestDatabase;
use shelfsync_hub::testing::{demo_product, demo_store, Push, TestHub};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn three_hubs(db: &TestDatabase) -> Vec<TestHub> {
    let first = TestHub::spawn_sharing(&db.url, true).await;
    let second = TestHub::spawn_sharing(&db.url, false).await;
    let third = TestHub::spawn_sharing(&db.url, false).await;
    vec![first, second, third]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_on_one_hub_is_read_pushed_and_revoked_through_the_others() {
    let Some(db) = TestDatabase::create().await else { return };
    let hubs = three_hubs(&db).await;
    let (product, store) = (demo_product(0), demo_store(0));

    // Given an agent whose push stream is open on the third hub
    let agent = hubs[0].demo_agent(0).await;
    let on_third = hubs[2].agent(store, agent.token.clone());
    let mut stream = on_third.stream(Some(hubs[2].head().await)).await;
    stream.until_caught_up(WAIT).await;

    // When stock is added through the first hub
    let position = hubs[0].add_stock(product, store, 7).await;

    // Then the second hub reads it at once with min_position (read-your-writes across hubs)
    let path = format!("/v1/inventory/products/{product}/stores/{store}?min_position={position}");
    let (status, level, _) = call(hubs[1].get(&path)).await;
    assert_eq!(status, 200, "{level}");
    assert!(level["position"].as_u64().unwrap_or(0) >= position, "{level}");
    // and the stream on the third hub pushes it
    let pushed = loop {
        match stream
            .next(WAIT)
            .await
            .expect("the third hub pushes the first hub's write")
        {
            Push::Event(event) if event.position == position => break event,
            _ => {}
        }
    };
    assert_eq!(pushed.stream.store_id, Some(store));

    // When the second hub revokes the store, the stream on the third hub ends
    let revoke = hubs[1].post_empty(&format!("/v1/admin/stores/{store}/revoke"));
    assert_eq!(call(revoke).await.0, 204);
    let ended = tokio::time::timeout(WAIT, async { while stream.next(WAIT).await.is_some() {} }).await;
    assert!(ended.is_ok(), "the revoked store's stream on another hub ends");
    let (status, _, _) = call(on_third.request(reqwest::Method::GET, "/v1/sync/events")).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_view_of_any_hub_shows_an_agent_talking_to_another() {
    let Some(db) = TestDatabase::create().await else { return };
    let hubs = three_hubs(&db).await;
    let agent = hubs[0].demo_agent(1).await;
    let on_second = hubs[1].agent(agent.store, agent.token.clone());
    let heartbeat = Heartbeat {
        agent_version: "0.1.0-test".into(),
        cursor: 3,
        outbox_depth: 5,
        oldest_pending_age_secs: Some(9),
        breaker_state: "closed".into(),
        quarantined: 0,
        resynced: None,
    };
    on_second.heartbeat(&heartbeat).await;
    // Presence is shared every few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let fleet: FleetResponse = hubs[2].fleet().await;
        let entry = entry(&fleet, agent.store);
        if entry.heartbeat.as_ref().is_some_and(|h| h.outbox_depth == 5) {
            assert!(entry.last_seen.is_some());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the third hub never showed the agent: {entry:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn entry(fleet: &FleetResponse, store: StoreId) -> &shelfsync_common::wire::sync::FleetStore {
    fleet
        .stores
        .iter()
        .find(|s| s.store.id == store)
        .expect("the store is in the fleet view")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_postgres_unreachable_writes_are_503_and_nothing_is_half_written_until_the_hub_reconnects() {
    let Some(db) = TestDatabase::create().await else { return };
    // Given a hub that reaches PostgreSQL through a proxy the test can cut
    let proxy = FaultProxy::start("postgres", "127.0.0.1:5432".parse().unwrap()).await;
    let (server, database) = db.url.rsplit_once('/').expect("a database URL");
    let (credentials, _) = server.rsplit_once('@').expect("user@host");
    let through_proxy = format!("{credentials}@{}/{database}", proxy.url().trim_start_matches("http://"));
    let hub = TestHub::spawn_sharing(&through_proxy, true).await;
    let (product, store) = (demo_product(0), demo_store(0));
    hub.add_stock(product, store, 1).await;
    let head = hub.head().await;

    // When PostgreSQL cannot be reached
    proxy.set_mode(Mode::Reset);
    let body = serde_json::json!({ "product_id": product, "store_id": store, "quantity": 5 });
    for _ in 0..3 {
        // Then writes are refused as retryable, with the stable code
        let (status, problem, _) = call(hub.post("/v1/inventory/stock", &body)).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (503, Some("storage_unavailable")),
            "{problem}"
        );
    }
    // while reads keep being answered from this hub's own read model
    let (status, level, _) = call(hub.get(&format!("/v1/inventory/products/{product}/stores/{store}"))).await;
    assert_eq!(status, 200, "{level}");

    // When it is back, the hub reconnects by itself: the next writes land, right after
    // the last one that did (the refused ones left nothing behind)
    proxy.heal();
    let deadline = tokio::time::Instant::now() + WAIT;
    let position = loop {
        let (status, written, _) = call(hub.post("/v1/inventory/stock", &body)).await;
        if status == 201 {
            break written["position"].as_u64().expect("position");
        }
        assert_eq!(status, 503, "{written}");
        assert!(tokio::time::Instant::now() < deadline, "the hub did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(position, head + 1, "nothing of the refused writes was recorded");
}
