//! The crash tests' clients: admin clients that append over HTTP (deliveries, holds,
//! sales, releases: each with a fresh event id) until the hub dies under them, and record
//! what it acknowledged, at which position and stream version, and what was in flight.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shelfsync_common::{EventId, ProductId, ReservationId, StoreId, StreamId};
use shelfsync_tests::checker;
use shelfsync_tests::cluster::Cluster;
use shelfsync_tests::process::ADMIN_TOKEN;
use shelfsync_tests::workload::http_client;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for the client tasks to notice the hub is gone.
const CLIENTS_TIMEOUT: Duration = Duration::from_secs(15);

/// What an acknowledged request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Stock { quantity: u32 },
    Reserve { reservation: ReservationId, quantity: u32 },
    Commit { reservation: ReservationId },
    Release { reservation: ReservationId },
}

/// A request the hub acknowledged (2xx), with what it answered.
#[derive(Debug, Clone)]
pub struct Ack {
    pub op: Op,
    pub stream: StreamId,
    pub path: String,
    pub body: Value,
    pub event_id: EventId,
    pub position: u64,
    pub stream_version: u64,
}

/// Everything one client task saw.
#[derive(Debug, Default)]
pub struct ClientLog {
    pub acks: Vec<Ack>,
    /// Every event id sent, acknowledged or not.
    pub sent: Vec<EventId>,
    /// Event ids whose request had no complete answer when the hub died.
    pub unknown: Vec<EventId>,
    /// Refusals that are part of the game (409 insufficient_stock), by code.
    pub refused: BTreeMap<String, usize>,
    /// Anything that must not happen.
    pub problems: Vec<String>,
}

/// What the clients send.
#[derive(Debug, Clone, Copy)]
pub enum Workload {
    /// Deliveries over random demo pairs; odd clients also reserve and then commit or
    /// release.
    Mixed,
    /// Reservations (1 or 2 units) on one stream.
    Reservations(ProductId, StoreId),
}

struct ClientCtx {
    id: usize,
    url: String,
    http: reqwest::Client,
    killed: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    log: ClientLog,
}

enum Step {
    Acked,
    Refused,
    Stop,
}

impl ClientCtx {
    /// Sends one write with a fresh event id and records what happened.
    async fn write(&mut self, op: Op, stream: StreamId, path: String, mut body: Value) -> Step {
        let event_id = EventId::new_v7();
        body["event_id"] = json!(event_id.to_string());
        self.log.sent.push(event_id);
        let (status, answer) =
            match checker::post_json(&self.http, &format!("{}{path}", self.url), ADMIN_TOKEN, &body).await {
                Ok(answer) => answer,
                Err(error) => {
                    if self.killed.load(Ordering::SeqCst) {
                        self.log.unknown.push(event_id);
                    } else {
                        self.log.problems.push(format!(
                            "client {}: POST {path} failed while the hub ran: {error}",
                            self.id
                        ));
                    }
                    return Step::Stop;
                }
            };
        if status == 409 && answer["code"] == "insufficient_stock" && matches!(op, Op::Reserve { .. }) {
            *self.log.refused.entry("insufficient_stock".into()).or_default() += 1;
            return Step::Refused;
        }
        let answered_id = answer["events"][0]["event_id"].as_str().map(str::to_owned);
        match (
            status,
            answer["position"].as_u64(),
            answer["stream_version"].as_u64(),
            answer["duplicate"].as_bool(),
        ) {
            (201, Some(position), Some(stream_version), Some(false))
                if answered_id.as_deref() == Some(event_id.to_string().as_str()) =>
            {
                self.log.acks.push(Ack {
                    op,
                    stream,
                    path,
                    body,
                    event_id,
                    position,
                    stream_version,
                });
                self.acked.fetch_add(1, Ordering::SeqCst);
                Step::Acked
            }
            _ => {
                self.log.problems.push(format!(
                    "client {}: POST {path} {body} answered {status} {answer} (wanted 201, duplicate false, event id {event_id})",
                    self.id
                ));
                Step::Stop
            }
        }
    }
}

/// One client: at most `max_requests` requests, stops at the first request without an
/// answer (the hub died) or anything unexpected.
async fn run_client(mut ctx: ClientCtx, workload: Workload, max_requests: usize, seed: u64) -> ClientLog {
    let mut rng = StdRng::seed_from_u64(seed);
    let products = shelfsync_hub::seed::products();
    let stores = shelfsync_hub::seed::stores();
    let mut requests = 0;
    while requests < max_requests {
        let (product, store, reserve) = match workload {
            Workload::Mixed => (
                products[rng.random_range(0..products.len())].id,
                stores[rng.random_range(0..stores.len())].id,
                ctx.id % 2 == 1 && rng.random_bool(0.5),
            ),
            Workload::Reservations(product, store) => (product, store, true),
        };
        let stream = StreamId::inventory(product, store);
        requests += 1;
        if !reserve {
            let quantity = rng.random_range(1..=10u32);
            let body = json!({"product_id": product, "store_id": store, "quantity": quantity});
            match ctx
                .write(Op::Stock { quantity }, stream, "/v1/inventory/stock".into(), body)
                .await
            {
                Step::Acked | Step::Refused => continue,
                Step::Stop => break,
            }
        }
        let reservation = ReservationId::new_v7();
        let quantity = rng.random_range(1..=2u32);
        let body = json!({
            "product_id": product, "store_id": store, "quantity": quantity,
            "reservation_id": reservation, "ttl_seconds": 3600,
        });
        let op = Op::Reserve { reservation, quantity };
        match ctx.write(op, stream, "/v1/inventory/reservations".into(), body).await {
            Step::Acked => {}
            Step::Refused => continue,
            Step::Stop => break,
        }
        if matches!(workload, Workload::Reservations(..)) {
            continue;
        }
        requests += 1;
        let (op, path) = if rng.random_bool(0.75) {
            (
                Op::Commit { reservation },
                format!("/v1/inventory/reservations/{reservation}/commit"),
            )
        } else {
            (
                Op::Release { reservation },
                format!("/v1/inventory/reservations/{reservation}/release"),
            )
        };
        if let Step::Stop = ctx.write(op, stream, path, json!({})).await {
            break;
        }
    }
    ctx.log
}

/// Runs `clients` clients against `hub`, SIGKILLs it once `kill_after_acks` writes were
/// acknowledged (or `kill_after` passed), and returns what every client saw.
pub async fn append_and_kill(
    cluster: &mut Cluster,
    workload: Workload,
    clients: usize,
    max_requests: usize,
    kill_after_acks: usize,
    kill_after: Duration,
) -> Vec<ClientLog> {
    let killed = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let base_seed = cluster.seed;
    let mut tasks = Vec::new();
    for id in 0..clients {
        let ctx = ClientCtx {
            id,
            url: cluster.hub_url(),
            http: http_client(),
            killed: killed.clone(),
            acked: acked.clone(),
            log: ClientLog::default(),
        };
        tasks.push(tokio::spawn(run_client(
            ctx,
            workload,
            max_requests,
            base_seed.wrapping_add(id as u64),
        )));
    }
    let started = Instant::now();
    while acked.load(Ordering::SeqCst) < kill_after_acks && started.elapsed() < kill_after {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let at_kill = acked.load(Ordering::SeqCst);
    killed.store(true, Ordering::SeqCst);
    cluster.kill_hub();
    eprintln!(
        "SIGKILLed the hub after {:?} with {at_kill} acknowledged writes (client seed {base_seed})",
        started.elapsed()
    );
    let mut logs = Vec::new();
    for task in tasks {
        let log = tokio::time::timeout(CLIENTS_TIMEOUT, task)
            .await
            .expect("a client did not stop after the hub died")
            .expect("client task panicked");
        logs.push(log);
    }
    let problems: Vec<&String> = logs.iter().flat_map(|l| &l.problems).collect();
    assert!(
        problems.is_empty(),
        "unexpected answers before the kill (client seed {base_seed}):\n{problems:#?}"
    );
    logs
}

/// One line: what the clients saw.
pub fn summary(logs: &[ClientLog]) -> String {
    let acks: Vec<&Ack> = logs.iter().flat_map(|l| &l.acks).collect();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for ack in &acks {
        let kind = match ack.op {
            Op::Stock { .. } => "stock",
            Op::Reserve { .. } => "reserve",
            Op::Commit { .. } => "commit",
            Op::Release { .. } => "release",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
    for (code, n) in logs.iter().flat_map(|l| &l.refused) {
        *refused.entry(code).or_default() += n;
    }
    format!(
        "{} acknowledged {kinds:?}, {} sent, {} unknown outcome at the kill, refused {refused:?}",
        acks.len(),
        logs.iter().map(|l| l.sent.len()).sum::<usize>(),
        logs.iter().map(|l| l.unknown.len()).sum::<usize>(),
    )
}
