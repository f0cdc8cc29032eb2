//! The store manager's file commands against a real hub in-process: `resync` re-seeds the
//! confirmed state from the hub's snapshot and keeps every pending sale (which the agent
//! uploads once it runs again), `verify` compares only at one position, and `backup`
//! copies the store while it is open.

#[macro_use]
mod sync_support;

use shelfsync_edge::offline::{self, Verdict};
use shelfsync_edge::store::LocalStore;
use sync_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resync_keeps_pending_sales_and_they_are_uploaded_afterwards() {
    let hub = TestHub::spawn().await;
    let store = demo_store(0);
    let token = hub.store_token(store);
    let (product, other) = (demo_product(1), demo_product(2));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(shelfsync_edge::STORE_FILE);

    // The agent bootstraps and follows the hub; then it runs cut off from the hub (a dead
    // address) while the till sells: two pending events.
    let agent = SyncWorker::spawn_on(
        LocalStore::open(&path, store).unwrap(),
        dir.path(),
        &hub.url,
        store,
        &token,
        |_| {},
    );
    eventually!(
        "bootstrapped and caught up",
        agent.sync().2 && agent.sync().0 == hub.head().await,
        agent.sync()
    );
    agent.stop().await;
    let offline_agent = SyncWorker::spawn_on(
        LocalStore::open(&path, store).unwrap(),
        dir.path(),
        "http://127.0.0.1:9",
        store,
        &token,
        |_| {},
    );
    let pending = offline_agent.sell(product, 2).await;
    assert_eq!(offline_agent.outbox_depth(), 2);
    offline_agent.stop().await;

    // Meanwhile the hub moved on: a delivery this store has not seen.
    let at_hub = hub.stock(other, store).await.on_hand;
    hub.add_stock(other, store, 5).await;
    eventually!(
        "the hub's read model has the delivery",
        hub.stock(other, store).await.on_hand == at_hub + 5
    );
    let config = sync_test_config(dir.path(), store, &hub.url, &token);
    assert!(
        matches!(offline::verify(&config).await.unwrap(), Verdict::NotComparable { .. }),
        "the store is behind the hub: figures at two positions are not compared"
    );

    // Agent stopped: resync. The new delivery is in the confirmed state, the pending sale
    // is still on top.
    let said = offline::resync(&config, "http://127.0.0.1:9").await.unwrap();
    assert!(said.contains("2 unconfirmed events kept"), "{said}");
    let local = LocalStore::open(&path, store).unwrap();
    assert_eq!(local.read(|view| view.outbox().0), 2, "the pending sale is kept");
    let stock = |product| local.read(|view| view.stock(product).map(|s| s.on_hand));
    assert_eq!(stock(other), Some(at_hub + 5), "re-seeded from the hub's snapshot");
    let product_at_hub = hub.stock(product, store).await.on_hand;
    assert_eq!(
        stock(product),
        Some(product_at_hub - 2),
        "the hub's figure with the pending sale on top"
    );
    let resynced = local
        .read(|view| view.sync.resynced.clone())
        .expect("the re-sync is recorded");
    assert_eq!(
        (resynced.reason.as_str(), resynced.position),
        ("operator", hub.head().await)
    );
    local.close().await;
    assert_eq!(offline::verify(&config).await.unwrap(), Verdict::Same);

    // The agent runs again: the pending sale is uploaded, and comes back confirmed.
    let agent = SyncWorker::spawn_on(
        LocalStore::open(&path, store).unwrap(),
        dir.path(),
        &hub.url,
        store,
        &token,
        |_| {},
    );
    eventually!(
        "the pending sale reaches the hub and comes back",
        agent.outbox_depth() == 0 && hub.stock(product, store).await.on_hand == product_at_hub - 2,
        agent.outbox_depth()
    );
    assert_eq!(agent.on_hand(product), product_at_hub - 2);
    let outbox = agent
        .local
        .outbox(vec![shelfsync_common::wire::edge::OutboxStatus::Confirmed], 10)
        .await
        .unwrap();
    assert!(
        pending.iter().all(|id| outbox.iter().any(|e| e.event_id == *id)),
        "both events confirmed"
    );
    agent.stop().await;
    assert_eq!(offline::verify(&config).await.unwrap(), Verdict::Same);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_refuses_while_the_agent_answers_and_backup_copies_an_open_store() {
    let hub = TestHub::spawn().await;
    let store = demo_store(1);
    let token = hub.store_token(store);
    let dir = tempfile::tempdir().unwrap();
    let config = sync_test_config(dir.path(), store, &hub.url, &token);
    // Anything answering at the agent's URL counts as the agent running: here, the hub.
    let refused = offline::resync(&config, &hub.url).await.unwrap_err().to_string();
    assert!(refused.contains("stop it first"), "{refused}");

    let path = dir.path().join(shelfsync_edge::STORE_FILE);
    let agent = SyncWorker::spawn_on(
        LocalStore::open(&path, store).unwrap(),
        dir.path(),
        &hub.url,
        store,
        &token,
        |_| {},
    );
    eventually!("bootstrapped", agent.sync().2, agent.sync());
    agent.sell(demo_product(0), 1).await;
    let copy = offline::backup(&config, &dir.path().join("backups")).unwrap();
    let copied = LocalStore::open(&copy, store).unwrap();
    assert_eq!(
        copied
            .outbox(
                vec![
                    shelfsync_common::wire::edge::OutboxStatus::Pending,
                    shelfsync_common::wire::edge::OutboxStatus::Acked,
                    shelfsync_common::wire::edge::OutboxStatus::Confirmed
                ],
                10
            )
            .await
            .unwrap()
            .len(),
        2,
        "the copy holds the sale recorded while the store was open"
    );
    assert!(copied.read(|view| view.sync.bootstrapped));
    copied.close().await;
    agent.stop().await;
}
