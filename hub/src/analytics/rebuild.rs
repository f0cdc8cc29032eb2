//! Rebuilding the figures from zero, offline (`shelfsync-hub rebuild-analytics`): the
//! derived tables are emptied and the whole log is folded again, in pages, with an
//! indicatif progress bar. Settings and webhook state stay; webhook cursors are alert ids
//! (log positions), which a rebuild makes again the same, so nothing is sent twice.

use super::fold::apply_batch;
use super::{clear_derived, open_writer, Settings};
use crate::read_model::progress_bar;
use crate::store::{LogFile, ReadError};
use std::path::Path;
use std::time::Instant;

/// Events per transaction of a rebuild.
const REBUILD_PAGE: usize = 50_000;

/// Folds the whole log at `log_path` into the analytics file at `analytics_path` from
/// zero; returns the number of events folded. Blocking. **Stop the hub first.**
pub fn rebuild(log_path: &Path, analytics_path: &Path, show_progress: bool) -> Result<u64, ReadError> {
    let log = LogFile::open(log_path)?;
    let head = log.head()?;
    let mut conn = open_writer(analytics_path, false)?;
    clear_derived(&mut conn)?;
    let settings = Settings::load(&conn)?;
    let bar = progress_bar(show_progress, head, "analytics");
    let started = Instant::now();
    let (mut folded, mut position) = (0u64, 0u64);
    loop {
        let page = log.events_after(position, REBUILD_PAGE)?;
        let Some(last) = page.last() else { break };
        position = last.position;
        folded += apply_batch(&mut conn, &settings, &page)?.events as u64;
        if position > bar.length().unwrap_or(0) {
            bar.set_length(position);
        }
        bar.set_position(position);
    }
    bar.finish();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    tracing::info!(
        events = folded,
        position,
        seconds = started.elapsed().as_secs_f64(),
        "analytics rebuilt"
    );
    Ok(folded)
}
