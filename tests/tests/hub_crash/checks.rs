//! What the crash tests check beyond the e2e checker (`shelfsync_tests::checker`): each
//! acknowledged write is in the log at the position and stream version it was answered
//! with; a retry of it is answered as a duplicate with the first answer; the writer's
//! stream heads are the log's.

use crate::clients::{Ack, ClientLog, Op};
use serde_json::json;
use shelfsync_common::{EventEnvelope, EventId, EventPayload, StreamId};
use shelfsync_tests::checker;
use shelfsync_tests::cluster::Cluster;
use shelfsync_tests::process::ADMIN_TOKEN;
use shelfsync_tests::workload::http_client;
use std::collections::{HashMap, HashSet};

/// The log has positions `1..=head`, unique event ids and contiguous stream versions.
#[track_caller]
pub fn assert_log_shape(log: &[EventEnvelope]) {
    let problems = checker::log_shape_problems(log);
    assert!(problems.is_empty(), "the log is malformed:\n{}", problems.join("\n"));
}

/// The read model of the hub at `hub_url` answers, for every demo pair, exactly the fold
/// of the log.
pub async fn assert_read_model_is_the_fold(hub_url: &str, log: &[EventEnvelope], context: &str) {
    let problems = checker::read_model_problems(&http_client(), hub_url, &demo_streams(), log).await;
    assert!(
        problems.is_empty(),
        "{context}: the read model is not the fold of the log:\n{}",
        problems.join("\n")
    );
}

/// Whether `payload` is what `op` writes.
fn payload_matches(op: &Op, payload: &EventPayload) -> bool {
    match (op, payload) {
        (Op::Stock { quantity }, EventPayload::StockAdded { quantity: q }) => quantity == q,
        (
            Op::Reserve { reservation, quantity },
            EventPayload::StockReserved {
                reservation_id,
                quantity: q,
                ..
            },
        ) => reservation == reservation_id && quantity == q,
        (Op::Commit { reservation }, EventPayload::ReservationCommitted { reservation_id, .. }) => {
            reservation == reservation_id
        }
        (Op::Release { reservation }, EventPayload::StockReleased { reservation_id, .. }) => {
            reservation == reservation_id
        }
        _ => false,
    }
}

/// Every acknowledged write is in the log at its acknowledged position (the event ids are
/// unique, see [`assert_log_shape`]), on its stream, with its payload and stream version;
/// every event after the seed was sent by a client; each client's acknowledged writes
/// are in the order it made them.
pub fn assert_acks_in_log(log: &[EventEnvelope], seeded: u64, logs: &[ClientLog]) {
    let by_id: HashMap<EventId, &EventEnvelope> = log.iter().map(|e| (e.event_id, e)).collect();
    let mut missing = Vec::new();
    for ack in logs.iter().flat_map(|l| &l.acks) {
        match by_id.get(&ack.event_id) {
            None => missing.push(format!("acknowledged but not in the log: {ack:?}")),
            Some(event) => {
                if event.position != ack.position
                    || event.stream != ack.stream
                    || event.stream_version != ack.stream_version
                    || !payload_matches(&ack.op, &event.payload)
                {
                    missing.push(format!("acknowledged as {ack:?}\n  but the log holds {event:?}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are not in the log as acknowledged:\n{}",
        missing.len(),
        logs.iter().map(|l| l.acks.len()).sum::<usize>(),
        missing.join("\n")
    );
    let sent: HashSet<EventId> = logs.iter().flat_map(|l| l.sent.iter().copied()).collect();
    let phantoms: Vec<&EventEnvelope> = log
        .iter()
        .filter(|e| e.position > seeded && !sent.contains(&e.event_id))
        .collect();
    assert!(phantoms.is_empty(), "events nobody sent are in the log: {phantoms:#?}");
    for client in logs {
        let positions: Vec<u64> = client.acks.iter().map(|a| a.position).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "a client's sequential writes must get increasing positions: {positions:?}"
        );
    }
}

pub fn demo_streams() -> Vec<StreamId> {
    let mut streams = Vec::new();
    for product in shelfsync_hub::seed::products() {
        for store in shelfsync_hub::seed::stores() {
            streams.push(StreamId::inventory(product.id, store.id));
        }
    }
    streams
}

/// Resends every acknowledged request (same event id, same body) from `parallel` tasks:
/// each must answer 200, duplicate, with the first answer's position and version.
pub async fn assert_retries_are_duplicates(cluster: &Cluster, acks: &[Ack], parallel: usize) {
    let chunk = acks.len().div_ceil(parallel).max(1);
    let mut tasks = Vec::new();
    for part in acks.chunks(chunk) {
        let part = part.to_vec();
        let (http, url) = (cluster.http.clone(), cluster.hub_url());
        tasks.push(tokio::spawn(async move {
            let mut wrong = Vec::new();
            for ack in part {
                let (status, answer) = checker::post_json(&http, &format!("{url}{}", ack.path), ADMIN_TOKEN, &ack.body)
                    .await
                    .unwrap_or_else(|e| panic!("resending {}: {e}", ack.path));
                let got = (
                    status,
                    answer["duplicate"].as_bool(),
                    answer["position"].as_u64(),
                    answer["stream_version"].as_u64(),
                    answer["events"][0]["event_id"].as_str(),
                );
                let event_id = ack.event_id.to_string();
                let expected = (
                    200,
                    Some(true),
                    Some(ack.position),
                    Some(ack.stream_version),
                    Some(event_id.as_str()),
                );
                if got != expected {
                    wrong.push(format!(
                        "resent {} {} (acknowledged at position {} version {}): {status} {answer}",
                        ack.path, ack.body, ack.position, ack.stream_version
                    ));
                }
            }
            wrong
        }));
    }
    let mut wrong = Vec::new();
    for task in tasks {
        wrong.extend(task.await.expect("resend task"));
    }
    assert!(
        wrong.is_empty(),
        "a retried acknowledged write must be answered as a duplicate after the crash:\n{}",
        wrong.join("\n")
    );
}

/// The writer's stream heads survived: a write with `If-Match` = the folded version is
/// accepted as the next version, and the same precondition again is refused.
pub async fn assert_write_side_heads(cluster: &Cluster, log: &[EventEnvelope]) {
    let folded = checker::fold(log);
    let mut head = log.last().map_or(0, |e| e.position);
    for stream in demo_streams() {
        let version = folded.get(&stream).map_or(0, |(state, _)| state.version);
        let store = stream.store_id.expect("inventory stream");
        let body = json!({"product_id": stream.product_id, "store_id": store, "quantity": 1,
            "expected_version": version, "event_id": EventId::new_v7().to_string()});
        let (status, answer) = cluster.hub_post("/v1/inventory/stock", &body).await;
        head += 1;
        assert_eq!(
            (status, answer["stream_version"].as_u64(), answer["position"].as_u64()),
            (201, Some(version + 1), Some(head)),
            "{stream} is at version {version} in the log: {answer}"
        );
        let mut stale = body.clone();
        stale["event_id"] = json!(EventId::new_v7().to_string());
        let (status, answer) = cluster.hub_post("/v1/inventory/stock", &stale).await;
        assert_eq!(
            (status, answer["code"].as_str(), answer["current_version"].as_u64()),
            (409, Some("version_conflict"), Some(version + 1)),
            "{answer}"
        );
    }
}
