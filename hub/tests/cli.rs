//! The `shelfsync-hub store` commands, run as the real binary against a real hub.

mod support;

use std::process::Command;
use support::{spawn_hub, ADMIN};

fn hub_cli(hub: &support::TestHub, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shelfsync-hub"))
        .args(args)
        .args(["--hub-url", &hub.url])
        .env("SHELFSYNC_HUB_ADMIN_TOKEN", ADMIN)
        .env("RUST_BACKTRACE", "0")
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
    let hub = spawn_hub().await;
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
