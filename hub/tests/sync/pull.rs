//! The pull cursor passes invisible events and reaches the head.

use super::*;

shelfsync_hub::both_storages! {
    async fn pull_cursors_pass_invisible_events_and_reach_the_head() {
        let hub = TestHub::spawn().await;
        let a = hub.demo_agent(0).await;
        let b = hub.demo_agent(1).await;
        let (_, cursor) = a.pull_all(0).await;
        assert_eq!(cursor, hub.head().await);

        // Only other stores wrote: no events for A, but its cursor reaches the head.
        let other = b
            .upload(&[
                b.fact(demo_product(0), added(1)),
                b.fact(demo_product(1), added(1)),
                b.fact(demo_product(2), added(1)),
            ])
            .await;
        let page = a.pull(cursor, 100).await;
        assert!(page.events.is_empty(), "{:?}", page.events);
        assert_eq!((page.next_cursor, page.head), (other.head, other.head));
        let cursor = page.next_cursor;

        // Interleaved writes, read in pages of two: every event once, in order.
        let mut mine = Vec::new();
        for n in 0..5 {
            let answer = a.upload(&[a.fact(demo_product(n), added(1))]).await;
            mine.push(appended(&answer.results[0].outcome).0);
            b.upload(&[b.fact(demo_product(n), added(1))]).await;
        }
        let head = hub.head().await;
        let mut seen = Vec::new();
        let mut at = cursor;
        for _ in 0..10 {
            let page = a.pull(at, 2).await;
            assert!(page.events.len() <= 2);
            assert!(page.next_cursor > at || page.next_cursor == page.head);
            if page.events.len() == 2 {
                assert_eq!(
                    page.next_cursor, page.events[1].position,
                    "a full page stops at its last event"
                );
            }
            seen.extend(positions(&page.events));
            at = page.next_cursor;
            if at == page.head {
                break;
            }
        }
        assert_eq!(seen, mine);
        assert_eq!(at, head);
        let page = a.pull(at, 1000).await;
        assert!(page.events.is_empty());
        assert_eq!(page.next_cursor, head);

        // Limits and bad cursors are refused with problem+json.
        for query in [
            "limit=0",
            "limit=10001",
            "after=-1",
            "after=abc",
            "limit=ten",
            "since=3",
        ] {
            let (status, body, content_type) =
                call(a.request(reqwest::Method::GET, &format!("/v1/sync/events?{query}"))).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (400, Some("invalid_query")),
                "{query}: {body}"
            );
            assert_eq!(content_type, "application/problem+json");
        }
        assert_eq!(
            a.pull(0, 1000).await.events.len(),
            a.pull_all(0).await.0.len().min(1000)
        );
        let default_page = call(a.request(reqwest::Method::GET, "/v1/sync/events")).await;
        assert_eq!(default_page.0, 200);
    }
}

shelfsync_hub::both_storages! {
    async fn a_cursor_past_the_head_is_answered_as_cursor_ahead_on_pull_and_push() {
        // What an agent sees after its hub was restored from a backup older than its
        // cursor: the hub's head is behind the agent's cursor.
        let hub = TestHub::spawn().await;
        let a = hub.demo_agent(0).await;
        let head = hub.head().await;
        let page = a.pull(head, 10).await;
        assert_eq!((page.next_cursor, page.head), (head, head), "at the head: caught up, not ahead");
        let response = a
            .request(reqwest::Method::GET, &format!("/v1/sync/events?after={}", head + 5))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["x-shelfsync-head"].to_str().unwrap(),
            head.to_string(),
            "the answer names the hub's head"
        );
        let (status, body, content_type) =
            call(a.request(reqwest::Method::GET, &format!("/v1/sync/events?after={}", head + 5))).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("cursor_ahead")), "{body}");
        assert_eq!(content_type, "application/problem+json");
        let (status, body, _) = call(
            a.request(reqwest::Method::GET, "/v1/sync/stream")
                .header("Last-Event-ID", (head + 1).to_string()),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (409, Some("cursor_ahead")), "{body}");
    }
}
