//! Three hubs on one PostgreSQL database, each with its own writer, bus and follower (as
//! three hub processes have): concurrent writers on every hub, a reader that tails the log
//! on one of them, races on one stream across hubs, and one upload sent to two hubs.

use super::*;
use crate::testing::storage::TestDatabase;
use shelfsync_common::wire::sync::UploadOutcome;

const HUBS: usize = 3;

/// Three hubs started at once on a new database (they take turns to migrate it).
async fn three_hubs(db: &TestDatabase) -> Vec<EventStore> {
    let starting = (0..HUBS).map(|_| EventStore::open_postgres(db.settings(), EventBus::new()));
    futures_util::future::try_join_all(starting)
        .await
        .expect("three hubs start on one database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_on_three_hubs_give_one_gap_free_commit_ordered_log_that_a_tailing_reader_never_sees_move() {
    const PER_HUB: usize = 300;
    let Some(db) = TestDatabase::create().await else { return };
    let hubs = three_hubs(&db).await;
    // Given streams made through the first hub
    let streams = given_streams(&hubs[0], "CLUSTER", 4).await;
    let before = log_head(&hubs[2]).await;

    // When every hub appends concurrently, while a reader on the last hub tails the log
    // page by page and checks that each page starts right after its cursor
    let reader = {
        let log = hubs[2].clone();
        let total = before + (HUBS * PER_HUB) as u64;
        tokio::spawn(async move {
            let (mut cursor, mut seen) = (before, Vec::new());
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while cursor < total {
                assert!(tokio::time::Instant::now() < deadline, "the reader stalled at {cursor}");
                let page = log.read_after(cursor, 37).await.expect("read a page");
                for event in &page {
                    assert_eq!(
                        event.position,
                        cursor + 1,
                        "a position appeared behind or ahead of the cursor"
                    );
                    cursor = event.position;
                }
                seen.extend(page);
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let writers: Vec<_> = hubs
        .iter()
        .map(|hub| {
            let (hub, streams) = (hub.clone(), streams.clone());
            tokio::spawn(async move { append_concurrently(&hub, &streams, PER_HUB, 8).await })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer task"));
    }
    let tailed = reader.await.expect("reader task");

    // Then the log is gap-free with contiguous stream versions, every acknowledged write
    // is in it exactly once at the position it was given, and the tailing reader saw
    // exactly the log
    let events = all_events(&hubs[1]).await;
    check_log(&events);
    assert_eq!(events.len() as u64, before + (HUBS * PER_HUB) as u64);
    for write in &acknowledged {
        let event = &write.events[0];
        assert_eq!(events[event.position as usize - 1].event_id, event.event_id);
    }
    let tailed_ids: Vec<_> = tailed.iter().map(|e| e.event_id).collect();
    let logged_ids: Vec<_> = events[before as usize..].iter().map(|e| e.event_id).collect();
    assert_eq!(tailed_ids, logged_ids);
    // and every hub's bus reaches the head, the others' events included
    for hub in &hubs {
        let mut head = hub.bus().watch_head();
        let total = events.len() as u64;
        tokio::time::timeout(PATIENCE, head.wait_for(|h| *h >= total))
            .await
            .expect("each hub's bus follows the other hubs' commits")
            .expect("bus open");
    }
    for hub in &hubs {
        hub.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hubs_racing_on_one_stream_version_give_one_winner_and_one_conflict() {
    let Some(db) = TestDatabase::create().await else { return };
    let hubs = three_hubs(&db).await;
    let streams = given_streams(&hubs[0], "RACE", 1).await;
    let (product, shop) = streams[0];
    let version = stream_version(&hubs[1], StreamId::inventory(product, shop)).await;
    for round in 0..20u64 {
        // Both hubs expect the version the stream is at now
        let expected = ExpectedVersion::Exact(version + round);
        let racing = hubs[..2]
            .iter()
            .map(|hub| execute(hub, add_stock(product, shop, 1), expected));
        let answers = futures_util::future::join_all(racing).await;
        let winners = answers.iter().filter(|a| a.is_ok()).count();
        let conflicts = answers
            .iter()
            .filter(|a| matches!(a, Err(WriteError::VersionConflict { .. })))
            .count();
        assert_eq!((winners, conflicts), (1, 1), "round {round}: {answers:?}");
    }
    check_log(&all_events(&hubs[2]).await);
    for hub in &hubs {
        hub.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_upload_sent_to_two_hubs_at_once_is_recorded_once() {
    let Some(db) = TestDatabase::create().await else { return };
    let hubs = three_hubs(&db).await;
    let streams = given_streams(&hubs[0], "TWICE", 1).await;
    let (product, shop) = streams[0];
    for _ in 0..20 {
        let sale = crate::testing::fact(
            shop,
            product,
            EventPayload::StockAdjusted {
                delta: -1,
                reason: "sale".into(),
            },
        );
        let uploads = hubs[..2].iter().map(|hub| hub.upload(shop, vec![sale.clone()]));
        let answers = futures_util::future::join_all(uploads).await;
        let outcomes: Vec<UploadOutcome> = answers
            .into_iter()
            .map(|a| a.expect("upload answered").remove(0).outcome)
            .collect();
        let appended = outcomes
            .iter()
            .filter(|o| matches!(o, UploadOutcome::Appended { .. }))
            .count();
        let duplicate = outcomes
            .iter()
            .filter(|o| matches!(o, UploadOutcome::Duplicate { .. }))
            .count();
        assert_eq!((appended, duplicate), (1, 1), "{outcomes:?}");
    }
    let events = all_events(&hubs[2]).await;
    check_log(&events);
    for hub in &hubs {
        hub.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_runs_on_the_hub_holding_its_lease_and_another_takes_over_when_it_lapses() {
    let Some(db) = TestDatabase::create().await else { return };
    let hubs = three_hubs(&db).await;
    let lease = Duration::from_millis(800);
    // The first hub to ask holds it; the others do not run the job while it renews.
    assert!(hubs[0].lead("expiry", lease).await.unwrap());
    for _ in 0..3 {
        assert!(!hubs[1].lead("expiry", lease).await.unwrap());
        assert!(!hubs[2].lead("expiry", lease).await.unwrap());
        assert!(hubs[0].lead("expiry", lease).await.unwrap(), "the holder renews");
    }
    // A holder that stops renewing (it died) loses it once the lease runs out.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert!(hubs[1].lead("expiry", lease).await.unwrap());
    assert!(!hubs[0].lead("expiry", lease).await.unwrap());
    // Another job has a lease of its own.
    assert!(hubs[2].lead("roll-up", lease).await.unwrap());
    for hub in &hubs {
        hub.close().await;
    }
}
