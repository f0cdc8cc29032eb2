//! Bootstrap from the hub's snapshot, and a restart in the middle of syncing: what the
//! store holds after a snapshot, a second snapshot, and a reopen.

use super::*;

// ---------------------------------------------------------------------------------------
// Bootstrap
// ---------------------------------------------------------------------------------------

/// Given a fresh store, when it bootstraps from the snapshot, then the stock, holds, catalog and
/// sync position are the snapshot's, and they survive a reopen.
#[tokio::test]
async fn bootstrap_loads_the_snapshot_into_the_confirmed_state_and_the_catalog() {
    let mut s = shop().await;
    let apple = s.level(s.apple);
    assert_eq!(
        (apple.on_hand, apple.reserved, apple.available, apple.confirmed_version),
        (10, 0, 10, 3)
    );
    assert!(!apple.includes_pending && apple.pending_events == 0);
    let bread = s.level(s.bread);
    assert_eq!(
        (bread.on_hand, bread.reserved, bread.available, bread.confirmed_version),
        (5, 2, 3, 2)
    );
    assert_eq!(s.confirmed(s.bread).reservations[&s.web_hold].quantity, 2);
    assert_eq!(s.local.read(|v| v.stock(s.cheese)), None, "cheese has no stream yet");
    assert_eq!(
        s.local.read(|v| v.product_by_sku("CHS-1").map(|p| p.product.id)),
        Some(s.cheese)
    );
    assert_eq!(s.local.read(|v| v.catalog.len()), 3);
    let sync = s.local.read(|v| v.sync.clone());
    assert_eq!(
        (sync.cursor, sync.hub_head, sync.bootstrapped),
        (SNAPSHOT_AT, SNAPSHOT_AT, true)
    );
    assert!(sync.last_sync_at.is_some());
    assert!(
        s.local.read(|v| v.own_reservations.is_empty()),
        "the web hold is the hub's to expire"
    );

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "the snapshot is on disk");
}

/// Given a snapshot with a hold this store made before a reinstall and one made at the hub,
/// when the store bootstraps from it, then only the first is this store's to expire.
#[tokio::test]
async fn holds_this_store_made_are_its_own_after_a_bootstrap_and_the_hubs_are_not() {
    // A reinstalled agent: the hub's snapshot holds a reservation this store made earlier.
    let mine = ReservationId::new_v7();
    let mut s = shop_with(|snapshot| {
        let store = snapshot.store_id;
        let apple = snapshot.stock[0].product_id;
        snapshot.stock[0].reserved = 4;
        snapshot.stock[0].available = 6;
        snapshot.reservations.push(SnapshotReservation {
            reservation_id: mine,
            product_id: apple,
            quantity: 4,
            expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
            origin: Origin::Store(store),
            hub_share: false,
        });
    })
    .await;
    assert_eq!(s.level(s.apple).available, 6);
    assert_eq!(s.local.read(|v| v.own_reservations.clone()), HashSet::from([mine]));
    let later = s.started + time::Duration::hours(2);
    assert_eq!(s.local.read(|v| v.own_expired(later)), vec![(s.apple, mine)]);
    s.reopen().await;
    assert_eq!(
        s.local.read(|v| v.own_reservations.clone()),
        HashSet::from([mine]),
        "on disk too"
    );
    assert_eq!(crate::jobs::expire_reservations(&s.local, later).await, Ok(1));
    assert_eq!(s.level(s.apple).available, 10);
    assert_eq!(s.level(s.bread).reserved, 2, "the web hold is left to the hub");
}

/// Given a bootstrapped store with pending sales, when a second snapshot arrives, then it
/// replaces the confirmed state and the catalog, and the pending events stay on top.
#[tokio::test]
async fn a_second_snapshot_replaces_the_confirmed_state_and_the_catalog_and_keeps_pending_events() {
    let mut s = shop().await;
    let sale = s.ok(s.sell(s.apple, 2)).await;
    let delivery = s.ok(s.deliver(s.cheese, 3)).await;
    s.apply(
        vec![s.hub_event(s.apple, 4, 41, EventPayload::StockAdded { quantity: 5 })],
        41,
        41,
    )
    .await;
    let eggs = product("EGG-1", 30);
    let (apple, bread, cheese) = s.local.read(|v| {
        let mut bread = v.catalog[&s.bread].clone();
        bread.product.sku = "BRD-2".into();
        bread.version = 2;
        (v.catalog[&s.apple].clone(), bread, v.catalog[&s.cheese].clone())
    });
    let snapshot = SnapshotResponse {
        store_id: s.id,
        position: 60,
        stock: vec![stock_row(s.apple, s.id, 20, 0, 7, 58)],
        reservations: Vec::new(),
        catalog: vec![
            apple,
            bread,
            cheese,
            ProductView {
                product: eggs.clone(),
                version: 1,
            },
        ],
    };
    within(s.local.bootstrap(snapshot)).await.expect("bootstrap again");

    assert_eq!(
        s.confirmed(s.apple),
        InventoryState {
            on_hand: 20,
            version: 7,
            ..InventoryState::default()
        }
    );
    assert_eq!(s.pending(s.apple), vec![sale.event_id], "our sale stays on top");
    assert_eq!(s.level(s.apple).on_hand, 18);
    assert_eq!(
        s.local.read(|v| v.stock(s.bread)),
        None,
        "bread has no stock row any more"
    );
    assert_eq!(s.confirmed(s.cheese), InventoryState::default());
    assert_eq!(s.pending(s.cheese), vec![delivery.event_id]);
    let by_sku = |sku: &str| s.local.read(|v| v.product_by_sku(sku).map(|p| p.product.id));
    assert_eq!(
        (by_sku("BRD-1"), by_sku("BRD-2"), by_sku("EGG-1")),
        (None, Some(s.bread), Some(eggs.id))
    );
    assert_eq!(
        s.local.read(|v| (v.catalog.len(), v.skus.len(), v.sync.cursor)),
        (4, 4, 60)
    );

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "the view is what the file holds");
}

// ---------------------------------------------------------------------------------------
// Restart in the middle of syncing
// ---------------------------------------------------------------------------------------

/// Given a store in the middle of syncing (acked, pending and applied events), when it is
/// reopened, then it finds the same view, and the events still to come apply on top.
#[tokio::test]
async fn a_restart_mid_sync_finds_the_same_view() {
    let mut s = shop().await;
    let hour = s.started + time::Duration::hours(1);
    let hold = ReservationId::new_v7();
    let a = s.ok(s.reserve(s.apple, hold, 2, hour)).await; // confirmed
    let b = s.ok(s.sell(s.apple, 1)).await; // acked
    let c = s.ok(s.commit(s.web_hold)).await; // rejected
    let d = s.ok(s.deliver(s.cheese, 4)).await; // pending
    let e = s.ok(s.commit(hold)).await; // acked, then confirmed before the ack
    let f = s.ok(keyed(s.sell(s.bread, 1), "sale-f", 6)).await; // pending
    let g = s.ok(s.sell(s.apple, 1)).await; // acked, not seen back yet
    s.ack(vec![appended(&a, 41, 4), appended(&b, 43, 5), rejected(&c)])
        .await;
    let web = ReservationId::new_v7();
    let page = vec![
        s.echo(&a, 4, 41),
        s.hub_event(
            s.bread,
            3,
            42,
            EventPayload::StockReserved {
                reservation_id: web,
                quantity: 1,
                expires_at: hour,
            },
        ),
        s.echo(&b, 5, 43),
        s.echo(&e, 6, 45),
    ];
    let report = s.apply(page, 45, 47).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 4,
            confirmed_own: 3,
            cursor: 45
        }
    );
    s.ack(vec![appended(&e, 45, 6), appended(&g, 46, 7)]).await;
    assert_eq!(s.pending(s.apple), vec![g.event_id]);
    let level = s.level(s.apple);
    assert_eq!(
        (
            level.on_hand,
            level.reserved,
            level.pending_events,
            level.confirmed_version
        ),
        (6, 0, 1, 6)
    );
    let bread = s.level(s.bread);
    assert_eq!(
        (
            bread.on_hand,
            bread.reserved,
            bread.pending_events,
            bread.confirmed_version
        ),
        (4, 3, 1, 3)
    );
    assert_eq!(s.pending(s.cheese), vec![d.event_id]);
    assert_eq!(s.local.read(|v| (v.quarantined, v.outbox().0)), (1, 3));

    let before = s.state();
    let outbox = s.outbox().await;
    let batch = within(s.local.pending_batch(100)).await.unwrap();
    s.reopen().await;
    assert_eq!(s.state(), before);
    assert_eq!(s.outbox().await, outbox);
    assert_eq!(within(s.local.pending_batch(100)).await.unwrap(), batch);
    assert_eq!(
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![d.event_id, f.event_id]
    );
    let replayed = s.run(keyed(s.sell(s.bread, 1), "sale-f", 6)).await.unwrap();
    assert_eq!(replayed, LocalWriteResult { replayed: true, ..f });

    // The acked event and the next ones come back on top of the reloaded state.
    s.ack(vec![appended(&d, 48, 1)]).await;
    let report = s.apply(vec![s.echo(&g, 7, 46), s.echo(&d, 1, 48)], 48, 48).await;
    assert_eq!(report.confirmed_own, 2);
    let apple = s.level(s.apple);
    assert_eq!(
        (apple.on_hand, apple.confirmed_version, apple.pending_events),
        (6, 7, 0)
    );
    let cheese = s.level(s.cheese);
    assert_eq!(
        (cheese.on_hand, cheese.confirmed_version, cheese.pending_events),
        (4, 1, 0)
    );
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);
}
