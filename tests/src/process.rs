//! Real `shelfsync-hub` and `shelfsync-edge` processes, each on its own data directory.
//!
//! A process is started on `127.0.0.1:0` and says where it listens on stdout
//! (`shelfsync hub listening on http://ADDR`, `shelfsync edge agent listening on
//! http://ADDR`); the harness waits (bounded) for that line rather than guessing ports or
//! sleeping. Stdout and stderr are drained into files beside the data directory
//! (`<label>-<n>.stdout|stderr`, one pair per start) so that a failing test can show the
//! tail. A process can be killed with SIGKILL, stopped with SIGTERM, and started again on
//! the same data directory; it is killed and reaped when its handle drops, so a failing
//! test never leaves a process behind. A test that kills a process while it starts up
//! starts it without waiting for the line ([`Process::start_unannounced`]); an operator
//! command on the same files runs to its end with [`Process::run_once`].
//!
//! A restarted process gets a new port. Agents reach the hub through a
//! [`FaultProxy`](shelfsync_common::testing::proxy::FaultProxy) whose port stays fixed (the proxy is pointed
//! at the hub's new port); tills reach an agent through its [`Endpoint`], which is
//! updated when the agent restarts.

use shelfsync_common::StoreId;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The admin token of every hub the harness starts.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";
/// The tills' key of every agent the harness starts.
pub const TERMINAL_KEY: &str = "e2e-terminal-key-0123456789abcdef";
/// The operator's key of every agent the harness starts.
pub const MANAGER_KEY: &str = "e2e-manager-key-0123456789abcdef";
/// Longest wait for a process to say where it listens.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a process to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// A URL that follows a process across restarts (cheap to clone, shared).
#[derive(Debug, Clone, Default)]
pub struct Endpoint(Arc<RwLock<String>>);

impl Endpoint {
    /// An endpoint that never moves (e.g. a proxy's).
    pub fn fixed(url: String) -> Endpoint {
        Endpoint(Arc::new(RwLock::new(url)))
    }

    /// The current base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, url: String) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = url;
    }
}

/// One running child process, killed and reaped on drop.
struct Running {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How to start one kind of process.
#[derive(Debug, Clone)]
struct Spec {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Environment prefix to scrub from the inherited environment.
    scrub: &'static str,
    /// The stdout line prefix followed by the URL.
    announce: &'static str,
}

impl Spec {
    /// The program with `args`, its environment scrubbed of the developer's settings and
    /// set to the spec's, stdin closed.
    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.program);
        command.args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with(self.scrub) {
                command.env_remove(name);
            }
        }
        // Plain logs in the files.
        command.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info,tokio_cron_scheduler=warn");
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.stdin(Stdio::null());
        command
    }
}

/// A process that can be stopped and started again on the same files.
pub struct Process {
    label: String,
    dir: PathBuf,
    spec: Spec,
    running: Option<Running>,
    starts: usize,
    endpoint: Endpoint,
}

impl Process {
    fn new(label: &str, dir: &Path, spec: Spec) -> Self {
        Self {
            label: label.into(),
            dir: dir.to_path_buf(),
            spec,
            running: None,
            starts: 0,
            endpoint: Endpoint::default(),
        }
    }

    /// The base URL of the current (or last) start.
    pub fn url(&self) -> String {
        self.endpoint.url()
    }

    /// The shared endpoint that follows restarts.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// The listen address of the current (or last) start.
    pub fn addr(&self) -> SocketAddr {
        let url = self.url();
        url.trim_start_matches("https://")
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|e| panic!("{}: bad address {}: {e}", self.label, self.url()))
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.running
            .as_mut()
            .is_some_and(|r| matches!(r.child.try_wait(), Ok(None)))
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    /// Starts the process and waits (bounded) for the line that says where it listens.
    pub async fn start(&mut self) {
        let address = self.launch();
        let url = match tokio::time::timeout(START_TIMEOUT, address).await {
            Ok(Ok(url)) => url,
            Ok(Err(_)) => {
                let mut running = self.running.take().expect("just launched");
                let status = wait_exit(&mut running.child, Duration::from_secs(5)).await;
                panic!(
                    "{} closed stdout without saying where it listens ({status:?}); stderr:\n{}",
                    self.label,
                    tail(&running.stderr, 60)
                );
            }
            Err(_) => panic!(
                "{} did not print its address within {START_TIMEOUT:?}; stderr:\n{}",
                self.label,
                self.stderr_tail(60)
            ),
        };
        assert!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
            "{}: {url}",
            self.label
        );
        self.endpoint.set(url);
    }

    /// Starts the process without waiting for it to listen (a test that kills it while it
    /// is still starting up, e.g. seeding).
    pub fn start_unannounced(&mut self) {
        drop(self.launch());
    }

    /// Spawns the process; the receiver gets the URL it announces.
    fn launch(&mut self) -> tokio::sync::oneshot::Receiver<String> {
        assert!(self.running.is_none(), "{} is already running", self.label);
        self.starts += 1;
        let base = self.dir.join(format!("{}-{}", self.label, self.starts));
        let stdout_path = base.with_extension("stdout");
        let stderr_path = base.with_extension("stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = self
            .spec
            .command(&self.spec.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {} ({}): {e}", self.label, self.spec.program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        self.running = Some(Running {
            child,
            stderr: stderr_path,
        });
        // Drain stdout to its file to its end (the child must never get EPIPE); hand over
        // the address as soon as it appears.
        let (found, address) = tokio::sync::oneshot::channel::<String>();
        let announce = self.spec.announce;
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&stdout_path).ok();
            let mut found = Some(found);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(file) = file.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
                if let Some(url) = line.strip_prefix(announce) {
                    if let Some(found) = found.take() {
                        let _ = found.send(url.trim().to_owned());
                    }
                }
            }
        });
        address
    }

    /// Runs the same program once more with other arguments (an operator command on the
    /// same files, e.g. `rebuild-projections`) and waits (bounded) for it to exit. Its
    /// stdout and stderr go to `<label>-<name>.stdout|stderr`; returns the exit status
    /// (`None`: killed after [`EXIT_TIMEOUT`]), the stdout and the stderr.
    pub async fn run_once(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Option<ExitStatus>, String, String) {
        let base = self.dir.join(format!("{}-{name}", self.label));
        let (stdout_path, stderr_path) = (base.with_extension("stdout"), base.with_extension("stderr"));
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let mut child = self
            .spec
            .command(&args)
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {} {name}: {e}", self.label));
        let status = wait_exit(&mut child, EXIT_TIMEOUT).await;
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        (status, read(&stdout_path), read(&stderr_path))
    }

    /// SIGKILL, and reap. No-op when not running.
    pub fn kill9(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit (0); panics (with the stderr tail) otherwise.
    pub async fn terminate(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        let pid = running.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let status = wait_exit(&mut running.child, EXIT_TIMEOUT).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not exit 0 within {EXIT_TIMEOUT:?} after SIGTERM: {status:?}; stderr:\n{}",
            self.label,
            tail(&running.stderr, 60)
        );
    }

    /// From the next start on, listen on the port of the current (or last) start instead
    /// of a new one (`127.0.0.1:0` in the arguments and settings becomes that address):
    /// for a process whose address is written in another process's configuration (a
    /// load balancer's server list).
    pub fn keep_port(&mut self) {
        let (any, kept) = ("127.0.0.1:0", self.addr().to_string());
        for value in self
            .spec
            .args
            .iter_mut()
            .chain(self.spec.env.iter_mut().map(|(_, v)| v))
        {
            if value == any {
                value.clone_from(&kept);
            }
        }
    }

    /// SIGKILL (when running), then start again on the same data directory.
    pub async fn restart(&mut self) {
        self.kill9();
        self.start().await;
    }

    /// The last lines of the current (or last) start's stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let path = self
            .dir
            .join(format!("{}-{}", self.label, self.starts))
            .with_extension("stderr");
        tail(&path, lines)
    }

    /// The whole stderr of every start so far, concatenated.
    pub fn all_stderr(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let path = self.dir.join(format!("{}-{n}", self.label)).with_extension("stderr");
                std::fs::read_to_string(path).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.reverse();
    last.join("\n")
}

// ---------------------------------------------------------------------------------------

/// A `shelfsync-hub demo` process (three demo stores, five products, opening stock).
pub struct HubProcess {
    /// The process.
    pub process: Process,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl HubProcess {
    /// A hub on `<root>/hub` (not started) with the demo data. `env` adds
    /// `SHELFSYNC_HUB_*` settings, e.g. `("SHELFSYNC_HUB_SYNC__PUSH_BUFFER_EVENTS", "4")`.
    pub fn new(root: &Path, env: &[(&str, &str)]) -> Self {
        Self::named(root, "hub", true, env)
    }

    /// A hub named `name` on `<root>/<name>` (not started): `shelfsync-hub demo` when
    /// `demo` (it seeds an empty log and writes the demo stores' tokens into its data
    /// directory), else `shelfsync-hub` serving whatever its storage holds (several hubs
    /// on one PostgreSQL database: one seeds, the others serve).
    pub fn named(root: &Path, name: &str, demo: bool, env: &[(&str, &str)]) -> Self {
        let data_dir = root.join(name);
        let data_dir_text = data_dir.to_string_lossy().into_owned();
        let args = if demo {
            ["demo", "--data-dir", &data_dir_text, "--listen", "127.0.0.1:0"]
                .map(String::from)
                .to_vec()
        } else {
            Vec::new()
        };
        let mut vars = vec![
            ("SHELFSYNC_HUB_DATA_DIR".to_owned(), data_dir_text.clone()),
            ("SHELFSYNC_HUB_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("SHELFSYNC_HUB_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
            ("SHELFSYNC_HUB_LOG".to_owned(), "info".to_owned()),
            // Keep-alives every second, so that agents notice a dead stream within seconds.
            ("SHELFSYNC_HUB_SYNC__KEEP_ALIVE_SECS".to_owned(), "1".to_owned()),
            // Web holds in the tests live seconds: expire them every second.
            (
                "SHELFSYNC_HUB_JOBS__RESERVATION_EXPIRY".to_owned(),
                "* * * * * *".to_owned(),
            ),
        ];
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let spec = Spec {
            program: crate::bins::binaries().hub.clone(),
            args,
            env: vars,
            scrub: "SHELFSYNC_HUB_",
            announce: "shelfsync hub listening on ",
        };
        Self {
            process: Process::new(name, root, spec),
            data_dir,
        }
    }

    /// The demo store token of `store` (written by the hub at its first start).
    pub fn store_token(&self, store: StoreId) -> String {
        let path = shelfsync_hub::seed::store_token_path(&self.data_dir, store);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// The event log file.
    pub fn events_file(&self) -> PathBuf {
        self.data_dir.join(shelfsync_hub::EVENTS_FILE)
    }
}

/// A `shelfsync-edge run` process for one store.
pub struct AgentProcess {
    /// The process.
    pub process: Process,
    /// Its store.
    pub store: StoreId,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl AgentProcess {
    /// The agent of `store` on `<root>/agent-<name>` (not started), reaching the hub at
    /// `hub_url` with `token`. `env` adds or overrides `SHELFSYNC_EDGE_*` settings.
    pub fn new(root: &Path, name: &str, store: StoreId, hub_url: &str, token: &str, env: &[(&str, &str)]) -> Self {
        let data_dir = root.join(format!("agent-{name}"));
        let mut vars: Vec<(String, String)> = [
            ("SHELFSYNC_EDGE_STORE_ID", store.to_string()),
            ("SHELFSYNC_EDGE_HUB_URL", hub_url.to_owned()),
            ("SHELFSYNC_EDGE_HUB_TOKEN", token.to_owned()),
            // The suite's hubs serve plain HTTP on 127.0.0.1.
            ("SHELFSYNC_EDGE_ALLOW_INSECURE_HUB", "true".to_owned()),
            ("SHELFSYNC_EDGE_LISTEN", "127.0.0.1:0".to_owned()),
            ("SHELFSYNC_EDGE_DATA_DIR", data_dir.to_string_lossy().into_owned()),
            ("SHELFSYNC_EDGE_TERMINAL_KEY", TERMINAL_KEY.to_owned()),
            ("SHELFSYNC_EDGE_MANAGER_KEY", MANAGER_KEY.to_owned()),
            ("SHELFSYNC_EDGE_LOG", "info".to_owned()),
            // Short timers, so that faults heal within a test's time.
            ("SHELFSYNC_EDGE_SYNC__PULL_INTERVAL_SECS", "1".to_owned()),
            ("SHELFSYNC_EDGE_SYNC__HEARTBEAT_INTERVAL_SECS", "1".to_owned()),
            ("SHELFSYNC_EDGE_SYNC__REQUEST_TIMEOUT_SECS", "3".to_owned()),
            ("SHELFSYNC_EDGE_SYNC__STREAM_IDLE_TIMEOUT_SECS", "4".to_owned()),
            ("SHELFSYNC_EDGE_SYNC__RETRY_MIN_MS", "50".to_owned()),
            ("SHELFSYNC_EDGE_SYNC__RETRY_MAX_MS", "1000".to_owned()),
            ("SHELFSYNC_EDGE_SYNC__BREAKER_OPEN_SECS", "2".to_owned()),
            // The tills' short holds live seconds: expire them every second.
            ("SHELFSYNC_EDGE_JOBS__RESERVATION_EXPIRY", "* * * * * *".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (key, value) in env {
            vars.retain(|(k, _)| k != key);
            vars.push(((*key).to_owned(), (*value).to_owned()));
        }
        Self::spawnable(root, name, store, data_dir, vec!["run".into()], vars)
    }

    /// The agent of `store` as an installed one runs: `shelfsync-edge --config <config>
    /// run`, its settings from that file (whose data directory is `data_dir`), `env` adding
    /// only what the service's environment file would (the store token).
    pub fn with_config(
        root: &Path,
        name: &str,
        store: StoreId,
        (config, data_dir): (&Path, &Path),
        env: &[(&str, &str)],
    ) -> Self {
        let args = vec!["--config".into(), config.to_string_lossy().into_owned(), "run".into()];
        let vars = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Self::spawnable(root, name, store, data_dir.to_owned(), args, vars)
    }

    fn spawnable(
        root: &Path,
        name: &str,
        store: StoreId,
        data_dir: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        let spec = Spec {
            program: crate::bins::binaries().edge.clone(),
            args,
            env,
            scrub: "SHELFSYNC_EDGE_",
            announce: "shelfsync edge agent listening on ",
        };
        Self {
            process: Process::new(&format!("agent-{name}"), root, spec),
            store,
            data_dir,
        }
    }
}
