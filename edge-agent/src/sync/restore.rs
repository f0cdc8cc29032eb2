//! A hub restored from an older backup: noticing it, and re-syncing this store.
//!
//! A restored hub has lost the positions after its backup, and may since have filled them
//! with other events. A store that had followed it further would otherwise skip what
//! lands there now, and the hub would never again hold the store's own events recorded
//! after the backup (the store thinks them confirmed or acknowledged). So, each time the
//! follower (re)connects, [`diverged`] checks that the hub's log still holds what this
//! store knows about it (`docs/sync-protocol.md`, "Cursor ahead of the hub"); a pull or
//! stream answered `409 cursor_ahead` says the same. Then [`recover`] sends every own
//! event the hub answered for again (the hub dedupes by event id: those it still has are
//! `duplicate`, the lost ones are appended anew), takes a new snapshot, and re-seeds the
//! confirmed state from it keeping every unconfirmed event. The uploader is held off
//! meanwhile ([`super::Ctx::upload_gate`]): an upload answered between the snapshot and the
//! re-seed would be counted twice.

use super::hub::{CallError, Hub, HubError};
use super::{or_stop, Ctx, SyncError};
use crate::store::LocalStore;
use shelfsync_common::wire::sync::{PullResponse, Resynced, UploadOutcome, CURSOR_AHEAD};
use shelfsync_common::EventId;
use tokio::sync::watch;

/// Most pages one check reads to get past the cursor (each scans up to 20,000 positions).
const MAX_CHECK_PAGES: usize = 16;

/// Whether `error` is the hub's `409 cursor_ahead`.
pub(super) fn is_cursor_ahead(error: &CallError) -> bool {
    matches!(error, CallError::Hub(HubError::Status { status: 409, code, .. }) if code == CURSOR_AHEAD)
}

/// What [`diverged`] found.
pub(super) enum Check {
    /// The hub's log holds what this store saw.
    Consistent,
    /// It does not, and why.
    Diverged(String),
    /// A pull failed: no verdict (the next round checks again).
    Unknown,
}

/// Why the hub's log no longer matches what this store saw, if it does not. Checked: the
/// last position this store knows the event of (the last event applied here, or the own
/// event the hub acknowledged highest) still holds that event, and no event this store
/// may see has appeared between it and the cursor. A failed pull is not a verdict (`None`;
/// the next round checks again).
pub(super) async fn diverged(ctx: &Ctx) -> Result<Check, SyncError> {
    Ok(match find_divergence(ctx).await? {
        Some(Some(reason)) => Check::Diverged(reason),
        Some(None) => Check::Consistent,
        None => Check::Unknown,
    })
}

/// [`diverged`]: `None` when a pull failed, else the reason if any.
async fn find_divergence(ctx: &Ctx) -> Result<Option<Option<String>>, SyncError> {
    let (cursor, anchor) = ctx.local.read(|view| (view.sync.cursor, view.sync.anchor));
    let ack = ctx.local.latest_ack().await?;
    let head_behind = |head: String| {
        Some(Some(format!(
            "the hub's head ({head}) is behind this store's cursor ({cursor})"
        )))
    };
    let Some((position, event_id)) = anchor.into_iter().chain(ack).max_by_key(|(at, _)| *at) else {
        // No event known by position (a store bootstrapped or re-synced since, or one
        // upgraded from before the anchor): only the head can tell.
        return Ok(match check_pull(ctx, cursor, 1).await {
            Some(Err(head)) => head_behind(head),
            Some(Ok(page)) if page.head < cursor => head_behind(page.head.to_string()),
            Some(Ok(_)) => Some(None),
            None => None,
        });
    };
    let mut page = match check_pull(ctx, position.saturating_sub(1), 2).await {
        None => return Ok(None),
        Some(Ok(page)) => page,
        Some(Err(head)) => {
            let reason = format!("the hub's head ({head}) is behind position {position}, which this store saw");
            return Ok(Some(Some(reason)));
        }
    };
    match page.events.first() {
        Some(first) if (first.position, first.event_id) == (position, event_id) => {}
        Some(first) => {
            return Ok(Some(Some(held_instead(
                position,
                event_id,
                first.position,
                first.event_id,
            ))));
        }
        None => {
            let reason = format!(
                "the hub's log no longer holds position {position} (its head is {})",
                page.head
            );
            return Ok(Some(Some(reason)));
        }
    }
    let mut next = page.events.get(1).map(|event| event.position);
    for _ in 0..MAX_CHECK_PAGES {
        if next.is_some() || page.next_cursor >= cursor || page.next_cursor >= page.head {
            break;
        }
        page = match check_pull(ctx, page.next_cursor, 1).await {
            Some(Ok(page)) => page,
            Some(Err(head)) => return Ok(head_behind(head)),
            None => return Ok(None),
        };
        next = page.events.first().map(|event| event.position);
    }
    Ok(Some(match next {
        Some(at) if at <= cursor => Some(format!(
            "an event this store may see is now at position {at}, at or below its cursor ({cursor}), where the hub \
             had none before"
        )),
        None if page.next_cursor >= page.head && page.head < cursor => Some(format!(
            "the hub's head ({}) is behind this store's cursor ({cursor})",
            page.head
        )),
        _ => None,
    }))
}

fn held_instead(position: u64, ours: EventId, at: u64, theirs: EventId) -> String {
    if at == position {
        format!("position {position} holds event {theirs} in the hub's log, not {ours} as before")
    } else {
        format!("event {ours} is no longer at position {position} in the hub's log (the next one is at {at})")
    }
}

/// One pull for [`diverged`]: the page, `Err(head)` on `409 cursor_ahead`, `None` when the
/// pull failed otherwise.
async fn check_pull(ctx: &Ctx, after: u64, limit: usize) -> Option<Result<PullResponse, String>> {
    match ctx.hub.pull(after, limit).await {
        Ok(page) => Some(Ok(page)),
        Err(error) if is_cursor_ahead(&error) => Some(Err(head_of(&error))),
        Err(error) => {
            tracing::debug!(%error, "the restore check could not pull; checking again next round");
            None
        }
    }
}

/// The head a `cursor_ahead` problem names (in its detail), for the log.
fn head_of(error: &CallError) -> String {
    match error {
        CallError::Hub(HubError::Status { detail, .. }) => detail
            .split("head (")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or("?")
            .to_owned(),
        _ => "?".to_owned(),
    }
}

/// Re-syncs this store after [`diverged`] (or `409 cursor_ahead`) said why, holding the
/// uploader off meanwhile. Returns whether it finished (a failed call leaves the store as
/// it was; the next round notices again and starts over, which is safe: uploads are
/// idempotent by event id).
pub(super) async fn recover(ctx: &Ctx, reason: &str, stopping: &mut watch::Receiver<bool>) -> Result<bool, SyncError> {
    let _uploads_held = ctx.upload_gate.lock().await;
    tracing::warn!(
        %reason,
        "the hub's log no longer holds what this store saw: the hub was restored from an older backup. Sending this \
         store's events again and taking a new snapshot; the tills keep selling meanwhile"
    );
    let batch = ctx.config.sync.upload_batch;
    let done = resync(&ctx.local, &ctx.hub, batch, HUB_RESTORED, stopping).await?;
    if let Some(resynced) = &done {
        metrics::counter!(super::meters::RESYNCS).increment(1);
        tracing::warn!(
            reuploaded = resynced.reuploaded,
            position = resynced.position,
            "re-synced after the hub was restored: {} of this store's events were missing at the hub and were \
             uploaded again; following from the snapshot's position",
            resynced.reuploaded
        );
    }
    Ok(done.is_some())
}

/// Why a re-sync ran: the agent noticed the hub was restored.
pub const HUB_RESTORED: &str = "hub_restored";
/// Why a re-sync ran: an operator ran `shelfsync-edge resync`.
pub const OPERATOR: &str = "operator";

/// Sends every own event the hub answered for again (in batches of `batch`), then takes a
/// new snapshot and re-seeds the store from it, keeping every unconfirmed event. The
/// caller makes sure nothing else uploads meanwhile (the sync worker's gate, or the agent
/// stopped). `None` when a call failed or `stopping` came first: the store is as it was.
pub async fn resync(
    local: &LocalStore,
    hub: &Hub,
    batch: usize,
    reason: &str,
    stopping: &mut watch::Receiver<bool>,
) -> Result<Option<Resynced>, SyncError> {
    let (mut after_seq, mut sent, mut appended) = (0u64, 0u64, 0u64);
    let mut positions = Vec::new();
    loop {
        let rows = local.answered_batch(after_seq, batch.max(1)).await?;
        let Some(&(_, last_seq)) = rows.last() else {
            break;
        };
        after_seq = last_seq;
        let events: Vec<_> = rows.into_iter().map(|(event, _)| event).collect();
        sent += events.len() as u64;
        let response = match or_stop(stopping, hub.upload(events)).await {
            None => return Ok(None),
            Some(Ok(response)) => response,
            Some(Err(error)) => {
                tracing::warn!(%error, sent, "re-sync: sending this store's events again failed; nothing changed");
                return Ok(None);
            }
        };
        for result in response.results {
            match result.outcome {
                UploadOutcome::Appended { position, .. } => {
                    appended += 1;
                    positions.push((result.event_id, position));
                }
                UploadOutcome::Duplicate { position, .. } => positions.push((result.event_id, position)),
                UploadOutcome::Rejected { reason, detail } => tracing::error!(
                    event_id = %result.event_id, %reason, %detail,
                    "re-sync: the hub refused an event it had recorded before; it stays in this store's history \
                     but the hub lacks it (see docs/operations.md, When the hub was restored)"
                ),
            }
        }
    }
    let store_id = local.read(|view| view.store_id);
    let snapshot = match or_stop(stopping, hub.snapshot()).await {
        None => return Ok(None),
        Some(Ok(snapshot)) if snapshot.store_id == store_id => snapshot,
        Some(Ok(snapshot)) => {
            tracing::error!(other = %snapshot.store_id, "re-sync: the hub sent another store's snapshot; not taken");
            return Ok(None);
        }
        Some(Err(error)) => {
            tracing::warn!(%error, "re-sync: the snapshot could not be fetched; nothing changed");
            return Ok(None);
        }
    };
    local.resync(snapshot, positions, appended, reason).await?;
    tracing::info!(
        sent,
        reuploaded = appended,
        "re-sync: own events sent again and the snapshot taken in"
    );
    Ok(local.read(|view| view.sync.resynced.clone()))
}
