//! Analytics: what sells, how fast, how many days of stock a store has left, and which
//! streams ran low. Owns the analytics file (`<data_dir>/analytics.sqlite`): the figures,
//! the alert history, and the settings they depend on (store time zones, reorder points)
//! together with the webhook subscribers ([`crate::webhooks`] keeps their state here too).
//!
//! Why its own file and its own worker: figures are derived from the log and must never
//! slow a write or the stock read model. The [`worker`] is one more subscriber of the
//! log's [`crate::store::EventFeed`] (read through [`crate::store::EventStore`] only, so it
//! does not care which storage backend holds the log); it folds each batch ([`fold`]) and
//! moves its own checkpoint (`analytics`) in the same transaction, so the figures are
//! always exactly "the log up to the checkpoint", and it can be rebuilt from zero
//! ([`rebuild`], with a progress bar) at any time. The file starts as a copy of the read
//! model's schema: the worker keeps its own stock, hold and catalog rows at its own
//! checkpoint (with the read model's `StreamWork`), because a low-stock crossing must be
//! judged against the stock *at that event*, not against a read model that is elsewhere.
//!
//! Days are store-local days in the store's IANA time zone (a setting, UTC by default):
//! "Tuesday's sales" are the store's Tuesday. Reads ([`queries`]) take `now` from the
//! caller, so tests run them at any clock they like.

use crate::read_model::read_named_checkpoint;
use crate::store::schema::{self, ANALYTICS};
use crate::store::{ReadError, ReadPool};
use chrono::{Datelike, TimeZone};
use chrono_tz::Tz;
use rusqlite::{params, Connection, OptionalExtension};
use shelfsync_common::{ProductId, StoreId};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

pub mod fold;
pub mod queries;
mod rebuild;
pub mod settings;
#[cfg(test)]
mod tests;
pub mod worker;

pub use rebuild::rebuild;
pub use worker::{idle, spawn, AnalyticsHandle};

/// The analytics checkpoint's name in the file's `checkpoint` table.
pub const CHECKPOINT: &str = "analytics";
/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// Day 0.
const EPOCH: time::Date = time::macros::date!(1970 - 01 - 01);

/// A store-local day: days since 1970-01-01 in the store's time zone.
pub type Day = i64;

/// The store-local day of `at` in `tz`.
pub fn local_day(tz: Tz, at: OffsetDateTime) -> Day {
    let utc = chrono::DateTime::from_timestamp(at.unix_timestamp(), 0).unwrap_or_default();
    i64::from(tz.from_utc_datetime(&utc.naive_utc()).num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE
}

/// `day` as `YYYY-MM-DD`.
pub fn day_text(day: Day) -> String {
    i32::try_from(day)
        .ok()
        .and_then(|day| time::Date::from_julian_day(EPOCH.to_julian_day().checked_add(day)?).ok())
        .map(|d| d.to_string())
        .unwrap_or_default()
}

/// `YYYY-MM-DD` as a day number, if it is a real date.
pub fn parse_day(text: &str) -> Option<Day> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format).ok()?;
    Some(i64::from(date.to_julian_day() - EPOCH.to_julian_day()))
}

/// Parses an IANA time zone name.
pub fn parse_time_zone(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// Opens the analytics file for writing: WAL, migrated. `durable` keeps
/// `synchronous=FULL` (settings, webhook cursors); the worker's own connection uses
/// `NORMAL`, since whatever a power cut takes from it is folded again from the log.
pub(crate) fn open_writer(path: &Path, durable: bool) -> Result<Connection, ReadError> {
    let mut conn = schema::open_durable(path)?;
    if !durable {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    schema::migrate(&mut conn, ANALYTICS)?;
    Ok(conn)
}

/// Empties every derived table and the checkpoint (settings stay), in one transaction.
pub(crate) fn clear_derived(conn: &mut Connection) -> Result<(), ReadError> {
    let tx = conn.transaction()?;
    tx.execute_batch(
        "DELETE FROM stock; DELETE FROM products; DELETE FROM reservations; DELETE FROM poison_events;
         DELETE FROM an_daily; DELETE FROM an_alerts; DELETE FROM an_low_stock;",
    )?;
    tx.execute("DELETE FROM checkpoint WHERE name = ?1", [CHECKPOINT])?;
    tx.commit()?;
    Ok(())
}

/// The analytics checkpoint (0 before the first batch).
pub fn checkpoint(conn: &Connection) -> Result<u64, ReadError> {
    read_named_checkpoint(conn, CHECKPOINT)
}

/// The settings the fold and the reads depend on, as stored.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Store time zones (absent: UTC).
    pub time_zones: HashMap<StoreId, Tz>,
    /// Reorder points: `(product, None)` for every store, `(product, Some(store))` for one.
    pub reorder_points: HashMap<(ProductId, Option<StoreId>), i64>,
}

impl Settings {
    /// Reads every setting.
    pub fn load(conn: &Connection) -> Result<Self, ReadError> {
        let mut settings = Settings::default();
        let mut stmt = conn.prepare_cached("SELECT store_id, time_zone FROM store_settings")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let store = StoreId::from_bytes(row.get(0)?);
            let name: String = row.get(1)?;
            let tz = parse_time_zone(&name).ok_or_else(|| ReadError::Corrupt(format!("time zone {name:?}")))?;
            settings.time_zones.insert(store, tz);
        }
        let mut stmt = conn.prepare_cached("SELECT product_id, store_id, reorder_point FROM reorder_points")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let product = ProductId::from_bytes(row.get(0)?);
            let store: Vec<u8> = row.get(1)?;
            let store = <[u8; 16]>::try_from(store.as_slice()).ok().map(StoreId::from_bytes);
            settings.reorder_points.insert((product, store), row.get(2)?);
        }
        Ok(settings)
    }

    /// The store's time zone (UTC unless set).
    pub fn time_zone(&self, store: StoreId) -> Tz {
        self.time_zones.get(&store).copied().unwrap_or(Tz::UTC)
    }

    /// The reorder point in force for a stream: the store's own, else the product's.
    pub fn reorder_point(&self, product: ProductId, store: StoreId) -> Option<i64> {
        self.reorder_points
            .get(&(product, Some(store)))
            .or_else(|| self.reorder_points.get(&(product, None)))
            .copied()
    }
}

/// The analytics file: a durable connection for settings and webhook state (one writer at
/// a time behind a mutex) and read-only connections for queries.
pub struct AnalyticsDb {
    writes: Mutex<Connection>,
    reads: Arc<ReadPool>,
    settings_version: AtomicU64,
}

impl AnalyticsDb {
    /// Opens (creating and migrating) the file at `path`.
    pub fn open(path: &Path) -> Result<Arc<Self>, ReadError> {
        let conn = open_writer(path, true)?;
        Ok(Arc::new(Self {
            writes: Mutex::new(conn),
            reads: Arc::new(ReadPool::new(path.to_owned())),
            settings_version: AtomicU64::new(0),
        }))
    }

    /// Runs `read` on a read-only connection.
    pub async fn read<T, F>(&self, read: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ReadError> + Send + 'static,
    {
        self.reads.run(read).await
    }

    /// Runs `write` in one transaction on the durable connection.
    pub async fn write<T, F>(self: &Arc<Self>, write: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, ReadError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tx = conn.transaction()?;
            let value = write(&tx)?;
            tx.commit()?;
            Ok(value)
        })
        .await
        .map_err(|e| ReadError::Join(e.to_string()))?
    }
}

/// The catalog price of `product` as the analytics file holds it (0 when unknown).
pub(crate) fn price(conn: &Connection, product: ProductId) -> Result<i64, ReadError> {
    Ok(conn
        .prepare_cached("SELECT price_minor FROM products WHERE id = ?1")?
        .query_row(params![&product.as_bytes()[..]], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}
