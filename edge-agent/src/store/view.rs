//! The agent's in-memory view of its store: for each product, the hub-confirmed state and
//! this store's unconfirmed events on top (local state = confirmed + pending), plus the
//! catalog and the sync position. The writer thread changes it only after a commit, so
//! reads never see what is not on disk; tills read it without touching SQLite.

use shelfsync_common::edge::LocalStockLevel;
use shelfsync_common::inventory::{self, InventoryState};
use shelfsync_common::wire::ProductView;
use shelfsync_common::{EventId, EventPayload, ProductId, ReservationId, StoreId};
use std::collections::{BTreeMap, HashMap, HashSet};
use time::OffsetDateTime;

/// An event recorded here and not yet part of the confirmed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    /// Outbox order.
    pub seq: u64,
    /// Its id.
    pub event_id: EventId,
    /// What it records.
    pub payload: EventPayload,
    /// When it was recorded.
    pub recorded_at: OffsetDateTime,
}

/// One product's stock at this store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamView {
    /// As the hub confirmed it.
    pub confirmed: InventoryState,
    /// Recorded here, unconfirmed, in outbox order.
    pub pending: Vec<PendingEvent>,
}

impl StreamView {
    /// Confirmed state with the pending events applied on top.
    pub fn local(&self) -> InventoryState {
        let mut state = self.confirmed.clone();
        for event in &self.pending {
            inventory::apply(&mut state, &event.payload);
        }
        state
    }
}

/// Where the agent is in the hub's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPosition {
    /// Last hub position applied.
    pub cursor: u64,
    /// The hub's head as last seen.
    pub hub_head: u64,
    /// Whether the starting snapshot was taken.
    pub bootstrapped: bool,
    /// Last successful exchange with the hub.
    pub last_sync_at: Option<OffsetDateTime>,
}

/// Everything tills read.
#[derive(Debug, Clone)]
pub struct View {
    /// This store.
    pub store_id: StoreId,
    /// Stock by product.
    pub streams: HashMap<ProductId, StreamView>,
    /// The catalog by product.
    pub catalog: HashMap<ProductId, ProductView>,
    /// SKU index of the catalog.
    pub skus: HashMap<String, ProductId>,
    /// Reservations made here (this store expires them).
    pub own_reservations: HashSet<ReservationId>,
    /// Events quarantined by the hub.
    pub quarantined: u64,
    /// Sync position.
    pub sync: SyncPosition,
}

impl View {
    /// An empty view of `store_id`.
    pub fn new(store_id: StoreId) -> Self {
        Self {
            store_id,
            streams: HashMap::new(),
            catalog: HashMap::new(),
            skus: HashMap::new(),
            own_reservations: HashSet::new(),
            quarantined: 0,
            sync: SyncPosition::default(),
        }
    }

    /// The local stock of a product (`None` when it has no stream here yet).
    pub fn stock(&self, product: ProductId) -> Option<LocalStockLevel> {
        self.streams
            .get(&product)
            .map(|stream| level(self.store_id, product, stream))
    }

    /// The local state a command is decided against.
    pub fn local_state(&self, product: ProductId) -> InventoryState {
        self.streams.get(&product).map(StreamView::local).unwrap_or_default()
    }

    /// A product by SKU.
    pub fn product_by_sku(&self, sku: &str) -> Option<&ProductView> {
        self.skus.get(sku).and_then(|id| self.catalog.get(id))
    }

    /// Unconfirmed events and the time the oldest was recorded.
    pub fn outbox(&self) -> (u64, Option<OffsetDateTime>) {
        let pending = self.streams.values().flat_map(|s| s.pending.iter());
        pending.fold((0, None), |(count, oldest), event| {
            let oldest = match oldest {
                Some(at) if at <= event.recorded_at => Some(at),
                _ => Some(event.recorded_at),
            };
            (count + 1, oldest)
        })
    }

    /// Reservations made here, open in the local state, expiring at or before `now`.
    pub fn own_expired(&self, now: OffsetDateTime) -> Vec<(ProductId, ReservationId)> {
        let mut due = BTreeMap::new();
        for (product, stream) in &self.streams {
            for id in stream.local().expired_reservations(now) {
                if self.own_reservations.contains(&id) {
                    due.insert(id, *product);
                }
            }
        }
        due.into_iter().map(|(id, product)| (product, id)).collect()
    }

    /// Replaces a product in the catalog, keeping the SKU index right.
    pub fn put_product(&mut self, product: ProductView) {
        if let Some(old) = self.catalog.get(&product.product.id) {
            // Only while the old SKU still names this product: after a swap of SKUs it may
            // already name another one.
            if old.product.sku != product.product.sku && self.skus.get(&old.product.sku) == Some(&product.product.id) {
                self.skus.remove(&old.product.sku);
            }
        }
        self.skus.insert(product.product.sku.clone(), product.product.id);
        self.catalog.insert(product.product.id, product);
    }
}

/// Local figures of one stream.
pub fn level(store: StoreId, product: ProductId, stream: &StreamView) -> LocalStockLevel {
    let local = stream.local();
    LocalStockLevel {
        product_id: product,
        store_id: store,
        on_hand: local.on_hand,
        reserved: local.reserved(),
        available: local.available(),
        confirmed_version: stream.confirmed.version,
        pending_events: stream.pending.len() as u32,
        includes_pending: !stream.pending.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(seq: u64, payload: EventPayload) -> PendingEvent {
        PendingEvent {
            seq,
            event_id: EventId::from_bytes([seq as u8; 16]),
            payload,
            recorded_at: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(seq as i64),
        }
    }

    #[test]
    fn local_figures_are_confirmed_plus_pending_and_say_so() {
        let product = ProductId::from_bytes([1; 16]);
        let mut view = View::new(StoreId::from_bytes([9; 16]));
        let mut stream = StreamView::default();
        inventory::apply(&mut stream.confirmed, &EventPayload::StockAdded { quantity: 10 });
        stream.pending.push(pending(
            1,
            EventPayload::StockAdjusted {
                delta: -3,
                reason: "broken".into(),
            },
        ));
        view.streams.insert(product, stream);
        let level = view.stock(product).unwrap();
        assert_eq!((level.on_hand, level.available, level.confirmed_version), (7, 7, 1));
        assert!(level.includes_pending && level.pending_events == 1);
        assert_eq!(
            view.outbox(),
            (1, Some(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1)))
        );
    }

    #[test]
    fn only_own_reservations_are_due_for_expiry() {
        let product = ProductId::from_bytes([1; 16]);
        let (mine, theirs) = (ReservationId::from_bytes([1; 16]), ReservationId::from_bytes([2; 16]));
        let mut view = View::new(StoreId::from_bytes([9; 16]));
        let mut stream = StreamView::default();
        for id in [mine, theirs] {
            let expires_at = OffsetDateTime::UNIX_EPOCH;
            inventory::apply(
                &mut stream.confirmed,
                &EventPayload::StockReserved {
                    reservation_id: id,
                    quantity: 1,
                    expires_at,
                },
            );
        }
        view.streams.insert(product, stream);
        view.own_reservations.insert(mine);
        assert_eq!(view.own_expired(OffsetDateTime::now_utc()), vec![(product, mine)]);
    }
}
