//! The sync worker: everything that crosses the link to the hub.
//!
//! NOTE: being built (see the edge agent issue); only the shared link status is here yet.

use crate::config::{EdgeConfig, HubLink};
use crate::store::LocalStore;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What the status page and heartbeats say about the hub link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// The last call to the hub succeeded and the breaker is closed.
    pub online: bool,
    /// The breaker's phase: closed, open or half_open.
    pub breaker: &'static str,
    /// Why the breaker last opened.
    pub breaker_reason: Option<String>,
    /// The push stream is connected.
    pub push_connected: bool,
}

impl Default for LinkState {
    fn default() -> Self {
        Self {
            online: false,
            breaker: "closed",
            breaker_reason: None,
            push_connected: false,
        }
    }
}

/// The link state, shared between the worker (writer) and the API (reader).
#[derive(Debug, Default)]
pub struct LinkStatus(Mutex<LinkState>);

impl LinkStatus {
    /// The current state.
    pub fn get(&self) -> LinkState {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Changes the state.
    pub fn update(&self, change: impl FnOnce(&mut LinkState)) {
        change(&mut self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// The running worker.
pub struct SyncHandle {
    status: Arc<LinkStatus>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SyncHandle {
    /// The shared link state.
    pub fn status(&self) -> Arc<LinkStatus> {
        self.status.clone()
    }

    /// Waits for every task to stop (after `stopping` turned true).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts the worker's tasks; they stop when `stopping` turns true.
pub fn spawn(store: LocalStore, link: HubLink, config: Arc<EdgeConfig>, stopping: watch::Receiver<bool>) -> SyncHandle {
    let _ = (store, link, config, stopping);
    SyncHandle {
        status: Arc::new(LinkStatus::default()),
        tasks: Vec::new(),
    }
}
