//! Optimistic concurrency on one stream, and gap-free, commit-ordered positions under
//! concurrent writers.

use super::*;

/// A fresh log with one product at one shop, its inventory stream at `version`.
async fn given_a_stream_at(version: u64) -> (TestLog, ProductId, StoreId, StreamId) {
    let t = new_log().await;
    let product = register_product(&t.log, "RACE-1").await;
    let shop = enroll_store(&t.log).await;
    let stream = StreamId::inventory(product, shop);
    for _ in 0..version {
        execute(&t.log, add_stock(product, shop, 1), ExpectedVersion::Any)
            .await
            .unwrap();
    }
    assert_eq!(stream_version(&t.log, stream).await, version);
    (t, product, shop, stream)
}

crate::both_storages! {
    async fn racing_appends_at_one_expected_version_let_exactly_one_through() {
        const START: u64 = 3;
        const RACERS: i64 = 32;
        // Given a stream at version 3
        let (t, product, shop, stream) = given_a_stream_at(START).await;
        let log = &t.log;

        // When 32 appends race, all expecting version 3
        let start = Arc::new(Barrier::new(RACERS as usize));
        let racers: Vec<_> = (1..=RACERS)
            .map(|units| {
                let log = log.clone();
                let start = start.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    execute(&log, add_stock(product, shop, units), ExpectedVersion::Exact(START)).await
                })
            })
            .collect();
        // Then exactly one wins, and every other is told the version the winner made
        let mut winners = Vec::new();
        let mut conflicts = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(written) => winners.push(written),
                Err(WriteError::VersionConflict {
                    stream: conflicted,
                    expected,
                    current,
                }) => {
                    assert_eq!(conflicted, stream);
                    assert_eq!(expected, ExpectedVersion::Exact(START));
                    assert_eq!(current, START + 1, "the conflict reports the version the winner made");
                    conflicts += 1;
                }
                Err(other) => panic!("unexpected refusal: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one racer wins");
        assert_eq!(conflicts, RACERS - 1);
        assert_eq!(winners[0].stream_version, START + 1);
        assert!(!winners[0].duplicate);
        let stored: Vec<_> = all_events(log)
            .await
            .into_iter()
            .filter(|e| e.stream == stream)
            .collect();
        assert_eq!(stored.len() as u64, START + 1, "the losers wrote nothing");
        assert_eq!(stored.last(), winners[0].events.first());
        check_log(&all_events(log).await);
    }
}

crate::both_storages! {
    async fn appends_that_read_the_version_and_retry_on_conflict_get_each_version_once() {
        const START: u64 = 4;
        // Given a stream at version 4
        let (t, product, shop, stream) = given_a_stream_at(START).await;
        let log = &t.log;

        // When 16 tasks read the version, append at it, and retry on conflict, until 200
        // appends succeeded in total (each task claims one success slot before it tries)
        const SUCCESSES: usize = 200;
        const TASKS: usize = 16;
        let slots = Arc::new(AtomicUsize::new(SUCCESSES));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let log = log.clone();
                let slots = slots.clone();
                tokio::spawn(async move {
                    let mut won = Vec::new();
                    let mut conflicts = 0usize;
                    while slots
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        loop {
                            let current = stream_version(&log, stream).await;
                            match execute(&log, add_stock(product, shop, 1), ExpectedVersion::Exact(current)).await {
                                Ok(written) => {
                                    assert_eq!(written.stream_version, current + 1);
                                    assert!(!written.duplicate);
                                    won.push(written.stream_version);
                                    break;
                                }
                                Err(WriteError::VersionConflict { current: now, .. }) => {
                                    assert!(
                                        now > current,
                                        "a conflict means the stream moved on: {now} vs {current}"
                                    );
                                    conflicts += 1;
                                }
                                Err(other) => panic!("unexpected refusal: {other}"),
                            }
                        }
                    }
                    (won, conflicts)
                })
            })
            .collect();
        let mut won = Vec::new();
        let mut retried = 0;
        for task in tasks {
            let (versions, conflicts) = task.await.unwrap();
            won.extend(versions);
            retried += conflicts;
        }
        // Then every version after 4 was handed out exactly once
        assert_eq!(won.len(), SUCCESSES);
        won.sort_unstable();
        let expected: Vec<u64> = (START + 1..=START + SUCCESSES as u64).collect();
        assert_eq!(won, expected, "no version was handed out twice and none was skipped");
        assert!(retried > 0, "16 tasks on one stream must have collided at least once");

        let events = all_events(log).await;
        let per_stream = check_log(&events);
        let total_successes = START + SUCCESSES as u64;
        assert_eq!(
            per_stream[&stream], total_successes,
            "one stored event per successful append"
        );
        assert_eq!(stream_version(log, stream).await, total_successes);
        let versions: Vec<u64> = events
            .iter()
            .filter(|e| e.stream == stream)
            .map(|e| e.stream_version)
            .collect();
        assert_eq!(versions, (1..=total_successes).collect::<Vec<_>>());
    }
}

crate::both_storages! {
    async fn positions_are_gap_free_and_commit_ordered_under_concurrent_writers() {
        const TASKS: usize = 8;
        const PER_TASK: usize = 100;
        let t = new_log().await;
        let log = &t.log;
        let mut products = Vec::new();
        for n in 0..4 {
            products.push(register_product(log, &format!("POS-{n}")).await);
        }
        let mut shops = Vec::new();
        for _ in 0..3 {
            shops.push(enroll_store(log).await);
        }
        let streams: Arc<Vec<(ProductId, StoreId)>> = Arc::new(
            products
                .iter()
                .flat_map(|p| shops.iter().map(move |s| (*p, *s)))
                .collect(),
        );

        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let log = log.clone();
                let streams = streams.clone();
                tokio::spawn(async move {
                    let mut written = Vec::with_capacity(PER_TASK);
                    for i in 0..PER_TASK {
                        let (product, shop) = streams[(task * 7 + i) % streams.len()];
                        let command = if i % 5 == 4 {
                            inventory(
                                product,
                                shop,
                                InventoryCommand::AdjustStock {
                                    delta: 2,
                                    reason: "found behind the shelf".into(),
                                },
                            )
                        } else {
                            add_stock(product, shop, (i % 9 + 1) as i64)
                        };
                        written.push(execute(&log, command, ExpectedVersion::Any).await.unwrap());
                    }
                    written
                })
            })
            .collect();
        let mut written = Vec::new();
        for task in tasks {
            let mine = task.await.unwrap();
            assert!(
                mine.windows(2).all(|w| w[0].position < w[1].position),
                "a writer's sequential commands commit in order"
            );
            written.extend(mine);
        }

        let events = all_events(log).await;
        let total = (products.len() + TASKS * PER_TASK) as u64;
        assert_eq!(events.len() as u64, total);
        let per_stream = check_log(&events);
        assert_eq!(bus_head(log).await, total);
        assert_eq!(log_head(log).await, total);
        for written in &written {
            assert_eq!(written.events.len(), 1);
            let stored = &events[written.position as usize - 1];
            assert_eq!(
                stored, &written.events[0],
                "the answer describes exactly what was stored"
            );
        }
        for (product, shop) in streams.iter() {
            let stream = StreamId::inventory(*product, *shop);
            assert_eq!(stream_version(log, stream).await, per_stream[&stream]);
        }
    }
}
