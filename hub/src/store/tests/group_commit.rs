//! Group commit: queued requests share one transaction.

use super::*;

crate::both_storages! {
    async fn queued_requests_share_one_commit() {
        const QUEUED: usize = 200;
        let t = new_log().await;
        let log = &t.log;
        let product = register_product(log, "BATCH-1").await;
        let shop = enroll_store(log).await;
        let head = log_head(log).await;

        // Everything queued while the writer cannot commit goes into at most two batches:
        // what it took before it blocked, and the rest (up to MAX_BATCH) in one drain.
        let lock = t.hold_writes().await;
        let mut answers = Vec::new();
        for i in 0..QUEUED {
            let expected = if i == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(i as u64)
            };
            answers.push(enqueue(log, request(add_stock(product, shop, 1), expected)).await);
        }
        lock.release().await;
        let mut written = Vec::new();
        for a in answers {
            written.push(answer(a).await.expect("accepted"));
        }
        // Queue order is commit order, and each request saw the one before it.
        for (i, w) in written.iter().enumerate() {
            assert_eq!(w.position, head + 1 + i as u64);
            assert_eq!(w.stream_version, i as u64 + 1);
        }
        let events = all_events(log).await;
        check_log(&events);
        let batches = commits(&events[head as usize..]);
        assert!(
            batches.len() <= 2,
            "{QUEUED} queued requests took {} commits",
            batches.len()
        );

        // And precisely one batch, arranged with a barrier.
        let head = log_head(log).await;
        let requests = (0..QUEUED).map(|_| request(add_stock(product, shop, 2), ExpectedVersion::Any));
        let results = one_batch(&t, requests.collect()).await;
        let events = all_events(log).await;
        check_log(&events);
        let batch = &events[head as usize..];
        assert_eq!(batch.len(), QUEUED);
        assert_eq!(commits(batch).len(), 1, "one commit time for the whole batch");
        for (i, result) in results.into_iter().enumerate() {
            assert_eq!(result.expect("accepted").events[0], batch[i]);
        }
    }
}

crate::both_storages! {
    async fn concurrent_writers_are_group_committed() {
        const WRITERS: usize = 16;
        const EVENTS: usize = 640;
        let t = new_log().await;
        let log = &t.log;
        let streams = given_streams(log, "BATCH-2", 4).await;
        let head = log_head(log).await;
        append_concurrently(log, &streams, EVENTS, WRITERS).await;
        let events = all_events(log).await;
        check_log(&events);
        let batches = commits(&events[head as usize..]);
        let largest = batches.values().map(Vec::len).max().unwrap_or(0);
        // Without group commit every event has its own commit time. With 16 writers waiting
        // on every fsync, batches of several requests are all but certain.
        assert!(
            batches.len() < EVENTS,
            "{EVENTS} events from {WRITERS} concurrent writers took {} commits",
            batches.len()
        );
        assert!(largest > 1 && largest <= WRITERS, "largest commit: {largest} events");
    }
}
