//! The copy itself: the log in position order, a chunk per transaction, resumed after
//! the last position PostgreSQL already holds (once those events are checked to be this
//! log's first ones); the other tables and `log_head` replaced in the transaction of the
//! last chunk, so that a database whose `log_head` says N holds exactly the source's
//! first N events and the tables that go with them. Then everything is verified.

use super::tables::{Table, EVENTS, OTHERS};
use super::verify::{self, position};
use super::MigrateError;
use indicatif::{ProgressBar, ProgressStyle};

/// Events copied per transaction.
pub const CHUNK_EVENTS: u64 = 10_000;

/// What a run did and checked, printed at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// What was copied; `None` when only checked.
    pub copied: Option<Copied>,
    /// Events verified on both sides (the whole log).
    pub verified: u64,
    /// The digest of the log, the same on both sides.
    pub digest: String,
    /// Each other table and the rows it holds on both sides.
    pub tables: Vec<(&'static str, u64)>,
    /// The log's head, as `log_head` holds it.
    pub head: u64,
    /// Enrolled stores, as `log_head` counts them.
    pub stores: u64,
}

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Events PostgreSQL already held and that matched the source (a resumed copy).
    pub already_there: u64,
    /// Events copied by this run.
    pub events: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(copied) = self.copied {
            writeln!(
                f,
                "copied {} events; {} were already there and matched the source",
                copied.events, copied.already_there
            )?;
        }
        writeln!(
            f,
            "verified events: {} on both sides, positions 1..={}, in the same order; SHA-256 {} on both",
            self.verified, self.head, self.digest
        )?;
        for (table, rows) in &self.tables {
            writeln!(f, "verified {table}: the same {rows} rows on both sides")?;
        }
        writeln!(f, "verified log_head: head {}, stores {}", self.head, self.stores)?;
        write!(
            f,
            "PostgreSQL holds this hub's event store; start the hubs with storage = \"postgres\" \
             (each projects its read model from the log)"
        )
    }
}

/// Copies the SQLite log into PostgreSQL (migrated already), resuming after what an
/// earlier run copied.
pub fn copy(sqlite: &rusqlite::Connection, pg: &mut postgres::Client, progress: bool) -> Result<Copied, MigrateError> {
    let (source_count, head) = source_extent(sqlite)?;
    if source_count != head {
        return Err(MigrateError::Source(format!(
            "holds {source_count} events but its last position is {head}: the log has gaps"
        )));
    }
    let already_there = checked_prefix(sqlite, pg, head, progress)?;
    let bar = bar(progress, head, "copying events");
    bar.set_position(already_there);
    let mut after = already_there;
    loop {
        let end = head.min(after + CHUNK_EVENTS);
        let mut tx = pg.transaction()?;
        let copied = EVENTS.copy_in(&mut tx, |write| {
            let sql = EVENTS.select("position > ?1 AND position <= ?2", false);
            let range = [position(after), position(end)].map(rusqlite::types::Value::Integer);
            EVENTS.sqlite_rows(sqlite, &sql, &range, write)
        })?;
        if copied != end - after {
            return Err(MigrateError::Source(format!(
                "positions {}..={end} held {copied} events",
                after + 1
            )));
        }
        if end == head {
            replace_other_tables(&mut tx, sqlite, head)?;
            tx.commit()?;
            break;
        }
        tx.commit()?;
        after = end;
        bar.set_position(after);
    }
    bar.finish_and_clear();
    Ok(Copied {
        already_there,
        events: head - already_there,
    })
}

/// Checks that both sides hold the same log and the same rows in every other table.
pub fn verify(
    sqlite: &rusqlite::Connection,
    pg: &mut postgres::Client,
    progress: bool,
) -> Result<Summary, MigrateError> {
    let (_, head) = source_extent(sqlite)?;
    let bar = self::bar(progress, head, "verifying events");
    let events = verify::events(sqlite, pg, head, |at| bar.set_position(at))?;
    bar.finish_and_clear();
    let pg_count: i64 = pg.query_one("SELECT count(*) FROM events", &[])?.try_get(0)?;
    if pg_count as u64 != events.count {
        return Err(MigrateError::Mismatch(format!(
            "events: PostgreSQL holds {pg_count}, the SQLite log {} (the rest are on PostgreSQL only)",
            events.count
        )));
    }
    let mut tables = Vec::new();
    for table in &OTHERS {
        tables.push((table.name, verify::table(table, sqlite, pg)?));
    }
    let stores = verify::count(&OTHERS[0], sqlite)?;
    let row = pg.query_one("SELECT head, stores FROM log_head", &[])?;
    let (pg_head, pg_stores): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    if (pg_head, pg_stores) != (position(head), position(stores)) {
        return Err(MigrateError::Mismatch(format!(
            "log_head holds head {pg_head}, stores {pg_stores}; the source's are {head} and {stores}"
        )));
    }
    Ok(Summary {
        copied: None,
        verified: events.count,
        digest: events.digest,
        tables,
        head,
        stores,
    })
}

/// The number of events of the SQLite log and its last position.
fn source_extent(sqlite: &rusqlite::Connection) -> Result<(u64, u64), MigrateError> {
    let (count, last): (i64, i64) =
        sqlite.query_row("SELECT count(*), COALESCE(MAX(position), 0) FROM events", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    Ok((count as u64, last as u64))
}

/// How many of the source's first events PostgreSQL already holds (an interrupted or
/// earlier copy), after checking that they are exactly those; a database that holds
/// anything else (another hub's log) is refused.
fn checked_prefix(
    sqlite: &rusqlite::Connection,
    pg: &mut postgres::Client,
    head: u64,
    progress: bool,
) -> Result<u64, MigrateError> {
    let row = pg.query_one("SELECT count(*), COALESCE(MAX(position), 0) FROM events", &[])?;
    let (count, last) = (row.try_get::<_, i64>(0)? as u64, row.try_get::<_, i64>(1)? as u64);
    let refuse = |why: String| {
        MigrateError::Target(format!(
            "the database already holds {count} events that are not the start of this log ({why}); \
             is it another hub's? Copy into an empty database"
        ))
    };
    if count != last {
        return Err(refuse(format!("positions up to {last}, with gaps")));
    }
    if last > head {
        return Err(refuse(format!("up to position {last}, the SQLite log ends at {head}")));
    }
    if last > 0 {
        let bar = bar(progress, last, "checking the events already there");
        let checked = verify::events(sqlite, pg, last, |at| bar.set_position(at));
        bar.finish_and_clear();
        checked.map_err(|error| match error {
            MigrateError::Mismatch(at) => refuse(at),
            other => other,
        })?;
    }
    Ok(last)
}

/// Replaces every other table with the source's rows and sets `log_head`, in the
/// transaction of the last chunk.
fn replace_other_tables(
    tx: &mut postgres::Transaction<'_>,
    sqlite: &rusqlite::Connection,
    head: u64,
) -> Result<(), MigrateError> {
    for table in OTHERS.iter().rev() {
        tx.execute(&format!("DELETE FROM {}", table.name), &[])?;
    }
    for table in &OTHERS {
        copy_table(tx, sqlite, table)?;
    }
    let stores = verify::count(&OTHERS[0], sqlite)?;
    tx.execute(
        "UPDATE log_head SET head = $1, stores = $2",
        &[&position(head), &position(stores)],
    )?;
    Ok(())
}

fn copy_table(
    tx: &mut postgres::Transaction<'_>,
    sqlite: &rusqlite::Connection,
    table: &Table,
) -> Result<u64, MigrateError> {
    table.copy_in(tx, |write| {
        table.sqlite_rows(sqlite, &table.select("", false), &[], write)
    })
}

/// A progress bar on stderr like `rebuild-projections`' (hidden when not asked for).
fn bar(show: bool, length: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    let template = format!("{what} [{{bar:40}}] {{pos}}/{{len}} events, {{per_sec}}, {{elapsed}} elapsed, eta {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
