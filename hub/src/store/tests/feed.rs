//! The catch-up feed: from zero, live past a bus overflow, and re-reading from the store
//! when a batch does not follow its cursor.

use super::*;

/// Polls a caught-up feed's `next` for 50 ms: it has nothing to give until the bus
/// publishes, so it must still be pending.
async fn assert_waits_for_the_bus(next: &mut (impl std::future::Future + Unpin)) {
    assert!(
        tokio::time::timeout(Duration::from_millis(50), next).await.is_err(),
        "a caught-up feed waits for the bus"
    );
}

crate::both_storages! {
    async fn a_feed_from_zero_returns_the_whole_history_in_order() {
        const HISTORY: usize = 3000;
        let t = new_log().await;
        let log = &t.log;
        let streams = given_streams(log, "FEED-1", 3).await;
        append_concurrently(log, &streams, HISTORY, 8).await;
        let history = all_events(log).await;
        let head = log_head(log).await;
        assert_eq!(head, HISTORY as u64 + 1);
        check_log(&history);

        let mut feed = log.feed(0);
        assert!(!feed.caught_up());
        assert_eq!(read_feed_until(&mut feed, head).await, history);
        assert!(feed.caught_up());

        let mut from_middle = log.feed(1234);
        assert_eq!(read_feed_until(&mut from_middle, head).await, history[1234..]);

        // A caught-up feed follows the bus: the next commit arrives live.
        let (product, shop) = streams[0];
        let written = execute(log, add_stock(product, shop, 1), ExpectedVersion::Any)
            .await
            .unwrap();
        for feed in [&mut feed, &mut from_middle] {
            let next = read_feed_until(feed, head + 1).await;
            assert_eq!(next, written.events);
        }
        log.close().await;
    }
}

crate::both_storages! {
    async fn a_live_feed_yields_every_event_once_even_after_the_bus_overflowed() {
        const LIVE: usize = 1000;
        const UNREAD: usize = 4000;
        let t = new_log().await;
        let log = &t.log;
        let streams = given_streams(log, "FEED-2", 4).await;
        let start = log_head(log).await;
        let mut feed = log.feed(start);
        assert!(feed.caught_up());

        // Read while four writers append.
        let writing = {
            let log = log.clone();
            let streams = streams.clone();
            tokio::spawn(async move { append_concurrently(&log, &streams, LIVE, 4).await })
        };
        let mut seen = read_feed_until(&mut feed, start + LIVE as u64).await;
        writing.await.unwrap();

        // Park the caught-up feed inside its bus receiver, then stop polling it while two
        // writers append: each commit holds at most two events, so more batches are
        // published than the bus keeps (1024). The parked receiver wakes up lagged, and the
        // feed must re-read what it missed from the store.
        let mut parked = Box::pin(feed.next());
        assert_waits_for_the_bus(&mut parked).await;
        append_concurrently(log, &streams, UNREAD, 2).await;
        let end = start + (LIVE + UNREAD) as u64;
        assert_eq!(bus_head(log).await, end);
        let page = tokio::time::timeout(PATIENCE, parked)
            .await
            .expect("the lagged feed answers")
            .expect("the bus is open")
            .expect("the store reads");
        assert_eq!(page.first().map(|e| e.position), Some(start + LIVE as u64 + 1));
        seen.extend(page);
        seen.extend(read_feed_until(&mut feed, end).await);
        let history = all_events(log).await;
        let unread_commits = commits(&history[start as usize + LIVE..]).len();
        assert!(
            unread_commits > 1024,
            "only {unread_commits} commits while the feed was not read"
        );
        assert!(feed.caught_up());
        let positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
        assert_eq!(
            positions,
            (start + 1..=end).collect::<Vec<_>>(),
            "every event once, in order"
        );
        assert_eq!(seen, history[start as usize..]);

        // After the overflow the feed still follows the bus.
        let (product, shop) = streams[0];
        let written = execute(log, add_stock(product, shop, 1), ExpectedVersion::Any)
            .await
            .unwrap();
        assert_eq!(read_feed_until(&mut feed, end + 1).await, written.events);
        log.close().await;
    }
}

crate::both_storages! {
    async fn a_feed_re_reads_from_the_store_when_a_batch_does_not_follow_its_cursor() {
        let t = new_log().await;
        let log = &t.log;
        let product = register_product(log, "FEED-3").await;
        let shop = enroll_store(log).await;
        for _ in 0..9 {
            execute(log, add_stock(product, shop, 1), ExpectedVersion::Any)
                .await
                .unwrap();
        }
        assert_eq!(all_events(log).await.len(), 10);

        // A bus of its own, at head 10: the feed reads the store once, finds nothing newer,
        // and then waits on this bus.
        let bus = EventBus::new();
        bus.set_head(10);
        let mut feed = EventFeed::new(Arc::new(crate::store::feed::History::new(log.reads.clone())), &bus, 10);
        assert!(feed.caught_up());
        let mut parked = Box::pin(feed.next());
        assert_waits_for_the_bus(&mut parked).await;
        for _ in 0..11 {
            execute(log, add_stock(product, shop, 1), ExpectedVersion::Any)
                .await
                .unwrap();
        }
        let history = all_events(log).await;
        assert_eq!(history.len(), 21);
        // The next batch it hears of starts at 16: 11..=15 went by unheard.
        bus.publish(history[15..].to_vec());
        let page = tokio::time::timeout(PATIENCE, parked)
            .await
            .expect("the feed answers")
            .expect("the bus is open")
            .expect("the store reads");
        assert_eq!(
            page.first().map(|e| e.position),
            Some(11),
            "the gap is read from the store"
        );
        let mut seen = page;
        seen.extend(read_feed_until(&mut feed, 21).await);
        assert_eq!(seen, history[10..]);
    }
}
