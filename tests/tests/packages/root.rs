//! A throwaway root directory and what the tests ask of it: running a command and
//! reading the modes, owners and accounts of the files a package's scripts left there.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds the tests crate")
        .to_owned()
}

/// Runs `command`, panics with its output unless it succeeds, returns stdout and stderr.
pub fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{text}",
        output.status
    );
    text
}

/// A directory that stands for `/` and is deleted with the value.
pub struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    /// An empty root with an `/etc` (systemd-sysusers writes its account files there).
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("shelfsync-root-")
            .tempdir()
            .expect("a temporary directory");
        std::fs::create_dir_all(dir.path().join("etc")).expect("etc");
        Root { dir }
    }

    /// The root's own directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `path` (absolute, as inside the root) on this machine.
    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.path().join(path.trim_start_matches('/'))
    }

    /// Whether `path` exists in the root (a dangling link counts).
    pub fn has(&self, path: &str) -> bool {
        self.path(path).symlink_metadata().is_ok()
    }

    /// `path`'s permission bits, owner uid and group gid.
    pub fn mode_and_owner(&self, path: &str) -> (u32, u32, u32) {
        let meta = std::fs::metadata(self.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        (meta.mode() & 0o7777, meta.uid(), meta.gid())
    }

    /// The text of `path` in the root.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The uid and gid of the `shelfsync` account in the root's /etc/passwd and /etc/group.
    pub fn shelfsync_ids(&self) -> (u32, u32) {
        let id_in = |file: &str| {
            self.read(file)
                .lines()
                .find_map(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    (fields[0] == "shelfsync").then(|| fields[2].parse::<u32>().expect("a numeric id"))
                })
                .unwrap_or_else(|| panic!("no shelfsync entry in the root's {file}"))
        };
        (id_in("/etc/passwd"), id_in("/etc/group"))
    }

    /// Checks what a fresh install of `role` left: the account, the state directory (0700,
    /// shelfsync's), the configuration (0640 root:shelfsync, the example's text).
    pub fn assert_installed(&self, role: &str) {
        let (uid, gid) = self.shelfsync_ids();
        assert_ne!(uid, 0, "shelfsync is not root");
        assert_eq!(
            self.mode_and_owner(&format!("/var/lib/shelfsync-{role}")),
            (0o700, uid, gid),
            "the state directory: 0700, shelfsync's"
        );
        let config = format!("/etc/shelfsync/{role}.toml");
        assert_eq!(
            self.mode_and_owner(&config),
            (0o640, 0, gid),
            "{config}: 0640 root:shelfsync"
        );
        let example = std::fs::read_to_string(workspace().join(format!("installers/{role}.example.toml"))).unwrap();
        assert_eq!(self.read(&config), example, "{config} is the example");
        assert!(self.has(&format!("/usr/bin/shelfsync-{role}")));
        assert!(self.has(&format!("/usr/lib/systemd/system/shelfsync-{role}.service")));
    }

    /// Whether the unit of `role` is enabled (its link in multi-user.target.wants).
    pub fn enabled(&self, role: &str) -> bool {
        self.has(&format!(
            "/etc/systemd/system/multi-user.target.wants/shelfsync-{role}.service"
        ))
    }
}
