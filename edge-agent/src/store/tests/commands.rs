//! The tills' commands: decided against confirmed + pending, event ids, reservations.

use super::*;

// ---------------------------------------------------------------------------------------
// Commands are decided against confirmed + pending
// ---------------------------------------------------------------------------------------

/// Given the standard snapshot, when commands the domain refuses are run (short stock, a
/// zero correction, an unknown product), then each is refused and nothing is written.
#[tokio::test]
async fn a_refused_command_writes_nothing() {
    let s = shop().await;
    let before = (s.state(), s.counts());
    let outcome = s.run(s.sell(s.apple, 11)).await;
    assert_eq!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock {
            requested: 11,
            available: 10
        }))
    );
    let held = s.reserve(
        s.bread,
        ReservationId::new_v7(),
        4,
        s.started + time::Duration::hours(1),
    );
    let outcome = s.run(held).await;
    assert_eq!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock {
            requested: 4,
            available: 3
        })),
        "the web hold counts"
    );
    let zero = s.command(
        Target::Product(s.apple),
        InventoryCommand::AdjustStock {
            delta: 0,
            reason: "x".into(),
        },
    );
    assert_eq!(s.run(zero).await, Err(LocalError::Domain(DomainError::ZeroAdjustment)));
    let stranger = ProductId::new_v7();
    assert_eq!(
        s.run(s.deliver(stranger, 1)).await,
        Err(LocalError::UnknownProduct(stranger))
    );
    assert_eq!(
        s.run(s.sell(s.cheese, 1)).await.unwrap_err().to_string(),
        "insufficient stock: requested 1, available 0"
    );
    assert_eq!((s.state(), s.counts()), before, "nothing in the view, nothing on disk");
    assert!(s.outbox().await.is_empty());
    assert_eq!(*s.local.recorded().borrow(), 0);
}

/// Given a sale recorded locally, when the figures are read and later commands are run, then
/// the figures include the pending sale and the commands are decided against them.
#[tokio::test]
async fn local_figures_include_pending_events_and_later_commands_are_decided_against_them() {
    let s = shop().await;
    let mut recorded = s.local.recorded();
    let first = s.ok(s.sell(s.apple, 4)).await;
    assert_eq!(first.seq, 1);
    assert_eq!(first.stream, StreamId::inventory(s.apple, s.id));
    assert_eq!(
        first.payload,
        EventPayload::StockAdjusted {
            delta: -4,
            reason: "sale".into()
        }
    );
    let expected = LocalStockLevel {
        product_id: s.apple,
        store_id: s.id,
        on_hand: 6,
        reserved: 0,
        available: 6,
        confirmed_version: 3,
        pending_events: 1,
        includes_pending: true,
        allocation: None,
    };
    assert_eq!(first.stock, expected, "the answer carries the local figures");
    assert_eq!(s.level(s.apple), expected, "and so does the view");
    assert_eq!(s.confirmed(s.apple).on_hand, 10, "the confirmed state is the hub's");
    assert!(recorded.has_changed().unwrap());
    assert_eq!(*recorded.borrow_and_update(), 1, "the uploader is woken");

    // 6 left locally: a sale of 7 is refused although the hub still says 10.
    let before = (s.state(), s.counts());
    let outcome = s.run(s.sell(s.apple, 7)).await;
    assert_eq!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock {
            requested: 7,
            available: 6
        }))
    );
    assert_eq!((s.state(), s.counts()), before);
    assert!(!recorded.has_changed().unwrap(), "a refusal records nothing");

    let hold = ReservationId::new_v7();
    let held = s
        .ok(s.reserve(s.apple, hold, 5, s.started + time::Duration::hours(1)))
        .await;
    assert_eq!(
        (held.seq, held.stock.on_hand, held.stock.reserved, held.stock.available),
        (2, 6, 5, 1)
    );
    assert_eq!(held.stock.pending_events, 2);
    let outcome = s.run(s.sell(s.apple, 2)).await;
    assert_eq!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock {
            requested: 2,
            available: 1
        }))
    );
    let sold = s.ok(s.commit(hold)).await;
    assert_eq!(
        sold.payload,
        EventPayload::ReservationCommitted {
            reservation_id: hold,
            quantity: 5
        }
    );
    assert_eq!(
        (sold.stock.on_hand, sold.stock.reserved, sold.stock.available),
        (1, 0, 1)
    );
    assert_eq!(
        s.pending(s.apple),
        vec![first.event_id, held.event_id, sold.event_id],
        "in outbox order"
    );
    assert_eq!(s.local.read(|v| v.outbox().0), 3);
    assert_eq!(
        s.confirmed(s.apple),
        InventoryState {
            on_hand: 10,
            version: 3,
            ..InventoryState::default()
        }
    );

    // A product with no stream yet gets one from its first local event.
    let delivered = s.ok(s.deliver(s.cheese, 3)).await;
    assert_eq!(
        (
            delivered.stock.on_hand,
            delivered.stock.confirmed_version,
            delivered.stock.pending_events
        ),
        (3, 0, 1)
    );
}

// ---------------------------------------------------------------------------------------
// Event ids
// ---------------------------------------------------------------------------------------

/// Given an event id already recorded, when it is reused for another fact in a group commit
/// with other sales, then only that command is refused and the rest are recorded.
#[tokio::test]
async fn a_reused_event_id_is_refused_alone_and_the_rest_of_its_batch_is_recorded() {
    let s = shop().await;
    let first = s.ok(s.sell(s.apple, 1)).await;
    let before = (s.state(), s.counts());
    let mut reused = s.deliver(s.bread, 1);
    reused.event_id = first.event_id;
    assert_eq!(
        s.run(reused.clone()).await,
        Err(LocalError::DuplicateEvent(first.event_id))
    );
    assert_eq!((s.state(), s.counts()), before, "nothing written");

    // In one group commit with other tills' sales, twice within the batch too.
    let fresh = s.sell(s.bread, 1);
    let fresh_id = fresh.event_id;
    let mut reused_in_batch = s.deliver(s.cheese, 1);
    reused_in_batch.event_id = fresh.event_id;
    let results = one_batch(
        &s,
        vec![
            s.sell(s.apple, 1),
            reused,
            fresh,
            reused_in_batch,
            s.deliver(s.cheese, 2),
        ],
    )
    .await;
    assert_eq!(results[0].as_ref().map(|r| r.seq), Ok(2));
    assert_eq!(results[1], Err(LocalError::DuplicateEvent(first.event_id)));
    assert_eq!(results[2].as_ref().map(|r| r.seq), Ok(3));
    assert_eq!(results[3], Err(LocalError::DuplicateEvent(fresh_id)));
    assert_eq!(results[4].as_ref().map(|r| r.seq), Ok(4));
    assert_eq!(s.outbox().await.len(), 4);
    assert_eq!(s.level(s.cheese).on_hand, 2);
}

// ---------------------------------------------------------------------------------------
// Reservations
// ---------------------------------------------------------------------------------------

/// Given a hold from the hub's snapshot and one of ours, when they are committed or released
/// by reservation id alone, then each finds its product; an unknown id is refused.
#[tokio::test]
async fn commands_on_a_reservation_find_its_product() {
    let s = shop().await;
    let hour = s.started + time::Duration::hours(1);
    let mine = ReservationId::new_v7();
    let held = s.ok(s.reserve(s.apple, mine, 3, hour)).await;
    assert_eq!(held.stock.available, 7);
    assert!(s.local.read(|v| v.own_reservations.contains(&mine)));
    assert!(!s.local.read(|v| v.own_reservations.contains(&s.web_hold)));

    // The web hold from the hub's snapshot: collected at the till.
    let collected = s.ok(s.commit(s.web_hold)).await;
    assert_eq!(collected.stream, StreamId::inventory(s.bread, s.id));
    assert_eq!(
        collected.payload,
        EventPayload::ReservationCommitted {
            reservation_id: s.web_hold,
            quantity: 2
        }
    );
    assert_eq!(
        (
            collected.stock.on_hand,
            collected.stock.reserved,
            collected.stock.available
        ),
        (3, 0, 3)
    );
    // Our own hold (still pending): released.
    let released = s.ok(s.release(mine)).await;
    assert_eq!(released.stream, StreamId::inventory(s.apple, s.id));
    assert_eq!(
        released.payload,
        EventPayload::StockReleased {
            reservation_id: mine,
            quantity: 3,
            reason: ReleaseReason::Cancelled
        }
    );
    assert_eq!(released.stock.available, 10);

    // Neither is open any more; an id never seen is unknown too.
    let before = (s.state(), s.counts());
    for id in [s.web_hold, mine, ReservationId::new_v7()] {
        assert_eq!(s.run(s.commit(id)).await, Err(LocalError::UnknownReservation(id)));
        assert_eq!(s.run(s.release(id)).await, Err(LocalError::UnknownReservation(id)));
    }
    assert_eq!((s.state(), s.counts()), before);
}

/// Given an open hold, when its id is used for another hold (on any product, even in the
/// same group commit), then it is refused until the first is released.
#[tokio::test]
async fn a_reservation_id_open_on_any_product_cannot_be_reserved_again() {
    let s = shop().await;
    let hour = s.started + time::Duration::hours(1);
    let mine = ReservationId::new_v7();
    s.ok(s.reserve(s.apple, mine, 1, hour)).await;
    let before = (s.state(), s.counts());
    for (product, id) in [
        (s.apple, mine),
        (s.bread, mine),
        (s.cheese, mine),
        (s.apple, s.web_hold),
    ] {
        let outcome = s.run(s.reserve(product, id, 1, hour)).await;
        assert_eq!(outcome, Err(LocalError::Domain(DomainError::ReservationExists(id))));
    }
    assert_eq!((s.state(), s.counts()), before);

    // Within one group commit the first reservation wins.
    let again = ReservationId::new_v7();
    let results = one_batch(
        &s,
        vec![s.reserve(s.bread, again, 1, hour), s.reserve(s.apple, again, 1, hour)],
    )
    .await;
    assert!(results[0].is_ok());
    assert_eq!(
        results[1],
        Err(LocalError::Domain(DomainError::ReservationExists(again)))
    );
    // Once released, the id may be used again.
    s.ok(s.release(mine)).await;
    s.ok(s.reserve(s.bread, mine, 1, hour)).await;
}

/// Given expired holds made here and at the hub, when the expiry job runs (twice), then only
/// this store's are released, once.
#[tokio::test]
async fn only_own_expired_reservations_are_released_and_only_once() {
    let mut s = shop().await;
    let (hour, three_hours) = (
        s.started + time::Duration::hours(1),
        s.started + time::Duration::hours(3),
    );
    let (due, not_due, collected) = (
        ReservationId::new_v7(),
        ReservationId::new_v7(),
        ReservationId::new_v7(),
    );
    s.ok(s.reserve(s.apple, due, 2, hour)).await;
    s.ok(s.reserve(s.apple, not_due, 1, three_hours)).await;
    s.ok(s.reserve(s.bread, collected, 1, hour)).await;
    s.ok(s.commit(collected)).await;
    // A web order at the hub for this store, due at the same time as ours.
    let web = ReservationId::new_v7();
    let reserved = EventPayload::StockReserved {
        reservation_id: web,
        quantity: 4,
        expires_at: hour,
    };
    s.apply(vec![s.hub_event(s.apple, 4, 41, reserved)], 41, 41).await;
    assert_eq!(s.level(s.apple).reserved, 7);

    let later = s.started + time::Duration::hours(2);
    assert_eq!(s.local.read(|v| v.own_expired(later)), vec![(s.apple, due)]);
    s.reopen().await;
    assert_eq!(
        s.local.read(|v| v.own_expired(later)),
        vec![(s.apple, due)],
        "tracked across restarts"
    );

    let outbox = s.outbox().await.len();
    assert_eq!(crate::jobs::expire_reservations(&s.local, later).await, Ok(1));
    assert_eq!(
        crate::jobs::expire_reservations(&s.local, later).await,
        Ok(0),
        "a second run releases nothing"
    );
    let entries = s.outbox().await;
    assert_eq!(entries.len(), outbox + 1);
    assert_eq!(entries[0].event_type, "StockReleased");
    assert_eq!(
        entries[0].event_id.0.get_version_num(),
        7,
        "a fresh id: a reservation id may be reused later"
    );
    let batch = within(s.local.pending_batch(100)).await.unwrap();
    let release = batch.last().expect("the release is pending");
    assert_eq!(release.data["reason"], "expired");
    assert_eq!(release.metadata.origin, Origin::Store(s.id));

    let apple = s.confirmed(s.apple);
    assert!(
        apple.reservations.contains_key(&web),
        "the hub's hold is the hub's to expire"
    );
    let level = s.level(s.apple);
    assert_eq!(
        (level.on_hand, level.reserved),
        (10, 5),
        "the web hold and our later hold remain"
    );
    assert_eq!(s.level(s.bread).reserved, 2, "the snapshot's web hold remains");
    assert!(s.local.read(|v| v.own_expired(s.started + time::Duration::hours(4))) == vec![(s.apple, not_due)]);
}
