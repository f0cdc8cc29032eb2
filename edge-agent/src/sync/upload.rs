//! The uploader: sends the outbox to `POST /v1/sync/upload` in order, in batches of
//! `sync.upload_batch`, and records the hub's answer per event (appended or duplicate:
//! acknowledged; rejected: quarantined, which never holds back the events behind it).
//!
//! It wakes on every local write; after a failed upload it retries on its own timer
//! (jittered exponential back-off, cut short when the breaker closes again), never
//! waiting for the next sale. While the breaker is open it waits for the probe.

use super::hub::{CallError, HubError};
use super::{is_stopping, meters, or_stop, stopped, Ctx, SyncError};
use shelfsync_common::wire::sync::UploadOutcome;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs until `stopping`.
pub(super) async fn run(ctx: Arc<Ctx>, mut stopping: watch::Receiver<bool>) -> Result<(), SyncError> {
    // The snapshot must come first: an event uploaded before it would be in the snapshot
    // and in the pending set at once.
    if !ctx.wait_bootstrapped(&mut stopping).await {
        return Ok(());
    }
    let mut recorded = ctx.local.recorded();
    let mut backoff = ctx.retry_backoff();
    let mut failures = 0u32;
    // Halved when the hub finds a batch too large (a hub with a smaller body limit).
    let mut batch_limit = ctx.config.sync.upload_batch;
    // A quarantined event sent back to the outbox by an operator is not a new write.
    let recheck = Duration::from_secs(ctx.config.sync.pull_interval_secs);
    loop {
        if is_stopping(&stopping) {
            return Ok(());
        }
        // Seen before reading the outbox: a write after this read wakes the wait below.
        recorded.borrow_and_update();
        let batch = ctx.local.pending_batch(batch_limit).await?;
        if batch.is_empty() {
            tokio::select! {
                () = stopped(&mut stopping) => return Ok(()),
                changed = recorded.changed() => if changed.is_err() {
                    return Ok(());
                },
                () = tokio::time::sleep(recheck) => {}
            }
            continue;
        }
        if !ctx.hub.ready(&mut stopping).await {
            return Ok(());
        }
        let sent: HashSet<_> = batch.iter().map(|e| e.event_id).collect();
        let count = sent.len();
        // A re-sync holds the gate until its snapshot is taken in (pending events are not
        // in that snapshot: the batch read above stays this store's to send).
        if !ctx.wait_log_checked(&mut stopping).await {
            return Ok(());
        }
        let uploading = ctx.upload_gate.lock().await;
        let Some(outcome) = or_stop(&mut stopping, ctx.hub.upload(batch)).await else {
            return Ok(());
        };
        let error = match outcome {
            Ok(response) => {
                let (mut appended, mut duplicate, mut rejected, mut answered) = (0, 0, 0, 0);
                for result in &response.results {
                    answered += usize::from(sent.contains(&result.event_id));
                    let label = match &result.outcome {
                        UploadOutcome::Appended { .. } => {
                            appended += 1;
                            "appended"
                        }
                        UploadOutcome::Duplicate { .. } => {
                            duplicate += 1;
                            "duplicate"
                        }
                        UploadOutcome::Rejected { reason, detail } => {
                            rejected += 1;
                            tracing::warn!(event_id = %result.event_id, %reason, %detail,
                                "the hub rejected an uploaded event: it is quarantined for an operator; the events \
                                 after it go on");
                            "rejected"
                        }
                    };
                    metrics::counter!(meters::UPLOADED_EVENTS, "result" => label).increment(1);
                }
                ctx.local.acknowledge(response.results).await?;
                drop(uploading);
                meters::record_store(&ctx.local);
                if answered == 0 {
                    // Nothing in the batch changed state: sending it again at once would spin.
                    Some(format!("the hub answered none of the {count} events sent"))
                } else {
                    if failures > 0 {
                        tracing::info!(
                            failures,
                            events = count,
                            appended,
                            duplicate,
                            rejected,
                            "upload succeeded after failures"
                        );
                    } else {
                        tracing::debug!(events = count, appended, duplicate, rejected, "uploaded");
                    }
                    failures = 0;
                    backoff = ctx.retry_backoff();
                    None
                }
            }
            // Nothing was sent; `ready` waits for the probe.
            Err(CallError::Open { .. }) => continue,
            Err(CallError::Hub(error)) => {
                if let HubError::Status { status: 413, .. } = error {
                    if batch_limit > 1 {
                        batch_limit = (batch_limit / 2).max(1);
                        tracing::warn!(
                            batch_limit,
                            "the hub found an upload too large; sending smaller batches"
                        );
                    }
                }
                Some(error.to_string())
            }
        };
        if let Some(error) = error {
            failures += 1;
            metrics::counter!(meters::UPLOAD_FAILURES).increment(1);
            let delay = backoff
                .next()
                .unwrap_or(Duration::from_millis(ctx.config.sync.retry_max_ms));
            let (depth, _) = ctx.local.read(|view| view.outbox());
            tracing::warn!(%error, events = count, outbox = depth, attempt = failures, retry_in = ?delay,
                "upload failed; the events stay in the outbox and are sent again");
            // Retry on the timer, or as soon as the hub answers again (another task's call
            // closed the breaker), whichever comes first.
            tokio::select! {
                () = stopped(&mut stopping) => return Ok(()),
                () = tokio::time::sleep(delay) => {}
                () = ctx.hub.reopened_and_closed() => {}
            }
        }
    }
}
