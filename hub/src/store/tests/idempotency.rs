//! Idempotency by event id: a retry gets the first answer, a reused id for another
//! request is a conflict, identical requests in flight write one event.

use super::*;

crate::both_storages! {
    async fn a_retry_with_the_same_event_id_and_fingerprint_returns_the_first_answer() {
        let t = new_log().await;
        let log = &t.log;
        let product = register_product(log, "IDEM-1").await;
        let shop = enroll_store(log).await;
        let stream = StreamId::inventory(product, shop);

        let first = request(add_stock(product, shop, 5), ExpectedVersion::NoStream);
        let original = log.execute(first.clone()).await.unwrap();
        assert!(!original.duplicate);
        assert_eq!(original.stream_version, 1);
        assert_eq!(original.events.len(), 1);
        assert_eq!(original.events[0].event_id, first.event_id);
        // The stream moves on, so the retry's condition (no_stream) no longer holds: a retry
        // must be answered from the log, not decided again.
        execute(log, add_stock(product, shop, 1), ExpectedVersion::Exact(1))
            .await
            .unwrap();
        let head = log_head(log).await;
        let history = all_events(log).await;

        for _ in 0..2 {
            let mut retry = first.clone();
            retry.metadata = metadata(); // a retry is sent again, later
            let again = log.execute(retry).await.unwrap();
            assert!(again.duplicate);
            assert_eq!(again.position, original.position);
            assert_eq!(again.stream_version, original.stream_version);
            assert_eq!(again.events, original.events, "the retry sees the event first written");
        }
        assert_eq!(bus_head(log).await, head, "a retry writes nothing");
        assert_eq!(all_events(log).await, history);
        assert_eq!(stream_version(log, stream).await, 2);
    }
}

crate::both_storages! {
    async fn reusing_an_event_id_for_another_request_is_an_idempotency_conflict() {
        let t = new_log().await;
        let log = &t.log;
        let product = register_product(log, "IDEM-2").await;
        let shop = enroll_store(log).await;
        let other_shop = enroll_store(log).await;

        let first = request(add_stock(product, shop, 5), ExpectedVersion::Any);
        log.execute(first.clone()).await.unwrap();
        let head = log_head(log).await;

        // Another command under the same id.
        let other = request_with_id(add_stock(product, shop, 6), ExpectedVersion::Any, first.event_id);
        assert_ne!(other.fingerprint, first.fingerprint);
        assert_eq!(
            log.execute(other).await,
            Err(WriteError::IdempotencyConflict(first.event_id))
        );
        // The same command for another stream.
        let elsewhere = request_with_id(add_stock(product, other_shop, 5), ExpectedVersion::Any, first.event_id);
        assert_eq!(
            log.execute(elsewhere).await,
            Err(WriteError::IdempotencyConflict(first.event_id))
        );
        // The very same command, but a different fingerprint.
        let mut tampered = first.clone();
        let mut bytes = *first.fingerprint.as_bytes();
        bytes[0] ^= 0xff;
        tampered.fingerprint = Fingerprint::from_bytes(bytes);
        assert_eq!(
            log.execute(tampered).await,
            Err(WriteError::IdempotencyConflict(first.event_id))
        );
        assert_eq!(bus_head(log).await, head, "a refused id writes nothing");
        assert_eq!(all_events(log).await.len() as u64, head);
        // The original is still answered as a duplicate.
        assert!(log.execute(first).await.unwrap().duplicate);
    }
}

crate::both_storages! {
    async fn an_event_fingerprinted_by_the_old_rule_still_answers_its_retry() {
        // Given an event recorded with the digest an earlier hub made of its request,
        let t = new_log().await;
        let log = &t.log;
        let product = register_product(log, "IDEM-OLD").await;
        let shop = enroll_store(log).await;
        let old_rule = Fingerprint::from_bytes([0xab; 16]);
        let first = CommandRequest {
            fingerprint: old_rule,
            ..request(add_stock(product, shop, 5), ExpectedVersion::Any)
        };
        log.execute(first.clone()).await.unwrap();
        // when the same request comes again with today's digest and the old one beside it,
        let retry = CommandRequest {
            fingerprint: Fingerprint::from_bytes([0xcd; 16]),
            legacy_fingerprint: Some(old_rule),
            ..first.clone()
        };
        // then it is a duplicate,
        assert!(log.execute(retry.clone()).await.unwrap().duplicate);
        // and a request whose old digest differs too is still another request.
        let other = CommandRequest {
            legacy_fingerprint: Some(Fingerprint::from_bytes([0xef; 16])),
            ..retry
        };
        assert_eq!(
            log.execute(other).await,
            Err(WriteError::IdempotencyConflict(first.event_id))
        );
    }
}

crate::both_storages! {
    async fn identical_requests_in_flight_together_write_one_event() {
        const COPIES: usize = 16;
        let t = new_log().await;
        let log = &t.log;
        let product = register_product(log, "IDEM-3").await;
        let shop = enroll_store(log).await;

        // Copies sent by concurrent tasks (they may share a batch or not).
        let head = log_head(log).await;
        let same = request(add_stock(product, shop, 3), ExpectedVersion::Any);
        let start = Arc::new(Barrier::new(COPIES));
        let tasks: Vec<_> = (0..COPIES)
            .map(|_| {
                let log = log.clone();
                let same = same.clone();
                let start = start.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    log.execute(same).await
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap().expect("every copy is answered with the write"));
        }
        let (originals, duplicates): (Vec<_>, Vec<_>) = results.iter().partition(|r| !r.duplicate);
        assert_eq!(originals.len(), 1, "exactly one copy writes");
        assert_eq!(duplicates.len(), COPIES - 1);
        for r in &results {
            assert_eq!(r.position, head + 1);
            assert_eq!(r.stream_version, 1);
            assert_eq!(r.events, originals[0].events);
        }
        assert_eq!(bus_head(log).await, head + 1);

        // Copies queued into one and the same group commit.
        let head = log_head(log).await;
        let same = request(add_stock(product, shop, 4), ExpectedVersion::Exact(1));
        let results = one_batch(&t, vec![same.clone(); COPIES]).await;
        let results: Vec<WriteResult> = results.into_iter().map(|r| r.expect("accepted")).collect();
        assert!(!results[0].duplicate, "the first copy in the queue writes");
        assert!(
            results[1..].iter().all(|r| r.duplicate),
            "later copies in the batch are duplicates"
        );
        assert!(results.iter().all(|r| r.position == head + 1 && r.stream_version == 2));
        assert!(results.iter().all(|r| r.events == results[0].events));

        let events = all_events(log).await;
        check_log(&events);
        assert_eq!(events.len() as u64, head + 1);
        for id in [results[0].events[0].event_id, originals[0].events[0].event_id] {
            assert_eq!(events.iter().filter(|e| e.event_id == id).count(), 1);
        }
    }
}
