//! The hub as the sync worker sees it: one [`Hub`] handle whose calls go through the
//! HTTP client ([`client`]: the five sync routes, each answer checked) and the
//! breaker-guarded link ([`link`]: refused at once while the breaker is open, every
//! outcome counted and shown on the status page). The tasks only say what they want
//! (`ctx.hub.upload(batch)`); none composes the client and the breaker itself.

mod client;
mod link;

pub(crate) use client::chain;
pub use client::HubError;
pub use link::CallError;

use crate::config::{EdgeConfig, HubCredentials};
use crate::sync::LinkStatus;
use client::HubClient;
use link::Link;
use shelfsync_common::breaker::BreakerState;
use shelfsync_common::wire::sync::{
    Heartbeat, HeartbeatAck, PullResponse, ShareGrant, ShareRequest, SnapshotResponse, UploadEvent, UploadResponse,
};
use std::sync::Arc;
use tokio::sync::watch;

/// This store's hub, shared by every task of the worker.
#[derive(Debug)]
pub struct Hub {
    client: HubClient,
    link: Link,
}

impl Hub {
    /// The hub at `credentials`, with the timeouts and breaker thresholds of `config`,
    /// reporting the link's state to `status`.
    pub fn new(credentials: &HubCredentials, config: &EdgeConfig, status: Arc<LinkStatus>) -> Self {
        Self {
            client: HubClient::new(credentials, &config.sync),
            link: Link::new(config.breaker(), status),
        }
    }

    /// Uploads a batch of the outbox (`POST /v1/sync/upload`).
    pub async fn upload(&self, events: Vec<UploadEvent>) -> Result<UploadResponse, CallError> {
        self.link.call("upload", self.client.upload(events)).await
    }

    /// Pulls the events after `after` (`GET /v1/sync/events`); an event this agent
    /// cannot read is skipped with an alarm.
    pub async fn pull(&self, after: u64, limit: usize) -> Result<PullResponse, CallError> {
        self.link.call("pull", self.client.pull(after, limit)).await
    }

    /// Fetches this store's starting snapshot (`GET /v1/sync/snapshot`).
    pub async fn snapshot(&self) -> Result<SnapshotResponse, CallError> {
        self.link.call("snapshot", self.client.snapshot()).await
    }

    /// Asks the hub for more units of an allocation's shared stock
    /// (`POST /v1/sync/allocations/request`), answered in one round trip. A refusal for
    /// the stream's state (`409 no_allocation`, `404 product_not_found`: the problem's
    /// code in `Ok(Err(..))`) is an answer, not a failure of the link: a till asking again
    /// and again must not open the breaker that the uploads and the push stream share.
    pub async fn request_share(&self, request: &ShareRequest) -> Result<Result<ShareGrant, String>, CallError> {
        let ask = async {
            match self.client.request_share(request).await {
                Ok(grant) => Ok(Ok(grant)),
                Err(HubError::Status {
                    status: 404 | 409,
                    code,
                    ..
                }) => Ok(Err(code)),
                Err(error) => Err(error),
            }
        };
        self.link.call("ask for more units", ask).await
    }

    /// Reports this agent's state to the fleet view (`POST /v1/sync/heartbeat`).
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<HeartbeatAck, CallError> {
        self.link.call("heartbeat", self.client.heartbeat(heartbeat)).await
    }

    /// Opens the push stream after `cursor` (`GET /v1/sync/stream`); the answer's body is
    /// the event stream.
    pub async fn open_stream(&self, cursor: u64) -> Result<reqwest::Response, CallError> {
        self.link
            .call("open the push stream", self.client.open_stream(cursor))
            .await
    }

    /// Counts a failure found after a call succeeded (e.g. the push stream sent data that
    /// breaks the protocol) against the link.
    pub fn report_failure(&self, what: &str, error: &HubError) {
        self.link.report_failure(what, error);
    }

    /// Waits until a call may pass (the breaker is closed, or its open period is over);
    /// false when stopping first.
    pub async fn ready(&self, stopping: &mut watch::Receiver<bool>) -> bool {
        self.link.ready(stopping).await
    }

    /// Resolves when the breaker next closes after having been open.
    pub async fn reopened_and_closed(&self) {
        self.link.reopened_and_closed().await;
    }

    /// The breaker's phase now.
    pub fn breaker_state(&self) -> BreakerState {
        self.link.state()
    }
}
