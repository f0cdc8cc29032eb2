//! The README's tour and its "hub down" section, run as bash scripts against the real
//! binaries, so a README that drifts from the code fails here.
//!
//! Each section's `sh` blocks are joined into one script and run as written, with only
//! what must differ on a test machine replaced: the demo's ports by free ones, the working
//! directory by a temporary one, `target/...` by the binaries this test built (and the
//! release build line dropped). Every replacement must find its text, so a README edit that
//! moves it fails loudly rather than running something else. The scripts stop what they
//! started by pid; the test runs each in its own process group and, when a script fails or
//! overruns its bound, stops what is left of that group (SIGTERM, then SIGKILL), so nothing
//! outlives the test, and nothing else is touched. The demo is stopped with SIGTERM, so it
//! stops its two processes.
//! The README's other blocks (building, installing, the CI commands) are not run here.
//! The scripts need `bash` and `curl`; without them these tests are skipped with a message
//! (a failure when `SHELFSYNC_REQUIRE_SERVICES=1`, as in CI).

use shelfsync_tests::bins::binaries;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const README: &str = include_str!("../../README.md");
/// Longest run of one section's script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The `sh` blocks under the `## ` heading that starts with `heading`, joined.
fn section(heading: &str) -> String {
    let start = README
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let text = &README[start + 1..];
    let text = &text[..text[3..].find("\n## ").map_or(text.len(), |end| end + 3)];
    let mut script = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("a closed code block");
        script.push_str(&body[..close]);
        rest = &body[close..];
    }
    assert!(!script.is_empty(), "section {heading:?} has no sh block");
    script
}

/// Whether `bash` and `curl` are installed; if not, says so and skips (or fails, when
/// `SHELFSYNC_REQUIRE_SERVICES=1`).
fn tools_present() -> bool {
    shelfsync_common::testing::services::programs_present(
        &["bash", "curl"],
        "the README's scripts",
        "install them to run this test",
    )
}

/// `script` with every `from` replaced; `from` must occur.
fn replace(script: &str, from: &str, to: &str) -> String {
    assert!(
        script.contains(from),
        "the README no longer contains {from:?}; update tests/tests/readme.rs with it"
    );
    script.replace(from, to)
}

fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port().to_string()
}

/// Runs `script` with bash in `dir` (in its own process group, killed with its
/// children if it overruns); returns success, stdout and stderr.
fn run(script: &str, dir: &Path) -> (bool, String, String) {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("set -eo pipefail\n{script}"))
        .current_dir(dir)
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let group = format!("-{}", child.id());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let succeeded = status.is_some_and(|s| s.success());
    let left_running = succeeded
        && Command::new("kill")
            .args(["-0", "--", &group])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !succeeded || left_running {
        // The group is this script's: bash and what it started. A failed script may have
        // left its hub and agents running.
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        std::thread::sleep(Duration::from_secs(2));
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
    }
    let (out, err) = (collect(stdout), collect(stderr));
    let status = status.unwrap_or_else(|| panic!("the script ran over {SCRIPT_TIMEOUT:?}:\n{out}\n{err}"));
    assert!(!left_running, "the script left processes running:\n{out}\n{err}");
    (status.success(), out, err)
}

fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    let mut pipe = pipe.expect("a piped stream");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = send.send(text);
    });
    receive
}

fn collect(text: mpsc::Receiver<String>) -> String {
    text.recv_timeout(Duration::from_secs(10)).unwrap_or_default()
}

/// The directory of the binaries this test built.
fn bin_dir() -> String {
    let hub = &binaries().hub;
    hub.parent().expect("the binaries' directory").display().to_string()
}

/// The demo (`cargo run`), started from `dir` on `hub` and `agent` ports; stopped by pid.
struct Demo(Child);

impl Demo {
    fn start(dir: &Path, hub: &str, agent: &str) -> (Demo, String) {
        bin_dir(); // built, so the demo finds them beside itself
        let mut child = Command::new(env!("CARGO_BIN_EXE_shelfsync-demo"))
            .args([
                "--hub",
                &format!("127.0.0.1:{hub}"),
                "--agent",
                &format!("127.0.0.1:{agent}"),
            ])
            .env_remove("CARGO")
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the demo");
        let (lines, receive) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let demo = Demo(child);
        let mut banner = String::new();
        while !banner.contains("Press Ctrl-C") {
            let line = receive
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("the demo did not print its banner:\n{banner}"));
            banner.push_str(&line);
            banner.push('\n');
        }
        (demo, banner)
    }

    /// SIGTERM; true when it exited 0 within the bound.
    fn stop(&mut self) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGTERM first: a SIGKILL would leave the demo's hub and agent running.
        if matches!(self.0.try_wait(), Ok(None)) && !self.stop() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_readme_kills_only_what_it_started() {
    for word in ["pkill", "killall"] {
        assert!(!README.contains(word), "the README uses {word}");
    }
}

#[test]
fn the_docs_stand_on_their_own() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut pages = vec![("README.md".to_owned(), README.to_owned())];
    for entry in std::fs::read_dir(&docs).expect("docs/") {
        let path = entry.expect("a docs entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            let text = std::fs::read_to_string(&path).expect("a page");
            pages.push((path.display().to_string(), text));
        }
    }
    assert!(pages.len() > 5, "found the docs");
    for (page, text) in pages {
        assert!(!text.contains("../shared"), "{page} points outside the repository");
    }
}

#[test]
fn the_five_minute_tour_runs_against_the_demo() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (hub, agent) = (free_port(), free_port());
    let (mut demo, banner) = Demo::start(dir.path(), &hub, &agent);
    let bins = bin_dir();
    for command in [
        format!("SHELFSYNC_HUB_DATA_DIR=shelfsync-demo-data {bins}/shelfsync-hub store list --hub-url http://127.0.0.1:{hub}"),
        format!("SHELFSYNC_EDGE_DATA_DIR=shelfsync-demo-data/edge-berlin {bins}/shelfsync-edge status --agent-url http://127.0.0.1:{agent}"),
    ] {
        assert!(banner.contains(&command), "the banner shows {command:?}:\n{banner}");
    }

    let mut script = section("A five-minute tour");
    script = replace(&script, "127.0.0.1:7070", &format!("127.0.0.1:{hub}"));
    script = replace(&script, "127.0.0.1:7171", &format!("127.0.0.1:{agent}"));
    script = replace(&script, "target/debug/", &format!("{bins}/"));
    let (ok, out, err) = run(&script, dir.path());
    assert!(ok && err.is_empty(), "the tour failed:\n{out}\n{err}");
    for shown in [
        "\"replayed\":true",             // the retried commit
        "\"sufficient\":true",           // the web order's read-your-writes
        "\"code\":\"version_conflict\"", // the stale If-Match
        "\"code\":\"invalid_body\"",     // quantity 0 at the till
        "Berlin Mitte",                  // store list
        "hub link       online",         // shelfsync-edge status
    ] {
        assert!(out.contains(shown), "the tour's output shows {shown}:\n{out}");
    }
    assert!(demo.stop(), "the demo stops cleanly on SIGTERM");
    let wal = std::fs::metadata(dir.path().join("shelfsync-demo-data/events.sqlite-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "a clean stop leaves no WAL");
}

#[test]
fn the_hub_down_section_converges_and_stops_what_it_started() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut script = section("A hub and two stores on one machine");
    script = replace(
        &script,
        "cargo build --release -p shelfsync-hub -p shelfsync-edge\n",
        "",
    );
    script = replace(&script, "BIN=$PWD/target/release", &format!("BIN={}", bin_dir()));
    script = replace(&script, "/tmp/shelfsync", &dir.path().display().to_string());
    for port in ["7070", "7171", "7172"] {
        script = replace(&script, port, &free_port());
    }
    let (ok, out, err) = run(&script, dir.path());
    assert!(ok && err.is_empty(), "the section failed:\n{out}\n{err}");
    for shown in [
        "201 201\n201 201",          // both sales answered while the hub is down
        "\"includes_pending\":true", // ...and not confirmed yet
        "hub link       offline",
        "hub link       online",
        "outbox         empty",
        "\"includes_pending\":false", // confirmed once the hub is back
    ] {
        assert!(out.contains(shown), "the output shows {shown:?}:\n{out}");
    }
}
