//! Scheduled jobs (tokio-cron-scheduler, started by `common::server::schedule`): expiry
//! of the reservations made at this store (the side that made a hold expires it; the hub
//! expires its own), the store's side of allocations, WAL maintenance, and retention
//! (old confirmed outbox rows and idempotency records, `crate::store`'s `retention`). Each release
//! is an ordinary local command, so overlapping runs never release twice: the rules
//! refuse to release a hold that is no longer open.
//!
//! Allocations (`docs/allocations.md`): on the same schedule as expiry, the store gives
//! the hub what its share lacks under the policy the hub set (an `AllocationTransferred`
//! to the hub, recorded here: the store's consent), out of the store's own share only.

use crate::config::{JobsConfig, RetentionConfig};
use crate::store::{LocalCommand, LocalError, LocalStore, Target};
use shelfsync_common::domain::allocation::{self, Decider, OverShare};
use shelfsync_common::domain::event::ReleaseReason;
use shelfsync_common::server::retention::{self, TableReport};
pub use shelfsync_common::server::schedule::stop;
use shelfsync_common::server::schedule::{start_maintenance, Jobs};
use shelfsync_common::{EventId, EventMetadata, InventoryCommand, Origin};
use time::OffsetDateTime;
use tokio_cron_scheduler::JobSchedulerError;

/// Starts the scheduler with every job.
pub async fn start(config: &JobsConfig, keep: &RetentionConfig, local: LocalStore) -> Result<Jobs, JobSchedulerError> {
    let expiring = local.clone();
    let pruning = (local.clone(), keep.clone());
    let expire = move || {
        let local = expiring.clone();
        async move {
            let now = OffsetDateTime::now_utc();
            let expired = expire_reservations(&local, now).await;
            rebalance_allocations(&local, now).await?;
            expired
        }
    };
    let checkpoint = move || {
        let local = local.clone();
        async move { local.checkpoint().await }
    };
    let jobs = start_maintenance(config, expire, checkpoint).await?;
    jobs.add("retention", &keep.schedule, move || {
        let (local, keep) = pruning.clone();
        async move { prune(&local, &keep, OffsetDateTime::now_utc()).await }
    })
    .await?;
    Ok(jobs)
}

/// Removes confirmed outbox rows and idempotency records older than `keep.keep_days`
/// at `now`, in steps of `keep.batch_rows`; logs and returns what each table lost.
pub async fn prune(
    local: &LocalStore,
    keep: &RetentionConfig,
    now: OffsetDateTime,
) -> Result<Vec<TableReport>, LocalError> {
    let started = std::time::Instant::now();
    let cutoff = now - keep.keep();
    let limit = keep.batch_rows;
    let reports = vec![
        retention::prune_table("outbox", |after| local.prune_outbox(cutoff, after, limit)).await?,
        retention::prune_table("idempotency", |after| local.prune_idempotency(cutoff, after, limit)).await?,
    ];
    retention::log_run(keep.keep_days, &reports, started.elapsed());
    Ok(reports)
}

/// Gives the hub what its share lacks under each stream's policy, from the store's
/// share; returns how many streams moved units.
pub async fn rebalance_allocations(local: &LocalStore, now: OffsetDateTime) -> Result<usize, LocalError> {
    let (store_id, due) = local.read(|view| {
        let due: Vec<_> = view
            .streams()
            .iter()
            .filter_map(|(product, stream)| {
                allocation::rebalance(stream.local(), Decider::Store(OverShare::Refuse)).map(|c| (*product, c))
            })
            .collect();
        (view.store_id, due)
    });
    let mut moved = 0;
    for (product, command) in due {
        let command = LocalCommand {
            target: Target::Product(product),
            command,
            event_id: EventId::new_v7(),
            idempotency: None,
            metadata: EventMetadata {
                origin: Origin::Store(store_id),
                actor: "job:allocation-rebalance".into(),
                correlation_id: uuid::Uuid::now_v7(),
                causation_id: None,
                occurred_at: now,
                recorded_at: None,
            },
            over_share: OverShare::Refuse,
        };
        match local.execute(command).await {
            Ok(_) => moved += 1,
            Err(error @ (LocalError::Storage(_) | LocalError::Unavailable)) => return Err(error),
            // The share changed since the view was read (a sale): the next run sees it.
            Err(error) => tracing::debug!(%product, %error, "allocation rebalance skipped"),
        }
    }
    Ok(moved)
}

/// Releases every reservation made here that is due at `now`; returns how many.
pub async fn expire_reservations(local: &LocalStore, now: OffsetDateTime) -> Result<usize, LocalError> {
    let (store_id, due) = local.read(|view| (view.store_id, view.own_expired(now)));
    let mut released = 0;
    for (product, reservation_id) in due {
        let command = LocalCommand {
            target: Target::Product(product),
            command: InventoryCommand::ReleaseStock {
                reservation_id,
                reason: ReleaseReason::Expired,
            },
            // A fresh id: the rules already refuse a second release of the same hold, and a
            // reservation id may be reused after its hold ended.
            event_id: EventId::new_v7(),
            idempotency: None,
            metadata: EventMetadata {
                origin: Origin::Store(store_id),
                actor: "job:reservation-expiry".into(),
                correlation_id: reservation_id.0,
                causation_id: None,
                occurred_at: now,
                recorded_at: None,
            },
            over_share: Default::default(),
        };
        match local.execute(command).await {
            Ok(_) => released += 1,
            // Committed or released since the view was read.
            Err(LocalError::Domain(shelfsync_common::DomainError::ReservationNotFound(_))) => {}
            Err(error @ (LocalError::Storage(_) | LocalError::Unavailable)) => return Err(error),
            // Anything else concerns this hold only: the others are still due.
            Err(error) => tracing::warn!(%reservation_id, %error, "could not release an expired reservation"),
        }
    }
    Ok(released)
}
