//! What a store's tills record, as upload events: per product in turn a delivery, a hold
//! and its sale, so stock never goes below zero (the upload benches share it).

use shelfsync_common::wire::sync::UploadEvent;
use shelfsync_common::{EventId, EventMetadata, EventPayload, Origin, ProductId, ReservationId, StoreId, StreamId};
use time::OffsetDateTime;

/// Makes one store's events in till order: per product in turn, a delivery, a hold, and
/// the sale of that hold.
pub struct Till {
    store: StoreId,
    products: Vec<ProductId>,
    next: usize,
    open: Vec<Option<ReservationId>>,
}

impl Till {
    pub fn new(store: StoreId) -> Self {
        let products: Vec<ProductId> = shelfsync_hub::seed::products().iter().map(|p| p.id).collect();
        let open = vec![None; products.len()];
        Self {
            store,
            products,
            next: 0,
            open,
        }
    }

    fn event(&mut self) -> UploadEvent {
        let p = self.next % self.products.len();
        let kind = (self.next / self.products.len()) % 3;
        self.next += 1;
        let payload = match kind {
            0 => EventPayload::StockAdded { quantity: 2 },
            1 => {
                let reservation_id = ReservationId::new_v7();
                self.open[p] = Some(reservation_id);
                EventPayload::StockReserved {
                    reservation_id,
                    quantity: 1,
                    expires_at: OffsetDateTime::now_utc() + time::Duration::hours(2),
                }
            }
            _ => EventPayload::ReservationCommitted {
                reservation_id: self.open[p].take().expect("a hold to sell"),
                quantity: 1,
            },
        };
        UploadEvent {
            event_id: EventId::new_v7(),
            stream: StreamId::inventory(self.products[p], self.store),
            event_type: payload.event_type().into(),
            schema_version: 1,
            data: payload.data(),
            metadata: EventMetadata {
                origin: Origin::Store(self.store),
                actor: format!("terminal:till-{}", 1 + p % 4),
                correlation_id: uuid::Uuid::now_v7(),
                causation_id: None,
                occurred_at: OffsetDateTime::now_utc(),
                recorded_at: None,
            },
        }
    }

    pub fn batch(&mut self, size: usize) -> Vec<UploadEvent> {
        (0..size).map(|_| self.event()).collect()
    }
}
