//! The POS workload driver: a till that sells at one store's edge agent.
//!
//! A till is seeded (the same seed makes the same choices; outcomes still depend on timing,
//! e.g. a refusal for short stock) and runs a random mix of deliveries, holds, releases,
//! sales (commits) and count corrections across the store's products, with a short random
//! pause between operations. Every operation carries an `Idempotency-Key`; when the agent
//! cannot be reached (it was killed, it is restarting) or answers 5xx, the till retries the
//! same request with the same key until it gets an answer, so an operation is never done
//! twice and never lost by the till. Every 2xx answer is recorded with the request and the
//! `event_id` the agent gave it: the checker then demands each one in the hub's log exactly
//! once. Refusals the rules allow (short stock) are counted; anything else is a problem.

use crate::process::{Endpoint, TERMINAL_KEY};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shelfsync_common::wire::edge::LocalWriteResult;
use shelfsync_common::{EventId, EventPayload, ProductId, ReservationId, StoreId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a till behaves.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Operations to run.
    pub ops: usize,
    /// Pause between operations, milliseconds (uniform in this range).
    pub pause_ms: (u64, u64),
    /// Lifetime of most holds the till makes (long: they end in a sale or a release).
    pub ttl_seconds: u32,
    /// Share of holds made short-lived (1 to 3 s), for the agent to expire.
    pub short_holds: f64,
    /// Longest time one operation may keep retrying before it counts as a problem.
    pub retry_for: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            ops: 100,
            pause_ms: (5, 40),
            ttl_seconds: 3600,
            short_holds: 0.15,
            retry_for: Duration::from_secs(60),
        }
    }
}

/// What kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// A delivery (`POST /v1/inventory/stock`).
    Stock,
    /// A hold (`POST /v1/inventory/reservations`).
    Reserve,
    /// Give a hold back (`.../release`).
    Release,
    /// A sale (`.../commit`).
    Commit,
    /// A count correction (`POST /v1/inventory/adjustments`).
    Adjust,
}

/// A write a till got a 2xx answer for.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The store.
    pub store: StoreId,
    /// What it was.
    pub kind: OpKind,
    /// The product.
    pub product: ProductId,
    /// The route.
    pub path: String,
    /// The body sent.
    pub body: Value,
    /// The idempotency key.
    pub key: String,
    /// The event the agent recorded for it.
    pub event_id: EventId,
    /// What the agent says it recorded.
    pub payload: EventPayload,
    /// Attempts it took (more than one: a retry after a transport error or a 5xx).
    pub attempts: u32,
    /// Whether the answer was a replay of an earlier attempt's.
    pub replayed: bool,
}

/// Everything one till saw.
#[derive(Debug, Default, Clone)]
pub struct TillLog {
    /// The store.
    pub store: Option<StoreId>,
    /// 2xx answers, in order.
    pub acks: Vec<Ack>,
    /// Refusals the rules allow, by code.
    pub refused: BTreeMap<String, usize>,
    /// Requests retried (transport error or 5xx), in total.
    pub retries: usize,
    /// Answers that were replays of an earlier attempt.
    pub replays: usize,
    /// Anything that must not happen.
    pub problems: Vec<String>,
    /// When the last short-lived hold lapses (the agent then releases it, as `expired`).
    pub holds_lapse_by: Option<time::OffsetDateTime>,
}

impl TillLog {
    /// One line: counts by kind, refusals, retries.
    pub fn summary(&self) -> String {
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for ack in &self.acks {
            *kinds.entry(format!("{:?}", ack.kind).to_lowercase()).or_default() += 1;
        }
        format!(
            "{} acked {kinds:?}, refused {:?}, {} retries, {} replays, {} problems",
            self.acks.len(),
            self.refused,
            self.retries,
            self.replays,
            self.problems.len()
        )
    }
}

/// Progress shared with the test (to time faults): acknowledged operations so far.
#[derive(Debug, Default, Clone)]
pub struct Progress(Arc<AtomicUsize>);

impl Progress {
    /// Acknowledged operations so far.
    pub fn acked(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until at least `n` operations were acknowledged.
    pub async fn wait_for(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.acked() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// An HTTP client for tills and checks: no proxy from the environment, bounded requests.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("http client")
}

/// One till at `store`'s agent.
pub struct Till {
    name: String,
    store: StoreId,
    endpoint: Endpoint,
    products: Vec<ProductId>,
    http: reqwest::Client,
    rng: StdRng,
    open: Vec<(ReservationId, ProductId, time::OffsetDateTime)>,
    workload: Workload,
    progress: Progress,
    next_key: u64,
    log: TillLog,
    /// While closing a hold: when it lapses (a `reservation_not_found` after that is the
    /// agent's expiry winning the race, not a fault).
    closing: Option<time::OffsetDateTime>,
    /// Holds this till saw closed (their ids may be used again).
    closed: Vec<ReservationId>,
}

/// Outcome of one request (after retries).
enum Outcome {
    Acked,
    Refused,
    Failed,
}

impl Till {
    /// A till named `name` (unique in the test: it prefixes the idempotency keys) at the
    /// agent behind `endpoint`, selling `products`.
    pub fn new(
        name: &str,
        store: StoreId,
        endpoint: Endpoint,
        products: Vec<ProductId>,
        seed: u64,
        workload: Workload,
    ) -> Self {
        Self {
            name: name.into(),
            store,
            endpoint,
            products,
            http: http_client(),
            rng: StdRng::seed_from_u64(seed),
            open: Vec::new(),
            workload,
            progress: Progress::default(),
            next_key: 0,
            closing: None,
            closed: Vec::new(),
            log: TillLog {
                store: Some(store),
                ..TillLog::default()
            },
        }
    }

    /// A handle on the till's progress.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Runs the workload; returns what the till saw.
    pub async fn run(mut self) -> TillLog {
        for _ in 0..self.workload.ops {
            let outcome = self.one().await;
            if let Outcome::Failed = outcome {
                break;
            }
            let (low, high) = self.workload.pause_ms;
            let pause = self.rng.random_range(low..=high.max(low));
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self.log
    }

    fn product(&mut self) -> ProductId {
        self.products[self.rng.random_range(0..self.products.len())]
    }

    async fn one(&mut self) -> Outcome {
        let roll = self.rng.random_range(0..100u32);
        let kind = if self.open.is_empty() {
            match roll {
                0..30 => OpKind::Stock,
                30..80 => OpKind::Reserve,
                _ => OpKind::Adjust,
            }
        } else {
            match roll {
                0..15 => OpKind::Stock,
                15..45 => OpKind::Reserve,
                45..70 => OpKind::Commit,
                70..85 => OpKind::Release,
                _ => OpKind::Adjust,
            }
        };
        let store = self.store;
        match kind {
            OpKind::Stock => {
                let product = self.product();
                let quantity = self.rng.random_range(1..=5u32);
                let body = json!({"product_id": product, "store_id": store, "quantity": quantity});
                self.send(kind, product, "/v1/inventory/stock".into(), body).await
            }
            OpKind::Adjust => {
                let product = self.product();
                let mut delta = self.rng.random_range(-3..=3i64);
                if delta == 0 {
                    delta = 1;
                }
                let reason = if delta < 0 { "damaged" } else { "stock take" };
                let body = json!({"product_id": product, "store_id": store, "delta": delta, "reason": reason});
                self.send(kind, product, "/v1/inventory/adjustments".into(), body).await
            }
            OpKind::Reserve => {
                let product = self.product();
                let quantity = self.rng.random_range(1..=3u32);
                // Now and then a till reuses the id of a hold it saw closed (basket numbers
                // come round again): an id is unique among open holds, not forever.
                let reservation = if !self.closed.is_empty() && self.rng.random_bool(0.1) {
                    self.closed.swap_remove(self.rng.random_range(0..self.closed.len()))
                } else {
                    ReservationId::from_bytes(self.rng.random::<[u8; 16]>())
                };
                let short = self.rng.random_bool(self.workload.short_holds);
                let ttl = if short {
                    self.rng.random_range(1..=3)
                } else {
                    self.workload.ttl_seconds
                };
                let body = json!({
                    "product_id": product, "store_id": store, "quantity": quantity,
                    "reservation_id": reservation, "ttl_seconds": ttl,
                });
                let asked_at = time::OffsetDateTime::now_utc();
                let outcome = self
                    .send(kind, product, "/v1/inventory/reservations".into(), body)
                    .await;
                if let Outcome::Acked = outcome {
                    // The agent started the hold between our asking and its answer.
                    let ttl = time::Duration::seconds(i64::from(ttl));
                    self.open.push((reservation, product, asked_at + ttl));
                    if short {
                        let lapses = time::OffsetDateTime::now_utc() + ttl;
                        self.log.holds_lapse_by = self.log.holds_lapse_by.max(Some(lapses));
                    }
                }
                outcome
            }
            OpKind::Commit | OpKind::Release => {
                let index = self.rng.random_range(0..self.open.len());
                let (reservation, product, lapses) = self.open.swap_remove(index);
                let verb = if kind == OpKind::Commit { "commit" } else { "release" };
                let path = format!("/v1/inventory/reservations/{reservation}/{verb}");
                let body = if kind == OpKind::Release {
                    json!({"reason": "cancelled"})
                } else {
                    json!({})
                };
                self.closing = Some(lapses);
                let outcome = self.send(kind, product, path, body).await;
                self.closing = None;
                // Answered (a sale, a release, or "it lapsed"): the hold is closed.
                if !matches!(outcome, Outcome::Failed) {
                    self.closed.push(reservation);
                }
                outcome
            }
        }
    }

    /// Sends one write until it is answered (same idempotency key on every attempt).
    async fn send(&mut self, kind: OpKind, product: ProductId, path: String, body: Value) -> Outcome {
        self.next_key += 1;
        let key = format!("{}-{}", self.name, self.next_key);
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut last_error = String::new();
        loop {
            attempts += 1;
            if attempts > 1 {
                self.log.retries += 1;
                if started.elapsed() > self.workload.retry_for {
                    self.log.problems.push(format!(
                        "{} {path} {body}: no answer after {attempts} attempts in {:?}: {last_error}",
                        self.name,
                        started.elapsed()
                    ));
                    return Outcome::Failed;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let url = format!("{}{path}", self.endpoint.url());
            let sent = self
                .http
                .post(&url)
                .bearer_auth(TERMINAL_KEY)
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(error) => {
                    last_error = format!("{error:?}");
                    continue;
                }
            };
            let status = response.status().as_u16();
            let text = match response.text().await {
                Ok(text) => text,
                Err(error) => {
                    last_error = format!("reading the answer: {error:?}");
                    continue;
                }
            };
            if status >= 500 {
                last_error = format!("{status} {text}");
                continue;
            }
            if (200..300).contains(&status) {
                let result: LocalWriteResult = match serde_json::from_str(&text) {
                    Ok(result) => result,
                    Err(error) => {
                        self.log.problems.push(format!(
                            "{} {path} {body}: {status} answer is not a LocalWriteResult ({error}): {text}",
                            self.name
                        ));
                        return Outcome::Failed;
                    }
                };
                if result.replayed {
                    self.log.replays += 1;
                }
                let ack = Ack {
                    store: self.store,
                    kind,
                    product,
                    path,
                    body,
                    key,
                    event_id: result.event_id,
                    payload: result.payload,
                    attempts,
                    replayed: result.replayed,
                };
                if let Some(problem) = payload_mismatch(&ack) {
                    self.log.problems.push(format!("{}: {problem}: {ack:?}", self.name));
                }
                self.log.acks.push(ack);
                self.progress.0.fetch_add(1, Ordering::SeqCst);
                return Outcome::Acked;
            }
            let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let code = problem["code"].as_str().unwrap_or("").to_owned();
            let allowed = match code.as_str() {
                "insufficient_stock" => status == 409 && matches!(kind, OpKind::Reserve | OpKind::Adjust),
                "reservation_not_found" => self
                    .closing
                    .is_some_and(|lapses| time::OffsetDateTime::now_utc() >= lapses),
                _ => false,
            };
            if allowed {
                *self.log.refused.entry(code).or_default() += 1;
                return Outcome::Refused;
            }
            self.log.problems.push(format!(
                "{} {path} {body} (key {key}, attempt {attempts}): unexpected {status} {text}",
                self.name
            ));
            return Outcome::Refused;
        }
    }
}

/// Whether the agent's answer records what the till asked for.
fn payload_mismatch(ack: &Ack) -> Option<String> {
    let body = &ack.body;
    let fits = match (&ack.kind, &ack.payload) {
        (OpKind::Stock, EventPayload::StockAdded { quantity }) => {
            body["quantity"].as_u64() == Some(u64::from(*quantity))
        }
        (OpKind::Adjust, EventPayload::StockAdjusted { delta, .. }) => body["delta"].as_i64() == Some(*delta),
        (
            OpKind::Reserve,
            EventPayload::StockReserved {
                reservation_id,
                quantity,
                ..
            },
        ) => {
            body["quantity"].as_u64() == Some(u64::from(*quantity))
                && body["reservation_id"].as_str() == Some(reservation_id.to_string().as_str())
        }
        (OpKind::Commit, EventPayload::ReservationCommitted { reservation_id, .. })
        | (OpKind::Release, EventPayload::StockReleased { reservation_id, .. }) => {
            ack.path.contains(&reservation_id.to_string())
        }
        _ => false,
    };
    (!fits).then(|| "the recorded event is not what the till asked for".to_owned())
}

// ---------------------------------------------------------------------------------------
// The web shop: strict commands at the hub on the stores' streams.

/// A write the hub acknowledged to the web shop.
#[derive(Debug, Clone)]
pub struct WebAck {
    /// The route.
    pub path: String,
    /// The body (with its `event_id`).
    pub body: Value,
    /// The event id the web shop chose.
    pub event_id: EventId,
    /// The stream it wrote.
    pub stream: shelfsync_common::StreamId,
}

/// Everything the web shop saw.
#[derive(Debug, Default, Clone)]
pub struct WebLog {
    /// 2xx answers.
    pub acks: Vec<WebAck>,
    /// Refusals the rules allow (short stock; a hold that expired or was closed), by code.
    pub refused: BTreeMap<String, usize>,
    /// Requests retried after a transport error or a 5xx.
    pub retries: usize,
    /// Anything that must not happen.
    pub problems: Vec<String>,
    /// When the last short-lived hold lapses (the hub then releases it, as `expired`).
    pub holds_lapse_by: Option<time::OffsetDateTime>,
}

impl WebLog {
    /// One line.
    pub fn summary(&self) -> String {
        format!(
            "web shop: {} acked, refused {:?}, {} retries, {} problems",
            self.acks.len(),
            self.refused,
            self.retries,
            self.problems.len()
        )
    }
}

/// A web shop selling from the stores' stock through the hub (admin token): holds (some
/// short-lived, left for the hub to expire), sales, releases and deliveries, each with its
/// own `event_id` so that a retry after a lost answer is recorded once. It keeps going
/// through hub restarts (retrying the same request) until `ops` operations are answered.
pub struct WebShop {
    hub: Endpoint,
    stores: Vec<StoreId>,
    products: Vec<ProductId>,
    http: reqwest::Client,
    rng: StdRng,
    ops: usize,
    pause_ms: (u64, u64),
    open: Vec<(ReservationId, time::OffsetDateTime)>,
    closed: Vec<ReservationId>,
    log: WebLog,
}

impl WebShop {
    /// A web shop at the hub behind `hub`, over `stores` and `products`.
    pub fn new(hub: Endpoint, stores: Vec<StoreId>, products: Vec<ProductId>, seed: u64, ops: usize) -> Self {
        Self {
            hub,
            stores,
            products,
            http: http_client(),
            rng: StdRng::seed_from_u64(seed),
            ops,
            pause_ms: (10, 60),
            open: Vec::new(),
            closed: Vec::new(),
            log: WebLog::default(),
        }
    }

    /// Runs; returns what it saw.
    pub async fn run(mut self) -> WebLog {
        for _ in 0..self.ops {
            if !self.one().await {
                break;
            }
            let pause = self.rng.random_range(self.pause_ms.0..=self.pause_ms.1);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self.log
    }

    async fn one(&mut self) -> bool {
        let store = self.stores[self.rng.random_range(0..self.stores.len())];
        let product = self.products[self.rng.random_range(0..self.products.len())];
        let stream = shelfsync_common::StreamId::inventory(product, store);
        let roll = self.rng.random_range(0..100u32);
        if !self.open.is_empty() && roll < 40 {
            let index = self.rng.random_range(0..self.open.len());
            let (reservation, expires_at) = self.open.swap_remove(index);
            let verb = if roll < 30 { "commit" } else { "release" };
            let path = format!("/v1/inventory/reservations/{reservation}/{verb}");
            // Which stream it is on is the hub's business; the checker only needs the id.
            let before = self.log.acks.len();
            let going = self.send(path, json!({}), stream, Some(expires_at)).await;
            if self.log.acks.len() > before {
                self.closed.push(reservation);
            }
            return going;
        }
        if roll < 70 {
            // Now and then an order number comes round again: reuse a closed hold's id.
            let reservation = if !self.closed.is_empty() && self.rng.random_bool(0.1) {
                self.closed.swap_remove(self.rng.random_range(0..self.closed.len()))
            } else {
                ReservationId::from_bytes(self.rng.random::<[u8; 16]>())
            };
            // A third of the holds are short and left to the hub's expiry job.
            let short = self.rng.random_bool(0.33);
            let ttl: u32 = if short { self.rng.random_range(1..=3) } else { 3600 };
            let body = json!({
                "product_id": product, "store_id": store, "quantity": 1,
                "reservation_id": reservation, "ttl_seconds": ttl,
            });
            let before = self.log.acks.len();
            let going = self.send("/v1/inventory/reservations".into(), body, stream, None).await;
            let lapses = time::OffsetDateTime::now_utc() + time::Duration::seconds(i64::from(ttl));
            if self.log.acks.len() > before {
                if short {
                    self.log.holds_lapse_by = self.log.holds_lapse_by.max(Some(lapses));
                } else {
                    self.open.push((reservation, lapses));
                }
            }
            return going;
        }
        let body = json!({"product_id": product, "store_id": store, "quantity": self.rng.random_range(1..=4u32)});
        self.send("/v1/inventory/stock".into(), body, stream, None).await
    }

    /// Sends until answered; false when the web shop should stop (a problem).
    async fn send(
        &mut self,
        path: String,
        mut body: Value,
        stream: shelfsync_common::StreamId,
        hold_expires: Option<time::OffsetDateTime>,
    ) -> bool {
        let event_id = EventId::from_bytes(self.rng.random::<[u8; 16]>());
        body["event_id"] = json!(event_id);
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > 1 {
                self.log.retries += 1;
                if started.elapsed() > Duration::from_secs(60) {
                    self.log
                        .problems
                        .push(format!("web shop: {path} {body}: no answer within 60 s"));
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let sent = self
                .http
                .post(format!("{}{path}", self.hub.url()))
                .bearer_auth(crate::process::ADMIN_TOKEN)
                .json(&body)
                .send()
                .await;
            let Ok(response) = sent else { continue };
            let status = response.status().as_u16();
            let Ok(text) = response.text().await else { continue };
            if status >= 500 {
                continue;
            }
            let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if (200..300).contains(&status) {
                let answered = answer["events"][0]["event_id"].as_str().map(str::to_owned);
                if answered.as_deref() != Some(event_id.to_string().as_str()) {
                    self.log
                        .problems
                        .push(format!("web shop: {path} {body}: answered with another event: {text}"));
                }
                let stream = serde_json::from_value(answer["events"][0]["stream"].clone()).unwrap_or(stream);
                self.log.acks.push(WebAck {
                    path,
                    body,
                    event_id,
                    stream,
                });
                return true;
            }
            let code = answer["code"].as_str().unwrap_or("").to_owned();
            let allowed = match code.as_str() {
                "insufficient_stock" => path.ends_with("/reservations"),
                // The hold lapsed (the hub expired it) before the customer paid.
                "reservation_not_found" => {
                    hold_expires.is_some_and(|at| time::OffsetDateTime::now_utc() + time::Duration::seconds(1) >= at)
                }
                _ => false,
            };
            if allowed {
                *self.log.refused.entry(code).or_default() += 1;
            } else {
                self.log.problems.push(format!(
                    "web shop: {path} {body} (attempt {attempts}): unexpected {status} {text}"
                ));
            }
            return true;
        }
    }
}
