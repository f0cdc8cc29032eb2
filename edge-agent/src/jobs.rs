//! Scheduled jobs (tokio-cron-scheduler, started by `common::server::schedule`): expiry
//! of the reservations made at this store (the side that made a hold expires it; the hub
//! expires its own), and WAL maintenance. Each release is an ordinary local command, so
//! overlapping runs never release twice: the rules refuse to release a hold that is no
//! longer open.

use crate::config::JobsConfig;
use crate::store::{LocalCommand, LocalError, LocalStore, Target};
use shelfsync_common::domain::event::ReleaseReason;
pub use shelfsync_common::server::schedule::stop;
use shelfsync_common::server::schedule::{start_maintenance, Jobs};
use shelfsync_common::{EventId, EventMetadata, InventoryCommand, Origin};
use time::OffsetDateTime;
use tokio_cron_scheduler::JobSchedulerError;

/// Starts the scheduler with every job.
pub async fn start(config: &JobsConfig, local: LocalStore) -> Result<Jobs, JobSchedulerError> {
    let expiring = local.clone();
    let expire = move || {
        let local = expiring.clone();
        async move { expire_reservations(&local, OffsetDateTime::now_utc()).await }
    };
    let checkpoint = move || {
        let local = local.clone();
        async move { local.checkpoint().await }
    };
    start_maintenance(config, expire, checkpoint).await
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
