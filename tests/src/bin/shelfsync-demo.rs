//! `cargo run`: the five-minute demo. Builds the real `shelfsync-hub` and `shelfsync-edge`
//! binaries, starts a hub with sample stores, products and stock (`shelfsync-hub demo`)
//! and the edge agent of one store ("Berlin Mitte") beside it, as two processes (each
//! with its own log lines and its own `/metrics`), and prints where they listen, the keys,
//! and the operator commands that work against them. Ctrl-C or SIGTERM stops both; the
//! demo only ever signals the two processes it started, by their pid.

use anyhow::Context;
use clap::Parser;
use shelfsync_hub::seed;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "shelfsync-demo",
    about = "A shelfsync hub and one store's edge agent, with sample data"
)]
struct Args {
    /// Where the demo keeps its files (the hub's, and the agent's in edge-berlin/).
    #[arg(long, default_value = "shelfsync-demo-data")]
    data_dir: PathBuf,
    /// The hub's address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    hub: SocketAddr,
    /// The store agent's address.
    #[arg(long, default_value = "127.0.0.1:7171")]
    agent: SocketAddr,
}

/// Longest wait for a process to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    shelfsync_common::server::telemetry::exit_code(demo(Args::parse()))
}

fn demo(args: Args) -> anyhow::Result<()> {
    for (what, address) in [("hub", args.hub), ("agent", args.agent)] {
        std::net::TcpListener::bind(address).with_context(|| {
            format!(
                "the {what}'s address {address} is taken (is a demo already running?); choose free ports with \
                 `cargo run -- --hub 127.0.0.1:7080 --agent 127.0.0.1:7181`"
            )
        })?;
    }
    let binaries = binaries()?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let mut hub = Started::spawn(
        "hub",
        Command::new(&binaries.hub)
            .arg("demo")
            .arg("--data-dir")
            .arg(&args.data_dir)
            .arg("--listen")
            .arg(args.hub.to_string()),
    )?;

    // The hub writes the demo stores' tokens while it seeds; wait for Berlin's.
    let berlin = &seed::stores()[0];
    let token = wait_for_file(&seed::store_token_path(&args.data_dir, berlin.id), &mut hub)?;
    let agent_dir = args.data_dir.join("edge-berlin");
    let mut agent = Started::spawn(
        "agent",
        Command::new(&binaries.edge)
            .arg("run")
            .env("SHELFSYNC_EDGE_STORE_ID", berlin.id.to_string())
            .env("SHELFSYNC_EDGE_HUB_URL", format!("http://{}", args.hub))
            .env("SHELFSYNC_EDGE_HUB_TOKEN", token)
            // The demo's hub serves plain HTTP on this machine.
            .env("SHELFSYNC_EDGE_ALLOW_INSECURE_HUB", "true")
            .env("SHELFSYNC_EDGE_LISTEN", args.agent.to_string())
            .env("SHELFSYNC_EDGE_DATA_DIR", &agent_dir),
    )?;
    let keys = [
        (
            "admin token (hub)",
            wait_for_file(&args.data_dir.join("admin-token"), &mut hub)?,
        ),
        (
            "terminal key (tills)",
            wait_for_file(&agent_dir.join(shelfsync_edge::TERMINAL_KEY_FILE), &mut agent)?,
        ),
        (
            "manager key (store manager)",
            wait_for_file(&agent_dir.join(shelfsync_edge::MANAGER_KEY_FILE), &mut agent)?,
        ),
    ];
    print_banner(&args, &binaries, berlin.name, &keys);

    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(until_stopped_or_exited(&mut [&mut hub, &mut agent]));
    agent.stop();
    hub.stop();
    outcome
}

/// The two binaries: built with cargo when run by cargo (`cargo run`), else the ones next
/// to this executable.
fn binaries() -> anyhow::Result<shelfsync_tests::bins::Binaries> {
    if std::env::var_os("CARGO").is_some() {
        return shelfsync_tests::bins::build().map_err(anyhow::Error::msg);
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let dir = exe.parent().context("finding this executable's directory")?;
    let binaries = shelfsync_tests::bins::Binaries {
        hub: dir.join(format!("shelfsync-hub{}", std::env::consts::EXE_SUFFIX)),
        edge: dir.join(format!("shelfsync-edge{}", std::env::consts::EXE_SUFFIX)),
    };
    for path in [&binaries.hub, &binaries.edge] {
        anyhow::ensure!(
            path.exists(),
            "{} is missing: start the demo with `cargo run`, or build it with `cargo build --bins`",
            path.display()
        );
    }
    Ok(binaries)
}

fn print_banner(args: &Args, binaries: &shelfsync_tests::bins::Binaries, store: &str, keys: &[(&str, String)]) {
    let agent_dir = args.data_dir.join("edge-berlin");
    let (hub_bin, edge_bin) = (relative(&binaries.hub), relative(&binaries.edge));
    println!();
    println!(
        "shelfsync demo: hub on http://{}, the agent of {store} on http://{}",
        args.hub, args.agent
    );
    for (name, key) in keys {
        println!("  {name:<28} {key}");
    }
    println!(
        "In a browser: http://{}/ (the back office: sign in with the admin token) and http://{}/ (the store page: the manager key)",
        args.hub, args.agent
    );
    println!("Operator commands that work against this demo (from this directory):");
    println!(
        "  SHELFSYNC_HUB_DATA_DIR={} {hub_bin} store list --hub-url http://{}",
        args.data_dir.display(),
        args.hub
    );
    for command in ["status", "outbox list"] {
        println!(
            "  SHELFSYNC_EDGE_DATA_DIR={} {edge_bin} {command} --agent-url http://{}",
            agent_dir.display(),
            args.agent
        );
    }
    println!("Each process serves its own /metrics. Press Ctrl-C to stop both.");
}

/// `path` relative to the working directory when it is below it.
fn relative(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|dir| path.strip_prefix(dir).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// Resolves on Ctrl-C or SIGTERM (Ok), or when a process exits by itself (an error that
/// names it).
async fn until_stopped_or_exited(processes: &mut [&mut Started]) -> anyhow::Result<()> {
    let stop = shelfsync_common::server::shutdown_signal();
    tokio::pin!(stop);
    loop {
        for process in processes.iter_mut() {
            process.check_running()?;
        }
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// A child process of the demo, stopped (SIGTERM, by its pid) when the demo stops.
struct Started {
    name: &'static str,
    child: Child,
}

impl Started {
    fn spawn(name: &'static str, command: &mut Command) -> anyhow::Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("starting the {name} ({:?})", command.get_program()))?;
        Ok(Self { name, child })
    }

    /// An error when the process has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => anyhow::bail!("the {} stopped by itself ({status}); see its log above", self.name),
            Err(error) => anyhow::bail!("the {} cannot be watched: {error}", self.name),
        }
    }

    /// SIGTERM, then waits (bounded) for it to exit; SIGKILL if it does not.
    fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // Not reaped yet, so the pid is still this child's.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("the {} did not stop within {STOP_TIMEOUT:?}; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads a small file `process` is about to write (bounded wait; fails early if the
/// process exits).
fn wait_for_file(path: &Path, process: &mut Started) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return Ok(text.trim().to_owned());
            }
        }
        process.check_running()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("{} did not appear within 30 s; see the log above", path.display())
}
