//! The hub's sync surface for edge agents, over real HTTP against a hub started in-process
//! (`shelfsync_hub::testing`), one module per concern:
//!
//! - [`upload`]: idempotent upload (retries, lost responses), store scoping and every
//!   reason code, the facts policy (an offline oversell);
//! - [`push`]: the SSE push stream (replay, caught-up, live, resume, slow-consumer drop,
//!   the per-store cap);
//! - [`snapshot`]: snapshot + the events after it = the full fold;
//! - [`pull`]: the pull cursor;
//! - [`protocol`]: the protocol header;
//! - [`fleet`]: enrollment, heartbeats, revocation and the fleet view.
//!
//! This file holds what they share: payload builders, raw-socket HTTP, SSE parsing.

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shelfsync_common::domain::catalog::{self, CatalogState};
use shelfsync_common::domain::inventory::{self, InventoryState, Reservation};
use shelfsync_common::testing::http::call;
use shelfsync_common::wire::sync::{
    FleetStore, Heartbeat, UploadEvent, UploadOutcome, UploadRequest, PROTOCOL_HEADER, PROTOCOL_VERSION,
};
use shelfsync_common::{EventEnvelope, EventId, EventPayload, Origin, ProductId, ReservationId, StoreId, StreamId};
use shelfsync_hub::testing::{demo_product, demo_store, fact, Agent, Push, TestHub, ADMIN};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Longest wait for one expected SSE message or state change.
const WAIT: Duration = Duration::from_secs(15);

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

fn heartbeat(cursor: u64) -> Heartbeat {
    Heartbeat {
        agent_version: "0.1.0-test".into(),
        cursor,
        outbox_depth: 7,
        oldest_pending_age_secs: Some(42),
        breaker_state: "closed".into(),
        quarantined: 1,
        resynced: None,
    }
}

mod fleet;
mod protocol;
mod pull;
mod push;
mod snapshot;
mod upload;
