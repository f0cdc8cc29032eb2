//! `cargo run`: the five-minute demo. Starts a hub with sample stores, products and stock,
//! and the edge agent of one store ("Berlin Mitte") beside it, both on this machine, and
//! prints where they listen and which keys to use. Ctrl-C stops both.

use anyhow::Context;
use clap::Parser;
use shelfsync_edge::config::EdgeConfig;
use shelfsync_hub::config::HubConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    shelfsync_common::server::telemetry::init_logging("info");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(demo(args))
}

async fn demo(args: Args) -> anyhow::Result<()> {
    let hub_listener = tokio::net::TcpListener::bind(args.hub)
        .await
        .with_context(|| format!("binding the hub to {} (is a demo already running?)", args.hub))?;
    let agent_listener = tokio::net::TcpListener::bind(args.agent)
        .await
        .with_context(|| format!("binding the agent to {} (is a demo already running?)", args.agent))?;
    let hub_config = HubConfig {
        listen: args.hub,
        data_dir: args.data_dir.clone(),
        ..HubConfig::default()
    };
    let (stop_hub, hub_stopped) = tokio::sync::oneshot::channel::<()>();
    let options = shelfsync_hub::RunOptions {
        seed_demo_data: true,
        announce: true,
    };
    let hub = tokio::spawn(shelfsync_hub::run(hub_config, hub_listener, options, async {
        let _ = hub_stopped.await;
    }));

    // The hub writes the demo stores' tokens while it seeds; wait for Berlin's.
    let berlin = &shelfsync_hub::seed::stores()[0];
    let token_file = shelfsync_hub::seed::store_token_path(&args.data_dir, berlin.id);
    let token = wait_for_file(&token_file).await?;
    let agent_dir = args.data_dir.join("edge-berlin");
    let agent_config = EdgeConfig {
        store_id: Some(berlin.id),
        hub_url: Some(format!("http://{}", args.hub)),
        hub_token: Some(token),
        listen: args.agent,
        data_dir: agent_dir.clone(),
        ..EdgeConfig::default()
    };
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(shelfsync_edge::run(agent_config, agent_listener, async {
        let _ = agent_stopped.await;
    }));
    let terminal_key = wait_for_file(&agent_dir.join(shelfsync_edge::TERMINAL_KEY_FILE)).await?;
    println!();
    println!("store agent for {} listening on http://{}", berlin.name, args.agent);
    println!("terminal key: {terminal_key}");
    println!(
        "(keys are also in {} and {})",
        args.data_dir.join("admin-token").display(),
        agent_dir.join("terminal-key").display()
    );
    println!("press Ctrl-C to stop");

    shelfsync_common::server::shutdown_signal().await;
    let _ = stop_agent.send(());
    agent.await.context("agent task")?.context("running the agent")?;
    let _ = stop_hub.send(());
    hub.await.context("hub task")?.context("running the hub")?;
    Ok(())
}

/// Reads a small file another task is about to write (bounded wait).
async fn wait_for_file(path: &std::path::Path) -> anyhow::Result<String> {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return Ok(text.trim().to_owned());
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("{} did not appear within 10 s; see the log above", path.display())
}
