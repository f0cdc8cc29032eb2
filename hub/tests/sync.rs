//! The hub's sync surface for edge agents, over real HTTP against a hub started in-process:
//! idempotent upload (retries, lost responses), store scoping, SSE push with resume and
//! slow-consumer drop, the facts policy (offline oversell), snapshot + follow, the
//! protocol header, enrollment and revocation, and the pull cursor.

mod support;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shelfsync_common::domain::catalog::{self, CatalogState};
use shelfsync_common::domain::inventory::{self, InventoryState, Reservation};
use shelfsync_common::wire::sync::{
    FleetStore, Heartbeat, UploadEvent, UploadOutcome, UploadRequest, PROTOCOL_HEADER, PROTOCOL_VERSION,
};
use shelfsync_common::{EventEnvelope, EventId, EventPayload, Origin, ProductId, ReservationId, StoreId, StreamId};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use support::{call, fact, spawn_hub, spawn_hub_with, Agent, Push, TestHub, ADMIN};
use time::OffsetDateTime;

/// Longest wait for one expected SSE message or state change.
const WAIT: Duration = Duration::from_secs(15);

fn product(n: usize) -> ProductId {
    shelfsync_hub::seed::products()[n].id
}

fn demo_store(n: usize) -> StoreId {
    shelfsync_hub::seed::stores()[n].id
}

fn added(quantity: u32) -> EventPayload {
    EventPayload::StockAdded { quantity }
}

fn reserved(reservation_id: ReservationId, quantity: u32) -> EventPayload {
    EventPayload::StockReserved {
        reservation_id,
        quantity,
        expires_at: OffsetDateTime::now_utc() + time::Duration::hours(2),
    }
}

fn committed(reservation_id: ReservationId, quantity: u32) -> EventPayload {
    EventPayload::ReservationCommitted {
        reservation_id,
        quantity,
    }
}

fn released(reservation_id: ReservationId, quantity: u32) -> EventPayload {
    EventPayload::StockReleased {
        reservation_id,
        quantity,
        reason: shelfsync_common::domain::event::ReleaseReason::Cancelled,
    }
}

fn adjusted(delta: i64) -> EventPayload {
    EventPayload::StockAdjusted {
        delta,
        reason: "stock take".into(),
    }
}

/// The (position, stream_version) of an appended outcome; panics otherwise.
fn appended(outcome: &UploadOutcome) -> (u64, u64) {
    match outcome {
        UploadOutcome::Appended {
            position,
            stream_version,
        } => (*position, *stream_version),
        other => panic!("expected appended, got {other:?}"),
    }
}

fn reason(outcome: &UploadOutcome) -> &str {
    match outcome {
        UploadOutcome::Rejected { reason, .. } => reason,
        other => panic!("expected rejected, got {other:?}"),
    }
}

fn fleet_entry(fleet: &shelfsync_common::wire::sync::FleetResponse, store: StoreId) -> FleetStore {
    fleet
        .stores
        .iter()
        .find(|s| s.store.id == store)
        .cloned()
        .expect("store in the fleet view")
}

/// Polls the fleet view (it has no event to await) until `check` holds, for at most WAIT.
async fn fleet_until(hub: &TestHub, store: StoreId, what: &str, check: impl Fn(&FleetStore) -> bool) -> FleetStore {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let entry = fleet_entry(&hub.fleet().await, store);
        if check(&entry) {
            return entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fleet view never showed {what}: {entry:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes an HTTP/1.1 request on a raw socket (so the test decides what happens to the
/// answer) and returns the socket.
async fn raw_request(hub: &TestHub, socket: tokio::net::TcpSocket, head: &str, body: &[u8]) -> tokio::net::TcpStream {
    let address = hub.url.trim_start_matches("http://").parse().expect("hub address");
    let mut stream = socket.connect(address).await.expect("connect");
    let host = hub.url.trim_start_matches("http://");
    let request = format!("{head}Host: {host}\r\nContent-Length: {}\r\n\r\n", body.len());
    write_all(&mut stream, request.as_bytes()).await;
    write_all(&mut stream, body).await;
    stream
}

async fn write_all(stream: &mut tokio::net::TcpStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        stream.writable().await.expect("writable");
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Reads until the peer closes the connection.
async fn read_to_end(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        stream.readable().await.expect("readable");
        match stream.try_read(&mut buffer) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Decodes an HTTP/1.1 response with a chunked body into (head, body).
fn dechunk(raw: &[u8]) -> (String, Vec<u8>) {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head") + 4;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    assert!(
        head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut rest = &raw[split..];
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&rest[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).expect("hex size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            return (head, body);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Parses a complete SSE body with the same parser the agent uses.
async fn parse_sse(body: Vec<u8>) -> Vec<Push> {
    use eventsource_stream::Eventsource;
    use futures_util::StreamExt;
    let source = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(body)]);
    let messages: Vec<_> = source.eventsource().collect().await;
    messages
        .into_iter()
        .map(|message| Push::parse(&message.expect("valid SSE")))
        .collect()
}

fn events_of(pushes: &[Push]) -> Vec<EventEnvelope> {
    pushes
        .iter()
        .filter_map(|p| match p {
            Push::Event(e) => Some((**e).clone()),
            _ => None,
        })
        .collect()
}

fn positions(events: &[EventEnvelope]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// Asserts that `received` is exactly `expected` (each event once, in order), naming the
/// first difference instead of printing thousands of positions.
fn assert_same_events(received: &[EventEnvelope], expected: &[EventEnvelope], context: &str) {
    if let Some(at) = received.iter().zip(expected).position(|(r, e)| r != e) {
        panic!(
            "{context}: event {at} differs: got position {}, expected {} ({} received, {} expected)",
            received[at].position,
            expected[at].position,
            received.len(),
            expected.len()
        );
    }
    assert_eq!(
        received.len(),
        expected.len(),
        "{context}: received {:?} after the common prefix, expected {:?}",
        positions(&received[expected.len().min(received.len())..]),
        positions(&expected[received.len().min(expected.len())..])
    );
}

// ---------------------------------------------------------------------------------------
// 1. Idempotent upload.

#[tokio::test]
async fn a_batch_sent_twice_or_after_a_lost_response_is_recorded_once() {
    let hub = spawn_hub().await;
    let (_, agent) = hub.enroll("Leipzig").await;
    let hold = ReservationId::new_v7();
    let batch = vec![
        agent.fact(product(0), added(10)),
        agent.fact(product(0), reserved(hold, 3)),
        agent.fact(product(0), committed(hold, 3)),
        agent.fact(product(1), added(4)),
        agent.fact(product(1), adjusted(-1)),
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

    // The same batch again (a retry): nothing new, the original positions.
    let again = agent.upload(&batch).await;
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

    // A batch whose response was lost: the request reaches the hub, the answer never
    // reaches the agent (the connection is dropped unread), and the agent sends it again.
    let lost = vec![agent.fact(product(2), added(2)), agent.fact(product(2), adjusted(-1))];
    let before = hub.head().await;
    let body = serde_json::to_vec(&UploadRequest { events: lost.clone() }).unwrap();
    let head = format!(
        "POST /v1/sync/upload HTTP/1.1\r\nAuthorization: Bearer {}\r\n{PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\n\
         Content-Type: application/json\r\n",
        agent.token
    );
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
    let resent = agent.upload(&lost).await;
    let lost_positions: Vec<u64> = resent
        .results
        .iter()
        .map(|r| match r.outcome {
            UploadOutcome::Duplicate { position, .. } => position,
            ref other => panic!("the resent batch must be all duplicates: {other:?}"),
        })
        .collect();
    assert_eq!(lost_positions, vec![before + 1, before + 2]);

    // Lost at any point (dropped right after sending, possibly before the hub read it),
    // resent at once: each event is recorded exactly once either way.
    let racing = vec![agent.fact(product(3), added(1)), agent.fact(product(3), added(2))];
    let body = serde_json::to_vec(&UploadRequest { events: racing.clone() }).unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    drop(raw_request(&hub, socket, &head, &body).await);
    let resent = agent.upload(&racing).await;
    for result in &resent.results {
        assert!(
            matches!(
                result.outcome,
                UploadOutcome::Appended { .. } | UploadOutcome::Duplicate { .. }
            ),
            "{result:?}"
        );
    }

    // The log holds every uploaded event exactly once, where the answers said.
    let (log, _) = agent.pull_all(0).await;
    let mut counts: HashMap<EventId, usize> = HashMap::new();
    for event in &log {
        *counts.entry(event.event_id).or_default() += 1;
    }
    for event in batch.iter().chain(&lost).chain(&racing) {
        assert_eq!(
            counts.get(&event.event_id),
            Some(&1),
            "{} is in the log once",
            event.event_id
        );
    }
    for (event, (position, _)) in batch.iter().zip(&recorded) {
        let logged = log.iter().find(|e| e.event_id == event.event_id).unwrap();
        assert_eq!(logged.position, *position);
        assert_eq!(logged.metadata.origin, Origin::Store(agent.store));
    }

    // The same id with other content is not the same fact.
    let mut reused = batch[0].clone();
    reused.data = json!({"quantity": 11});
    let mut moved = batch[3].clone();
    moved.stream = StreamId::inventory(product(4), agent.store);
    let head_before = hub.head().await;
    let answer = agent.upload(&[reused, moved]).await;
    for result in &answer.results {
        assert_eq!(reason(&result.outcome), "event_id_reused", "{result:?}");
    }
    assert_eq!(hub.head().await, head_before, "a rejected event writes nothing");
}

// ---------------------------------------------------------------------------------------
// 2. Store scoping; every reason code; a rejected event does not stop its batch.

#[tokio::test]
async fn a_store_token_writes_and_reads_only_its_own_streams() {
    let hub = spawn_hub().await;
    let a = hub.demo_agent(0).await;
    let b = hub.demo_agent(1).await;
    let b_sale = b.fact(product(0), added(1));
    let b_answer = b.upload(std::slice::from_ref(&b_sale)).await;
    appended(&b_answer.results[0].outcome);

    let unknown_product = ProductId::new_v7();
    let mut other_store = a.fact(product(0), added(1));
    other_store.stream = StreamId::inventory(product(0), b.store);
    other_store.metadata.origin = Origin::Store(b.store);
    let mut catalog_stream = a.fact(product(0), added(1));
    catalog_stream.stream = StreamId::catalog(product(0));
    let mut origin_other = a.fact(product(0), added(1));
    origin_other.metadata.origin = Origin::Store(b.store);
    let mut origin_hub = a.fact(product(0), added(1));
    origin_hub.metadata.origin = Origin::Hub;
    let mut unknown_type = a.fact(product(0), added(1));
    unknown_type.event_type = "StockTeleported".into();
    let mut future_schema = a.fact(product(0), added(1));
    future_schema.schema_version = 2;
    let mut malformed = a.fact(product(0), added(1));
    malformed.data = json!({"quantity": "three"});
    let hold = ReservationId::new_v7();
    let oversell = EventPayload::OversellDetected {
        caused_by: EventId::new_v7(),
        on_hand: 0,
        reserved: 0,
        available: -1,
    };
    let batch: Vec<(UploadEvent, Option<&str>)> = vec![
        (a.fact(product(0), added(1)), None),
        (other_store, Some("wrong_store")),
        (catalog_stream, Some("wrong_store")),
        (origin_other, Some("wrong_origin")),
        (origin_hub, Some("wrong_origin")),
        (a.fact(product(1), reserved(hold, 1)), None),
        (fact(a.store, unknown_product, added(1)), Some("unknown_product")),
        (unknown_type, Some("unknown_event_type")),
        (future_schema, Some("unsupported_schema_version")),
        (malformed, Some("malformed_event")),
        (a.fact(product(0), added(1_000_001)), Some("out_of_range")),
        (a.fact(product(0), adjusted(0)), Some("out_of_range")),
        (a.fact(product(0), oversell), Some("event_type_not_allowed")),
        (a.fact(product(2), reserved(hold, 1)), Some("reservation_id_in_use")),
        // Open on this very stream: a second hold under the same id would replace the first.
        (a.fact(product(1), reserved(hold, 2)), Some("reservation_id_in_use")),
        // Another store's recorded event, sent again with its id and content.
        (b_sale.clone(), Some("wrong_store")),
        (a.fact(product(1), committed(hold, 1)), None),
    ];
    let events: Vec<UploadEvent> = batch.iter().map(|(e, _)| e.clone()).collect();
    let answer = a.upload(&events).await;
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

    // Admin and channel tokens are not agents.
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
    // And a store token is only an agent.
    let (status, _, _) = call(a.request(reqwest::Method::GET, "/v1/admin/fleet")).await;
    assert_eq!(status, 403);
    let (status, _, _) = call(a.request(reqwest::Method::POST, "/v1/inventory/stock").json(&json!({
        "product_id": product(0), "store_id": a.store, "quantity": 1
    })))
    .await;
    assert_eq!(status, 403);
}

fn heartbeat(cursor: u64) -> Heartbeat {
    Heartbeat {
        agent_version: "0.1.0-test".into(),
        cursor,
        outbox_depth: 7,
        oldest_pending_age_secs: Some(42),
        breaker_state: "closed".into(),
        quarantined: 1,
    }
}

// ---------------------------------------------------------------------------------------
// 3. SSE: replay, caught-up, live, resume after forced disconnects.

#[tokio::test]
async fn sse_replays_then_marks_caught_up_then_goes_live() {
    let hub = spawn_hub().await;
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
    let live = a.upload(&[a.fact(product(0), added(1))]).await;
    let (position, _) = appended(&live.results[0].outcome);
    match stream.next(WAIT).await {
        Some(Push::Event(event)) => assert_eq!(event.position, position),
        other => panic!("expected the live event, got {other:?}"),
    }
    // ...and another store's events move the cursor with a `progress` event.
    let other = b
        .upload(&[b.fact(product(0), added(1)), b.fact(product(1), added(1))])
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
    let response = a
        .request(reqwest::Method::GET, &format!("/v1/sync/stream?after={}", position - 1))
        .send()
        .await
        .unwrap();
    let replay = support::SseClient::new(response).until_caught_up(WAIT).await;
    assert_eq!(positions(&events_of(&replay)), vec![position]);
    let response = a
        .request(reqwest::Method::GET, "/v1/sync/stream?after=0")
        .header("Last-Event-ID", position.to_string())
        .send()
        .await
        .unwrap();
    let replay = support::SseClient::new(response).until_caught_up(WAIT).await;
    assert_eq!(replay, vec![Push::CaughtUp(other.head)]);
    let (status, body, _) = call(
        a.request(reqwest::Method::GET, "/v1/sync/stream")
            .header("Last-Event-ID", "seven"),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_last_event_id")));
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let hub = spawn_hub().await;
    let a = hub.demo_agent(0).await;
    let mut stream = a.stream(None).await;
    stream.until_caught_up(WAIT).await;
    tokio::time::timeout(WAIT, hub.stop())
        .await
        .expect("a graceful shutdown is not held up by an open stream");
    assert_eq!(stream.next(WAIT).await, None, "the stream ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sse_resume_after_random_disconnects_delivers_every_event_once_in_order() {
    let hub = Arc::new(spawn_hub().await);
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
                    a.fact(product(round % 5), added(1)),
                    a.fact(product((round + 1) % 5), added(2)),
                ])
                .await;
                b.upload(&[b.fact(product(round % 5), added(1))]).await;
                if round % 4 == 0 {
                    let body = json!({"product_id": product(round % 5), "store_id": a.store, "quantity": 1});
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

// ---------------------------------------------------------------------------------------
// 4. A slow consumer is dropped and catches up by reconnecting.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_is_dropped_and_catches_up_by_reconnecting() {
    let hub = spawn_hub_with(|config| config.sync.push_buffer_events = 8).await;
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
                    product(i % 5),
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
        let batch: Vec<UploadEvent> = (0..50).map(|i| b.fact(product(i % 5), added(1))).collect();
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

/// Reads a push stream until `finished` names a position and the stream has passed it;
/// returns the events. Panics when the stream ends first.
async fn follow(
    mut stream: support::SseClient,
    mut finished: tokio::sync::watch::Receiver<Option<u64>>,
) -> Vec<EventEnvelope> {
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

// ---------------------------------------------------------------------------------------
// 5. The facts policy: an offline sale after the hub sold the last unit.

#[tokio::test]
async fn an_offline_sale_after_the_last_unit_sold_online_is_recorded_and_flagged() {
    let hub = spawn_hub().await;
    let a = hub.demo_agent(0).await;
    let (item, store) = (product(2), a.store);
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

// ---------------------------------------------------------------------------------------
// 6. Snapshot at P + events after P = the full fold.

type Folded = (BTreeMap<StreamId, InventoryState>, BTreeMap<ProductId, CatalogState>);

fn fold(mut state: Folded, events: &[EventEnvelope]) -> Folded {
    for event in events {
        match event.stream.store_id {
            Some(_) => inventory::apply(state.0.entry(event.stream).or_default(), &event.payload),
            None => catalog::apply(state.1.entry(event.stream.product_id).or_default(), &event.payload),
        }
    }
    state
}

#[tokio::test]
async fn a_snapshot_plus_the_events_after_its_position_is_the_full_fold() {
    let hub = spawn_hub().await;
    let agents = [
        hub.demo_agent(0).await,
        hub.demo_agent(1).await,
        hub.demo_agent(2).await,
    ];
    let a = &agents[0];
    let (open_hold, hub_hold) = (ReservationId::new_v7(), ReservationId::new_v7());
    // History before the snapshot, at every store.
    for (n, agent) in agents.iter().enumerate() {
        let (sold, cancelled) = (ReservationId::new_v7(), ReservationId::new_v7());
        let mut batch = vec![
            agent.fact(product(0), reserved(sold, 2)),
            agent.fact(product(0), committed(sold, 2)),
            agent.fact(product(2), reserved(cancelled, 1)),
            agent.fact(product(2), released(cancelled, 1)),
            agent.fact(product(3), added(5)),
            agent.fact(product(4), adjusted(-100)),
        ];
        if n == 0 {
            batch.push(agent.fact(product(1), reserved(open_hold, 1)));
        }
        for result in agent.upload(&batch).await.results {
            appended(&result.outcome);
        }
    }
    let body = json!({"product_id": product(1), "store_id": a.store, "quantity": 2, "reservation_id": hub_hold});
    assert_eq!(call(hub.post("/v1/inventory/reservations", &body)).await.0, 201);
    let body = json!({"product_id": product(3), "store_id": a.store, "quantity": 4});
    assert_eq!(call(hub.post("/v1/inventory/stock", &body)).await.0, 201);
    let rename = json!({"sku": "COFFEE-250", "name": "Espresso beans, 250 g", "price_minor": 749});
    assert_eq!(
        call(hub.put(&format!("/v1/products/{}", product(0)), &rename)).await.0,
        201
    );
    let new_product = json!({"sku": "CUP-ESP", "name": "Espresso cup", "price_minor": 599});
    assert_eq!(call(hub.post("/v1/products", &new_product)).await.0, 201);

    // Let the read model reach the head first, so that the snapshot holds the history
    // above (a read with min_position waits for the projection).
    let head = hub.head().await;
    let level = format!(
        "/v1/inventory/products/{}/stores/{}?min_position={head}",
        product(0),
        a.store
    );
    assert_eq!(call(hub.get(&level)).await.0, 200);
    let snapshot = a.snapshot().await;
    assert_eq!(snapshot.store_id, a.store);
    let p = snapshot.position;
    assert!(p >= head);
    assert!(p > 0);
    assert!(snapshot.stock.iter().all(|s| s.store_id == a.store));
    assert!(snapshot
        .reservations
        .iter()
        .any(|r| r.reservation_id == open_hold && r.origin == Origin::Store(a.store)));
    assert!(snapshot
        .reservations
        .iter()
        .any(|r| r.reservation_id == hub_hold && r.origin == Origin::Hub));

    // History after the snapshot.
    for agent in &agents {
        let batch = [agent.fact(product(4), added(3)), agent.fact(product(2), adjusted(-2))];
        agent.upload(&batch).await;
    }
    a.upload(&[a.fact(product(1), committed(open_hold, 1))]).await;
    let commit = hub.post_empty(&format!("/v1/inventory/reservations/{hub_hold}/commit"));
    assert_eq!(call(commit).await.0, 201);
    let reprice = json!({"sku": "TEA-GREEN", "name": "Green tea, 20 bags", "price_minor": 379});
    assert_eq!(
        call(hub.put(&format!("/v1/products/{}", product(1)), &reprice)).await.0,
        201
    );

    // The snapshot as an agent's starting state.
    let mut start: Folded = Default::default();
    for row in &snapshot.stock {
        let reservations = snapshot
            .reservations
            .iter()
            .filter(|r| r.product_id == row.product_id)
            .map(|r| {
                (
                    r.reservation_id,
                    Reservation {
                        quantity: r.quantity,
                        expires_at: r.expires_at,
                    },
                )
            })
            .collect();
        let state = InventoryState {
            on_hand: row.on_hand,
            reservations,
            version: row.version,
        };
        assert_eq!(
            (state.reserved(), state.available()),
            (row.reserved, row.available),
            "{row:?}"
        );
        start.0.insert(StreamId::inventory(row.product_id, a.store), state);
    }
    for view in &snapshot.catalog {
        start.1.insert(
            view.product.id,
            CatalogState {
                product: Some(view.product.clone()),
                version: view.version,
            },
        );
    }

    let (all, _) = a.pull_all(0).await;
    let (after_p, _) = a.pull_all(p).await;
    assert!(!after_p.is_empty() && after_p.iter().all(|e| e.position > p));
    let up_to_p: Vec<EventEnvelope> = all.iter().filter(|e| e.position <= p).cloned().collect();
    assert_eq!(
        fold(Default::default(), &up_to_p),
        start,
        "the snapshot is exactly the events up to P"
    );
    let followed = fold(start, &after_p);
    let full = fold(Default::default(), &all);
    assert_eq!(followed, full);
    assert_eq!(full.0.len(), 5, "store A has a stream per demo product");
    assert_eq!(full.1.len(), 6, "the catalog holds the new product too");
    assert!(
        full.0.values().any(|s| s.available() < 0),
        "the history includes an oversell"
    );
}

// ---------------------------------------------------------------------------------------
// 7. The protocol header.

#[tokio::test]
async fn the_protocol_header_is_required_and_always_answered() {
    let hub = spawn_hub().await;
    let a = hub.demo_agent(0).await;
    let url = |path: &str| format!("{}{path}", hub.url);
    let bare = |version: Option<&str>| {
        let request = hub.client.get(url("/v1/sync/events")).bearer_auth(&a.token);
        match version {
            Some(version) => request.header(PROTOCOL_HEADER, version),
            None => request,
        }
    };
    for version in [None, Some("2.0"), Some("0.9"), Some("one"), Some("1"), Some("1.0.0")] {
        let response = bare(version).send().await.unwrap();
        assert_eq!(response.status(), 400, "{version:?}");
        assert_eq!(response.headers()[PROTOCOL_HEADER], PROTOCOL_VERSION);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "unsupported_protocol", "{problem}");
        if matches!(version, Some("1" | "1.0.0")) {
            assert!(problem["detail"].as_str().unwrap().contains("MAJOR.MINOR"), "{problem}");
        }
    }
    // Checked before anything else: even without a token.
    let response = hub
        .client
        .get(url("/v1/sync/events"))
        .header(PROTOCOL_HEADER, "2.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Another minor of the same major is fine.
    assert_eq!(bare(Some("1.7")).send().await.unwrap().status(), 200);

    // Every sync answer, success or error, carries the hub's version.
    let too_many: Vec<UploadEvent> = (0..501).map(|_| a.fact(product(0), added(1))).collect();
    let bad_token = Agent {
        token: "ss_nope".into(),
        ..a.clone()
    };
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (a.request(reqwest::Method::GET, "/v1/sync/events?after=0&limit=10"), 200),
        (a.request(reqwest::Method::GET, "/v1/sync/snapshot"), 200),
        (
            a.request(reqwest::Method::POST, "/v1/sync/heartbeat")
                .json(&heartbeat(1)),
            200,
        ),
        (
            a.request(reqwest::Method::POST, "/v1/sync/upload")
                .json(&UploadRequest { events: vec![] }),
            200,
        ),
        (
            a.request(reqwest::Method::POST, "/v1/sync/upload")
                .json(&UploadRequest { events: too_many }),
            422,
        ),
        (
            a.request(reqwest::Method::POST, "/v1/sync/upload")
                .json(&json!({"events": 1})),
            422,
        ),
        (a.request(reqwest::Method::POST, "/v1/sync/upload").body("{"), 415),
        (a.request(reqwest::Method::GET, "/v1/sync/events?limit=0"), 400),
        (bad_token.request(reqwest::Method::GET, "/v1/sync/events"), 401),
        (
            Agent {
                token: ADMIN.into(),
                ..a.clone()
            }
            .request(reqwest::Method::GET, "/v1/sync/events"),
            403,
        ),
        (a.request(reqwest::Method::GET, "/v1/sync/upload"), 405),
        (a.request(reqwest::Method::DELETE, "/v1/sync/events"), 405),
    ];
    for (request, status) in cases {
        let response = request.send().await.unwrap();
        let url = response.url().clone();
        assert_eq!(response.status(), status, "{url}");
        assert_eq!(
            response
                .headers()
                .get(PROTOCOL_HEADER)
                .map(|v| v.to_str().unwrap().to_owned()),
            Some(PROTOCOL_VERSION.to_owned()),
            "{url} {status}"
        );
        if status >= 400 {
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json",
                "{url} {status}"
            );
        }
    }
    let stream = a.request(reqwest::Method::GET, "/v1/sync/stream").send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()[PROTOCOL_HEADER], PROTOCOL_VERSION);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
}

// ---------------------------------------------------------------------------------------
// 8. Enrollment, revocation, heartbeat and the fleet view.

#[tokio::test]
async fn enrollment_heartbeat_and_revocation() {
    let hub = spawn_hub().await;
    let (enrolled, agent) = hub.enroll("Leipzig Zentrum").await;
    assert!(enrolled.token.starts_with("ss_"), "{}", enrolled.token);
    assert_eq!(
        (enrolled.store.name.as_str(), enrolled.store.revoked),
        ("Leipzig Zentrum", false)
    );

    // The token is shown once: listing the stores does not show it.
    let response = hub.get("/v1/admin/stores").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let listed = response.text().await.unwrap();
    assert!(!listed.contains(&enrolled.token), "the list must not show the token");
    let stores: Vec<shelfsync_common::wire::api::StoreInfo> = serde_json::from_str(&listed).unwrap();
    assert_eq!(stores.len(), 4);
    assert!(stores.contains(&enrolled.store));
    let again = json!({"name": "Leipzig again", "id": enrolled.store.id});
    let (status, body, _) = call(hub.post("/v1/admin/stores", &again)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("store_exists")), "{body}");
    assert!(body.get("token").is_none());
    let (status, body, _) = call(hub.post("/v1/admin/stores", &json!({"name": ""}))).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invalid_name")));
    let nil = "00000000-0000-0000-0000-000000000000";
    let (status, body, _) = call(hub.post("/v1/admin/stores", &json!({"name": "Nil", "id": nil}))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_body")),
        "the nil store's streams would be the catalog's: {body}"
    );
    let (status, _, _) = call(agent.request(reqwest::Method::GET, "/v1/admin/stores")).await;
    assert_eq!(status, 403);

    // Heartbeat: the fleet view shows it with the cursor lag.
    let ack = agent.heartbeat(&heartbeat(3)).await;
    let head = hub.head().await;
    assert_eq!(ack.head, head);
    let fleet = hub.fleet().await;
    assert_eq!(fleet.head, head);
    let entry = fleet_entry(&fleet, agent.store);
    assert_eq!(entry.heartbeat, Some(heartbeat(3)));
    assert_eq!(entry.cursor_lag, Some(head - 3));
    assert!(
        entry.cursor_lag_age_secs.is_some_and(|age| age <= 5),
        "the lag says how old it is: {:?}",
        entry.cursor_lag_age_secs
    );
    assert!(entry.last_seen.is_some());
    assert!(!entry.push_connected);
    assert!(fleet_entry(&fleet, demo_store(2)).heartbeat.is_none());
    assert!(fleet_entry(&fleet, demo_store(2)).cursor_lag_age_secs.is_none());
    let metrics = hub
        .client
        .get(format!("{}/metrics", hub.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains(&agent.store.to_string()),
        "the open /metrics must not list store ids"
    );
    for bad in [
        Heartbeat {
            agent_version: "v".repeat(900 * 1024),
            ..heartbeat(3)
        },
        Heartbeat {
            breaker_state: "melted".into(),
            ..heartbeat(3)
        },
    ] {
        let request = agent.request(reqwest::Method::POST, "/v1/sync/heartbeat").json(&bad);
        let (status, body, _) = call(request).await;
        assert_eq!((status, body["code"].as_str()), (422, Some("invalid_body")), "{body}");
    }
    assert_eq!(
        fleet_entry(&hub.fleet().await, agent.store).heartbeat,
        Some(heartbeat(3)),
        "a refused heartbeat is not kept"
    );

    // Rejected uploads are counted.
    let mut wrong_origin = agent.fact(product(0), added(1));
    wrong_origin.metadata.origin = Origin::Hub;
    let unknown = agent.fact(ProductId::new_v7(), added(1));
    let answer = agent
        .upload(&[wrong_origin, agent.fact(product(0), added(1)), unknown])
        .await;
    assert_eq!(
        answer
            .results
            .iter()
            .filter(|r| matches!(r.outcome, UploadOutcome::Rejected { .. }))
            .count(),
        2
    );
    let entry = fleet_entry(&hub.fleet().await, agent.store);
    assert_eq!((entry.rejected_uploads, entry.oversells), (2, 0));

    // Revocation: the next request is refused, and an open stream ends promptly.
    let mut stream = agent.stream(None).await;
    stream.until_caught_up(WAIT).await;
    assert!(fleet_entry(&hub.fleet().await, agent.store).push_connected);
    let revoke = hub.post_empty(&format!("/v1/admin/stores/{}/revoke", agent.store));
    assert_eq!(call(revoke).await.0, 204);
    let (status, body, _) = call(agent.request(reqwest::Method::GET, "/v1/sync/events")).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.next(WAIT)).await;
    assert_eq!(ended.expect("the stream must end promptly on revocation"), None);
    fleet_until(&hub, agent.store, "the stream closed", |s| !s.push_connected).await;
    let (_, stores, _) = call(hub.get("/v1/admin/stores")).await;
    let listed = stores
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == json!(agent.store))
        .unwrap();
    assert_eq!(listed["revoked"], true);
    let unknown = hub.post_empty(&format!("/v1/admin/stores/{}/revoke", StoreId::new_v7()));
    assert_eq!(call(unknown).await.0, 404);

    // A new token (rotation) works; the old one stays refused.
    let (status, rotated, _) = call(hub.post_empty(&format!("/v1/admin/stores/{}/token", agent.store))).await;
    assert_eq!(status, 201, "{rotated}");
    let fresh = hub.agent(agent.store, rotated["token"].as_str().unwrap().to_owned());
    fresh.heartbeat(&heartbeat(head)).await;
    assert_eq!(
        call(agent.request(reqwest::Method::GET, "/v1/sync/snapshot")).await.0,
        401
    );
    let entry = fleet_entry(&hub.fleet().await, agent.store);
    assert!(!entry.store.revoked);
    assert_eq!(entry.cursor_lag, Some(hub.head().await - head));
}

/// Token names are per role: a channel token may carry a store token's name without
/// touching it, the by-name route never revokes a store's token (or leaves its stream
/// open), and rotating a store's token is one step that such a name cannot break.
#[tokio::test]
async fn token_names_of_different_roles_do_not_collide() {
    let hub = spawn_hub().await;
    let (_, agent) = hub.enroll("Dresden Neustadt").await;
    let store_token_name = json!({ "name": format!("store-{}", agent.store) });
    let revoke_by_name = || hub.post_empty(&format!("/v1/admin/tokens/store-{}/revoke", agent.store));
    let mut stream = agent.stream(None).await;
    stream.until_caught_up(WAIT).await;

    let (status, body, _) = call(hub.post("/v1/admin/tokens", &store_token_name)).await;
    assert_eq!(status, 201, "a channel token's name is its own: {body}");
    assert_eq!(call(revoke_by_name()).await.0, 204, "revokes the channel token");
    let (status, body, _) = call(revoke_by_name()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("token_not_found")),
        "{body}"
    );
    assert_eq!(
        call(agent.request(reqwest::Method::GET, "/v1/sync/snapshot")).await.0,
        200,
        "the store's token was not revoked by name"
    );
    agent.upload(&[agent.fact(product(0), added(1))]).await;
    assert!(
        matches!(stream.next(WAIT).await, Some(Push::Event(_))),
        "the store's push stream still delivers"
    );

    // Rotation while a channel token carries the store token's name: one step, and the
    // store ends with exactly the new token.
    let (status, body, _) = call(hub.post("/v1/admin/tokens", &store_token_name)).await;
    assert_eq!(status, 201, "{body}");
    let (status, rotated, _) = call(hub.post_empty(&format!("/v1/admin/stores/{}/token", agent.store))).await;
    assert_eq!(status, 201, "{rotated}");
    let fresh = hub.agent(agent.store, rotated["token"].as_str().unwrap().to_owned());
    assert_eq!(
        call(fresh.request(reqwest::Method::GET, "/v1/sync/snapshot")).await.0,
        200
    );
    assert_eq!(
        call(agent.request(reqwest::Method::GET, "/v1/sync/snapshot")).await.0,
        401
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.next(WAIT)).await;
    assert_eq!(ended.expect("the old token's stream must end on rotation"), None);
}

/// A store may hold `sync.max_push_streams_per_store` push streams; one more is a clear
/// 429, and closing one makes room again. Other stores are not affected.
#[tokio::test]
async fn push_streams_per_store_are_capped() {
    let hub = spawn_hub_with(|config| config.sync.max_push_streams_per_store = 2).await;
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
            reopened = Some(support::SseClient::new(response));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reopened
        .expect("closing a stream makes room for another")
        .until_caught_up(WAIT)
        .await;
}

// ---------------------------------------------------------------------------------------
// 9. The pull cursor.

#[tokio::test]
async fn pull_cursors_pass_invisible_events_and_reach_the_head() {
    let hub = spawn_hub().await;
    let a = hub.demo_agent(0).await;
    let b = hub.demo_agent(1).await;
    let (_, cursor) = a.pull_all(0).await;
    assert_eq!(cursor, hub.head().await);

    // Only other stores wrote: no events for A, but its cursor reaches the head.
    let other = b
        .upload(&[
            b.fact(product(0), added(1)),
            b.fact(product(1), added(1)),
            b.fact(product(2), added(1)),
        ])
        .await;
    let page = a.pull(cursor, 100).await;
    assert!(page.events.is_empty(), "{:?}", page.events);
    assert_eq!((page.next_cursor, page.head), (other.head, other.head));
    let cursor = page.next_cursor;

    // Interleaved writes, read in pages of two: every event once, in order.
    let mut mine = Vec::new();
    for n in 0..5 {
        let answer = a.upload(&[a.fact(product(n), added(1))]).await;
        mine.push(appended(&answer.results[0].outcome).0);
        b.upload(&[b.fact(product(n), added(1))]).await;
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
    for query in ["limit=0", "limit=1001", "after=-1", "after=abc", "limit=ten", "since=3"] {
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
