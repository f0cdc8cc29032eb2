//! Scheduled jobs for both binaries, on tokio-cron-scheduler. [`Jobs`] adds named jobs
//! that run an async closure on a cron expression (six fields, with seconds, UTC) and
//! keeps a board of each job's schedule, last run, result, duration and next run (the
//! hub serves it at `GET /v1/admin/jobs`), with the same figures in metrics
//! (`shelfsync_job_*{job}`). Two rules hold for every job: a job never runs twice at once
//! (a tick that finds the previous run still going is skipped and counted), and a failed
//! run is retried within the run (after 1 s, then 4 s) before it is reported as failed;
//! the next tick tries again. [`start_maintenance`] starts the two maintenance jobs both
//! binaries run on their `[jobs]` schedules.

use super::settings::JobsConfig;
use crate::wire::jobs::JobStatus;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use uuid::Uuid;

/// Waits before the retries of a failed run.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];

/// One job's figures.
#[derive(Debug, Default)]
struct Record {
    schedule: String,
    id: Uuid,
    last_run: Option<OffsetDateTime>,
    last_result: Option<String>,
    last_duration: Option<Duration>,
    runs: u64,
    failures: u64,
    skipped: u64,
}

/// The scheduler and the board of its jobs.
pub struct Jobs {
    scheduler: JobScheduler,
    board: Arc<Mutex<BTreeMap<&'static str, Record>>>,
    running: Arc<Mutex<BTreeMap<&'static str, Arc<AtomicBool>>>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

impl Jobs {
    /// A started scheduler with no jobs yet.
    pub async fn start() -> Result<Self, JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        scheduler.start().await?;
        Ok(Self {
            scheduler,
            board: Arc::default(),
            running: Arc::default(),
        })
    }

    /// Adds the job `name` that runs `run()` on every tick of `cron`. `Ok` is a run that
    /// worked; an `Err` is retried twice within the run, then reported.
    pub async fn add<F, Fut, T, E>(&self, name: &'static str, cron: &str, run: F) -> Result<(), JobSchedulerError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Display + Send + 'static,
    {
        let run = Arc::new(run);
        let busy = Arc::new(AtomicBool::new(false));
        let board = self.board.clone();
        let running = busy.clone();
        let job = Job::new_async(cron, move |_, _| {
            let (run, board, busy) = (run.clone(), board.clone(), running.clone());
            Box::pin(async move {
                if busy.swap(true, Ordering::AcqRel) {
                    metrics::counter!("shelfsync_job_skipped_total", "job" => name).increment(1);
                    tracing::warn!(job = name, "the previous run is still going; this tick is skipped");
                    record(&board, name, |r| r.skipped += 1);
                    return;
                }
                let started = Instant::now();
                record(&board, name, |r| r.last_run = Some(OffsetDateTime::now_utc()));
                metrics::gauge!("shelfsync_job_running", "job" => name).set(1.0);
                let mut outcome = run().await.map(drop);
                for delay in RETRY_DELAYS {
                    let Err(error) = &outcome else { break };
                    metrics::counter!("shelfsync_job_retries_total", "job" => name).increment(1);
                    let error = error.to_string();
                    tracing::warn!(job = name, %error, retry_in_s = delay.as_secs(), "a job run failed; retrying");
                    tokio::time::sleep(delay).await;
                    outcome = run().await.map(drop);
                }
                let elapsed = started.elapsed();
                let result = match &outcome {
                    Ok(()) => "ok".to_owned(),
                    Err(error) => {
                        tracing::error!(job = name, %error, "a job run failed after its retries; the next tick tries again");
                        format!("error: {error}")
                    }
                };
                let label = if outcome.is_ok() { "ok" } else { "error" };
                metrics::counter!("shelfsync_job_runs_total", "job" => name, "result" => label).increment(1);
                metrics::histogram!("shelfsync_job_duration_seconds", "job" => name).record(elapsed.as_secs_f64());
                metrics::gauge!("shelfsync_job_running", "job" => name).set(0.0);
                record(&board, name, |r| {
                    r.runs += 1;
                    r.failures += u64::from(outcome.is_err());
                    r.last_result = Some(result);
                    r.last_duration = Some(elapsed);
                });
                busy.store(false, Ordering::Release);
            })
        })?;
        let id = self.scheduler.add(job).await?;
        record(&self.board, name, |r| {
            r.schedule = cron.to_owned();
            r.id = id;
        });
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, busy);
        Ok(())
    }

    /// Every job's status, by name.
    pub async fn statuses(&self) -> Vec<JobStatus> {
        let records: Vec<(&'static str, JobStatus, Uuid)> = {
            let board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
            let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            board
                .iter()
                .map(|(name, r)| {
                    let status = JobStatus {
                        name: (*name).to_owned(),
                        schedule: r.schedule.clone(),
                        running: running.get(name).is_some_and(|b| b.load(Ordering::Acquire)),
                        last_run: r.last_run,
                        last_result: r.last_result.clone(),
                        last_duration_ms: r.last_duration.map(|d| d.as_millis() as u64),
                        next_run: None,
                        runs: r.runs,
                        failures: r.failures,
                        skipped: r.skipped,
                    };
                    (*name, status, r.id)
                })
                .collect()
        };
        let mut scheduler = self.scheduler.clone();
        let mut out = Vec::with_capacity(records.len());
        for (_, mut status, id) in records {
            status.next_run = scheduler
                .next_tick_for_job(id)
                .await
                .ok()
                .flatten()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.timestamp()).ok());
            out.push(status);
        }
        out
    }
}

fn record(board: &Mutex<BTreeMap<&'static str, Record>>, name: &'static str, change: impl FnOnce(&mut Record)) {
    change(
        board
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name)
            .or_default(),
    );
}

/// Starts the scheduler with the maintenance jobs: `reservation-expiry` on
/// `config.reservation_expiry` (`expire()` releases the reservations due now and says how
/// many) and `wal-checkpoint` on `config.wal_checkpoint`.
pub async fn start_maintenance<X, XF, XE, K, KF, KE>(
    config: &JobsConfig,
    expire: X,
    checkpoint: K,
) -> Result<Jobs, JobSchedulerError>
where
    X: Fn() -> XF + Send + Sync + 'static,
    XF: Future<Output = Result<usize, XE>> + Send + 'static,
    XE: Display + Send + 'static,
    K: Fn() -> KF + Send + Sync + 'static,
    KF: Future<Output = Result<(), KE>> + Send + 'static,
    KE: Display + Send + 'static,
{
    let jobs = Jobs::start().await?;
    jobs.add("reservation-expiry", &config.reservation_expiry, move || {
        let run = expire();
        async move {
            let released = run.await?;
            if released > 0 {
                tracing::info!(released, "expired reservations released");
            }
            Ok::<_, XE>(released)
        }
    })
    .await?;
    jobs.add("wal-checkpoint", &config.wal_checkpoint, checkpoint).await?;
    Ok(jobs)
}

/// Stops the scheduler (jobs already running finish on their own).
pub async fn stop(jobs: &Jobs) {
    if let Err(error) = jobs.scheduler.clone().shutdown().await {
        tracing::warn!(%error, "stopping the scheduler");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_never_overlap_failed_runs_are_retried_and_every_run_is_on_the_board() {
        // Given the maintenance jobs every second, expiry taking 2.5 s a run (longer than
        // its tick) and the checkpoint always failing,
        let every_second = JobsConfig {
            reservation_expiry: "* * * * * *".into(),
            wal_checkpoint: "* * * * * *".into(),
        };
        let (inside, most_inside, checkpoints) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (i, m, c) = (inside.clone(), most_inside.clone(), checkpoints.clone());
        let jobs = start_maintenance(
            &every_second,
            move || {
                let (i, m) = (i.clone(), m.clone());
                async move {
                    m.fetch_max(i.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                    i.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, String>(1)
                }
            },
            move || {
                c.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>("disk full".to_owned()) }
            },
        )
        .await
        .unwrap();
        // when enough ticks pass for a failed run to use up its retries,
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let board = loop {
            let board = jobs.statuses().await;
            let done = board.iter().all(|j| j.runs >= 1 && j.next_run.is_some())
                && board.iter().any(|j| j.name == "wal-checkpoint" && j.failures >= 1)
                && board.iter().any(|j| j.name == "reservation-expiry" && j.skipped >= 1);
            if done || tokio::time::Instant::now() > deadline {
                break board;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        stop(&jobs).await;
        // then expiry never ran twice at once (its overlapping ticks were skipped),
        assert_eq!(most_inside.load(Ordering::SeqCst), 1);
        let expiry = board.iter().find(|j| j.name == "reservation-expiry").unwrap();
        assert!(expiry.skipped >= 1, "{board:?}");
        assert_eq!(expiry.last_result.as_deref(), Some("ok"));
        assert!(expiry.last_duration_ms.unwrap() >= 2500);
        assert_eq!(expiry.schedule, "* * * * * *");
        // and the failing checkpoint was tried three times a run, then reported.
        let checkpoint = board.iter().find(|j| j.name == "wal-checkpoint").unwrap();
        assert!(checkpoint.failures >= 1, "{board:?}");
        assert_eq!(checkpoint.last_result.as_deref(), Some("error: disk full"));
        assert!(checkpoints.load(Ordering::SeqCst) >= 3, "a failed run is retried");
        assert!(checkpoint.next_run.is_some() && checkpoint.last_run.is_some());
    }
}
