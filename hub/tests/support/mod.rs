//! Test support: start a real hub in-process on a port-0 listener with its own data dir,
//! and talk to it over real HTTP. The hub stops (gracefully) when the handle drops.

#![allow(dead_code)]

use serde_json::Value;
use shelfsync_hub::config::HubConfig;
use std::path::PathBuf;
use tokio::sync::oneshot;

/// The admin token every test hub uses.
pub const ADMIN: &str = "test-admin-token-0123456789";

/// A running hub.
pub struct TestHub {
    pub url: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A hub on a fresh data dir with the demo data.
pub async fn spawn_hub() -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    let mut hub = spawn_hub_at(path, true).await;
    hub._dir = Some(dir);
    hub
}

/// A hub on `data_dir` (kept after the hub stops).
pub async fn spawn_hub_at(data_dir: PathBuf, demo: bool) -> TestHub {
    shelfsync_hub::telemetry::init_test_logging();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = HubConfig {
        data_dir: data_dir.clone(),
        admin_token: Some(ADMIN.into()),
        ..HubConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let options = shelfsync_hub::RunOptions {
        seed_demo_data: demo,
        announce: false,
    };
    let task = tokio::spawn(async move {
        shelfsync_hub::run(config, listener, options, async {
            let _ = stopped.await;
        })
        .await
        .expect("hub run");
    });
    let hub = TestHub {
        url,
        client: reqwest::Client::new(),
        data_dir,
        _dir: None,
        stop: Some(stop),
        task: Some(task),
    };
    // The listener is bound before run() starts, so requests queue until it serves.
    let ready = hub
        .client
        .get(format!("{}/healthz", hub.url))
        .send()
        .await
        .expect("healthz");
    assert!(ready.status().is_success());
    hub
}

impl TestHub {
    /// Stops the hub and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("hub task");
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url)).bearer_auth(ADMIN)
    }

    pub fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(body)
    }

    pub fn put(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .put(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(body)
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends and returns (status, JSON body, content type).
pub async fn call(request: reqwest::RequestBuilder) -> (u16, Value, String) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body, content_type)
}

/// Demo ids.
pub fn demo_store(n: usize) -> String {
    shelfsync_hub::seed::stores()[n].id.to_string()
}

pub fn demo_product(n: usize) -> String {
    shelfsync_hub::seed::products()[n].id.to_string()
}
