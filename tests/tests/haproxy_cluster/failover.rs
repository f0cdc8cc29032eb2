//! The cost of losing one hub of three, measured through HAProxy while the fleet trades.
//!
//! Before the kill, the test's own push stream is opened through HAProxy (with a store's
//! token) and the hub HAProxy put it on (the `X-Shelfsync-Hub` header it adds) is the one
//! killed, so the stream is certain to break. From the SIGKILL on, for a fixed window:
//!
//! - **reads**: `GET /v1/inventory/products/{id}/stores/{store}` every 50 ms;
//! - **writes**: a delivery (`POST /v1/inventory/stock`, admin, with its own `event_id`)
//!   every 100 ms; the acknowledged ones are handed to the checker like the web shop's;
//! - **push**: the stream is re-opened through HAProxy from its last id whenever it ends.
//!
//! "Working again" is the moment after which every probe of that kind succeeded (0 when
//! none failed); for push it is the first arrival, on the probe's stream, of a write made
//! after the kill. Also reported: when HAProxy's log says the hub is DOWN (its health
//! check), and, after the restart, how long until HAProxy routes to it again.

use serde_json::json;
use shelfsync_common::{EventId, StreamId};
use shelfsync_hub::testing::{Agent, Push, SseClient};
use shelfsync_tests::checker::{get_json, post_json};
use shelfsync_tests::cluster::demo_products;
use shelfsync_tests::ha_cluster::HaCluster;
use shelfsync_tests::process::ADMIN_TOKEN;
use shelfsync_tests::workload::{http_client, WebAck, WebLog};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the probes run after the kill.
const WINDOW: Duration = Duration::from_secs(8);
/// The header HAProxy adds (installers/haproxy.cfg).
const SERVED_BY: &str = "x-shelfsync-hub";

/// What one kind of probe saw.
#[derive(Debug, Default)]
pub struct Probe {
    /// Requests made.
    pub tries: u32,
    /// Requests that failed (no answer, or not the expected status).
    pub failed: u32,
    /// Since the kill: when the last failure was answered (None: no failure).
    pub last_failure: Option<Duration>,
    /// The first failure's answer, for the report.
    pub first_error: Option<String>,
}

impl Probe {
    fn record(&mut self, since_kill: Duration, outcome: Result<(), String>) {
        self.tries += 1;
        if let Err(error) = outcome {
            self.failed += 1;
            self.last_failure = Some(since_kill);
            self.first_error.get_or_insert(error);
        }
    }

    /// Seconds from the kill until this kind of request worked for good.
    pub fn working_again(&self) -> f64 {
        self.last_failure.map_or(0.0, |d| d.as_secs_f64())
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what}: {} tries, {} failed, working again after {:.2} s{}",
            self.tries,
            self.failed,
            self.working_again(),
            self.first_error
                .as_ref()
                .map(|e| format!(" (first failure: {e})"))
                .unwrap_or_default()
        )
    }
}

/// The failover's figures.
pub struct Failover {
    /// The hub killed (0-based).
    pub victim: usize,
    /// Reads through HAProxy.
    pub reads: Probe,
    /// Writes through HAProxy.
    pub writes: Probe,
    /// Since the kill: when a write made after the kill arrived on the re-opened stream.
    pub push: Option<Duration>,
    /// The hubs the probe's stream was re-opened on.
    pub push_moved_to: Vec<String>,
    /// Since the kill: when HAProxy's log said the hub was DOWN.
    pub marked_down: Option<Duration>,
    /// The acknowledged probe writes, for the checker.
    pub acked: WebLog,
}

impl Failover {
    /// The figures, for the test output and docs/benchmarks.md.
    pub fn report(&self) -> String {
        let secs = |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()));
        format!(
            "[e2e] failover of hub{} of 3 (SIGKILL), through HAProxy:\n  {}\n  {}\n  push: a write made after the kill pushed after {} (stream re-opened on {:?})\n  HAProxy marked the hub DOWN after {}",
            self.victim + 1,
            self.reads.line("reads"),
            self.writes.line("writes"),
            secs(self.push),
            self.push_moved_to,
            secs(self.marked_down)
        )
    }
}

/// The push probe: a store's stream through HAProxy, re-opened from its last id whenever
/// it ends; records when each event arrived.
struct PushProbe {
    agent: Agent,
    last_id: u64,
    arrived: Arc<Mutex<HashMap<EventId, Instant>>>,
    moved_to: Arc<Mutex<Vec<String>>>,
}

impl PushProbe {
    /// Opens the stream after `last_id`; returns it and the hub it is on.
    async fn open(&self) -> Result<(SseClient, String), String> {
        let response = self
            .agent
            .request(reqwest::Method::GET, "/v1/sync/stream")
            .header("Last-Event-ID", self.last_id.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("{}", response.status()));
        }
        let hub = response
            .headers()
            .get(SERVED_BY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        Ok((SseClient::new(response), hub))
    }

    /// Follows the stream until `until`, re-opening it when it ends.
    async fn follow(mut self, mut stream: SseClient, until: Instant) {
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(200), stream.next(Duration::from_secs(30))).await {
                Err(_) => continue,
                Ok(Some(push)) => {
                    self.last_id = push.id();
                    if let Push::Event(event) = push {
                        lock(&self.arrived).insert(event.event_id, Instant::now());
                    }
                }
                Ok(None) => loop {
                    if Instant::now() >= until {
                        return;
                    }
                    match self.open().await {
                        Ok((reopened, hub)) => {
                            lock(&self.moved_to).push(hub);
                            stream = reopened;
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                },
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The push probe of the first demo store, from the first hub's head (not opened).
async fn push_probe(cluster: &HaCluster) -> PushProbe {
    let (store, token) = cluster.demo_store(0);
    let (head, _) = shelfsync_tests::checker::hub_positions(&cluster.http, &cluster.hub_urls()[0])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    PushProbe {
        agent: Agent {
            url: cluster.front_url(),
            client: reqwest::Client::new(),
            store,
            token,
        },
        last_id: head,
        arrived: Arc::default(),
        moved_to: Arc::default(),
    }
}

/// Opens the first demo store's push stream through HAProxy and reads it until
/// `caught-up`; returns it and the name of the hub HAProxy put it on.
async fn open(probe: &PushProbe) -> (SseClient, String) {
    let (mut stream, on) = probe
        .open()
        .await
        .unwrap_or_else(|e| panic!("open the push probe: {e}"));
    stream.until_caught_up(Duration::from_secs(10)).await;
    (stream, on)
}

/// [`open`] on a new probe.
pub async fn open_push_probe(cluster: &HaCluster) -> (SseClient, String) {
    open(&push_probe(cluster).await).await
}

/// One delivery to the first demo store through HAProxy; its position.
pub async fn write_once(cluster: &HaCluster) -> u64 {
    let (product, store) = (demo_products()[0], cluster.demo_store(0).0);
    let body = json!({"product_id": product, "store_id": store, "quantity": 1});
    let url = format!("{}/v1/inventory/stock", cluster.front_url());
    match post_json(&cluster.http, &url, ADMIN_TOKEN, &body).await {
        Ok((201, answer)) => answer["position"].as_u64().expect("a position"),
        other => panic!("a delivery through HAProxy: {other:?}"),
    }
}

/// Opens the push probe, SIGKILLs the hub it landed on, and measures for [`WINDOW`].
pub async fn kill_one_and_measure(cluster: &mut HaCluster) -> Failover {
    let probe = push_probe(cluster).await;
    let (stream, on) = open(&probe).await;
    let victim = cluster
        .hub_index(&on)
        .unwrap_or_else(|| panic!("HAProxy names the hub it chose ({SERVED_BY}: {on:?})"));
    let (product, store_id) = (demo_products()[0], probe.agent.store);
    let (arrived, moved_to) = (probe.arrived.clone(), probe.moved_to.clone());

    cluster.kill_hub(victim);
    let killed = Instant::now();
    let until = killed + WINDOW;
    let pushes = tokio::spawn(probe.follow(stream, until));
    let front = cluster.front_url();
    let reads = tokio::spawn(read_probe(
        front.clone(),
        format!("/v1/inventory/products/{product}/stores/{store_id}"),
        killed,
        until,
    ));
    let writes = tokio::spawn(write_probe(front, product, store_id, killed, until));
    let marked_down = watch_down(cluster, victim, killed, until).await;
    let reads = reads.await.expect("the read probe");
    let (writes, acked, written) = writes.await.expect("the write probe");
    pushes.await.expect("the push probe");
    let arrived = lock(&arrived);
    let push = written
        .iter()
        .filter_map(|id| arrived.get(id))
        .min()
        .map(|at| at.duration_since(killed));
    let push_moved_to = lock(&moved_to).clone();
    Failover {
        victim,
        reads,
        writes,
        push,
        push_moved_to,
        marked_down,
        acked,
    }
}

async fn read_probe(front: String, path: String, killed: Instant, until: Instant) -> Probe {
    let http = http_client();
    let mut probe = Probe::default();
    while Instant::now() < until {
        let outcome = match get_json(&http, &format!("{front}{path}"), ADMIN_TOKEN).await {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!("{status} {body}")),
            Err(error) => Err(error),
        };
        probe.record(killed.elapsed(), outcome);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probe
}

async fn write_probe(
    front: String,
    product: shelfsync_common::ProductId,
    store: shelfsync_common::StoreId,
    killed: Instant,
    until: Instant,
) -> (Probe, WebLog, Vec<EventId>) {
    let http = http_client();
    let (mut probe, mut log, mut written) = (Probe::default(), WebLog::default(), Vec::new());
    let path = "/v1/inventory/stock";
    while Instant::now() < until {
        let event_id = EventId::new_v7();
        let body = json!({"product_id": product, "store_id": store, "quantity": 1, "event_id": event_id});
        let outcome = match post_json(&http, &format!("{front}{path}"), ADMIN_TOKEN, &body).await {
            Ok((201, _)) => {
                written.push(event_id);
                log.acks.push(WebAck {
                    path: path.into(),
                    body,
                    event_id,
                    stream: StreamId::inventory(product, store),
                });
                Ok(())
            }
            Ok((status, answer)) => Err(format!("{status} {answer}")),
            Err(error) => Err(error),
        };
        probe.record(killed.elapsed(), outcome);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (probe, log, written)
}

/// Watches HAProxy's log until it says hub `victim` is DOWN (or `until`).
async fn watch_down(cluster: &HaCluster, victim: usize, killed: Instant, until: Instant) -> Option<Duration> {
    let needle = format!("hubs/hub{} is DOWN", victim + 1);
    while Instant::now() < until {
        if cluster.haproxy.log().contains(&needle) {
            return Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// After the restart: seconds until HAProxy routes a request to hub `victim` again.
pub async fn back_in_rotation(cluster: &HaCluster, victim: usize, within: Duration) -> Option<f64> {
    let started = Instant::now();
    let http = http_client();
    let name = format!("hub{}", victim + 1);
    while started.elapsed() < within {
        if let Ok(response) = http.get(format!("{}/healthz", cluster.front_url())).send().await {
            if response
                .headers()
                .get(SERVED_BY)
                .is_some_and(|v| v.as_bytes() == name.as_bytes())
            {
                return Some(started.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
