//! `shelfsync-hub verify`: reads a hub's files (or its PostgreSQL log) and checks that they
//! hold what the hub promises, without writing anything, so it runs on a stopped hub, on a
//! running one (WAL lets a reader in beside the writer; each file is read in one
//! transaction) and on a backup. [`log`] checks the log's own invariants (positions
//! gap-free, stream versions contiguous, every event decodes, the writer's `streams` table
//! agrees); [`read_model`] checks the read model and the analytics file's copy of its
//! tables against the fold of the log up to their checkpoints. Every problem is reported
//! with where it is (position, stream, version, row) and expected against found.

mod log;
mod read_model;

use crate::store::{envelope_from_row, schema, PgLog, ReadError, EVENT_COLUMNS};
use read_model::Fold;
use shelfsync_common::EventEnvelope;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Instant;

/// Problems kept for the report; past this many only the count grows.
const MAX_REPORTED: usize = 50;
/// A progress line on stderr every this many events.
const PROGRESS_EVERY: u64 = 100_000;
/// Events per page read from PostgreSQL.
const PG_PAGE: usize = 10_000;
/// Events handed to the folds at a time (and folded in one transaction: large pages
/// fold fastest, see `read_model::REBUILD_PAGE`).
const FOLD_PAGE: usize = 50_000;

/// Why a verification could not run (a problem it finds is in the [`Report`] instead).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// There is no log to verify.
    #[error("no event log at {0} (is this the hub's data_dir?)")]
    NoLog(PathBuf),
    /// Reading failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl From<rusqlite::Error> for VerifyError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Read(error.into())
    }
}

/// The problems found, the first [`MAX_REPORTED`] of them in full.
#[derive(Debug, Default)]
pub struct Problems {
    found: Vec<String>,
    more: usize,
}

impl Problems {
    fn push(&mut self, problem: String) {
        if self.found.len() < MAX_REPORTED {
            self.found.push(problem);
        } else {
            self.more += 1;
        }
    }

    /// How many were found.
    pub fn count(&self) -> usize {
        self.found.len() + self.more
    }

    /// The first ones, in the order they were found.
    pub fn listed(&self) -> &[String] {
        &self.found
    }
}

/// What a verification found.
#[derive(Debug)]
pub struct Report {
    /// The log's head.
    pub head: u64,
    /// Events read.
    pub events: u64,
    /// Streams seen.
    pub streams: usize,
    /// Each projection compared: its label, checkpoint and poison events skipped.
    pub projections: Vec<(&'static str, u64, usize)>,
    /// Everything that is wrong.
    pub problems: Problems,
}

impl Report {
    /// Whether nothing is wrong.
    pub fn passed(&self) -> bool {
        self.problems.count() == 0
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "event log: {} events read, head {}, {} streams",
            self.events, self.head, self.streams
        )?;
        for (label, checkpoint, poison) in &self.projections {
            write!(
                f,
                "{label}: compared with the fold of the log up to position {checkpoint}"
            )?;
            match poison {
                0 => writeln!(f)?,
                n => writeln!(f, " ({n} poison events skipped, as the hub did: see poison_events)")?,
            }
        }
        if self.passed() {
            return write!(f, "verify: OK");
        }
        for problem in self.problems.listed() {
            writeln!(f, "PROBLEM: {problem}")?;
        }
        if self.problems.more > 0 {
            writeln!(f, "... and {} more", self.problems.more)?;
        }
        write!(f, "verify: {} problems", self.problems.count())
    }
}

/// Verifies the SQLite files of the hub whose data directory is `data_dir`; a progress
/// line on stderr every [`PROGRESS_EVERY`] events when `progress`. Blocking.
pub fn data_dir(data_dir: &Path, progress: bool) -> Result<Report, VerifyError> {
    let path = data_dir.join(crate::EVENTS_FILE);
    if !path.is_file() {
        return Err(VerifyError::NoLog(path));
    }
    // The projections first: their snapshots are then at or behind the log's.
    let folds = projections(data_dir)?;
    let conn = schema::open_read_only(&path)?;
    conn.execute_batch("BEGIN")?;
    let head = crate::store::log_head(&conn)?;
    let mut scan = Scan::new(head, progress, folds);
    {
        let mut stmt = conn.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY position"))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let position: i64 = row.get(0)?;
            let stream_key = row.get_ref(2)?.as_blob().map(<[u8]>::to_vec).unwrap_or_default();
            let version: i64 = row.get(3)?;
            let decoded = envelope_from_row(row).map_err(|error| error.to_string());
            scan.row(position as u64, &stream_key, version as u64, decoded);
        }
    }
    let mut stmt = conn.prepare("SELECT stream_key, version, last_position FROM streams")?;
    let stream_rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, i64>(1)? as u64,
                row.get::<_, i64>(2)? as u64,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    scan.finish(Some(stream_rows))
}

/// Verifies the log in the PostgreSQL database at `url` and the read model in this hub's
/// `data_dir`: the same checks but the `streams` table's (a decoding failure ends the
/// scan, naming the position).
pub async fn postgres(url: &str, data_dir: &Path, progress: bool) -> Result<Report, VerifyError> {
    let folds = projections(data_dir)?;
    let log = PgLog::connect(url).await?;
    let head = log.head().await?;
    let mut scan = Scan::new(head, progress, folds);
    let mut after = 0;
    while after < head {
        let page = match log.events_after(after, PG_PAGE).await {
            Ok(page) => page,
            Err(error) => {
                scan.problems
                    .push(format!("after position {after}: an event does not decode: {error}"));
                break;
            }
        };
        let Some(last) = page.last().map(|event| event.position) else {
            break;
        };
        for event in page {
            let (position, key, version) = (event.position, event.stream.key(), event.stream_version);
            scan.row(position, &key, version, Ok(event));
        }
        after = last;
    }
    scan.finish(None)
}

/// The projections of `data_dir` that exist, each in its read transaction.
fn projections(data_dir: &Path) -> Result<Vec<Fold>, VerifyError> {
    let files = [
        ("read model", crate::READ_MODEL_FILE, crate::read_model::CHECKPOINT_NAME),
        ("analytics", crate::ANALYTICS_FILE, crate::analytics::CHECKPOINT),
    ];
    let mut folds = Vec::new();
    for (label, file, checkpoint) in files {
        folds.extend(Fold::open(label, &data_dir.join(file), checkpoint)?);
    }
    Ok(folds)
}

/// One pass over the log, whichever backend it comes from. Each projection is folded on
/// a thread of its own, fed pages of decoded events, while this thread reads and checks
/// the log.
struct Scan {
    head: u64,
    check: log::LogCheck,
    problems: Problems,
    progress: Option<Instant>,
    page: Vec<EventEnvelope>,
    folders: Vec<Folder>,
}

/// A fold's thread and its inbox.
struct Folder {
    pages: mpsc::SyncSender<Arc<Vec<EventEnvelope>>>,
    done: std::thread::JoinHandle<Result<Fold, ReadError>>,
}

impl Folder {
    fn spawn(mut fold: Fold) -> Self {
        let (pages, inbox) = mpsc::sync_channel::<Arc<Vec<EventEnvelope>>>(1);
        let done = std::thread::spawn(move || {
            for page in inbox {
                fold.fold_page(&page)?;
            }
            Ok(fold)
        });
        Self { pages, done }
    }
}

impl Scan {
    fn new(head: u64, progress: bool, folds: Vec<Fold>) -> Self {
        Self {
            head,
            check: log::LogCheck::default(),
            problems: Problems::default(),
            progress: progress.then(Instant::now),
            page: Vec::new(),
            folders: folds.into_iter().map(Folder::spawn).collect(),
        }
    }

    fn row(&mut self, position: u64, stream_key: &[u8], version: u64, decoded: Result<EventEnvelope, String>) {
        self.check.row(
            position,
            stream_key,
            version,
            decoded.as_ref().err().cloned(),
            &mut self.problems,
        );
        if let Ok(event) = decoded {
            self.page.push(event);
            if self.page.len() >= FOLD_PAGE {
                self.hand_over();
            }
        }
        if let Some(started) = self.progress.filter(|_| self.check.rows % PROGRESS_EVERY == 0) {
            eprintln!(
                "verify: {} of {} events read ({:.1} s)",
                self.check.rows,
                self.head,
                started.elapsed().as_secs_f64()
            );
        }
    }

    /// Gives the page to every fold. A fold that stopped has failed: its thread says why
    /// when joined.
    fn hand_over(&mut self) {
        let page = Arc::new(std::mem::take(&mut self.page));
        for folder in &self.folders {
            let _ = folder.pages.send(page.clone());
        }
    }

    fn finish(mut self, stream_rows: Option<Vec<(Vec<u8>, u64, u64)>>) -> Result<Report, VerifyError> {
        self.hand_over();
        self.check.finish(self.head, stream_rows, &mut self.problems);
        let mut projections = Vec::new();
        for Folder { pages, done } in std::mem::take(&mut self.folders) {
            drop(pages);
            let fold = done
                .join()
                .map_err(|_| ReadError::Join("a projection's fold panicked".into()))??;
            if fold.checkpoint > self.head {
                self.problems.push(format!(
                    "{}: its checkpoint {} is past the log's head {}",
                    fold.label, fold.checkpoint, self.head
                ));
            }
            projections.push((fold.label, fold.checkpoint, fold.poison_count()));
            fold.compare(&mut self.problems)?;
        }
        Ok(Report {
            head: self.head,
            events: self.check.rows,
            streams: self.check.stream_count(),
            projections,
            problems: self.problems,
        })
    }
}
