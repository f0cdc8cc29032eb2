//! `verify`, `backup` and `restore` on real SQLite files of a real (in-process) hub:
//! verify finds a garbled payload, a deleted row and a read model figure changed behind
//! the projector's back, naming where (and the binary exits non-zero); a backup taken
//! while writers keep appending restores into a fresh data directory that verifies, holds
//! every event acknowledged before the backup started, and serves; verify passes on the
//! running hub's files under that load; a restore refuses while a hub runs on the data
//! directory. `migrate` (the binary) applies every migration to a fresh data directory,
//! nothing the second time, and refuses while a hub runs. On PostgreSQL (skipped without a server, saying how to run it), verify checks
//! the shared log and names a garbled event.

use serde_json::json;
use shelfsync_common::testing::http::call;
use shelfsync_hub::backup::{backup, restore};
use shelfsync_hub::store::LogFile;
use shelfsync_hub::testing::storage::TestDatabase;
use shelfsync_hub::testing::{demo_product, demo_store, TestHub};
use shelfsync_hub::verify;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A stopped hub's data directory with the demo data and some deliveries.
async fn stopped_hub(dir: &Path, deliveries: u32) {
    let hub = TestHub::spawn_at(dir.to_owned(), true).await;
    hub.wait_ready().await;
    for n in 0..deliveries {
        hub.add_stock(demo_product(n as usize % 5), demo_store(n as usize % 3), 1 + n)
            .await;
    }
    hub.wait_ready().await;
    hub.stop().await;
}

/// A copy of `from` with `sql` run on its file `file`.
fn tampered(from: &Path, to: &Path, file: &str, sql: &str) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    let conn = rusqlite::Connection::open(to.join(file)).unwrap();
    assert_eq!(conn.execute(sql, []).unwrap(), 1, "{sql}");
}

fn problems(dir: &Path) -> Vec<String> {
    let report = verify::data_dir(dir, false).unwrap();
    report.problems.listed().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_garbled_event_a_gap_and_a_changed_figure() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("hub");
    stopped_hub(&good, 12).await;
    let report = verify::data_dir(&good, false).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(
        (report.events, report.head),
        (32, 32),
        "20 demo events and 12 deliveries"
    );

    let garbled = dir.path().join("garbled");
    tampered(
        &good,
        &garbled,
        "events.sqlite",
        "UPDATE events SET data = '{\"quantity\": \"lots\"' WHERE position = 25",
    );
    let found = problems(&garbled);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("position 25 (") && p.contains("does not decode")),
        "{found:#?}"
    );

    let gap = dir.path().join("gap");
    tampered(&good, &gap, "events.sqlite", "DELETE FROM events WHERE position = 27");
    let found = problems(&gap);
    assert!(
        found
            .iter()
            .any(|p| p == "positions 27..=27 are missing: the log goes from 26 to 28"),
        "{found:#?}"
    );

    let changed = dir.path().join("changed");
    let coffee_berlin = format!(
        "UPDATE stock SET on_hand = on_hand + 3 WHERE product_id = x'{}' AND store_id = x'{}'",
        hex(demo_product(0).as_bytes()),
        hex(demo_store(0).as_bytes())
    );
    tampered(&good, &changed, "read_model.sqlite", &coffee_berlin);
    let found = problems(&changed);
    let stream = format!("read model stock ({}, {}): on_hand is ", demo_product(0), demo_store(0));
    let line = found
        .iter()
        .find(|p| p.starts_with(&stream))
        .unwrap_or_else(|| panic!("{found:#?}"));
    let (is, gives) = figures(line);
    assert_eq!(is, gives + 3, "{line}");
    assert_eq!(found.len(), 1, "only the read model's figure was changed: {found:#?}");

    // The binary: exit 0 on the good copy, non-zero naming the position on the garbled one.
    let verify_cli = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_shelfsync-hub"))
            .args(["verify", "--data-dir"])
            .arg(dir)
            .output()
            .unwrap()
    };
    let ok = verify_cli(&good);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("verify: OK"), "{ok:?}");
    let bad = verify_cli(&garbled);
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(
        !bad.status.success() && out.contains("PROBLEM: position 25 ("),
        "{bad:?}"
    );
}

/// "on_hand is X, the fold of the log up to position P gives Y" -> (X, Y).
fn figures(line: &str) -> (i64, i64) {
    let after = |marker: &str| -> i64 {
        let rest = &line[line.find(marker).unwrap() + marker.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (after("on_hand is "), after(" gives "))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_write_load_restores_to_a_hub_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let hub = TestHub::spawn_at(data.clone(), true).await;
    hub.wait_ready().await;

    // Writers append deliveries until told to stop; each acknowledged position is kept.
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4usize {
        let (client, url, acked, stop) = (hub.client.clone(), hub.url.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let body = json!({
                    "product_id": demo_product((writer + n) % 5),
                    "store_id": demo_store(n % 3),
                    "quantity": 1 + n % 7,
                });
                let request = client
                    .post(format!("{url}/v1/inventory/stock"))
                    .bearer_auth(shelfsync_hub::testing::ADMIN)
                    .json(&body);
                let (status, written, _) = call(request).await;
                assert_eq!(status, 201, "{written}");
                acked.lock().unwrap().push(written["position"].as_u64().unwrap());
                n += 1;
            }
        }));
    }
    // Load running: wait until some hundreds of events are acknowledged.
    let loaded = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 300 && Instant::now() < loaded {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_backup: Vec<u64> = acked.lock().unwrap().clone();
    assert!(before_backup.len() >= 300, "the writers are writing");
    let copy = dir.path().join("backup");
    let manifest = {
        let (data, copy) = (data.clone(), copy.clone());
        tokio::task::spawn_blocking(move || backup(&data, &copy, false))
            .await
            .unwrap()
            .unwrap()
    };
    let during = acked.lock().unwrap().len() - before_backup.len();
    // verify on the running hub's own files, the writers still writing.
    let live = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || verify::data_dir(&data, false))
            .await
            .unwrap()
            .unwrap()
    };
    assert!(live.passed(), "{live}");
    // Still writing after the backup: the hub kept serving.
    let after_backup = acked.lock().unwrap().len();
    let until = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < after_backup + 50 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(
        acked.lock().unwrap().len() >= after_backup + 50,
        "the hub kept taking writes after the backup"
    );
    let last_acked = *before_backup.iter().max().unwrap();
    assert!(
        manifest.head >= last_acked,
        "head {} < acknowledged {last_acked}",
        manifest.head
    );
    eprintln!(
        "backup at head {}: {} events acknowledged before it, {during} while it ran",
        manifest.head,
        before_backup.len()
    );

    // A restore refuses while a hub runs on the directory.
    let refused = {
        let (copy, data) = (copy.clone(), data.clone());
        tokio::task::spawn_blocking(move || restore(&copy, &data, false))
            .await
            .unwrap()
    };
    let message = refused.expect_err("the hub is running").to_string();
    assert!(message.contains("is in use: stop the hub first"), "{message}");
    hub.stop().await;

    // Restored into a fresh directory: it verifies (restore checks), holds every event
    // acknowledged before the backup started, byte for byte, and serves.
    let fresh = dir.path().join("restored");
    let restored = restore(&copy, &fresh, false).unwrap();
    assert_eq!(restored.manifest.head, manifest.head);
    assert!(verify::data_dir(&fresh, false).unwrap().passed());
    let original = LogFile::open(&data.join(shelfsync_hub::EVENTS_FILE)).unwrap();
    let restored_log = LogFile::open(&fresh.join(shelfsync_hub::EVENTS_FILE)).unwrap();
    let original = original.events_after(0, usize::MAX >> 1).unwrap();
    let restored_events = restored_log.events_after(0, usize::MAX >> 1).unwrap();
    assert_eq!(restored_events.len() as u64, manifest.head);
    assert_eq!(
        restored_events[..],
        original[..restored_events.len()],
        "the same events at the same positions"
    );
    for position in &before_backup {
        assert!(
            *position <= manifest.head,
            "acknowledged event {position} is in the backup"
        );
    }
    let hub = TestHub::spawn_at(fresh.clone(), false).await;
    hub.wait_ready().await;
    assert_eq!(hub.head().await, manifest.head);
    let position = hub.add_stock(demo_product(0), demo_store(0), 1).await;
    assert_eq!(
        position,
        manifest.head + 1,
        "the restored hub appends after the backup's head"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_a_log_on_postgres() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let hub = TestHub::spawn_sharing(&db.url, true).await;
    for n in 0..5 {
        hub.add_stock(demo_product(n), demo_store(n % 3), 2).await;
    }
    hub.wait_ready().await;
    let report = verify::postgres(&db.url, &hub.data_dir, false).await.unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.events, hub.head().await);

    let client = db.connect().await;
    let garbled = client
        .execute(
            "UPDATE events SET data = '{\"quantity\": \"lots\"}' WHERE position = 22",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(garbled, 1);
    let report = verify::postgres(&db.url, &hub.data_dir, false).await.unwrap();
    let found = report.problems.listed();
    assert!(found.iter().any(|p| p.contains("position 22")), "{report}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_each_migration_once_and_refuses_while_a_hub_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let migrate = |data: &Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_shelfsync-hub"))
            .arg("migrate")
            .env("SHELFSYNC_HUB_DATA_DIR", data)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let (ok, out) = tokio::task::block_in_place(|| migrate(&data));
    assert!(ok, "{out}");
    assert!(
        out.contains("events.sqlite: applied 0001_event_store, 0002_store_stats, 0003_secrets"),
        "{out}"
    );
    assert!(out.contains("analytics.sqlite: applied "), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| migrate(&data));
    assert!(ok && out.matches("up to date").count() == 3, "{out}");

    let hub = TestHub::spawn_at(data.clone(), true).await;
    hub.wait_ready().await;
    let (ok, out) = tokio::task::block_in_place(|| migrate(&data));
    assert!(!ok && out.contains("is in use: stop the hub first"), "{out}");
    hub.stop().await;
    assert!(verify::data_dir(&data, false).unwrap().passed());
}
