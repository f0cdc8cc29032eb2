//! The agent's in-memory view of its store: for each product, the hub-confirmed state and
//! this store's unconfirmed events on top (local state = confirmed + pending), plus the
//! catalog and the sync position. The writer thread changes it only after a commit, so
//! reads never see what is not on disk; tills read it without touching SQLite.

use shelfsync_common::domain::allocation::Side;
use shelfsync_common::domain::inventory::{self, InventoryState};
use shelfsync_common::wire::api::AllocationView;
use shelfsync_common::wire::api::ProductView;
use shelfsync_common::wire::edge::LocalStockLevel;
use shelfsync_common::{EventId, EventPayload, ProductId, ReservationId, StoreId};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use time::OffsetDateTime;

/// An event recorded here and not yet part of the confirmed state.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(test), derive(Clone))]
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

/// One product's stock at this store: the hub-confirmed state, this store's unconfirmed
/// events on top, and their sum (`local`), kept up to date so that reading it costs
/// nothing however long the store has been offline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamView {
    confirmed: InventoryState,
    pending: VecDeque<PendingEvent>,
    local: InventoryState,
}

impl StreamView {
    /// A stream with this confirmed state and nothing pending.
    pub fn new(confirmed: InventoryState) -> Self {
        Self {
            local: confirmed.clone(),
            confirmed,
            pending: VecDeque::new(),
        }
    }

    /// As the hub confirmed it.
    pub fn confirmed(&self) -> &InventoryState {
        &self.confirmed
    }

    /// Recorded here, unconfirmed, in outbox order.
    pub fn pending(&self) -> &VecDeque<PendingEvent> {
        &self.pending
    }

    /// Confirmed state with the pending events applied on top.
    pub fn local(&self) -> &InventoryState {
        &self.local
    }

    /// A new event recorded here (the newest).
    pub fn record(&mut self, event: PendingEvent) {
        inventory::apply(&mut self.local, &event.payload, Side::Store);
        self.pending.push_back(event);
    }

    /// An event from the hub's feed at `version`; returns the outbox seq of the event when
    /// it was one of ours leaving the pending set. Our oldest pending event coming back
    /// (the usual case) leaves the local state as it was: the same events, in the same
    /// order, so it costs O(1) however many are pending.
    pub fn confirm(&mut self, event_id: EventId, (payload, by): (&EventPayload, Side), version: u64) -> Option<u64> {
        inventory::apply(&mut self.confirmed, payload, by);
        let in_order = self.confirmed.version == version;
        self.confirmed.version = version;
        if in_order && self.pending.front().is_some_and(|p| p.event_id == event_id) {
            return self.pending.pop_front().map(|p| p.seq);
        }
        let own = self.take_pending(event_id);
        self.recompute();
        own
    }

    /// Takes an event out of the pending set (the hub rejected it); returns its seq.
    pub fn remove_pending(&mut self, event_id: EventId) -> Option<u64> {
        let seq = self.take_pending(event_id);
        self.recompute();
        seq
    }

    fn take_pending(&mut self, event_id: EventId) -> Option<u64> {
        let index = self.pending.iter().position(|p| p.event_id == event_id)?;
        self.pending.remove(index).map(|p| p.seq)
    }

    /// Puts an event back into the pending set, in outbox order (a quarantine retry).
    pub fn restore_pending(&mut self, event: PendingEvent) {
        let at = self.pending.partition_point(|p| p.seq < event.seq);
        self.pending.insert(at, event);
        self.recompute();
    }

    /// Replaces the confirmed state (a snapshot), keeping the pending events on top.
    pub fn replace_confirmed(&mut self, confirmed: InventoryState) {
        self.confirmed = confirmed;
        self.recompute();
    }

    fn recompute(&mut self) {
        self.local = self.confirmed.clone();
        for event in &self.pending {
            inventory::apply(&mut self.local, &event.payload, Side::Store);
        }
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
    /// The last event of the hub's feed applied here: its position and id. The sync worker
    /// checks that the hub's log still holds it ([`crate::sync`], the restore check).
    pub anchor: Option<(u64, EventId)>,
    /// The last re-sync from the hub's snapshot, if any.
    pub resynced: Option<shelfsync_common::wire::sync::Resynced>,
}

/// One change to a stream. The writer applies it to its own copy of the view while the
/// batch runs, and replays the same change on the shared view after the commit: a batch
/// costs what it changes, never a copy of a stream's pending events.
#[derive(Debug)]
pub enum StreamOp {
    /// A new event recorded here.
    Record(PendingEvent),
    /// An event of this stream from the hub's feed.
    Confirm {
        /// Its id (ours if it is in the pending set).
        event_id: EventId,
        /// What it records.
        payload: EventPayload,
        /// Who recorded it.
        by: Side,
        /// Its stream version.
        version: u64,
    },
    /// The hub rejected one of ours.
    RemovePending(EventId),
    /// A quarantined event retried.
    RestorePending(PendingEvent),
    /// A snapshot's confirmed state.
    ReplaceConfirmed(InventoryState),
}

/// Everything tills read.
#[derive(Debug, Clone)]
pub struct View {
    /// This store.
    pub store_id: StoreId,
    /// Stock by product (changed through [`View::apply`] only, which keeps the indexes).
    streams: HashMap<ProductId, StreamView>,
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
    /// The pending events' recording times by outbox seq: the outbox's depth and age in O(1).
    unconfirmed: BTreeMap<u64, OffsetDateTime>,
    /// The stream each reservation was last opened on (checked against that stream's
    /// local state on lookup), so that a command on a reservation finds its product
    /// without scanning every stream.
    reservations: HashMap<ReservationId, ProductId>,
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
            unconfirmed: BTreeMap::new(),
            reservations: HashMap::new(),
        }
    }

    /// Stock by product.
    pub fn streams(&self) -> &HashMap<ProductId, StreamView> {
        &self.streams
    }

    /// The local stock of a product (`None` when it has no stream here yet).
    pub fn stock(&self, product: ProductId) -> Option<LocalStockLevel> {
        self.streams
            .get(&product)
            .map(|stream| level(self.store_id, product, stream))
    }

    /// A product by SKU.
    pub fn product_by_sku(&self, sku: &str) -> Option<&ProductView> {
        self.skus.get(sku).and_then(|id| self.catalog.get(id))
    }

    /// Unconfirmed events and the time the oldest (first recorded) was recorded; O(1).
    pub fn outbox(&self) -> (u64, Option<OffsetDateTime>) {
        let oldest = self.unconfirmed.first_key_value().map(|(_, at)| *at);
        (self.unconfirmed.len() as u64, oldest)
    }

    /// The product whose local state holds this open reservation.
    pub fn reservation_product(&self, id: ReservationId) -> Option<ProductId> {
        let product = *self.reservations.get(&id)?;
        let open = self
            .streams
            .get(&product)
            .is_some_and(|s| s.local().reservations.contains_key(&id));
        open.then_some(product)
    }

    /// Applies one change to a stream, keeping the outbox and reservation indexes; returns
    /// whether one of ours left the pending set. A stream left with nothing confirmed and
    /// nothing pending is dropped (it has no row on disk either: its only event was
    /// rejected), as a restart would.
    pub fn apply(&mut self, product: ProductId, op: &StreamOp) -> bool {
        let stream = self.streams.entry(product).or_default();
        let mut own = false;
        match op {
            StreamOp::Record(event) | StreamOp::RestorePending(event) => {
                self.unconfirmed.insert(event.seq, event.recorded_at);
                if matches!(op, StreamOp::Record(_)) {
                    stream.record(event.clone());
                } else {
                    stream.restore_pending(event.clone());
                }
            }
            StreamOp::Confirm {
                event_id,
                payload,
                by,
                version,
            } => {
                if let Some(seq) = stream.confirm(*event_id, (payload, *by), *version) {
                    self.unconfirmed.remove(&seq);
                    own = true;
                }
            }
            StreamOp::RemovePending(event_id) => {
                if let Some(seq) = stream.remove_pending(*event_id) {
                    self.unconfirmed.remove(&seq);
                }
            }
            StreamOp::ReplaceConfirmed(state) => {
                stream.replace_confirmed(state.clone());
                for id in stream.local().reservations.keys() {
                    self.reservations.insert(*id, product);
                }
            }
        }
        let payload = match op {
            StreamOp::Record(event) | StreamOp::RestorePending(event) => Some(&event.payload),
            StreamOp::Confirm { payload, .. } => Some(payload),
            StreamOp::RemovePending(_) | StreamOp::ReplaceConfirmed(_) => None,
        };
        // The index names the product whose local state holds the hold open, whatever the
        // event: a hold's id may be reused on another product once it closed, and the
        // hub's confirmation of the old hold (reserved, then released) may arrive after
        // that; it must not take the id away from the open hold.
        let touched = match payload {
            Some(
                EventPayload::StockReserved { reservation_id, .. }
                | EventPayload::StockReleased { reservation_id, .. }
                | EventPayload::ReservationCommitted { reservation_id, .. },
            ) => Some(*reservation_id),
            _ => None,
        };
        if let Some(id) = touched {
            if stream.local().reservations.contains_key(&id) {
                self.reservations.insert(id, product);
            } else if self.reservations.get(&id) == Some(&product) {
                self.reservations.remove(&id);
            }
        }
        if *stream == StreamView::default() {
            self.streams.remove(&product);
        }
        own
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
        confirmed_version: stream.confirmed().version,
        pending_events: stream.pending().len() as u32,
        includes_pending: !stream.pending().is_empty(),
        allocation: AllocationView::of(local),
    }
}

/// How many pending events were copied on this thread (tests count them to show that a
/// write's cost does not depend on how many are pending).
#[cfg(test)]
pub(crate) mod copies {
    thread_local! {
        static PENDING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    pub(crate) fn count() {
        PENDING.with(|c| c.set(c.get() + 1));
    }

    /// Pending events copied on this thread so far.
    pub(crate) fn so_far() -> u64 {
        PENDING.with(std::cell::Cell::get)
    }
}

#[cfg(test)]
impl Clone for PendingEvent {
    fn clone(&self) -> Self {
        copies::count();
        Self {
            seq: self.seq,
            event_id: self.event_id,
            payload: self.payload.clone(),
            recorded_at: self.recorded_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelfsync_common::domain::event::ReleaseReason;

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
        let mut confirmed = InventoryState::default();
        inventory::apply(&mut confirmed, &EventPayload::StockAdded { quantity: 10 }, Side::Hub);
        view.apply(product, &StreamOp::ReplaceConfirmed(confirmed));
        let broken = EventPayload::StockAdjusted {
            delta: -3,
            reason: "broken".into(),
        };
        view.apply(product, &StreamOp::Record(pending(1, broken)));
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
        let mut confirmed = InventoryState::default();
        for id in [mine, theirs] {
            let expires_at = OffsetDateTime::UNIX_EPOCH;
            let reserved = EventPayload::StockReserved {
                reservation_id: id,
                quantity: 1,
                expires_at,
            };
            inventory::apply(&mut confirmed, &reserved, Side::Hub);
        }
        view.apply(product, &StreamOp::ReplaceConfirmed(confirmed));
        view.own_reservations.insert(mine);
        assert_eq!(view.reservation_product(theirs), Some(product), "found by the index");
        assert_eq!(view.own_expired(OffsetDateTime::now_utc()), vec![(product, mine)]);
    }

    #[test]
    fn a_reused_hold_id_stays_found_when_the_old_hold_is_confirmed_late() {
        let (old, new) = (ProductId::from_bytes([1; 16]), ProductId::from_bytes([2; 16]));
        let id = ReservationId::from_bytes([7; 16]);
        let reserved = EventPayload::StockReserved {
            reservation_id: id,
            quantity: 1,
            expires_at: OffsetDateTime::UNIX_EPOCH,
        };
        let released = EventPayload::StockReleased {
            reservation_id: id,
            quantity: 1,
            reason: ReleaseReason::Expired,
        };
        let mut view = View::new(StoreId::from_bytes([9; 16]));
        // Held on one product, lapsed, then the id reused on another, all offline.
        view.apply(old, &StreamOp::Record(pending(1, reserved.clone())));
        view.apply(old, &StreamOp::Record(pending(2, released.clone())));
        view.apply(new, &StreamOp::Record(pending(3, reserved.clone())));
        assert_eq!(view.reservation_product(id), Some(new));
        // The hub confirms the old hold's two events afterwards.
        for (seq, payload) in [(1u64, &reserved), (2, &released)] {
            let event_id = EventId::from_bytes([seq as u8; 16]);
            let (by, version) = (Side::Store, seq);
            view.apply(
                old,
                &StreamOp::Confirm {
                    event_id,
                    payload: payload.clone(),
                    by,
                    version,
                },
            );
            assert_eq!(view.reservation_product(id), Some(new), "after confirming event {seq}");
        }
    }

    #[test]
    fn the_cached_local_state_always_equals_confirmed_plus_pending() {
        let fold = |stream: &StreamView| {
            let mut state = stream.confirmed().clone();
            stream
                .pending()
                .iter()
                .for_each(|p| inventory::apply(&mut state, &p.payload, Side::Store));
            state
        };
        let mut stream = StreamView::new(InventoryState::default());
        for seq in 1..=4 {
            stream.record(pending(seq, EventPayload::StockAdded { quantity: seq as u32 }));
        }
        assert_eq!(stream.local(), &fold(&stream));
        let first = stream.pending()[0].clone();
        assert_eq!(
            stream.confirm(first.event_id, (&first.payload, Side::Store), 1),
            Some(1),
            "ours, in order"
        );
        assert_eq!(stream.local(), &fold(&stream));
        let web = EventPayload::StockAdjusted {
            delta: -1,
            reason: "web".into(),
        };
        assert_eq!(
            stream.confirm(EventId::from_bytes([99; 16]), (&web, Side::Hub), 2),
            None,
            "another origin's event"
        );
        assert_eq!(stream.local(), &fold(&stream));
        let third = stream.pending()[1].clone();
        assert_eq!(
            stream.confirm(third.event_id, (&third.payload, Side::Store), 3),
            Some(3),
            "ours, out of order"
        );
        assert_eq!(stream.local(), &fold(&stream));
        stream.remove_pending(stream.pending()[0].event_id);
        assert_eq!(stream.local(), &fold(&stream));
        stream.restore_pending(first.clone());
        assert_eq!(stream.pending()[0].seq, 1);
        assert_eq!(stream.local(), &fold(&stream));
        stream.replace_confirmed(InventoryState::default());
        assert_eq!(stream.local(), &fold(&stream));
    }
}
