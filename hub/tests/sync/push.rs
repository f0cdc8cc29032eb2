//! The push stream (SSE): replay, caught-up, live; shutdown ends it; resume after random
//! disconnects; a slow consumer is dropped and catches up; streams per store are capped; an idle stream gets keep-alives.

use super::*;
use shelfsync_hub::testing::SseClient;

/// Opens the push stream with `request` and reads it until `caught-up`.
async fn replay_until_caught_up(request: reqwest::RequestBuilder) -> Vec<Push> {
    let response = request.send().await.unwrap();
    SseClient::new(response).until_caught_up(WAIT).await
}

shelfsync_hub::both_storages! {
    async fn sse_replays_then_marks_caught_up_then_goes_live() {
        let hub = TestHub::spawn().await;
        let a = hub.demo_agent(0).await;
        let b = hub.demo_agent(1).await;
        let head = hub.head().await;
        let (visible, _) = a.pull_all(0).await;

        let mut stream = a.stream(None).await;
        let replay = stream.until_caught_up(WAIT).await;
        let (last, replayed) = replay.split_last().unwrap();
        assert_eq!(
            *last,
            Push::CaughtUp(head),
            "caught-up carries the head and comes after the replay"
        );
        assert_eq!(events_of(replayed), visible);

        // Live: the store's own event arrives as `event` with id = position...
        let live = a.upload(&[a.fact(demo_product(0), added(1))]).await;
        let (position, _) = appended(&live.results[0].outcome);
        match stream.next(WAIT).await {
            Some(Push::Event(event)) => assert_eq!(event.position, position),
            other => panic!("expected the live event, got {other:?}"),
        }
        // ...and another store's events move the cursor with a `progress` event.
        let other = b
            .upload(&[b.fact(demo_product(0), added(1)), b.fact(demo_product(1), added(1))])
            .await;
        match stream.next(WAIT).await {
            Some(Push::Progress(to)) => assert_eq!(to, other.head),
            other => panic!("expected progress past the invisible events, got {other:?}"),
        }

        // Resuming after an id replays from the next position on.
        let mut resumed = a.stream(Some(position - 1)).await;
        let replay = resumed.until_caught_up(WAIT).await;
        assert_eq!(positions(&events_of(&replay)), vec![position]);
        assert_eq!(replay.last(), Some(&Push::CaughtUp(other.head)));
        // `?after=` does the same for clients that cannot set headers; Last-Event-ID wins.
        let replay =
            replay_until_caught_up(a.request(reqwest::Method::GET, &format!("/v1/sync/stream?after={}", position - 1)))
                .await;
        assert_eq!(positions(&events_of(&replay)), vec![position]);
        let replay = replay_until_caught_up(
            a.request(reqwest::Method::GET, "/v1/sync/stream?after=0")
                .header("Last-Event-ID", position.to_string()),
        )
        .await;
        assert_eq!(replay, vec![Push::CaughtUp(other.head)]);
        let (status, body, _) = call(
            a.request(reqwest::Method::GET, "/v1/sync/stream")
                .header("Last-Event-ID", "seven"),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid_last_event_id")));
    }
}

shelfsync_hub::both_storages! {
    async fn shutdown_ends_open_streams() {
        let hub = TestHub::spawn().await;
        let a = hub.demo_agent(0).await;
        let mut stream = a.stream(None).await;
        stream.until_caught_up(WAIT).await;
        tokio::time::timeout(WAIT, hub.stop())
            .await
            .expect("a graceful shutdown is not held up by an open stream");
        assert_eq!(stream.next(WAIT).await, None, "the stream ended");
    }
}

shelfsync_hub::both_storages! {
    async fn sse_resume_after_random_disconnects_delivers_every_event_once_in_order() {
        let hub = Arc::new(TestHub::spawn().await);
        let a = hub.demo_agent(0).await;
        let b = hub.demo_agent(1).await;
        let start = hub.head().await;
        let seed: u64 = rand::rng().random();
        println!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

        // Writes go on while the agent reads: its own uploads, another store's (invisible),
        // and hub commands on its streams (visible, origin hub).
        let (done, mut finished) = tokio::sync::watch::channel(None::<u64>);
        let writer = {
            let (hub, a, b) = (hub.clone(), a.clone(), b.clone());
            tokio::spawn(async move {
                for round in 0..60usize {
                    a.upload(&[
                        a.fact(demo_product(round % 5), added(1)),
                        a.fact(demo_product((round + 1) % 5), added(2)),
                    ])
                    .await;
                    b.upload(&[b.fact(demo_product(round % 5), added(1))]).await;
                    if round % 4 == 0 {
                        let body = json!({"product_id": demo_product(round % 5), "store_id": a.store, "quantity": 1});
                        let (status, body, _) = call(hub.post("/v1/inventory/stock", &body)).await;
                        assert_eq!(status, 201, "{body}");
                    }
                }
                let _ = done.send(Some(hub.head().await));
            })
        };

        let mut received: Vec<EventEnvelope> = Vec::new();
        let mut last = start;
        let mut connections = 0;
        let mut final_head = None;
        'reconnect: loop {
            assert!(connections < 1000, "too many reconnects");
            connections += 1;
            let mut stream = a.stream(Some(last)).await;
            let drop_after = rng.random_range(1..=12);
            let mut read = 0;
            let mut caught_up_at = None;
            loop {
                if final_head.is_some_and(|head| last >= head) {
                    break 'reconnect;
                }
                let push = tokio::select! {
                    push = stream.next(WAIT) => push,
                    done = finished.wait_for(Option::is_some), if final_head.is_none() => {
                        final_head = *done.expect("the writer task ended");
                        continue;
                    }
                };
                match push {
                    None => panic!("the hub ended the stream"),
                    Some(Push::Event(event)) => {
                        assert!(
                            event.position > last,
                            "event {} after {last}: duplicate or out of order",
                            event.position
                        );
                        if let Some(head) = caught_up_at {
                            assert!(event.position > head, "a live event at or before caught-up's head");
                        }
                        last = event.position;
                        received.push(*event);
                        read += 1;
                        if read >= drop_after {
                            // A forced disconnect at a random point: drop the connection.
                            break;
                        }
                    }
                    Some(Push::CaughtUp(head)) => {
                        assert!(caught_up_at.is_none(), "caught-up twice on one connection");
                        assert!(head >= last);
                        caught_up_at = Some(head);
                        last = head;
                    }
                    Some(Push::Progress(position)) => {
                        assert!(caught_up_at.is_some(), "progress before caught-up");
                        assert!(position >= last);
                        last = position;
                    }
                }
            }
        }
        writer.await.unwrap();
        let (expected, _) = a.pull_all(start).await;
        assert_same_events(&received, &expected, &format!("seed {seed}"));
        assert!(expected.len() >= 100, "enough traffic to matter: {}", expected.len());
        assert!(
            connections > 5,
            "the test must actually reconnect ({connections} connections)"
        );
    }
}

shelfsync_hub::both_storages! {
    async fn a_slow_consumer_is_dropped_and_catches_up_by_reconnecting() {
        let hub = TestHub::spawn_with(|config| config.sync.push_buffer_events = 8).await;
        let a = hub.demo_agent(0).await;
        let b = hub.demo_agent(1).await;
        let start = hub.head().await;
        let dropped_before = hub.metric("shelfsync_hub_sse_dropped_slow_total").await;

        // Store A's client opens the stream and does not read it (with a small receive
        // window, so that the kernel's buffers fill quickly).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let head = format!(
            "GET /v1/sync/stream HTTP/1.1\r\nAuthorization: Bearer {}\r\n{PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\n\
             Last-Event-ID: {start}\r\nConnection: close\r\n",
            a.token
        );
        let mut slow = raw_request(&hub, socket, &head, b"").await;
        fleet_until(&hub, a.store, "A's stream open", |s| s.push_connected).await;
        // Store B's client reads as fast as it can: bursts larger than its buffer must not
        // get it dropped.
        let (done, finished) = tokio::sync::watch::channel(None::<u64>);
        let healthy = {
            let b = b.clone();
            tokio::spawn(async move { follow(b.stream(Some(start)).await, finished).await })
        };
        fleet_until(&hub, b.store, "B's stream open", |s| s.push_connected).await;

        // Write enough to fill every buffer between the pump and the client (the kernel's
        // largest send buffer, hyper's write buffer of about 400 KiB, the client's small
        // window), so that the pump must wait, then stop writing: the pump is dropped after
        // `SLOW_AGENT_STALL` without room.
        let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
            .ok()
            .and_then(|text| text.split_whitespace().nth(2)?.parse::<usize>().ok())
            .unwrap_or(4 << 20);
        let reason = "x".repeat(200);
        let (mut written, mut bytes) = (0, 0);
        while bytes < wmem_max + (1 << 20) {
            let batch: Vec<UploadEvent> = (0..250)
                .map(|i| {
                    a.fact(
                        demo_product(i % 5),
                        EventPayload::StockAdjusted {
                            delta: 1,
                            reason: reason.clone(),
                        },
                    )
                })
                .collect();
            // Each pushed message is longer than the uploaded event (it adds position and more).
            bytes += batch
                .iter()
                .map(|e| serde_json::to_vec(e).unwrap().len())
                .sum::<usize>();
            a.upload(&batch).await;
            written += batch.len();
            let batch: Vec<UploadEvent> = (0..50).map(|i| b.fact(demo_product(i % 5), added(1))).collect();
            b.upload(&batch).await;
            if !fleet_entry(&hub.fleet().await, a.store).push_connected {
                break;
            }
        }
        assert!(shelfsync_hub::api::push::SLOW_AGENT_STALL < WAIT / 2);
        fleet_until(&hub, a.store, "the slow stream dropped", |s| !s.push_connected).await;
        let dropped_after = hub.metric("shelfsync_hub_sse_dropped_slow_total").await;
        assert!(
            dropped_after > dropped_before,
            "the drop is counted ({dropped_before} -> {dropped_after})"
        );
        assert!(
            fleet_entry(&hub.fleet().await, b.store).push_connected,
            "the healthy reader is not dropped"
        );
        let _ = done.send(Some(hub.head().await));
        let (b_expected, _) = b.pull_all(start).await;
        assert_same_events(&healthy.await.unwrap(), &b_expected, "the healthy reader");

        // The stream ends for the slow client: what was buffered arrives, then the end.
        let raw = tokio::time::timeout(WAIT, read_to_end(&mut slow))
            .await
            .expect("the dropped stream ends");
        let (response_head, body) = dechunk(&raw);
        assert!(response_head.starts_with("HTTP/1.1 200"), "{response_head}");
        let before_drop = parse_sse(body).await;
        let last = before_drop.last().map_or(start, Push::id);

        // Reconnecting with Last-Event-ID resumes with no gap, however much is to replay.
        let mut stream = a.stream(Some(last)).await;
        let after_drop = stream.until_caught_up(WAIT).await;
        let mut received = events_of(&before_drop);
        received.extend(events_of(&after_drop));
        let (expected, _) = a.pull_all(start).await;
        assert!(expected.len() >= written);
        assert!(
            expected.len() - events_of(&before_drop).len() > 8,
            "the replay is longer than the buffer"
        );
        assert_same_events(&received, &expected, "slow consumer after reconnecting");
    }
}

/// Reads a push stream until `finished` names a position and the stream has passed it;
/// returns the events. Panics when the stream ends first.
async fn follow(mut stream: SseClient, mut finished: tokio::sync::watch::Receiver<Option<u64>>) -> Vec<EventEnvelope> {
    let mut events = Vec::new();
    let mut last = 0;
    let mut until = None;
    loop {
        if until.is_some_and(|head| last >= head) {
            return events;
        }
        let push = tokio::select! {
            push = stream.next(WAIT) => push,
            done = finished.wait_for(Option::is_some), if until.is_none() => {
                until = *done.expect("the test ended");
                continue;
            }
        };
        match push.expect("the stream ended early") {
            Push::Event(event) => {
                last = event.position;
                events.push(*event);
            }
            other => last = other.id(),
        }
    }
}

shelfsync_hub::both_storages! {
    /// A store may hold `sync.max_push_streams_per_store` push streams; one more is a clear
    /// 429, and closing one makes room again. Other stores are not affected.
    async fn push_streams_per_store_are_capped() {
        let hub = TestHub::spawn_with(|config| config.sync.max_push_streams_per_store = 2).await;
        let agent = hub.demo_agent(0).await;
        let mut first = agent.stream(None).await;
        first.until_caught_up(WAIT).await;
        let mut second = agent.stream(None).await;
        second.until_caught_up(WAIT).await;

        let (status, problem, content_type) = call(agent.request(reqwest::Method::GET, "/v1/sync/stream")).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (429, Some("too_many_streams")),
            "{problem}"
        );
        assert_eq!(content_type, "application/problem+json");
        hub.demo_agent(1).await.stream(None).await.until_caught_up(WAIT).await;

        drop(first);
        let mut reopened = None;
        for _ in 0..100 {
            let response = agent
                .request(reqwest::Method::GET, "/v1/sync/stream")
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                reopened = Some(SseClient::new(response));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        reopened
            .expect("closing a stream makes room for another")
            .until_caught_up(WAIT)
            .await;
    }
}

shelfsync_hub::both_storages! {
    async fn an_idle_stream_gets_keep_alive_comments_in_standard_sse() {
        let hub = TestHub::spawn_with(|config| config.sync.keep_alive_secs = 1).await;
        let a = hub.demo_agent(0).await;
        let head = hub.head().await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let request = format!(
            "GET /v1/sync/stream HTTP/1.1\r\nAuthorization: Bearer {}\r\n{PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\n\
             Last-Event-ID: {head}\r\nConnection: close\r\n",
            a.token
        );
        let stream = raw_request(&hub, socket, &request, b"").await;
        // Read raw bytes (no SSE parser: it would hide the comments) until two keep-alives
        // followed the `caught-up` marker; the stream is idle, so nothing else comes.
        let caught_up = format!("event: caught-up\nid: {head}\ndata: {{\"head\":{head}}}\n\n");
        let mut seen = Vec::new();
        let mut buffer = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            if let Some(at) = text.find(&caught_up) {
                if text[at + caught_up.len()..].matches(":\n\n").count() >= 2 {
                    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
                    assert!(text.contains("content-type: text/event-stream"), "{text}");
                    break;
                }
            }
            let read = tokio::time::timeout_at(deadline, stream.readable()).await;
            assert!(read.is_ok(), "no keep-alive came: {text:?}");
            match stream.try_read(&mut buffer) {
                Ok(0) => panic!("the stream ended: {text:?}"),
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}
