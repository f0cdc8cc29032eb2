//! One-step enrollment and TLS, with the real binaries: a hub serving HTTPS with a test
//! CA's certificate (tests/fixtures/tls), `shelfsync-hub store add --enroll` printing the
//! one line to run at the store, `shelfsync-edge enroll` checking the hub, exchanging the
//! code and writing the configuration and the token into a temporary directory (no
//! systemd), then the agent started from those files selling, and the sale reaching the
//! hub. Refused, each with a message that says what to do: a code used twice, an expired
//! code, an untrusted certificate, an `http://` hub without `allow_insecure_hub`, and a
//! hub with half a TLS configuration.

use shelfsync_common::StoreId;
use shelfsync_tests::process::{AgentProcess, HubProcess, ADMIN_TOKEN};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const COFFEE: &str = "01939d01-0000-7000-8000-000000000001";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls").join(name)
}

fn tls_env() -> Vec<(&'static str, String)> {
    vec![
        ("SHELFSYNC_HUB_TLS__CERT_FILE", fixture("hub.crt").display().to_string()),
        ("SHELFSYNC_HUB_TLS__KEY_FILE", fixture("hub.key").display().to_string()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `shelfsync-hub store add NAME --enroll` against `hub`: the store and the printed line.
async fn add_with_code(hub: &HubProcess, name: &str, env: &[(&str, &str)]) -> (StoreId, String) {
    let url = hub.process.url();
    let (status, stdout, stderr) = hub
        .process
        .run_once("add", &["store", "add", name, "--enroll", "--hub-url", &url], env)
        .await;
    assert!(
        status.is_some_and(|s| s.success()),
        "store add failed:\n{stdout}\n{stderr}"
    );
    let line = stdout.trim();
    assert_eq!(line.lines().count(), 1, "one line: {stdout}");
    assert!(
        line.starts_with(&format!("shelfsync-edge enroll --hub {url} --code ")),
        "{line}"
    );
    let store = stderr
        .split_whitespace()
        .nth(1)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("the store's id on stderr: {stderr}"));
    (store, line.to_owned())
}

/// The printed command's `--code`.
fn code_of(line: &str) -> String {
    line.rsplit(' ').next().expect("a code").to_owned()
}

/// Runs `shelfsync-edge` with `args`; its success, stdout and stderr.
fn edge(args: &[&str]) -> (bool, String, String) {
    let binaries = shelfsync_tests::bins::binaries();
    let output = Command::new(&binaries.edge)
        .args(args)
        .env_remove("SHELFSYNC_EDGE_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("running shelfsync-edge");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

fn https_client() -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(fixture("ca.crt")).unwrap()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_enrolls_over_tls_with_a_one_time_code_and_its_sale_reaches_the_hub() {
    let root = tempfile::Builder::new().prefix("shelfsync-enroll-").tempdir().unwrap();
    let env = tls_env();
    let mut hub = HubProcess::new(root.path(), &borrowed(&env));
    hub.process.start().await;
    let hub_url = hub.process.url();
    assert!(hub_url.starts_with("https://127.0.0.1:"), "{hub_url}");
    let (store, line) = add_with_code(&hub, "Leipzig", &[]).await;
    let code = code_of(&line);

    // The store's machine: a configuration with settings of its own, and the data dir.
    let machine = root.path().join("store-machine");
    let data_dir = machine.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = machine.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "# Leipzig's agent\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[sync]\npull_interval_secs = 1\n",
            data_dir.display()
        ),
    )
    .unwrap();
    let config_text = config.display().to_string();
    let ca = fixture("ca.crt").display().to_string();

    // Without the CA the certificate is not trusted; the code is not spent on that.
    let (ok, _, stderr) = edge(&[
        "--config",
        &config_text,
        "enroll",
        "--hub",
        &hub_url,
        "--code",
        &code,
        "--no-start",
    ]);
    assert!(
        !ok && stderr.contains("TLS") && stderr.contains("--ca-file"),
        "{stderr}"
    );
    // An http:// hub needs allow_insecure_hub.
    let plain = hub_url.replacen("https://", "http://", 1);
    let (ok, _, stderr) = edge(&[
        "--config",
        &config_text,
        "enroll",
        "--hub",
        &plain,
        "--code",
        &code,
        "--no-start",
    ]);
    assert!(!ok && stderr.contains("allow_insecure_hub"), "{stderr}");

    let enroll = [
        "--config",
        &config_text,
        "enroll",
        "--hub",
        &hub_url,
        "--code",
        &code,
        "--ca-file",
        &ca,
        "--no-start",
    ];
    let (ok, stdout, stderr) = edge(&enroll);
    assert!(ok, "enroll failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("enrolled as store {store} (Leipzig)")),
        "{stdout}"
    );
    let terminal_key_file = data_dir.join(shelfsync_edge::TERMINAL_KEY_FILE);
    assert!(
        stdout.contains(&format!("terminal key: {}", terminal_key_file.display())),
        "{stdout}"
    );
    assert!(stdout.contains("systemctl enable --now shelfsync-edge"), "{stdout}");

    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.starts_with("# Leipzig's agent\n"),
        "the rest is kept:\n{written}"
    );
    assert!(written.contains(&format!("store_id = \"{store}\"")), "{written}");
    assert!(written.contains(&format!("hub_url = \"{hub_url}\"")), "{written}");
    assert!(written.contains(&format!("ca_file = \"{ca}\"")), "{written}");
    assert!(written.contains("[sync]\npull_interval_secs = 1"), "{written}");
    let env_file = machine.join("edge.env");
    let secrets = std::fs::read_to_string(&env_file).unwrap();
    let token = secrets
        .strip_prefix("SHELFSYNC_EDGE_HUB_TOKEN=")
        .map(str::trim)
        .unwrap_or_else(|| panic!("the token line: {secrets}"));
    for file in [&env_file, &terminal_key_file] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }

    // The code worked once.
    let (ok, _, stderr) = edge(&enroll);
    assert!(!ok && stderr.contains("used already"), "{stderr}");

    // The agent, started from those files, syncs with the hub over TLS.
    let mut agent = AgentProcess::with_config(
        root.path(),
        "leipzig",
        store,
        (&config, &data_dir),
        &[("SHELFSYNC_EDGE_HUB_TOKEN", token)],
    );
    agent.process.start().await;
    let terminal_key = std::fs::read_to_string(&terminal_key_file).unwrap();
    let till = reqwest::Client::new();
    let body = serde_json::json!({"product_id": COFFEE, "store_id": store, "quantity": 7});
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = till
            .post(format!("{}/v1/inventory/stock", agent.process.url()))
            .bearer_auth(terminal_key.trim())
            .json(&body)
            .send()
            .await
            .unwrap();
        if answer.status().is_success() {
            break;
        }
        // 503 not_bootstrapped until the first snapshot from the hub arrived.
        assert!(
            Instant::now() < deadline,
            "the agent never took the delivery: {}",
            answer.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hub_client = https_client();
    loop {
        let level = hub_client
            .get(format!("{hub_url}/v1/inventory/products/{COFFEE}/stores/{store}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        if level.status().is_success() {
            let level: serde_json::Value = level.json().await.unwrap();
            if level["on_hand"] == 7 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the delivery never reached the hub; agent:\n{}",
            agent.process.stderr_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.process.terminate().await;
    hub.process.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_unknown_codes_and_bad_settings_are_refused_with_their_names() {
    let root = tempfile::Builder::new().prefix("shelfsync-enroll-").tempdir().unwrap();
    let mut hub = HubProcess::new(root.path(), &[("SHELFSYNC_HUB_ENROLLMENT__CODE_TTL_SECS", "1")]);
    hub.process.start().await;
    let hub_url = hub.process.url();
    let (_, line) = add_with_code(&hub, "Dresden", &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let config = root.path().join("dresden/edge.toml");
    let config_text = config.display().to_string();
    let enroll = |code: &str| {
        edge(&[
            "--config",
            &config_text,
            "enroll",
            "--hub",
            &hub_url,
            "--code",
            code,
            "--allow-insecure-hub",
            "--no-start",
        ])
    };
    let (ok, _, stderr) = enroll(&code_of(&line));
    assert!(
        !ok && stderr.contains("expired") && stderr.contains("store code"),
        "{stderr}"
    );
    let (ok, _, stderr) = enroll("ZZZZ-ZZZZ");
    assert!(!ok && stderr.contains("does not know this code"), "{stderr}");
    let (ok, _, stderr) = enroll("ZZZZ");
    assert!(!ok && stderr.contains("--code"), "{stderr}");
    assert!(!config.exists(), "nothing is written when the hub refuses");

    // An agent configured with an http:// hub refuses to start, naming the setting.
    let (ok, _, stderr) = {
        let binaries = shelfsync_tests::bins::binaries();
        let output = Command::new(&binaries.edge)
            .arg("run")
            .env("SHELFSYNC_EDGE_STORE_ID", StoreId::new_v7().to_string())
            .env("SHELFSYNC_EDGE_HUB_URL", &hub_url)
            .env("SHELFSYNC_EDGE_HUB_TOKEN", "ss_unused")
            .env("SHELFSYNC_EDGE_DATA_DIR", root.path().join("refused"))
            .env_remove("SHELFSYNC_EDGE_ALLOW_INSECURE_HUB")
            .output()
            .unwrap();
        (
            output.status.success(),
            (),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert!(
        !ok && stderr.contains("hub_url") && stderr.contains("allow_insecure_hub"),
        "{stderr}"
    );
    hub.process.terminate().await;

    // A hub with a certificate but no key refuses to start, naming the missing setting.
    let cert = fixture("hub.crt").display().to_string();
    let (status, _, stderr) = hub
        .process
        .run_once("half-tls", &["serve"], &[("SHELFSYNC_HUB_TLS__CERT_FILE", &cert)])
        .await;
    assert!(!status.is_some_and(|s| s.success()), "{stderr}");
    assert!(stderr.contains("tls.key_file"), "{stderr}");
}
