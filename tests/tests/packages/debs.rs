//! The two `.deb`: built by `installers/build-debs.sh` from the binaries this test build
//! made (`--packaging-only <the test's profile>`: the packaging is what is under test, and a
//! release build would cost CI minutes), read with `dpkg-deb`, then installed, upgraded,
//! removed and purged in a throwaway root by `dpkg --root`, running their real
//! maintainer scripts (`--force-script-chrootless`: on this machine, with `DPKG_ROOT` set).

use super::root::{run, workspace, Root};
use shelfsync_common::testing::services::programs_present;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Every file a package holds besides its binary, as `dpkg-deb -c` lists them (mode,
/// path); `ROLE` stands for hub or edge. Nothing under /etc or /var: the configuration
/// is made by postinst (so dpkg never asks about it) and the data by the daemon.
const FILES: &[(&str, &str)] = &[
    ("-rwxr-xr-x", "./usr/bin/shelfsync-ROLE"),
    ("-rw-r--r--", "./usr/lib/systemd/system/shelfsync-ROLE.service"),
    ("-rw-r--r--", "./usr/lib/sysusers.d/shelfsync-ROLE.conf"),
    ("-rw-r--r--", "./usr/share/shelfsync-ROLE/ROLE.example.toml"),
    ("-rw-r--r--", "./usr/share/doc/shelfsync-ROLE/README.md"),
    ("-rw-r--r--", "./usr/share/doc/shelfsync-ROLE/operations.md"),
    ("-rw-r--r--", "./usr/share/doc/shelfsync-ROLE/copyright"),
];

/// The files of `role`'s package, as paths inside the root.
pub fn package_files(role: &str) -> Vec<String> {
    FILES
        .iter()
        .map(|(_, path)| path.trim_start_matches('.').replace("ROLE", role))
        .collect()
}

/// Whether the tools are here; if not, skips (or fails under SHELFSYNC_REQUIRE_SERVICES=1).
pub fn tools_present() -> bool {
    programs_present(
        &["dpkg", "dpkg-deb", "cargo-deb", "systemd-sysusers", "systemctl"],
        "the package tests",
        "apt-get install dpkg systemd; cargo install cargo-deb --version 3.8.0 --locked --no-default-features \
         (installers/build-debs.sh does it too)",
    )
}

/// Builds both packages once per test process; returns the directory holding them.
fn debs() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bins = shelfsync_tests::bins::binaries();
        let profile_dir = bins.hub.parent().expect("the binaries' directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("no profile in {}", profile_dir.display()),
        };
        let out = profile_dir.join("packages-test");
        let _ = std::fs::remove_dir_all(&out);
        run(Command::new(workspace().join("installers/build-debs.sh"))
            .args(["--packaging-only", profile, "--fast"])
            .env("SHELFSYNC_DEB_DIR", &out));
        out
    })
}

/// The path of `role`'s package.
fn deb(role: &str) -> PathBuf {
    let version = env!("CARGO_PKG_VERSION");
    let path = debs().join(format!("shelfsync-{role}_{version}-1_amd64.deb"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    run(Command::new("dpkg-deb").args(args).arg(deb))
}

#[test]
fn each_package_holds_its_binary_unit_account_and_example_and_the_shared_scripts() {
    if !tools_present() {
        return;
    }
    for role in ["hub", "edge"] {
        let deb = deb(role);
        let fields = dpkg_deb(&["-f"], &deb);
        assert!(fields.contains(&format!("Package: shelfsync-{role}\n")), "{fields}");
        let depends = fields.lines().find(|l| l.starts_with("Depends:")).unwrap_or_default();
        assert!(depends.contains("adduser") && depends.contains("libc6"), "{depends}");

        let listing = dpkg_deb(&["-c"], &deb);
        let files: Vec<(String, String)> = listing
            .lines()
            .filter(|line| !line.starts_with('d'))
            .map(|line| {
                let columns: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(columns[1], "0/0", "owned by root: {line}");
                (columns[0].to_owned(), columns[5].to_owned())
            })
            .collect();
        let mut expected: Vec<(String, String)> = FILES
            .iter()
            .map(|(mode, path)| (mode.to_string(), path.replace("ROLE", role)))
            .collect();
        expected.sort_by(|a, b| a.1.cmp(&b.1));
        let mut got = files.clone();
        got.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(got, expected, "{role}'s files and modes:\n{listing}");

        let control = tempfile::tempdir().unwrap();
        run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(control.path()));
        let mut scripts: Vec<String> = std::fs::read_dir(control.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        scripts.sort();
        assert_eq!(
            scripts,
            ["control", "postinst", "postrm", "prerm"],
            "no conffiles: dpkg never asks"
        );
        for script in ["postinst", "prerm", "postrm"] {
            assert_eq!(
                std::fs::read(control.path().join(script)).unwrap(),
                std::fs::read(workspace().join("installers/deb").join(script)).unwrap(),
                "{role}'s {script} is installers/deb/{script}"
            );
        }
        let unpacked = tempfile::tempdir().unwrap();
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(unpacked.path()));
        let unit = format!("usr/lib/systemd/system/shelfsync-{role}.service");
        assert_eq!(
            std::fs::read(unpacked.path().join(&unit)).unwrap(),
            std::fs::read(workspace().join(format!("installers/shelfsync-{role}.service"))).unwrap(),
            "the packaged unit is installers/shelfsync-{role}.service"
        );
        let version = run(Command::new(unpacked.path().join(format!("usr/bin/shelfsync-{role}"))).arg("--version"));
        assert!(
            version.starts_with(&format!("shelfsync-{role} ")),
            "the packaged binary runs: {version}"
        );
    }
}

/// `dpkg` acting on `root`, running the maintainer scripts on this machine with
/// `DPKG_ROOT` set; dependencies are not installed in an empty root.
fn dpkg(root: &Root, args: &[&str], debs: &[PathBuf]) -> String {
    let mut command = Command::new("dpkg");
    command
        .arg(format!("--root={}", root.dir().display()))
        .args([
            "--force-not-root",
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
        ])
        .args(args)
        .args(debs);
    run(&mut command)
}

#[test]
fn the_packages_install_upgrade_remove_and_purge_in_a_throwaway_root() {
    if !tools_present() {
        return;
    }
    let root = Root::new();
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.path(dir)).unwrap();
    }
    std::fs::write(root.path("var/lib/dpkg/status"), "").unwrap();

    let said = dpkg(&root, &["--install"], &[deb("hub"), deb("edge")]);
    root.assert_installed("hub");
    root.assert_installed("edge");
    assert!(said.contains("systemd is not running here"), "{said}");
    assert!(root.enabled("hub"), "a new hub is enabled");
    assert!(
        !root.enabled("edge"),
        "an agent without its store is not: it could only fail"
    );
    assert!(
        said.contains("shelfsync-edge enroll --hub"),
        "the agent says how to enroll it:\n{said}"
    );

    // An upgrade keeps an edited configuration and the data, and says it restarts.
    let config = root.path("/etc/shelfsync/hub.toml");
    let edited = format!("{}\n# edited by the operator\n", root.read("/etc/shelfsync/hub.toml"));
    std::fs::write(&config, &edited).unwrap();
    let data = root.path("/var/lib/shelfsync-hub/events.sqlite");
    std::fs::write(&data, "the event log").unwrap();
    let said = dpkg(&root, &["--install"], &[deb("hub")]);
    assert!(said.contains("upgraded from"), "{said}");
    assert_eq!(
        root.read("/etc/shelfsync/hub.toml"),
        edited,
        "an edited configuration is kept"
    );
    assert!(root.enabled("hub"));

    // Remove: binary, unit and enable link go; configuration and data stay.
    dpkg(&root, &["--remove", "shelfsync-hub"], &[]);
    for file in package_files("hub") {
        assert!(!root.has(&file), "{file} removed");
    }
    assert!(!root.enabled("hub"), "the enable link goes with the unit");
    assert_eq!(root.read("/etc/shelfsync/hub.toml"), edited);
    assert!(data.exists());

    // Purge: the configuration goes, the data stays; the other package is untouched.
    std::fs::write(root.path("/etc/shelfsync/hub.env"), "SHELFSYNC_HUB_ADMIN_TOKEN=x\n").unwrap();
    let said = dpkg(&root, &["--purge", "shelfsync-hub"], &[]);
    assert!(said.contains("kept the data"), "{said}");
    assert!(!root.has("/etc/shelfsync/hub.toml") && !root.has("/etc/shelfsync/hub.env"));
    assert_eq!(
        std::fs::read_to_string(&data).unwrap(),
        "the event log",
        "data survives a purge"
    );
    root.assert_installed("edge");
    dpkg(&root, &["--purge", "shelfsync-edge"], &[]);
    assert!(!root.has("/etc/shelfsync"), "nothing left in /etc/shelfsync");
    assert!(root.has("/var/lib/shelfsync-edge") && root.has("/var/lib/shelfsync-hub"));
    assert!(!root.has("/usr/bin/shelfsync-edge"));
}
