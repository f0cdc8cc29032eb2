//! Scheduled jobs (tokio-cron-scheduler, started by `common::server::schedule`, which
//! keeps each job from overlapping itself, retries a failed run and keeps the board that
//! `GET /v1/admin/jobs` serves): reservation expiry, WAL maintenance, the analytics
//! roll-up (the clock-dependent figures into metrics), housekeeping (old webhook
//! delivery records, the analytics file's WAL) and retention ([`crate::retention`]).
//!
//! Allocations (`docs/allocations.md`): on the expiry schedule the hub gives back to each
//! store what its share holds beyond its policy's target (a percentage of stock that
//! sold down, a hold released into a full share). The hub gives only its own units; the
//! store gives the hub what it lacks (the agent's job).
//!
//! Expiry follows the rule "the side that created a reservation expires it": the hub
//! releases only reservations that were made through its own API (origin `hub`); a store's
//! reservations are expired by that store's agent. Each release is an ordinary command, so
//! two overlapping runs, or a run racing a client's own release or commit, never release
//! twice: the rules refuse to release a hold that is no longer open.

use crate::analytics::{queries, AnalyticsDb};
use crate::config::{HubConfig, JobsConfig};
use crate::read_model::{ReadModel, ReadModelQueries};
use crate::store::ReadError;
use crate::store::{Command, CommandRequest, EventStore, InventoryTarget, WriteError};
use crate::webhooks::Webhooks;
use shelfsync_common::domain::allocation::{self, Allocation, Share};
use shelfsync_common::domain::event::ReleaseReason;
pub use shelfsync_common::server::schedule::stop;
use shelfsync_common::server::schedule::{start_maintenance, Jobs};
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::{
    DomainError, EventId, EventMetadata, ExpectedVersion, InventoryCommand, Origin, ReservationId, StockQuantity,
};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio_cron_scheduler::JobSchedulerError;

/// How long a hub holds a job's lease after its last run (renewed on each run): another
/// hub takes the job over this long after its holder died.
const JOB_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// Starts the scheduler with every job.
pub async fn start(
    config: &HubConfig,
    log: EventStore,
    read_model: Arc<ReadModel>,
    analytics: Arc<AnalyticsDb>,
    webhooks: Arc<Webhooks>,
) -> Result<Jobs, JobSchedulerError> {
    let jobs = start_log_jobs(&config.jobs, log.clone(), read_model).await?;
    let keep = config.retention.clone();
    jobs.add("retention", &config.retention.schedule, move || {
        let (log, keep) = (log.clone(), keep.clone());
        async move {
            // With several hubs on one database, the one holding the lease runs it.
            if !log
                .lead("retention", JOB_LEASE)
                .await
                .map_err(|e| WriteError::Storage(e.to_string()))?
            {
                return Ok(Vec::new());
            }
            crate::retention::prune(&log, &keep, OffsetDateTime::now_utc()).await
        }
    })
    .await?;
    let db = analytics.clone();
    jobs.add("analytics-rollup", &config.analytics.rollup, move || {
        let db = db.clone();
        async move {
            let rollup = db.read(|conn| queries::rollup(conn, OffsetDateTime::now_utc())).await?;
            metrics::gauge!("shelfsync_hub_analytics_low_cover_streams").set(rollup.low_cover_streams as f64);
            metrics::gauge!("shelfsync_hub_analytics_open_low_stock_alerts").set(rollup.open_low_stock as f64);
            metrics::gauge!("shelfsync_hub_analytics_units_yesterday").set(rollup.units_yesterday as f64);
            Ok::<_, ReadError>(())
        }
    })
    .await?;
    let retention = config.analytics.delivered_retention_days;
    jobs.add("housekeeping", &config.analytics.housekeeping, move || {
        let (webhooks, db) = (webhooks.clone(), analytics.clone());
        async move {
            let pruned = webhooks.prune_delivered(retention).await?;
            db.write(|tx| Ok(tx.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?))
                .await?;
            if pruned > 0 {
                tracing::info!(pruned, "old webhook delivery records removed");
            }
            Ok::<_, ReadError>(())
        }
    })
    .await?;
    Ok(jobs)
}

/// The two jobs of the log: expiry and the WAL checkpoint.
async fn start_log_jobs(
    config: &JobsConfig,
    log: EventStore,
    read_model: Arc<ReadModel>,
) -> Result<Jobs, JobSchedulerError> {
    let expiring = log.clone();
    let expire = move || {
        let (log, read_model) = (expiring.clone(), read_model.clone());
        async move {
            // With several hubs on one database, the one holding the lease runs it.
            if !log
                .lead("reservation-expiry", JOB_LEASE)
                .await
                .map_err(|e| WriteError::Storage(e.to_string()))?
            {
                return Ok(0);
            }
            let now = OffsetDateTime::now_utc();
            let expired = expire_reservations(&log, read_model.as_ref(), now).await;
            rebalance_allocations(&log, &read_model, now).await?;
            expired
        }
    };
    let checkpoint = move || {
        let log = log.clone();
        async move { log.checkpoint().await }
    };
    start_maintenance(config, expire, checkpoint).await
}

/// Gives each store the units the hub's share holds beyond its policy's target; returns
/// how many streams gave units back.
pub async fn rebalance_allocations(
    log: &EventStore,
    read_model: &ReadModel,
    now: OffsetDateTime,
) -> Result<usize, WriteError> {
    let streams = read_model
        .allocated_streams()
        .await
        .map_err(|e| WriteError::Storage(e.to_string()))?;
    let mut moved = 0;
    for level in streams {
        let Some(shares) = level.allocation else { continue };
        let allocation = Allocation {
            policy: shares.policy,
            hub_share: shares.hub_share,
        };
        let surplus = allocation::hub_surplus(&allocation, level.available).min(i64::from(StockQuantity::MAX));
        let Ok(quantity) = StockQuantity::new(surplus) else {
            continue;
        };
        let request = hub_command(
            InventoryTarget::Stream(level.product_id, level.store_id),
            InventoryCommand::TransferAllocation {
                to: Share::Store,
                quantity,
            },
            ExpectedVersion::Exact(level.version),
            "job:allocation-rebalance".into(),
            now,
        );
        match log.execute(request).await {
            Ok(_) => moved += 1,
            // The stream moved on since the read model saw it: the next run looks again.
            Err(WriteError::VersionConflict { .. } | WriteError::Domain(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(moved)
}

/// A command the hub makes itself (a job, or a store's request answered by a rule): a
/// fresh event id (a retry is a new decision), its fingerprint the id itself.
pub fn hub_command(
    target: InventoryTarget,
    command: InventoryCommand,
    expected: ExpectedVersion,
    actor: String,
    now: OffsetDateTime,
) -> CommandRequest {
    let event_id = EventId::new_v7();
    CommandRequest {
        command: Command::Inventory { target, command },
        expected,
        event_id,
        fingerprint: Fingerprint::from_bytes(*event_id.as_bytes()),
        legacy_fingerprint: None,
        metadata: EventMetadata {
            origin: Origin::Hub,
            actor,
            correlation_id: event_id.0,
            causation_id: None,
            occurred_at: now,
            recorded_at: None,
        },
    }
}

/// Releases every hub-made reservation due at `now`; returns how many were released.
pub async fn expire_reservations(
    log: &EventStore,
    read_model: &dyn ReadModelQueries,
    now: OffsetDateTime,
) -> Result<usize, WriteError> {
    let due = read_model
        .expired_reservations(Origin::Hub, now)
        .await
        .map_err(|e| WriteError::Storage(e.to_string()))?;
    let mut released = 0;
    for reservation_id in due {
        match log.execute(expiry_command(reservation_id, now)).await {
            Ok(result) if !result.duplicate => released += 1,
            Ok(_) => {}
            // Already committed or released since the read model saw it (the read model
            // lags the writer by a moment). A hold that stays here run after run would be
            // one the writer lost track of: say so rather than skip it silently.
            Err(WriteError::UnknownReservation(_) | WriteError::Domain(DomainError::ReservationNotFound(_))) => {
                metrics::counter!("shelfsync_hub_expiry_unknown_reservations_total").increment(1);
                tracing::debug!(%reservation_id, "due reservation is no longer open at the writer");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(released)
}

fn expiry_command(reservation_id: ReservationId, now: OffsetDateTime) -> CommandRequest {
    CommandRequest {
        command: Command::Inventory {
            target: InventoryTarget::Reservation(reservation_id),
            command: InventoryCommand::ReleaseStock {
                reservation_id,
                reason: ReleaseReason::Expired,
            },
        },
        expected: Default::default(),
        // A fresh id: the rules already refuse a second release of the same hold, and a
        // reservation id may be reused after its hold ended.
        event_id: EventId::new_v7(),
        fingerprint: Fingerprint::from_bytes(
            *EventId::from_name("reservation-expiry", &reservation_id.to_string()).as_bytes(),
        ),
        legacy_fingerprint: None,
        metadata: EventMetadata {
            origin: Origin::Hub,
            actor: "job:reservation-expiry".into(),
            correlation_id: reservation_id.0,
            causation_id: None,
            occurred_at: now,
            recorded_at: None,
        },
    }
}
