//! Allocations at the hub over real HTTP: setting a policy (admin only, validated), the
//! store's consent uploaded as a fact, a channel's reservation refused beyond the hub's
//! share with `409 insufficient_stock` naming it, a store asking for more in one round
//! trip, the stock and fleet views showing both shares, and the hub's rebalance job.

use serde_json::{json, Value};
use shelfsync_common::domain::allocation::Share;
use shelfsync_common::testing::http::call;
use shelfsync_common::wire::sync::{ShareGrant, UploadOutcome};
use shelfsync_common::EventPayload;
use shelfsync_hub::testing::{demo_product, demo_store, TestHub};

async fn set_policy(hub: &TestHub, policy: Value) -> (u16, Value) {
    let body = json!({"product_id": demo_product(0), "store_id": demo_store(0), "policy": policy});
    let (status, answer, _) = call(hub.post("/v1/inventory/allocations", &body)).await;
    (status, answer)
}

async fn shares(hub: &TestHub, min_position: u64) -> Value {
    let path = format!(
        "/v1/inventory/products/{}/stores/{}?min_position={min_position}",
        demo_product(0),
        demo_store(0)
    );
    let (status, level, _) = call(hub.get(&path)).await;
    assert_eq!(status, 200, "{level}");
    level["allocation"].clone()
}

fn web_hold(quantity: u32) -> Value {
    json!({"product_id": demo_product(0), "store_id": demo_store(0), "quantity": quantity})
}

shelfsync_hub::both_storages! {
    async fn the_hub_promises_only_its_share_and_the_store_decides_what_it_gives() {
        let hub = TestHub::spawn().await;
        let before = hub.stock(demo_product(0), demo_store(0)).await;
        assert!(before.allocation.is_none() && before.available >= 5, "{before:?}");

        // Given a policy of three units for the hub, nothing has moved yet: the store consents.
        let (status, set) = set_policy(&hub, json!({"mode": "fixed", "units": 3})).await;
        assert_eq!(status, 201, "{set}");
        let position = set["position"].as_u64().unwrap();
        let allocation = shares(&hub, position).await;
        assert_eq!(
            (allocation["hub_share"].as_i64(), allocation["policy"]["units"].as_u64()),
            (Some(0), Some(3))
        );
        let (status, refused, _) = call(hub.post("/v1/inventory/reservations", &web_hold(1))).await;
        assert_eq!(status, 409, "{refused}");
        assert_eq!(
            (
                refused["code"].as_str(),
                refused["share"].as_str(),
                refused["units_left"].as_i64()
            ),
            (Some("insufficient_stock"), Some("hub"), Some(0)),
            "the refusal names the hub's share: {refused}"
        );

        // When the store's agent gives three units (an event it records), the hub may promise three.
        let agent = hub.demo_agent(0).await;
        let consent = agent.fact(
            demo_product(0),
            EventPayload::AllocationTransferred {
                to: Share::Hub,
                quantity: 3,
            },
        );
        let answer = agent.upload(&[consent]).await;
        let UploadOutcome::Appended { position, .. } = answer.results[0].outcome else {
            panic!("{answer:?}")
        };
        let allocation = shares(&hub, position).await;
        assert_eq!(allocation["hub_share"], 3, "{allocation}");
        assert_eq!(
            allocation["store_share"].as_i64(),
            Some(before.available - 3),
            "{allocation}"
        );
        let (status, held, _) = call(hub.post("/v1/inventory/reservations", &web_hold(2))).await;
        assert_eq!(status, 201, "{held}");
        let (status, refused, _) = call(hub.post("/v1/inventory/reservations", &web_hold(2))).await;
        assert_eq!((status, refused["units_left"].as_i64()), (409, Some(1)), "{refused}");

        // A store may not give the hub's units to itself, nor set a policy.
        let grab = agent.fact(
            demo_product(0),
            EventPayload::AllocationTransferred {
                to: Share::Store,
                quantity: 1,
            },
        );
        let answer = agent.upload(&[grab]).await;
        assert!(
            matches!(&answer.results[0].outcome, UploadOutcome::Rejected { reason, .. } if reason == "event_type_not_allowed"),
            "{answer:?}"
        );

        // Asking for more: the hub gives what its share holds (one unit), in one round trip;
        // the same request again (same event_id) is answered with the first grant.
        let ask = json!({"product_id": demo_product(0), "quantity": 5, "event_id": uuid::Uuid::now_v7()});
        let mut grants = Vec::new();
        for _ in 0..2 {
            let response = agent
                .request(reqwest::Method::POST, "/v1/sync/allocations/request")
                .json(&ask)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            grants.push(response.json::<ShareGrant>().await.unwrap());
        }
        let grant = grants.remove(0);
        assert_eq!((grant.granted, grant.allocation.hub_share), (1, 0), "{grant:?}");
        assert!(grant.position.is_some());
        assert_eq!(
            (grants[0].granted, grants[0].position),
            (1, grant.position),
            "a retry: {grants:?}"
        );
        let mut other = ask.clone();
        other["quantity"] = json!(2);
        let reused = agent
            .request(reqwest::Method::POST, "/v1/sync/allocations/request")
            .json(&other)
            .send()
            .await
            .unwrap();
        assert_eq!(reused.status(), 422, "the id of another request");

        // The fleet view sums both shares per store.
        let fleet = hub.fleet().await;
        let berlin = fleet.stores.iter().find(|s| s.store.id == demo_store(0)).unwrap();
        let sums = berlin.allocations.expect("berlin has an allocation");
        assert_eq!((sums.streams, sums.hub_share), (1, 0), "{sums:?}");
        assert_eq!(sums.store_share, grant.allocation.store_share);
    }
}

shelfsync_hub::both_storages! {
    async fn only_the_admin_sets_a_valid_policy() {
        let hub = TestHub::spawn().await;
        let (status, bad) = set_policy(&hub, json!({"mode": "percent", "percent": 101})).await;
        assert_eq!(
            (status, bad["code"].as_str()),
            (422, Some("invalid_allocation")),
            "{bad}"
        );
        let (status, bad) = set_policy(&hub, json!({"mode": "most"})).await;
        assert_eq!(status, 422, "{bad}");
        let (_, token, _) = call(hub.post("/v1/admin/tokens", &json!({"name": "web-shop"}))).await;
        let secret = token["secret"].as_str().expect("a token");
        let body = json!({"product_id": demo_product(0), "store_id": demo_store(0), "policy": {"mode": "none"}});
        let (status, refused, _) = call(
            hub.client
                .post(format!("{}/v1/inventory/allocations", hub.url))
                .bearer_auth(secret)
                .json(&body),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (403, Some("forbidden")),
            "{refused}"
        );
        // A store asking for more of a stream without an allocation is told so.
        let agent = hub.demo_agent(0).await;
        let response = agent
            .request(reqwest::Method::POST, "/v1/sync/allocations/request")
            .json(&json!({"product_id": demo_product(0), "quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 409);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "no_allocation");
    }
}

shelfsync_hub::both_storages! {
    async fn the_hubs_job_gives_back_what_its_share_holds_beyond_the_target() {
        let hub = TestHub::spawn_with(|config| config.jobs.reservation_expiry = "* * * * * *".into()).await;
        let (status, _) = set_policy(&hub, json!({"mode": "fixed", "units": 2})).await;
        assert_eq!(status, 201);
        // A delivery booked at the hub fills the hub's share from the delivered units.
        let position = hub.add_stock(demo_product(0), demo_store(0), 5).await;
        assert_eq!(shares(&hub, position).await["hub_share"], 2);
        // A lower target leaves a surplus; the one-second job gives it back to the store.
        let (_, set) = set_policy(&hub, json!({"mode": "fixed", "units": 0})).await;
        let position = set["position"].as_u64().unwrap();
        assert_eq!(shares(&hub, position).await["hub_share"], 2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let head = hub.head().await;
            if shares(&hub, head).await["hub_share"] == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the job never gave the surplus back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
