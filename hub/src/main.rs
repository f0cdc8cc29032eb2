//! The `shelfsync-hub` command line: serve, run the demo, migrate, verify, back up and
//! restore the hub's storage, rebuild the read model, move the event store to PostgreSQL,
//! print the example configuration. A failure prints one line
//! (naming the step) and exits 1.

// Production code never unwraps: an error becomes an answer, a log line or an exit code
// (clippy.toml allows it in tests).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use anyhow::Context;
use clap::{Parser, Subcommand};
use shelfsync_common::server::startup::{serve_process, Process};
use shelfsync_hub::cli;
use shelfsync_hub::config::{HubConfig, Storage, EXAMPLE};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "shelfsync-hub",
    version,
    about = "The shelfsync hub: authoritative inventory event store and API"
)]
struct Cli {
    /// TOML configuration file (defaults < file < SHELFSYNC_HUB_* environment).
    #[arg(long, global = true, env = "SHELFSYNC_HUB_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the hub (the default).
    Serve,
    /// Run a hub on ./shelfsync-demo-data with sample stores, products and stock.
    Demo {
        /// Where the demo keeps its files.
        #[arg(long, default_value = "shelfsync-demo-data")]
        data_dir: PathBuf,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: std::net::SocketAddr,
    },
    /// Apply the storage's schema migrations and exit (stop the hub first; before an
    /// upgrade).
    Migrate,
    /// Check the event log and the read model (read-only; the hub may be running). Exits
    /// non-zero, saying where, on any problem.
    Verify {
        /// A hub data directory to check instead of the configured one (e.g. a backup).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Copy the hub's SQLite files into a new directory while it keeps serving, then verify
    /// the copy (PostgreSQL: see docs/operations.md, pg_dump / PITR).
    Backup {
        /// The new (or empty) directory to write the copy into.
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup back into the configured data directory (stop the hub first), verify
    /// it, and say what the agents do next.
    Restore {
        /// The directory `backup --to` wrote.
        #[arg(long)]
        from: PathBuf,
    },
    /// Rebuild the read model from the event log (stop the hub first).
    RebuildProjections,
    /// Copy this hub's SQLite event store into PostgreSQL, resumably, and verify it
    /// (stop the hub first).
    MigrateStorage {
        /// sqlite:PATH: the hub's events.sqlite or its data directory (default: the
        /// configured data_dir).
        #[arg(long)]
        from: Option<String>,
        /// postgres:URL (default: postgres.database_url, SHELFSYNC_HUB_POSTGRES__DATABASE_URL,
        /// which keeps a password off the command line).
        #[arg(long)]
        to: Option<String>,
        /// Only compare the two sides (a copy made earlier); write nothing.
        #[arg(long)]
        check_only: bool,
    },
    /// Rebuild the analytics figures and alerts from the event log, keeping settings and
    /// webhooks (stop the hub first).
    RebuildAnalytics,
    /// Print the annotated example configuration.
    PrintConfig,
    /// Enroll, list and revoke stores (talks to the running hub).
    Store {
        /// The hub's URL (default: public_url, else http(s)://<listen> from the configuration).
        #[arg(long, global = true)]
        hub_url: Option<String>,
        #[command(subcommand)]
        action: StoreCmd,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Enroll a store; prints its id and token (shown once).
    Add {
        /// Display name, e.g. "Berlin Mitte".
        name: String,
        /// Use this id instead of a new one.
        #[arg(long)]
        id: Option<shelfsync_common::StoreId>,
        /// Enroll even when another store already has this name.
        #[arg(long)]
        allow_duplicate_name: bool,
        /// Print the one-line `shelfsync-edge enroll` command (a code that works once,
        /// for enrollment.code_ttl_secs) instead of the token.
        #[arg(long)]
        enroll: bool,
    },
    /// Make a new enrollment code for a store; prints the `shelfsync-edge enroll` command.
    Code {
        /// Store id.
        id: shelfsync_common::StoreId,
    },
    /// List enrolled stores.
    List,
    /// Revoke a store's token (its agent is refused at once).
    Revoke {
        /// Store id.
        id: shelfsync_common::StoreId,
    },
    /// Issue a new token for a store, revoking the old one.
    Token {
        /// Store id.
        id: shelfsync_common::StoreId,
    },
}

fn main() -> std::process::ExitCode {
    shelfsync_common::server::telemetry::exit_code(command(Cli::parse()))
}

fn command(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::PrintConfig => {
            print!("{EXAMPLE}");
            Ok(())
        }
        Cmd::Serve => {
            let config = HubConfig::load(cli.config.as_deref()).context("loading configuration")?;
            serve(config, false)
        }
        Cmd::Demo { data_dir, listen } => {
            let mut config = HubConfig::load(cli.config.as_deref()).context("loading configuration")?;
            config.data_dir = data_dir;
            config.listen = listen;
            serve(config, true)
        }
        Cmd::Store { hub_url, action } => {
            let config = HubConfig::load(cli.config.as_deref()).context("loading configuration")?;
            let hub_url = hub_url.unwrap_or_else(|| config.public_url().0);
            let token = cli::admin_token(&config)?;
            let action = match action {
                StoreCmd::Add {
                    name,
                    id,
                    allow_duplicate_name,
                    enroll,
                } => cli::StoreAction::Add {
                    name,
                    id,
                    allow_duplicate_name,
                    enroll,
                },
                StoreCmd::Code { id } => cli::StoreAction::Code { id },
                StoreCmd::List => cli::StoreAction::List,
                StoreCmd::Revoke { id } => cli::StoreAction::Revoke { id },
                StoreCmd::Token { id } => cli::StoreAction::Rotate { id },
            };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let roots = config.tls.cert_file.as_deref();
            let output = runtime.block_on(cli::run_store_action_trusting(&hub_url, &token, action, roots))?;
            println!("{output}");
            Ok(())
        }
        Cmd::MigrateStorage { from, to, check_only } => {
            let config = HubConfig::load(cli.config.as_deref()).context("loading configuration")?;
            shelfsync_common::server::telemetry::init_logging(&config.log, config.log_format);
            let source = shelfsync_hub::migrate_storage::source_path(from.as_deref(), &config)?;
            let target = shelfsync_hub::migrate_storage::target_settings(to.as_deref(), &config)?;
            let summary =
                shelfsync_hub::migrate_storage::run(&source, &target, check_only, true).with_context(|| {
                    let (what, how) = if check_only {
                        ("checking", "against")
                    } else {
                        ("copying", "into")
                    };
                    format!("{what} {} {how} PostgreSQL", source.display())
                })?;
            println!("{summary}");
            Ok(())
        }
        Cmd::Migrate => {
            let config = HubConfig::load(cli.config.as_deref()).context("loading configuration")?;
            for line in shelfsync_hub::migrate::run(&config).context("migrating")? {
                println!("{line}");
            }
            Ok(())
        }
        Cmd::Verify { data_dir } => {
            let config = HubConfig::load(cli.config.as_deref()).context("loading configuration")?;
            let dir = data_dir.unwrap_or_else(|| config.data_dir.clone());
            let report = match config.storage {
                Storage::Postgres => {
                    let url = config.postgres.database_url.as_ref().context(
                        "storage = \"postgres\" needs postgres.database_url (SHELFSYNC_HUB_POSTGRES__DATABASE_URL)",
                    )?;
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    runtime.block_on(shelfsync_hub::verify::postgres(url.expose(), &dir, true))
                }
                Storage::Sqlite => shelfsync_hub::verify::data_dir(&dir, true),
            }
            .context("verifying")?;
            println!("{report}");
            match report.passed() {
                true => Ok(()),
                false => anyhow::bail!("verify found {} problems (listed above)", report.problems.count()),
            }
        }
        Cmd::Backup { to } => {
            let config = HubConfig::load(cli.config.as_deref()).context("loading configuration")?;
            refuse_postgres(&config, "backup")?;
            let manifest = shelfsync_hub::backup::backup(&config.data_dir, &to, true)
                .with_context(|| format!("backing up {} into {}", config.data_dir.display(), to.display()))?;
            println!(
                "backed up {} at position {} into {} ({}); the copy verifies",
                config.data_dir.display(),
                manifest.head,
                to.display(),
                manifest.files.join(", ")
            );
            Ok(())
        }
        Cmd::Restore { from } => {
            let config = HubConfig::load(cli.config.as_deref()).context("loading configuration")?;
            refuse_postgres(&config, "restore")?;
            let restored = shelfsync_hub::backup::restore(&from, &config.data_dir, true)
                .with_context(|| format!("restoring {} into {}", from.display(), config.data_dir.display()))?;
            println!("{restored}");
            Ok(())
        }
        Cmd::RebuildProjections => {
            let config = HubConfig::load(cli.config.as_deref()).context("loading configuration")?;
            shelfsync_common::server::telemetry::init_logging(&config.log, config.log_format);
            if config.storage == shelfsync_hub::config::Storage::Postgres {
                anyhow::bail!(
                    "this hub's event log is in PostgreSQL: stop the hub, delete {}, and start it again; \
                     it projects its read model from the log at start-up (other hubs keep serving meanwhile)",
                    config.data_dir.join(shelfsync_hub::READ_MODEL_FILE).display()
                );
            }
            let applied =
                shelfsync_hub::rebuild_read_model(&config.data_dir, true).context("rebuilding the read model")?;
            println!("read model rebuilt from {applied} events");
            Ok(())
        }
        Cmd::RebuildAnalytics => {
            let config = HubConfig::load(cli.config.as_deref()).context("loading configuration")?;
            shelfsync_common::server::telemetry::init_logging(&config.log, config.log_format);
            let folded = shelfsync_hub::rebuild_analytics(&config.data_dir, true).context("rebuilding analytics")?;
            println!("analytics rebuilt from {folded} events");
            Ok(())
        }
    }
}

/// Backups of a PostgreSQL hub are PostgreSQL's own.
fn refuse_postgres(config: &HubConfig, command: &str) -> anyhow::Result<()> {
    if config.storage == Storage::Postgres {
        anyhow::bail!(
            "this hub's event log is in PostgreSQL: `{command}` copies SQLite files only; back the database up \
             with pg_dump or continuous archiving (PITR), see docs/operations.md, \"Backups and repair\""
        );
    }
    Ok(())
}

fn serve(config: HubConfig, demo: bool) -> anyhow::Result<()> {
    let process = Process {
        bind_hint: "is another hub running? set listen / SHELFSYNC_HUB_LISTEN",
        running: "running the hub",
    };
    let options = shelfsync_hub::RunOptions {
        seed_demo_data: demo,
        announce: true,
    };
    let (log, log_format, listen) = (config.log.clone(), config.log_format, config.listen);
    serve_process(&log, log_format, listen, process, |listener| {
        shelfsync_hub::run(config, listener, options, shelfsync_hub::shutdown_signal())
    })
}
