//! Crash tests against the real `shelfsync-hub` binary, run as a child process.
//!
//! Clients append over HTTP while the process is killed with SIGKILL. After a restart on
//! the same data dir, every acknowledged write must be in the log exactly once, at the
//! position it was acknowledged with; the log must be gap-free with contiguous stream
//! versions; a retry of an acknowledged request must be answered as a duplicate; and the
//! read model must converge to the fold of the log. Then a graceful SIGTERM stop,
//! `shelfsync-hub rebuild-projections`, and the same read-model check on the rebuilt file.
//!
//! Only acknowledged writes are promised: a request in flight at the kill may or may not
//! be in the log, but never twice, and nothing is in the log that no client sent.

#![cfg(unix)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shelfsync_common::domain::inventory::{self, InventoryState};
use shelfsync_common::{EventEnvelope, EventId, EventPayload, ProductId, ReservationId, StoreId, StreamId};
use shelfsync_hub::store::{reader, ReadPool};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The admin token of every hub these tests start.
const ADMIN: &str = "crash-test-admin-token-0123456789";
/// Longest wait for a hub to print where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for a hub to exit after SIGTERM, or for `rebuild-projections` to finish.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for the client tasks to notice the hub is gone.
const CLIENTS_TIMEOUT: Duration = Duration::from_secs(15);
/// Per-request timeout of the test's HTTP clients.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Events per page when the test reads the log.
const LOG_PAGE: usize = 500;

/// A child process that is killed (SIGKILL) and reaped when dropped, so that a failing
/// test never leaves a hub running.
struct ChildGuard {
    child: Child,
    what: String,
    stderr: PathBuf,
}

impl ChildGuard {
    fn stderr_text(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (what `Child::kill` sends on unix), then reaps the process.
    fn kill9(&mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL the hub");
        self.child.wait().expect("reap the hub")
    }

    /// Waits (bounded) for the process to exit on its own.
    async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} (pid {}) did not exit within {timeout:?}; stderr:\n{}",
                self.what,
                self.pid(),
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `shelfsync-hub` command with a clean environment: no `SHELFSYNC_HUB_*` setting of
/// the developer's leaks into the child, logs at warn.
fn hub_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shelfsync-hub"));
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SHELFSYNC_HUB_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "warn").stdin(Stdio::null());
    command
}

/// A running hub process.
struct Hub {
    process: ChildGuard,
    url: String,
    http: reqwest::Client,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("http client")
}

impl Hub {
    /// Starts `shelfsync-hub demo` on `<root>/data` and waits (bounded) for the line that
    /// says where it listens. `label` names its stderr file, `<root>/hub-<label>.stderr`.
    async fn start(root: &Path, label: &str) -> Hub {
        let data_dir = data_dir(root);
        let stderr_path = root.join(format!("hub-{label}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let data_dir_arg = data_dir.to_str().expect("utf-8 temp path");
        let mut child = hub_command(&["demo", "--data-dir", data_dir_arg, "--listen", "127.0.0.1:0"])
            .env("SHELFSYNC_HUB_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn shelfsync-hub");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut process = ChildGuard {
            child,
            what: format!("hub {label}"),
            stderr: stderr_path,
        };
        // Read stdout to its end (the hub prints more after the address, and must not
        // get EPIPE); hand over the address as soon as it appears.
        let (found, address) = tokio::sync::oneshot::channel::<String>();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("shelfsync hub listening on ") {
                    if let Some(found) = found.take() {
                        let _ = found.send(url.trim().to_owned());
                    }
                }
            }
        });
        let url = match tokio::time::timeout(START_TIMEOUT, address).await {
            Ok(Ok(url)) => url,
            Ok(Err(_)) => {
                let status = process.wait_exit(Duration::from_secs(5)).await;
                panic!(
                    "hub {label} closed stdout without saying where it listens ({status}); stderr:\n{}",
                    process.stderr_text()
                );
            }
            Err(_) => panic!(
                "hub {label} did not print its address within {START_TIMEOUT:?}; stderr:\n{}",
                process.stderr_text()
            ),
        };
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Hub {
            process,
            url,
            http: http_client(),
        }
    }

    /// SIGKILL, and reap.
    fn kill9(&mut self) {
        let status = self.process.kill9();
        assert!(!status.success(), "a SIGKILLed hub cannot exit cleanly: {status}");
    }

    /// SIGTERM (the `kill` command), then asserts a clean exit (0) within the timeout.
    async fn terminate(mut self) {
        let pid = self.process.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let status = self.process.wait_exit(EXIT_TIMEOUT).await;
        assert!(
            status.success(),
            "after SIGTERM the hub must shut down gracefully and exit 0, got {status}; stderr:\n{}",
            self.process.stderr_text()
        );
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        decode(response).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        post(&self.http, &self.url, path, body)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    async fn head(&self) -> u64 {
        let (status, ready) = self.get("/readyz").await;
        assert_eq!(status, 200, "{ready}");
        ready["head"].as_u64().unwrap_or_else(|| panic!("no head in {ready}"))
    }
}

fn data_dir(root: &Path) -> PathBuf {
    root.join("data")
}

async fn decode(response: reqwest::Response) -> Result<(u16, Value), String> {
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("reading the body: {e}"))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

/// POSTs `body`; `Err` when no complete answer arrived (the outcome is unknown).
async fn post(http: &reqwest::Client, url: &str, path: &str, body: &Value) -> Result<(u16, Value), String> {
    let response = http
        .post(format!("{url}{path}"))
        .bearer_auth(ADMIN)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    decode(response).await
}

// ---------------------------------------------------------------------------------------
// Clients

/// What an acknowledged request did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Stock { quantity: u32 },
    Reserve { reservation: ReservationId, quantity: u32 },
    Commit { reservation: ReservationId },
    Release { reservation: ReservationId },
}

/// A request the hub acknowledged (2xx), with what it answered.
#[derive(Debug, Clone)]
struct Ack {
    op: Op,
    stream: StreamId,
    path: String,
    body: Value,
    event_id: EventId,
    position: u64,
    stream_version: u64,
}

/// Everything one client task saw.
#[derive(Debug, Default)]
struct ClientLog {
    acks: Vec<Ack>,
    /// Every event id sent, acknowledged or not.
    sent: Vec<EventId>,
    /// Event ids whose request had no complete answer when the hub died.
    unknown: Vec<EventId>,
    /// Refusals that are part of the game (409 insufficient_stock), by code.
    refused: BTreeMap<String, usize>,
    /// Anything that must not happen.
    problems: Vec<String>,
}

/// What the clients send.
#[derive(Debug, Clone, Copy)]
enum Workload {
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
        let (status, answer) = match post(&self.http, &self.url, &path, &body).await {
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
async fn append_and_kill(
    hub: &mut Hub,
    workload: Workload,
    clients: usize,
    max_requests: usize,
    kill_after_acks: usize,
    kill_after: Duration,
) -> Vec<ClientLog> {
    let killed = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let base_seed: u64 = rand::random();
    let mut tasks = Vec::new();
    for id in 0..clients {
        let ctx = ClientCtx {
            id,
            url: hub.url.clone(),
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
    hub.kill9();
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

// ---------------------------------------------------------------------------------------
// Checks on the log

/// The whole log, read from the SQLite file with the hub's read-only pool, in pages.
async fn read_log(root: &Path) -> Vec<EventEnvelope> {
    let pool = Arc::new(ReadPool::new(data_dir(root).join(shelfsync_hub::EVENTS_FILE)));
    let mut events: Vec<EventEnvelope> = Vec::new();
    for _ in 0..10_000 {
        let after = events.last().map_or(0, |e| e.position);
        let page = pool
            .run(move |conn| reader::events_after(conn, after, LOG_PAGE))
            .await
            .expect("reading the event log");
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
    panic!("the log has more than 5M events; something is looping");
}

/// Positions are exactly 1..=head, event ids are unique, and each stream's versions are
/// 1, 2, 3, ... in position order.
fn assert_log_shape(log: &[EventEnvelope]) {
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    let mut ids: HashMap<EventId, u64> = HashMap::new();
    for (index, event) in log.iter().enumerate() {
        assert_eq!(
            event.position,
            index as u64 + 1,
            "the log's positions must be 1..=head without gaps; event {index} is {event:?}"
        );
        if let Some(earlier) = ids.insert(event.event_id, event.position) {
            panic!(
                "event id {} is in the log twice: at {earlier} and at {}",
                event.event_id, event.position
            );
        }
        let version = versions.entry(event.stream).or_default();
        assert_eq!(
            event.stream_version,
            *version + 1,
            "stream {} must have contiguous versions; at position {} it jumps from {} to {}",
            event.stream,
            event.position,
            version,
            event.stream_version
        );
        *version = event.stream_version;
    }
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
fn assert_acks_in_log(log: &[EventEnvelope], seeded: u64, logs: &[ClientLog]) {
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

/// Every inventory stream folded with the domain's `apply`, with its last position.
fn fold(log: &[EventEnvelope]) -> BTreeMap<StreamId, (InventoryState, u64)> {
    let mut streams: BTreeMap<StreamId, (InventoryState, u64)> = BTreeMap::new();
    for event in log.iter().filter(|e| !e.stream.is_catalog()) {
        let (state, position) = streams.entry(event.stream).or_default();
        inventory::apply(state, &event.payload);
        *position = event.position;
    }
    streams
}

fn demo_streams() -> Vec<StreamId> {
    let mut streams = Vec::new();
    for product in shelfsync_hub::seed::products() {
        for store in shelfsync_hub::seed::stores() {
            streams.push(StreamId::inventory(product.id, store.id));
        }
    }
    streams
}

/// GET a stock level at `min_position`, retrying (bounded) while the read model is behind.
async fn stock_level(hub: &Hub, stream: StreamId, min_position: u64) -> Value {
    let store = stream.store_id.expect("an inventory stream");
    let path = format!(
        "/v1/inventory/products/{}/stores/{store}?min_position={min_position}",
        stream.product_id
    );
    let mut last = (0, Value::Null);
    for _ in 0..20 {
        last = hub.get(&path).await;
        if last.0 != 503 {
            break;
        }
    }
    let (status, level) = last;
    assert_eq!(status, 200, "GET {path}: {level}");
    level
}

/// The read model answers, for every demo pair, exactly the fold of the log.
async fn assert_read_model_is_the_fold(hub: &Hub, log: &[EventEnvelope], context: &str) {
    let head = log.last().map_or(0, |e| e.position);
    let folded = fold(log);
    let streams = demo_streams();
    assert!(
        folded.keys().all(|s| streams.contains(s)),
        "only demo streams were written"
    );
    let mut wrong = Vec::new();
    for stream in streams {
        let (state, position) = folded.get(&stream).cloned().unwrap_or_default();
        let expected = (
            Some(state.on_hand),
            Some(state.reserved()),
            Some(state.available()),
            Some(state.version),
            Some(position),
        );
        let level = stock_level(hub, stream, head).await;
        let got = (
            level["on_hand"].as_i64(),
            level["reserved"].as_i64(),
            level["available"].as_i64(),
            level["version"].as_u64(),
            level["position"].as_u64(),
        );
        if got != expected {
            wrong.push(format!(
                "{stream}: read model {got:?}, fold of the log {expected:?} (on_hand, reserved, available, version, position)"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{context}: the read model at head {head} is not the fold of the log:\n{}",
        wrong.join("\n")
    );
}

/// Resends every acknowledged request (same event id, same body) from `parallel` tasks:
/// each must answer 200, duplicate, with the first answer's position and version.
async fn assert_retries_are_duplicates(hub: &Hub, acks: &[Ack], parallel: usize) {
    let chunk = acks.len().div_ceil(parallel).max(1);
    let mut tasks = Vec::new();
    for part in acks.chunks(chunk) {
        let part = part.to_vec();
        let (http, url) = (hub.http.clone(), hub.url.clone());
        tasks.push(tokio::spawn(async move {
            let mut wrong = Vec::new();
            for ack in part {
                let (status, answer) = post(&http, &url, &ack.path, &ack.body)
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
async fn assert_write_side_heads(hub: &Hub, log: &[EventEnvelope]) {
    let folded = fold(log);
    let mut head = log.last().map_or(0, |e| e.position);
    for stream in demo_streams() {
        let version = folded.get(&stream).map_or(0, |(state, _)| state.version);
        let store = stream.store_id.expect("inventory stream");
        let body = json!({"product_id": stream.product_id, "store_id": store, "quantity": 1,
            "expected_version": version, "event_id": EventId::new_v7().to_string()});
        let (status, answer) = hub.post("/v1/inventory/stock", &body).await;
        head += 1;
        assert_eq!(
            (status, answer["stream_version"].as_u64(), answer["position"].as_u64()),
            (201, Some(version + 1), Some(head)),
            "{stream} is at version {version} in the log: {answer}"
        );
        let mut stale = body.clone();
        stale["event_id"] = json!(EventId::new_v7().to_string());
        let (status, answer) = hub.post("/v1/inventory/stock", &stale).await;
        assert_eq!(
            (status, answer["code"].as_str(), answer["current_version"].as_u64()),
            (409, Some("version_conflict"), Some(version + 1)),
            "{answer}"
        );
    }
}

fn summary(logs: &[ClientLog]) -> String {
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

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_and_the_read_model_converges() {
    let root = tempfile::tempdir().expect("temp dir");
    let root = root.path();
    let mut hub = Hub::start(root, "1-first").await;
    let seeded = hub.head().await;
    assert!(seeded > 0, "the demo seeds events");

    // 1-2. Eight clients append; SIGKILL mid-stream.
    let logs = append_and_kill(&mut hub, Workload::Mixed, 8, 2_000, 300, Duration::from_secs(3)).await;
    eprintln!("{}", summary(&logs));
    let acks: Vec<Ack> = logs.iter().flat_map(|l| l.acks.iter().cloned()).collect();
    assert!(
        acks.len() >= 20,
        "too few acknowledged writes before the kill to test anything: {}",
        summary(&logs)
    );

    // 3. Restart on the same data dir.
    let hub = Hub::start(root, "2-after-kill").await;
    let log = read_log(root).await;
    let head = log.last().map_or(0, |e| e.position);
    assert_eq!(hub.head().await, head, "the restarted hub's head is the log's");
    assert!(head >= seeded, "the demo must not be seeded again, nor the log shrink");
    // (a) every acknowledged write, exactly once, where it was acknowledged.
    assert_log_shape(&log);
    assert_acks_in_log(&log, seeded, &logs);
    assert_eq!(
        log.iter().filter(|e| e.metadata.actor == "demo-seed").count() as u64,
        seeded,
        "the demo seed ran once"
    );
    // (b) idempotency survives the crash; nothing new is written by retries.
    assert_retries_are_duplicates(&hub, &acks, 8).await;
    assert_eq!(hub.head().await, head, "retries must not write");
    // (c) the read model converges to the fold of the log.
    assert_read_model_is_the_fold(&hub, &log, "after SIGKILL and restart").await;
    // The writer's stream heads are the log's.
    assert_write_side_heads(&hub, &log).await;

    // 4. Graceful stop, rebuild the read model offline, start again.
    hub.terminate().await;
    let log = read_log(root).await;
    assert_log_shape(&log);
    let rebuild_out = root.join("rebuild.stdout");
    let rebuild_err = root.join("rebuild.stderr");
    let child = hub_command(&["rebuild-projections"])
        .env("SHELFSYNC_HUB_DATA_DIR", data_dir(root))
        .stdout(std::fs::File::create(&rebuild_out).expect("stdout file"))
        .stderr(std::fs::File::create(&rebuild_err).expect("stderr file"))
        .spawn()
        .expect("spawn rebuild-projections");
    let mut rebuild = ChildGuard {
        child,
        what: "rebuild-projections".into(),
        stderr: rebuild_err,
    };
    let status = rebuild.wait_exit(EXIT_TIMEOUT).await;
    let said = std::fs::read_to_string(&rebuild_out).unwrap_or_default();
    assert!(
        status.success(),
        "rebuild-projections exited {status}; stdout: {said}; stderr:\n{}",
        rebuild.stderr_text()
    );
    assert!(
        said.contains(&format!("read model rebuilt from {} events", log.len())),
        "{said}"
    );

    let hub = Hub::start(root, "3-after-rebuild").await;
    assert_eq!(hub.head().await, log.len() as u64);
    assert_read_model_is_the_fold(&hub, &log, "after rebuild-projections").await;
    assert_eq!(read_log(root).await, log, "a restart must not change the log");
    hub.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_reservation_burst_keeps_every_hold_and_never_oversells() {
    let root = tempfile::tempdir().expect("temp dir");
    let root = root.path();
    let hub = Hub::start(root, "1-first").await;
    let product = shelfsync_hub::seed::products()[0].id;
    let store = shelfsync_hub::seed::stores()[0].id;
    let stream = StreamId::inventory(product, store);
    let (status, delivery) = hub
        .post(
            "/v1/inventory/stock",
            &json!({"product_id": product, "store_id": store, "quantity": 150}),
        )
        .await;
    assert_eq!(status, 201, "{delivery}");
    let mut hub = hub;
    let seeded = hub.head().await;

    let logs = append_and_kill(
        &mut hub,
        Workload::Reservations(product, store),
        8,
        200,
        60,
        Duration::from_secs(2),
    )
    .await;
    eprintln!("{}", summary(&logs));
    let acks: Vec<Ack> = logs.iter().flat_map(|l| l.acks.iter().cloned()).collect();
    assert!(acks.len() >= 10, "too few holds before the kill: {}", summary(&logs));

    let hub = Hub::start(root, "2-after-kill").await;
    let log = read_log(root).await;
    assert_log_shape(&log);
    assert_acks_in_log(&log, seeded, &logs);
    let (state, _) = fold(&log).remove(&stream).expect("the stream exists");
    assert!(
        state.available() >= 0,
        "strict reservations must never oversell: {state:?}"
    );
    for ack in &acks {
        if let Op::Reserve { reservation, quantity } = ack.op {
            assert_eq!(
                state.reservations.get(&reservation).map(|r| r.quantity),
                Some(quantity),
                "acknowledged hold {reservation} must still be open after the crash"
            );
        }
    }
    assert_retries_are_duplicates(&hub, &acks[..acks.len().min(20)], 4).await;
    assert_read_model_is_the_fold(&hub, &log, "after SIGKILL during reservations").await;

    // The writer's reservation index survived: every acknowledged hold can be committed.
    for ack in &acks {
        let Op::Reserve { reservation, .. } = ack.op else {
            continue;
        };
        let (status, answer) = hub
            .post(&format!("/v1/inventory/reservations/{reservation}/commit"), &json!({}))
            .await;
        assert_eq!(
            status, 201,
            "committing acknowledged hold {reservation} after the crash: {answer}"
        );
    }
    // And the writer's stock figures are the log's: exactly what is left can be held,
    // not one unit more.
    let log = read_log(root).await;
    let (state, _) = fold(&log).remove(&stream).expect("the stream exists");
    let available = state.available();
    if available > 0 {
        let (status, answer) = hub
            .post(
                "/v1/inventory/reservations",
                &json!({"product_id": product, "store_id": store, "quantity": available}),
            )
            .await;
        assert_eq!(
            status, 201,
            "holding the {available} units the log says are left: {answer}"
        );
    }
    let (status, answer) = hub
        .post(
            "/v1/inventory/reservations",
            &json!({"product_id": product, "store_id": store, "quantity": 1}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("insufficient_stock")),
        "the log says nothing is left: {answer}"
    );
    let log = read_log(root).await;
    assert_log_shape(&log);
    assert_read_model_is_the_fold(&hub, &log, "after committing the holds").await;
    hub.terminate().await;
}

/// Events the demo seed writes: 5 products, then opening stock for 15 product-store pairs.
const SEED_EVENTS: u64 = 20;

/// Starts `demo` on a fresh `<root>/data` and SIGKILLs it as soon as the seed has gone as
/// far as `target` (0: a store is enrolled; n: the log holds n events), watching the log
/// from a read-only connection. Returns (stores, head) as last seen before the kill, or
/// `None` if the hub got past the seed first.
async fn kill_first_start_while_seeding(root: &Path, target: u64) -> Option<(u64, u64)> {
    let data_dir = data_dir(root);
    let stderr_path = root.join("hub-0-seeding.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let child = hub_command(&[
        "demo",
        "--data-dir",
        data_dir.to_str().expect("utf-8 temp path"),
        "--listen",
        "127.0.0.1:0",
    ])
    .env("SHELFSYNC_HUB_ADMIN_TOKEN", ADMIN)
    .stdout(Stdio::null())
    .stderr(Stdio::from(stderr))
    .spawn()
    .expect("spawn shelfsync-hub");
    let mut process = ChildGuard {
        child,
        what: "hub 0-seeding".into(),
        stderr: stderr_path,
    };
    let events = data_dir.join(shelfsync_hub::EVENTS_FILE);
    let wal = data_dir.join(format!("{}-wal", shelfsync_hub::EVENTS_FILE));
    let (process, seen) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut conn: Option<rusqlite::Connection> = None;
        let mut seen = None;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "the hub exited while seeding: {status}; stderr:\n{}",
                    process.stderr_text()
                );
            }
            // Only once the file is in WAL mode, so as not to stand in the way of its creation.
            if conn.is_none() && wal.exists() {
                conn = shelfsync_hub::store::schema::open_read_only(&events).ok();
            }
            let Some(db) = &conn else {
                std::thread::yield_now();
                continue;
            };
            let state = db.query_row(
                "SELECT (SELECT COUNT(*) FROM stores), (SELECT COALESCE(MAX(position), 0) FROM events)",
                [],
                |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
            );
            match state {
                Ok((stores, head)) => {
                    let reached = if target == 0 { stores > 0 } else { head >= target };
                    if reached || head >= SEED_EVENTS {
                        seen = Some((stores, head));
                        break;
                    }
                }
                // The schema is not there yet: look again with a fresh connection.
                Err(_) => conn = None,
            }
        }
        drop(conn);
        process.kill9();
        (process, seen)
    })
    .await
    .expect("watching the seed");
    drop(process);
    let seen = seen.unwrap_or_else(|| panic!("the seed did not reach {target} within {START_TIMEOUT:?}"));
    (seen.1 < SEED_EVENTS).then_some(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_the_first_start_seed_is_finished_by_the_next_start() {
    let seed_ids: Vec<EventId> = (1..=SEED_EVENTS)
        .map(|n| EventId::from_name("demo-seed", &n.to_string()))
        .collect();
    let mut caught = Vec::new();
    for target in [0, 1, 3, 6, 10, 15, 19] {
        let root = tempfile::tempdir().expect("temp dir");
        let root = root.path();
        let seen = kill_first_start_while_seeding(root, target).await;
        caught.extend(seen);
        let hub = Hub::start(root, "1-after-kill").await;
        let log = read_log(root).await;
        assert_log_shape(&log);
        let ids: Vec<EventId> = log.iter().map(|e| e.event_id).collect();
        assert_eq!(
            ids, seed_ids,
            "killed while seeding at {seen:?} (stores, head): the next start must finish the seed, once"
        );
        let folded = fold(&log);
        assert!(
            demo_streams()
                .iter()
                .all(|s| folded.get(s).is_some_and(|(state, _)| state.version == 1)),
            "every demo pair has its opening stock: {folded:?}"
        );
        assert_read_model_is_the_fold(&hub, &log, "after a kill during the seed").await;
        hub.terminate().await;
    }
    eprintln!("killed mid-seed at (stores, head): {caught:?}");
    assert!(
        !caught.is_empty(),
        "no kill landed inside the seed; the test did not test anything"
    );
}
