//! The hub in-process, for tests and benches (feature `testing`, a dev-dependency only):
//! the one way to start a real hub on a port-0 listener with its own data directory, and
//! to talk to it over real HTTP as an admin or as an edge agent.
//!
//! - [`TestHub`]: `TestHub::spawn().await` (demo data, fresh temporary directory),
//!   [`TestHub::spawn_with`] (a changed configuration), [`TestHub::spawn_at`] (a data
//!   directory the test keeps), [`TestHub::spawn_on`] (a listener and data directory the
//!   caller made: the benches, on their own runtime). It stops when dropped.
//! - [`Agent`]: a store's token and the sync surface (upload, pull, snapshot, heartbeat,
//!   the push stream as an [`SseClient`]).
//! - [`demo_store`], [`demo_product`], [`ADMIN`]: what every test hub starts with.
//!
//! The hub's own integration tests and benches and the edge agent's sync tests use it;
//! the e2e suite (`tests/`) runs the real binary instead. Helpers panic with a message
//! when an expectation breaks: that is how a test fails.

#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod storage;

use crate::config::HubConfig;
use futures_util::StreamExt;
use serde_json::Value;
use shelfsync_common::testing::http::call;
use shelfsync_common::wire::api::StockLevel;
use shelfsync_common::wire::sync::{
    CaughtUp, EnrolledStore, FleetResponse, Heartbeat, HeartbeatAck, Progress, PullResponse, SnapshotResponse,
    UploadEvent, UploadRequest, UploadResponse, PROTOCOL_HEADER, PROTOCOL_VERSION, SSE_CAUGHT_UP, SSE_EVENT,
    SSE_PROGRESS,
};
use shelfsync_common::{EventEnvelope, EventId, EventMetadata, EventPayload, Origin, ProductId, StoreId, StreamId};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The admin token every test hub uses.
pub const ADMIN: &str = "test-admin-token-0123456789";

/// Demo store `n` (0..3) of the demo data every [`TestHub::spawn`] seeds.
pub fn demo_store(n: usize) -> StoreId {
    crate::seed::stores()[n].id
}

/// Demo product `n` (0..5) of the demo data.
pub fn demo_product(n: usize) -> ProductId {
    crate::seed::products()[n].id
}

/// A running hub; it stops (gracefully) when dropped, or with [`TestHub::stop`].
pub struct TestHub {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// A client for it (no token set: see [`TestHub::get`] and friends).
    pub client: reqwest::Client,
    /// Its data directory.
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    /// On PostgreSQL: the test's database (dropped after the hub).
    database: Option<storage::TestDatabase>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestHub {
    /// A hub on a fresh temporary data dir with the demo data.
    pub async fn spawn() -> TestHub {
        Self::spawn_with(|_| {}).await
    }

    /// A hub on a fresh temporary data dir with the demo data, its configuration changed
    /// by `configure` (e.g. a small `sync.push_buffer_events`). Its log is on the storage
    /// the running test is for ([`storage::storage`]): on PostgreSQL, a fresh database.
    pub async fn spawn_with(configure: impl FnOnce(&mut HubConfig)) -> TestHub {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = match storage::storage() {
            crate::config::Storage::Sqlite => None,
            crate::config::Storage::Postgres => Some(
                storage::TestDatabase::create()
                    .await
                    .expect("the PostgreSQL server answered when the test started"),
            ),
        };
        let url = database.as_ref().map(|db| db.url.clone());
        let mut hub = Self::spawn_on(bind().await, dir.path().to_owned(), true, |config| {
            if let Some(url) = url {
                config.storage = crate::config::Storage::Postgres;
                config.postgres.database_url = Some(url.into());
            }
            configure(config)
        })
        .await;
        hub._dir = Some(dir);
        hub.database = database;
        // The demo data is in the read model before the test reads it.
        hub.wait_ready().await;
        hub
    }

    /// One of several hubs on the PostgreSQL database at `database_url` (each with its own
    /// data dir for its read model), with the demo data when `demo` (give it to the first
    /// hub only).
    pub async fn spawn_sharing(database_url: &str, demo: bool) -> TestHub {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = database_url.to_owned();
        let mut hub = Self::spawn_on(bind().await, dir.path().to_owned(), demo, |config| {
            config.storage = crate::config::Storage::Postgres;
            config.postgres.database_url = Some(url.into());
        })
        .await;
        hub._dir = Some(dir);
        hub.wait_ready().await;
        hub
    }

    /// A hub on `data_dir` (kept after the hub stops), with the demo data when `demo`.
    pub async fn spawn_at(data_dir: PathBuf, demo: bool) -> TestHub {
        Self::spawn_on(bind().await, data_dir, demo, |_| {}).await
    }

    /// A hub serving `listener` on `data_dir`, spawned on the current runtime (a bench
    /// calls it inside its own runtime's `block_on`). Returns once it answers `/healthz`.
    pub async fn spawn_on(
        listener: TcpListener,
        data_dir: PathBuf,
        demo: bool,
        configure: impl FnOnce(&mut HubConfig),
    ) -> TestHub {
        shelfsync_common::server::telemetry::init_test_logging();
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mut config = HubConfig {
            data_dir: data_dir.clone(),
            admin_token: Some(ADMIN.into()),
            ..HubConfig::default()
        };
        configure(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let options = crate::RunOptions {
            seed_demo_data: demo,
            announce: false,
        };
        let task = tokio::spawn(async move {
            crate::run(config, listener, options, async {
                let _ = stopped.await;
            })
            .await
            .expect("hub run");
        });
        let hub = TestHub {
            url,
            client: reqwest::Client::new(),
            data_dir,
            _dir: None,
            database: None,
            stop: Some(stop),
            task: Some(task),
        };
        // The listener is bound before run() starts, so requests queue until it serves.
        let ready = hub
            .client
            .get(format!("{}/healthz", hub.url))
            .send()
            .await
            .expect("healthz");
        assert!(ready.status().is_success());
        hub
    }

    /// Waits (bounded: 30 s) until `/readyz` answers 200: the read model has caught up.
    pub async fn wait_ready(&self) {
        for _ in 0..600 {
            if let Ok(r) = self.client.get(format!("{}/readyz", self.url)).send().await {
                if r.status().is_success() {
                    // Ready, and the read model holds everything the hub has heard of.
                    let ready: Value = r.json().await.unwrap_or_default();
                    let at = |key: &str| ready[key].as_u64().unwrap_or(0);
                    if at("projected") >= at("head") {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the hub did not become ready");
    }

    /// Stops the hub and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("hub task");
        }
    }

    /// A GET with the admin token.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url)).bearer_auth(ADMIN)
    }

    /// A POST of `body` with the admin token.
    pub fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(body)
    }

    /// A POST without a body, with the admin token.
    pub fn post_empty(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url)).bearer_auth(ADMIN)
    }

    /// A PUT of `body` with the admin token.
    pub fn put(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .put(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(body)
    }

    /// The demo token of demo store `n` (the seed writes it into the data dir).
    pub fn demo_store_token(&self, n: usize) -> String {
        self.store_token(demo_store(n))
    }

    /// The demo token of the demo store `store`.
    pub fn store_token(&self, store: StoreId) -> String {
        std::fs::read_to_string(crate::seed::store_token_path(&self.data_dir, store))
            .expect("demo store token")
            .trim()
            .to_owned()
    }

    /// The address it listens on (for a proxy in front of it).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.url
            .trim_start_matches("http://")
            .parse()
            .expect("the hub's URL is http://IP:PORT")
    }

    /// Stock of `product` at `store` in the read model, once it has reached the head.
    pub async fn stock(&self, product: ProductId, store: StoreId) -> StockLevel {
        let head = self.head().await;
        let path = format!("/v1/inventory/products/{product}/stores/{store}?min_position={head}");
        let (status, body, _) = call(self.get(&path)).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_value(body).expect("StockLevel")
    }

    /// A delivery of `quantity` booked at the hub; returns its position.
    pub async fn add_stock(&self, product: ProductId, store: StoreId, quantity: u32) -> u64 {
        let body = serde_json::json!({ "product_id": product, "store_id": store, "quantity": quantity });
        let (status, written, _) = call(self.post("/v1/inventory/stock", &body)).await;
        assert_eq!(status, 201, "{written}");
        written["position"].as_u64().expect("position")
    }

    /// Holds the event log's write lock from a second connection until released: the
    /// hub's next write batch waits for it.
    pub async fn hold_writes(&self) -> storage::HeldWrites {
        match &self.database {
            Some(db) => storage::HeldWrites::on_database(db).await,
            None => storage::HeldWrites::on_file(&self.data_dir.join(crate::EVENTS_FILE)),
        }
    }

    /// Revokes `store`: its token stops working at once.
    pub async fn revoke(&self, store: StoreId) {
        let (status, body, _) = call(self.post_empty(&format!("/v1/admin/stores/{store}/revoke"))).await;
        assert_eq!(status, 204, "{body}");
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The text of `/metrics` of the server at `url`.
pub async fn metrics_text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// The sum over every label set of the Prometheus sample `name` in the text of `/metrics`
/// (0 when not yet recorded).
pub fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.split([' ', '{']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

// ---------------------------------------------------------------------------------------
// The sync surface, as an edge agent uses it.

impl TestHub {
    /// The hub's head position (from `/readyz`).
    pub async fn head(&self) -> u64 {
        let (_, ready, _) = call(self.client.get(format!("{}/readyz", self.url))).await;
        ready["head"].as_u64().expect("head")
    }

    /// An agent for demo store `n`, with a fresh store token (the admin's rotate route).
    pub async fn demo_agent(&self, n: usize) -> Agent {
        let store = demo_store(n);
        let (status, body, _) = call(self.post_empty(&format!("/v1/admin/stores/{store}/token"))).await;
        assert_eq!(status, 201, "{body}");
        let enrolled: EnrolledStore = serde_json::from_value(body).expect("EnrolledStore");
        self.agent(store, enrolled.token.expose().to_owned())
    }

    /// Enrolls a new store; returns the answer (with the token shown once) and its agent.
    pub async fn enroll(&self, name: &str) -> (EnrolledStore, Agent) {
        let (status, body, _) = call(self.post("/v1/admin/stores", &serde_json::json!({ "name": name }))).await;
        assert_eq!(status, 201, "{body}");
        let enrolled: EnrolledStore = serde_json::from_value(body).expect("EnrolledStore");
        let agent = self.agent(enrolled.store.id, enrolled.token.expose().to_owned());
        (enrolled, agent)
    }

    /// An agent for `store` with `token`.
    pub fn agent(&self, store: StoreId, token: String) -> Agent {
        Agent {
            url: self.url.clone(),
            client: self.client.clone(),
            store,
            token,
        }
    }

    /// `GET /v1/admin/fleet`.
    pub async fn fleet(&self) -> FleetResponse {
        let (status, body, _) = call(self.get("/v1/admin/fleet")).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("FleetResponse")
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        metrics_text(&self.client, &self.url).await
    }

    /// The value of a counter in `/metrics` (0 when not yet recorded).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics().await, name)
    }
}

/// An edge agent: a store and its token. Every request carries the protocol header.
#[derive(Clone)]
pub struct Agent {
    pub url: String,
    pub client: reqwest::Client,
    pub store: StoreId,
    pub token: String,
}

impl Agent {
    /// A sync request with the store token and the protocol header.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
    }

    /// `POST /v1/sync/upload`, expecting 200.
    pub async fn upload(&self, events: &[UploadEvent]) -> UploadResponse {
        let request = UploadRequest {
            events: events.to_vec(),
        };
        let (status, body, _) = call(self.request(reqwest::Method::POST, "/v1/sync/upload").json(&request)).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("UploadResponse")
    }

    /// `GET /v1/sync/events?after=&limit=`, expecting 200.
    pub async fn pull(&self, after: u64, limit: usize) -> PullResponse {
        let path = format!("/v1/sync/events?after={after}&limit={limit}");
        let (status, body, _) = call(self.request(reqwest::Method::GET, &path)).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("PullResponse")
    }

    /// Pulls until `next_cursor` reaches the head; returns the events and the final cursor.
    pub async fn pull_all(&self, after: u64) -> (Vec<EventEnvelope>, u64) {
        let mut events = Vec::new();
        let mut cursor = after;
        for _ in 0..10_000 {
            let page = self.pull(cursor, 1000).await;
            assert!(
                page.next_cursor >= cursor,
                "the cursor went back: {cursor} -> {}",
                page.next_cursor
            );
            events.extend(page.events);
            cursor = page.next_cursor;
            if cursor >= page.head {
                return (events, cursor);
            }
        }
        panic!("pull did not reach the head");
    }

    /// `GET /v1/sync/snapshot`, expecting 200.
    pub async fn snapshot(&self) -> SnapshotResponse {
        let (status, body, _) = call(self.request(reqwest::Method::GET, "/v1/sync/snapshot")).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("SnapshotResponse")
    }

    /// `POST /v1/sync/heartbeat`, expecting 200.
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> HeartbeatAck {
        let (status, body, _) = call(
            self.request(reqwest::Method::POST, "/v1/sync/heartbeat")
                .json(heartbeat),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("HeartbeatAck")
    }

    /// Opens `GET /v1/sync/stream`, resuming after `last_event_id` when given.
    pub async fn stream(&self, last_event_id: Option<u64>) -> SseClient {
        let mut request = self.request(reqwest::Method::GET, "/v1/sync/stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("open stream");
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        SseClient::new(response)
    }

    /// A fact of this store about `product`, as its outbox would upload it.
    pub fn fact(&self, product: ProductId, payload: EventPayload) -> UploadEvent {
        fact(self.store, product, payload)
    }
}

/// A store's fact about `product` (origin = the store, occurred now).
pub fn fact(store: StoreId, product: ProductId, payload: EventPayload) -> UploadEvent {
    UploadEvent {
        event_id: EventId::new_v7(),
        stream: StreamId::inventory(product, store),
        event_type: payload.event_type().into(),
        schema_version: 1,
        data: payload.data(),
        metadata: EventMetadata {
            origin: Origin::Store(store),
            actor: "till-1".into(),
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: None,
            occurred_at: time::OffsetDateTime::now_utc(),
            recorded_at: None,
        },
    }
}

/// One parsed SSE message of the push stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    /// A recorded event (its SSE id is its position).
    Event(Box<EventEnvelope>),
    /// Replay reached `head`.
    CaughtUp(u64),
    /// The cursor moved past invisible events.
    Progress(u64),
}

impl Push {
    /// Parses one SSE message of the push stream; panics when it is not one, or when its
    /// id is not the position its data names.
    pub fn parse(message: &eventsource_stream::Event) -> Push {
        let id: u64 = message
            .id
            .parse()
            .unwrap_or_else(|_| panic!("SSE id is not a position: {message:?}"));
        let push = match message.event.as_str() {
            SSE_EVENT => Push::Event(Box::new(serde_json::from_str(&message.data).expect("event data"))),
            SSE_CAUGHT_UP => Push::CaughtUp(serde_json::from_str::<CaughtUp>(&message.data).expect("caught-up").head),
            SSE_PROGRESS => Push::Progress(
                serde_json::from_str::<Progress>(&message.data)
                    .expect("progress")
                    .position,
            ),
            other => panic!("unexpected SSE event {other:?}: {message:?}"),
        };
        assert_eq!(push.id(), id, "the SSE id must be the position: {message:?}");
        push
    }

    /// The SSE id: the position to resume after.
    pub fn id(&self) -> u64 {
        match self {
            Push::Event(event) => event.position,
            Push::CaughtUp(head) => *head,
            Push::Progress(position) => *position,
        }
    }
}

type SseStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<eventsource_stream::Event, eventsource_stream::EventStreamError<reqwest::Error>>,
            > + Send,
    >,
>;

/// A client of the push stream: parses SSE and checks that each id is what its data says.
pub struct SseClient {
    events: SseStream,
}

impl SseClient {
    /// Reads the push stream from an open `GET /v1/sync/stream` answer.
    pub fn new(response: reqwest::Response) -> Self {
        use eventsource_stream::Eventsource;
        Self {
            events: Box::pin(response.bytes_stream().eventsource()),
        }
    }

    /// The next message; `None` when the stream ended (or broke). Panics after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Push> {
        let next = tokio::time::timeout(within, self.events.next())
            .await
            .expect("no SSE message in time");
        let message = match next {
            None | Some(Err(_)) => return None,
            Some(Ok(message)) => message,
        };
        Some(Push::parse(&message))
    }

    /// Messages until `caught-up` (returned last). Panics when the stream ends first.
    pub async fn until_caught_up(&mut self, within: Duration) -> Vec<Push> {
        let mut seen = Vec::new();
        loop {
            let push = self.next(within).await.expect("the stream ended before caught-up");
            let done = matches!(push, Push::CaughtUp(_));
            seen.push(push);
            if done {
                return seen;
            }
        }
    }
}
