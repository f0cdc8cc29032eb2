//! Idempotency keys: a repeated request is answered once, alone, in one group commit
//! or concurrently.

use super::*;

// ---------------------------------------------------------------------------------------
// Idempotency keys
// ---------------------------------------------------------------------------------------

/// Given a keyed request answered once, when the till repeats it (even with a new event id),
/// then it gets the first answer and nothing is written; the key with another request is refused.
#[tokio::test]
async fn a_repeated_request_gets_the_first_answer_and_writes_nothing() {
    let mut s = shop().await;
    let first = s.ok(keyed(s.sell(s.apple, 2), "sale-1", 1)).await;
    let state = (s.state(), s.counts());
    assert_eq!(state.1.idempotency, 1);

    // The till retries with a new event id (it lost the answer): the first answer comes back.
    let again = s.run(keyed(s.sell(s.apple, 2), "sale-1", 1)).await.expect("a replay");
    assert_eq!(
        again,
        LocalWriteResult {
            replayed: true,
            ..first.clone()
        }
    );
    assert_eq!((s.state(), s.counts()), state, "nothing new written");

    // The same key for another request is refused.
    let outcome = s.run(keyed(s.sell(s.apple, 3), "sale-1", 2)).await;
    assert_eq!(outcome, Err(LocalError::IdempotencyConflict("sale-1".into())));
    assert_eq!((s.state(), s.counts()), state);

    // Other keys are independent; a request without a key is never a replay.
    let second = s.ok(keyed(s.sell(s.apple, 2), "sale-2", 1)).await;
    assert_eq!((second.seq, second.stock.on_hand), (2, 6));
    assert_eq!(s.ok(s.sell(s.apple, 2)).await.seq, 3);

    s.reopen().await;
    let replayed = s
        .run(keyed(s.sell(s.apple, 2), "sale-1", 1))
        .await
        .expect("a replay after a restart");
    assert_eq!(
        replayed,
        LocalWriteResult {
            replayed: true,
            ..first
        }
    );
    let outcome = s.run(keyed(s.deliver(s.apple, 1), "sale-2", 9)).await;
    assert_eq!(outcome, Err(LocalError::IdempotencyConflict("sale-2".into())));
    assert_eq!(s.outbox().await.len(), 3);
    assert_eq!(s.level(s.apple).on_hand, 4);
}

/// Given a keyed request the domain refused, when it is retried after the stock changed,
/// then it is decided again (a refusal is not remembered).
#[tokio::test]
async fn a_refused_keyed_request_can_be_retried() {
    let s = shop().await;
    let outcome = s.run(keyed(s.sell(s.apple, 11), "big-sale", 1)).await;
    assert!(matches!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock { .. }))
    ));
    assert_eq!(s.counts().idempotency, 0, "a refusal is not remembered");
    s.ok(s.deliver(s.apple, 1)).await;
    let sold = s.ok(keyed(s.sell(s.apple, 11), "big-sale", 1)).await;
    assert_eq!(sold.stock.on_hand, 0);
}

/// Given copies of one keyed request (and the key with another body) in one group commit,
/// when it commits, then the first is recorded, its copy replayed, the other body refused.
#[tokio::test]
async fn repeated_requests_in_one_group_commit_are_answered_once() {
    let s = shop().await;
    let first = keyed(s.sell(s.apple, 2), "sale-9", 7);
    let results = one_batch(
        &s,
        vec![
            first.clone(),
            keyed(s.sell(s.apple, 2), "sale-9", 7),
            keyed(s.sell(s.apple, 5), "sale-9", 8),
            keyed(s.sell(s.apple, 1), "sale-10", 7),
        ],
    )
    .await;
    let recorded = results[0].clone().expect("the first is recorded");
    assert_eq!(
        (recorded.seq, recorded.event_id, recorded.replayed),
        (1, first.event_id, false)
    );
    assert_eq!(
        results[1],
        Ok(LocalWriteResult {
            replayed: true,
            ..recorded.clone()
        })
    );
    assert_eq!(results[2], Err(LocalError::IdempotencyConflict("sale-9".into())));
    let other = results[3].clone().expect("another key");
    assert_eq!((other.seq, other.stock.on_hand), (2, 7));
    let outbox = s.outbox().await;
    assert_eq!(outbox.len(), 2);
    assert_eq!(
        outbox[0].recorded_at, outbox[1].recorded_at,
        "both were recorded in one commit"
    );
    assert_eq!(s.counts().idempotency, 2);
    assert_eq!(s.level(s.apple).on_hand, 7);
}

/// Given many tasks retrying one keyed request at once, when they all run, then it is
/// recorded once and every retry gets the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_request_record_it_once() {
    let s = Arc::new(shop().await);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.run(keyed(s.sell(s.apple, 3), "till-2:sale-77", 3)).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task").expect("recorded or replayed"));
    }
    let originals: Vec<_> = results.iter().filter(|r| !r.replayed).collect();
    assert_eq!(originals.len(), 1, "exactly one is recorded");
    let original = originals[0].clone();
    for result in &results {
        assert_eq!(
            LocalWriteResult {
                replayed: false,
                ..result.clone()
            },
            original
        );
    }
    assert_eq!(s.outbox().await.len(), 1);
    assert_eq!(s.level(s.apple).on_hand, 7);
}
