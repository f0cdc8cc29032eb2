//! A write's cost does not depend on how many events are unconfirmed: counted, not timed.
//! The tests run one batch of the writer on the test's own thread, against a view holding
//! few or many pending events of the same product, and count the pending events copied
//! (a batch that copied a stream's pending set, as the writer once did, copies them all).

use super::*;
use crate::store::view::copies;
use shelfsync_common::{Product, StockQuantity};

fn store() -> StoreId {
    StoreId::from_bytes([7; 16])
}

fn product() -> ProductId {
    ProductId::from_bytes([1; 16])
}

fn metadata() -> EventMetadata {
    EventMetadata {
        origin: Origin::Store(store()),
        actor: "till-1".into(),
        correlation_id: uuid::Uuid::now_v7(),
        causation_id: None,
        occurred_at: OffsetDateTime::now_utc(),
        recorded_at: None,
    }
}

fn added(seq: u64) -> PendingEvent {
    PendingEvent {
        seq,
        event_id: EventId::new_v7(),
        payload: EventPayload::StockAdded { quantity: 1 },
        recorded_at: OffsetDateTime::now_utc(),
    }
}

/// A store database and a view with `pending` unconfirmed events of [`product`].
fn store_with(pending: u64) -> (Connection, View) {
    let mut conn = Connection::open_in_memory().expect("an in-memory database");
    shelfsync_common::sqlite::migrate(&mut conn, MIGRATIONS).expect("migrate");
    let mut view = View::new(store());
    view.put_product(ProductView {
        product: Product {
            id: product(),
            sku: "APL-1".into(),
            name: "Apple".into(),
            price_minor: 120,
        },
        version: 1,
    });
    for seq in 1..=pending {
        view.apply(product(), &StreamOp::Record(added(seq)));
    }
    (conn, view)
}

/// Runs `write` as one batch (and publishes it to a copy of the shared view); returns the
/// pending events copied on the way.
fn copies_of_one_batch(pending: u64, write: impl FnOnce(&mut Batch<'_>, &Transaction<'_>)) -> u64 {
    let (mut conn, mut view) = store_with(pending);
    let mut shared = view.clone();
    let tx = conn.transaction().expect("a transaction");
    let before = copies::so_far();
    let mut batch = Batch::new(&mut view, pending + 1);
    write(&mut batch, &tx);
    batch.finish(&tx).expect("finish the batch");
    let changes = std::mem::take(&mut batch.changes);
    changes.apply_to(&mut shared);
    let copied = copies::so_far() - before;
    assert_eq!(
        shared.outbox().0,
        view.outbox().0,
        "the shared view got the same change"
    );
    copied
}

fn sell(batch: &mut Batch<'_>, tx: &Transaction<'_>) {
    let command = LocalCommand {
        target: Target::Product(product()),
        command: InventoryCommand::AddStock {
            quantity: StockQuantity::new(1).expect("a quantity"),
        },
        event_id: EventId::new_v7(),
        idempotency: None,
        metadata: metadata(),
        over_share: Default::default(),
    };
    let result = batch.command(tx, command).expect("SQLite").expect("recorded");
    assert!(result.stock.includes_pending);
}

#[test]
fn a_till_write_copies_no_more_pending_events_with_a_deep_outbox() {
    let shallow = copies_of_one_batch(10, sell);
    let deep = copies_of_one_batch(5_000, sell);
    assert_eq!(shallow, deep, "a write's copies do not grow with the outbox");
    assert!(
        deep <= 2,
        "only the new event is copied (into the view and the log), got {deep}"
    );
}

#[test]
fn confirming_the_oldest_own_event_copies_nothing_with_a_deep_outbox() {
    let confirm_oldest = |pending: u64| {
        copies_of_one_batch(pending, |batch, tx| {
            let oldest = batch.stream(product()).expect("a stream").pending()[0].event_id;
            let event = EventEnvelope {
                event_id: oldest,
                stream: StreamId::inventory(product(), store()),
                stream_version: 1,
                position: 1,
                schema_version: shelfsync_common::domain::event::CURRENT_SCHEMA_VERSION,
                payload: EventPayload::StockAdded { quantity: 1 },
                metadata: metadata(),
            };
            let report = batch.apply_hub(tx, vec![event], 1, 1).expect("SQLite");
            assert_eq!(report.confirmed_own, 1);
        })
    };
    assert_eq!((confirm_oldest(10), confirm_oldest(5_000)), (0, 0));
}
