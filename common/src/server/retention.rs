//! The retention job's loop, shared by both binaries: each binary names its prune steps
//! (one per table: the agent's confirmed outbox rows and idempotency records, the hub's
//! revoked tokens) and [`prune_table`] runs one step after another, each a short
//! transaction of at most `retention.batch_rows` rows, until the table has nothing older
//! than the cutoff. Between steps the writer takes whatever else is queued (a till's sale),
//! so a prune never holds the store for more than one small transaction.
//!
//! It reports what it did the same way on both: rows per table and time taken in one log
//! line per run ([`log_run`]), `shelfsync_retention_pruned_rows_total{table}` and the
//! longest step in `shelfsync_retention_step_seconds{table}`.

use std::future::Future;
use std::time::{Duration, Instant};

/// Most steps one run takes per table (with 1,000 rows a step, 10 million rows): a loop
/// that cannot end is a bug, and the next run carries on where this one stopped.
pub const MAX_STEPS: usize = 10_000;

/// What one step removed, and where the next one starts (`None`: the table is done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<C> {
    /// Rows removed by this step.
    pub pruned: usize,
    /// Where the next step resumes its search, or `None` when nothing older is left.
    pub resume: Option<C>,
}

/// What a run did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// The table.
    pub table: &'static str,
    /// Rows removed.
    pub pruned: u64,
    /// Steps (transactions) taken.
    pub steps: usize,
    /// Time the table took, steps and searches together.
    pub elapsed: Duration,
    /// The longest single step.
    pub longest_step: Duration,
}

/// Prunes `table` with `step`, called first with `None`, then with the resume point the
/// last step gave, until a step says the table is done (or [`MAX_STEPS`]).
pub async fn prune_table<C, E, F, Fut>(table: &'static str, mut step: F) -> Result<TableReport, E>
where
    F: FnMut(Option<C>) -> Fut,
    Fut: Future<Output = Result<Step<C>, E>>,
{
    let started = Instant::now();
    let mut report = TableReport {
        table,
        pruned: 0,
        steps: 0,
        elapsed: Duration::ZERO,
        longest_step: Duration::ZERO,
    };
    let mut resume = None;
    while report.steps < MAX_STEPS {
        let step_started = Instant::now();
        let done = step(resume.take()).await?;
        let took = step_started.elapsed();
        report.steps += 1;
        report.pruned += done.pruned as u64;
        report.longest_step = report.longest_step.max(took);
        metrics::counter!("shelfsync_retention_pruned_rows_total", "table" => table).increment(done.pruned as u64);
        match done.resume {
            Some(next) => resume = Some(next),
            None => break,
        }
    }
    if resume.is_some() {
        tracing::warn!(
            table,
            steps = MAX_STEPS,
            "retention stopped after its most steps; the next run carries on"
        );
    }
    report.elapsed = started.elapsed();
    metrics::histogram!("shelfsync_retention_step_seconds", "table" => table).record(report.longest_step.as_secs_f64());
    Ok(report)
}

/// Logs a run: rows removed per table, and the time taken.
pub fn log_run(keep_days: u32, reports: &[TableReport], elapsed: Duration) {
    let pruned: u64 = reports.iter().map(|r| r.pruned).sum();
    let tables = reports
        .iter()
        .map(|r| {
            format!(
                "{}: {} rows in {} steps, {} ms (longest step {} ms)",
                r.table,
                r.pruned,
                r.steps,
                r.elapsed.as_millis(),
                r.longest_step.as_millis()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    tracing::info!(keep_days, pruned, elapsed_ms = elapsed.as_millis() as u64, %tables, "retention run done");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn steps_run_until_one_says_the_table_is_done_resuming_where_the_last_stopped() {
        // Given a table of 12 old rows pruned 5 at a time,
        let mut seen = Vec::new();
        let mut left = 12usize;
        let report = prune_table("t", |resume: Option<usize>| {
            seen.push(resume);
            let pruned = left.min(5);
            left -= pruned;
            let at = resume.unwrap_or(0) + pruned;
            async move {
                Ok::<_, String>(Step {
                    pruned,
                    resume: (pruned == 5).then_some(at),
                })
            }
        })
        .await
        .unwrap();
        // then three steps ran, each from where the last one stopped, and all 12 went.
        assert_eq!(seen, [None, Some(5), Some(10)]);
        assert_eq!((report.pruned, report.steps), (12, 3));
        // A failing step fails the run.
        let failed = prune_table("t", |_: Option<()>| async { Err::<Step<()>, _>("disk".to_owned()) }).await;
        assert_eq!(failed.unwrap_err(), "disk");
    }

    #[tokio::test]
    async fn a_step_that_never_ends_the_table_is_bounded() {
        let report = prune_table("t", |_: Option<()>| async {
            Ok::<_, String>(Step {
                pruned: 1,
                resume: Some(()),
            })
        })
        .await
        .unwrap();
        assert_eq!(report.steps, MAX_STEPS);
    }
}
