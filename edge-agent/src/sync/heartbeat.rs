//! Heartbeats: every `sync.heartbeat_interval_secs`, tell the hub's fleet view how this
//! agent is doing (version, cursor, outbox depth and oldest age, breaker, quarantined).
//! The answer carries the hub's head, which the status page shows. A heartbeat the
//! breaker refuses is skipped, not queued.

use super::hub::CallError;
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
    loop {
        tokio::select! {
            () = stopped(&mut stopping) => return Ok(()),
            _ = ticks.tick() => {}
        }
        meters::record_store(&ctx.local);
        let beat = heartbeat(&ctx);
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
                    tracing::error!(
                        cursor,
                        head = ack.head,
                        "the hub's head is behind this agent's cursor: the hub was restored from an older backup \
                         or this agent belongs to another hub; this agent must be bootstrapped again (give it a new \
                         data directory; an operator should first check its outbox)"
                    );
                }
                if ack.head > ctx.local.read(|view| view.sync.hub_head) {
                    // Only the head: the cursor moves with the events themselves.
                    ctx.local.apply_hub(Vec::new(), 0, ack.head).await?;
                    meters::record_store(&ctx.local);
                }
            }
            Err(CallError::Open { .. }) => tracing::debug!("heartbeat skipped: the hub link is open"),
            Err(CallError::Hub(error)) => tracing::warn!(%error, "heartbeat failed"),
        }
    }
}

/// What this agent reports now.
fn heartbeat(ctx: &Ctx) -> Heartbeat {
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
        }
    })
}
