//! Where the real `shelfsync-hub` and `shelfsync-edge` binaries are.
//!
//! The end-to-end tests run the binaries as child processes (a SIGKILL must kill a real
//! process, with its real files). Cargo only builds a package's own binaries for its
//! tests, so the first test that needs them runs `$CARGO build --bins -p shelfsync-hub -p
//! shelfsync-edge` once per test process, with the profile and target directory of the
//! running test binary: `cargo test --workspace` and `cargo test -p shelfsync-tests` both
//! work on a clean clone. Cargo serialises the nested build on the target directory's
//! lock, so parallel test binaries simply wait for each other.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The paths of the two binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `shelfsync-hub`.
    pub hub: PathBuf,
    /// `shelfsync-edge`.
    pub edge: PathBuf,
}

/// Builds the binaries (once per process) and returns where they are. Panics with cargo's
/// output when the build fails.
pub fn binaries() -> &'static Binaries {
    static BUILT: OnceLock<Binaries> = OnceLock::new();
    BUILT.get_or_init(|| build().unwrap_or_else(|error| panic!("{error}")))
}

/// `target/<profile>` (or `target/<triple>/<profile>`) of the running test binary, which
/// lives in its `deps/` directory.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut dir = exe.parent().expect("the test binary's directory").to_path_buf();
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.pop();
    }
    dir
}

/// The cargo profile whose output directory is `dir` (`debug` is `dev`).
fn profile_of(dir: &Path) -> String {
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".into(),
        Some(other) => other.into(),
    }
}

/// The `--target-dir` that holds `profile_dir` (one or two levels up, depending on whether
/// the build used `--target <triple>`).
fn target_dir(profile_dir: &Path) -> (PathBuf, Option<String>) {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        let triple = profile_dir
            .parent()
            .filter(|parent| *parent != dir)
            .and_then(|parent| parent.file_name())
            .map(|name| name.to_string_lossy().into_owned());
        return (dir, triple);
    }
    let parent = profile_dir.parent().expect("target dir").to_path_buf();
    // target/<triple>/<profile>: the triple's directory holds no CACHEDIR.TAG.
    if parent.join("CACHEDIR.TAG").exists() {
        (parent, None)
    } else {
        let triple = parent.file_name().map(|name| name.to_string_lossy().into_owned());
        (parent.parent().expect("target dir").to_path_buf(), triple)
    }
}

/// Builds the binaries with the profile and target directory of the running executable
/// (a test, or the demo under `cargo run`) and returns where they are; the error holds
/// cargo's output.
pub fn build() -> Result<Binaries, String> {
    let profile_dir = profile_dir();
    let profile = profile_of(&profile_dir);
    let (target_dir, triple) = target_dir(&profile_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = Command::new(&cargo);
    command
        .args([
            "build",
            "--bins",
            "-p",
            "shelfsync-hub",
            "-p",
            "shelfsync-edge",
            "--profile",
        ])
        .arg(&profile)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    if let Some(triple) = &triple {
        command.args(["--target", triple]);
    }
    let started = std::time::Instant::now();
    let output = command.output().map_err(|e| format!("running {cargo:?} build: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the binaries failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let exe = |name: &str| {
        let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        if path.exists() {
            Ok(path)
        } else {
            Err(format!("{} was not built", path.display()))
        }
    };
    let binaries = Binaries {
        hub: exe("shelfsync-hub")?,
        edge: exe("shelfsync-edge")?,
    };
    eprintln!(
        "[shelfsync] binaries ready in {:.1}s: {} and {}",
        started.elapsed().as_secs_f64(),
        binaries.hub.display(),
        binaries.edge.display()
    );
    Ok(binaries)
}
