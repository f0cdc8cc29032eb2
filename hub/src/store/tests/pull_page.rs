//! The pull page: written straight from the stored rows, it must read as the same
//! `EventEnvelope`s as the decoded log, only those the store may see, bounded by `limit`.

use super::*;

crate::both_storages! {
    async fn a_pull_page_reads_as_the_decoded_events_the_store_may_see() {
        let t = new_log().await;
        let log = &t.log;
        let streams = given_streams(log, "PULL-1", 2).await;
        let (product, mine) = streams[0];
        let theirs = streams[1].1;
        let reservation = ReservationId::new_v7();
        for command in [
            add_stock(product, mine, 5),
            add_stock(product, theirs, 7),
            reserve(product, mine, reservation, 2),
            commit(reservation),
        ] {
            execute(log, command, ExpectedVersion::Any).await.expect("a write");
        }
        let mut renamed = new_product("PULL-2");
        let renamed_id = register_product(log, &renamed.sku).await;
        renamed.id = renamed_id;
        renamed.name = "Renamed \"quoted\" \u{e9}".into();
        execute(log, update(renamed), ExpectedVersion::Any)
            .await
            .expect("an update");
        let visible: Vec<EventEnvelope> = all_events(log)
            .await
            .into_iter()
            .filter(|event| event.stream.visible_to(mine))
            .collect();
        assert!(visible.len() >= 6, "catalog and own inventory: {visible:?}");

        let page = log.visible_after(mine, 0, EVERYTHING, 1_000).await.expect("a page");
        let pulled: Vec<EventEnvelope> = serde_json::from_str(&page.events).expect("an array of envelopes");
        assert_eq!(
            pulled, visible,
            "the same events as decoded, the other store's left out"
        );
        assert_eq!(page.scanned_to, log_head(log).await);

        let first_two = log.visible_after(mine, 0, 2, 1_000).await.expect("a page");
        let pulled: Vec<EventEnvelope> = serde_json::from_str(&first_two.events).expect("an array of envelopes");
        assert_eq!(pulled, visible[..2], "at most `limit`");
        assert_eq!(
            first_two.scanned_to, visible[1].position,
            "scanned to the last one sent"
        );
    }
}
