//! Hub events: own events coming back confirmed, other origins' events under the pending
//! ones, the catalog, and `apply_hub` idempotent with a cursor that only moves forward.

use super::*;

// ---------------------------------------------------------------------------------------
// Own events coming back from the hub
// ---------------------------------------------------------------------------------------

/// Given an uploaded and acked sale, when it comes back in the hub's feed, then it moves
/// from pending into the confirmed state and is counted once.
#[tokio::test]
async fn an_acked_event_that_comes_back_leaves_the_pending_set_and_counts_once() {
    let mut s = shop().await;
    let sale = s.ok(s.sell(s.apple, 3)).await;
    let later = s.ok(s.sell(s.apple, 1)).await;
    s.ack(vec![appended(&sale, SNAPSHOT_AT + 1, 4)]).await;
    let entry = s.entry(sale.event_id).await;
    assert_eq!(
        (entry.status, entry.hub_position),
        (OutboxStatus::Acked, Some(SNAPSHOT_AT + 1))
    );
    let level = s.level(s.apple);
    assert_eq!(
        (level.on_hand, level.pending_events),
        (6, 2),
        "acked is still pending until it comes back"
    );
    let batch = within(s.local.pending_batch(10)).await.unwrap();
    assert_eq!(
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![later.event_id],
        "not uploaded again"
    );

    let report = s
        .apply(
            vec![s.echo(&sale, 4, SNAPSHOT_AT + 1)],
            SNAPSHOT_AT + 1,
            SNAPSHOT_AT + 1,
        )
        .await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 1,
            confirmed_own: 1,
            cursor: SNAPSHOT_AT + 1
        }
    );
    assert_eq!(
        s.confirmed(s.apple),
        InventoryState {
            on_hand: 7,
            version: 4,
            ..InventoryState::default()
        }
    );
    assert_eq!(s.pending(s.apple), vec![later.event_id]);
    let level = s.level(s.apple);
    assert_eq!(
        (level.on_hand, level.confirmed_version, level.pending_events),
        (6, 4, 1),
        "not counted twice"
    );
    let entry = s.entry(sale.event_id).await;
    assert_eq!(
        (entry.status, entry.hub_position),
        (OutboxStatus::Confirmed, Some(SNAPSHOT_AT + 1))
    );

    let report = s
        .apply(
            vec![s.echo(&later, 5, SNAPSHOT_AT + 2)],
            SNAPSHOT_AT + 2,
            SNAPSHOT_AT + 2,
        )
        .await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 1,
            confirmed_own: 1,
            cursor: SNAPSHOT_AT + 2
        }
    );
    let level = s.level(s.apple);
    assert_eq!(
        (
            level.on_hand,
            level.confirmed_version,
            level.pending_events,
            level.includes_pending
        ),
        (6, 5, 0, false)
    );
    assert_eq!(s.local.read(|v| v.outbox()), (0, None));

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "a confirmed event is not loaded as pending again");
    assert_eq!(s.level(s.apple).on_hand, 6);
}

/// Given a sale whose upload answer was lost, when it arrives on the push stream before the
/// retried upload's answer, then it is confirmed and the late answer does not bring it back.
#[tokio::test]
async fn an_event_that_comes_back_before_its_upload_is_acked_stays_confirmed() {
    let mut s = shop().await;
    let sale = s.ok(s.sell(s.apple, 2)).await;
    let other = s.ok(s.sell(s.apple, 1)).await;
    // The upload's answer was lost; the event arrives on the push stream first.
    let report = s
        .apply(
            vec![s.echo(&sale, 4, SNAPSHOT_AT + 1)],
            SNAPSHOT_AT + 1,
            SNAPSHOT_AT + 1,
        )
        .await;
    assert_eq!(report.confirmed_own, 1);
    assert_eq!(s.entry(sale.event_id).await.status, OutboxStatus::Confirmed);
    let batch = within(s.local.pending_batch(10)).await.unwrap();
    assert_eq!(
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![other.event_id],
        "not uploaded again"
    );

    // The retried upload's answers arrive afterwards: none brings it back.
    let duplicate = UploadResult {
        event_id: sale.event_id,
        outcome: UploadOutcome::Duplicate {
            position: SNAPSHOT_AT + 1,
            stream_version: 4,
        },
    };
    s.ack(vec![appended(&sale, SNAPSHOT_AT + 1, 4), duplicate, rejected(&sale)])
        .await;
    let entry = s.entry(sale.event_id).await;
    assert_eq!((entry.status, entry.reject_reason), (OutboxStatus::Confirmed, None));
    assert_eq!(s.pending(s.apple), vec![other.event_id]);
    assert_eq!(s.local.read(|v| v.quarantined), 0);
    let level = s.level(s.apple);
    assert_eq!(
        (level.on_hand, level.confirmed_version, level.pending_events),
        (7, 4, 1)
    );

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);
    assert_eq!(s.pending(s.apple), vec![other.event_id]);
    assert_eq!(s.level(s.apple).on_hand, 7);
}

/// Given our events with a hub delivery between them, when one page confirms them, then
/// each is confirmed in order and the one not yet uploaded stays pending.
#[tokio::test]
async fn own_events_confirmed_in_one_page_with_hub_events_between_them() {
    let s = shop().await;
    let hold = ReservationId::new_v7();
    let a = s
        .ok(s.reserve(s.apple, hold, 3, s.started + time::Duration::hours(1)))
        .await;
    let b = s.ok(s.commit(hold)).await;
    let c = s.ok(s.sell(s.apple, 1)).await;
    s.ack(vec![appended(&a, 41, 4), appended(&b, 43, 6)]).await;
    // The hub put a delivery between our two events; c is not uploaded yet.
    let delivery = s.hub_event(s.apple, 5, 42, EventPayload::StockAdded { quantity: 20 });
    let page = vec![s.echo(&a, 4, 41), delivery, s.echo(&b, 6, 43)];
    let report = s.apply(page, 43, 50).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 3,
            confirmed_own: 2,
            cursor: 43
        }
    );
    assert_eq!(
        s.confirmed(s.apple),
        InventoryState {
            on_hand: 27,
            version: 6,
            ..InventoryState::default()
        }
    );
    assert_eq!(s.pending(s.apple), vec![c.event_id]);
    let level = s.level(s.apple);
    assert_eq!((level.on_hand, level.available, level.pending_events), (26, 26, 1));
    assert_eq!(s.local.read(|v| (v.sync.cursor, v.sync.hub_head)), (43, 50));
}

// ---------------------------------------------------------------------------------------
// Hub events from other origins; the catalog
// ---------------------------------------------------------------------------------------

/// Given a pending sale, when hub events (a web order, a delivery, another store's event)
/// arrive, then the confirmed state moves under the sale and later commands see both.
#[tokio::test]
async fn hub_events_change_the_confirmed_state_under_the_pending_events() {
    let mut s = shop().await;
    let sale = s.ok(s.sell(s.apple, 2)).await;
    // A web order reserves 5 apples at this store at the hub, and the back office books a
    // delivery of bread; another store's apple stream moves too.
    let web = ReservationId::new_v7();
    let reserved = EventPayload::StockReserved {
        reservation_id: web,
        quantity: 5,
        expires_at: s.started + time::Duration::hours(1),
    };
    let elsewhere = envelope(
        StreamId::inventory(s.apple, StoreId::new_v7()),
        1,
        42,
        EventPayload::StockAdded { quantity: 99 },
        Origin::Hub,
    );
    let page = vec![
        s.hub_event(s.apple, 4, 41, reserved),
        elsewhere,
        s.hub_event(s.bread, 3, 43, EventPayload::StockAdded { quantity: 4 }),
    ];
    let report = s.apply(page, 43, 43).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 2,
            confirmed_own: 0,
            cursor: 43
        },
        "another store's event is skipped"
    );

    let confirmed = s.confirmed(s.apple);
    assert_eq!((confirmed.on_hand, confirmed.reserved(), confirmed.version), (10, 5, 4));
    assert_eq!(s.pending(s.apple), vec![sale.event_id], "our sale is still on top");
    let level = s.level(s.apple);
    assert_eq!(
        (level.on_hand, level.reserved, level.available, level.confirmed_version),
        (8, 5, 3, 4)
    );
    assert!(level.includes_pending);
    let bread = s.level(s.bread);
    assert_eq!(
        (
            bread.on_hand,
            bread.available,
            bread.confirmed_version,
            bread.pending_events
        ),
        (9, 7, 3, 0)
    );
    assert!(
        !s.local.read(|v| v.own_reservations.contains(&web)),
        "the hub expires its own holds"
    );

    // Later commands are decided against the new confirmed state plus our sale.
    let outcome = s.run(s.sell(s.apple, 4)).await;
    assert_eq!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock {
            requested: 4,
            available: 3
        }))
    );
    // The customer collects the web order at the till.
    let collected = s.ok(s.commit(web)).await;
    assert_eq!(collected.stream, StreamId::inventory(s.apple, s.id));
    assert_eq!((collected.stock.on_hand, collected.stock.available), (3, 3));

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);
}

/// Given the catalog, when catalog events rename, add and swap SKUs, then products and the
/// SKU index follow, and a new product can be sold here.
#[tokio::test]
async fn catalog_events_update_products_and_the_sku_index() {
    let mut s = shop().await;
    let (apple, bread, cheese) = (s.apple, s.bread, s.cheese);
    let named = |id: ProductId, sku: &str| Product {
        id,
        sku: sku.into(),
        name: format!("Renamed {sku}"),
        price_minor: 99,
    };
    let catalog = |product: Product, version: u64, position: u64, registered: bool| {
        let payload = if registered {
            EventPayload::ProductRegistered(product.clone())
        } else {
            EventPayload::ProductUpdated(product.clone())
        };
        envelope(StreamId::catalog(product.id), version, position, payload, Origin::Hub)
    };

    // A SKU rename and a new product.
    let dates = product("DAT-1", 300);
    let report = s
        .apply(
            vec![
                catalog(named(apple, "APL-2"), 2, 41, false),
                catalog(dates.clone(), 1, 42, true),
            ],
            42,
            42,
        )
        .await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 2,
            confirmed_own: 0,
            cursor: 42
        }
    );
    let by_sku = |s: &Shop, sku: &str| s.local.read(|v| v.product_by_sku(sku).map(|p| p.product.id));
    assert_eq!(by_sku(&s, "APL-2"), Some(apple));
    assert_eq!(by_sku(&s, "APL-1"), None, "the old SKU is gone");
    assert_eq!(by_sku(&s, "DAT-1"), Some(dates.id));
    let view = s.local.read(|v| v.catalog[&apple].clone());
    assert_eq!(
        (view.version, view.product.name.as_str(), view.product.price_minor),
        (2, "Renamed APL-2", 99)
    );
    // The new product can be sold here from now on.
    assert_eq!(s.ok(s.deliver(dates.id, 2)).await.stock.on_hand, 2);

    // Two products swap SKUs through a temporary one, all in one page.
    let page = vec![
        catalog(named(apple, "TMP-1"), 3, 43, false),
        catalog(named(bread, "APL-2"), 2, 44, false),
        catalog(named(apple, "BRD-1"), 4, 45, false),
        catalog(named(cheese, "CHS-1"), 2, 46, false),
    ];
    let report = s.apply(page, 46, 46).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 4,
            confirmed_own: 0,
            cursor: 46
        }
    );
    assert_eq!(by_sku(&s, "APL-2"), Some(bread));
    assert_eq!(by_sku(&s, "BRD-1"), Some(apple));
    assert_eq!(by_sku(&s, "CHS-1"), Some(cheese));
    assert_eq!(by_sku(&s, "TMP-1"), None);
    let skus = s.state().skus;
    assert_eq!(skus.len(), 4, "one SKU per product: {skus:?}");
    assert_eq!(s.local.read(|v| v.catalog[&apple].version), 4);

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "the catalog is on disk");
}

// ---------------------------------------------------------------------------------------
// apply_hub is idempotent and the cursor only moves forward
// ---------------------------------------------------------------------------------------

/// Given applied hub events, when pages are replayed, overlap, or name an older cursor or
/// head, then nothing is applied twice and the cursor and head only move forward.
#[tokio::test]
async fn applying_hub_events_again_changes_nothing_and_the_cursor_only_moves_forward() {
    let mut s = shop().await;
    let page = vec![
        s.hub_event(s.apple, 4, 41, EventPayload::StockAdded { quantity: 5 }),
        s.hub_event(
            s.bread,
            3,
            42,
            EventPayload::StockAdjusted {
                delta: -1,
                reason: "damaged".into(),
            },
        ),
        s.hub_event(s.apple, 5, 43, EventPayload::StockAdded { quantity: 1 }),
    ];
    let report = s.apply(page.clone(), 43, 45).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 3,
            confirmed_own: 0,
            cursor: 43
        }
    );
    assert_eq!(s.confirmed(s.apple).on_hand, 16);
    let after_first = s.state();
    assert_eq!((after_first.sync.cursor, after_first.sync.hub_head), (43, 45));

    // A replayed page (a reconnect resumed too early): nothing is applied twice.
    let report = s.apply(page.clone(), 43, 45).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 0,
            confirmed_own: 0,
            cursor: 43
        }
    );
    let mut replayed = s.state();
    assert!(replayed.sync.last_sync_at >= after_first.sync.last_sync_at);
    replayed.sync.last_sync_at = after_first.sync.last_sync_at;
    assert_eq!(replayed, after_first);

    // An overlapping page: only what is new is applied.
    let mut overlapping = page[1..].to_vec();
    overlapping.push(s.hub_event(s.bread, 4, 44, EventPayload::StockAdded { quantity: 10 }));
    let report = s.apply(overlapping, 44, 45).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 1,
            confirmed_own: 0,
            cursor: 44
        }
    );
    assert_eq!((s.confirmed(s.bread).on_hand, s.confirmed(s.bread).version), (14, 4));
    assert_eq!(s.confirmed(s.apple).on_hand, 16);

    // A cursor behind ours never moves it back; a lower head never lowers the head.
    let report = s.apply(Vec::new(), 10, 12).await;
    assert_eq!(report.cursor, 44);
    assert_eq!(s.local.read(|v| (v.sync.cursor, v.sync.hub_head)), (44, 45));

    // Progress past events this store does not see moves the cursor; what it skipped is
    // not applied later (it is not ours to see).
    let report = s.apply(Vec::new(), 60, 70).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 0,
            confirmed_own: 0,
            cursor: 60
        }
    );
    assert_eq!(s.local.read(|v| (v.sync.cursor, v.sync.hub_head)), (60, 70));
    let stale = s.hub_event(s.apple, 6, 55, EventPayload::StockAdded { quantity: 100 });
    let report = s.apply(vec![stale], 55, 70).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 0,
            confirmed_own: 0,
            cursor: 60
        }
    );
    assert_eq!(s.confirmed(s.apple).on_hand, 16);

    // A page's cursor beyond its last event (the hub skipped others' events) is taken.
    let report = s
        .apply(
            vec![s.hub_event(s.apple, 6, 61, EventPayload::StockAdded { quantity: 1 })],
            64,
            70,
        )
        .await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 1,
            confirmed_own: 0,
            cursor: 64
        }
    );
    // The head is at least the cursor.
    let report = s.apply(Vec::new(), 80, 0).await;
    assert_eq!(report.cursor, 80);
    assert_eq!(s.local.read(|v| (v.sync.cursor, v.sync.hub_head)), (80, 80));

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "the cursor and the confirmed state are on disk");
    let report = s.apply(page, 43, 45).await;
    assert_eq!(
        (report.applied, report.cursor),
        (0, 80),
        "still idempotent after a restart"
    );
}
