//! The first start of an agent: take the hub's snapshot of this store (its stock, its
//! open reservations, the catalog, all as of one position P) and follow from P.
//!
//! It runs once, before uploading and following (both wait for it), and retries with
//! back-off until it works; the tills keep working on whatever is local meanwhile. A store
//! that already has its snapshot skips it.

use super::hub::CallError;
use super::{or_stop, sleep_or_stop, Ctx, SyncError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs until the store has its snapshot (or `stopping`).
pub(super) async fn run(ctx: Arc<Ctx>, mut stopping: watch::Receiver<bool>) -> Result<(), SyncError> {
    if ctx.local.read(|view| view.sync.bootstrapped) {
        ctx.bootstrapped.send_replace(true);
        return Ok(());
    }
    tracing::info!("no snapshot yet: fetching this store's state from the hub (the tills keep working meanwhile)");
    let mut backoff = ctx.retry_backoff();
    let mut attempts = 0u32;
    loop {
        if !ctx.hub.ready(&mut stopping).await {
            return Ok(());
        }
        let Some(fetched) = or_stop(&mut stopping, ctx.hub.snapshot()).await else {
            return Ok(());
        };
        let error = match fetched {
            Ok(snapshot) if snapshot.store_id == ctx.store_id => {
                let (position, products, stock, holds) = (
                    snapshot.position,
                    snapshot.catalog.len(),
                    snapshot.stock.len(),
                    snapshot.reservations.len(),
                );
                ctx.local.bootstrap(snapshot).await?;
                ctx.bootstrapped.send_replace(true);
                tracing::info!(
                    position,
                    products,
                    stock_rows = stock,
                    reservations = holds,
                    "bootstrapped from the hub's snapshot; following from its position"
                );
                return Ok(());
            }
            Ok(snapshot) => format!("the hub sent the snapshot of store {} instead", snapshot.store_id),
            Err(CallError::Open { .. }) => continue,
            Err(CallError::Hub(error)) => error.to_string(),
        };
        attempts += 1;
        let delay = backoff
            .next()
            .unwrap_or(Duration::from_millis(ctx.config.sync.retry_max_ms));
        tracing::warn!(%error, attempt = attempts, retry_in = ?delay, "could not take the starting snapshot");
        if !sleep_or_stop(delay, &mut stopping).await {
            return Ok(());
        }
    }
}
