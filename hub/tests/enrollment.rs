//! Enrollment codes over HTTP: the admin's code is exchanged once for a working store
//! token, a second use and a malformed code are refused with their codes, and refused
//! guesses past `enrollment.max_failures_per_minute` get 429 with `Retry-After`.

use serde_json::json;
use shelfsync_common::testing::http::call;
use shelfsync_hub::testing::{demo_store, TestHub};

shelfsync_hub::both_storages! {
    async fn a_code_is_exchanged_once_and_guessing_is_rate_limited() {
        let hub = TestHub::spawn_with(|config| config.enrollment.max_failures_per_minute = 3).await;
        let store = demo_store(0);
        let (status, made, _) = call(hub.post(&format!("/v1/admin/stores/{store}/enrollment-codes"), &json!({}))).await;
        assert_eq!(status, 201, "{made}");
        let code = made["code"].as_str().unwrap().to_owned();
        assert!(
            made["command"].as_str().unwrap().ends_with(&format!("--code {code}")),
            "{made}"
        );

        let redeem = |code: String| {
            let request = hub.client.post(format!("{}/v1/enroll", hub.url)).json(&json!({ "code": code }));
            call(request)
        };
        let (status, enrolled, _) = redeem(code.to_lowercase()).await;
        assert_eq!(status, 200, "{enrolled}");
        assert_eq!(enrolled["store_id"], json!(store.to_string()));
        let token = enrolled["token"].as_str().unwrap();
        let heartbeat = hub
            .client
            .get(format!("{}/v1/sync/events?after=0&limit=1", hub.url))
            .header("x-shelfsync-protocol", "1.0")
            .bearer_auth(token);
        let (status, _, _) = call(heartbeat).await;
        assert_eq!(status, 200, "the new store token works");

        let (status, again, _) = redeem(code.clone()).await;
        assert_eq!((status, again["code"].as_str()), (410, Some("enrollment_code_used")), "{again}");
        let (status, bad, _) = redeem("ABCD-EF".into()).await;
        assert_eq!((status, bad["code"].as_str()), (422, Some("invalid_enrollment_code")), "{bad}");
        // One refusal so far (the second use); two more are answered, then 429.
        for _ in 0..2 {
            let (status, unknown, _) = redeem("ZZZZ-ZZZZ".into()).await;
            assert_eq!((status, unknown["code"].as_str()), (404, Some("enrollment_code_unknown")), "{unknown}");
        }
        let response = hub
            .client
            .post(format!("{}/v1/enroll", hub.url))
            .json(&json!({ "code": "ZZZZ-ZZZY" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 429);
        let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
}
