//! The analytics fold: one batch of log events into the figures, the alerts and the
//! worker's own stock rows, with the `analytics` checkpoint, in one transaction.
//!
//! What counts as a sale: `ReservationCommitted` (a hold became a sale, at the hub or at
//! a till) and a store's `StockAdjusted` with a negative delta and the reason `sale` (a
//! till that sold without a hold). Each sale is booked on the store-local day of its
//! `occurred_at` (when the till sold it, not when the hub heard of it: an offline store's
//! sales land on the days they happened), at the catalog price the analytics file holds
//! when it folds the sale (the price in force at that point of the log). A low-stock alert
//! is raised when an event leaves `available` below the stream's reorder point and no
//! alert is open for it, and cleared by the first event that leaves it at or above the
//! point; every `OversellDetected` is an oversell alert.

use super::{checkpoint, local_day, price, Day, Settings, CHECKPOINT};
use crate::read_model::{project_catalog, write_checkpoint, StreamWork};
use crate::store::ReadError;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use shelfsync_common::domain::event::ReleaseReason;
use shelfsync_common::sqlite::time_text;
use shelfsync_common::{EventEnvelope, EventPayload, ProductId, StoreId};
use std::collections::{HashMap, HashSet};

/// The reason of a `StockAdjusted` that is a sale without a hold.
pub const SALE_REASON: &str = "sale";

/// What one committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// The checkpoint after the batch.
    pub position: u64,
    /// Events folded (those at or before the old checkpoint are skipped).
    pub events: usize,
    /// Alert events written.
    pub alerts: usize,
}

/// One product's figures on one store day, added up over a batch.
#[derive(Debug, Default, Clone, Copy)]
struct DayDelta {
    units: i64,
    revenue_minor: i64,
    expired: i64,
    oversells: i64,
}

/// Folds `events` (in position order) and moves the checkpoint, in one transaction.
/// Events at or before the checkpoint are skipped, so folding a batch twice is harmless.
pub fn apply_batch(conn: &mut Connection, settings: &Settings, events: &[EventEnvelope]) -> Result<Folded, ReadError> {
    let tx = conn.transaction()?;
    let before = checkpoint(&tx)?;
    let mut fold = Fold {
        tx: &tx,
        settings,
        streams: HashMap::new(),
        days: HashMap::new(),
        prices: HashMap::new(),
        folded: Folded {
            position: before,
            ..Folded::default()
        },
    };
    for event in events.iter().filter(|e| e.position > before) {
        fold.event(event)?;
    }
    let Fold {
        streams, days, folded, ..
    } = fold;
    for ((product, store), work) in streams {
        work.save(&tx, product, store)?;
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO an_daily (store_id, day, product_id, units, revenue_minor, expired, oversells)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (store_id, day, product_id) DO UPDATE SET units = units + excluded.units,
             revenue_minor = revenue_minor + excluded.revenue_minor, expired = expired + excluded.expired,
             oversells = oversells + excluded.oversells",
    )?;
    for ((store, day, product), d) in days {
        upsert.execute(params![
            &store.as_bytes()[..],
            day,
            &product.as_bytes()[..],
            d.units,
            d.revenue_minor,
            d.expired,
            d.oversells
        ])?;
    }
    drop(upsert);
    if folded.position != before {
        write_checkpoint(&tx, CHECKPOINT, folded.position)?;
    }
    tx.commit()?;
    Ok(folded)
}

struct Fold<'a> {
    tx: &'a Transaction<'a>,
    settings: &'a Settings,
    streams: HashMap<(ProductId, StoreId), StreamWork>,
    days: HashMap<(StoreId, Day, ProductId), DayDelta>,
    prices: HashMap<ProductId, i64>,
    folded: Folded,
}

impl Fold<'_> {
    fn event(&mut self, event: &EventEnvelope) -> Result<(), ReadError> {
        self.folded.position = event.position;
        self.folded.events += 1;
        let product = event.stream.product_id;
        let Some(store) = event.stream.store_id else {
            // The catalog: the price of every later sale of this product.
            self.prices.remove(&product);
            return project_catalog(self.tx, event, &mut HashSet::new());
        };
        let work = match self.streams.entry((product, store)) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(StreamWork::load(self.tx, product, store)?)
            }
        };
        work.apply(event);
        let available = work.state.available();
        let day = local_day(self.settings.time_zone(store), event.metadata.occurred_at);
        let mut delta = DayDelta::default();
        match &event.payload {
            EventPayload::ReservationCommitted { quantity, .. } => delta.units = i64::from(*quantity),
            EventPayload::StockAdjusted { delta: d, reason } if *d < 0 && reason == SALE_REASON => {
                delta.units = d.saturating_neg()
            }
            EventPayload::StockReleased {
                reason: ReleaseReason::Expired,
                ..
            } => delta.expired = 1,
            EventPayload::OversellDetected { available, .. } => {
                delta.oversells = 1;
                self.alert(event, "oversell", *available, None)?;
            }
            _ => {}
        }
        if delta.units != 0 {
            let price = match self.prices.get(&product) {
                Some(price) => *price,
                None => *self.prices.entry(product).or_insert(price(self.tx, product)?),
            };
            delta.revenue_minor = delta.units.saturating_mul(price);
        }
        if delta.units != 0 || delta.expired != 0 || delta.oversells != 0 {
            let day = self.days.entry((store, day, product)).or_default();
            day.units += delta.units;
            day.revenue_minor += delta.revenue_minor;
            day.expired += delta.expired;
            day.oversells += delta.oversells;
        }
        self.low_stock(event, product, store, available)
    }

    /// Raises or clears the stream's low-stock alert after `event` left `available`.
    fn low_stock(
        &mut self,
        event: &EventEnvelope,
        product: ProductId,
        store: StoreId,
        available: i64,
    ) -> Result<(), ReadError> {
        let Some(point) = self.settings.reorder_point(product, store) else {
            return Ok(());
        };
        let keys = params![&product.as_bytes()[..], &store.as_bytes()[..]];
        let open: Option<i64> = self
            .tx
            .prepare_cached("SELECT alert FROM an_low_stock WHERE product_id = ?1 AND store_id = ?2")?
            .query_row(keys, |row| row.get(0))
            .optional()?;
        match open {
            None if available < point => {
                self.alert(event, "low_stock", available, Some(point))?;
                self.tx
                    .prepare_cached("INSERT INTO an_low_stock (product_id, store_id, alert) VALUES (?1, ?2, ?3)")?
                    .execute(params![
                        &product.as_bytes()[..],
                        &store.as_bytes()[..],
                        event.position as i64
                    ])?;
            }
            Some(raised) if available >= point => {
                self.alert(event, "low_stock_cleared", available, Some(point))?;
                self.tx
                    .prepare_cached("UPDATE an_alerts SET cleared_by = ?2 WHERE position = ?1")?
                    .execute(params![raised, event.position as i64])?;
                self.tx
                    .prepare_cached("DELETE FROM an_low_stock WHERE product_id = ?1 AND store_id = ?2")?
                    .execute(keys)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn alert(
        &mut self,
        event: &EventEnvelope,
        kind: &str,
        available: i64,
        reorder_point: Option<i64>,
    ) -> Result<(), ReadError> {
        self.tx
            .prepare_cached(
                "INSERT INTO an_alerts (position, kind, product_id, store_id, available, reorder_point, occurred_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                event.position as i64,
                kind,
                &event.stream.product_id.as_bytes()[..],
                &event.stream.store_id.map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
                available,
                reorder_point,
                time_text::encode(event.metadata.occurred_at)?,
            ])?;
        metrics::counter!("shelfsync_hub_analytics_alerts_total", "kind" => kind.to_owned()).increment(1);
        self.folded.alerts += 1;
        Ok(())
    }
}
