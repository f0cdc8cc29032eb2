//! A real `haproxy` process in front of several hubs, run from the file operators install
//! (`installers/haproxy.cfg`), so the end-to-end test checks the shipped configuration and
//! not a copy of it.
//!
//! [`render`] makes the test's configuration from that file with a few substitutions, each
//! of which must find its text (a drifting file fails the test instead of silently testing
//! something else): the `global` section becomes one that runs as the test's user and
//! logs to stderr (no chroot, no user switch, no syslog, no daemon), the frontend binds a
//! free loopback port, and the three example servers become the hubs' loopback addresses.
//!
//! HAProxy does not say where it listens, so its port is chosen by binding `127.0.0.1:0`
//! and closing it just before HAProxy starts; the harness then waits (bounded) until a
//! request through HAProxy reaches a hub. The process runs in the foreground (`-db`), its
//! stderr (the request log, health-check changes) goes to `<dir>/haproxy.stderr`, and it
//! is killed and reaped when its handle drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shipped configuration.
pub const CONFIG: &str = include_str!("../../installers/haproxy.cfg");

/// The `global` section the test runs with.
const TEST_GLOBAL: &str = "global\n    log stderr format raw local0 info\n    maxconn 4000\n\n";

/// The shipped configuration with the test's global section, listen address and hubs.
pub fn render(config: &str, listen: SocketAddr, hubs: &[SocketAddr]) -> Result<String, String> {
    let start = config.find("\nglobal\n").ok_or("no global section")? + 1;
    let end = config.find("\ndefaults\n").ok_or("no defaults section")? + 1;
    let mut text = format!("{}{TEST_GLOBAL}{}", &config[..start], &config[end..]);
    let mut replace = |from: &str, to: &str| {
        if !text.contains(from) {
            return Err(format!("installers/haproxy.cfg has no `{from}` to replace"));
        }
        text = text.replacen(from, to, 1);
        Ok(())
    };
    replace("bind 0.0.0.0:7070", &format!("bind {listen}"))?;
    if hubs.len() != 3 {
        return Err(format!("the configuration names three hubs, not {}", hubs.len()));
    }
    for (n, hub) in hubs.iter().enumerate() {
        let n = n + 1;
        replace(
            &format!("server hub{n} 10.0.0.1{n}:7070"),
            &format!("server hub{n} {hub}"),
        )?;
    }
    Ok(text)
}

/// The `haproxy` binary: `SHELFSYNC_HAPROXY`, else the first on `PATH`, else Debian's
/// `/usr/sbin/haproxy` (not on a normal user's `PATH`).
pub fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SHELFSYNC_HAPROXY") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("haproxy"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/haproxy")])
        .find(|path| path.is_file())
}

/// A running HAProxy.
pub struct Haproxy {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stderr: PathBuf,
}

impl Haproxy {
    /// Renders the shipped configuration into `<dir>/haproxy.cfg` for `hubs`, checks it
    /// (`haproxy -c`), starts HAProxy and waits (bounded) until a request through it
    /// reaches a hub (`/healthz`).
    pub async fn start(binary: &Path, dir: &Path, hubs: &[SocketAddr]) -> Haproxy {
        let listen = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address")
        };
        let config = render(CONFIG, listen, hubs).unwrap_or_else(|e| panic!("{e}"));
        let config_path = dir.join("haproxy.cfg");
        std::fs::write(&config_path, config).expect("write haproxy.cfg");
        let checked = Command::new(binary)
            .args(["-c", "-q", "-f"])
            .arg(&config_path)
            .output()
            .expect("run haproxy -c");
        assert!(
            checked.status.success(),
            "haproxy -c refuses the rendered installers/haproxy.cfg:\n{}",
            String::from_utf8_lossy(&checked.stderr)
        );
        let stderr = dir.join("haproxy.stderr");
        let child = Command::new(binary)
            .args(["-db", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("haproxy.stderr"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        let haproxy = Haproxy {
            child,
            url: format!("http://{listen}"),
            stderr,
        };
        haproxy.wait_serving(Duration::from_secs(20)).await;
        haproxy
    }

    /// Waits until `GET /healthz` through HAProxy is answered 200 by a hub.
    async fn wait_serving(&self, within: Duration) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            let answer = http.get(format!("{}/healthz", self.url)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy did not pass a request to a hub within {within:?}; its log:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of HAProxy's log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::process::tail(&self.stderr, lines)
    }

    /// HAProxy's whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_renders_with_the_tests_addresses_and_process_settings() {
        let hubs: Vec<SocketAddr> = ["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let text = render(CONFIG, "127.0.0.1:999".parse().unwrap(), &hubs).unwrap();
        assert!(text.contains("bind 127.0.0.1:999\n"), "{text}");
        for (n, hub) in hubs.iter().enumerate() {
            assert!(text.contains(&format!("server hub{} {hub}\n", n + 1)), "{text}");
        }
        for gone in ["chroot", "user haproxy", "daemon", "/dev/log", "10.0.0.1"] {
            assert!(!text.contains(gone), "{gone} left in:\n{text}");
        }
        // What the test relies on is still there.
        for kept in ["option httpchk", "/readyz", "balance roundrobin", "timeout server"] {
            assert!(text.contains(kept), "{kept} missing from:\n{text}");
        }
        assert!(render("global\n", "127.0.0.1:1".parse().unwrap(), &hubs).is_err());
    }
}
