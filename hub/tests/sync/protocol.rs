//! The protocol header is required on the sync surface and always answered.

use super::*;

shelfsync_hub::both_storages! {
    async fn the_protocol_header_is_required_and_always_answered() {
        let hub = TestHub::spawn().await;
        let a = hub.demo_agent(0).await;
        let url = |path: &str| format!("{}{path}", hub.url);
        let bare = |version: Option<&str>| {
            let request = hub.client.get(url("/v1/sync/events")).bearer_auth(&a.token);
            match version {
                Some(version) => request.header(PROTOCOL_HEADER, version),
                None => request,
            }
        };
        for version in [None, Some("2.0"), Some("0.9"), Some("one"), Some("1"), Some("1.0.0")] {
            let response = bare(version).send().await.unwrap();
            assert_eq!(response.status(), 400, "{version:?}");
            assert_eq!(response.headers()[PROTOCOL_HEADER], PROTOCOL_VERSION);
            assert_eq!(response.headers()["content-type"], "application/problem+json");
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["code"], "unsupported_protocol", "{problem}");
            if matches!(version, Some("1" | "1.0.0")) {
                assert!(problem["detail"].as_str().unwrap().contains("MAJOR.MINOR"), "{problem}");
            }
        }
        // Checked before anything else: even without a token.
        let response = hub
            .client
            .get(url("/v1/sync/events"))
            .header(PROTOCOL_HEADER, "2.0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        // Another minor of the same major is fine.
        assert_eq!(bare(Some("1.7")).send().await.unwrap().status(), 200);

        // Every sync answer, success or error, carries the hub's version.
        let too_many: Vec<UploadEvent> = (0..501).map(|_| a.fact(demo_product(0), added(1))).collect();
        let bad_token = Agent {
            token: "ss_nope".into(),
            ..a.clone()
        };
        let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
            (a.request(reqwest::Method::GET, "/v1/sync/events?after=0&limit=10"), 200),
            (a.request(reqwest::Method::GET, "/v1/sync/snapshot"), 200),
            (
                a.request(reqwest::Method::POST, "/v1/sync/heartbeat")
                    .json(&heartbeat(1)),
                200,
            ),
            (
                a.request(reqwest::Method::POST, "/v1/sync/upload")
                    .json(&UploadRequest { events: vec![] }),
                200,
            ),
            (
                a.request(reqwest::Method::POST, "/v1/sync/upload")
                    .json(&UploadRequest { events: too_many }),
                422,
            ),
            (
                a.request(reqwest::Method::POST, "/v1/sync/upload")
                    .json(&json!({"events": 1})),
                422,
            ),
            (a.request(reqwest::Method::POST, "/v1/sync/upload").body("{"), 415),
            (a.request(reqwest::Method::GET, "/v1/sync/events?limit=0"), 400),
            (bad_token.request(reqwest::Method::GET, "/v1/sync/events"), 401),
            (
                Agent {
                    token: ADMIN.into(),
                    ..a.clone()
                }
                .request(reqwest::Method::GET, "/v1/sync/events"),
                403,
            ),
            (a.request(reqwest::Method::GET, "/v1/sync/upload"), 405),
            (a.request(reqwest::Method::DELETE, "/v1/sync/events"), 405),
        ];
        for (request, status) in cases {
            let response = request.send().await.unwrap();
            let url = response.url().clone();
            assert_eq!(response.status(), status, "{url}");
            assert_eq!(
                response
                    .headers()
                    .get(PROTOCOL_HEADER)
                    .map(|v| v.to_str().unwrap().to_owned()),
                Some(PROTOCOL_VERSION.to_owned()),
                "{url} {status}"
            );
            if status >= 400 {
                assert_eq!(
                    response.headers()["content-type"],
                    "application/problem+json",
                    "{url} {status}"
                );
            }
        }
        let stream = a.request(reqwest::Method::GET, "/v1/sync/stream").send().await.unwrap();
        assert_eq!(stream.status(), 200);
        assert_eq!(stream.headers()[PROTOCOL_HEADER], PROTOCOL_VERSION);
        assert_eq!(stream.headers()["content-type"], "text/event-stream");
    }
}
