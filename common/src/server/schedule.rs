//! Scheduled jobs for both binaries, on tokio-cron-scheduler: one call adds a job that
//! runs an async closure on a cron expression (six fields, with seconds), and
//! [`start_maintenance`] starts the two maintenance jobs both binaries run on their
//! `[jobs]` schedules, logging each run's outcome the same way.

use super::settings::JobsConfig;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

/// Adds a job that runs `run()` on every tick of `cron`.
pub async fn add_job<F, Fut>(scheduler: &JobScheduler, cron: &str, run: F) -> Result<(), JobSchedulerError>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let run = Arc::new(run);
    let job = Job::new_async(cron, move |_, _| {
        let run = run.clone();
        Box::pin(async move { run().await })
    })?;
    scheduler.add(job).await.map(|_| ())
}

/// Starts a scheduler with the maintenance jobs: on `config.reservation_expiry`,
/// `expire()` releases the reservations due now and says how many; on
/// `config.wal_checkpoint`, `checkpoint()` checkpoints the write-ahead log. A run that
/// fails is logged and tried again on the next tick.
pub async fn start_maintenance<X, XF, XE, K, KF, KE>(
    config: &JobsConfig,
    expire: X,
    checkpoint: K,
) -> Result<JobScheduler, JobSchedulerError>
where
    X: Fn() -> XF + Send + Sync + 'static,
    XF: Future<Output = Result<usize, XE>> + Send + 'static,
    XE: Display,
    K: Fn() -> KF + Send + Sync + 'static,
    KF: Future<Output = Result<(), KE>> + Send + 'static,
    KE: Display,
{
    let scheduler = JobScheduler::new().await?;
    add_job(&scheduler, &config.reservation_expiry, move || {
        let run = expire();
        async move {
            match run.await {
                Ok(0) => {}
                Ok(released) => tracing::info!(released, "expired reservations released"),
                Err(error) => tracing::warn!(%error, "reservation expiry failed; will retry on the next run"),
            }
        }
    })
    .await?;
    add_job(&scheduler, &config.wal_checkpoint, move || {
        let run = checkpoint();
        async move {
            if let Err(error) = run.await {
                tracing::warn!(%error, "WAL checkpoint failed");
            }
        }
    })
    .await?;
    scheduler.start().await?;
    Ok(scheduler)
}

/// Stops the scheduler (jobs already running finish on their own).
pub async fn stop(mut scheduler: JobScheduler) {
    if let Err(error) = scheduler.shutdown().await {
        tracing::warn!(%error, "stopping the scheduler");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_maintenance_jobs_run_on_their_schedules_and_a_failure_does_not_stop_them() {
        // Given both jobs every second, expiry releasing one hold and the checkpoint failing,
        let every_second = JobsConfig {
            reservation_expiry: "* * * * * *".into(),
            wal_checkpoint: "* * * * * *".into(),
        };
        let (expiries, checkpoints) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (e, c) = (expiries.clone(), checkpoints.clone());
        let scheduler = start_maintenance(
            &every_second,
            move || {
                e.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, String>(1) }
            },
            move || {
                c.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>("disk full".to_owned()) }
            },
        )
        .await
        .unwrap();
        // when a few ticks pass, then each job ran more than once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while (expiries.load(Ordering::SeqCst) < 2 || checkpoints.load(Ordering::SeqCst) < 2)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop(scheduler).await;
        assert!(expiries.load(Ordering::SeqCst) >= 2);
        assert!(
            checkpoints.load(Ordering::SeqCst) >= 2,
            "a failed checkpoint runs again"
        );
    }
}
