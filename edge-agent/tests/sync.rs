//! The sync worker against a real hub running in-process: bootstrap, a sale's round trip,
//! push, the pull fallback, an outage (the link cut by a proxy) and its recovery,
//! quarantine, a revoked token, a hub of another protocol version, and the whole agent.

#[macro_use]
mod sync_support;

use serde_json::Value;
use shelfsync_common::wire::api::{ProductView, StockLevel};
use shelfsync_common::wire::edge::OutboxStatus;
use shelfsync_common::{Product, ProductId};
use shelfsync_edge::store::LocalStore;
use std::time::Duration;
use sync_support::*;

/// Waits until the agent follows the hub live: the push stream is up and the cursor is at
/// the hub's head.
async fn until_live(agent: &SyncWorker, hub: &TestHub) {
    eventually!(
        "the agent follows the hub live",
        agent.link().push_connected && agent.sync().0 == hub.head().await,
        (agent.link(), agent.sync())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_then_a_local_sale_reaches_the_hub_and_comes_back_confirmed() {
    let hub = TestHub::spawn().await;
    let store = demo_store(0);
    let agent = SyncWorker::spawn(&hub.url, store, &hub.store_token(store), |_| {}).await;
    eventually!("bootstrapped", agent.sync().2, agent.link());

    // The snapshot gives the hub's stock and catalog.
    for product in demo_products() {
        let at_hub = hub.stock(product, store).await;
        assert!(at_hub.on_hand > 0);
        assert_eq!(agent.on_hand(product), at_hub.on_hand, "{product}");
    }
    assert_eq!(agent.local.read(|view| view.catalog.len()), demo_products().len());
    until_live(&agent, &hub).await;

    let product = demo_product(1);
    let before = hub.stock(product, store).await.on_hand;
    agent.sell(product, 2).await;
    assert_eq!(agent.on_hand(product), before - 2, "the till sees its sale at once");
    assert_eq!(agent.outbox_depth(), 2);

    eventually!(
        "the sale reaches the hub",
        hub.stock(product, store).await.on_hand == before - 2
    );
    eventually!(
        "the sale comes back confirmed",
        agent.outbox_depth() == 0 && agent.sync().0 == hub.head().await,
        (agent.outbox_depth(), agent.sync())
    );
    let local = agent.local.read(|view| view.stock(product)).expect("a stock row");
    let at_hub = hub.stock(product, store).await;
    assert_eq!(
        (local.on_hand, local.reserved),
        (at_hub.on_hand, at_hub.reserved),
        "no double count"
    );
    assert_eq!(local.on_hand, before - 2);
    assert_eq!((local.pending_events, local.includes_pending), (0, false));
    assert_eq!(local.confirmed_version, at_hub.version);
    let confirmed = agent.local.outbox(vec![OutboxStatus::Confirmed], 10).await.unwrap();
    assert_eq!(confirmed.len(), 2, "{confirmed:?}");
    assert!(confirmed.iter().all(|e| e.hub_position.is_some()));
    assert!(agent
        .local
        .outbox(vec![OutboxStatus::Pending, OutboxStatus::Acked], 10)
        .await
        .unwrap()
        .is_empty());

    let link = agent.link();
    assert!(
        link.online && link.push_connected && link.breaker == "closed",
        "{link:?}"
    );
    let (cursor, head, _, _) = agent.sync();
    assert_eq!(cursor, head);
    assert!(agent.local.read(|view| view.sync.last_sync_at.is_some()));

    // The hub's fleet view hears the heartbeats.
    let head = hub.head().await;
    eventually!(
        "a heartbeat reports the agent caught up",
        {
            let entry = fleet_entry(&hub, store).await;
            entry["heartbeat"]["cursor"] == head && entry["heartbeat"]["outbox_depth"] == 0
        },
        fleet_entry(&hub, store).await
    );
    let entry = fleet_entry(&hub, store).await;
    assert_eq!(entry["heartbeat"]["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(entry["heartbeat"]["breaker_state"], "closed");
    assert_eq!(entry["push_connected"], true);
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_at_the_hub_reaches_the_agent_by_push() {
    let hub = TestHub::spawn().await;
    let store = demo_store(1);
    // Pulls every hour: only the push stream can bring the write in time.
    let agent = SyncWorker::spawn(&hub.url, store, &hub.store_token(store), |c| {
        c.sync.pull_interval_secs = 3600
    })
    .await;
    until_live(&agent, &hub).await;
    let product = demo_product(2);
    let before = agent.on_hand(product);

    let position = hub.add_stock(product, store, 7).await;
    eventually!(
        "the delivery arrives by push",
        agent.on_hand(product) == before + 7 && agent.sync().0 >= position,
        (agent.on_hand(product), agent.sync(), agent.link())
    );
    let local = agent.local.read(|view| view.stock(product)).unwrap();
    assert_eq!(local.pending_events, 0, "it is part of the confirmed state");
    assert!(agent.link().push_connected);
    // Another store's write moves the cursor (progress) but not this store's stock.
    let other = hub.add_stock(product, demo_store(2), 3).await;
    eventually!(
        "the cursor passes the other store's event",
        agent.sync().0 >= other,
        agent.sync()
    );
    assert_eq!(agent.on_hand(product), before + 7);
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_the_stream_is_refused_the_agent_pulls_and_reconnects_when_it_can() {
    let hub = TestHub::spawn().await;
    let proxy = proxy_to(&hub).await;
    proxy.set_mode(Mode::Refuse(PUSH_STREAM.into()));
    let store = demo_store(0);
    let agent = SyncWorker::spawn(&proxy.url(), store, &hub.store_token(store), |_| {}).await;
    eventually!(
        "caught up by pulling",
        agent.sync().2 && agent.sync().0 == hub.head().await,
        agent.sync()
    );
    assert!(!agent.link().push_connected);

    let product = demo_product(0);
    let before = agent.on_hand(product);
    let position = hub.add_stock(product, store, 4).await;
    eventually!(
        "the delivery arrives by pull",
        agent.sync().0 >= position,
        (agent.sync(), agent.link())
    );
    assert_eq!(agent.on_hand(product), before + 4);
    assert!(!agent.link().push_connected, "no stream was open");

    // Uploads do not need the stream; the confirmation comes back by pull.
    agent.sell(product, 1).await;
    eventually!("the sale is confirmed by pull", agent.outbox_depth() == 0, agent.sync());
    assert_eq!(hub.stock(product, store).await.on_hand, before + 3);
    assert_eq!(
        agent.link().breaker,
        "closed",
        "a failing stream alone does not open the breaker: pulls succeed"
    );

    // The stream comes back: the agent uses it again.
    proxy.heal();
    eventually!("the push stream reconnects", agent.link().push_connected, agent.link());
    let position = hub.add_stock(product, store, 1).await;
    eventually!("by push", agent.sync().0 >= position, agent.sync());
    assert_eq!(agent.on_hand(product), before + 4);
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_link_cut_sales_are_kept_the_breaker_opens_and_the_outbox_drains_when_it_returns() {
    let hub = TestHub::spawn().await;
    let proxy = proxy_to(&hub).await;
    let store = demo_store(2);
    let agent = SyncWorker::spawn(&proxy.url(), store, &hub.store_token(store), |_| {}).await;
    until_live(&agent, &hub).await;
    let (coffee, mug) = (demo_product(0), demo_product(2));
    let (coffee_before, mug_before) = (
        hub.stock(coffee, store).await.on_hand,
        hub.stock(mug, store).await.on_hand,
    );

    proxy.set_mode(Mode::Reset);
    eventually!("the stream notices", !agent.link().push_connected, agent.link());
    agent.sell(coffee, 1).await;
    agent.sell(mug, 2).await;
    agent.sell(coffee, 1).await;
    assert_eq!(agent.on_hand(coffee), coffee_before - 2, "the tills keep selling");
    assert_eq!(agent.outbox_depth(), 6);
    eventually!("the breaker opens", agent.link().breaker == "open", agent.link());
    let link = agent.link();
    assert!(!link.online && !link.push_connected, "{link:?}");
    let reason = link.breaker_reason.expect("a reason");
    assert!(reason.contains("unreachable"), "{reason}");
    assert_eq!(
        hub.stock(coffee, store).await.on_hand,
        coffee_before,
        "nothing reached the hub"
    );
    assert_eq!(agent.outbox_depth(), 6);

    // The link comes back; no new sale is needed for the outbox to drain.
    proxy.heal();
    eventually!(
        "the outbox drains and comes back confirmed",
        agent.outbox_depth() == 0 && agent.sync().0 == hub.head().await,
        (agent.outbox_depth(), agent.sync(), agent.link())
    );
    for (product, sold, before) in [(coffee, 2, coffee_before), (mug, 2, mug_before)] {
        let at_hub = hub.stock(product, store).await;
        assert_eq!(at_hub.on_hand, before - sold);
        assert_eq!(agent.on_hand(product), at_hub.on_hand, "both sides agree");
    }
    eventually!(
        "the link is back",
        {
            let link = agent.link();
            link.online && link.push_connected && link.breaker == "closed"
        },
        agent.link()
    );
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_hub_is_in_use_again_within_seconds_not_after_the_long_intervals() {
    let hub = TestHub::spawn().await;
    let proxy = proxy_to(&hub).await;
    let store = demo_store(1);
    // Every interval far longer than the bound below: only the breaker's cheap probes while
    // nothing listens, and the tasks waking when it closes, can meet it.
    let agent = SyncWorker::spawn(&proxy.url(), store, &hub.store_token(store), |c| {
        c.sync.pull_interval_secs = 60;
        c.sync.breaker_open_secs = 60;
        c.sync.retry_max_ms = 60_000;
    })
    .await;
    until_live(&agent, &hub).await;

    proxy.set_mode(Mode::Reset);
    agent.sell(demo_product(0), 1).await;
    eventually!("the breaker opens", agent.link().breaker == "open", agent.link());
    tokio::time::sleep(Duration::from_secs(4)).await; // a few refused probes
    assert_eq!(agent.outbox_depth(), 2);

    proxy.heal();
    let back = std::time::Instant::now();
    eventually!(
        "the sale is confirmed and the stream is back",
        agent.outbox_depth() == 0 && agent.link().push_connected && agent.sync().0 == hub.head().await,
        (agent.outbox_depth(), agent.sync(), agent.link())
    );
    let took = back.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "converged {took:?} after the hub was back"
    );
    assert_eq!(agent.link().breaker_reason, None, "no stale reason once recovered");
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_upload_is_retried_on_a_timer_not_on_the_next_sale() {
    let hub = TestHub::spawn().await;
    let proxy = proxy_to(&hub).await;
    let store = demo_store(0);
    // A breaker that never opens: only the uploader's own retry timer can bring the sale.
    let agent = SyncWorker::spawn(&proxy.url(), store, &hub.store_token(store), |c| {
        c.sync.breaker_failures = 10_000
    })
    .await;
    until_live(&agent, &hub).await;
    let product = demo_product(4);
    let before = hub.stock(product, store).await.on_hand;

    proxy.set_mode(Mode::Reset);
    agent.sell(product, 1).await;
    // Several failed uploads after the last write (retry_max_ms is 1 s).
    let sent = requests(&proxy);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(requests(&proxy), sent, "nothing got through");
    assert_eq!(agent.link().breaker, "closed");
    assert_eq!(agent.outbox_depth(), 2);

    proxy.heal();
    eventually!(
        "the sale reaches the hub with no new write",
        agent.outbox_depth() == 0,
        (agent.sync(), agent.link())
    );
    assert_eq!(hub.stock(product, store).await.on_hand, before - 1);
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_larger_than_the_hubs_body_limit_goes_up_in_smaller_batches() {
    let hub = TestHub::spawn_with(|c| c.http.body_limit_bytes = 4096).await;
    let store = demo_store(1);
    // Ten sales recorded before the agent could sync: twenty events, ~12 KB in one batch.
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStore::open(&dir.path().join(shelfsync_edge::STORE_FILE), store).unwrap();
    local.bootstrap(snapshot(&hub, store).await).await.unwrap();
    let agent = SyncWorker::spawn_on(local, dir.path(), "http://127.0.0.1:9", store, "unused", |_| {});
    let product = demo_product(0);
    let before = agent.on_hand(product);
    for _ in 0..10 {
        agent.sell(product, 1).await;
    }
    agent.stop().await;
    let local = LocalStore::open(&dir.path().join(shelfsync_edge::STORE_FILE), store).unwrap();
    let agent = SyncWorker::spawn_on(local, dir.path(), &hub.url, store, &hub.store_token(store), |c| {
        c.sync.upload_batch = 20
    });
    eventually!(
        "the backlog drains",
        agent.outbox_depth() == 0,
        (agent.outbox_depth(), agent.link())
    );
    assert_eq!(hub.stock(product, store).await.on_hand, before - 10);
    assert_eq!(agent.on_hand(product), before - 10);
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rejected_event_is_quarantined_and_the_events_after_it_still_flow() {
    let hub = TestHub::spawn().await;
    let store = demo_store(0);
    // A catalog with a product the hub does not know, as if it had been deleted there.
    let mut snapshot = snapshot(&hub, store).await;
    let ghost = Product {
        id: ProductId::new_v7(),
        sku: "GHOST-1".into(),
        name: "Not at the hub".into(),
        price_minor: 100,
    };
    snapshot.stock.push(StockLevel {
        product_id: ghost.id,
        store_id: store,
        on_hand: 5,
        reserved: 0,
        available: 5,
        version: 1,
        position: 1,
        allocation: None,
    });
    snapshot.catalog.push(ProductView {
        product: ghost.clone(),
        version: 1,
    });
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStore::open(&dir.path().join(shelfsync_edge::STORE_FILE), store).unwrap();
    local.bootstrap(snapshot).await.unwrap();
    let agent = SyncWorker::spawn_on(local, dir.path(), &hub.url, store, &hub.store_token(store), |_| {});
    until_live(&agent, &hub).await;

    let real = demo_product(3);
    let before = hub.stock(real, store).await.on_hand;
    let rejected = agent.sell(ghost.id, 1).await;
    agent.sell(real, 1).await;
    eventually!(
        "the ghost sale is quarantined and the real one confirmed",
        agent.sync().3 == 2 && agent.outbox_depth() == 0,
        (agent.sync(), agent.outbox_depth())
    );
    let quarantined = agent.local.outbox(vec![OutboxStatus::Quarantined], 10).await.unwrap();
    let mut ids: Vec<_> = quarantined.iter().map(|e| e.event_id).collect();
    ids.sort();
    assert_eq!(ids, rejected.to_vec());
    assert!(
        quarantined
            .iter()
            .all(|e| e.reject_reason.as_deref() == Some("unknown_product")),
        "{quarantined:?}"
    );
    assert_eq!(agent.on_hand(ghost.id), 5, "a rejected event leaves the local state");
    assert_eq!(hub.stock(real, store).await.on_hand, before - 1);
    assert_eq!(agent.on_hand(real), before - 1);
    let link = agent.link();
    assert!(
        link.online && link.breaker == "closed",
        "a rejection is not a link failure: {link:?}"
    );
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_is_reported_and_does_not_spin() {
    let hub = TestHub::spawn().await;
    let proxy = proxy_to(&hub).await;
    let store = demo_store(1);
    let agent = SyncWorker::spawn(&proxy.url(), store, &hub.store_token(store), |c| {
        c.sync.breaker_open_secs = 1
    })
    .await;
    until_live(&agent, &hub).await;

    hub.revoke(store).await;
    agent.sell(demo_product(0), 1).await;
    let refused = "the hub refused this store's token";
    eventually!(
        "the refusal shows in the status",
        {
            let link = agent.link();
            link.breaker == "open"
                && link.breaker_reason.as_deref().is_some_and(|r| r.contains(refused))
                && link.last_error.as_deref().is_some_and(|e| e.contains(refused))
        },
        agent.link()
    );
    assert!(!agent.link().online && !agent.link().push_connected);

    // One probe a second at most while the breaker keeps opening: no hot loop.
    let before = requests(&proxy);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let made = requests(&proxy) - before;
    assert!(made <= 12, "{made} requests in 4 s with a revoked token");
    assert_eq!(agent.outbox_depth(), 2, "the sale waits in the outbox");
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_of_another_major_protocol_version_is_a_clear_error() {
    // Answers everything as a hub of protocol 2.0 would answer a 1.0 agent.
    let app = axum::Router::new().fallback(|| async {
        let problem =
            shelfsync_common::wire::problem::Problem::new(400, "unsupported_protocol", "Bad request", "upgrade");
        let mut response =
            axum::response::IntoResponse::into_response((axum::http::StatusCode::BAD_REQUEST, axum::Json(problem)));
        response
            .headers_mut()
            .insert("x-shelfsync-protocol", axum::http::HeaderValue::from_static("2.0"));
        response
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let store = demo_store(0);
    let agent = SyncWorker::spawn(&url, store, "any-token", |_| {}).await;
    eventually!(
        "the breaker opens on the version mismatch",
        agent.link().breaker == "open"
            && agent
                .link()
                .breaker_reason
                .as_deref()
                .is_some_and(|r| r.contains("sync protocol \"2.0\"")),
        agent.link()
    );
    let (_, _, bootstrapped, _) = agent.sync();
    assert!(!bootstrapped);
    agent.stop().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_agent_syncs_with_the_hub_and_stops_promptly() {
    let hub = TestHub::spawn().await;
    let store = demo_store(2);
    let dir = tempfile::tempdir().unwrap();
    let mut config = sync_test_config(dir.path(), store, &hub.url, &hub.store_token(store));
    config.terminal_key = Some("sync-test-terminal-key-0123".into());
    config.manager_key = Some("sync-test-manager-key-01234".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("http://{}", listener.local_addr().unwrap());
    config.listen = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(shelfsync_edge::run(config, listener, async {
        let _ = stopped.await;
    }));

    let head = hub.head().await;
    eventually!(
        "the agent is connected and caught up",
        {
            let entry = fleet_entry(&hub, store).await;
            entry["push_connected"] == true && entry["heartbeat"]["cursor"] == head
        },
        fleet_entry(&hub, store).await
    );
    let status: Value = reqwest::get(format!("{agent_url}/v1/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["bootstrapped"], true, "{status}");
    assert_eq!(status["cursor"], head, "{status}");

    stop.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent stops promptly");
    stopped.unwrap().expect("a clean stop");
    eventually!(
        "the hub sees the stream close",
        fleet_entry(&hub, store).await["push_connected"] == false
    );
    hub.stop().await;
}
