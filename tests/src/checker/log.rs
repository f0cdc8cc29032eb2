//! Where the checker reads the log from: a hub's SQLite file, or the PostgreSQL database
//! several hubs share. Both are read with the hub's own read functions, so the checker
//! decodes events exactly as the hubs do.

use shelfsync_common::EventEnvelope;
use shelfsync_hub::store::{LogFile, PgLog};
use std::path::{Path, PathBuf};

/// Events per read.
const PAGE: usize = 1000;

/// A hub's log, wherever it lives.
#[derive(Debug, Clone)]
pub enum LogSource {
    /// A hub's SQLite file (`events.sqlite` in its data directory).
    File(PathBuf),
    /// A PostgreSQL database's URL.
    Postgres(String),
}

impl LogSource {
    /// The whole log, in position order.
    pub async fn read(&self) -> Vec<EventEnvelope> {
        match self {
            LogSource::File(path) => read_log(path).await,
            LogSource::Postgres(url) => {
                let log = PgLog::connect(url).await.expect("connecting to the hubs' database");
                let mut events: Vec<EventEnvelope> = Vec::new();
                loop {
                    let after = events.last().map_or(0, |e| e.position);
                    let page = log.events_after(after, PAGE).await.expect("reading the hubs' log");
                    if page.is_empty() {
                        return events;
                    }
                    events.extend(page);
                }
            }
        }
    }
}

/// The whole log, read from the hub's file (read-only, on a blocking thread).
pub async fn read_log(events_file: &Path) -> Vec<EventEnvelope> {
    let path = events_file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let log = LogFile::open(&path).expect("opening the hub's event log");
        let mut events: Vec<EventEnvelope> = Vec::new();
        loop {
            let after = events.last().map_or(0, |e| e.position);
            let page = log.events_after(after, PAGE).expect("reading the hub's event log");
            if page.is_empty() {
                return events;
            }
            events.extend(page);
        }
    })
    .await
    .expect("the log reader")
}
