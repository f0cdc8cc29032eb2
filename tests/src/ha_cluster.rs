//! Several hubs on one PostgreSQL database behind a real HAProxy, as
//! `docs/operations.md` tells operators to run them: every agent, till-facing workload and
//! web client reaches the hubs only through HAProxy; the test (and the checker) may also
//! talk to each hub directly.
//!
//! The database is a fresh one per test ([`TestDatabase`]: made on the local server,
//! dropped at the end). The first hub runs `shelfsync-hub demo` (it seeds the demo data
//! into the shared log and writes the demo stores' tokens into its data directory); the
//! others run `shelfsync-hub` on the same database, each with its own data directory (its
//! read model). All three start at once, so their migrations race as in a real roll-out.
//! A hub keeps its port across restarts ([`crate::process::Process::keep_port`]), since
//! HAProxy's server list names it.
//!
//! Without `haproxy` or a PostgreSQL server the test is skipped with a message saying how
//! to run it, and fails instead under `SHELFSYNC_REQUIRE_SERVICES=1` (as in CI).

use crate::checker::{self, AgentRef, Expect, LogSource, Report};
use crate::cluster::{self, demo_products, demo_stores, failed_check, keep_if_failed};
use crate::haproxy::{self, Haproxy};
use crate::process::{AgentProcess, Endpoint, HubProcess};
use crate::workload::{http_client, Till, TillLog, WebLog, WebShop, Workload};
use shelfsync_common::StoreId;
use shelfsync_hub::testing::storage::TestDatabase;
use std::path::Path;
use std::time::{Duration, Instant};

/// Store names, in the demo's order.
const NAMES: [&str; 3] = ["berlin", "hamburg", "munich"];

/// One store's agent, talking to HAProxy.
pub struct HaStore {
    /// `berlin`, ...
    pub name: String,
    /// The store.
    pub id: StoreId,
    /// The agent.
    pub agent: AgentProcess,
}

/// The fleet: the hubs, HAProxy, the agents, the database.
pub struct HaCluster {
    /// The scenario's name.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// The hubs (`hub1` seeds the demo data).
    pub hubs: Vec<HubProcess>,
    /// HAProxy in front of them.
    pub haproxy: Haproxy,
    /// The stores' agents.
    pub stores: Vec<HaStore>,
    /// For the test's own calls.
    pub http: reqwest::Client,
    db: TestDatabase,
    root: Option<tempfile::TempDir>,
    root_path: std::path::PathBuf,
    started: Instant,
}

/// Says why the test cannot run; panics instead under `SHELFSYNC_REQUIRE_SERVICES=1`.
fn skip(message: &str) {
    let required = std::env::var_os("SHELFSYNC_REQUIRE_SERVICES").is_some_and(|v| v == "1");
    assert!(!required, "{message}");
    eprintln!("SKIPPED: {message}");
}

impl HaCluster {
    /// Three hubs on a fresh database behind HAProxy, the demo data seeded and every hub
    /// at the same head; `None` (after a message) when `haproxy` or PostgreSQL is missing.
    /// `hub_env` adds `SHELFSYNC_HUB_*` settings to every hub.
    pub async fn start(scenario: &str, seed: u64, hub_env: &[(&str, &str)]) -> Option<HaCluster> {
        eprintln!(
            "[e2e] scenario {scenario}: seed {seed} (replay: SHELFSYNC_SEED={seed} cargo test -p shelfsync-tests --test haproxy_cluster)"
        );
        let Some(binary) = haproxy::find() else {
            skip("this test needs HAProxy: apt-get install haproxy (or set SHELFSYNC_HAPROXY to its binary)");
            return None;
        };
        let db = TestDatabase::create().await?;
        let root = tempfile::Builder::new()
            .prefix(&format!("shelfsync-e2e-{scenario}-"))
            .tempdir()
            .expect("temp dir");
        let root_path = root.path().to_path_buf();
        let mut env = vec![
            ("SHELFSYNC_HUB_STORAGE", "postgres"),
            ("SHELFSYNC_HUB_POSTGRES__DATABASE_URL", db.url.as_str()),
        ];
        env.extend_from_slice(hub_env);
        let mut hubs: Vec<HubProcess> = (1..=3)
            .map(|n| HubProcess::named(&root_path, &format!("hub{n}"), n == 1, &env))
            .collect();
        let [first, second, third] = &mut hubs[..] else {
            unreachable!("three hubs")
        };
        tokio::join!(first.process.start(), second.process.start(), third.process.start());
        for hub in &mut hubs {
            hub.process.keep_port();
        }
        let addrs: Vec<_> = hubs.iter().map(|h| h.process.addr()).collect();
        let haproxy = Haproxy::start(&binary, &root_path, &addrs).await;
        let cluster = HaCluster {
            scenario: scenario.into(),
            seed,
            hubs,
            haproxy,
            stores: Vec::new(),
            http: http_client(),
            db,
            root: Some(root),
            root_path,
            started: Instant::now(),
        };
        cluster.wait_seeded().await;
        Some(cluster)
    }

    /// Waits until the seed is written (the demo stores' tokens are on disk) and every hub
    /// shows the same head twice in a row.
    async fn wait_seeded(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        loop {
            let tokens = demo_stores()
                .iter()
                .all(|s| shelfsync_hub::seed::store_token_path(&self.hubs[0].data_dir, *s).exists());
            let mut heads = Vec::new();
            for url in self.hub_urls() {
                heads.push(
                    checker::hub_positions(&self.http, &url)
                        .await
                        .ok()
                        .map(|(head, _)| head),
                );
            }
            let same = heads.windows(2).all(|w| w[0] == w[1]) && heads[0].is_some_and(|h| h > 0);
            if tokens && same && last == Some(heads.clone()) {
                return;
            }
            last = (tokens && same).then_some(heads.clone());
            assert!(
                Instant::now() < deadline,
                "the hubs did not agree on the seeded log within 30 s: {heads:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The temporary directory.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// Each hub's own URL (not through HAProxy).
    pub fn hub_urls(&self) -> Vec<String> {
        self.hubs.iter().map(|h| h.process.url()).collect()
    }

    /// The URL agents and web clients use.
    pub fn front_url(&self) -> String {
        self.haproxy.url.clone()
    }

    /// The index of the hub HAProxy names `name` (`hub2` is 1).
    pub fn hub_index(&self, name: &str) -> Option<usize> {
        let n: usize = name.strip_prefix("hub")?.parse().ok()?;
        (1..=self.hubs.len()).contains(&n).then(|| n - 1)
    }

    /// Demo store `index` (0..3) and its store token (written by the first hub).
    pub fn demo_store(&self, index: usize) -> (StoreId, String) {
        let id = demo_stores()[index];
        (id, self.hubs[0].store_token(id))
    }

    /// Starts the agent of demo store `index` (0..3) with its demo token, reaching the
    /// hubs through HAProxy.
    pub async fn add_demo_store(&mut self, index: usize) {
        let (id, token) = self.demo_store(index);
        let mut agent = AgentProcess::new(&self.root_path, NAMES[index], id, &self.front_url(), &token, &[]);
        agent.process.start().await;
        self.stores.push(HaStore {
            name: NAMES[index].into(),
            id,
            agent,
        });
    }

    /// Waits (bounded) until every agent took its snapshot.
    pub async fn wait_bootstrapped(&self, within: Duration) {
        cluster::wait_bootstrapped(&self.http, &self.agent_refs(), within, || self.logs()).await;
    }

    /// Till number `n` at store `index`, seeded from the scenario's seed.
    pub fn till(&self, index: usize, workload: Workload) -> Till {
        let store = &self.stores[index];
        Till::new(
            &format!("{}-{}", self.scenario, store.name),
            store.id,
            store.agent.process.endpoint(),
            demo_products(),
            self.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(index as u64 + 1),
            workload,
        )
    }

    /// A web shop through HAProxy over every store, seeded from the scenario's seed.
    pub fn web_shop(&self, n: u64, ops: usize) -> WebShop {
        WebShop::new(
            Endpoint::fixed(self.front_url()),
            self.stores.iter().map(|s| s.id).collect(),
            demo_products(),
            self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(7 + n),
            ops,
        )
    }

    /// SIGKILL hub `index`.
    pub fn kill_hub(&mut self, index: usize) {
        eprintln!("[e2e] {:.1}s: SIGKILL hub{}", self.elapsed(), index + 1);
        self.hubs[index].process.kill9();
    }

    /// Starts hub `index` again, on its data directory and its port.
    pub async fn restart_hub(&mut self, index: usize) {
        self.hubs[index].process.start().await;
        eprintln!(
            "[e2e] {:.1}s: hub{} up again at {}",
            self.elapsed(),
            index + 1,
            self.hubs[index].process.url()
        );
    }

    /// Seconds since the cluster started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Agents as the checker sees them.
    pub fn agent_refs(&self) -> Vec<AgentRef> {
        self.stores
            .iter()
            .map(|s| AgentRef {
                name: s.name.clone(),
                store: s.id,
                url: s.agent.process.url(),
            })
            .collect()
    }

    /// Runs the checker on every hub, the log read from PostgreSQL; panics with the
    /// problems, the seed and the processes' log tails when anything does not hold.
    pub async fn check(&self, tills: &[TillLog], web: &[WebLog], expect: Expect) -> Report {
        for till in tills {
            eprintln!("[e2e] till at {:?}: {}", till.store, till.summary());
        }
        for shop in web {
            eprintln!("[e2e] {}", shop.summary());
        }
        let source = LogSource::Postgres(self.db.url.clone());
        match checker::check(&self.hub_urls(), &source, &self.agent_refs(), tills, web, &expect).await {
            Ok(report) => {
                eprintln!("[e2e] {}", report.summary());
                eprintln!(
                    "[e2e] scenario {} checked on {} hubs after {:.1}s (seed {})",
                    self.scenario,
                    self.hubs.len(),
                    self.elapsed(),
                    self.seed
                );
                report
            }
            Err(problems) => failed_check(&self.scenario, self.seed, &problems, &self.logs()),
        }
    }

    /// The tails of every process's stderr.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for hub in &self.hubs {
            out.push_str(&format!(
                "--- {} stderr (tail) ---\n{}\n",
                hub_label(hub),
                hub.process.stderr_tail(30)
            ));
        }
        for store in &self.stores {
            out.push_str(&format!(
                "--- agent {} stderr (tail) ---\n{}\n",
                store.name,
                store.agent.process.stderr_tail(30)
            ));
        }
        out.push_str(&format!("--- haproxy (tail) ---\n{}\n", self.haproxy.log_tail(30)));
        out.push_str(&format!("(all logs under {})", self.root_path.display()));
        out
    }
}

fn hub_label(hub: &HubProcess) -> String {
    hub.data_dir
        .file_name()
        .map_or_else(|| "hub".into(), |n| n.to_string_lossy().into_owned())
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        for store in &mut self.stores {
            store.agent.process.kill9();
        }
        for hub in &mut self.hubs {
            hub.process.kill9();
        }
        keep_if_failed(&mut self.root, &self.scenario, self.seed);
    }
}
