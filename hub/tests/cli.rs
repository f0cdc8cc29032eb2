//! The `shelfsync-hub store` commands, run as the real binary against a real hub.

use shelfsync_hub::testing::{TestHub, ADMIN};
use std::process::Command;

fn hub_cli(hub: &TestHub, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shelfsync-hub"))
        .args(args)
        .args(["--hub-url", &hub.url])
        .env("SHELFSYNC_HUB_ADMIN_TOKEN", ADMIN)
        // A user's error is one line whatever the environment asks for.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run shelfsync-hub");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_are_enrolled_listed_and_revoked_from_the_command_line() {
    let hub = TestHub::spawn().await;
    let (ok, out, err) = tokio::task::block_in_place(|| hub_cli(&hub, &["store", "add", "Cologne Ehrenfeld"]));
    assert!(ok, "{out}{err}");
    let id = out.split_whitespace().nth(1).expect("store id").to_owned();
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .to_owned();

    let pull = |token: &str| {
        hub.client
            .get(format!("{}/v1/sync/events?after=0&limit=1", hub.url))
            .bearer_auth(token)
            .header("x-shelfsync-protocol", "1.0")
            .send()
    };
    assert_eq!(pull(&token).await.unwrap().status(), 200);

    let (ok, out, err) = tokio::task::block_in_place(|| hub_cli(&hub, &["store", "list"]));
    assert!(
        ok && out.lines().any(|l| l.starts_with(&id) && l.contains("active")),
        "{out}{err}"
    );

    let (ok, out, err) = tokio::task::block_in_place(|| hub_cli(&hub, &["store", "revoke", &id]));
    assert!(ok, "{out}{err}");
    assert_eq!(pull(&token).await.unwrap().status(), 401, "a revoked token is refused");
    let (_, out, _) = tokio::task::block_in_place(|| hub_cli(&hub, &["store", "list"]));
    assert!(
        out.lines().any(|l| l.starts_with(&id) && l.contains("revoked")),
        "{out}"
    );

    let (ok, _, err) =
        tokio::task::block_in_place(|| hub_cli(&hub, &["store", "revoke", "01935701-0000-7000-8000-0000000000ff"]));
    assert!(!ok && err.contains("store_not_found"), "{err}");
}

/// A failed command: exit code 1 and one line on stderr, no backtrace.
fn failed_in_one_line(ok: bool, err: &str) {
    assert!(!ok, "{err}");
    assert_eq!(err.lines().count(), 1, "one line, no backtrace:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_with_the_same_name_needs_to_be_asked_for() {
    let hub = TestHub::spawn().await;
    let add = |args: &[&str]| tokio::task::block_in_place(|| hub_cli(&hub, args));
    let (ok, out, err) = add(&["store", "add", "Bonn Zentrum"]);
    assert!(ok, "{out}{err}");
    let first = out.split_whitespace().nth(1).expect("store id").to_owned();

    let (ok, out, err) = add(&["store", "add", "Bonn Zentrum"]);
    failed_in_one_line(ok, &err);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("409 store_name_taken") && err.contains(&first), "{err}");

    let (ok, out, err) = add(&["store", "add", "Bonn Zentrum", "--allow-duplicate-name"]);
    assert!(ok, "{out}{err}");
    let second = out.split_whitespace().nth(1).expect("store id").to_owned();
    assert_ne!(first, second);
    let (_, list, _) = add(&["store", "list"]);
    assert_eq!(list.matches("Bonn Zentrum").count(), 2, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_url_without_a_scheme_says_so() {
    let hub = TestHub::spawn().await;
    let output = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_shelfsync-hub"))
            .args(["store", "list", "--hub-url", hub.url.trim_start_matches("http://")])
            .env("SHELFSYNC_HUB_ADMIN_TOKEN", ADMIN)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run shelfsync-hub")
    });
    let err = String::from_utf8_lossy(&output.stderr);
    failed_in_one_line(output.status.success(), &err);
    assert!(err.contains("--hub-url must start with http:// or https://"), "{err}");
}
