//! Support of the sync tests: a real hub in-process from the hub's test kit
//! ([`shelfsync_hub::testing::TestHub`]), the fault proxy from common's
//! ([`shelfsync_common::testing::proxy::FaultProxy`]) to cut and restore the link or refuse
//! the push stream, and the sync worker from the agent's ([`shelfsync_edge::testing::SyncWorker`]).
//! Everything listens on 127.0.0.1.

#![allow(dead_code, unused_imports)]

pub use shelfsync_common::testing::proxy::{FaultProxy, Mode};
use shelfsync_common::wire::sync::SnapshotResponse;
use shelfsync_common::{ProductId, StoreId};
pub use shelfsync_edge::testing::{sync_test_config, SyncWorker};
pub use shelfsync_hub::testing::{demo_product, demo_store, TestHub};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// The request that opens the push stream.
pub const PUSH_STREAM: &str = "GET /v1/sync/stream";

/// Polls `$check` (an expression that may `.await`) until it is true; panics after
/// [`WAIT`] with `$what` and the value of `$context`.
macro_rules! eventually {
    ($what:expr, $check:expr) => {
        eventually!($what, $check, "")
    };
    ($what:expr, $check:expr, $context:expr) => {{
        let deadline = tokio::time::Instant::now() + $crate::sync_support::WAIT;
        loop {
            if $check {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting until {}: {:?}", $what, $context);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }};
}

// ---------------------------------------------------------------------------------------
// The hub, as these tests use it.

/// Every demo product.
pub fn demo_products() -> Vec<ProductId> {
    shelfsync_hub::seed::products().into_iter().map(|p| p.id).collect()
}

/// The fleet view's entry of `store`.
pub async fn fleet_entry(hub: &TestHub, store: StoreId) -> serde_json::Value {
    let fleet = serde_json::to_value(hub.fleet().await).expect("fleet as JSON");
    fleet["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .find(|s| s["id"] == serde_json::json!(store))
        .cloned()
        .expect("in the fleet")
}

/// `store`'s snapshot, fetched as its agent would.
pub async fn snapshot(hub: &TestHub, store: StoreId) -> SnapshotResponse {
    hub.agent(store, hub.store_token(store)).snapshot().await
}

/// A proxy in front of `hub`, passing everything.
pub async fn proxy_to(hub: &TestHub) -> FaultProxy {
    FaultProxy::start("agent", hub.addr()).await
}

/// HTTP requests `proxy` has relayed so far.
pub fn requests(proxy: &FaultProxy) -> u64 {
    proxy.counters().requests.load(Ordering::SeqCst)
}
