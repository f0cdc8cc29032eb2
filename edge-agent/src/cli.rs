//! `shelfsync-edge status | outbox | quarantine`: the store manager's commands. They talk
//! HTTP to the running agent (never to its files), so the agent's writer stays the only
//! writer and the answers are the agent's live view. Output is a small table for people,
//! or the agent's JSON with `--json`.

use crate::config::EdgeConfig;
use shelfsync_common::wire::edge::{AgentStatus, OutboxEntry, QuarantineOutcome};
use shelfsync_common::wire::problem::Problem;
use shelfsync_common::EventId;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use time::OffsetDateTime;

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The status page.
    Status,
    /// Outbox events (`statuses` as the API takes them: `pending,acked`).
    OutboxList {
        /// Comma-separated statuses (default: the agent's default).
        statuses: Option<String>,
        /// Most entries.
        limit: Option<usize>,
    },
    /// Quarantined events.
    QuarantineList {
        /// Most entries.
        limit: Option<usize>,
    },
    /// Put a quarantined event back in the outbox.
    QuarantineRetry(EventId),
    /// Give a quarantined event up.
    QuarantineDiscard(EventId),
}

/// A failed command, with a message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The agent could not be reached.
    #[error("cannot reach the edge agent at {url}: {reason} (is it running? start it with `shelfsync-edge run`, or pass --agent-url)")]
    Unreachable {
        /// Where we tried.
        url: String,
        /// Why, with the underlying cause.
        reason: String,
    },
    /// The agent refused.
    #[error("the agent said {status} {code}: {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Problem code.
        code: String,
        /// Problem detail.
        detail: String,
    },
    /// The agent's answer did not parse.
    #[error("unexpected answer from the agent: {0}")]
    BadAnswer(String),
    /// No manager key could be found.
    #[error("no manager key: set manager_key / SHELFSYNC_EDGE_MANAGER_KEY, or run on the agent's machine as a user that can read {0}")]
    NoKey(String),
}

/// The agent's URL from its configured listen address (a wildcard address becomes loopback).
pub fn agent_url(config: &EdgeConfig) -> String {
    let listen = config.listen;
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// The manager key from configuration, else from `<data_dir>/manager-key`.
pub fn manager_key(config: &EdgeConfig) -> Result<String, CliError> {
    if let Some(key) = &config.manager_key {
        return Ok(key.expose().to_owned());
    }
    let path = config.data_dir.join(crate::MANAGER_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => Ok(key.trim().to_owned()),
        Ok(_) => Err(CliError::NoKey(format!("{} (it is empty)", path.display()))),
        Err(e) => Err(CliError::NoKey(format!("{} ({e})", path.display()))),
    }
}

/// The error and every cause under it, on one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Runs one action against the agent at `agent_url`; returns what to print. `key` is the
/// manager key (the status page needs none, but shows why the hub link failed only with it).
pub async fn run(agent_url: &str, key: Option<&str>, action: &Action, json: bool) -> Result<String, CliError> {
    let base = agent_url.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CliError::Unreachable {
            url: base.to_owned(),
            reason: chain(&e),
        })?;
    let request = match action {
        Action::Status => client.get(format!("{base}/v1/status")),
        Action::OutboxList { statuses, limit } => {
            let mut query: Vec<(&str, String)> = Vec::new();
            if let Some(statuses) = statuses {
                query.push(("status", statuses.clone()));
            }
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            client.get(format!("{base}/v1/outbox")).query(&query)
        }
        Action::QuarantineList { limit } => {
            let query: Vec<(&str, String)> = limit.iter().map(|l| ("limit", l.to_string())).collect();
            client.get(format!("{base}/v1/quarantine")).query(&query)
        }
        Action::QuarantineRetry(id) => client.post(format!("{base}/v1/quarantine/{id}/retry")),
        Action::QuarantineDiscard(id) => client.post(format!("{base}/v1/quarantine/{id}/discard")),
    };
    let request = match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    };
    let unreachable = |e: reqwest::Error| CliError::Unreachable {
        url: base.to_owned(),
        reason: chain(&e),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let body = response.bytes().await.map_err(unreachable)?;
    if !status.is_success() {
        let (code, detail) = Problem::code_and_detail(&body);
        let status = status.as_u16();
        return Err(CliError::Refused { status, code, detail });
    }
    let bad = |e: serde_json::Error| CliError::BadAnswer(e.to_string());
    if json {
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(bad)?;
        return serde_json::to_string_pretty(&value).map_err(bad);
    }
    let now = OffsetDateTime::now_utc();
    Ok(match action {
        Action::Status => format_status(&serde_json::from_slice(&body).map_err(bad)?, now),
        Action::OutboxList { .. } => format_entries(&serde_json::from_slice::<Vec<_>>(&body).map_err(bad)?, false),
        Action::QuarantineList { .. } => format_entries(&serde_json::from_slice::<Vec<_>>(&body).map_err(bad)?, true),
        Action::QuarantineRetry(_) | Action::QuarantineDiscard(_) => {
            let outcome: QuarantineOutcome = serde_json::from_slice(&body).map_err(bad)?;
            match action {
                Action::QuarantineRetry(_) => format!(
                    "event {}: back in the outbox ({}); it will be uploaded to the hub again",
                    outcome.event_id,
                    outcome.status.as_str()
                ),
                _ => format!(
                    "event {}: {}; it has left this store's stock figures for good",
                    outcome.event_id,
                    outcome.status.as_str()
                ),
            }
        }
    })
}

fn time_text(at: OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

fn ago(secs: i64) -> String {
    match secs.max(0) {
        s @ 0..=119 => format!("{s} s"),
        s @ 120..=7199 => format!("{} min", s / 60),
        s @ 7200..=172_799 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// The status page as `name  value` lines.
pub fn format_status(status: &AgentStatus, now: OffsetDateTime) -> String {
    let breaker = match &status.breaker_reason {
        Some(reason) if status.breaker != "closed" => format!("breaker {}: {reason}", status.breaker),
        _ => format!("breaker {}", status.breaker),
    };
    let outbox = match status.oldest_pending_age_secs {
        Some(age) if status.outbox_depth > 0 => {
            format!(
                "{} events waiting for the hub, oldest {} old",
                status.outbox_depth,
                ago(age as i64)
            )
        }
        _ => "empty".to_owned(),
    };
    let quarantined = if status.quarantined > 0 {
        format!("{} (see `shelfsync-edge quarantine list`)", status.quarantined)
    } else {
        "0".to_owned()
    };
    let behind = status.hub_head.saturating_sub(status.cursor);
    let cursor = format!(
        "{} (hub head as last seen {}, {behind} behind)",
        status.cursor, status.hub_head
    );
    let last_sync = match status.last_sync_at {
        Some(at) => format!("{} ({} ago)", time_text(at), ago((now - at).whole_seconds())),
        None => "never".to_owned(),
    };
    let bootstrapped = if status.bootstrapped {
        "yes".to_owned()
    } else {
        "no: the agent has no catalog yet; it needs to reach the hub once".to_owned()
    };
    let rows = [
        ("store", status.store_id.to_string()),
        ("agent version", status.agent_version.clone()),
        ("hub link", format!("{} ({breaker})", status.link)),
        (
            "push stream",
            if status.push_connected {
                "connected"
            } else {
                "not connected"
            }
            .to_owned(),
        ),
        ("outbox", outbox),
        ("quarantined", quarantined),
        ("cursor", cursor),
        ("last sync", last_sync),
        ("bootstrapped", bootstrapped),
    ];
    let mut out: String = rows
        .iter()
        .map(|(name, value)| format!("{name:<14} {value}\n"))
        .collect();
    if let Some(resynced) = &status.resynced {
        let why = match resynced.reason.as_str() {
            "hub_restored" => "after the hub was restored from an older backup",
            _ => "by an operator (`shelfsync-edge resync`)",
        };
        out.push_str(&format!(
            "{:<14} {why} at {}, {} events re-uploaded, from the snapshot at position {}\n",
            "re-synced",
            time_text(resynced.at),
            resynced.reuploaded,
            resynced.position
        ));
    }
    out
}

/// Outbox entries as a table (with the hub's reason for quarantined ones).
pub fn format_entries(entries: &[OutboxEntry], reasons: bool) -> String {
    if entries.is_empty() {
        return if reasons {
            "no quarantined events\n"
        } else {
            "no events\n"
        }
        .to_owned();
    }
    let mut header = vec!["SEQ", "EVENT ID", "TYPE", "STATUS", "PRODUCT", "RECORDED"];
    header.push(if reasons { "REASON" } else { "HUB POSITION" });
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let last = if reasons {
                match (&e.reject_reason, &e.reject_detail) {
                    (Some(reason), Some(detail)) => format!("{reason}: {detail}"),
                    (Some(reason), None) => reason.clone(),
                    (None, _) => String::new(),
                }
            } else {
                e.hub_position.map(|p| p.to_string()).unwrap_or_default()
            };
            vec![
                e.seq.to_string(),
                e.event_id.to_string(),
                e.event_type.clone(),
                e.status.as_str().to_owned(),
                e.product_id.to_string(),
                time_text(e.recorded_at),
                last,
            ]
        })
        .collect();
    table(&header, &rows)
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelfsync_common::wire::edge::OutboxStatus;
    use shelfsync_common::{ProductId, StoreId};

    #[test]
    fn wildcard_listen_addresses_become_loopback() {
        let mut config = EdgeConfig::default();
        assert_eq!(agent_url(&config), "http://127.0.0.1:7171");
        config.listen = "[::]:8080".parse().unwrap();
        assert_eq!(agent_url(&config), "http://[::1]:8080");
        config.listen = "10.0.0.5:7171".parse().unwrap();
        assert_eq!(agent_url(&config), "http://10.0.0.5:7171");
    }

    #[test]
    fn the_manager_key_comes_from_config_then_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EdgeConfig {
            data_dir: dir.path().to_owned(),
            ..EdgeConfig::default()
        };
        let err = manager_key(&config).unwrap_err().to_string();
        assert!(
            err.contains("manager-key") && err.contains("SHELFSYNC_EDGE_MANAGER_KEY"),
            "{err}"
        );
        std::fs::write(dir.path().join(crate::MANAGER_KEY_FILE), "from-file\n").unwrap();
        assert_eq!(manager_key(&config).unwrap(), "from-file");
        config.manager_key = Some("configured".into());
        assert_eq!(manager_key(&config).unwrap(), "configured");
    }

    #[test]
    fn tables_align_and_show_reasons() {
        let entry = OutboxEntry {
            seq: 7,
            event_id: EventId::new_v7(),
            product_id: ProductId::new_v7(),
            event_type: "StockAdded".into(),
            status: OutboxStatus::Quarantined,
            hub_position: None,
            reject_reason: Some("unknown_product".into()),
            reject_detail: Some("not in the catalog".into()),
            recorded_at: OffsetDateTime::UNIX_EPOCH,
        };
        let text = format_entries(std::slice::from_ref(&entry), true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].find("EVENT ID"), lines[1].find(&entry.event_id.to_string()));
        assert!(lines[1].ends_with("unknown_product: not in the catalog") && lines[1].contains("1970-01-01T00:00:00Z"));
        assert_eq!(format_entries(&[], true), "no quarantined events\n");
    }

    #[test]
    fn the_status_page_says_what_is_wrong() {
        let status = AgentStatus {
            store_id: StoreId::new_v7(),
            agent_version: "0.1.0".into(),
            link: "offline".into(),
            breaker: "open".into(),
            breaker_reason: Some("connection refused".into()),
            push_connected: false,
            outbox_depth: 3,
            oldest_pending_age_secs: Some(150),
            quarantined: 1,
            cursor: 10,
            hub_head: 12,
            last_sync_at: None,
            bootstrapped: true,
            resynced: None,
        };
        let text = format_status(&status, OffsetDateTime::now_utc());
        assert!(text.contains("offline (breaker open: connection refused)"), "{text}");
        assert!(!text.contains("re-synced"), "{text}");
        let resynced = AgentStatus {
            resynced: Some(shelfsync_common::wire::sync::Resynced {
                at: OffsetDateTime::UNIX_EPOCH,
                reuploaded: 17,
                position: 108,
                reason: "hub_restored".into(),
            }),
            ..status.clone()
        };
        let text = format_status(&resynced, OffsetDateTime::now_utc());
        assert!(
            text.contains("re-synced      after the hub was restored from an older backup at 1970-01-01T00:00:00Z, 17 events re-uploaded, from the snapshot at position 108"),
            "{text}"
        );
        assert!(
            text.contains("3 events waiting for the hub, oldest 2 min old"),
            "{text}"
        );
        assert!(
            text.contains("2 behind") && text.contains("last sync      never"),
            "{text}"
        );
    }
}
