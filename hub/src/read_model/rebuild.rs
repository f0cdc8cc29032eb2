//! Rebuilding the read model from zero, offline (`shelfsync-hub rebuild-projections`):
//! a fresh file projected from the whole log, then renamed over the old one.

use super::*;

/// Rebuilds the read model from zero: projects the whole log at `store_path` into a
/// fresh file next to `read_model_path`, then renames it over `read_model_path`. Returns
/// the number of events applied. Blocking; shows an indicatif progress bar on stderr
/// (events done of the head, rate, ETA) when `show_progress`.
///
/// This backs `shelfsync-hub rebuild-projections`. **Stop the hub first**: a running hub
/// keeps writing its own (old) read model file and would not see the rebuilt one.
pub fn rebuild(store_path: &Path, read_model_path: &Path, show_progress: bool) -> Result<u64, ProjectionError> {
    if !store_path.exists() {
        return Err(ProjectionError::Io {
            path: store_path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no event log here"),
        });
    }
    let log = LogFile::open(store_path)?;
    let head = log.head()?;
    let temp = sibling(read_model_path, ".rebuild");
    remove_database_files(&temp)?;
    let started = Instant::now();
    let bar = progress_bar(show_progress, head, "read model");
    let mut applied = 0u64;
    let mut position = 0;
    {
        let mut conn = open_writer(&temp)?;
        // The file is not live until the rename below: no need to sync each page.
        conn.pragma_update(None, "synchronous", "OFF")?;
        loop {
            let page = log.events_after(position, REBUILD_PAGE)?;
            if page.is_empty() {
                break;
            }
            let (batch, outcome) = apply_skipping_poison(&mut conn, &page);
            outcome?;
            applied += batch.events as u64;
            position = batch.position;
            if position > bar.length().unwrap_or(0) {
                bar.set_length(position);
            }
            bar.set_position(position);
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    bar.finish();
    sync_file(&temp)?;
    // A WAL left by the old file must not be replayed onto the new one.
    remove_database_files(read_model_path)?;
    std::fs::rename(&temp, read_model_path).map_err(|source| ProjectionError::Io {
        path: read_model_path.to_owned(),
        source,
    })?;
    remove_database_files(&temp)?;
    if let Some(dir) = read_model_path.parent() {
        // Make the rename durable; not every platform can open a directory.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    tracing::info!(
        events = applied,
        position,
        seconds = started.elapsed().as_secs_f64(),
        path = %read_model_path.display(),
        "read model rebuilt"
    );
    Ok(applied)
}

/// A progress bar on stderr for rebuilding `what` up to `head` (events done, rate, ETA),
/// or a hidden one.
pub(crate) fn progress_bar(show: bool, head: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(head);
    let template =
        format!("rebuilding {what} [{{bar:40}}] {{pos}}/{{len}} events, {{per_sec}}, {{elapsed}} elapsed, eta {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// Removes a SQLite file and its WAL and shared-memory files, if they exist.
pub(crate) fn remove_database_files(path: &Path) -> Result<(), ProjectionError> {
    for file in [path.to_owned(), sibling(path, "-wal"), sibling(path, "-shm")] {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ProjectionError::Io { path: file, source }),
        }
    }
    Ok(())
}

fn sync_file(path: &Path) -> Result<(), ProjectionError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| ProjectionError::Io {
            path: path.to_owned(),
            source,
        })
}
