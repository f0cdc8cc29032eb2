//! The web pages in a real browser: headless Chromium (through `chromedriver`) against a
//! real hub process and a real agent process of the Berlin store, as a person would use
//! them: a wrong token refused, signing in, finding a product, a till's sale at the agent
//! showing on the hub's stock page without a reload, a product named like a script shown
//! as text, enrolling a store (its token shown once), revoking its token, a revoked
//! channel token sent back to the sign-in page, and the store page saying "offline" with
//! the waiting sales once the hub is stopped. The screenshots it takes are the ones in
//! `docs/screenshots/` (docs/web.md) when `SHELFSYNC_SCREENSHOTS=1`.
//!
//! Without `chromium` and `chromedriver` it skips with a message saying how to install
//! them (a failure when `SHELFSYNC_REQUIRE_SERVICES=1`, as in CI).

use serde_json::json;
use shelfsync_common::testing::webdriver::Browser;
use shelfsync_tests::cluster::{demo_products, demo_stores, Cluster};
use shelfsync_tests::process::{ADMIN_TOKEN, MANAGER_KEY, TERMINAL_KEY};
use std::path::PathBuf;
use std::time::Duration;

/// Longest wait for anything a page should show.
const WAIT: Duration = Duration::from_secs(20);

/// Where a screenshot goes: `docs/screenshots/` with `SHELFSYNC_SCREENSHOTS=1` (to refresh
/// the committed ones), else a temporary folder, so a test run leaves the tree clean.
fn shot(name: &str) -> PathBuf {
    let dir = if std::env::var_os("SHELFSYNC_SCREENSHOTS").is_some_and(|v| v == "1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        std::env::temp_dir().join("shelfsync-screenshots")
    };
    dir.join(name)
}

/// A till's sale at the agent: `units` sold without a hold.
async fn till_sale(cluster: &Cluster, units: i64) {
    let agent = cluster.stores[0].agent.process.url();
    let response = cluster
        .http
        .post(format!("{agent}/v1/inventory/adjustments"))
        .bearer_auth(TERMINAL_KEY)
        .json(&json!({
            "product_id": demo_products()[0],
            "store_id": demo_stores()[0],
            "delta": -units,
            "reason": "sale",
        }))
        .send()
        .await
        .expect("a till's sale");
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
}

async fn on_hand(browser: &Browser, css: &str) -> i64 {
    let cell = browser.wait_text(css, "", WAIT).await;
    let text = browser.text(&cell).await;
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{css}: {text:?} is not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_work_in_a_real_browser() {
    let Some(browser) = Browser::start(1280, 900).await else {
        return;
    };
    let mut cluster = Cluster::start("web", 1, &[]).await;
    cluster.add_demo_store(0).await;
    cluster.wait_bootstrapped(WAIT).await;
    let hub = cluster.hub_url();
    let berlin = demo_stores()[0];

    // A wrong token is refused, in words, and leads nowhere.
    browser.goto(&format!("{hub}/")).await;
    assert!(browser.url().await.ends_with("/sign-in"), "{}", browser.url().await);
    browser.type_into("#token", "not-a-token").await;
    browser.click_on("form.card button[type=submit]").await;
    browser.wait_text(".notice.error", "was not accepted", WAIT).await;
    assert!(browser.url().await.ends_with("/sign-in"));
    browser.screenshot(&shot("sign-in-refused.png")).await;

    // The admin signs in and sees the fleet, Berlin's agent online.
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click_on("form.card button[type=submit]").await;
    browser.wait_text("#fleet", "Berlin Mitte", WAIT).await;
    let row = format!("#fleet tr[data-store=\"{berlin}\"]");
    browser.wait_text(&row, "online", WAIT).await;
    assert!(
        !browser.url().await.contains(ADMIN_TOKEN),
        "the token is never in a URL"
    );
    browser.screenshot(&shot("fleet.png")).await;
    browser.goto(&format!("{hub}/alerts")).await;
    browser.wait_text("main", "Stores out of touch (2)", WAIT).await;
    browser.screenshot(&shot("alerts.png")).await;

    // Find a product by name; its page shows every store's stock.
    browser.goto(&format!("{hub}/stock")).await;
    browser.type_into("#q", "espresso").await;
    browser.click_on("form[role=search] button").await;
    browser.wait_text("#results", "COFFEE-250", WAIT).await;
    browser.click_on("#results a").await;
    let cell = format!("#stock tr[data-store=\"{berlin}\"] td.on-hand");
    let before = on_hand(&browser, &cell).await;
    browser.screenshot(&shot("stock.png")).await;

    // A till sells 2 at the Berlin agent: the page shows it without a reload.
    let live = browser.find("[data-live]").await.expect("the live part");
    till_sale(&cluster, 2).await;
    browser.wait_text(&cell, &(before - 2).to_string(), WAIT).await;
    let updates = browser.attribute(&live, "data-updates").await;
    assert!(
        updates.is_some_and(|n| n.parse::<u32>().unwrap_or(0) >= 1),
        "the figure came by the live stream (the same element, updated), not by a reload"
    );

    // A product named like a script is shown as text, and runs nothing.
    browser.goto(&format!("{hub}/manage")).await;
    browser.type_into("#new-sku", "XSS-1").await;
    browser.type_into("#new-name", "<script>alert(1)</script>").await;
    browser.type_into("#new-price", "1.00").await;
    browser.click_on("form[action=\"/manage/products\"] button").await;
    let name = browser.wait_text("#name", "<script>", WAIT).await;
    assert_eq!(browser.text(&name).await, "<script>alert(1)</script>");
    assert!(browser.dialog_text().await.is_none(), "no script ran");
    assert!(browser.source().await.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    // Enroll a store: its token is shown once, with a copy button.
    browser.goto(&format!("{hub}/manage")).await;
    browser.screenshot(&shot("manage.png")).await;
    browser.type_into("#store-name", "Potsdam").await;
    browser.click_on("form[action=\"/manage/stores\"] button").await;
    let token = browser.wait_text("#new-token", "ss_", WAIT).await;
    let token = browser.text(&token).await;
    let copy = browser.find("button[data-copy]").await.expect("a copy button");
    assert!(
        browser.attribute(&copy, "hidden").await.is_none(),
        "the script shows it"
    );
    browser.screenshot(&shot("enrolled.png")).await;
    let (_, stores) = cluster.hub_get("/v1/admin/stores").await;
    let potsdam = stores
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "Potsdam"))
        .expect("Potsdam enrolled")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let pull = |secret: String| {
        let http = cluster.http.clone();
        let url = format!("{hub}/v1/sync/events?after=0&limit=1");
        async move {
            http.get(url)
                .bearer_auth(secret)
                .header("X-Shelfsync-Protocol", "1.0")
                .send()
                .await
                .expect("pull")
                .status()
                .as_u16()
        }
    };
    assert_eq!(pull(token.clone()).await, 200, "the token shown works");

    // Revoke it: the page asks first, then the hub refuses it.
    browser.goto(&format!("{hub}/manage")).await;
    browser
        .click_on(&format!("#stores tr[data-store=\"{potsdam}\"] button.danger"))
        .await;
    let asked = browser.accept_dialog().await;
    assert!(asked.contains("Revoke the token of Potsdam"), "{asked}");
    browser.wait_text(".notice.done", "Token revoked", WAIT).await;
    assert_eq!(pull(token).await, 401, "the revoked token is refused");

    // A channel token's session ends when the token is revoked: back to the sign-in page.
    let (status, created) = cluster
        .hub_post("/v1/admin/tokens", &json!({"name": "merchandiser"}))
        .await;
    assert_eq!(status, 201);
    browser.click_on("form.signout button").await;
    browser.wait_text("h1", "Sign in", WAIT).await;
    browser
        .type_into("#token", created["secret"].as_str().expect("secret"))
        .await;
    browser.click_on("form.card button[type=submit]").await;
    browser.wait_text("#q", "", WAIT).await;
    assert!(browser.url().await.ends_with("/stock"), "a channel token sees stock");
    let (status, _) = cluster
        .hub_post("/v1/admin/tokens/merchandiser/revoke", &json!({}))
        .await;
    assert_eq!(status, 204);
    browser.goto(&format!("{hub}/stock")).await;
    browser.wait_text(".notice.error", "no longer valid", WAIT).await;
    assert!(browser.url().await.contains("/sign-in"));

    // The store page: the status without a key, the rest with the manager key.
    let agent = cluster.stores[0].agent.process.url();
    browser.goto(&format!("{agent}/")).await;
    browser.wait_text("#link", "Online", WAIT).await;
    assert!(browser.find("#stock").await.is_none(), "no stock without the key");
    browser.click_on("main a[href=\"/sign-in\"]").await;
    browser.type_into("#token", TERMINAL_KEY).await;
    browser.click_on("form.card button[type=submit]").await;
    browser.wait_text(".notice.error", "the manager key", WAIT).await;
    browser.type_into("#token", MANAGER_KEY).await;
    browser.click_on("form.card button[type=submit]").await;
    browser.wait_text("#stock", "COFFEE-250", WAIT).await;
    browser.screenshot(&shot("store.png")).await;
    browser.resize(360, 800).await;
    browser.screenshot(&shot("store-360px.png")).await;
    browser.resize(1280, 900).await;

    // The hub stops: the page says offline, with the sales waiting, without a reload.
    cluster.kill_hub();
    till_sale(&cluster, 1).await;
    till_sale(&cluster, 1).await;
    browser.wait_text("#link", "Offline since", WAIT).await;
    browser
        .wait_text(
            "#link",
            "sales and stock changes waiting; they will be sent when the hub is back",
            WAIT,
        )
        .await;
    browser.screenshot(&shot("store-offline.png")).await;
}
