//! Heartbeats: every `sync.heartbeat_interval_secs`, tell the hub's fleet view how this
//! agent is doing (version, cursor, outbox depth and oldest age, breaker, quarantined).
//! The answer carries the hub's head, which the status page shows. A heartbeat the
//! breaker refuses is skipped, not queued.

use super::hub::{CallError, HubError};
use super::{meters, or_stop, stopped, Ctx, SyncError};
use shelfsync_common::wire::sync::Heartbeat;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// Runs until `stopping`.
pub(super) async fn run(ctx: Arc<Ctx>, mut stopping: watch::Receiver<bool>) -> Result<(), SyncError> {
    let mut ticks = tokio::time::interval(Duration::from_secs(ctx.config.sync.heartbeat_interval_secs));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut behind = 0u32;
    // A hub older than the heartbeat's `resynced` refuses it: then it is left out.
    let mut with_resync = true;
    loop {
        tokio::select! {
            () = stopped(&mut stopping) => return Ok(()),
            _ = ticks.tick() => {}
        }
        meters::record_store(&ctx.local);
        let beat = heartbeat(&ctx, with_resync);
        let cursor = beat.cursor;
        let Some(sent) = or_stop(&mut stopping, ctx.hub.heartbeat(&beat)).await else {
            return Ok(());
        };
        match sent {
            Ok(ack) => {
                tracing::debug!(cursor, head = ack.head, "heartbeat");
                // Twice in a row: once could be a race between a commit and its publication.
                behind = if ack.head < cursor { behind + 1 } else { 0 };
                if behind == 2 {
                    tracing::warn!(
                        cursor,
                        head = ack.head,
                        "the hub's head is behind this agent's cursor: the hub was restored from an older backup; \
                         the follower re-syncs this store when it next reaches the hub"
                    );
                }
                if ack.head > ctx.local.read(|view| view.sync.hub_head) {
                    // Only the head: the cursor moves with the events themselves.
                    ctx.local.apply_hub(Vec::new(), 0, ack.head).await?;
                    meters::record_store(&ctx.local);
                }
            }
            Err(CallError::Open { .. }) => tracing::debug!("heartbeat skipped: the hub link is open"),
            Err(CallError::Hub(HubError::Status { status: 422, .. })) if beat.resynced.is_some() => {
                tracing::info!("the hub does not take the re-sync report in heartbeats (an older hub); leaving it out");
                with_resync = false;
            }
            Err(CallError::Hub(error)) => tracing::warn!(%error, "heartbeat failed"),
        }
    }
}

/// What this agent reports now.
fn heartbeat(ctx: &Ctx, with_resync: bool) -> Heartbeat {
    let breaker_state = ctx.hub.breaker_state().as_str().to_owned();
    ctx.local.read(|view| {
        let (outbox_depth, oldest) = view.outbox();
        Heartbeat {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            cursor: view.sync.cursor,
            outbox_depth,
            oldest_pending_age_secs: oldest.map(meters::age_secs),
            breaker_state,
            quarantined: view.quarantined,
            resynced: view.sync.resynced.clone().filter(|_| with_resync),
        }
    })
}
