//! `shelfsync-hub backup` and `restore`: a consistent copy of a SQLite hub's files taken
//! while it serves, and putting one back into a stopped hub's data directory.
//!
//! The copy goes through SQLite's online backup API, one file at a time, each in a single
//! step: a single step reads the whole file in one read transaction, which in WAL mode
//! never blocks the hub's writer (a copy made in several steps would start over each time
//! the hub commits, and might never finish under load). The projections are copied before
//! the log, so their checkpoints are at or behind the copied log's head, and the copy is
//! verified ([`crate::verify`]) before the command says it is done. A manifest
//! ([`MANIFEST_FILE`]) records the head, the time and the hub version.
//!
//! A restore refuses while a hub has the data directory's log open, verifies the backup,
//! replaces the files, and verifies the result. The restored hub is behind what its agents
//! saw: each agent whose cursor is past the restored head re-uploads its own events the
//! hub lost and bootstraps again by itself.

use crate::verify::{self, Report, VerifyError};
use crate::{ADMIN_TOKEN_FILE, ANALYTICS_FILE, EVENTS_FILE, READ_MODEL_FILE};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a backup directory.
pub const MANIFEST_FILE: &str = "shelfsync-backup.json";
/// The database files in the order they are copied: projections before the log.
const DATABASES: [&str; 3] = [ANALYTICS_FILE, READ_MODEL_FILE, EVENTS_FILE];

/// Why a backup or restore stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The command cannot do what was asked.
    #[error("{0}")]
    Refused(String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Verifying could not run.
    #[error("verifying: {0}")]
    Verify(#[from] VerifyError),
    /// The files verified with problems.
    #[error("{what} does not verify:\n{report}")]
    Problems {
        /// Which files.
        what: String,
        /// What verify found.
        report: Box<Report>,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a backup holds, written beside its files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The copied log's head.
    pub head: u64,
    /// When the copy was taken (RFC 3339).
    pub created_at: String,
    /// The version of the hub that took it.
    pub hub_version: String,
    /// The files copied.
    pub files: Vec<String>,
}

/// Copies the hub's files in `data_dir` into the new (or empty) directory `to`, verifies
/// the copy, writes the manifest; progress lines on stderr when `progress`. Blocking.
pub fn backup(data_dir: &Path, to: &Path, progress: bool) -> Result<Manifest, BackupError> {
    if !data_dir.join(EVENTS_FILE).is_file() {
        return Err(BackupError::Refused(format!(
            "no event log in {} (is this the hub's data_dir?)",
            data_dir.display()
        )));
    }
    if to.exists() && std::fs::read_dir(to).map_err(io(to))?.next().is_some() {
        return Err(BackupError::Refused(format!(
            "{} is not empty: back up into a new directory",
            to.display()
        )));
    }
    shelfsync_common::sqlite::create_private_dir(to).map_err(io(to))?;
    let mut files = Vec::new();
    for file in DATABASES {
        let source = data_dir.join(file);
        if source.is_file() {
            copy_online(&source, &to.join(file))?;
            files.push(file.to_owned());
        }
    }
    let token = data_dir.join(ADMIN_TOKEN_FILE);
    if token.is_file() {
        std::fs::copy(&token, to.join(ADMIN_TOKEN_FILE)).map_err(io(&token))?;
        files.push(ADMIN_TOKEN_FILE.to_owned());
    }
    let report = verify::data_dir(to, progress)?;
    if !report.passed() {
        return Err(BackupError::Problems {
            what: format!("the copy in {}", to.display()),
            report: Box::new(report),
        });
    }
    let manifest = Manifest {
        head: report.head,
        created_at: now_rfc3339(),
        hub_version: env!("CARGO_PKG_VERSION").to_owned(),
        files,
    };
    let path = to.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| BackupError::Refused(e.to_string()))?;
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(manifest)
}

/// Copies the database at `source` into a new file at `target` with the online backup
/// API, in one step (see the module's header).
fn copy_online(source: &Path, target: &Path) -> Result<(), BackupError> {
    shelfsync_common::sqlite::backup::backup(source, target)
        .map(drop)
        .map_err(|e| BackupError::Refused(format!("copying {}: {e}", source.display())))
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// The head of the log the restore replaced (None: there was none).
    pub replaced_head: Option<u64>,
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = self.manifest.head;
        writeln!(
            f,
            "restored the backup of {} (hub {}): the log is at position {head}, and verifies",
            self.manifest.created_at, self.manifest.hub_version
        )?;
        if let Some(before) = self.replaced_head.filter(|before| *before > head) {
            writeln!(
                f,
                "the replaced log was at position {before}: events {}..={before} are gone from the hub",
                head + 1
            )?;
        }
        write!(
            f,
            "next: start the hub. Every agent whose cursor is past position {head} notices that the hub is \
             behind it, uploads again its own events the hub lost, and bootstraps again by itself; the fleet \
             view shows each one until it has. Events recorded at the hub itself after the backup (web orders, \
             deliveries booked there) are not coming back: book them again"
        )
    }
}

/// Puts the backup in `from` into `data_dir` (the hub stopped), verifying the backup
/// first and the result after.
pub fn restore(from: &Path, data_dir: &Path, progress: bool) -> Result<Restored, BackupError> {
    let manifest_path = from.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => {
            BackupError::Refused(format!("{} is not a backup: it has no {MANIFEST_FILE}", from.display()))
        }
        _ => io(&manifest_path)(source),
    })?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| BackupError::Refused(format!("{}: {e}", manifest_path.display())))?;
    let report = verify::data_dir(from, progress)?;
    if !report.passed() {
        return Err(BackupError::Problems {
            what: format!("the backup in {}", from.display()),
            report: Box::new(report),
        });
    }
    let replaced_head = stopped_hub_head(data_dir)?;
    shelfsync_common::sqlite::create_private_dir(data_dir).map_err(io(data_dir))?;
    for file in DATABASES {
        let target = data_dir.join(file);
        if manifest.files.iter().any(|f| f == file) {
            replace(&from.join(file), &target)?;
        } else {
            // A projection the backup lacks is rebuilt from the log by the hub.
            remove(&target)?;
        }
    }
    if manifest.files.iter().any(|f| f == ADMIN_TOKEN_FILE) {
        replace(&from.join(ADMIN_TOKEN_FILE), &data_dir.join(ADMIN_TOKEN_FILE))?;
    }
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    let report = verify::data_dir(data_dir, progress)?;
    if !report.passed() {
        return Err(BackupError::Problems {
            what: format!("the restored {}", data_dir.display()),
            report: Box::new(report),
        });
    }
    Ok(Restored {
        manifest,
        replaced_head,
    })
}

/// The head of the log in `data_dir`, after making sure no hub has it open; `None` when
/// there is no log.
fn stopped_hub_head(data_dir: &Path) -> Result<Option<u64>, BackupError> {
    let log = data_dir.join(EVENTS_FILE);
    if !log.is_file() {
        return Ok(None);
    }
    let conn = crate::store::schema::lock_exclusive(&log)?.ok_or_else(|| {
        BackupError::Refused(format!(
            "{} is in use: stop the hub first (a restore replaces its files)",
            log.display()
        ))
    })?;
    Ok(Some(crate::store::log_head(&conn).map_err(VerifyError::from)?))
}

/// Copies `source` over `target` (and removes `target`'s WAL files): copied beside it,
/// synced, then renamed, so a crash leaves the old file or the new one.
fn replace(source: &Path, target: &Path) -> Result<(), BackupError> {
    let temp = crate::read_model::sibling(target, ".restoring");
    std::fs::copy(source, &temp).map_err(io(source))?;
    std::fs::File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(io(&temp))?;
    remove(target)?;
    std::fs::rename(&temp, target).map_err(io(target))
}

/// Removes a database file and its WAL files.
fn remove(path: &Path) -> Result<(), BackupError> {
    crate::read_model::remove_database_files(path).map_err(|e| BackupError::Refused(e.to_string()))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
