//! `shelfsync-hub store ...`: store enrollment from the command line. The commands talk
//! to the running hub's admin API (never to its files), so the hub's writer stays the only
//! writer and a revocation reaches open push streams at once.

use crate::config::HubConfig;
use shelfsync_common::wire::api::StoreInfo;
use shelfsync_common::wire::enrollment::EnrollmentCode;
use shelfsync_common::wire::problem::Problem;
use shelfsync_common::wire::sync::{EnrollStoreRequest, EnrolledStore};
use shelfsync_common::StoreId;

/// What the operator asked for.
#[derive(Debug, Clone)]
pub enum StoreAction {
    /// Enroll a store and print its token.
    Add {
        /// Display name.
        name: String,
        /// A chosen id (else a new one).
        id: Option<StoreId>,
        /// Enroll even when another store has this name.
        allow_duplicate_name: bool,
        /// Print an enrollment command (with a one-time code) instead of the token.
        enroll: bool,
    },
    /// Make an enrollment code for an enrolled store.
    Code {
        /// The store.
        id: StoreId,
    },
    /// List the stores.
    List,
    /// Revoke a store's token.
    Revoke {
        /// The store.
        id: StoreId,
    },
    /// Issue a new token (revoking the old one).
    Rotate {
        /// The store.
        id: StoreId,
    },
}

/// A failed admin call, with a message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The hub could not be reached.
    #[error("cannot reach the hub at {url}: {source} (is it running? pass --hub-url)")]
    Unreachable {
        /// Where we tried.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The hub refused.
    #[error("the hub said {status} {code}: {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Problem code.
        code: String,
        /// Problem detail.
        detail: String,
    },
    /// The hub URL is not an http(s) URL.
    #[error("{0}")]
    BadUrl(String),
    /// No admin token could be found.
    #[error("no admin token: set admin_token / SHELFSYNC_HUB_ADMIN_TOKEN, or run on the hub's machine ({0})")]
    NoToken(String),
}

/// The admin token from configuration or the hub's data dir.
pub fn admin_token(config: &HubConfig) -> Result<String, CliError> {
    if let Some(token) = &config.admin_token {
        return Ok(token.expose().to_owned());
    }
    let path = config.data_dir.join(crate::ADMIN_TOKEN_FILE);
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_owned())
        .map_err(|e| CliError::NoToken(format!("{}: {e}", path.display())))
}

/// Runs one store action against the hub at `hub_url`; returns what to print on stdout
/// (and says on stderr what an operator should know besides, for `--enroll`).
pub async fn run_store_action(hub_url: &str, token: &str, action: StoreAction) -> Result<String, CliError> {
    run_store_action_trusting(hub_url, token, action, None).await
}

/// [`run_store_action`], also trusting the certificates in `roots` (PEM): on the hub's own
/// machine, its `tls.cert_file`, so that a hub with a private CA's certificate (or a
/// self-signed one) is reachable without installing the CA system-wide.
pub async fn run_store_action_trusting(
    hub_url: &str,
    token: &str,
    action: StoreAction,
    roots: Option<&std::path::Path>,
) -> Result<String, CliError> {
    shelfsync_common::server::settings::check_http_url("--hub-url", hub_url).map_err(CliError::BadUrl)?;
    let mut client = reqwest::Client::builder();
    if let Some(roots) = roots {
        let pem =
            std::fs::read(roots).map_err(|e| CliError::BadUrl(format!("tls.cert_file = {}: {e}", roots.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| CliError::BadUrl(format!("tls.cert_file = {}: {e}", roots.display())))?;
        for cert in certs {
            client = client.add_root_certificate(cert);
        }
    }
    let client = client
        .build()
        .map_err(|e| CliError::BadUrl(format!("building the HTTP client: {e}")))?;
    let url = |path: &str| format!("{}{path}", hub_url.trim_end_matches('/'));
    let request = match &action {
        StoreAction::Add {
            name,
            id,
            allow_duplicate_name,
            ..
        } => client.post(url("/v1/admin/stores")).json(&EnrollStoreRequest {
            name: name.clone(),
            id: *id,
            allow_duplicate_name: *allow_duplicate_name,
        }),
        StoreAction::List => client.get(url("/v1/admin/stores")),
        StoreAction::Revoke { id } => client.post(url(&format!("/v1/admin/stores/{id}/revoke"))),
        StoreAction::Rotate { id } => client.post(url(&format!("/v1/admin/stores/{id}/token"))),
        StoreAction::Code { id } => client.post(url(&format!("/v1/admin/stores/{id}/enrollment-codes"))),
    };
    let body = admin_call(hub_url, request, token).await?;
    let parse_error = |e: serde_json::Error| CliError::Refused {
        status: 200,
        code: "unexpected_answer".into(),
        detail: e.to_string(),
    };
    Ok(match action {
        StoreAction::Add { enroll: true, .. } => {
            let enrolled: EnrolledStore = serde_json::from_slice(&body).map_err(parse_error)?;
            let id = enrolled.store.id;
            let request = client.post(url(&format!("/v1/admin/stores/{id}/enrollment-codes")));
            let body = admin_call(hub_url, request, token).await?;
            enrollment_command(&serde_json::from_slice(&body).map_err(parse_error)?)
        }
        StoreAction::Code { .. } => enrollment_command(&serde_json::from_slice(&body).map_err(parse_error)?),
        StoreAction::Add { .. } | StoreAction::Rotate { .. } => {
            let enrolled: EnrolledStore = serde_json::from_slice(&body).map_err(parse_error)?;
            format!(
                "store {} ({})\ntoken: {}\n\nGive this token to the store's agent (SHELFSYNC_EDGE_HUB_TOKEN); it is not shown again.",
                enrolled.store.id,
                enrolled.store.name,
                enrolled.token.expose()
            )
        }
        StoreAction::List => {
            let stores: Vec<StoreInfo> = serde_json::from_slice(&body).map_err(parse_error)?;
            store_table(&stores)
        }
        StoreAction::Revoke { id } => format!("store {id}: token revoked; its agent is refused from now on"),
    })
}

/// The one line to run at the store; what else to know goes to stderr, so that the line
/// can be piped or copied alone.
fn enrollment_command(code: &EnrollmentCode) -> String {
    let expires = code
        .expires_at
        .replace_nanosecond(0)
        .unwrap_or(code.expires_at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    eprintln!(
        "store {} ({}): run this on the store's machine before {expires}; the code works once:",
        code.store_id, code.store_name
    );
    code.command.expose().to_owned()
}

/// Sends one admin request; the answer's body, or why it failed.
async fn admin_call(hub_url: &str, request: reqwest::RequestBuilder, token: &str) -> Result<Vec<u8>, CliError> {
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .map_err(|source| CliError::Unreachable {
            url: hub_url.to_owned(),
            source,
        })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|source| CliError::Unreachable {
        url: hub_url.to_owned(),
        source,
    })?;
    if !status.is_success() {
        let (code, detail) = Problem::code_and_detail(&body);
        let status = status.as_u16();
        return Err(CliError::Refused { status, code, detail });
    }
    Ok(body.to_vec())
}

/// The stores as a table whose columns line up whatever the widths of the values.
fn store_table(stores: &[StoreInfo]) -> String {
    let mut rows = vec![["ID".to_owned(), "TOKEN".into(), "ENROLLED".into(), "NAME".into()]];
    for store in stores {
        // To the second: enough for people, and every row the same width.
        let enrolled = store
            .created_at
            .replace_nanosecond(0)
            .unwrap_or(store.created_at)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let state = if store.revoked { "revoked" } else { "active" };
        rows.push([store.id.to_string(), state.into(), enrolled, store.name.clone()]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|column| rows.iter().map(|row| row[column].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(&row[3]);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_list_columns_line_up() {
        let at = |text: &str| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("a time")
        };
        let stores = [
            StoreInfo {
                id: StoreId::new_v7(),
                name: "Berlin Mitte".into(),
                created_at: at("2026-11-26T09:00:00Z"),
                revoked: false,
            },
            StoreInfo {
                id: StoreId::new_v7(),
                name: "Hamburg".into(),
                created_at: at("2026-11-26T09:00:01.123456789Z"),
                revoked: true,
            },
        ];
        let table = store_table(&stores);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        for column in ["TOKEN", "ENROLLED", "NAME"] {
            let start = lines[0].find(column).expect("a header");
            for line in &lines[1..] {
                let before = &line[..start];
                assert!(
                    before.ends_with("  ") && !line[start..].starts_with(' '),
                    "{column} starts at {start} in every line:\n{table}"
                );
            }
        }
        assert!(lines[2].ends_with("  Hamburg"), "{table}");
    }
}
