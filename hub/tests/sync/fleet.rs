//! Enrollment, heartbeats, revocation and the fleet view; token names per role.

use super::*;

shelfsync_hub::both_storages! {
    async fn an_enrolled_store_gets_its_token_once_and_bad_enrollments_are_refused() {
        // Given a hub with the three demo stores
        let hub = TestHub::spawn().await;

        // When a store is enrolled
        let (enrolled, agent) = hub.enroll("Leipzig Zentrum").await;

        // Then its token is shown in the answer
        assert!(enrolled.token.starts_with("ss_"), "{}", enrolled.token.expose());
        assert_eq!(
            (enrolled.store.name.as_str(), enrolled.store.revoked),
            ("Leipzig Zentrum", false)
        );
        // and only there: listing the stores does not show it
        let response = hub.get("/v1/admin/stores").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let listed = response.text().await.unwrap();
        assert!(!listed.contains(enrolled.token.expose()), "the list must not show the token");
        let stores: Vec<shelfsync_common::wire::api::StoreInfo> = serde_json::from_str(&listed).unwrap();
        assert_eq!(stores.len(), 4);
        assert!(stores.contains(&enrolled.store));
        // and enrolling it again, an empty name or the nil id are refused
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
        // and a store token may not list the stores.
        let (status, _, _) = call(agent.request(reqwest::Method::GET, "/v1/admin/stores")).await;
        assert_eq!(status, 403);
    }
}

shelfsync_hub::both_storages! {
    async fn a_heartbeat_shows_in_the_fleet_view_with_the_cursor_lag() {
        // Given an enrolled store
        let hub = TestHub::spawn().await;
        let (_, agent) = hub.enroll("Leipzig Zentrum").await;

        // When it sends a heartbeat at cursor 3
        let ack = agent.heartbeat(&heartbeat(3)).await;

        // Then the fleet view shows it with the cursor lag and its age
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
        // and a store that sent none shows none
        assert!(fleet_entry(&fleet, demo_store(2)).heartbeat.is_none());
        assert!(fleet_entry(&fleet, demo_store(2)).cursor_lag_age_secs.is_none());
        // and the open /metrics names no store.
        let metrics = hub.metrics().await;
        assert!(
            !metrics.contains(&agent.store.to_string()),
            "the open /metrics must not list store ids"
        );
    }
}

shelfsync_hub::both_storages! {
    async fn a_refused_heartbeat_is_not_kept() {
        // Given a store whose last heartbeat was at cursor 3
        let hub = TestHub::spawn().await;
        let (_, agent) = hub.enroll("Leipzig Zentrum").await;
        agent.heartbeat(&heartbeat(3)).await;

        // When it sends a heartbeat too large, or with an unknown breaker state
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
            // Then it is refused
            assert_eq!((status, body["code"].as_str()), (422, Some("invalid_body")), "{body}");
        }
        // and the fleet view keeps the last good one.
        assert_eq!(
            fleet_entry(&hub.fleet().await, agent.store).heartbeat,
            Some(heartbeat(3)),
            "a refused heartbeat is not kept"
        );
    }
}

shelfsync_hub::both_storages! {
    async fn rejected_uploads_are_counted_in_the_fleet_view() {
        // Given an enrolled store
        let hub = TestHub::spawn().await;
        let (_, agent) = hub.enroll("Leipzig Zentrum").await;

        // When it uploads a fact with the hub as origin, a good one, and one on an unknown product
        let mut wrong_origin = agent.fact(demo_product(0), added(1));
        wrong_origin.metadata.origin = Origin::Hub;
        let unknown = agent.fact(ProductId::new_v7(), added(1));
        let answer = agent
            .upload(&[wrong_origin, agent.fact(demo_product(0), added(1)), unknown])
            .await;

        // Then two are rejected, and the fleet view counts them.
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
    }
}

shelfsync_hub::both_storages! {
    async fn a_revoked_store_is_refused_and_its_open_stream_ends() {
        // Given an enrolled store with an open push stream
        let hub = TestHub::spawn().await;
        let (_, agent) = hub.enroll("Leipzig Zentrum").await;
        let mut stream = agent.stream(None).await;
        stream.until_caught_up(WAIT).await;
        assert!(fleet_entry(&hub.fleet().await, agent.store).push_connected);

        // When the admin revokes it
        let revoke = hub.post_empty(&format!("/v1/admin/stores/{}/revoke", agent.store));
        assert_eq!(call(revoke).await.0, 204);

        // Then its next request is refused, its stream ends promptly, and the list says revoked
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
        // and revoking a store nobody enrolled is a 404.
        let unknown = hub.post_empty(&format!("/v1/admin/stores/{}/revoke", StoreId::new_v7()));
        assert_eq!(call(unknown).await.0, 404);
    }
}

shelfsync_hub::both_storages! {
    async fn a_rotated_token_works_and_the_old_one_stays_refused() {
        // Given a revoked store
        let hub = TestHub::spawn().await;
        let (_, agent) = hub.enroll("Leipzig Zentrum").await;
        let revoke = hub.post_empty(&format!("/v1/admin/stores/{}/revoke", agent.store));
        assert_eq!(call(revoke).await.0, 204);

        // When the admin gives it a new token
        let (status, rotated, _) = call(hub.post_empty(&format!("/v1/admin/stores/{}/token", agent.store))).await;
        assert_eq!(status, 201, "{rotated}");

        // Then the new token works, the old one stays refused, and the store is active again.
        let head = hub.head().await;
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
}

shelfsync_hub::both_storages! {
    /// Token names are per role: a channel token may carry a store token's name without
    /// touching it, the by-name route never revokes a store's token (or leaves its stream
    /// open), and rotating a store's token is one step that such a name cannot break.
    async fn token_names_of_different_roles_do_not_collide() {
        let hub = TestHub::spawn().await;
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
        agent.upload(&[agent.fact(demo_product(0), added(1))]).await;
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
}
