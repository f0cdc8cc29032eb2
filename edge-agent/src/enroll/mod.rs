//! `shelfsync-edge enroll --hub URL --code XXXX-XXXX`: one step from a fresh store machine
//! to a running agent. It checks the hub (reachable, its TLS certificate trusted, a sync
//! protocol this agent speaks), exchanges the one-time code for the store's token, writes
//! the configuration and the secrets file ([`files`]), makes the agent's keys, and starts
//! (or restarts) the service when systemd is there and it runs as root; otherwise it says
//! what to run. Every failure says what to do about it.

pub mod files;

use crate::cli::chain;
use crate::config::{check_hub_url, trust_roots, ConfigError, EdgeConfig, EXAMPLE};
use shelfsync_common::wire::enrollment::{normalize_code, EnrollRequest, Enrollment, HubVersion};
use shelfsync_common::wire::problem::Problem;
use shelfsync_common::wire::sync::{protocol_compatible, PROTOCOL_VERSION};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration enroll writes when given none.
pub const DEFAULT_CONFIG: &str = "/etc/shelfsync/edge.toml";
/// The secrets file's name beside the configuration (the unit's `EnvironmentFile`).
pub const ENV_FILE: &str = "edge.env";
/// The variable the store token is written as.
pub const TOKEN_VARIABLE: &str = "SHELFSYNC_EDGE_HUB_TOKEN";
/// The systemd unit enroll starts.
pub const UNIT: &str = "shelfsync-edge";

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The hub's URL.
    pub hub: String,
    /// The code as typed.
    pub code: String,
    /// The configuration to write.
    pub config: PathBuf,
    /// The secrets file to write (default: `edge.env` beside the configuration).
    pub env_file: Option<PathBuf>,
    /// Extra trust roots for the hub (PEM), also written as `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// Accept an `http://` hub (tests on one machine).
    pub allow_insecure_hub: bool,
    /// Do not start the service; print what to run.
    pub no_start: bool,
}

/// A failed enrollment, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// A bad option or setting.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Nothing answered at the hub's address.
    #[error("cannot reach the hub at {url}: {reason} (check the address, and that this machine can reach it)")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed: most often a certificate this machine does not trust.
    #[error("the hub at {url} failed the TLS check: {reason} (if its certificate comes from a private CA, pass --ca-file with that CA's certificate)")]
    Tls {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered, but not as a shelfsync hub.
    #[error("{url} did not answer as a shelfsync hub ({detail}): check --hub")]
    NotAHub {
        /// The URL.
        url: String,
        /// What it answered.
        detail: String,
    },
    /// The hub speaks another major protocol version.
    #[error("the hub speaks sync protocol {hub}, this agent {PROTOCOL_VERSION}: install the same release on both")]
    Protocol {
        /// The hub's version.
        hub: String,
    },
    /// The hub refused the code.
    #[error("{0}")]
    Refused(String),
    /// Writing a file, or starting the service.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Enrolls this machine's agent; returns the report to print.
pub async fn enroll(options: &EnrollOptions) -> Result<String, EnrollError> {
    let code = normalize_code(&options.code).ok_or_else(|| {
        ConfigError(format!(
            "--code {:?} is not an enrollment code: 8 letters and digits, XXXX-XXXX, as the hub printed it",
            options.code
        ))
    })?;
    let hub = options.hub.trim_end_matches('/').to_owned();
    check_hub_url("--hub", &hub, options.allow_insecure_hub)?;
    let client = client(options.ca_file.as_deref())?;
    let version = check_hub(&client, &hub).await?;
    let enrolled = exchange(&client, &hub, &code).await?;
    let mut report = vec![format!(
        "hub {hub}: reachable, sync protocol {} (this agent: {PROTOCOL_VERSION})",
        version.protocol_version
    )];
    report.push(format!(
        "enrolled as store {} ({})",
        enrolled.store_id, enrolled.store_name
    ));
    let config = write_config(options, &hub, &enrolled)?;
    report.push(format!(
        "configuration: {} (store_id, hub_url)",
        options.config.display()
    ));
    let env_file = env_file(options);
    let existing = std::fs::read_to_string(&env_file).unwrap_or_default();
    let secrets = files::set_env_line(&existing, TOKEN_VARIABLE, &enrolled.token);
    files::replace_file(&env_file, &secrets, 0o600).map_err(|source| EnrollError::Io {
        what: "writing the store token to",
        path: env_file.clone(),
        source,
    })?;
    report.push(format!(
        "store token: {} ({TOKEN_VARIABLE}, mode 0600)",
        env_file.display()
    ));
    report.extend(keys(&config)?);
    report.push(start(options, &config, &env_file).await);
    Ok(report.join("\n"))
}

fn env_file(options: &EnrollOptions) -> PathBuf {
    options
        .env_file
        .clone()
        .unwrap_or_else(|| options.config.parent().unwrap_or(Path::new(".")).join(ENV_FILE))
}

fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, EnrollError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("shelfsync-edge/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30));
    if let Some(ca_file) = ca_file {
        for root in trust_roots(ca_file).map_err(|e| ConfigError(e.0.replacen("ca_file", "--ca-file", 1)))? {
            builder = builder.add_root_certificate(root);
        }
    }
    builder
        .build()
        .map_err(|e| EnrollError::Config(ConfigError(format!("building the HTTP client: {}", chain(&e)))))
}

/// What a failed request to the hub means for the operator.
fn unreachable(url: &str, error: &reqwest::Error) -> EnrollError {
    let reason = chain(error);
    let lower = reason.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        EnrollError::Tls {
            url: url.to_owned(),
            reason,
        }
    } else {
        EnrollError::Unreachable {
            url: url.to_owned(),
            reason,
        }
    }
}

/// `GET /v1/version`: reachable, trusted, and a protocol this agent speaks.
async fn check_hub(client: &reqwest::Client, hub: &str) -> Result<HubVersion, EnrollError> {
    let response = client
        .get(format!("{hub}/v1/version"))
        .send()
        .await
        .map_err(|e| unreachable(hub, &e))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| unreachable(hub, &e))?;
    let version: HubVersion = match serde_json::from_slice(&body) {
        Ok(version) if status.is_success() => version,
        _ => {
            return Err(EnrollError::NotAHub {
                url: hub.to_owned(),
                detail: format!("GET /v1/version answered HTTP {status}"),
            })
        }
    };
    if !protocol_compatible(&version.protocol_version) {
        return Err(EnrollError::Protocol {
            hub: version.protocol_version,
        });
    }
    Ok(version)
}

/// `POST /v1/enroll`: the code for the store's token.
async fn exchange(client: &reqwest::Client, hub: &str, code: &str) -> Result<Enrollment, EnrollError> {
    let response = client
        .post(format!("{hub}/v1/enroll"))
        .json(&EnrollRequest { code: code.into() })
        .send()
        .await
        .map_err(|e| unreachable(hub, &e))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| unreachable(hub, &e))?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| EnrollError::NotAHub {
            url: hub.to_owned(),
            detail: format!("POST /v1/enroll answered {e}"),
        });
    }
    let (problem, detail) = Problem::code_and_detail(&body);
    let again = "make a new one at the hub: shelfsync-hub store code <store-id>";
    Err(EnrollError::Refused(match problem.as_str() {
        "enrollment_code_used" => format!("the hub refused the code: it was used already; {again}"),
        "enrollment_code_expired" => format!("the hub refused the code: it has expired; {again}"),
        "enrollment_code_unknown" => {
            format!("the hub does not know this code: check it for typos, or {again}")
        }
        "enrollment_rate_limited" => format!("the hub refused too many codes this minute: {detail}"),
        _ => format!("the hub said {} {problem}: {detail}", status.as_u16()),
    }))
}

/// Writes `store_id`, `hub_url` (and `ca_file`, `allow_insecure_hub` when given) into the
/// configuration, and returns it as the agent will load it.
fn write_config(options: &EnrollOptions, hub: &str, enrolled: &Enrollment) -> Result<EdgeConfig, EnrollError> {
    let path = &options.config;
    let io = |what, source| EnrollError::Io {
        what,
        path: path.clone(),
        source,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => EXAMPLE.to_owned(),
        Err(e) => return Err(io("reading", e)),
    };
    let quoted = |value: &str| serde_json::to_string(value).unwrap_or_default();
    let mut settings = vec![
        ("store_id", quoted(&enrolled.store_id.to_string())),
        ("hub_url", quoted(hub)),
    ];
    if let Some(ca_file) = &options.ca_file {
        let absolute = std::path::absolute(ca_file).unwrap_or_else(|_| ca_file.clone());
        settings.push(("ca_file", quoted(&absolute.to_string_lossy())));
    }
    if options.allow_insecure_hub {
        settings.push(("allow_insecure_hub", "true".into()));
    }
    let updated = files::set_top_level(&text, &settings);
    let config: EdgeConfig = shelfsync_common::server::settings::from_toml(&updated).map_err(|e| {
        ConfigError(format!(
            "{} would not load after the update ({e}); fix it and run enroll again",
            path.display()
        ))
    })?;
    files::replace_file(path, &updated, 0o644).map_err(|e| io("writing", e))?;
    Ok(config)
}

/// Makes the terminal and manager keys the agent would make at its first start, when its
/// data directory exists (as root, owned like it); says where they are.
fn keys(config: &EdgeConfig) -> Result<Vec<String>, EnrollError> {
    let dir = &config.data_dir;
    let mut lines = Vec::new();
    for (name, configured, file) in [
        ("terminal key", config.terminal_key.as_deref(), crate::TERMINAL_KEY_FILE),
        ("manager key", config.manager_key.as_deref(), crate::MANAGER_KEY_FILE),
    ] {
        let path = dir.join(file);
        if configured.is_some() {
            lines.push(format!("{name}: as configured"));
        } else if dir.is_dir() {
            let (_, generated) =
                shelfsync_common::server::secret::configured_or_stored(None, &path).map_err(|source| {
                    EnrollError::Io {
                        what: "making the key",
                        path: path.clone(),
                        source,
                    }
                })?;
            if generated {
                files::own_like(&path, dir).map_err(|source| EnrollError::Io {
                    what: "giving the key to the agent's user",
                    path: path.clone(),
                    source,
                })?;
            }
            lines.push(format!("{name}: {}", path.display()));
        } else {
            lines.push(format!(
                "{name}: {} (the agent writes it at its first start)",
                path.display()
            ));
        }
    }
    Ok(lines)
}

/// Starts or restarts the service with systemd when it can (root, systemctl present, not
/// `--no-start`) and reports the agent's status; else says what to run.
async fn start(options: &EnrollOptions, config: &EdgeConfig, env_file: &Path) -> String {
    let by_hand = format!(
        "start the agent: systemctl enable --now {UNIT} (as root), or by hand: \
         env $(cat {}) shelfsync-edge --config {} run",
        env_file.display(),
        options.config.display()
    );
    let systemctl = Path::new("/usr/bin/systemctl").exists() || Path::new("/bin/systemctl").exists();
    if options.no_start || !systemctl || !files::running_as_root() {
        return by_hand;
    }
    let enabled = std::process::Command::new("systemctl").args(["enable", UNIT]).status();
    let restarted = std::process::Command::new("systemctl").args(["restart", UNIT]).status();
    match (enabled, restarted) {
        (Ok(a), Ok(b)) if a.success() && b.success() => {}
        _ => return format!("systemctl could not start {UNIT} (see journalctl -u {UNIT}); {by_hand}"),
    }
    let url = crate::cli::agent_url(config);
    for _ in 0..30 {
        if let Ok(status) = crate::cli::run(&url, None, &crate::cli::Action::Status, false).await {
            return format!("service {UNIT} (re)started; its status:\n{status}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    format!("service {UNIT} (re)started but its status page at {url} did not answer within 15 s: journalctl -u {UNIT}")
}
