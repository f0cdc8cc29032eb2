//! What a hub does for the other hubs of its PostgreSQL database besides writing the log:
//! it shares its agents' presence every few seconds, so that the fleet view of any hub
//! shows every agent whichever hub it talks to (see [`crate::fleet::Presence::merge`]).

use crate::fleet::Fleet;
use crate::store::EventStore;
use std::sync::Arc;

/// How often a hub sharing its database shares its agents' presence.
const SHARE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Shares this hub's presence with the other hubs of its database every few seconds,
/// until `stop` (a hub whose rows go stale drops out of the others' fleet view).
pub async fn share_presence(fleet: Arc<Fleet>, log: EventStore, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SHARE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(error) = log.share_presence(&fleet.all()).await {
            tracing::warn!(%error, "sharing the agents' presence with the other hubs failed; retrying");
        }
    }
}
