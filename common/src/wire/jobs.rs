//! The JSON shape of `GET /v1/admin/jobs`: each scheduled job's schedule, last run,
//! result, duration and next run. Pure data.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One scheduled job at `GET /v1/admin/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStatus {
    /// Its name.
    pub name: String,
    /// Six-field cron expression (with seconds), UTC.
    pub schedule: String,
    /// Whether a run is in progress.
    pub running: bool,
    /// When the last run started.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_run: Option<OffsetDateTime>,
    /// `ok`, or `error: ...` after its retries.
    pub last_result: Option<String>,
    /// How long the last run took, retries included, in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// When it runs next.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_run: Option<OffsetDateTime>,
    /// Runs finished.
    pub runs: u64,
    /// Runs that failed after their retries.
    pub failures: u64,
    /// Ticks skipped because the previous run was still going.
    pub skipped: u64,
}

/// `GET /v1/admin/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobList {
    /// Every job, by name.
    pub jobs: Vec<JobStatus>,
}
