//! Allocations at the till, with the whole agent against a real hub in-process: the
//! agent's job gives the hub its share (the store's consent), the local figures show both
//! shares, a sale past the store's share is refused (`409 allocation_exhausted`, with
//! what is left) or sold and marked as the store's policy says, and the till asks the hub
//! for more in one round trip.

#[macro_use]
mod sync_support;

use serde_json::{json, Value};
use shelfsync_common::domain::allocation::OverShare;
use shelfsync_common::testing::http::call;
use sync_support::*;

const TERMINAL: &str = "sync-test-terminal-key-0123";

struct Agent {
    url: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), shelfsync_edge::StartError>>,
    _dir: tempfile::TempDir,
}

impl Agent {
    async fn spawn(hub: &TestHub, store: shelfsync_common::StoreId, over_share: OverShare) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sync_test_config(dir.path(), store, &hub.url, &hub.store_token(store));
        config.terminal_key = Some(TERMINAL.into());
        config.manager_key = Some("sync-test-manager-key-01234".into());
        config.jobs.reservation_expiry = "* * * * * *".into();
        config.allocations.over_share = over_share;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        config.listen = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(shelfsync_edge::run(config, listener, async {
            let _ = stopped.await;
        }));
        Agent {
            url,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn level(&self, product: shelfsync_common::ProductId) -> Value {
        let request = self
            .client
            .get(format!("{}/v1/inventory/products/{product}", self.url))
            .bearer_auth(TERMINAL);
        let (status, body, _) = call(request).await;
        if status == 200 {
            body
        } else {
            Value::Null
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value, String) {
        call(
            self.client
                .post(format!("{}{path}", self.url))
                .bearer_auth(TERMINAL)
                .json(body),
        )
        .await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// Sets a fixed allocation of `hub_units` on `(product, store)` with `available` units in
/// all, and waits until the agent shows the hub's share given.
async fn allocate(
    hub: &TestHub,
    agent: &Agent,
    store: shelfsync_common::StoreId,
    available: i64,
    hub_units: i64,
) -> shelfsync_common::ProductId {
    let product = demo_product(0);
    let now = hub.stock(product, store).await.available;
    if available != now {
        let body = json!({"product_id": product, "store_id": store, "delta": available - now, "reason": "stock take"});
        let (status, adjusted, _) = call(hub.post("/v1/inventory/adjustments", &body)).await;
        assert_eq!(status, 201, "{adjusted}");
    }
    let policy = json!({"product_id": product, "store_id": store, "policy": {"mode": "fixed", "units": hub_units}});
    let (status, set, _) = call(hub.post("/v1/inventory/allocations", &policy)).await;
    assert_eq!(status, 201, "{set}");
    let store_units = available - hub_units;
    eventually!(
        "the agent gives the hub its share and sees it confirmed",
        {
            let level = agent.level(product).await;
            level["allocation"]["hub_share"] == hub_units
                && level["allocation"]["store_share"] == store_units
                && level["pending_events"] == 0
        },
        agent.level(product).await
    );
    product
}

fn hold(product: shelfsync_common::ProductId, store: shelfsync_common::StoreId, quantity: i64) -> Value {
    json!({"product_id": product, "store_id": store, "quantity": quantity})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_till_sells_its_share_is_refused_past_it_and_asks_for_more() {
    let hub = TestHub::spawn().await;
    let store = demo_store(0);
    let agent = Agent::spawn(&hub, store, OverShare::Refuse).await;
    let product = allocate(&hub, &agent, store, 5, 2).await;

    // The store's three units sell; a fourth is refused, saying what is left.
    let (status, sold, _) = agent.post("/v1/inventory/reservations", &hold(product, store, 3)).await;
    assert_eq!(status, 201, "{sold}");
    assert_eq!(sold["stock"]["allocation"]["store_share"], 0, "{sold}");
    assert!(sold.get("used_hub_share").is_none(), "{sold}");
    let (status, refused, _) = agent.post("/v1/inventory/reservations", &hold(product, store, 1)).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(
        (
            refused["code"].as_str(),
            refused["share"].as_str(),
            refused["units_left"].as_i64()
        ),
        (Some("allocation_exhausted"), Some("store"), Some(0))
    );

    // Online, the till asks for more: the hub gives what its share holds, in one round trip.
    let (status, grant, _) = agent
        .post(
            "/v1/inventory/allocations/request",
            &json!({"product_id": product, "quantity": 1}),
        )
        .await;
    assert_eq!(status, 200, "{grant}");
    assert_eq!(grant["granted"], 1, "{grant}");
    assert_eq!(
        grant["stock"]["allocation"]["store_share"], 1,
        "the units are here: {grant}"
    );
    let (status, sold, _) = agent.post("/v1/inventory/reservations", &hold(product, store, 1)).await;
    assert_eq!(status, 201, "{sold}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_mark_the_sale_goes_through_and_says_it_used_the_hubs_units() {
    let hub = TestHub::spawn().await;
    let store = demo_store(1);
    let agent = Agent::spawn(&hub, store, OverShare::Mark).await;
    let product = allocate(&hub, &agent, store, 4, 2).await;
    let (status, sold, _) = agent.post("/v1/inventory/reservations", &hold(product, store, 3)).await;
    assert_eq!(status, 201, "{sold}");
    assert_eq!(
        sold["used_hub_share"], 1,
        "one unit was promised to online orders: {sold}"
    );
    assert_eq!(sold["stock"]["allocation"]["store_share"], -1, "{sold}");
    let (status, refused, _) = agent.post("/v1/inventory/reservations", &hold(product, store, 2)).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("insufficient_stock")),
        "never below zero: {refused}"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asking_for_more_of_a_product_without_an_allocation_is_refused_and_the_link_stays_up() {
    let hub = TestHub::spawn().await;
    let store = demo_store(2);
    let agent = Agent::spawn(&hub, store, OverShare::Refuse).await;
    eventually!(
        "the agent has its catalog",
        agent.level(demo_product(1)).await != Value::Null
    );
    // More refusals than the breaker's threshold (5 in 10 s): an answer is not a failure.
    for _ in 0..8 {
        let ask = json!({"product_id": demo_product(1), "quantity": 1});
        let (status, refused, _) = agent.post("/v1/inventory/allocations/request", &ask).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (409, Some("no_allocation")),
            "{refused}"
        );
    }
    let (_, status, _) = call(agent.client.get(format!("{}/v1/status", agent.url))).await;
    assert_eq!(
        status["breaker"], "closed",
        "the refusals did not open the link: {status}"
    );
    agent.stop().await;
}
