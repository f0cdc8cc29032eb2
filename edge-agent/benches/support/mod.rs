//! What the edge agent's bench binaries share: env knobs, statistics, per-thread CPU
//! accounting, and a real agent started in-process through the agent's test kit
//! ([`TestAgent`]: 127.0.0.1:0, bootstrapped from a synthetic snapshot, its hub URL at a
//! closed port, since the POS API needs no hub), on a runtime of its own.

#![allow(dead_code, unused_imports)]

use shelfsync_common::{ProductId, StoreId};
pub use shelfsync_edge::testing::TERMINAL;
use shelfsync_edge::testing::{Bulk, Options, TestAgent};
use std::time::Duration;

pub use shelfsync_common::testing::measure::*;

/// A running agent (its own runtime, threads named `agent`).
pub struct BenchAgent {
    pub url: String,
    pub store_id: StoreId,
    pub products: Vec<ProductId>,
    agent: Option<TestAgent>,
    // Dropped after the agent, whose tasks run on it.
    pub runtime: tokio::runtime::Runtime,
}

impl BenchAgent {
    /// An agent on a fresh data dir under [`bench_dir`], bootstrapped from a snapshot
    /// with `products` products, each with `on_hand` units at this store.
    pub fn start(products: usize, on_hand: i64) -> Self {
        let runtime = runtime("agent");
        let options = Options {
            bulk: Some(Bulk { products, on_hand }),
            data_parent: Some(bench_dir()),
            ..Options::default()
        };
        let agent = runtime.block_on(TestAgent::spawn_with(options));
        let url = agent.url.clone();
        runtime.block_on(async {
            for _ in 0..600 {
                if let Ok(r) = agent.client.get(format!("{url}/readyz")).send().await {
                    if r.status().is_success() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the agent did not become ready");
        });
        Self {
            url,
            store_id: agent.store_id,
            products: agent.catalog.bulk.clone(),
            agent: Some(agent),
            runtime,
        }
    }

    /// Stops the agent gracefully and waits for it.
    pub fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            self.runtime.block_on(agent.stop());
        }
    }
}
