//! What the hub knows about its agents right now: when each store was last heard from,
//! its last heartbeat, how many push streams it has open; and the revocation signal that
//! ends a store's open streams the moment its token is revoked.
//!
//! This is in-memory presence, rebuilt from the agents' next requests after a restart;
//! durable per-store figures (oversells, rejected uploads) live in the event store.

use shelfsync_common::wire::sync::Heartbeat;
use shelfsync_common::StoreId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use time::OffsetDateTime;
use tokio::sync::broadcast;

/// One store's presence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Last request from its agent.
    pub last_seen: Option<OffsetDateTime>,
    /// Last heartbeat.
    pub heartbeat: Option<Heartbeat>,
    /// When it arrived.
    pub heartbeat_at: Option<OffsetDateTime>,
    /// Open push streams.
    pub push_streams: u32,
}

impl Presence {
    /// Joins what another hub knows of the same store: the later contact and heartbeat,
    /// and the push streams open on both.
    pub fn merge(&mut self, other: Presence) {
        self.last_seen = self.last_seen.max(other.last_seen);
        if other.heartbeat_at > self.heartbeat_at {
            self.heartbeat = other.heartbeat;
            self.heartbeat_at = other.heartbeat_at;
        }
        self.push_streams = self.push_streams.saturating_add(other.push_streams);
    }
}

/// Presence of every store, and the revocation signal.
pub struct Fleet {
    stores: Mutex<HashMap<StoreId, Presence>>,
    revocations: broadcast::Sender<(StoreId, uuid::Uuid)>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            stores: Mutex::new(HashMap::new()),
            revocations: broadcast::channel(64).0,
        }
    }
}

impl Fleet {
    fn stores(&self) -> MutexGuard<'_, HashMap<StoreId, Presence>> {
        self.stores.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a request from `store`'s agent.
    pub fn seen(&self, store: StoreId) {
        self.stores().entry(store).or_default().last_seen = Some(OffsetDateTime::now_utc());
    }

    /// Records a heartbeat.
    pub fn heartbeat(&self, store: StoreId, heartbeat: Heartbeat) {
        let mut stores = self.stores();
        let presence = stores.entry(store).or_default();
        let now = OffsetDateTime::now_utc();
        presence.last_seen = Some(now);
        presence.heartbeat = Some(heartbeat);
        presence.heartbeat_at = Some(now);
    }

    /// Counts an open push stream until the guard drops, unless `store` already has
    /// `limit` open: then `Err` with how many it has.
    pub fn push_opened(self: &Arc<Self>, store: StoreId, limit: u32) -> Result<PushGuard, u32> {
        let mut stores = self.stores();
        let presence = stores.entry(store).or_default();
        if presence.push_streams >= limit {
            return Err(presence.push_streams);
        }
        presence.push_streams += 1;
        metrics::gauge!("shelfsync_hub_sse_connections").increment(1.0);
        Ok(PushGuard {
            fleet: self.clone(),
            store,
        })
    }

    /// A store's presence.
    pub fn presence(&self, store: StoreId) -> Presence {
        self.stores().get(&store).cloned().unwrap_or_default()
    }

    /// Every store this hub has heard from.
    pub fn all(&self) -> Vec<(StoreId, Presence)> {
        self.stores()
            .iter()
            .map(|(store, presence)| (*store, presence.clone()))
            .collect()
    }

    /// Tells every open stream of `store` opened with `token` to end now.
    pub fn revoke(&self, store: StoreId, token: uuid::Uuid) {
        let _ = self.revocations.send((store, token));
    }

    /// Revocations (store, token id), for open streams to watch.
    pub fn revocations(&self) -> broadcast::Receiver<(StoreId, uuid::Uuid)> {
        self.revocations.subscribe()
    }
}

/// Ends this hub's push streams of every store another hub revoked (several hubs on one
/// database), until the store closes.
pub async fn end_streams_revoked_elsewhere(fleet: Arc<Fleet>, mut revoked: broadcast::Receiver<(StoreId, uuid::Uuid)>) {
    loop {
        match revoked.recv().await {
            Ok((store, token)) => fleet.revoke(store, token),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "revocation notices missed; those streams end when they next reconnect"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Holds one open push stream in the count.
pub struct PushGuard {
    fleet: Arc<Fleet>,
    store: StoreId,
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        if let Some(presence) = self.fleet.stores().get_mut(&self.store) {
            presence.push_streams = presence.push_streams.saturating_sub(1);
        }
        metrics::gauge!("shelfsync_hub_sse_connections").decrement(1.0);
    }
}
