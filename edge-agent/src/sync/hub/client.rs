//! The hub's HTTP client: the five sync routes, each request with the store token and the
//! protocol header, each answer checked before it is used.
//!
//! Every answer must carry the hub's protocol header: a hub of another major version is a
//! [`HubError::Protocol`] (upgrade one side), an answer without the header comes from
//! something that is not a shelfsync hub (a wrong `hub_url`, a captive portal, a proxy
//! page). 401/403 mean the hub refused this store's token. Calls have a total timeout
//! (`sync.request_timeout_secs`); the push stream has none, but a read timeout longer
//! than the hub's keep-alive interval, so a silently dead connection is noticed.
//!
//! Pulls ask for pages of up to [`MAX_PULL_LIMIT`] events; a hub that refuses that many
//! (400: one from before the limit was raised) is asked again with [`LEGACY_PULL_LIMIT`],
//! and this client keeps to it from then on (until the agent restarts); so does a client
//! whose large page did not arrive (a timeout on a slow link, or a cut), since ~5 MB may
//! not cross a slow store link within the request timeout while ~0.5 MB does.

use crate::config::{HubCredentials, SyncConfig};
use crate::sync::meters;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use shelfsync_common::breaker::Failure;
use shelfsync_common::wire::sync::{
    protocol_compatible, Heartbeat, HeartbeatAck, PullResponse, ShareGrant, ShareRequest, SnapshotResponse,
    UploadEvent, UploadRequest, UploadResponse, LEGACY_PULL_LIMIT, MAX_PULL_LIMIT, PROTOCOL_HEADER, PROTOCOL_VERSION,
};
use shelfsync_common::EventEnvelope;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why a call to the hub failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// No connection could be made (refused: nothing listens at hub_url, e.g. the hub is
    /// restarting; or no route): the call never reached the hub.
    #[error("the hub is unreachable: {0}")]
    NoConnection(String),
    /// No answer: the connection was reset or timed out.
    #[error("the hub is unreachable: {0}")]
    Unreachable(String),
    /// 401/403: the token is wrong, or was revoked (the store was revoked at the hub).
    #[error(
        "the hub refused this store's token (HTTP {status}: {detail}); check hub_token, or whether the store \
         was revoked at the hub"
    )]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The hub's explanation.
        detail: String,
    },
    /// The hub speaks another major version of the sync protocol.
    #[error("the hub speaks sync protocol {hub:?} and this agent speaks {PROTOCOL_VERSION}: upgrade the older side")]
    Protocol {
        /// What the hub announced.
        hub: String,
    },
    /// A success answer without the protocol header: not a shelfsync hub.
    #[error(
        "the server at hub_url answered without the {PROTOCOL_HEADER} header (HTTP {status}): it is not a \
         shelfsync hub, or a proxy is in the way; check hub_url"
    )]
    NotAHub {
        /// Its status.
        status: u16,
    },
    /// Any other error answer.
    #[error("the hub answered HTTP {status} ({code}): {detail}")]
    Status {
        /// The status.
        status: u16,
        /// The problem's code (`unknown` when the body is not a problem).
        code: String,
        /// The problem's detail.
        detail: String,
    },
    /// A success answer whose body is not what the protocol says.
    #[error("the hub's answer could not be read: {0}")]
    Decode(String),
}

impl HubError {
    /// What the failure cost the hub, for the link's breaker: a call that never connected
    /// cost it nothing, so probing again soon is harmless.
    pub fn failure(&self) -> Failure {
        match self {
            HubError::NoConnection(_) => Failure::Refused,
            HubError::Unreachable(_)
            | HubError::Unauthorized { .. }
            | HubError::Protocol { .. }
            | HubError::NotAHub { .. }
            | HubError::Status { .. }
            | HubError::Decode(_) => Failure::Failed,
        }
    }
}

/// The hub's sync API, as this store.
#[derive(Debug, Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: String,
    token: shelfsync_common::server::secret::Secret,
    timeout: Duration,
    /// The largest pull page to ask for: [`MAX_PULL_LIMIT`] until the hub refuses it
    /// (shared by the clones).
    pull_limit: Arc<AtomicUsize>,
}

/// A pull page with its events still unread (their text only, not parsed into a tree),
/// so that each is read on its own, straight into an [`EventEnvelope`].
#[derive(serde::Deserialize)]
struct RawPullPage {
    events: Vec<Box<serde_json::value::RawValue>>,
    next_cursor: u64,
    head: u64,
}

/// The position of an event that cannot be read otherwise (for the alarm).
#[derive(serde::Deserialize)]
struct PositionOnly {
    position: Option<u64>,
}

impl HubClient {
    /// A client for `credentials`, with the timeouts of `sync`.
    pub fn new(credentials: &HubCredentials, sync: &SyncConfig) -> Self {
        let timeout = Duration::from_secs(sync.request_timeout_secs);
        let mut http = reqwest::Client::builder();
        if let Some(ca_file) = &credentials.ca_file {
            // Checked when the configuration was loaded.
            match crate::config::trust_roots(ca_file) {
                Ok(roots) => {
                    for root in roots {
                        http = http.add_root_certificate(root);
                    }
                }
                Err(error) => tracing::error!(%error, "the hub's certificate will not be trusted"),
            }
        }
        let http = http
            .user_agent(concat!("shelfsync-edge/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            // No byte for this long means the connection is dead (the hub sends keep-alives).
            .read_timeout(Duration::from_secs(sync.stream_idle_timeout_secs))
            .tcp_keepalive(Duration::from_secs(30))
            // Drop idle connections before the hub's header timeout (10 s by default) closes
            // them, so a request is not sent on a connection the hub is closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|error| {
                tracing::error!(%error, "building the hub client; using the defaults");
                reqwest::Client::new()
            });
        Self {
            http,
            base: credentials.hub_url.trim_end_matches('/').to_owned(),
            token: credentials.hub_token.clone(),
            timeout,
            pull_limit: Arc::new(AtomicUsize::new(MAX_PULL_LIMIT)),
        }
    }

    /// `POST /v1/sync/upload`.
    pub async fn upload(&self, events: Vec<UploadEvent>) -> Result<UploadResponse, HubError> {
        self.json(
            self.request(Method::POST, "/v1/sync/upload")
                .json(&UploadRequest { events }),
        )
        .await
    }

    /// `GET /v1/sync/events?after=&limit=`, at most `limit` events (and at most what the
    /// hub accepts, see the module header). Each event is read on its own: one this agent
    /// cannot read is skipped with an alarm ([`meters::skip_unreadable`]) instead of
    /// failing the page, which would stop the store from following the hub for good (the
    /// same page would fail on every retry). `next_cursor` still moves past it.
    pub async fn pull(&self, after: u64, limit: usize) -> Result<PullResponse, HubError> {
        let limit = limit.min(self.pull_limit.load(Ordering::Relaxed));
        match self.pull_page(after, limit).await {
            Err(HubError::Status {
                status: 400, detail, ..
            }) if limit > LEGACY_PULL_LIMIT => {
                tracing::info!(limit, %detail, "the hub refuses pull pages this large; asking for {LEGACY_PULL_LIMIT}");
                self.pull_limit.store(LEGACY_PULL_LIMIT, Ordering::Relaxed);
                self.pull_page(after, LEGACY_PULL_LIMIT).await
            }
            // A large page that did not arrive (a timeout on a slow link, a cut): later
            // pulls ask for the smaller page, which a slow link carries within the timeout.
            Err(HubError::Unreachable(detail)) if limit > LEGACY_PULL_LIMIT => {
                tracing::warn!(limit, %detail, "a pull page did not arrive; asking for {LEGACY_PULL_LIMIT} from now on");
                self.pull_limit.store(LEGACY_PULL_LIMIT, Ordering::Relaxed);
                Err(HubError::Unreachable(detail))
            }
            answer => answer,
        }
    }

    async fn pull_page(&self, after: u64, limit: usize) -> Result<PullResponse, HubError> {
        let page: RawPullPage = self
            .json(self.request(Method::GET, &format!("/v1/sync/events?after={after}&limit={limit}")))
            .await?;
        let events = page
            .events
            .iter()
            .filter_map(|event| {
                serde_json::from_str::<EventEnvelope>(event.get())
                    .map_err(|error| {
                        let position = serde_json::from_str::<PositionOnly>(event.get())
                            .ok()
                            .and_then(|p| p.position);
                        meters::skip_unreadable(position, &error.to_string());
                    })
                    .ok()
            })
            .collect();
        Ok(PullResponse {
            events,
            next_cursor: page.next_cursor,
            head: page.head,
        })
    }

    /// `GET /v1/sync/snapshot`.
    pub async fn snapshot(&self) -> Result<SnapshotResponse, HubError> {
        self.json(self.request(Method::GET, "/v1/sync/snapshot")).await
    }

    /// `POST /v1/sync/allocations/request`.
    pub async fn request_share(&self, request: &ShareRequest) -> Result<ShareGrant, HubError> {
        self.json(self.request(Method::POST, "/v1/sync/allocations/request").json(request))
            .await
    }

    /// `POST /v1/sync/heartbeat`.
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<HeartbeatAck, HubError> {
        self.json(self.request(Method::POST, "/v1/sync/heartbeat").json(heartbeat))
            .await
    }

    /// Opens `GET /v1/sync/stream` after `cursor` (exclusive). The answer's body is the
    /// event stream; only opening it (up to the headers) is bounded by the call timeout.
    pub async fn open_stream(&self, cursor: u64) -> Result<Response, HubError> {
        let request = self
            .request(Method::GET, "/v1/sync/stream")
            .header("Last-Event-ID", cursor.to_string())
            .header(ACCEPT, "text/event-stream");
        let response = tokio::time::timeout(self.timeout, self.send(request))
            .await
            .map_err(|_| HubError::Unreachable(format!("no answer within {} s", self.timeout.as_secs())))??;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            return Err(HubError::Decode(format!(
                "the push stream answered with content type {content_type:?}"
            )));
        }
        Ok(response)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, HubError> {
        let response = self.send(request.timeout(self.timeout)).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| HubError::Unreachable(describe(&e)))?;
        serde_json::from_slice(&body).map_err(|e| HubError::Decode(e.to_string()))
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, HubError> {
        let response = request.send().await.map_err(|e| {
            if e.is_connect() && !e.is_timeout() {
                HubError::NoConnection(describe(&e))
            } else {
                HubError::Unreachable(describe(&e))
            }
        })?;
        check(response).await
    }
}

/// The checks every answer passes: protocol version, then status, then that a success
/// really comes from a hub.
async fn check(response: Response) -> Result<Response, HubError> {
    let announced = response
        .headers()
        .get(PROTOCOL_HEADER)
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    if let Some(version) = &announced {
        if !protocol_compatible(version) {
            return Err(HubError::Protocol { hub: version.clone() });
        }
    }
    let status = response.status();
    if !status.is_success() {
        let (code, detail) = problem(response).await;
        return Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => HubError::Unauthorized {
                status: status.as_u16(),
                detail,
            },
            _ => HubError::Status {
                status: status.as_u16(),
                code,
                detail,
            },
        });
    }
    if announced.is_none() {
        return Err(HubError::NotAHub {
            status: status.as_u16(),
        });
    }
    Ok(response)
}

/// The `code` and `detail` of a problem answer, or what can be said without them.
async fn problem(response: Response) -> (String, String) {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<shelfsync_common::wire::problem::Problem>(&text) {
        Ok(problem) => (problem.code, problem.detail),
        Err(_) => {
            let mut excerpt: String = text.chars().take(200).collect();
            if excerpt.trim().is_empty() {
                excerpt = status.canonical_reason().unwrap_or("no body").to_owned();
            }
            ("unknown".into(), excerpt)
        }
    }
}

/// A transport error with its causes ("error sending request" alone says little).
pub(crate) fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    chain(error)
}

/// An error and its sources, joined with ": ".
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};
    use axum::response::IntoResponse;
    use shelfsync_common::StoreId;

    /// A server on 127.0.0.1 that answers every request with `answer` (given its URI) and
    /// records the headers it got.
    async fn server(
        answer: fn(&axum::http::Uri) -> axum::response::Response,
    ) -> (HubClient, tokio::sync::mpsc::UnboundedReceiver<HeaderMap>) {
        let (seen, requests) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
            let _ = seen.send(headers);
            async move { answer(&uri) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let credentials = HubCredentials {
            store_id: StoreId::new_v7(),
            hub_url: url,
            ca_file: None,
            hub_token: "secret-token".into(),
        };
        (HubClient::new(&credentials, &SyncConfig::default()), requests)
    }

    fn with_protocol(version: &'static str, response: impl IntoResponse) -> axum::response::Response {
        let mut response = response.into_response();
        response
            .headers_mut()
            .insert(PROTOCOL_HEADER, HeaderValue::from_static(version));
        response
    }

    #[tokio::test]
    async fn every_request_carries_the_token_and_the_protocol_version() {
        let (client, mut requests) = server(|_| with_protocol("1.3", axum::Json(HeartbeatAck { head: 7 }))).await;
        let beat = Heartbeat {
            agent_version: "x".into(),
            cursor: 1,
            outbox_depth: 0,
            oldest_pending_age_secs: None,
            breaker_state: "closed".into(),
            quarantined: 0,
            resynced: None,
        };
        assert_eq!(
            client.heartbeat(&beat).await,
            Ok(HeartbeatAck { head: 7 }),
            "a minor version difference is fine"
        );
        let headers = requests.recv().await.unwrap();
        assert_eq!(headers[PROTOCOL_HEADER], PROTOCOL_VERSION);
        assert_eq!(headers["authorization"], "Bearer secret-token");
    }

    #[tokio::test]
    async fn a_hub_of_another_major_version_is_a_clear_error() {
        let (client, _) = server(|_| {
            let problem =
                shelfsync_common::wire::problem::Problem::new(400, "unsupported_protocol", "Bad request", "upgrade");
            with_protocol("2.0", (StatusCode::BAD_REQUEST, axum::Json(problem)))
        })
        .await;
        let error = client.pull(0, 10).await.unwrap_err();
        assert_eq!(error, HubError::Protocol { hub: "2.0".into() });
        assert!(error.to_string().contains("upgrade the older side"), "{error}");
    }

    #[tokio::test]
    async fn a_refused_token_says_so() {
        let (client, _) = server(|_| {
            let problem = shelfsync_common::wire::problem::Problem::new(
                401,
                "unauthorized",
                "Unauthorized",
                "unknown or revoked token",
            );
            with_protocol("1.0", (StatusCode::UNAUTHORIZED, axum::Json(problem)))
        })
        .await;
        let error = client.snapshot().await.unwrap_err();
        assert!(matches!(error, HubError::Unauthorized { status: 401, .. }), "{error:?}");
        assert!(
            error.to_string().contains("the hub refused this store's token"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_answer_without_the_protocol_header_is_not_from_a_hub() {
        let (client, _) = server(|_| axum::Json(HeartbeatAck { head: 1 }).into_response()).await;
        assert_eq!(client.pull(0, 10).await.unwrap_err(), HubError::NotAHub { status: 200 });
        let (client, _) = server(|_| (StatusCode::BAD_GATEWAY, "upstream down").into_response()).await;
        let error = client.pull(0, 10).await.unwrap_err();
        assert!(
            matches!(&error, HubError::Status { status: 502, detail, .. } if detail == "upstream down"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_pulled_event_this_agent_cannot_read_is_skipped_not_fatal() {
        let (client, _) = server(|_| {
            let mut page = serde_json::json!({"events": [], "next_cursor": 3, "head": 9});
            let readable = |position: u64| {
                serde_json::json!({
                    "event_id": uuid::Uuid::now_v7(), "stream": {"product_id": uuid::Uuid::now_v7()},
                    "stream_version": 1, "position": position, "schema_version": 1,
                    "type": "ProductRegistered",
                    "data": {"id": uuid::Uuid::now_v7(), "sku": "S", "name": "N", "price_minor": 1},
                    "metadata": {"origin": "hub", "actor": "a", "correlation_id": uuid::Uuid::nil(),
                                 "occurred_at": "2026-01-01T00:00:00Z"},
                })
            };
            let mut from_the_future = readable(2);
            from_the_future["type"] = serde_json::json!("StockTeleported");
            page["events"] = serde_json::json!([readable(1), from_the_future, readable(3)]);
            with_protocol("1.0", axum::Json(page))
        })
        .await;
        let page = client.pull(0, 10).await.expect("the page is read");
        let positions: Vec<u64> = page.events.iter().map(|e| e.position).collect();
        assert_eq!(positions, vec![1, 3], "the unreadable one is skipped");
        assert_eq!((page.next_cursor, page.head), (3, 9), "and the cursor moves past it");
    }

    #[tokio::test]
    async fn a_large_pull_page_that_does_not_arrive_makes_later_pages_small() {
        let (client, _) = server(|uri| {
            let query = uri.query().unwrap_or_default();
            if query.contains(&format!("limit={MAX_PULL_LIMIT}")) {
                // The link breaks in the middle of the large page.
                let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
                    Ok(axum::body::Bytes::from_static(b"{\"events\": [")),
                    Err(std::io::Error::other("link cut")),
                ];
                let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
                return with_protocol("1.0", body);
            }
            with_protocol(
                "1.0",
                axum::Json(serde_json::json!({"events": [], "next_cursor": 7, "head": 9})),
            )
        })
        .await;
        let failed = client.pull(0, MAX_PULL_LIMIT).await;
        assert!(matches!(failed, Err(HubError::Unreachable(_))), "{failed:?}");
        let page = client.pull(0, MAX_PULL_LIMIT).await.expect("the smaller page arrives");
        assert_eq!(page.next_cursor, 7);
    }

    #[tokio::test]
    async fn a_hub_that_refuses_large_pull_pages_is_asked_for_smaller_ones() {
        let (client, _) = server(|uri| {
            let query = uri.query().unwrap_or_default();
            let limit: usize = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("limit="))
                .and_then(|limit| limit.parse().ok())
                .unwrap_or(500);
            if limit > LEGACY_PULL_LIMIT {
                let problem = shelfsync_common::wire::problem::Problem::new(
                    400,
                    "invalid_query",
                    "Bad Request",
                    "limit must be 1..=1000",
                );
                return with_protocol("1.0", (StatusCode::BAD_REQUEST, axum::Json(problem)));
            }
            with_protocol(
                "1.0",
                axum::Json(serde_json::json!({"events": [], "next_cursor": limit, "head": 9})),
            )
        })
        .await;
        let page = client.pull(0, MAX_PULL_LIMIT).await.expect("the smaller page");
        assert_eq!(
            page.next_cursor, LEGACY_PULL_LIMIT as u64,
            "asked for the older hub's largest page"
        );
        let page = client.pull(0, MAX_PULL_LIMIT).await.expect("the smaller page again");
        assert_eq!(page.next_cursor, LEGACY_PULL_LIMIT as u64, "and kept to it");
        let page = client.pull(0, 10).await.expect("a small page");
        assert_eq!(page.next_cursor, 10, "a smaller limit is asked for as it is");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_call_that_never_reached_the_hub() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let credentials = HubCredentials {
            store_id: StoreId::new_v7(),
            hub_url: url,
            ca_file: None,
            hub_token: "t".into(),
        };
        let error = HubClient::new(&credentials, &SyncConfig::default())
            .pull(0, 1)
            .await
            .unwrap_err();
        assert!(matches!(error, HubError::NoConnection(_)), "{error:?}");
        assert_eq!(error.failure(), Failure::Refused);
        assert!(error.to_string().contains("Connection refused"), "{error}");
    }
}
