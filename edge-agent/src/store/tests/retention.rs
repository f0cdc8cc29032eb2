//! Retention: old confirmed outbox rows and idempotency records go; every sale the hub
//! has not confirmed stays whatever its age, and a till's retry within the retention
//! still gets its first answer.

use super::*;
use crate::config::RetentionConfig;
use time::Duration as Age;

/// The retention job with `keep_days` and `batch_rows`, run at `now`.
async fn prune(s: &Shop, keep_days: u32, batch_rows: usize, now: OffsetDateTime) -> (u64, u64) {
    let keep = RetentionConfig {
        keep_days,
        batch_rows,
        ..RetentionConfig::default()
    };
    let reports = within(crate::jobs::prune(&s.local, &keep, now)).await.expect("prune");
    let pruned = |table: &str| reports.iter().find(|r| r.table == table).map_or(0, |r| r.pruned);
    (pruned("outbox"), pruned("idempotency"))
}

/// Given five sales at the till, two confirmed by the hub, one acked, one pending and one
/// quarantined, when the retention runs: a day later with a 30-day retention nothing
/// goes; 31 days later only the two confirmed rows go (in steps of one row), and the
/// tills' figures, the uploader's batch and a restart see the same store as before.
#[tokio::test]
async fn only_confirmed_rows_older_than_the_retention_go_pending_ones_stay_whatever_their_age() {
    let mut s = shop().await;
    let confirmed = [s.ok(s.sell(s.apple, 1)).await, s.ok(s.sell(s.apple, 2)).await];
    let acked = s.ok(s.sell(s.apple, 1)).await;
    let pending = s.ok(s.sell(s.apple, 1)).await;
    let quarantined = s.ok(s.deliver(s.bread, 1)).await;
    s.ack(vec![
        appended(&confirmed[0], SNAPSHOT_AT + 1, 4),
        appended(&confirmed[1], SNAPSHOT_AT + 2, 5),
        appended(&acked, SNAPSHOT_AT + 3, 6),
        rejected(&quarantined),
    ])
    .await;
    s.apply(
        vec![
            s.echo(&confirmed[0], 4, SNAPSHOT_AT + 1),
            s.echo(&confirmed[1], 5, SNAPSHOT_AT + 2),
        ],
        SNAPSHOT_AT + 2,
        SNAPSHOT_AT + 2,
    )
    .await;
    let view = s.state();
    let upload = within(s.local.pending_batch(10)).await.unwrap();
    let statuses = |outbox: Vec<OutboxEntry>| outbox.into_iter().map(|e| (e.event_id, e.status)).collect::<Vec<_>>();
    let before = statuses(s.outbox().await);
    assert_eq!(before.len(), 5);

    // A day later, with 30 days of retention: everything is younger, nothing goes.
    let now = OffsetDateTime::now_utc();
    assert_eq!(prune(&s, 30, 100, now + Age::days(1)).await, (0, 0));
    assert_eq!(statuses(s.outbox().await), before);

    // 31 days later: the two confirmed rows go, one per step; nothing else does.
    assert_eq!(prune(&s, 30, 1, now + Age::days(31)).await, (2, 0));
    let after = statuses(s.outbox().await);
    assert_eq!(
        after,
        vec![
            (quarantined.event_id, OutboxStatus::Quarantined),
            (pending.event_id, OutboxStatus::Pending),
            (acked.event_id, OutboxStatus::Acked),
        ]
    );
    // Ten years on, the unconfirmed sales are still there.
    assert_eq!(prune(&s, 1, 100, now + Age::days(3650)).await, (0, 0));
    assert_eq!(statuses(s.outbox().await), after);
    assert_eq!(s.state(), view, "the tills' figures did not move");
    assert_eq!(within(s.local.pending_batch(10)).await.unwrap(), upload);
    s.reopen().await;
    assert_eq!(s.state(), view, "a restart finds the same store");
    assert_eq!(statuses(s.outbox().await), after);
}

/// Given a till's keyed sale, when the retention runs with its shortest setting (a day)
/// right after, the record stays and the till's retry still gets the first answer; once
/// the record is older than the retention it goes (and other records with it, in steps).
#[tokio::test]
async fn a_retry_within_the_retention_gets_its_first_answer_after_a_prune() {
    let s = shop().await;
    let first = s.ok(keyed(s.sell(s.apple, 2), "till-1-sale-1", 1)).await;
    for n in 2..=5 {
        s.ok(keyed(s.sell(s.apple, 1), &format!("till-1-sale-{n}"), 1)).await;
    }
    assert_eq!(s.counts().idempotency, 5);

    let now = OffsetDateTime::now_utc();
    assert_eq!(prune(&s, 1, 100, now).await, (0, 0));
    let again = s
        .run(keyed(s.sell(s.apple, 2), "till-1-sale-1", 1))
        .await
        .expect("a replay");
    assert_eq!(
        again,
        LocalWriteResult {
            replayed: true,
            ..first
        }
    );
    assert_eq!(s.counts().idempotency, 5);

    // Two days later, with a day of retention, every record goes, two per step; the
    // pending sales they recorded stay.
    assert_eq!(prune(&s, 1, 2, now + Age::days(2)).await, (0, 5));
    assert_eq!(s.counts().idempotency, 0);
    assert_eq!(s.counts().outbox, 5);
}
