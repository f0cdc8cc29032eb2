//! What `shelfsync-edge enroll` writes on the store's machine: the store's id and the hub's
//! address into the configuration (every other line kept as it was; the annotated example
//! when there is none), the store token into the secrets file the service reads
//! (`SHELFSYNC_EDGE_HUB_TOKEN=`, mode 0600, other lines kept), and the agent's keys. Each
//! file is written whole to a temporary file beside it and renamed over it, so a crash
//! leaves the old file or the new one, never half of one.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The top-level settings enroll sets, as `key = value` TOML lines.
pub type Settings<'a> = &'a [(&'a str, String)];

/// `text` (a TOML configuration) with `settings` set at the top level: an active line of
/// the key is replaced, else a commented example line (`# key = ...`) becomes it, else it
/// is added before the first section. A `hub_token` line is commented out (the token lives
/// in the secrets file, which would override it anyway).
pub fn set_top_level(text: &str, settings: Settings<'_>) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let top_end = lines
        .iter()
        .position(|line| line.trim_start().starts_with('['))
        .unwrap_or(lines.len());
    let key_of = |line: &str| -> Option<(bool, String)> {
        let trimmed = line.trim_start();
        let (commented, rest) = match trimmed.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, trimmed),
        };
        let (key, _) = rest.split_once('=')?;
        let key = key.trim();
        (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| (commented, key.to_owned()))
    };
    for line in lines.iter_mut().take(top_end) {
        if key_of(line) == Some((false, "hub_token".into())) {
            *line = format!("# {line}  # moved to the secrets file by shelfsync-edge enroll");
        }
    }
    let mut added = Vec::new();
    for (key, value) in settings {
        let line = format!("{key} = {value}");
        let find = |commented: bool| (0..top_end).find(|&i| key_of(&lines[i]) == Some((commented, (*key).to_owned())));
        match find(false).or_else(|| find(true)) {
            Some(index) => lines[index] = line,
            None => added.push(line),
        }
    }
    if !added.is_empty() {
        added.push(String::new());
        lines.splice(top_end..top_end, added);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// `text` (a systemd environment file) with `KEY=value` set: the key's line replaced, or
/// added at the end.
pub fn set_env_line(text: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key}=");
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    lines.push(format!("{prefix}{value}"));
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Writes `contents` to `path` with `mode`, through a temporary file renamed over it. An
/// existing file's owner and group are kept when this process may set them (as root).
pub fn replace_file(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let owner = std::fs::metadata(path).ok().map(|m| (m.uid(), m.gid()));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.enroll-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        if let Some((uid, gid)) = owner.filter(|_| running_as_root()) {
            std::os::unix::fs::chown(&temp, Some(uid), Some(gid))?;
        }
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Whether this process runs as root (it may then start the service and set owners).
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Gives `path` the owner and group of `dir` (the agent's data directory, which the
/// service's user owns), when running as root: a key root wrote must be the agent's.
pub fn own_like(path: &Path, dir: &Path) -> std::io::Result<()> {
    if !running_as_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(dir)?;
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_replace_their_lines_or_examples_and_keep_the_rest() {
        let example = "# store\n# store_id = \"x\"\nhub_url = \"https://old\"\nhub_token = \"ss_old\"\nlisten = \"0.0.0.0:7171\"\n\n[sync]\nupload_batch = 200\n";
        let out = set_top_level(
            example,
            &[
                ("store_id", "\"S\"".into()),
                ("hub_url", "\"https://new\"".into()),
                ("ca_file", "\"/etc/ca.pem\"".into()),
            ],
        );
        assert_eq!(
            out,
            "# store\nstore_id = \"S\"\nhub_url = \"https://new\"\n# hub_token = \"ss_old\"  # moved to the secrets file by shelfsync-edge enroll\nlisten = \"0.0.0.0:7171\"\n\nca_file = \"/etc/ca.pem\"\n\n[sync]\nupload_batch = 200\n"
        );
        let parsed: toml_probe::Probe = shelfsync_common::server::settings::from_toml(&out).unwrap();
        assert_eq!(parsed.store_id, "S");
    }

    #[test]
    fn the_token_line_is_replaced_and_other_lines_kept() {
        let out = set_env_line(
            "RUST_LOG=debug\nSHELFSYNC_EDGE_HUB_TOKEN=old\n",
            "SHELFSYNC_EDGE_HUB_TOKEN",
            "new",
        );
        assert_eq!(out, "RUST_LOG=debug\nSHELFSYNC_EDGE_HUB_TOKEN=new\n");
        assert_eq!(set_env_line("", "K", "v"), "K=v\n");
    }

    #[test]
    fn a_replaced_file_has_the_mode_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.env");
        replace_file(&path, "A=1\n", 0o600).unwrap();
        replace_file(&path, "A=2\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "A=2\n");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    mod toml_probe {
        #[derive(Debug, serde::Deserialize)]
        pub struct Probe {
            pub store_id: String,
        }
    }
}
