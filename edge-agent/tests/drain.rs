//! A store that comes back with a large outbox drains it without the hub dropping its push
//! stream. The agent records a backlog offline (bootstrapped from the hub, no sync worker
//! running), then its sync worker starts against the hub: it opens the push stream once,
//! uploads the backlog, and its own events come back on that stream to be confirmed while
//! the uploads go on. The hub drops a stream whose agent takes nothing for 5 s
//! (`shelfsync_hub_sse_dropped_slow_total`); the agent counts every stream opened after
//! its first (`shelfsync_edge_sync_stream_reconnects_total`). Both must stay 0. (Both
//! counters are process-wide, so this binary holds this one test.)

#[macro_use]
mod sync_support;

use shelfsync_edge::store::LocalStore;
use shelfsync_edge::testing::record_backlog;
use sync_support::*;

/// Events recorded offline (a debug build confirms them in a few seconds).
const BACKLOG: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_outbox_drains_while_the_push_stream_stays_up() {
    let hub = TestHub::spawn().await;
    let store = demo_store(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let local = LocalStore::open(&dir.path().join(shelfsync_edge::STORE_FILE), store).expect("open");
    local.bootstrap(snapshot(&hub, store).await).await.expect("bootstrap");
    record_backlog(&local, store, &demo_products(), BACKLOG).await;
    assert_eq!(local.read(|v| v.outbox().0), BACKLOG as u64);

    let agent = SyncWorker::spawn_on(local, dir.path(), &hub.url, store, &hub.store_token(store), |_| {});
    eventually!(
        "the backlog is uploaded and comes back confirmed",
        agent.outbox_depth() == 0 && agent.sync().0 == hub.head().await,
        (agent.outbox_depth(), agent.sync(), agent.link())
    );
    assert!(agent.link().push_connected, "{:?}", agent.link());
    assert_eq!(hub.metric("shelfsync_hub_sse_dropped_slow_total").await, 0.0);
    assert_eq!(hub.metric("shelfsync_edge_sync_stream_reconnects_total").await, 0.0);
    let confirmed = hub.metric("shelfsync_edge_sync_events_applied_total").await;
    assert!(confirmed >= BACKLOG as f64, "applied {confirmed}");
    agent.stop().await;
    hub.stop().await;
}
