//! Three `shelfsync-hub` processes on one fresh PostgreSQL database behind a real
//! HAProxy (run from `installers/haproxy.cfg`), three `shelfsync-edge` agents with their
//! tills and two web shops, all reaching the hubs only through HAProxy. One hub is
//! SIGKILLed in the middle of the trading and started again; the failover's cost is
//! measured and printed (`failover.rs`; the figures are in docs/benchmarks.md). Then the
//! project's checker proves, on every hub, that every acknowledged write is in the log
//! (read from PostgreSQL) exactly once, every agent converged, the fleet view is right,
//! and each hub's read model is the fold of the log.
//!
//! Skipped with a message without `haproxy` or a PostgreSQL server; a failure instead
//! under `SHELFSYNC_REQUIRE_SERVICES=1` (as in CI, which installs haproxy).

#![cfg(unix)]

mod failover;

use shelfsync_tests::checker::Expect;
use shelfsync_tests::cluster::seed;
use shelfsync_tests::ha_cluster::HaCluster;
use shelfsync_tests::workload::Workload;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hub_of_three_killed_behind_haproxy_loses_no_acknowledged_write() {
    let Some(mut cluster) = HaCluster::start("one_hub_of_three_killed_behind_haproxy", seed()).await else {
        return;
    };
    for index in 0..3 {
        cluster.add_demo_store(index).await;
    }
    cluster.wait_bootstrapped(Duration::from_secs(60)).await;

    // Given three stores' tills and two web shops trading through HAProxy
    let workload = Workload {
        ops: 250,
        pause_ms: (20, 80),
        ..Workload::default()
    };
    let tills: Vec<_> = (0..3).map(|i| cluster.till(i, workload.clone())).collect();
    let progress: Vec<_> = tills.iter().map(|t| t.progress()).collect();
    let tills: Vec<_> = tills.into_iter().map(|t| tokio::spawn(t.run())).collect();
    let shops: Vec<_> = (0..2).map(|n| tokio::spawn(cluster.web_shop(n, 300).run())).collect();
    for till in &progress {
        assert!(
            till.wait_for(workload.ops / 3, Duration::from_secs(60)).await,
            "the tills did not get a third through their work within 60 s\n{}",
            cluster.logs()
        );
    }

    // When the hub carrying a push stream is SIGKILLed in the middle
    let failover = failover::kill_one_and_measure(&mut cluster).await;
    eprintln!("{}", failover.report());
    // Then HAProxy takes it out, and reads, writes and push work again through it
    let marked_down = failover.marked_down.expect("HAProxy marks the killed hub DOWN");
    assert!(marked_down < Duration::from_secs(5), "{}", failover.report());
    assert!(failover.reads.working_again() < 5.0, "{}", failover.report());
    assert!(failover.writes.working_again() < 5.0, "{}", failover.report());
    let push = failover.push.expect("a write made after the kill is pushed");
    assert!(push < Duration::from_secs(5), "{}", failover.report());
    assert!(
        !failover.push_moved_to.is_empty(),
        "the push stream on the killed hub ended and was re-opened"
    );

    // When it is started again (same data directory, same port), HAProxy routes to it
    cluster.restart_hub(failover.victim).await;
    let back = failover::back_in_rotation(&cluster, failover.victim, Duration::from_secs(15)).await;
    if let Some(back) = back {
        eprintln!("[e2e] the restarted hub is back in HAProxy's rotation after {back:.2} s");
    }
    assert!(
        back.is_some(),
        "HAProxy routes to the restarted hub again\n{}",
        cluster.logs()
    );

    // Then, once the trading is over, everything acknowledged is there once and all agree
    let mut till_logs = Vec::new();
    for till in tills {
        till_logs.push(till.await.expect("a till"));
    }
    let mut web_logs = Vec::new();
    for shop in shops {
        web_logs.push(shop.await.expect("a web shop"));
    }
    web_logs.push(failover.acked);
    let report = cluster.check(&till_logs, &web_logs, Expect::default()).await;
    assert!(report.head > 0);
}
