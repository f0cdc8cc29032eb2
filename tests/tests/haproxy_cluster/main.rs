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
    let Some(mut cluster) = HaCluster::start("one_hub_of_three_killed_behind_haproxy", seed(), &[]).await else {
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
    // Then no read failed (a refused connection, or a GET the dead hub never answered, is
    // retried on another hub) and at most the one write in flight at the kill did (the
    // proxy never re-sends a write: its client does)
    assert_eq!(failover.reads.failed, 0, "{}", failover.report());
    assert!(failover.writes.failed <= 1, "{}", failover.report());
    // and HAProxy takes the hub out, and reads, writes and push work again through it
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

/// A push stream through HAProxy outlives the hub's keep-alive period (15 s by default):
/// HAProxy's inactivity timeouts for it (`timeout client`/`timeout server`) must be longer,
/// or every idle stream would be cut and re-opened. The hubs here run with the default
/// keep-alive (the harness's 1 s would hide a too-short timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_push_stream_through_haproxy_stays_open_past_the_keep_alive_period() {
    let Some(cluster) = HaCluster::start(
        "an_idle_push_stream_through_haproxy_stays_open",
        seed(),
        &[("SHELFSYNC_HUB_SYNC__KEEP_ALIVE_SECS", "15")],
    )
    .await
    else {
        return;
    };
    let keep_alive = Duration::from_secs(15);
    let (mut stream, on) = failover::open_push_probe(&cluster).await;
    // Idle for longer than one keep-alive period: nothing may end the stream
    let idle = keep_alive + Duration::from_secs(5);
    let quiet = tokio::time::timeout(idle, stream.next(idle + Duration::from_secs(1))).await;
    assert!(
        quiet.is_err(),
        "the stream on {on} ended or carried an event while idle: {quiet:?}\n{}",
        cluster.haproxy.log_tail(20)
    );
    // and it still carries a write made now
    let position = failover::write_once(&cluster).await;
    let pushed = stream.next(Duration::from_secs(10)).await;
    assert!(
        pushed.as_ref().is_some_and(|p| p.id() == position),
        "the stream still delivers: {pushed:?}"
    );
}
