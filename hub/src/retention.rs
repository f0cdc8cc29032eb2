//! The hub's retention job: the list of what it prunes, run in steps of
//! `retention.batch_rows` rows through the log's writer (on PostgreSQL under the job's
//! lease, so one hub prunes at a time).
//!
//! What the hub keeps: its event log whole. The hub's idempotency records *are* the log
//! (an event id is answered `duplicate` for as long as the event exists, and the log is
//! the truth), so there is no separate table of them to prune. What it prunes: tokens
//! revoked more than `keep_days` ago ([`Prunable::RevokedTokens`] says why nothing needs
//! them). To prune another kind of row, add its [`Prunable`] (with its two statements)
//! and one line to [`STEPS`].

use crate::config::RetentionConfig;
use crate::store::{EventStore, Prunable, WriteError};
use shelfsync_common::server::retention::{self, Step, TableReport};
use time::OffsetDateTime;

/// What a run prunes, in order.
pub const STEPS: &[Prunable] = &[Prunable::RevokedTokens, Prunable::EnrollmentCodes];

/// Removes every [`STEPS`] row older than `keep.keep_days` at `now`, in steps of
/// `keep.batch_rows`; logs and returns what each table lost.
pub async fn prune(
    log: &EventStore,
    keep: &RetentionConfig,
    now: OffsetDateTime,
) -> Result<Vec<TableReport>, WriteError> {
    let started = std::time::Instant::now();
    let cutoff = now - keep.keep();
    let limit = keep.batch_rows;
    let mut reports = Vec::with_capacity(STEPS.len());
    for what in STEPS {
        let report = retention::prune_table(what.table(), |_: Option<()>| async move {
            let pruned = log.prune(*what, cutoff, limit).await?;
            Ok::<_, WriteError>(Step {
                pruned,
                resume: (pruned == limit).then_some(()),
            })
        })
        .await?;
        reports.push(report);
    }
    retention::log_run(keep.keep_days, &reports, started.elapsed());
    Ok(reports)
}
