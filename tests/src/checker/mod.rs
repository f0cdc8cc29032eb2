//! The checker: after the faults are healed, did every store converge with the hub, and
//! is every sale a till was told about in the hub's log exactly once?
//!
//! 1. **Quiescence** (bounded wait): the hub's read model has reached its head, and every
//!    agent reports an empty outbox (quarantined events are counted apart and listed) and
//!    a cursor equal to the hub's head, with the head unchanged between two looks.
//! 2. **The log's shape**: positions are exactly `1..=head`, event ids are unique, each
//!    stream's versions are `1, 2, 3, ...` in position order.
//! 3. **Acknowledged writes**: every write a till got a 2xx for is in the log (once, by
//!    the uniqueness above) on its stream with the payload the agent answered; and every
//!    event a store recorded is one a till was told about (nothing invented, nothing
//!    doubled under another id).
//! 4. **Convergence**: for every store and product, the agent's figures
//!    (`GET /v1/inventory/products/{id}` at the agent), the hub's read model (`GET
//!    /v1/inventory/products/{id}/stores/{store}?min_position=head`) and the fold of the
//!    log (`inventory::apply` per stream) agree: on hand, reserved, available, version; the
//!    agent has nothing pending; with an allocation, the agent's shares are the fold's.
//! 5. **Oversells**: each `OversellDetected` names (`caused_by`) an earlier event of its
//!    stream, recorded by a store, right after which the fold's `available` was below zero
//!    and lower than before, with the figures the event states; and every such breach has
//!    exactly one `OversellDetected`.
//! 6. **The fleet view** (`GET /v1/admin/fleet`) counts each store's oversells and rejected
//!    uploads as the log and the agent do, and its last heartbeat shows it caught up.
//!
//! The log is read straight from the hub's SQLite file through the hub's own read-only
//! pool (WAL: the running hub is not disturbed), or, for several hubs sharing one
//! PostgreSQL database, from that database with the hubs' own reads (`log.rs`). With
//! several hubs, checks 1, 4 and 6 are made on every hub.

use crate::process::{ADMIN_TOKEN, MANAGER_KEY, TERMINAL_KEY};
use crate::workload::{http_client, TillLog, WebLog};
use serde_json::Value;
use shelfsync_common::domain::event::ReleaseReason;
use shelfsync_common::domain::inventory::{self, InventoryState};
use shelfsync_common::wire::api::{AllocationView, StockLevel};
use shelfsync_common::wire::edge::{AgentStatus, LocalStockLevel};
use shelfsync_common::wire::sync::FleetResponse;
use shelfsync_common::{EventEnvelope, EventId, EventPayload, Origin, ProductId, StoreId, StreamId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// An agent as the checker sees it.
#[derive(Debug, Clone)]
pub struct AgentRef {
    /// A name for messages.
    pub name: String,
    /// Its store.
    pub store: StoreId,
    /// Its POS API base URL.
    pub url: String,
}

/// What the checker found (when everything held).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The hub's head at the check.
    pub head: u64,
    /// The whole log.
    pub log: Vec<EventEnvelope>,
    /// Every agent's status at quiescence.
    pub statuses: Vec<(String, AgentStatus)>,
    /// `OversellDetected` events: (stream, caused_by, available after).
    pub oversells: Vec<(StreamId, EventId, i64)>,
    /// Quarantined events, per agent, as the agent lists them.
    pub quarantined: Vec<(String, Value)>,
    /// How long quiescence took.
    pub quiesced_in: Duration,
}

impl Report {
    /// One paragraph for the test output.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "checked: head {}, {} events, {} oversells, quiescent after {:.1}s",
            self.head,
            self.log.len(),
            self.oversells.len(),
            self.quiesced_in.as_secs_f64()
        );
        for (name, status) in &self.statuses {
            let _ = write!(
                out,
                "\n  {name}: cursor {} outbox {} quarantined {} breaker {} link {} push {}",
                status.cursor,
                status.outbox_depth,
                status.quarantined,
                status.breaker,
                status.link,
                status.push_connected
            );
        }
        out
    }
}

/// What a scenario lets the checker accept.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Longest wait for quiescence.
    pub quiesce_within: Duration,
    /// Quarantined events are acceptable (the scenario explains them); otherwise any is a failure.
    pub quarantine_ok: bool,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            quiesce_within: Duration::from_secs(60),
            quarantine_ok: false,
        }
    }
}

/// GET with a bearer token; (status, JSON or text).
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Result<(u16, Value), String> {
    let response = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("GET {url}: {e}"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// POST `body` with a bearer token; (status, JSON or text). `Err` when no complete answer
/// arrived (the outcome is unknown).
pub async fn post_json(http: &reqwest::Client, url: &str, token: &str, body: &Value) -> Result<(u16, Value), String> {
    let response = http
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e:?}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("POST {url}: {e}"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// The hub's head and projected position (`/readyz`).
pub async fn hub_positions(http: &reqwest::Client, hub_url: &str) -> Result<(u64, u64), String> {
    let (status, ready) = get_json(http, &format!("{hub_url}/readyz"), ADMIN_TOKEN).await?;
    match (status, ready["head"].as_u64(), ready["projected"].as_u64()) {
        (200, Some(head), Some(projected)) => Ok((head, projected)),
        _ => Err(format!("/readyz: {status} {ready}")),
    }
}

/// An agent's `/v1/status`.
pub async fn agent_status(http: &reqwest::Client, agent_url: &str) -> Result<AgentStatus, String> {
    let (status, body) = get_json(http, &format!("{agent_url}/v1/status"), TERMINAL_KEY).await?;
    if status != 200 {
        return Err(format!("{agent_url}/v1/status: {status} {body}"));
    }
    serde_json::from_value(body.clone())
        .map_err(|e| format!("{agent_url}/v1/status is not an AgentStatus ({e}): {body}"))
}

/// Waits until the hub's read model is at its head and every agent has an empty outbox
/// and a cursor at the head, with the head stable between two looks.
pub async fn wait_quiescent(
    http: &reqwest::Client,
    hub_url: &str,
    agents: &[AgentRef],
    within: Duration,
) -> Result<(u64, Vec<(String, AgentStatus)>), String> {
    wait_quiescent_on(http, &[hub_url.to_owned()], agents, within).await
}

/// [`wait_quiescent`] for several hubs on one log: every hub has the same head and its
/// read model at it.
pub async fn wait_quiescent_on(
    http: &reqwest::Client,
    hub_urls: &[String],
    agents: &[AgentRef],
    within: Duration,
) -> Result<(u64, Vec<(String, AgentStatus)>), String> {
    let deadline = Instant::now() + within;
    let mut last_head = None;
    let mut last_seen;
    loop {
        let look = async {
            let mut positions = Vec::new();
            for hub_url in hub_urls {
                positions.push(hub_positions(http, hub_url).await?);
            }
            let (head, projected) = positions.iter().copied().min().unwrap_or_default();
            let hubs_agree = positions.iter().all(|&(h, p)| h == head && p == head);
            let mut statuses = Vec::new();
            for agent in agents {
                statuses.push((agent.name.clone(), agent_status(http, &agent.url).await?));
            }
            Ok::<_, String>((head, projected, hubs_agree, statuses))
        }
        .await;
        match look {
            Ok((head, projected, hubs_agree, statuses)) => {
                let settled = hubs_agree
                    && statuses
                        .iter()
                        .all(|(_, s)| s.outbox_depth == 0 && s.cursor == head && s.hub_head == head);
                if settled && last_head == Some(head) {
                    return Ok((head, statuses));
                }
                last_head = settled.then_some(head);
                last_seen = format!("hub head {head} projected {projected} (all hubs agree: {hubs_agree})");
                for (name, s) in &statuses {
                    let _ = write!(
                        last_seen,
                        "\n  {name}: outbox {} (oldest {:?}s) quarantined {} cursor {} hub_head {} breaker {} link {} push {} bootstrapped {}",
                        s.outbox_depth,
                        s.oldest_pending_age_secs,
                        s.quarantined,
                        s.cursor,
                        s.hub_head,
                        s.breaker,
                        s.link,
                        s.push_connected,
                        s.bootstrapped
                    );
                }
            }
            Err(error) => last_seen = error,
        }
        if Instant::now() >= deadline {
            return Err(format!("not quiescent within {within:?}; last look:\n{last_seen}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Positions `1..=head`, unique event ids, contiguous stream versions.
pub fn log_shape_problems(log: &[EventEnvelope]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    let mut ids: HashMap<EventId, u64> = HashMap::new();
    for (index, event) in log.iter().enumerate() {
        if event.position != index as u64 + 1 {
            problems.push(format!(
                "positions must be 1..=head without gaps: event {index} has position {}",
                event.position
            ));
        }
        if let Some(earlier) = ids.insert(event.event_id, event.position) {
            problems.push(format!(
                "event id {} is in the log twice: at {earlier} and at {}",
                event.event_id, event.position
            ));
        }
        let version = versions.entry(event.stream).or_default();
        if event.stream_version != *version + 1 {
            problems.push(format!(
                "stream {} jumps from version {version} to {} at position {}",
                event.stream, event.stream_version, event.position
            ));
        }
        *version = event.stream_version;
    }
    problems
}

/// Every acknowledged write is in the log with its payload on its stream; every event a
/// store recorded was acknowledged to a till (reservations the store expired aside).
pub fn ack_problems(log: &[EventEnvelope], tills: &[TillLog]) -> Vec<String> {
    let mut problems = Vec::new();
    let by_id: HashMap<EventId, &EventEnvelope> = log.iter().map(|e| (e.event_id, e)).collect();
    let mut acked: HashMap<EventId, usize> = HashMap::new();
    for ack in tills.iter().flat_map(|t| &t.acks) {
        *acked.entry(ack.event_id).or_default() += 1;
        match by_id.get(&ack.event_id) {
            None => problems.push(format!(
                "acknowledged to a till but not in the hub's log: {:?} {} {} (event {}, key {})",
                ack.kind, ack.path, ack.body, ack.event_id, ack.key
            )),
            Some(event) => {
                let stream = StreamId::inventory(ack.product, ack.store);
                if event.stream != stream || event.payload != ack.payload {
                    problems.push(format!(
                        "acknowledged as {:?} on {stream} ({} {}), but the log holds {:?} on {} at {}",
                        ack.payload, ack.path, ack.body, event.payload, event.stream, event.position
                    ));
                }
                if event.metadata.origin != Origin::Store(ack.store) {
                    problems.push(format!(
                        "event {} was acknowledged by store {}'s agent but its origin is {:?}",
                        ack.event_id, ack.store, event.metadata.origin
                    ));
                }
            }
        }
    }
    // Two different requests must never be answered with the same event.
    let keys: HashMap<EventId, BTreeSet<&str>> =
        tills
            .iter()
            .flat_map(|t| &t.acks)
            .fold(HashMap::new(), |mut keys, ack| {
                keys.entry(ack.event_id).or_default().insert(ack.key.as_str());
                keys
            });
    for (event_id, keys) in keys {
        if keys.len() > 1 {
            problems.push(format!("event {event_id} answers several requests: {keys:?}"));
        }
    }
    let tills_stores: BTreeSet<StoreId> = tills.iter().filter_map(|t| t.store).collect();
    for event in log {
        let Origin::Store(store) = event.metadata.origin else {
            continue;
        };
        if !tills_stores.contains(&store) || acked.contains_key(&event.event_id) {
            continue;
        }
        // The store's jobs record these on their own: expiries, and the store's consent
        // to give the hub its share of an allocation.
        let by_a_job = matches!(
            event.payload,
            EventPayload::StockReleased {
                reason: ReleaseReason::Expired,
                ..
            } | EventPayload::AllocationTransferred { .. }
        );
        if !by_a_job {
            problems.push(format!(
                "store {store} recorded {:?} (event {}, position {}) but no till was told about it",
                event.payload, event.event_id, event.position
            ));
        }
    }
    problems
}

/// Every inventory stream folded: its state and last position.
pub fn fold(log: &[EventEnvelope]) -> BTreeMap<StreamId, (InventoryState, u64)> {
    let mut streams: BTreeMap<StreamId, (InventoryState, u64)> = BTreeMap::new();
    for event in log.iter().filter(|e| !e.stream.is_catalog()) {
        let (state, position) = streams.entry(event.stream).or_default();
        inventory::apply(state, &event.payload, event.metadata.origin.into());
        *position = event.position;
    }
    streams
}

/// The products in the catalog.
pub fn catalog(log: &[EventEnvelope]) -> Vec<ProductId> {
    let mut products: Vec<ProductId> = log
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::ProductRegistered(product) => Some(product.id),
            _ => None,
        })
        .collect();
    products.dedup();
    products
}

/// `OversellDetected` events that match no breach, and breaches without one.
pub fn oversell_problems(log: &[EventEnvelope]) -> (Vec<String>, Vec<(StreamId, EventId, i64)>) {
    let mut problems = Vec::new();
    let mut found = Vec::new();
    let mut states: HashMap<StreamId, InventoryState> = HashMap::new();
    // caused_by -> (stream, state after it), for events recorded by stores that breached.
    let mut breaches: HashMap<EventId, (StreamId, InventoryState, u64)> = HashMap::new();
    let mut flagged: HashMap<EventId, usize> = HashMap::new();
    for event in log.iter().filter(|e| !e.stream.is_catalog()) {
        let state = states.entry(event.stream).or_default();
        let before = state.clone();
        inventory::apply(state, &event.payload, event.metadata.origin.into());
        match &event.payload {
            EventPayload::OversellDetected {
                caused_by,
                on_hand,
                reserved,
                available,
            } => {
                found.push((event.stream, *caused_by, *available));
                *flagged.entry(*caused_by).or_default() += 1;
                match breaches.get(caused_by) {
                    None => problems.push(format!(
                        "OversellDetected at {} names {caused_by}, which is no breach by a store on {}",
                        event.position, event.stream
                    )),
                    Some((stream, after, at)) => {
                        if *stream != event.stream {
                            problems.push(format!(
                                "OversellDetected at {} is on {} but its cause is on {stream}",
                                event.position, event.stream
                            ));
                        }
                        if (*on_hand, *reserved, *available) != (after.on_hand, after.reserved(), after.available()) {
                            problems.push(format!(
                                "OversellDetected at {} says (on_hand, reserved, available) = ({on_hand}, {reserved}, {available}), but right after its cause (position {at}) the fold has ({}, {}, {})",
                                event.position,
                                after.on_hand,
                                after.reserved(),
                                after.available()
                            ));
                        }
                    }
                }
            }
            _ => {
                let from_store = matches!(event.metadata.origin, Origin::Store(_));
                if from_store && state.available() < 0 && state.available() < before.available() {
                    breaches.insert(event.event_id, (event.stream, state.clone(), event.position));
                }
            }
        }
    }
    for (caused_by, (stream, after, at)) in &breaches {
        match flagged.get(caused_by).copied().unwrap_or(0) {
            1 => {}
            0 => problems.push(format!(
                "event {caused_by} at {at} left {stream} at available {} (lower than before) but no OversellDetected names it",
                after.available()
            )),
            n => problems.push(format!("{n} OversellDetected events name {caused_by}")),
        }
    }
    (problems, found)
}

/// A stream's figures as the fold of the log gives them and the hub's read model answers
/// them: (on hand, reserved, available, version, position).
type Figures = (i64, i64, i64, u64, u64);

/// The hub's figures for `stream` read at `min_position` (`None`: no such stream),
/// retrying (bounded) while the read model answers 503 (not there yet).
async fn hub_figures(
    http: &reqwest::Client,
    hub_url: &str,
    stream: StreamId,
    min_position: u64,
) -> Result<Option<Figures>, String> {
    let store = stream
        .store_id
        .ok_or_else(|| format!("{stream} is not an inventory stream"))?;
    let path = format!(
        "{hub_url}/v1/inventory/products/{}/stores/{store}?min_position={min_position}",
        stream.product_id
    );
    let mut answer = get_json(http, &path, ADMIN_TOKEN).await?;
    for _ in 0..20 {
        if answer.0 != 503 {
            break;
        }
        answer = get_json(http, &path, ADMIN_TOKEN).await?;
    }
    match answer {
        (200, body) => serde_json::from_value::<StockLevel>(body.clone())
            .map(|l| Some((l.on_hand, l.reserved, l.available, l.version, l.position)))
            .map_err(|e| format!("{path}: not a StockLevel ({e}): {body}")),
        (404, _) => Ok(None),
        (status, body) => Err(format!("{path}: {status} {body}")),
    }
}

/// The problem when the hub's figures for `stream` are not the fold's.
fn mismatch(stream: StreamId, hub: Option<Figures>, expected: Option<Figures>) -> Option<String> {
    (hub != expected).then(|| {
        format!(
            "{stream}: hub read model {hub:?} != fold of the log {expected:?} (on_hand, reserved, available, version, position)"
        )
    })
}

/// The hub's read model at the log's head answers, for each of `streams`, exactly the fold
/// of `log` (a stream the log does not have must be unknown to it too); and the log wrote
/// no stock stream outside `streams`.
pub async fn read_model_problems(
    http: &reqwest::Client,
    hub_url: &str,
    streams: &[StreamId],
    log: &[EventEnvelope],
) -> Vec<String> {
    let head = log.last().map_or(0, |e| e.position);
    let folded = fold(log);
    let mut problems: Vec<String> = folded
        .keys()
        .filter(|stream| !streams.contains(stream))
        .map(|stream| format!("{stream}: written, but not among the streams checked"))
        .collect();
    for stream in streams {
        let expected = folded.get(stream).map(|(state, position)| figures(state, *position));
        match hub_figures(http, hub_url, *stream, head).await {
            Ok(hub) => problems.extend(mismatch(*stream, hub, expected)),
            Err(problem) => problems.push(problem),
        }
    }
    problems
}

fn figures(state: &InventoryState, position: u64) -> Figures {
    (
        state.on_hand,
        state.reserved(),
        state.available(),
        state.version,
        position,
    )
}

/// Compares, for every store of `agents` and every product, the agent, the hub's read
/// model and the fold.
pub async fn convergence_problems(
    http: &reqwest::Client,
    hub_url: &str,
    agents: &[AgentRef],
    log: &[EventEnvelope],
    head: u64,
) -> Vec<String> {
    let folded = fold(log);
    let products = catalog(log);
    let mut problems = Vec::new();
    for agent in agents {
        for product in &products {
            let stream = StreamId::inventory(*product, agent.store);
            let expected = folded.get(&stream).map(|(state, position)| figures(state, *position));
            match hub_figures(http, hub_url, stream, head).await {
                Ok(hub) => problems.extend(mismatch(stream, hub, expected)),
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            }
            let agent_path = format!("{}/v1/inventory/products/{product}", agent.url);
            let local = match get_json(http, &agent_path, TERMINAL_KEY).await {
                Ok((200, body)) => match serde_json::from_value::<LocalStockLevel>(body.clone()) {
                    Ok(level) => Some(level),
                    Err(e) => {
                        problems.push(format!("{agent_path}: not a LocalStockLevel ({e}): {body}"));
                        continue;
                    }
                },
                Ok((404, _)) => None,
                Ok((status, body)) => {
                    problems.push(format!("{} {agent_path}: {status} {body}", agent.name));
                    continue;
                }
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let local_figures = local
                .as_ref()
                .map(|l| (l.on_hand, l.reserved, l.available, l.confirmed_version));
            let fold_figures =
                expected.map(|(on_hand, reserved, available, version, _)| (on_hand, reserved, available, version));
            // An agent may show an empty row for a product without a stream.
            let empty_row = fold_figures.is_none() && local_figures == Some((0, 0, 0, 0));
            if local_figures != fold_figures && !empty_row {
                problems.push(format!(
                    "{} {stream}: agent {local_figures:?} != fold of the log {fold_figures:?} (on_hand, reserved, available, version)",
                    agent.name
                ));
            }
            let fold_allocation = folded.get(&stream).and_then(|(state, _)| AllocationView::of(state));
            let local_allocation = local.as_ref().and_then(|l| l.allocation);
            if local_allocation != fold_allocation {
                problems.push(format!(
                    "{} {stream}: agent's allocation {local_allocation:?} != fold of the log {fold_allocation:?}",
                    agent.name
                ));
            }
            if let Some(level) = local.filter(|l| l.pending_events > 0 || l.includes_pending) {
                problems.push(format!(
                    "{} {stream}: still {} pending events after quiescence",
                    agent.name, level.pending_events
                ));
            }
        }
    }
    problems
}

/// The hub's fleet view agrees with the log and the agents: each store's `oversells` is
/// the number of `OversellDetected` on its streams, its `rejected_uploads` the number of
/// events its agent holds in quarantine, and (waiting a few heartbeats) its last heartbeat
/// reports an empty outbox and the head as cursor.
pub async fn fleet_problems(
    http: &reqwest::Client,
    hub_url: &str,
    agents: &[AgentRef],
    statuses: &[(String, AgentStatus)],
    log: &[EventEnvelope],
    head: u64,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut problems = Vec::new();
        let fleet: FleetResponse = match get_json(http, &format!("{hub_url}/v1/admin/fleet"), ADMIN_TOKEN).await {
            Ok((200, body)) => match serde_json::from_value(body.clone()) {
                Ok(fleet) => fleet,
                Err(e) => return vec![format!("/v1/admin/fleet is not a FleetResponse ({e}): {body}")],
            },
            Ok((status, body)) => return vec![format!("/v1/admin/fleet: {status} {body}")],
            Err(e) => return vec![e],
        };
        for (agent, (_, status)) in agents.iter().zip(statuses) {
            let Some(entry) = fleet.stores.iter().find(|s| s.store.id == agent.store) else {
                problems.push(format!("{} is not in the fleet view", agent.name));
                continue;
            };
            let oversells = log
                .iter()
                .filter(|e| e.stream.store_id == Some(agent.store))
                .filter(|e| matches!(e.payload, EventPayload::OversellDetected { .. }))
                .count() as u64;
            if entry.oversells != oversells {
                problems.push(format!(
                    "the fleet view counts {} oversells at {}, the log holds {oversells}",
                    entry.oversells, agent.name
                ));
            }
            if entry.rejected_uploads != status.quarantined {
                problems.push(format!(
                    "the fleet view counts {} rejected uploads from {}, its agent holds {} in quarantine",
                    entry.rejected_uploads, agent.name, status.quarantined
                ));
            }
            let reported = entry.heartbeat.as_ref().map(|h| (h.cursor, h.outbox_depth));
            if reported != Some((head, 0)) || entry.cursor_lag != Some(0) {
                problems.push(format!(
                    "{}'s last heartbeat says (cursor, outbox) = {reported:?}, cursor lag {:?}; expected ({head}, 0), lag 0",
                    agent.name, entry.cursor_lag
                ));
            }
        }
        if problems.is_empty() || Instant::now() >= deadline {
            return problems;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Quarantined events as the agent lists them (operator route, manager key), if it has one.
pub async fn quarantined(http: &reqwest::Client, agent: &AgentRef) -> Value {
    for path in ["/v1/quarantine", "/v1/outbox?status=quarantined"] {
        if let Ok((200, body)) = get_json(http, &format!("{}{path}", agent.url), MANAGER_KEY).await {
            return body;
        }
    }
    Value::Null
}

/// Every write the hub acknowledged to the web shop is in the log, on its stream, as the
/// hub's own (origin `hub`).
pub fn web_problems(log: &[EventEnvelope], web: &[WebLog]) -> Vec<String> {
    let by_id: HashMap<EventId, &EventEnvelope> = log.iter().map(|e| (e.event_id, e)).collect();
    let mut problems = Vec::new();
    for ack in web.iter().flat_map(|w| &w.acks) {
        match by_id.get(&ack.event_id) {
            None => problems.push(format!(
                "acknowledged to the web shop but not in the log: {} {} (event {})",
                ack.path, ack.body, ack.event_id
            )),
            Some(event) if event.stream != ack.stream || event.metadata.origin != Origin::Hub => {
                problems.push(format!(
                    "the web shop's {} {} was acknowledged on {} but the log holds {:?} on {} from {:?}",
                    ack.path, ack.body, ack.stream, event.payload, event.stream, event.metadata.origin
                ))
            }
            Some(_) => {}
        }
    }
    problems.extend(web.iter().flat_map(|w| w.problems.iter().cloned()));
    problems
}

/// Runs every check; `Err` with every problem found. With several hubs on one log
/// (`hub_urls`), each hub's read model and fleet view are checked against the log and the
/// agents; the log is read from `log`.
pub async fn check(
    hub_urls: &[String],
    log: &LogSource,
    agents: &[AgentRef],
    tills: &[TillLog],
    web: &[WebLog],
    expect: &Expect,
) -> Result<Report, String> {
    let http = http_client();
    // Short-lived holds are released by whoever made them, on a one-second job: let the
    // last of them lapse (and be released) before asking for quiescence.
    let lapse_by = tills
        .iter()
        .filter_map(|t| t.holds_lapse_by)
        .chain(web.iter().filter_map(|w| w.holds_lapse_by))
        .max();
    if let Some(lapse_by) = lapse_by {
        let wait = lapse_by - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(2500);
        if wait.is_positive() {
            tokio::time::sleep(wait.unsigned_abs()).await;
        }
    }
    let started = Instant::now();
    let (head, statuses) = wait_quiescent_on(&http, hub_urls, agents, expect.quiesce_within).await?;
    let quiesced_in = started.elapsed();
    let log = log.read().await;
    let mut problems = Vec::new();
    if log.last().map_or(0, |e| e.position) != head {
        problems.push(format!(
            "the log ends at {} but the hub says its head is {head}",
            log.last().map_or(0, |e| e.position)
        ));
    }
    problems.extend(log_shape_problems(&log));
    problems.extend(ack_problems(&log, tills));
    problems.extend(web_problems(&log, web));
    for till in tills {
        problems.extend(till.problems.iter().map(|p| format!("till: {p}")));
    }
    let (oversell, oversells) = oversell_problems(&log);
    problems.extend(oversell);
    for hub_url in hub_urls {
        let on = |problem: String| format!("{hub_url}: {problem}");
        problems.extend(
            convergence_problems(&http, hub_url, agents, &log, head)
                .await
                .into_iter()
                .map(on),
        );
        problems.extend(
            fleet_problems(&http, hub_url, agents, &statuses, &log, head)
                .await
                .into_iter()
                .map(on),
        );
    }
    let mut listed = Vec::new();
    for (agent, (_, status)) in agents.iter().zip(&statuses) {
        if status.quarantined > 0 {
            let list = quarantined(&http, agent).await;
            if !expect.quarantine_ok {
                problems.push(format!(
                    "{}: {} quarantined events, none expected: {list}",
                    agent.name, status.quarantined
                ));
            }
            listed.push((agent.name.clone(), list));
        }
    }
    // The hubs' position may not have moved while we looked.
    for hub_url in hub_urls {
        let (head_after, _) = hub_positions(&http, hub_url).await?;
        if head_after != head {
            problems.push(format!(
                "{hub_url}: the hub's head moved from {head} to {head_after} during the check"
            ));
        }
    }
    if problems.is_empty() {
        Ok(Report {
            head,
            log,
            statuses,
            oversells,
            quarantined: listed,
            quiesced_in,
        })
    } else {
        Err(format!("{} problems:\n{}", problems.len(), problems.join("\n")))
    }
}

mod log;
#[cfg(test)]
mod tests;

pub use log::{read_log, LogSource};
