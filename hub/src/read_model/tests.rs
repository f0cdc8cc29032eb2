//! The projector, the row readers and rebuilds, against a real event store.

use super::rebuild::sibling;
use super::testing::{reach, Fixture};
use super::*;
use shelfsync_common::domain::event::ReleaseReason;
use shelfsync_common::{InventoryCommand, StockQuantity};
use time::macros::datetime;

fn read_model_conn(path: &Path) -> Connection {
    schema::open_read_only(path).unwrap()
}

/// Every row of every table, in key order, as text.
fn dump(path: &Path) -> Vec<String> {
    let conn = read_model_conn(path);
    let mut out = Vec::new();
    for (table, order) in [
        ("stock", "product_id, store_id"),
        ("products", "id"),
        ("reservations", "product_id, store_id, reservation_id"),
        ("checkpoint", "name"),
    ] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let values: Vec<String> = (0..columns)
                .map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect();
            out.push(format!("{table}: {}", values.join(", ")));
        }
    }
    out
}

fn start(fixture: &Fixture) -> (ProjectionHandle, watch::Sender<bool>) {
    let (stop, stopped) = watch::channel(false);
    let handle = spawn(fixture.log.clone(), &fixture.read_model_path(), stopped).unwrap();
    (handle, stop)
}

#[tokio::test]
async fn projects_events_with_their_checkpoint_and_resumes_after_a_restart() {
    let fixture = Fixture::new().await;
    let rid = ReservationId::new_v7();
    fixture.add(5).await;
    let reserved = fixture.reserve(fixture.product, fixture.shop, rid, 2).await;

    let (handle, stop) = start(&fixture);
    let mut projected = handle.projected();
    reach(&mut projected, reserved.position).await;
    let model = handle.queries();
    let level = model.stock_level(fixture.product, fixture.shop).await.unwrap();
    assert_eq!(
        level.position, reserved.position,
        "value and checkpoint come from one snapshot"
    );
    let level = level.value.unwrap();
    assert_eq!(
        (level.on_hand, level.reserved, level.available, level.version),
        (5, 2, 3, 2)
    );
    assert_eq!(level.position, reserved.position);
    assert_eq!(model.checkpoint().await.unwrap(), reserved.position);
    let open = model.open_reservations(fixture.shop).await.unwrap().value;
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].reservation_id, open[0].quantity, open[0].origin),
        (rid, 2, Origin::Hub)
    );
    let product = model.product(fixture.product).await.unwrap().value.unwrap();
    assert_eq!((product.product.sku.as_str(), product.version), ("SKU-1", 1));
    assert_eq!(
        model
            .product_by_sku("SKU-1".into())
            .await
            .unwrap()
            .value
            .map(|p| p.product.id),
        Some(fixture.product)
    );

    stop.send(true).unwrap();
    handle.join().await;

    // Written while the projector is down.
    fixture.add(3).await;
    let sold = fixture
        .inventory(
            fixture.product,
            fixture.shop,
            InventoryCommand::CommitReservation { reservation_id: rid },
        )
        .await;
    let stale = ReadModel::new(&fixture.read_model_path());
    assert_eq!(stale.checkpoint().await.unwrap(), reserved.position);

    let (handle, _stop) = start(&fixture);
    let mut projected = handle.projected();
    assert_eq!(*projected.borrow(), reserved.position, "restarts from its checkpoint");
    reach(&mut projected, sold.position).await;
    let level = handle
        .queries()
        .stock_level(fixture.product, fixture.shop)
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(
        (level.on_hand, level.reserved, level.available, level.version),
        (6, 0, 6, 4)
    );
    assert!(handle
        .queries()
        .open_reservations(fixture.shop)
        .await
        .unwrap()
        .value
        .is_empty());
    let stock = handle.queries().product_stock(fixture.product).await.unwrap().value;
    assert_eq!(
        (stock.stores.len(), stock.total_on_hand, stock.total_available),
        (1, 6, 6)
    );
}

#[tokio::test]
async fn a_backlog_of_several_feed_pages_is_caught_up_exactly() {
    let fixture = Fixture::new().await;
    let tea = ProductId::new_v7();
    fixture.register(tea, "TEA", "Tea").await;
    let adds = (0..2_500).map(|i| {
        let product = if i % 2 == 0 { fixture.product } else { tea };
        fixture.inventory(
            product,
            fixture.shop,
            InventoryCommand::AddStock {
                quantity: StockQuantity::new(1 + i % 3).unwrap(),
            },
        )
    });
    futures_util::future::join_all(adds).await;
    let head = fixture.log.bus().head();
    let (handle, _stop) = start(&fixture);
    reach(&mut handle.projected(), head).await;
    let model = handle.queries();
    let coffee = model
        .stock_level(fixture.product, fixture.shop)
        .await
        .unwrap()
        .value
        .unwrap();
    let tea = model.stock_level(tea, fixture.shop).await.unwrap().value.unwrap();
    let expected = |parity: i64| {
        (0..2_500i64)
            .filter(|i| i % 2 == parity)
            .map(|i| 1 + i % 3)
            .sum::<i64>()
    };
    assert_eq!((coffee.on_hand, coffee.version), (expected(0), 1_250));
    assert_eq!((tea.on_hand, tea.version), (expected(1), 1_250));
    assert_eq!(model.checkpoint().await.unwrap(), head);
}

#[tokio::test]
async fn a_failing_batch_changes_nothing_not_even_the_checkpoint() {
    let fixture = Fixture::new().await;
    fixture.add(5).await;
    let other = ProductId::new_v7();
    let last = fixture.register(other, "SKU-2", "Tea").await;
    let events = fixture.log.read_after(0, 100).await.unwrap();
    assert_eq!(events.last().unwrap().position, last.position);

    let mut conn = open_writer(&fixture.read_model_path()).unwrap();
    // A row that makes the last event's insert fail (SKU-2 is unique).
    conn.execute(
        "INSERT INTO products VALUES (?1, 'SKU-2', 'squatter', 1, 1, 0)",
        [&ProductId::new_v7().as_bytes()[..]],
    )
    .unwrap();
    let before = dump(&fixture.read_model_path());
    assert!(apply_batch(&mut conn, &events).is_err());
    assert_eq!(dump(&fixture.read_model_path()), before, "the whole batch rolled back");
    assert_eq!(read_checkpoint(&conn).unwrap(), 0);

    conn.execute("DELETE FROM products WHERE name = 'squatter'", [])
        .unwrap();
    let applied = apply_batch(&mut conn, &events).unwrap();
    assert_eq!((applied.position, applied.events), (last.position, events.len()));
    assert!(applied.touched.contains(&ViewKey::Stock(fixture.product, fixture.shop)));
    assert!(applied.touched.contains(&ViewKey::Sku("SKU-2".into())));
    assert_eq!(read_checkpoint(&conn).unwrap(), last.position);
    // Applying the same events again is a no-op.
    let again = apply_batch(&mut conn, &events).unwrap();
    assert_eq!((again.position, again.events), (last.position, 0));
    assert_eq!(
        read_stock_level(&conn, fixture.product, fixture.shop)
            .unwrap()
            .unwrap()
            .on_hand,
        5
    );
}

#[tokio::test]
async fn the_projector_retries_a_failing_batch_until_it_commits_and_skips_nothing() {
    let fixture = Fixture::new().await;
    let tea = ProductId::new_v7();
    {
        let conn = open_writer(&fixture.read_model_path()).unwrap();
        conn.execute(
            "INSERT INTO products VALUES (?1, 'SKU-2', 'squatter', 1, 1, 0)",
            [&ProductId::new_v7().as_bytes()[..]],
        )
        .unwrap();
    }
    let registered = fixture.register(tea, "SKU-2", "Tea").await;
    let (handle, _stop) = start(&fixture);
    let mut projected = handle.projected();
    // Ahead of the failing event, the projector is stuck (retrying), not skipping.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(*projected.borrow() < registered.position);
    assert!(
        handle.stall().borrow().is_some(),
        "a stuck projector says so (/readyz fails)"
    );
    {
        let conn = open_writer(&fixture.read_model_path()).unwrap();
        conn.execute("DELETE FROM products WHERE name = 'squatter'", [])
            .unwrap();
    }
    reach(&mut projected, registered.position).await;
    let tea_view = handle.queries().product(tea).await.unwrap().value.unwrap();
    assert_eq!(tea_view.product.sku, "SKU-2");
    assert!(handle.queries().product(fixture.product).await.unwrap().value.is_some());
}

/// Writes, behind the writer's back, the event an earlier build let in: a hold whose
/// expiry is valid RFC 3339 text but lies in the year 10000 in UTC. Returns its position.
fn sneak_in_year_10000_hold(fixture: &Fixture, after: u64, stream_version: u64) -> u64 {
    let conn = schema::open_durable(&fixture.events_path()).unwrap();
    let position = after + 1;
    conn.execute(
        "INSERT INTO events (position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata, fingerprint)
         VALUES (?1, ?2, ?3, ?4, 'StockReserved', 1, ?5, ?6, ?7)",
        params![
            position as i64,
            &shelfsync_common::EventId::new_v7().as_bytes()[..],
            &shelfsync_common::StreamId::inventory(fixture.product, fixture.shop).key()[..],
            stream_version as i64,
            serde_json::json!({
                "reservation_id": ReservationId::new_v7(),
                "quantity": 1,
                "expires_at": "9999-12-31T23:59:59-23:59",
            })
            .to_string(),
            serde_json::json!({
                "origin": "hub", "actor": "earlier-build", "correlation_id": uuid::Uuid::now_v7(),
                "occurred_at": "2026-01-01T00:00:00Z", "recorded_at": "2026-01-01T00:00:00Z",
            })
            .to_string(),
            &[0u8; 16][..],
        ],
    )
    .unwrap();
    position
}

#[tokio::test]
async fn a_poison_event_is_skipped_recorded_and_the_projection_goes_on() {
    let mut fixture = Fixture::new().await;
    let added = fixture.add(5).await;
    fixture.log.close().await;
    let poison = sneak_in_year_10000_hold(&fixture, added.position, added.stream_version + 1);
    fixture.log = EventStore::open(&fixture.events_path(), crate::bus::EventBus::new()).unwrap();
    let after = fixture.add(2).await;
    assert!(after.position > poison);

    let (handle, _stop) = start(&fixture);
    let mut projected = handle.projected();
    reach(&mut projected, after.position).await;
    assert_eq!(*handle.stall().borrow(), None, "not stuck");
    let stock = handle
        .queries()
        .stock_level(fixture.product, fixture.shop)
        .await
        .unwrap();
    assert_eq!(stock.value.map(|s| (s.on_hand, s.reserved)), Some((7, 0)));
    let (count, skipped) = handle.queries().poison_events(10).await.unwrap();
    assert_eq!(count, 1);
    assert_eq!(skipped[0].position, poison);
    assert!(skipped[0].reason.contains("cannot be stored"), "{}", skipped[0].reason);
}

#[tokio::test]
async fn a_rebuild_skips_a_poison_event_too() {
    let fixture = Fixture::new().await;
    let added = fixture.add(5).await;
    fixture.log.close().await;
    let poison = sneak_in_year_10000_hold(&fixture, added.position, added.stream_version + 1);
    let applied = rebuild(&fixture.events_path(), &fixture.read_model_path(), false).unwrap();
    assert_eq!(applied, added.position, "every event but the poison one");
    let conn = read_model_conn(&fixture.read_model_path());
    assert_eq!(read_checkpoint(&conn).unwrap(), poison);
    let (count, skipped) = read_poison_events(&conn, 10).unwrap();
    assert_eq!((count, skipped[0].position), (1, poison));
}

#[test]
fn a_batch_around_a_poison_event_applies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_writer(&dir.path().join("rm.sqlite")).unwrap();
    let (product, shop) = (ProductId::new_v7(), StoreId::new_v7());
    let event = |position: u64, payload: EventPayload| EventEnvelope {
        event_id: shelfsync_common::EventId::new_v7(),
        stream: shelfsync_common::StreamId::inventory(product, shop),
        stream_version: position,
        position,
        schema_version: 1,
        payload,
        metadata: shelfsync_common::EventMetadata {
            origin: Origin::Hub,
            actor: "test".into(),
            correlation_id: uuid::Uuid::nil(),
            causation_id: None,
            occurred_at: OffsetDateTime::UNIX_EPOCH,
            recorded_at: None,
        },
    };
    let year_10000 = OffsetDateTime::parse(
        "9999-12-31T23:59:59-23:59",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let batch = [
        event(1, EventPayload::StockAdded { quantity: 4 }),
        event(
            2,
            EventPayload::StockReserved {
                reservation_id: ReservationId::new_v7(),
                quantity: 1,
                expires_at: year_10000,
            },
        ),
        event(3, EventPayload::StockAdded { quantity: 1 }),
    ];
    let (applied, outcome) = apply_skipping_poison(&mut conn, &batch);
    outcome.unwrap();
    assert_eq!((applied.position, applied.events), (3, 2));
    assert!(applied.touched.contains(&ViewKey::Stock(product, shop)));
    let level = read_stock_level(&conn, product, shop).unwrap().unwrap();
    assert_eq!((level.on_hand, level.reserved), (5, 0));
    assert_eq!(read_poison_events(&conn, 10).unwrap().0, 1);
    // Applying the same batch again changes nothing (everything is at or before the checkpoint).
    let (again, outcome) = apply_skipping_poison(&mut conn, &batch);
    outcome.unwrap();
    assert_eq!((again.position, again.events), (3, 0));
}

#[tokio::test]
async fn a_rebuild_from_zero_yields_the_same_rows_as_the_live_projection() {
    let fixture = Fixture::new().await;
    let (handle, stop) = start(&fixture);
    let second_shop = StoreId::new_v7();
    fixture.log.add_store(second_shop, "Station".into()).await.unwrap();
    let tea = ProductId::new_v7();
    fixture.register(tea, "TEA", "Tea").await;
    let mut last = 0;
    for round in 0..30u8 {
        for (product, shop) in [(fixture.product, fixture.shop), (tea, second_shop), (tea, fixture.shop)] {
            fixture
                .inventory(
                    product,
                    shop,
                    InventoryCommand::AddStock {
                        quantity: StockQuantity::new(3).unwrap(),
                    },
                )
                .await;
            let rid = ReservationId::new_v7();
            fixture.reserve(product, shop, rid, 1).await;
            let command = match round % 3 {
                0 => InventoryCommand::CommitReservation { reservation_id: rid },
                1 => InventoryCommand::ReleaseStock {
                    reservation_id: rid,
                    reason: ReleaseReason::Cancelled,
                },
                _ => InventoryCommand::AdjustStock {
                    delta: -1,
                    reason: "breakage".into(),
                },
            };
            last = fixture.inventory(product, shop, command).await.position;
        }
        if round % 10 == 0 {
            last = fixture.update(tea, &format!("TEA-{round}"), "Green tea").await.position;
        }
    }
    let mut projected = handle.projected();
    reach(&mut projected, last).await;
    stop.send(true).unwrap();
    handle.join().await;
    fixture.log.close().await;
    let live = dump(&fixture.read_model_path());
    assert!(
        live.iter().any(|row| row.starts_with("reservations:")),
        "some holds stay open"
    );

    let rebuilt_path = fixture.dir.path().join("rebuilt.sqlite");
    let applied = rebuild(&fixture.events_path(), &rebuilt_path, false).unwrap();
    assert_eq!(applied, last);
    assert_eq!(dump(&rebuilt_path), live);

    // Over the live file, too (its WAL must not survive the swap).
    let applied = rebuild(&fixture.events_path(), &fixture.read_model_path(), false).unwrap();
    assert_eq!(applied, last);
    assert_eq!(dump(&fixture.read_model_path()), live);
    assert!(!sibling(&fixture.read_model_path(), ".rebuild").exists());
}

#[tokio::test]
async fn a_read_model_ahead_of_the_log_is_projected_again_from_zero() {
    let fixture = Fixture::new().await;
    {
        let mut conn = open_writer(&fixture.read_model_path()).unwrap();
        clear(&mut conn).unwrap();
        conn.execute("INSERT INTO checkpoint VALUES ('stock', 999)", [])
            .unwrap();
    }
    let head = fixture.log.bus().head();
    let (handle, _stop) = start(&fixture);
    let mut projected = handle.projected();
    reach(&mut projected, head).await;
    assert_eq!(handle.queries().checkpoint().await.unwrap(), head);
}

#[tokio::test]
async fn expired_reservations_are_found_by_origin_and_time() {
    let fixture = Fixture::new().await;
    let conn = open_writer(&fixture.read_model_path()).unwrap();
    let hub_hold = ReservationId::new_v7();
    let store_hold = ReservationId::new_v7();
    let insert = |id: ReservationId, at: OffsetDateTime, origin: Option<StoreId>| {
        conn.execute(
            "INSERT INTO reservations (product_id, store_id, reservation_id, quantity, expires_at, origin)
             VALUES (?1, ?2, ?3, 1, ?4, ?5)",
            params![
                &fixture.product.as_bytes()[..],
                &fixture.shop.as_bytes()[..],
                &id.as_bytes()[..],
                time_text::encode(at).unwrap(),
                origin.as_ref().map(|o| &o.as_bytes()[..])
            ],
        )
        .unwrap();
    };
    insert(hub_hold, datetime!(2026-01-01 10:00:00.5 UTC), None);
    insert(store_hold, datetime!(2026-01-01 09:00 UTC), Some(fixture.shop));
    insert(ReservationId::new_v7(), datetime!(2026-01-02 00:00 UTC), None);
    let at = datetime!(2026-01-01 11:00 +01:00); // 10:00 UTC: the hub hold is not due yet
    assert!(read_expired_reservations(&conn, Origin::Hub, at, 10)
        .unwrap()
        .is_empty());
    let later = datetime!(2026-01-01 10:00:01 UTC);
    assert_eq!(
        read_expired_reservations(&conn, Origin::Hub, later, 10).unwrap(),
        vec![hub_hold]
    );
    assert_eq!(
        read_expired_reservations(&conn, Origin::Store(fixture.shop), later, 10).unwrap(),
        vec![store_hold]
    );
    let open = read_open_reservations(&conn, fixture.shop).unwrap();
    assert_eq!(open.len(), 3);
    assert!(open
        .iter()
        .any(|r| r.expires_at == datetime!(2026-01-01 10:00:00.5 UTC)));
}

#[test]
fn the_touch_log_remembers_the_highest_position_per_key() {
    let log = TouchLog::new();
    let key = ViewKey::Sku("A".into());
    assert!(log.is_current(&key, 0));
    log.record(&key, 7);
    log.record(&key, 5);
    assert_eq!(log.last_touch(&key), 7);
    assert!(!log.is_current(&key, 6));
    assert!(log.is_current(&key, 7));
}
