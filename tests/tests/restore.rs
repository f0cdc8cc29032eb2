//! The hub restored from an older backup, end to end with real processes: the agents whose
//! cursors are ahead of the restored hub notice, send their own events again, re-seed from
//! a new snapshot and say so; the checker finds nothing a till was told lost or doubled.
//! `SHELFSYNC_SEED=<seed>` replays a run's choices (`docs/testing.md`).
//!
//! The backup is taken with `shelfsync-hub backup` while the hub serves and two stores
//! sell; the restore is `shelfsync-hub restore` on the stopped hub, as an operator does it.

#![cfg(unix)]

use serde_json::json;
use shelfsync_common::testing::proxy::Mode;
use shelfsync_common::wire::edge::AgentStatus;
use shelfsync_tests::checker::{self, Expect};
use shelfsync_tests::cluster::{seed, Cluster};
use shelfsync_tests::workload::{Progress, Workload};
use std::path::Path;
use std::time::{Duration, Instant};

/// Each of the three tills' operations.
const OPS: usize = 90;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_restored_from_an_older_backup_while_stores_sell() {
    let mut cluster = Cluster::start("hub_restored_from_an_older_backup_while_stores_sell", seed(), &[]).await;
    for index in 0..3 {
        cluster.add_demo_store(index).await;
    }
    cluster.wait_bootstrapped(Duration::from_secs(30)).await;
    // Tills only, no web shop: what the hub itself recorded after the backup is lost with
    // the restore (nobody else holds it); the stores' sales must not be.
    let workload = Workload {
        ops: OPS,
        pause_ms: (5, 20),
        ..Workload::default()
    };
    let tills: Vec<_> = (0..3).map(|index| cluster.till(index, 0, workload.clone())).collect();
    let progress: Vec<Progress> = tills.iter().map(|till| till.progress()).collect();
    let tasks: Vec<_> = tills.into_iter().map(|till| tokio::spawn(till.run())).collect();
    let total = OPS * 3;
    wait_for(&progress, total / 5).await;

    // The third store sells offline from before the backup until after the restore: its
    // backlog then fills the restored hub's positions past the others' old cursors.
    let offline = 2;
    cluster.stores[offline].proxy.set_mode(Mode::Blackhole);
    let backup = cluster.root().join("hub-backup");
    let backup_head = back_up(&cluster, &backup).await;

    // Sales after the backup reach the hub; the two online agents follow it past the
    // backup's head.
    wait_for(&progress, total * 2 / 5).await;
    for index in 0..2 {
        cluster
            .wait_status(index, "its cursor passing the backup's head", |s| {
                s.cursor > backup_head + 5
            })
            .await;
    }
    restore(&mut cluster, &backup).await;
    eprintln!(
        "[e2e] {:.1}s: restored the hub to position {backup_head}",
        cluster.elapsed()
    );
    cluster.stores[offline].proxy.set_mode(Mode::Pass);

    // Both ahead agents re-sync and say so, in their status and in the hub's fleet view.
    for index in 0..2 {
        cluster
            .wait_status(index, "the re-sync after the restore", |s| {
                s.resynced.as_ref().is_some_and(|r| r.reason == "hub_restored")
            })
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, fleet) = cluster.hub_get("/v1/admin/fleet").await;
        let shown = |index: usize| {
            fleet["stores"].as_array().into_iter().flatten().any(|store| {
                store["id"] == json!(cluster.stores[index].id)
                    && store["heartbeat"]["resynced"]["reason"] == "hub_restored"
            })
        };
        if shown(0) && shown(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet view does not show the re-syncs: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut logs = Vec::new();
    for task in tasks {
        logs.push(
            tokio::time::timeout(Duration::from_secs(300), task)
                .await
                .expect("a till did not finish")
                .expect("a till panicked"),
        );
    }
    cluster.heal_and_check(&logs, &[], Expect::default()).await;
    for index in 0..2 {
        let status = agent_status(&cluster, index).await.expect("the agent's status");
        let resynced = status.resynced.expect("re-synced");
        eprintln!(
            "[e2e] {}: re-synced at {} from position {}, {} events uploaded again",
            cluster.stores[index].name, resynced.at, resynced.position, resynced.reuploaded
        );
    }
    std::fs::remove_dir_all(&backup).ok();
}

/// Waits (bounded) until the tills together have `n` acknowledged operations.
async fn wait_for(progress: &[Progress], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.iter().map(Progress::acked).sum::<usize>() < n {
        assert!(Instant::now() < deadline, "the tills did not make {n} operations");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn agent_status(cluster: &Cluster, index: usize) -> Result<AgentStatus, String> {
    checker::agent_status(&cluster.http, &cluster.stores[index].agent.process.url()).await
}

/// Takes a backup into `to` with `shelfsync-hub backup` while the hub serves; returns
/// the copied log's head (from the backup's manifest).
async fn back_up(cluster: &Cluster, to: &Path) -> u64 {
    eprintln!("[e2e] {:.1}s: back up the hub (serving)", cluster.elapsed());
    let target = to.to_string_lossy();
    let (status, out, err) = cluster
        .hub
        .process
        .run_once("backup", &["backup", "--to", &target], &[])
        .await;
    assert!(
        status.is_some_and(|s| s.success()),
        "backup failed: {status:?}\n{out}\n{err}"
    );
    let manifest = std::fs::read_to_string(to.join(shelfsync_hub::backup::MANIFEST_FILE)).expect("the manifest");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("a JSON manifest");
    manifest["head"].as_u64().expect("the backup's head")
}

/// Stops the hub, puts the backup `from` back with `shelfsync-hub restore`, starts it again.
async fn restore(cluster: &mut Cluster, from: &Path) {
    cluster.hub.process.terminate().await;
    let source = from.to_string_lossy();
    let (status, out, err) = cluster
        .hub
        .process
        .run_once("restore", &["restore", "--from", &source], &[])
        .await;
    assert!(
        status.is_some_and(|s| s.success()),
        "restore failed: {status:?}\n{out}\n{err}"
    );
    cluster.start_hub().await;
}
