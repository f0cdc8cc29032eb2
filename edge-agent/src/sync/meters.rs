//! The sync worker's Prometheus metrics (rendered by the agent's `/metrics`), in one place
//! so their names and help texts stay together.

use crate::store::LocalStore;
use time::OffsetDateTime;

/// Events uploaded, by the hub's answer (`appended`, `duplicate`, `rejected`).
pub const UPLOADED_EVENTS: &str = "shelfsync_edge_sync_uploaded_events_total";
/// Upload calls that failed (the batch stays in the outbox and is sent again).
pub const UPLOAD_FAILURES: &str = "shelfsync_edge_sync_upload_failures_total";
/// Hub events applied to the local store, by channel (`push`, `pull`).
pub const EVENTS_APPLIED: &str = "shelfsync_edge_sync_events_applied_total";
/// Pull calls, by result (`ok`, `failed`).
pub const PULLS: &str = "shelfsync_edge_sync_pulls_total";
/// Push stream connections opened after the first one.
pub const STREAM_RECONNECTS: &str = "shelfsync_edge_sync_stream_reconnects_total";
/// The hub-link breaker: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "shelfsync_edge_breaker_state";
/// Events recorded here and not yet confirmed by the hub.
pub const OUTBOX_DEPTH: &str = "shelfsync_edge_outbox_depth";
/// Age of the oldest of them, in seconds (0 when there is none).
pub const OUTBOX_OLDEST_AGE: &str = "shelfsync_edge_outbox_oldest_age_seconds";
/// Events the hub rejected, held for an operator.
pub const QUARANTINED: &str = "shelfsync_edge_quarantined_events";
/// The hub's head minus this agent's cursor, as last seen.
pub const CURSOR_LAG: &str = "shelfsync_edge_sync_cursor_lag";
/// Counter: re-syncs after the hub was restored from an older backup.
pub const RESYNCS: &str = "shelfsync_edge_sync_resyncs_total";
/// Hub events this agent could not read and skipped (the cursor moved past them).
pub const UNREADABLE_EVENTS: &str = "shelfsync_edge_sync_unreadable_events_total";

/// Registers the help texts.
pub fn describe() {
    metrics::describe_counter!(UPLOADED_EVENTS, "Events uploaded to the hub, by the hub's answer");
    metrics::describe_counter!(UPLOAD_FAILURES, "Upload calls to the hub that failed (retried)");
    metrics::describe_counter!(EVENTS_APPLIED, "Hub events applied to the local store, by channel");
    metrics::describe_counter!(PULLS, "Catch-up pulls from the hub, by result");
    metrics::describe_counter!(STREAM_RECONNECTS, "Push stream connections opened after the first one");
    metrics::describe_gauge!(BREAKER_STATE, "Hub-link circuit breaker: 0 closed, 1 half-open, 2 open");
    metrics::describe_gauge!(OUTBOX_DEPTH, "Local events not yet confirmed by the hub");
    metrics::describe_gauge!(
        OUTBOX_OLDEST_AGE,
        "Age in seconds of the oldest unconfirmed local event"
    );
    metrics::describe_gauge!(QUARANTINED, "Local events the hub rejected, waiting for an operator");
    metrics::describe_gauge!(CURSOR_LAG, "Hub head minus the agent's cursor, as last seen");
    metrics::describe_counter!(
        RESYNCS,
        "Re-syncs from the hub's snapshot after the hub was restored from an older backup"
    );
    metrics::describe_counter!(
        UNREADABLE_EVENTS,
        "Hub events this agent could not read and skipped (an alarm: see the agent's log)"
    );
}

/// One hub event this agent cannot read: skipped, so that one bad event never stops the
/// store from following the hub, but loudly (an error in the log, a counter to alert on).
pub fn skip_unreadable(position: Option<u64>, error: &str) {
    metrics::counter!(UNREADABLE_EVENTS).increment(1);
    tracing::error!(
        ?position,
        %error,
        "a hub event cannot be read by this agent; skipped (is the agent older than the hub?)"
    );
}

/// Sets the gauges that describe the local store's sync state.
pub fn record_store(local: &LocalStore) {
    let (depth, oldest, quarantined, lag) = local.read(|view| {
        let (depth, oldest) = view.outbox();
        (
            depth,
            oldest,
            view.quarantined,
            view.sync.hub_head.saturating_sub(view.sync.cursor),
        )
    });
    metrics::gauge!(OUTBOX_DEPTH).set(depth as f64);
    metrics::gauge!(OUTBOX_OLDEST_AGE).set(oldest.map_or(0, age_secs) as f64);
    metrics::gauge!(QUARANTINED).set(quarantined as f64);
    metrics::gauge!(CURSOR_LAG).set(lag as f64);
}

/// Whole seconds since `at` (0 for a time in the future).
pub fn age_secs(at: OffsetDateTime) -> u64 {
    (OffsetDateTime::now_utc() - at).whole_seconds().max(0) as u64
}
