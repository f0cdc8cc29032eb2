//! The `shelfsync-hub` command line: serve, run the demo, rebuild the read model, print
//! the example configuration. Start-up failures print one line that names the step.

use anyhow::Context;
use clap::{Parser, Subcommand};
use shelfsync_hub::config::{HubConfig, EXAMPLE};
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
    /// Rebuild the read model from the event log (stop the hub first).
    RebuildProjections,
    /// Print the annotated example configuration.
    PrintConfig,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
        Cmd::RebuildProjections => {
            let config = HubConfig::load(cli.config.as_deref()).context("loading configuration")?;
            shelfsync_hub::telemetry::init_logging(&config.log);
            let applied =
                shelfsync_hub::rebuild_read_model(&config.data_dir, true).context("rebuilding the read model")?;
            println!("read model rebuilt from {applied} events");
            Ok(())
        }
    }
}

fn serve(config: HubConfig, demo: bool) -> anyhow::Result<()> {
    shelfsync_hub::telemetry::init_logging(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "binding {} (is another hub running? set listen / SHELFSYNC_HUB_LISTEN)",
                config.listen
            )
        })?;
        let options = shelfsync_hub::RunOptions {
            seed_demo_data: demo,
            announce: true,
        };
        shelfsync_hub::run(config, listener, options, shelfsync_hub::shutdown_signal())
            .await
            .context("running the hub")
    })
}
