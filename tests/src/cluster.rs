//! A fleet under test: one hub process, and per store a fault proxy and an agent process
//! that reaches the hub only through its proxy; plus the scenario's seed, the soak switch,
//! and the failure report (seed, data directory, log tails).
//!
//! Everything lives in one temporary directory, removed when the cluster drops, unless the
//! test failed (or `SHELFSYNC_E2E_KEEP=1`): then it is kept and its path printed, with the
//! processes' logs in it.

use crate::checker::{self, AgentRef, Expect, Report};
use crate::process::{AgentProcess, Endpoint, HubProcess, ADMIN_TOKEN};
use crate::workload::{http_client, Till, TillLog, WebLog, WebShop, Workload};
use serde_json::Value;
use shelfsync_common::testing::proxy::{FaultProxy, Mode};
use shelfsync_common::wire::sync::EnrolledStore;
use shelfsync_common::{ProductId, StoreId};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Whether the soak mode is on (`SHELFSYNC_SOAK=1`): more stores, longer, more faults.
pub fn soak() -> bool {
    std::env::var("SHELFSYNC_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A scenario's seed: `SHELFSYNC_SEED` when set (to replay a failure), else random.
pub fn seed() -> u64 {
    match std::env::var("SHELFSYNC_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SHELFSYNC_SEED must be a number, got {text:?}")),
        Err(_) => rand::random(),
    }
}

/// The demo stores' ids.
pub fn demo_stores() -> Vec<StoreId> {
    shelfsync_hub::seed::stores().iter().map(|s| s.id).collect()
}

/// The demo products' ids.
pub fn demo_products() -> Vec<ProductId> {
    shelfsync_hub::seed::products().iter().map(|p| p.id).collect()
}

/// One store's agent and the proxy in front of it.
pub struct Store {
    /// A name for messages (`berlin`, `hamburg`, ...).
    pub name: String,
    /// The store.
    pub id: StoreId,
    /// Between the agent and the hub.
    pub proxy: FaultProxy,
    /// The agent.
    pub agent: AgentProcess,
}

impl Store {
    /// For the checker.
    pub fn agent_ref(&self) -> AgentRef {
        AgentRef {
            name: self.name.clone(),
            store: self.id,
            url: self.agent.process.url(),
        }
    }
}

/// The fleet.
pub struct Cluster {
    /// The scenario's name.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// The hub.
    pub hub: HubProcess,
    /// The stores, in the order they were added.
    pub stores: Vec<Store>,
    /// For the test's own calls.
    pub http: reqwest::Client,
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    agent_env: Vec<(String, String)>,
    started: Instant,
}

/// Names for stores, in order.
const NAMES: [&str; 8] = [
    "berlin", "hamburg", "munich", "cologne", "leipzig", "dresden", "bremen", "essen",
];

impl Cluster {
    /// Starts a hub (demo data) with `hub_env` settings; prints the seed.
    pub async fn start(scenario: &str, seed: u64, hub_env: &[(&str, &str)]) -> Cluster {
        eprintln!(
            "[e2e] scenario {scenario}: seed {seed} (replay: SHELFSYNC_SEED={seed} cargo test -p shelfsync-tests --test faults {scenario}){}",
            if soak() { " [soak]" } else { "" }
        );
        let root = tempfile::Builder::new()
            .prefix(&format!("shelfsync-e2e-{scenario}-"))
            .tempdir()
            .expect("temp dir");
        let root_path = root.path().to_path_buf();
        let mut hub = HubProcess::new(&root_path, hub_env);
        hub.process.start().await;
        Cluster {
            scenario: scenario.into(),
            seed,
            hub,
            stores: Vec::new(),
            http: http_client(),
            root: Some(root),
            root_path,
            agent_env: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Settings every agent added from now on gets (`SHELFSYNC_EDGE_*`).
    pub fn set_agent_env(&mut self, env: &[(&str, &str)]) {
        self.agent_env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    }

    /// The temporary directory.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// The hub's current URL.
    pub fn hub_url(&self) -> String {
        self.hub.process.url()
    }

    /// Adds the agent of demo store `index` (0..3) with its demo token; starts it.
    pub async fn add_demo_store(&mut self, index: usize) -> usize {
        let id = demo_stores()[index];
        let token = self.hub.store_token(id);
        self.add_store(NAMES[index], id, &token).await
    }

    /// Enrolls a new store at the hub (admin API); returns its id and token.
    pub async fn enroll(&self, name: &str) -> (StoreId, String) {
        let response = self
            .http
            .post(format!("{}/v1/admin/stores", self.hub_url()))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("enroll a store");
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        let enrolled: EnrolledStore = response.json().await.expect("EnrolledStore");
        (enrolled.store.id, enrolled.token.expose().to_owned())
    }

    /// Adds (and starts) an agent for `id` behind a new proxy; returns its index.
    pub async fn add_store(&mut self, name: &str, id: StoreId, token: &str) -> usize {
        self.add_store_behind(name, id, token, Mode::Pass).await
    }

    /// Adds (and starts) an agent for `id` behind a new proxy that starts in `mode`.
    pub async fn add_store_behind(&mut self, name: &str, id: StoreId, token: &str, mode: Mode) -> usize {
        let proxy = FaultProxy::start(name, self.hub.process.addr()).await;
        if mode != Mode::Pass {
            proxy.set_mode(mode);
        }
        let env: Vec<(&str, &str)> = self.agent_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut agent = AgentProcess::new(&self.root_path, name, id, &proxy.url(), token, &env);
        agent.process.start().await;
        self.stores.push(Store {
            name: name.into(),
            id,
            proxy,
            agent,
        });
        self.stores.len() - 1
    }

    /// Waits (bounded) until every agent took its snapshot and follows the hub.
    pub async fn wait_bootstrapped(&self, within: Duration) {
        wait_bootstrapped(&self.http, &self.agent_refs(), within, || self.logs()).await;
    }

    /// Till number `n` at store `index`, seeded from the scenario's seed.
    pub fn till(&self, index: usize, n: usize, workload: Workload) -> Till {
        self.till_via(index, n, self.stores[index].agent.process.endpoint(), workload)
    }

    /// Till number `n` at store `index`, reaching its agent at `endpoint` (e.g. through a
    /// proxy).
    pub fn till_via(&self, index: usize, n: usize, endpoint: Endpoint, workload: Workload) -> Till {
        let store = &self.stores[index];
        Till::new(
            &format!("{}-{}-{n}", self.scenario, store.name),
            store.id,
            endpoint,
            demo_products(),
            self.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add((index * 64 + n) as u64 + 1),
            workload,
        )
    }

    /// SIGKILL the hub.
    pub fn kill_hub(&mut self) {
        eprintln!("[e2e] {:.1}s: SIGKILL the hub", self.elapsed());
        self.hub.process.kill9();
    }

    /// Starts the hub again on its data directory and points every proxy at it.
    pub async fn start_hub(&mut self) {
        self.hub.process.start().await;
        let addr = self.hub.process.addr();
        for store in &self.stores {
            store.proxy.set_upstream(addr);
        }
        eprintln!("[e2e] {:.1}s: hub up again at {addr}", self.elapsed());
    }

    /// Every proxy to `mode`.
    pub fn set_all(&self, mode: Mode) {
        for store in &self.stores {
            store.proxy.set_mode(mode.clone());
        }
    }

    /// Every proxy back to `Pass`.
    pub fn heal(&self) {
        eprintln!("[e2e] {:.1}s: heal every link", self.elapsed());
        self.set_all(Mode::Pass);
    }

    /// Seconds since the cluster started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Agents as the checker sees them.
    pub fn agent_refs(&self) -> Vec<AgentRef> {
        self.stores.iter().map(Store::agent_ref).collect()
    }

    /// A web shop at the hub over every store of the cluster, seeded from the scenario's seed.
    pub fn web_shop(&self, ops: usize) -> WebShop {
        WebShop::new(
            self.hub.process.endpoint(),
            self.stores.iter().map(|s| s.id).collect(),
            demo_products(),
            self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(7),
            ops,
        )
    }

    /// Heals every link, then runs the checker; panics with the problems, the seed and the
    /// processes' log tails when anything does not hold.
    pub async fn heal_and_check(&self, tills: &[TillLog], web: &[WebLog], expect: Expect) -> Report {
        self.heal();
        for till in tills {
            eprintln!("[e2e] till at {:?}: {}", till.store, till.summary());
        }
        for shop in web {
            eprintln!("[e2e] {}", shop.summary());
        }
        let started = Instant::now();
        let result = checker::check(
            &[self.hub_url()],
            &checker::LogSource::File(self.hub.events_file()),
            &self.agent_refs(),
            tills,
            web,
            &expect,
        )
        .await;
        match result {
            Ok(report) => {
                eprintln!(
                    "[e2e] {} (check took {:.1}s)",
                    report.summary(),
                    started.elapsed().as_secs_f64()
                );
                for store in &self.stores {
                    eprintln!("[e2e] {}", store.proxy.summary());
                }
                eprintln!(
                    "[e2e] scenario {} checked after {:.1}s (seed {})",
                    self.scenario,
                    self.elapsed(),
                    self.seed
                );
                report
            }
            Err(problems) => failed_check(&self.scenario, self.seed, &problems, &self.logs()),
        }
    }

    /// The tails of every process's stderr, and the proxies' counters.
    pub fn logs(&self) -> String {
        let mut out = format!("--- hub stderr (tail) ---\n{}\n", self.hub.process.stderr_tail(40));
        for store in &self.stores {
            out.push_str(&format!(
                "--- agent {} stderr (tail) ---\n{}\n{}\n",
                store.name,
                store.agent.process.stderr_tail(40),
                store.proxy.summary()
            ));
        }
        out.push_str(&format!("(all logs under {})", self.root_path.display()));
        out
    }

    /// GET on the hub with the admin token.
    pub async fn hub_get(&self, path: &str) -> (u16, Value) {
        checker::get_json(&self.http, &format!("{}{path}", self.hub_url()), ADMIN_TOKEN)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// POST on the hub with the admin token.
    pub async fn hub_post(&self, path: &str, body: &Value) -> (u16, Value) {
        checker::post_json(&self.http, &format!("{}{path}", self.hub_url()), ADMIN_TOKEN, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits (bounded: 30 s) until `check` holds for agent `index`'s status; panics with
    /// `what`, the last status and the logs otherwise.
    pub async fn wait_status(
        &self,
        index: usize,
        what: &str,
        check: impl Fn(&shelfsync_common::wire::edge::AgentStatus) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = checker::agent_status(&self.http, &self.stores[index].agent.process.url()).await;
            if status.as_ref().is_ok_and(&check) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {what} did not happen within 30 s: {status:?}\n{}",
                self.stores[index].name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of a counter in the hub's `/metrics`, summed over its labels (0 when not
    /// recorded yet).
    pub async fn hub_metric(&self, name: &str) -> f64 {
        self.hub_metric_labelled(name, "").await
    }

    /// The value of a counter in the hub's `/metrics`, summed over the series whose labels
    /// contain `label` (e.g. `result="duplicate"`).
    pub async fn hub_metric_labelled(&self, name: &str, label: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.hub_url()))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .filter(|line| line.split([' ', '{']).next() == Some(name) && line.contains(label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for store in &mut self.stores {
            store.agent.process.kill9();
        }
        self.hub.process.kill9();
        keep_if_failed(&mut self.root, &self.scenario, self.seed);
        if std::thread::panicking() {
            eprintln!(
                "[e2e] scenario {} FAILED with seed {}: replay with SHELFSYNC_SEED={} cargo test -p shelfsync-tests --test faults {}",
                self.scenario, self.seed, self.seed, self.scenario
            );
        }
    }
}

/// Panics with a failed check's problems, the seed and the processes' log tails.
pub fn failed_check(scenario: &str, seed: u64, problems: &str, logs: &str) -> ! {
    panic!("scenario {scenario} (seed {seed}) failed its check:\n{problems}\n\n{logs}")
}

/// Keeps a scenario's temporary directory (data files and full logs) and prints its path
/// when the test is failing or `SHELFSYNC_E2E_KEEP` is set; else it is removed on drop.
pub fn keep_if_failed(root: &mut Option<tempfile::TempDir>, scenario: &str, seed: u64) {
    let keep = std::thread::panicking() || std::env::var_os("SHELFSYNC_E2E_KEEP").is_some();
    if let Some(root) = root.take_if(|_| keep) {
        eprintln!(
            "[e2e] scenario {scenario} (seed {seed}): data and logs kept in {}",
            root.keep().display()
        );
    }
}

/// Waits (bounded) until every one of `agents` took its snapshot; panics with `logs()`
/// otherwise.
pub async fn wait_bootstrapped(
    http: &reqwest::Client,
    agents: &[AgentRef],
    within: Duration,
    logs: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    for agent in agents {
        loop {
            let status = checker::agent_status(http, &agent.url).await;
            if status.as_ref().is_ok_and(|s| s.bootstrapped) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not bootstrap within {within:?}: {status:?}\n{}",
                agent.name,
                logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
