//! Uploads: a batch sent twice, after a lost answer or dropped at any point is recorded
//! once, and a reused event id is rejected; a store token
//! writes and reads only its own streams (every reason code); an offline sale after the
//! last unit sold online is recorded and flagged (the facts policy).

use super::*;

/// A hub with an enrolled store, and the upload request's head as an agent sends it
/// over a raw socket (to lose the answer on purpose).
async fn given_a_store() -> (TestHub, Agent, String) {
    let hub = TestHub::spawn().await;
    let (_, agent) = hub.enroll("Leipzig").await;
    let head = format!(
        "POST /v1/sync/upload HTTP/1.1\r\nAuthorization: Bearer {}\r\n{PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\n\
         Content-Type: application/json\r\n",
        agent.token
    );
    (hub, agent, head)
}

/// Each of `events` is in the store's view of the log exactly once.
async fn assert_recorded_once(agent: &Agent, events: &[UploadEvent]) -> Vec<EventEnvelope> {
    let (log, _) = agent.pull_all(0).await;
    let mut counts: HashMap<EventId, usize> = HashMap::new();
    for event in &log {
        *counts.entry(event.event_id).or_default() += 1;
    }
    for event in events {
        assert_eq!(
            counts.get(&event.event_id),
            Some(&1),
            "{} is in the log once",
            event.event_id
        );
    }
    log
}

shelfsync_hub::both_storages! {
    async fn a_batch_sent_twice_is_recorded_once_at_its_first_positions() {
        // Given a store's batch of five facts, recorded
        let (hub, agent, _) = given_a_store().await;
        let hold = ReservationId::new_v7();
        let batch = vec![
            agent.fact(demo_product(0), added(10)),
            agent.fact(demo_product(0), reserved(hold, 3)),
            agent.fact(demo_product(0), committed(hold, 3)),
            agent.fact(demo_product(1), added(4)),
            agent.fact(demo_product(1), adjusted(-1)),
        ];
        let first = agent.upload(&batch).await;
        assert_eq!(first.results.len(), batch.len());
        let mut recorded = Vec::new();
        for (result, event) in first.results.iter().zip(&batch) {
            assert_eq!(result.event_id, event.event_id, "results come in request order");
            recorded.push(appended(&result.outcome));
        }
        assert!(
            recorded.windows(2).all(|w| w[0].0 < w[1].0),
            "positions follow the batch order: {recorded:?}"
        );
        assert_eq!(first.head, recorded.last().unwrap().0);

        // When the same batch is sent again (a retry)
        let again = agent.upload(&batch).await;

        // Then nothing new is written: each is a duplicate at its original position
        for (result, (position, stream_version)) in again.results.iter().zip(&recorded) {
            assert_eq!(
                result.outcome,
                UploadOutcome::Duplicate {
                    position: *position,
                    stream_version: *stream_version
                },
                "{result:?}"
            );
        }
        assert_eq!(again.head, first.head, "a retried batch writes nothing");
        assert_eq!(hub.head().await, first.head);
        // and the log holds each once, where the answers said, as the store's.
        let log = assert_recorded_once(&agent, &batch).await;
        for (event, (position, _)) in batch.iter().zip(&recorded) {
            let logged = log.iter().find(|e| e.event_id == event.event_id).unwrap();
            assert_eq!(logged.position, *position);
            assert_eq!(logged.metadata.origin, Origin::Store(agent.store));
        }
    }
}

shelfsync_hub::both_storages! {
    async fn a_batch_whose_answer_was_lost_is_answered_as_duplicates_when_resent() {
        // Given a batch whose request reached the hub and was recorded, while its answer never
        // reached the agent (the connection is dropped unread)
        let (hub, agent, head) = given_a_store().await;
        let lost = vec![
            agent.fact(demo_product(2), added(2)),
            agent.fact(demo_product(2), adjusted(-1)),
        ];
        let before = hub.head().await;
        let body = serde_json::to_vec(&UploadRequest { events: lost.clone() }).unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let connection = raw_request(&hub, socket, &head, &body).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while hub.head().await < before + 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lost upload was never recorded"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(connection);

        // When the agent sends it again
        let resent = agent.upload(&lost).await;

        // Then every event is a duplicate at the position it was recorded at, once.
        let lost_positions: Vec<u64> = resent
            .results
            .iter()
            .map(|r| match r.outcome {
                UploadOutcome::Duplicate { position, .. } => position,
                ref other => panic!("the resent batch must be all duplicates: {other:?}"),
            })
            .collect();
        assert_eq!(lost_positions, vec![before + 1, before + 2]);
        assert_recorded_once(&agent, &lost).await;
    }
}

shelfsync_hub::both_storages! {
    async fn a_batch_dropped_at_any_point_and_resent_at_once_is_recorded_once() {
        // Given a batch whose connection is dropped right after sending, possibly before the
        // hub read it
        let (hub, agent, head) = given_a_store().await;
        let racing = vec![
            agent.fact(demo_product(3), added(1)),
            agent.fact(demo_product(3), added(2)),
        ];
        let body = serde_json::to_vec(&UploadRequest { events: racing.clone() }).unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        drop(raw_request(&hub, socket, &head, &body).await);

        // When it is resent at once
        let resent = agent.upload(&racing).await;

        // Then each event is appended or a duplicate, and recorded exactly once either way.
        for result in &resent.results {
            assert!(
                matches!(
                    result.outcome,
                    UploadOutcome::Appended { .. } | UploadOutcome::Duplicate { .. }
                ),
                "{result:?}"
            );
        }
        assert_recorded_once(&agent, &racing).await;
    }
}

shelfsync_hub::both_storages! {
    async fn an_event_id_sent_again_with_other_content_is_rejected_as_reused() {
        // Given two recorded facts
        let (hub, agent, _) = given_a_store().await;
        let batch = vec![
            agent.fact(demo_product(0), added(10)),
            agent.fact(demo_product(1), added(4)),
        ];
        agent.upload(&batch).await;

        // When their ids are sent again with another quantity, and on another stream
        let mut reused = batch[0].clone();
        reused.data = json!({"quantity": 11});
        let mut moved = batch[1].clone();
        moved.stream = StreamId::inventory(demo_product(4), agent.store);
        let head_before = hub.head().await;
        let answer = agent.upload(&[reused, moved]).await;

        // Then both are rejected as reused ids: the same id with other content is not the
        // same fact, and nothing is written.
        for result in &answer.results {
            assert_eq!(reason(&result.outcome), "event_id_reused", "{result:?}");
        }
        assert_eq!(hub.head().await, head_before, "a rejected event writes nothing");
    }
}

shelfsync_hub::both_storages! {
    async fn a_retry_is_a_duplicate_even_where_the_rules_would_now_refuse_it() {
        // Given a batch that names one delivery twice, recorded, and a hold still open
        let (hub, agent, _) = given_a_store().await;
        let hold = ReservationId::new_v7();
        let delivery = agent.fact(demo_product(2), added(5));
        let held = agent.fact(demo_product(2), reserved(hold, 1));
        let first = agent.upload(&[delivery.clone(), delivery.clone(), held.clone()]).await;
        let recorded = appended(&first.results[0].outcome);
        let (position, stream_version) = recorded;
        assert_eq!(
            first.results[1].outcome,
            UploadOutcome::Duplicate {
                position,
                stream_version
            },
            "the same id twice in one batch is written once"
        );
        let hold_at = appended(&first.results[2].outcome);
        let head = hub.head().await;

        // When the hold is sent again (its id is open, which refuses a new hold), and the
        // delivery once more
        let again = agent.upload(&[held.clone(), delivery.clone()]).await;

        // Then both are duplicates at their first positions, and nothing is written.
        let duplicate = |(position, stream_version): (u64, u64)| UploadOutcome::Duplicate {
            position,
            stream_version,
        };
        assert_eq!(again.results[0].outcome, duplicate(hold_at));
        assert_eq!(again.results[1].outcome, duplicate(recorded));
        assert_eq!(hub.head().await, head);
        assert_recorded_once(&agent, &[delivery, held]).await;
    }
}

shelfsync_hub::both_storages! {
    async fn a_store_token_writes_and_reads_only_its_own_streams() {
        // Given two demo stores, B having recorded a sale
        let hub = TestHub::spawn().await;
        let a = hub.demo_agent(0).await;
        let b = hub.demo_agent(1).await;
        let b_sale = b.fact(demo_product(0), added(1));
        let b_answer = b.upload(std::slice::from_ref(&b_sale)).await;
        appended(&b_answer.results[0].outcome);

        let unknown_product = ProductId::new_v7();
        let mut other_store = a.fact(demo_product(0), added(1));
        other_store.stream = StreamId::inventory(demo_product(0), b.store);
        other_store.metadata.origin = Origin::Store(b.store);
        let mut catalog_stream = a.fact(demo_product(0), added(1));
        catalog_stream.stream = StreamId::catalog(demo_product(0));
        let mut origin_other = a.fact(demo_product(0), added(1));
        origin_other.metadata.origin = Origin::Store(b.store);
        let mut origin_hub = a.fact(demo_product(0), added(1));
        origin_hub.metadata.origin = Origin::Hub;
        let mut unknown_type = a.fact(demo_product(0), added(1));
        unknown_type.event_type = "StockTeleported".into();
        let mut future_schema = a.fact(demo_product(0), added(1));
        future_schema.schema_version = 2;
        let mut malformed = a.fact(demo_product(0), added(1));
        malformed.data = json!({"quantity": "three"});
        let hold = ReservationId::new_v7();
        let oversell = EventPayload::OversellDetected {
            caused_by: EventId::new_v7(),
            on_hand: 0,
            reserved: 0,
            available: -1,
        };
        let batch: Vec<(UploadEvent, Option<&str>)> = vec![
            (a.fact(demo_product(0), added(1)), None),
            (other_store, Some("wrong_store")),
            (catalog_stream, Some("wrong_store")),
            (origin_other, Some("wrong_origin")),
            (origin_hub, Some("wrong_origin")),
            (a.fact(demo_product(1), reserved(hold, 1)), None),
            (fact(a.store, unknown_product, added(1)), Some("unknown_product")),
            (unknown_type, Some("unknown_event_type")),
            (future_schema, Some("unsupported_schema_version")),
            (malformed, Some("malformed_event")),
            (a.fact(demo_product(0), added(1_000_001)), Some("out_of_range")),
            (a.fact(demo_product(0), adjusted(0)), Some("out_of_range")),
            (a.fact(demo_product(0), oversell), Some("event_type_not_allowed")),
            (
                a.fact(demo_product(2), reserved(hold, 1)),
                Some("reservation_id_in_use"),
            ),
            // Open on this very stream: a second hold under the same id would replace the first.
            (
                a.fact(demo_product(1), reserved(hold, 2)),
                Some("reservation_id_in_use"),
            ),
            // Another store's recorded event, sent again with its id and content.
            (b_sale.clone(), Some("wrong_store")),
            (a.fact(demo_product(1), committed(hold, 1)), None),
        ];
        // When A uploads a batch with every reason to reject an event, among good ones
        let events: Vec<UploadEvent> = batch.iter().map(|(e, _)| e.clone()).collect();
        let answer = a.upload(&events).await;

        // Then each rejected event has its reason and the ones after it are recorded
        assert_eq!(answer.results.len(), batch.len());
        let mut accepted = Vec::new();
        for ((event, want), result) in batch.iter().zip(&answer.results) {
            assert_eq!(result.event_id, event.event_id);
            match want {
                Some(code) => assert_eq!(reason(&result.outcome), *code, "{event:?}"),
                None => accepted.push(appended(&result.outcome).0),
            }
        }
        assert_eq!(
            accepted.len(),
            3,
            "the events after each rejected one are still recorded"
        );
        let fleet = hub.fleet().await;
        assert_eq!(fleet_entry(&fleet, a.store).rejected_uploads, 14);
        assert_eq!(fleet_entry(&fleet, b.store).rejected_uploads, 0);

        // Reads: its own streams and the catalog, nothing of another store.
        let (pulled, _) = a.pull_all(0).await;
        assert!(!pulled.is_empty());
        for event in &pulled {
            assert!(
                event.stream.store_id.is_none_or(|s| s == a.store),
                "store A saw {event:?}"
            );
        }
        let catalog = pulled.iter().filter(|e| e.stream.is_catalog()).count();
        assert_eq!(
            catalog,
            shelfsync_hub::seed::products().len(),
            "the catalog is visible to every store"
        );
        for position in &accepted {
            assert!(pulled.iter().any(|e| e.position == *position));
        }
        assert!(!pulled.iter().any(|e| e.event_id == b_sale.event_id));
        let mut stream = a.stream(Some(0)).await;
        let pushed = stream.until_caught_up(WAIT).await;
        assert_eq!(events_of(&pushed), pulled, "push and pull show a store the same events");
    }
}

shelfsync_hub::both_storages! {
    async fn only_store_tokens_sync_and_store_tokens_only_sync() {
        // Given a hub with a demo store's agent and a channel token
        let hub = TestHub::spawn().await;
        let a = hub.demo_agent(0).await;

        // When the admin or a channel token calls the sync surface
        // Then it is forbidden: admin and channel tokens are not agents
        let (status, channel, _) = call(hub.post("/v1/admin/tokens", &json!({"name": "web-shop"}))).await;
        assert_eq!(status, 201, "{channel}");
        let channel = channel["secret"].as_str().unwrap().to_owned();
        for token in [ADMIN.to_owned(), channel] {
            let other = Agent { token, ..a.clone() };
            let requests = [
                other.request(reqwest::Method::GET, "/v1/sync/events"),
                other.request(reqwest::Method::GET, "/v1/sync/stream"),
                other.request(reqwest::Method::GET, "/v1/sync/snapshot"),
                other
                    .request(reqwest::Method::POST, "/v1/sync/upload")
                    .json(&UploadRequest { events: vec![] }),
                other
                    .request(reqwest::Method::POST, "/v1/sync/heartbeat")
                    .json(&heartbeat(0)),
            ];
            for request in requests {
                let (status, body, content_type) = call(request).await;
                assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
                assert_eq!(content_type, "application/problem+json");
            }
        }
        // and a store token calling the admin or command API is forbidden: it is only an agent.
        let (status, _, _) = call(a.request(reqwest::Method::GET, "/v1/admin/fleet")).await;
        assert_eq!(status, 403);
        let (status, _, _) = call(a.request(reqwest::Method::POST, "/v1/inventory/stock").json(&json!({
            "product_id": demo_product(0), "store_id": a.store, "quantity": 1
        })))
        .await;
        assert_eq!(status, 403);
    }
}

shelfsync_hub::both_storages! {
    async fn an_offline_sale_after_the_last_unit_sold_online_is_recorded_and_flagged() {
        let hub = TestHub::spawn().await;
        let a = hub.demo_agent(0).await;
        let (item, store) = (demo_product(2), a.store);
        let level_path = |position: u64| format!("/v1/inventory/products/{item}/stores/{store}?min_position={position}");
        let (_, level, _) = call(hub.get(&level_path(hub.head().await))).await;
        let on_hand = level["available"].as_i64().unwrap();
        assert!(on_hand > 0 && level["reserved"] == 0, "{level}");

        // Online: the web shop reserves and sells the last units, strictly checked.
        let (status, online, _) = call(hub.post(
            "/v1/inventory/reservations",
            &json!({"product_id": item, "store_id": store, "quantity": on_hand}),
        ))
        .await;
        assert_eq!(status, 201, "{online}");
        let hold = online["events"][0]["data"]["reservation_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, sold, _) = call(hub.post_empty(&format!("/v1/inventory/reservations/{hold}/commit"))).await;
        assert_eq!(status, 201, "{sold}");
        let sold_at = sold["position"].as_u64().unwrap();

        // Offline, earlier: the till reserved and sold one unit while the link was down.
        let till_hold = ReservationId::new_v7();
        let an_hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
        let mut offline_hold = a.fact(item, reserved(till_hold, 1));
        offline_hold.metadata.occurred_at = an_hour_ago;
        let mut offline_sale = a.fact(item, committed(till_hold, 1));
        offline_sale.metadata.occurred_at = an_hour_ago + time::Duration::minutes(1);
        let answer = a.upload(&[offline_hold.clone(), offline_sale.clone()]).await;
        let (hold_at, _) = appended(&answer.results[0].outcome);
        let (sale_at, _) = appended(&answer.results[1].outcome);
        assert!(hold_at > sold_at);

        // The log: the hold, the hub's OversellDetected for it, the sale.
        let (after, _) = a.pull_all(sold_at).await;
        let stream = StreamId::inventory(item, store);
        let on_stream: Vec<&EventEnvelope> = after.iter().filter(|e| e.stream == stream).collect();
        assert_eq!(on_stream.len(), 3, "{on_stream:#?}");
        assert_eq!(on_stream[0].event_id, offline_hold.event_id);
        assert_eq!(
            on_stream[0].metadata.occurred_at, an_hour_ago,
            "the fact keeps its own time"
        );
        let flag = on_stream[1];
        assert_eq!(flag.position, hold_at + 1);
        assert_eq!(
            flag.payload,
            EventPayload::OversellDetected {
                caused_by: offline_hold.event_id,
                on_hand: 0,
                reserved: 1,
                available: -1
            }
        );
        assert_eq!(flag.metadata.origin, Origin::Hub);
        assert_eq!(flag.metadata.causation_id, Some(offline_hold.event_id.0));
        assert_eq!(
            (on_stream[2].event_id, on_stream[2].position),
            (offline_sale.event_id, sale_at)
        );
        let oversells = after
            .iter()
            .filter(|e| matches!(e.payload, EventPayload::OversellDetected { .. }))
            .count();
        assert_eq!(oversells, 1, "the sale did not lower available further: no second flag");

        // The fleet counts it; the read model shows the negative stock.
        assert_eq!(fleet_entry(&hub.fleet().await, store).oversells, 1);
        let (status, level, _) = call(hub.get(&level_path(sale_at))).await;
        assert_eq!(status, 200, "{level}");
        assert_eq!(
            (
                level["on_hand"].as_i64(),
                level["reserved"].as_i64(),
                level["available"].as_i64()
            ),
            (Some(-1), Some(0), Some(-1))
        );
        // A hub command, unlike a fact, is still checked strictly.
        let (status, refused, _) = call(hub.post(
            "/v1/inventory/reservations",
            &json!({"product_id": item, "store_id": store, "quantity": 1}),
        ))
        .await;
        assert_eq!((status, refused["code"].as_str()), (409, Some("insufficient_stock")));
    }
}
