//! `shelfsync-edge backup | verify | resync`: the store manager's commands that work on the
//! local store's file itself (the other commands ask the running agent over HTTP).
//!
//! - `backup --to DIR`: a consistent copy of `edge.sqlite` with SQLite's online backup API
//!   ([`shelfsync_common::sqlite::backup`]); the agent may keep running.
//! - `verify`: this store's confirmed state against the hub's snapshot, stream by stream.
//!   Figures compare only at one position: when the snapshot's position is not the local
//!   cursor the command says so and exits 2 (run it with the agent stopped and the hub
//!   quiet, or again).
//! - `resync`: what the agent does by itself after the hub was restored from an older
//!   backup ([`crate::sync::resync`]): every own event the hub answered for is sent again,
//!   then the confirmed state is re-seeded from a new snapshot; every unconfirmed event is
//!   kept and uploaded afterwards. It needs the agent stopped (the running agent's view of
//!   the file would go stale), and refuses while the agent answers at its URL.

use crate::config::EdgeConfig;
use crate::store::LocalStore;
use crate::sync::{Hub, LinkStatus};
use shelfsync_common::wire::sync::SnapshotResponse;
use shelfsync_common::ProductId;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// A failed offline command, with a message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A setting is missing or wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The local store could not be opened or written.
    #[error("local store {path}: {reason}")]
    Store {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The backup failed.
    #[error("backup to {path}: {reason}")]
    Backup {
        /// The target.
        path: String,
        /// Why.
        reason: String,
    },
    /// The hub could not be asked.
    #[error("the hub: {0}")]
    Hub(String),
    /// `resync` while the agent runs.
    #[error(
        "the agent is running at {0}: stop it first (e.g. `systemctl stop shelfsync-edge`), then run resync again"
    )]
    AgentRunning(String),
}

/// What `verify` found; the exit code says it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every stream agrees (exit 0).
    Same,
    /// Streams differ (exit 1): one line per difference.
    Differs(Vec<String>),
    /// The snapshot and the local state are at different positions (exit 2).
    NotComparable {
        /// The hub snapshot's position.
        snapshot: u64,
        /// The local cursor.
        cursor: u64,
    },
}

fn store_path(config: &EdgeConfig) -> std::path::PathBuf {
    config.data_dir.join(crate::STORE_FILE)
}

/// `backup --to DIR`: copies the local store into `DIR/edge-<UTC time>.sqlite` (DIR is
/// created); returns the copy's path.
pub fn backup(config: &EdgeConfig, to: &Path) -> Result<std::path::PathBuf, OfflineError> {
    let source = store_path(config);
    if !source.exists() {
        return Err(OfflineError::Store {
            path: source.display().to_string(),
            reason: "no such file (is data_dir / SHELFSYNC_EDGE_DATA_DIR right?)".into(),
        });
    }
    let failed = |reason: String| OfflineError::Backup {
        path: to.display().to_string(),
        reason,
    };
    shelfsync_common::sqlite::create_private_dir(to).map_err(|e| failed(e.to_string()))?;
    let stamp = time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .map_err(|e| failed(e.to_string()))?;
    let target = to.join(format!("edge-{stamp}.sqlite"));
    shelfsync_common::sqlite::backup::backup(&source, &target).map_err(|e| failed(e.to_string()))?;
    Ok(target)
}

/// `verify`: fetches the hub's snapshot of this store and compares it with the local
/// confirmed state.
pub async fn verify(config: &EdgeConfig) -> Result<Verdict, OfflineError> {
    let (local, hub) = open(config)?;
    let snapshot = hub.snapshot().await.map_err(|e| OfflineError::Hub(e.to_string()));
    let verdict = snapshot.map(|snapshot| compare(&local, &snapshot));
    local.close().await;
    verdict
}

/// Compares the confirmed state with `snapshot`, stream by stream.
pub fn compare(local: &LocalStore, snapshot: &SnapshotResponse) -> Verdict {
    let cursor = local.read(|view| view.sync.cursor);
    if cursor != snapshot.position {
        return Verdict::NotComparable {
            snapshot: snapshot.position,
            cursor,
        };
    }
    // (on_hand, reserved, version) per product, on each side.
    let mut hub: BTreeMap<ProductId, (i64, i64, u64)> = BTreeMap::new();
    for row in &snapshot.stock {
        hub.insert(row.product_id, (row.on_hand, row.reserved, row.version));
    }
    let mut mine: BTreeMap<ProductId, (i64, i64, u64)> = BTreeMap::new();
    local.read(|view| {
        for (product, stream) in view.streams() {
            let state = stream.confirmed();
            if state.version > 0 {
                mine.insert(*product, (state.on_hand, state.reserved(), state.version));
            }
        }
    });
    let products: std::collections::BTreeSet<_> = hub.keys().chain(mine.keys()).copied().collect();
    let show = |figures: Option<&(i64, i64, u64)>| match figures {
        Some((on_hand, reserved, version)) => format!("on hand {on_hand}, reserved {reserved}, version {version}"),
        None => "no stream".to_owned(),
    };
    let differences: Vec<String> = products
        .into_iter()
        .filter(|product| hub.get(product) != mine.get(product))
        .map(|product| {
            format!(
                "product {product}: hub {}; here {}",
                show(hub.get(&product)),
                show(mine.get(&product))
            )
        })
        .collect();
    if differences.is_empty() {
        Verdict::Same
    } else {
        Verdict::Differs(differences)
    }
}

/// `resync`: refuses while the agent answers at `agent_url`; otherwise re-syncs the store
/// from the hub. Returns a line for the operator.
pub async fn resync(config: &EdgeConfig, agent_url: &str) -> Result<String, OfflineError> {
    let running = reqwest::Client::new()
        .get(format!("{agent_url}/healthz"))
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await
        .is_ok();
    if running {
        return Err(OfflineError::AgentRunning(agent_url.to_owned()));
    }
    let (local, hub) = open(config)?;
    let (_never, mut stopping) = tokio::sync::watch::channel(false);
    let done = crate::sync::resync(
        &local,
        &hub,
        config.sync.upload_batch,
        crate::sync::OPERATOR,
        &mut stopping,
    )
    .await;
    let pending = local.read(|view| view.outbox().0);
    local.close().await;
    match done {
        Ok(Some(resynced)) => Ok(format!(
            "re-synced from the hub's snapshot at position {}: {} of this store's events were missing at the hub and \
             were uploaded again; {pending} unconfirmed events kept (the agent uploads them when it starts)",
            resynced.position, resynced.reuploaded
        )),
        Ok(None) => Err(OfflineError::Hub(
            "the hub could not be reached or refused (see the log above); nothing changed".into(),
        )),
        Err(error) => Err(OfflineError::Store {
            path: store_path(config).display().to_string(),
            reason: error.to_string(),
        }),
    }
}

/// The local store and a hub handle, from the configuration.
fn open(config: &EdgeConfig) -> Result<(LocalStore, Hub), OfflineError> {
    let credentials = config.hub_credentials()?;
    let path = store_path(config);
    if !path.exists() {
        return Err(OfflineError::Store {
            path: path.display().to_string(),
            reason: "no such file (is data_dir / SHELFSYNC_EDGE_DATA_DIR right?)".into(),
        });
    }
    let local = LocalStore::open(&path, credentials.store_id).map_err(|e| OfflineError::Store {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let hub = Hub::new(&credentials, config, Arc::new(LinkStatus::default()));
    Ok((local, hub))
}
