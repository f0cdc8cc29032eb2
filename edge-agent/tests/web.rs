//! The store page over plain HTTP against an in-process agent whose hub is unreachable:
//! the status in words without a key, nothing more without the manager key, the tills'
//! key refused at sign-in, and the quarantine buttons refused without this page's CSRF
//! token (the browser test, `tests/tests/web.rs`, drives the same page in Chromium).

use shelfsync_edge::testing::{TestAgent, MANAGER, TERMINAL};

const SESSION: &str = "shelfsync_edge_session";
const CSRF: &str = "shelfsync_edge_csrf";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_store_page_says_offline_and_guards_its_buttons() {
    let agent = TestAgent::spawn().await;
    let page = client().get(format!("{}/", agent.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let page = page.text().await.unwrap();
    assert!(page.contains("Offline"), "the hub is unreachable: {page}");
    assert!(!page.contains("id=\"stock\""), "no stock without the manager key");

    // Sign-in: the tills' key is refused in words; the manager key opens the page.
    let csrf = "ab".repeat(32);
    let cookie = format!("{CSRF}={csrf}");
    for (key, status) in [(TERMINAL, 401), (MANAGER, 303)] {
        let answer = client()
            .post(format!("{}/sign-in", agent.url))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str()), ("token", key)])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status);
        if status == 401 {
            assert!(answer.text().await.unwrap().contains("the manager key"));
        }
    }
    let manager = format!("{SESSION}={MANAGER}; {cookie}");
    let page = client()
        .get(format!("{}/", agent.url))
        .header("cookie", &manager)
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("id=\"stock\""));

    // A button without this page's token is refused, and one without the key goes to sign in.
    let event = uuid::Uuid::now_v7();
    let forged = client()
        .post(format!("{}/quarantine/{event}/discard", agent.url))
        .header("cookie", &manager)
        .form(&[("csrf", "cd".repeat(32))])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let anonymous = client()
        .post(format!("{}/quarantine/{event}/discard", agent.url))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 303);
    // With both, the operator route's own refusal, in words: no such quarantined event.
    let unknown = client()
        .post(format!("{}/quarantine/{event}/discard", agent.url))
        .header("cookie", &manager)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.text().await.unwrap().contains("quarantined_event_not_found"));
}
