//! The `shelfsync-edge` command line: run the agent (the default), ask the running agent
//! for its status, outbox and quarantine, and print the example configuration. A failure
//! prints one line (naming the step) and exits 1.

// Production code never unwraps: an error becomes an answer, a log line or an exit code
// (clippy.toml allows it in tests).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use shelfsync_common::server::startup::{serve_process, Process};
use shelfsync_common::EventId;
use shelfsync_edge::cli::{self, Action};
use shelfsync_edge::config::{EdgeConfig, EXAMPLE};
use shelfsync_edge::offline::{self, Verdict};
use shelfsync_edge::StartError;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "shelfsync-edge",
    version,
    about = "The shelfsync edge agent: the store's POS API, local store and sync with the hub"
)]
struct Cli {
    /// TOML configuration file (defaults < file < SHELFSYNC_EDGE_* environment).
    #[arg(long, global = true, env = "SHELFSYNC_EDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

/// Options of the commands that talk to the running agent.
#[derive(Args, Clone)]
struct Client {
    /// The agent's URL (default: http://<listen> from the configuration, 0.0.0.0 as 127.0.0.1).
    #[arg(long, global = true)]
    agent_url: Option<String>,
    /// Print the agent's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent (the default).
    Run,
    /// Show the running agent's status: hub link, outbox, quarantine, sync position.
    Status {
        #[command(flatten)]
        client: Client,
    },
    /// List the outbox of the running agent (needs the manager key).
    Outbox {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        action: OutboxCmd,
    },
    /// List, retry or discard events the hub rejected (needs the manager key).
    Quarantine {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        action: QuarantineCmd,
    },
    /// Copy the local store (SQLite online backup; the agent may keep running) into DIR.
    Backup {
        /// The directory for the copy (created); the copy is edge-<UTC time>.sqlite.
        #[arg(long)]
        to: PathBuf,
    },
    /// Compare this store's confirmed state with the hub's snapshot, stream by stream
    /// (exit 1 on a difference, 2 when the two are at different positions).
    Verify,
    /// Re-seed the confirmed state from the hub's snapshot, keeping every unconfirmed
    /// event (stop the agent first). Own events the hub no longer has are sent again.
    Resync {
        /// The agent's URL, to make sure it is stopped (default: from the configuration).
        #[arg(long)]
        agent_url: Option<String>,
    },
    /// Print the annotated example configuration.
    PrintConfig,
    /// Enroll this machine's agent with a one-time code from the hub: checks the hub,
    /// writes the configuration and the store token, starts the service.
    Enroll {
        /// The hub's URL, as `shelfsync-hub store add --enroll` printed it.
        #[arg(long)]
        hub: String,
        /// The one-time code, XXXX-XXXX.
        #[arg(long)]
        code: String,
        /// Where to write the store token (default: edge.env beside the configuration).
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// Trust this CA (PEM) for the hub's certificate too; written as ca_file.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Accept an http:// hub (tests on one machine only); written as allow_insecure_hub.
        #[arg(long)]
        allow_insecure_hub: bool,
        /// Do not start the service; print what to run.
        #[arg(long)]
        no_start: bool,
    },
}

#[derive(Subcommand)]
enum OutboxCmd {
    /// Outbox events, newest first.
    List {
        /// Comma-separated: pending, acked, confirmed, quarantined, discarded
        /// (default: pending,acked,quarantined).
        #[arg(long)]
        status: Option<String>,
        /// Most events to list (default 100, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Subcommand)]
enum QuarantineCmd {
    /// Quarantined events with the hub's reason, newest first.
    List {
        /// Most events to list (default 100, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Put an event back in the outbox to be uploaded again (fix the cause at the hub first).
    Retry {
        /// The event's id.
        event_id: EventId,
    },
    /// Give an event up for good (it leaves this store's stock figures).
    Discard {
        /// The event's id.
        event_id: EventId,
    },
}

fn main() -> std::process::ExitCode {
    shelfsync_common::server::telemetry::exit_code(command(Cli::parse()))
}

fn command(cli: Cli) -> anyhow::Result<()> {
    let (client, action) = match cli.command.unwrap_or(Cmd::Run) {
        Cmd::PrintConfig => {
            print!("{EXAMPLE}");
            return Ok(());
        }
        Cmd::Run => {
            let config = EdgeConfig::load(cli.config.as_deref()).context("loading configuration")?;
            return run(config);
        }
        Cmd::Enroll {
            hub,
            code,
            env_file,
            ca_file,
            allow_insecure_hub,
            no_start,
        } => {
            let options = shelfsync_edge::enroll::EnrollOptions {
                hub,
                code,
                config: cli
                    .config
                    .unwrap_or_else(|| PathBuf::from(shelfsync_edge::enroll::DEFAULT_CONFIG)),
                env_file,
                ca_file,
                allow_insecure_hub,
                no_start,
            };
            let report = runtime()?
                .block_on(shelfsync_edge::enroll::enroll(&options))
                .context("enrolling")?;
            println!("{report}");
            return Ok(());
        }
        Cmd::Backup { to } => {
            let config = EdgeConfig::load(cli.config.as_deref()).context("loading configuration")?;
            let copy = offline::backup(&config, &to)?;
            println!("backed up the local store to {}", copy.display());
            return Ok(());
        }
        Cmd::Verify => return verify(cli.config.as_deref()),
        Cmd::Resync { agent_url } => {
            let config = EdgeConfig::load(cli.config.as_deref()).context("loading configuration")?;
            let agent_url = agent_url.unwrap_or_else(|| cli::agent_url(&config));
            let said = runtime()?.block_on(offline::resync(&config, &agent_url))?;
            println!("{said}");
            return Ok(());
        }
        Cmd::Status { client } => (client, Action::Status),
        Cmd::Outbox {
            client,
            action: OutboxCmd::List { status, limit },
        } => (
            client,
            Action::OutboxList {
                statuses: status,
                limit,
            },
        ),
        Cmd::Quarantine { client, action } => {
            let action = match action {
                QuarantineCmd::List { limit } => Action::QuarantineList { limit },
                QuarantineCmd::Retry { event_id } => Action::QuarantineRetry(event_id),
                QuarantineCmd::Discard { event_id } => Action::QuarantineDiscard(event_id),
            };
            (client, action)
        }
    };
    let config = EdgeConfig::load(cli.config.as_deref()).context("loading configuration")?;
    let agent_url = client.agent_url.unwrap_or_else(|| cli::agent_url(&config));
    // The status page is open; every other command needs the manager key.
    let key = match (&action, cli::manager_key(&config)) {
        (_, Ok(key)) => Some(key),
        (Action::Status, Err(_)) => None,
        (_, Err(error)) => return Err(error.into()),
    };
    let output = runtime()?.block_on(cli::run(&agent_url, key.as_deref(), &action, client.json))?;
    if output.ends_with('\n') {
        print!("{output}");
    } else {
        println!("{output}");
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// `verify`: prints the verdict; a difference exits 1, positions that differ exit 2.
fn verify(config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = EdgeConfig::load(config).context("loading configuration")?;
    match runtime()?.block_on(offline::verify(&config))? {
        Verdict::Same => {
            println!("this store's confirmed state matches the hub's snapshot");
            Ok(())
        }
        Verdict::Differs(lines) => {
            for line in &lines {
                println!("{line}");
            }
            println!(
                "{} streams differ from the hub's snapshot (`shelfsync-edge resync` re-seeds them)",
                lines.len()
            );
            std::process::exit(1)
        }
        Verdict::NotComparable { snapshot, cursor } => {
            println!(
                "not compared: the hub's snapshot is at position {snapshot}, this store's state at {cursor}; stop the \
                 agent (and wait for the hub to be quiet) or run verify again"
            );
            std::process::exit(2)
        }
    }
}

fn run(config: EdgeConfig) -> anyhow::Result<()> {
    config.hub_credentials().context("checking configuration")?;
    let process = Process {
        bind_hint: "is another agent running? set listen / SHELFSYNC_EDGE_LISTEN",
        running: "running the edge agent",
    };
    let (log, log_format, listen) = (config.log.clone(), config.log_format, config.listen);
    serve_process(&log, log_format, listen, process, |listener| async move {
        let address = listener.local_addr().map_err(StartError::Serve)?;
        println!("shelfsync edge agent listening on http://{address}");
        for (name, configured, file) in [
            (
                "terminal key",
                config.terminal_key.is_some(),
                shelfsync_edge::TERMINAL_KEY_FILE,
            ),
            (
                "manager key",
                config.manager_key.is_some(),
                shelfsync_edge::MANAGER_KEY_FILE,
            ),
        ] {
            if configured {
                println!("{name}: as configured");
            } else {
                println!("{name}: in {}", config.data_dir.join(file).display());
            }
        }
        shelfsync_edge::run(config, listener, shelfsync_edge::shutdown_signal()).await
    })
}
