//! Scheduled jobs for both binaries, on tokio-cron-scheduler: one call adds a job that
//! runs an async closure on a cron expression (six fields, with seconds).

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

/// Stops the scheduler (jobs already running finish on their own).
pub async fn stop(mut scheduler: JobScheduler) {
    if let Err(error) = scheduler.shutdown().await {
        tracing::warn!(%error, "stopping the scheduler");
    }
}
