//! Tests that need a program from outside the workspace (bash and curl for the README's
//! scripts, a browser for the web pages): without it they skip with a message that says how
//! to get it, unless `SHELFSYNC_REQUIRE_SERVICES=1` (as in CI), where they fail.

use std::process::{Command, Stdio};

/// Whether every one of `programs` runs (`PROGRAM --version` starts). If not: with
/// `SHELFSYNC_REQUIRE_SERVICES=1` a panic, else `SKIPPED: <what_for> need(s) <missing>;
/// <how>` on stderr and `false`.
pub fn programs_present(programs: &[&str], what_for: &str, how: &str) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|program| {
            Command::new(program)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!("{what_for} need {}; {how}", missing.join(" and "));
    assert!(
        std::env::var_os("SHELFSYNC_REQUIRE_SERVICES").is_none_or(|value| value != "1"),
        "{message}"
    );
    eprintln!("SKIPPED: {message}");
    false
}
