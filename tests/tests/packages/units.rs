//! The systemd units' hardening, scored by `systemd-analyze security --offline=yes` (the
//! score docs/operations.md gives), and the limits a push-stream server needs.

use super::root::workspace;
use shelfsync_common::testing::services::programs_present;
use std::process::Command;

/// The worst exposure score allowed (0 = locked down, 10 = exposed; both units score 1.1
/// with systemd 252, and 8.5 before the hardening).
const MAX_EXPOSURE: f64 = 2.0;

/// The exposure score `systemd-analyze` gives the unit file at `path`.
fn exposure(path: &std::path::Path) -> f64 {
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(path)
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no score from systemd-analyze:\n{text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let score = line.rsplit(": ").next().and_then(|s| s.split_whitespace().next());
    score
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

#[test]
fn both_units_are_hardened_and_sized_for_their_connections() {
    if !programs_present(
        &["systemd-analyze"],
        "the systemd units' security score",
        "apt-get install systemd",
    ) {
        return;
    }
    for (role, min_files) in [("hub", 65_536), ("edge", 8_192)] {
        let path = workspace().join(format!("installers/shelfsync-{role}.service"));
        let score = exposure(&path);
        assert!(
            score <= MAX_EXPOSURE,
            "shelfsync-{role}.service scores {score}, above {MAX_EXPOSURE}"
        );
        let unit = std::fs::read_to_string(&path).unwrap();
        let setting = |name: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("shelfsync-{role}.service sets no {name}"))
                .to_owned()
        };
        assert_eq!(setting("CapabilityBoundingSet"), "", "no capabilities");
        assert_eq!(setting("SystemCallFilter"), "@system-service");
        assert_eq!(setting("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
        assert_eq!(setting("UMask"), "0077", "whatever it creates is owner-only");
        let files: u64 = setting("LimitNOFILE").parse().expect("a number");
        assert!(
            files >= min_files,
            "{role}: LimitNOFILE {files}, want {min_files} or more"
        );
    }
}
