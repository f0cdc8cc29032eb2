//! Durability and the group commit: what survives a restart or a close, a batch that
//! cannot commit, and many concurrent commands decided one after another.

use super::*;

// ---------------------------------------------------------------------------------------
// Durability
// ---------------------------------------------------------------------------------------

/// Given answered commands, when the store is reopened, then they are there and new
/// commands continue the sequence.
#[tokio::test]
async fn an_answered_command_survives_a_restart_and_seqs_keep_growing() {
    let mut s = shop().await;
    let hold = ReservationId::new_v7();
    let mut written = vec![
        s.ok(s.sell(s.apple, 2)).await,
        s.ok(s.reserve(s.bread, hold, 1, s.started + time::Duration::hours(1)))
            .await,
        s.ok(s.deliver(s.cheese, 7)).await,
    ];
    assert_eq!(written.iter().map(|w| w.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    let before = s.state();
    let outbox = s.outbox().await;
    let batch = within(s.local.pending_batch(100)).await.unwrap();

    s.reopen().await;
    assert_eq!(
        s.state(),
        before,
        "confirmed + pending, catalog and sync position are all on disk"
    );
    assert_eq!(s.outbox().await, outbox);
    assert_eq!(within(s.local.pending_batch(100)).await.unwrap(), batch);
    assert_eq!(*s.local.recorded().borrow(), 3);
    assert_eq!(s.level(s.apple).on_hand, 8);
    assert_eq!(s.level(s.bread).available, 2);
    assert!(s.local.read(|v| v.own_reservations.contains(&hold)));

    written.push(s.ok(s.sell(s.apple, 1)).await);
    assert_eq!(written[3].seq, 4, "the seq goes on after a restart");
    assert_eq!(written[3].stock.on_hand, 7);
    s.reopen().await;
    assert_eq!(s.ok(s.commit(hold)).await.seq, 5);
    let seqs: Vec<u64> = s.outbox().await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![5, 4, 3, 2, 1]);
}

/// Given writes on the writer's queue, when the store is closed, then they are recorded
/// first and later writes are refused; a reopen finds them.
#[tokio::test]
async fn closing_finishes_the_queued_writes_first_then_refuses_new_ones() {
    let mut s = shop().await;
    let mut queued = Vec::new();
    for units in 1..=4 {
        queued.push(enqueue(&s.local, s.sell(s.apple, units)).await);
    }
    within(s.local.close()).await;
    let mut seqs = Vec::new();
    for answer_of in queued {
        seqs.push(
            answer(answer_of)
                .await
                .expect("a queued write is recorded before the writer stops")
                .seq,
        );
    }
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(s.run(s.sell(s.apple, 1)).await, Err(LocalError::Unavailable));
    assert_eq!(
        within(s.local.apply_hub(Vec::new(), 99, 99)).await,
        Err(LocalError::Unavailable)
    );
    let before = s.state();
    s.local = LocalStore::open(&s.path, s.id).expect("reopen the local store");
    assert_eq!(s.state(), before);
    assert_eq!(s.outbox().await.len(), 4);
    assert_eq!(s.level(s.apple).on_hand, 0);
}

/// Given a write lock another connection holds, when a batch cannot commit, then every
/// caller gets an error and neither the view nor the file changes.
#[tokio::test]
async fn a_batch_that_cannot_commit_answers_every_caller_with_an_error_and_changes_nothing() {
    let s = shop().await;
    let before = (s.state(), s.counts());
    let lock = WriteLock::hold(&s.path);
    let first = enqueue(&s.local, s.sell(s.apple, 1)).await;
    let second = enqueue(&s.local, s.deliver(s.bread, 1)).await;
    // The writer gives up after its 5 s busy timeout; the lock is still held.
    let (first, second) = (answer(first).await, answer(second).await);
    lock.release();
    assert!(matches!(first, Err(LocalError::Storage(_))), "{first:?}");
    assert!(matches!(second, Err(LocalError::Storage(_))), "{second:?}");
    assert_eq!(
        (s.state(), s.counts()),
        before,
        "no answer Ok, nothing in the view or on disk"
    );
    assert_eq!(*s.local.recorded().borrow(), 0);
    let retried = s.ok(s.sell(s.apple, 1)).await;
    assert_eq!(retried.seq, 1, "a rolled-back batch uses up no seq");
}

/// Given a batch whose third command fails in SQLite, when it runs, then the whole batch is
/// rolled back, every caller gets the error, and a retry records it afresh.
#[tokio::test]
async fn a_failure_in_the_middle_of_a_batch_rolls_all_of_it_back() {
    let s = shop().await;
    let before = (s.state(), s.counts());
    // SQLite refuses any outbox row for cheese, as a full disk would refuse a page.
    let cheese: String = s.cheese.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let conn = rusqlite::Connection::open(&s.path).expect("second connection");
    conn.execute_batch(&format!(
        "CREATE TRIGGER refuse_cheese BEFORE INSERT ON outbox WHEN NEW.product_id = X'{cheese}'
         BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;"
    ))
    .expect("create the trigger");

    let hold = ReservationId::new_v7();
    let hour = s.started + time::Duration::hours(1);
    let results = one_batch(
        &s,
        vec![
            keyed(s.sell(s.apple, 1), "sale-1", 1),
            s.reserve(s.bread, hold, 1, hour),
            s.deliver(s.cheese, 1),
            s.sell(s.apple, 2),
        ],
    )
    .await;
    for result in &results {
        assert!(
            matches!(result, Err(LocalError::Storage(message)) if message.contains("disk on fire")),
            "{result:?}"
        );
    }
    assert_eq!(
        (s.state(), s.counts()),
        before,
        "the writes before the failure are gone too"
    );
    assert_eq!(*s.local.recorded().borrow(), 0);

    conn.execute_batch("DROP TRIGGER refuse_cheese;")
        .expect("drop the trigger");
    let retried = s.ok(keyed(s.sell(s.apple, 1), "sale-1", 1)).await;
    assert_eq!(retried.seq, 1, "the key was not remembered and no seq was used up");
    assert!(!s.local.read(|v| v.own_reservations.contains(&hold)));
    s.ok(s.reserve(s.bread, hold, 1, hour)).await;
    assert_eq!(s.ok(s.deliver(s.cheese, 1)).await.seq, 3);
}

// ---------------------------------------------------------------------------------------
// Group commit under load
// ---------------------------------------------------------------------------------------

/// Given many tills selling and delivering at once, when their commands are grouped into
/// commits, then each is decided after the one before: no oversell, figures add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_commands_are_decided_one_after_another() {
    const TASKS: usize = 20;
    const PER_TASK: usize = 10;
    let s = shop().await;
    // Apple: 10 + 90 = 100 available; bread: 5 - 2 + 47 = 50 available.
    s.ok(s.deliver(s.apple, 90)).await;
    s.ok(s.deliver(s.bread, 47)).await;
    let s = Arc::new(s);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for i in 0..PER_TASK {
                    let product = if (task + i) % 2 == 0 { s.apple } else { s.bread };
                    let command = s.sell(product, 1);
                    let event_id = command.event_id;
                    results.push((product, event_id, s.run(command).await));
                }
                results
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await.expect("task"));
    }
    assert_eq!(results.len(), TASKS * PER_TASK);

    let mut successes = Vec::new();
    for (product, event_id, result) in &results {
        match result {
            Ok(written) => {
                assert_eq!(written.event_id, *event_id);
                successes.push((*product, written.clone()));
            }
            Err(error) => {
                assert_eq!(*product, s.bread, "only bread runs out");
                assert_eq!(
                    *error,
                    LocalError::Domain(DomainError::InsufficientStock {
                        requested: 1,
                        available: 0
                    })
                );
            }
        }
    }
    assert_eq!(successes.len(), 150, "100 apples and 50 bread");
    let mut seqs: Vec<u64> = successes.iter().map(|(_, w)| w.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (3..=152).collect::<Vec<_>>(), "unique and contiguous");
    for product in [s.apple, s.bread] {
        let mut left: Vec<i64> = successes
            .iter()
            .filter(|(p, _)| *p == product)
            .map(|(_, w)| w.stock.available)
            .collect();
        left.sort_unstable();
        let sold = left.len() as i64;
        assert_eq!(left, (0..sold).collect::<Vec<_>>(), "each sale saw the ones before it");
    }
    let apple = s.level(s.apple);
    assert_eq!((apple.on_hand, apple.available, apple.pending_events), (0, 0, 101));
    let bread = s.level(s.bread);
    assert_eq!((bread.on_hand, bread.available, bread.pending_events), (2, 0, 51));

    let outbox = s.outbox().await;
    assert_eq!(outbox.len(), 152);
    let recorded: HashSet<EventId> = outbox.iter().map(|e| e.event_id).collect();
    let answered: HashSet<EventId> = successes.iter().map(|(_, w)| w.event_id).collect();
    assert!(
        answered.is_subset(&recorded) && recorded.len() == answered.len() + 2,
        "exactly the successes"
    );
    assert!(outbox.iter().all(|e| e.status == OutboxStatus::Pending));
    // Outbox order is seq order and the view's pending sets follow it.
    let by_seq: BTreeMap<u64, EventId> = outbox.iter().map(|e| (e.seq, e.event_id)).collect();
    for product in [s.apple, s.bread] {
        let pending = s.pending(product);
        let ordered: Vec<EventId> = by_seq.values().copied().filter(|id| pending.contains(id)).collect();
        assert_eq!(pending, ordered);
    }
    let batch = within(s.local.pending_batch(usize::MAX >> 1)).await.unwrap();
    assert_eq!(
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        by_seq.values().copied().collect::<Vec<_>>()
    );

    let before = s.state();
    let mut s = Arc::try_unwrap(s).ok().expect("the tasks are done");
    s.reopen().await;
    assert_eq!(s.state(), before);
}
