//! The outbox: rejected uploads (quarantine, retry, discard) and what the uploader and
//! operators read from it.

use super::*;

// ---------------------------------------------------------------------------------------
// Rejected uploads: quarantine, retry, discard
// ---------------------------------------------------------------------------------------

/// Given an event the hub rejected, when it is quarantined, retried and discarded, then it
/// leaves and rejoins the pending set in its place, and only a quarantined event can be acted on.
#[tokio::test]
async fn a_rejected_event_is_quarantined_and_can_be_retried_in_order_or_discarded() {
    let mut s = shop().await;
    let e1 = s.ok(s.sell(s.apple, 1)).await;
    let e2 = s.ok(s.sell(s.apple, 2)).await;
    let e3 = s.ok(s.sell(s.apple, 3)).await;
    assert_eq!(s.level(s.apple).on_hand, 4);

    s.ack(vec![appended(&e1, 41, 4), rejected(&e2), appended(&e3, 42, 5)])
        .await;
    assert_eq!(
        s.pending(s.apple),
        vec![e1.event_id, e3.event_id],
        "the rejected event left the pending set"
    );
    let level = s.level(s.apple);
    assert_eq!((level.on_hand, level.pending_events), (6, 2), "and the local figures");
    assert_eq!(s.local.read(|v| v.quarantined), 1);
    let quarantined = within(s.local.outbox(vec![OutboxStatus::Quarantined], 10))
        .await
        .unwrap();
    assert_eq!(quarantined.len(), 1);
    let entry = &quarantined[0];
    assert_eq!(
        (entry.event_id, entry.seq, entry.status),
        (e2.event_id, 2, OutboxStatus::Quarantined)
    );
    assert_eq!(entry.reject_reason.as_deref(), Some("unknown_product"));
    assert_eq!(entry.reject_detail.as_deref(), Some("not in the catalog"));
    assert!(
        within(s.local.pending_batch(10)).await.unwrap().is_empty(),
        "it blocks nothing"
    );

    // The same rejection again (a retried upload) counts once.
    s.ack(vec![rejected(&e2)]).await;
    assert_eq!(s.local.read(|v| v.quarantined), 1);
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "quarantine survives a restart");

    // Retry: back in the pending set at its place in the outbox, and uploaded again.
    within(s.local.quarantine(e2.event_id, QuarantineAction::Retry))
        .await
        .unwrap();
    assert_eq!(s.pending(s.apple), vec![e1.event_id, e2.event_id, e3.event_id]);
    assert_eq!(s.level(s.apple).on_hand, 4);
    assert_eq!(s.local.read(|v| v.quarantined), 0);
    let entry = s.entry(e2.event_id).await;
    assert_eq!((entry.status, entry.reject_reason), (OutboxStatus::Pending, None));
    let batch = within(s.local.pending_batch(10)).await.unwrap();
    assert_eq!(batch.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![e2.event_id]);
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);

    // Rejected again, then given up for good.
    s.ack(vec![rejected(&e2)]).await;
    assert_eq!(s.local.read(|v| v.quarantined), 1);
    within(s.local.quarantine(e2.event_id, QuarantineAction::Discard))
        .await
        .unwrap();
    assert_eq!(s.local.read(|v| v.quarantined), 0);
    assert_eq!(s.pending(s.apple), vec![e1.event_id, e3.event_id]);
    assert_eq!(s.level(s.apple).on_hand, 6);
    assert_eq!(s.entry(e2.event_id).await.status, OutboxStatus::Discarded);
    assert!(within(s.local.pending_batch(10)).await.unwrap().is_empty());

    // Only a quarantined event can be retried or discarded.
    for action in [QuarantineAction::Retry, QuarantineAction::Discard] {
        for id in [e2.event_id, e1.event_id, EventId::new_v7()] {
            assert_eq!(
                within(s.local.quarantine(id, action)).await,
                Err(LocalError::NotQuarantined(id))
            );
        }
    }
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "a discarded event stays out after a restart");
    assert_eq!(s.level(s.apple).on_hand, 6);
    assert_eq!(s.local.read(|v| v.quarantined), 0);
}

/// Given a rejected first event of a stream, when it is quarantined, then the view is the
/// one a restart would load.
#[tokio::test]
async fn a_rejected_first_event_of_a_stream_leaves_the_view_as_a_restart_finds_it() {
    let mut s = shop().await;
    let delivered = s.ok(s.deliver(s.cheese, 4)).await;
    assert_eq!(s.level(s.cheese).on_hand, 4);
    s.ack(vec![rejected(&delivered)]).await;
    assert_eq!(s.local.read(|v| v.quarantined), 1);
    assert_eq!(s.local.read(|v| v.stock(s.cheese).map(|l| l.on_hand).unwrap_or(0)), 0);
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);
    within(s.local.quarantine(delivered.event_id, QuarantineAction::Retry))
        .await
        .unwrap();
    assert_eq!(s.level(s.cheese).on_hand, 4);
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);
}

// ---------------------------------------------------------------------------------------
// What the uploader and operators read
// ---------------------------------------------------------------------------------------

/// Given pending, acked and quarantined events, when the uploader asks for a batch, then it
/// gets the oldest pending ones, in upload shape.
#[tokio::test]
async fn pending_batch_is_the_oldest_pending_events_in_upload_shape() {
    let s = shop().await;
    let hold = ReservationId::new_v7();
    let expires_at = s.started + time::Duration::hours(1);
    let commands = vec![
        s.sell(s.apple, 1),
        s.reserve(s.bread, hold, 1, expires_at),
        s.deliver(s.cheese, 5),
        s.sell(s.apple, 2),
    ];
    let mut written = Vec::new();
    for command in &commands {
        written.push(s.ok(command.clone()).await);
    }

    let batch = within(s.local.pending_batch(10)).await.unwrap();
    assert_eq!(batch.len(), 4);
    for ((event, command), result) in batch.iter().zip(&commands).zip(&written) {
        assert_eq!(event.event_id, command.event_id);
        let product = match command.target {
            Target::Product(p) => p,
            Target::Reservation(_) => unreachable!(),
        };
        assert_eq!(event.stream, StreamId::inventory(product, s.id));
        assert_eq!(event.event_type, result.payload.event_type());
        assert_eq!(
            event.schema_version,
            shelfsync_common::domain::event::CURRENT_SCHEMA_VERSION
        );
        assert_eq!(event.data, result.payload.data());
        assert_eq!(
            EventPayload::from_parts(&event.event_type, event.schema_version, event.data.clone()),
            Ok(result.payload.clone())
        );
        assert_eq!(
            event.metadata, command.metadata,
            "the till's provenance, origin this store"
        );
        assert_eq!(event.metadata.origin, Origin::Store(s.id));
    }
    let json = serde_json::to_value(&batch[1]).unwrap();
    assert_eq!(json["type"], "StockReserved");
    assert_eq!(json["data"]["quantity"], 1);

    let first_two = within(s.local.pending_batch(2)).await.unwrap();
    assert_eq!(first_two, batch[..2].to_vec());

    // Acked and quarantined events are not uploaded again.
    s.ack(vec![appended(&written[0], 41, 4), rejected(&written[2])]).await;
    let batch = within(s.local.pending_batch(10)).await.unwrap();
    let ids: Vec<EventId> = batch.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, vec![written[1].event_id, written[3].event_id]);
}

/// Given entries in every status, when the outbox is listed by status with a limit, then the
/// chosen ones come newest first.
#[tokio::test]
async fn outbox_lists_entries_by_status_newest_first() {
    let s = shop().await;
    let mut written = Vec::new();
    for units in 1..=5 {
        written.push(s.ok(s.sell(s.apple, units.min(2))).await);
    }
    let [w1, w2, w3] = [0, 1, 2].map(|i| written[i].clone());
    s.ack(vec![appended(&w1, 41, 4), appended(&w2, 42, 5), rejected(&w3)])
        .await;
    s.apply(vec![s.echo(&w1, 4, 41)], 41, 42).await;

    let seqs = |entries: &[OutboxEntry]| entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    let all = s.outbox().await;
    assert_eq!(seqs(&all), vec![5, 4, 3, 2, 1]);
    let statuses: Vec<OutboxStatus> = all.iter().map(|e| e.status).collect();
    use OutboxStatus::*;
    assert_eq!(statuses, vec![Pending, Pending, Quarantined, Acked, Confirmed]);
    let first = &all[4];
    assert_eq!(
        (first.event_id, first.product_id, first.event_type.as_str()),
        (w1.event_id, s.apple, "StockAdjusted")
    );
    assert_eq!(first.hub_position, Some(41));
    assert_eq!(all[1].hub_position, None);

    assert_eq!(seqs(&listed(&s.local, vec![Pending], 10).await), vec![5, 4]);
    assert_eq!(seqs(&listed(&s.local, vec![Pending], 1).await), vec![5]);
    assert_eq!(seqs(&listed(&s.local, vec![Acked, Quarantined], 10).await), vec![3, 2]);
    assert_eq!(seqs(&listed(&s.local, vec![Confirmed, Pending], 2).await), vec![5, 4]);
    assert_eq!(
        seqs(&listed(&s.local, vec![Confirmed, Pending], 3).await),
        vec![5, 4, 1]
    );
    assert!(listed(&s.local, vec![Discarded], 10).await.is_empty());
    assert!(listed(&s.local, Vec::new(), 10).await.is_empty());
    assert!(
        listed(&s.local, ALL.to_vec(), 0).await.is_empty(),
        "a limit of 0 lists nothing"
    );
}

async fn listed(local: &LocalStore, statuses: Vec<OutboxStatus>, limit: usize) -> Vec<OutboxEntry> {
    within(local.outbox(statuses, limit)).await.expect("read the outbox")
}
