//! The stock projection: owns the hub's read model, a second SQLite file
//! (`<data_dir>/read_model.sqlite`) that folds the event log into what queries need
//! (stock per product and store, the catalog, open reservations) and the checkpoint that
//! says how much of the log it reflects.
//!
//! Why a separate file: the read model is disposable. It is written with
//! `synchronous=NORMAL` (a power cut may lose its last transactions, never corrupt it,
//! and the projector simply re-reads them from the log), and it can be rebuilt from zero
//! at any time with [`rebuild`] without touching the authoritative log.
//!
//! The [`spawn`]ed projector follows the log through [`crate::store::EventFeed`] (ordered,
//! gap-free, history first) and writes every batch *and* the new checkpoint in one
//! transaction, so the read model is always exactly "the log up to the checkpoint". A
//! batch that fails for a storage reason is retried, the same batch, with exponential
//! backoff (capped at 5 s), and `/readyz` answers 503 while it does. A batch that fails
//! for any other reason (or panics) is applied again one event at a time: an event that
//! cannot be applied on its own is a *poison event*; it is recorded in `poison_events`
//! with the reason, counted (`shelfsync_hub_projection_poison_events_total`), logged as an
//! error, and skipped, so that one bad event can never stop the read side
//! ([`apply_skipping_poison`]). After each commit, and before the projected position moves,
//! the projector records in a shared [`TouchLog`] which read-model keys ([`ViewKey`]) the
//! batch changed: that is how the query cache ([`crate::query`]) learns what to
//! invalidate, without a race against reads that were in flight during the commit.
//!
//! Reads go through [`ReadModelQueries`] (implemented by [`ReadModel`] on a pool of
//! read-only connections). Every read answers its value together with the checkpoint
//! read in the same SQLite transaction ([`AtPosition`]), so a caller knows exactly which
//! log prefix the value reflects.

use crate::store::schema::{self, READ_MODEL};
use crate::store::{reader, EventStore, ReadPool, StoreError};
use futures_util::future::BoxFuture;
use indicatif::{ProgressBar, ProgressStyle};
use rusqlite::{params, Connection, OptionalExtension};
use shelfsync_common::inventory::{self, InventoryState, Reservation};
use shelfsync_common::product::Product;
use shelfsync_common::sync::{SnapshotReservation, SnapshotResponse};
use shelfsync_common::wire::{ProductStock, ProductView, StockLevel};
use shelfsync_common::{EventEnvelope, EventPayload, Origin, ProductId, ReservationId, StoreId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hash, RandomState};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::format_description::StaticFormatDescription;
use time::{OffsetDateTime, PrimitiveDateTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The checkpoint row of the stock projection.
pub const CHECKPOINT_NAME: &str = "stock";
/// Events per transaction when rebuilding from zero. Large pages matter: each page
/// loads and saves every stream it touches once (measured on 1M events over 2,000
/// streams: 5,000 per page ran at ~50k events/s, 50,000 per page at ~200k events/s).
const REBUILD_PAGE: usize = 50_000;
/// While catching up, the projector joins feed pages into one transaction up to this many
/// events, for the same reason.
const CATCH_UP_BATCH: usize = 20_000;
/// First retry delay after a failed batch.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest retry delay after a failed batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At most this many reservations are answered by one expiry scan (the next run takes
/// the rest).
const EXPIRY_SCAN_LIMIT: usize = 1_000;
/// Slots of the [`TouchLog`] (8 bytes each).
const TOUCH_SLOTS: usize = 16_384;
/// `expires_at` as stored: fixed-width UTC, so that text order is time order.
const TIME_FORMAT: StaticFormatDescription =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Why the projection could not start or a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// SQLite or a stored row.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file operation of a rebuild.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

impl From<rusqlite::Error> for ProjectionError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Store(error.into())
    }
}

/// A value read from the read model with the checkpoint it reflects (read in the same
/// transaction): the value includes every event up to `position` and none after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtPosition<T> {
    /// The value.
    pub value: T,
    /// The projection's checkpoint in the snapshot the value was read from.
    pub position: u64,
}

/// An open reservation as the read model holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenReservation {
    /// The hold.
    pub reservation_id: ReservationId,
    /// Product.
    pub product_id: ProductId,
    /// Store.
    pub store_id: StoreId,
    /// Units held.
    pub quantity: u32,
    /// When it lapses.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Who recorded it (the side that must expire it).
    pub origin: Origin,
}

/// A key of the read model's views: what a query reads, and what a committed batch
/// touches. The query cache is keyed by it too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ViewKey {
    /// Stock of a product at one store.
    Stock(ProductId, StoreId),
    /// Stock of a product at every store.
    ProductStock(ProductId),
    /// A product by id.
    Product(ProductId),
    /// A product by SKU (including "no product has this SKU").
    Sku(String),
}

/// Which position last changed each [`ViewKey`], shared by the projector (which records
/// after each commit, before publishing the new projected position) and the query cache
/// (which treats an entry read at position `p` as invalid once its key was touched after
/// `p`). Keys are hashed onto a fixed array of slots holding the highest touching
/// position: memory stays bounded and nothing needs pruning; two keys sharing a slot only
/// cost an extra cache miss, never a stale answer.
pub struct TouchLog {
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
}

impl Default for TouchLog {
    fn default() -> Self {
        Self::new()
    }
}

impl TouchLog {
    /// An empty log.
    pub fn new() -> Self {
        Self {
            slots: (0..TOUCH_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }

    fn slot(&self, key: &ViewKey) -> &AtomicU64 {
        let index = self.hasher.hash_one(key) as usize % self.slots.len();
        &self.slots[index]
    }

    /// Records that the batch ending at `position` changed `key`.
    pub fn record(&self, key: &ViewKey, position: u64) {
        self.slot(key).fetch_max(position, Ordering::AcqRel);
    }

    /// The highest position known to have changed `key` (or a key sharing its slot).
    pub fn last_touch(&self, key: &ViewKey) -> u64 {
        self.slot(key).load(Ordering::Acquire)
    }

    /// Whether a value of `key` read at `position` is still current.
    pub fn is_current(&self, key: &ViewKey, position: u64) -> bool {
        self.last_touch(key) <= position
    }
}

/// The read model's queries, as the query service and the jobs use them. Behind a trait
/// so that tests can inject a failing or slow implementation.
pub trait ReadModelQueries: Send + Sync {
    /// Stock of a product at a store (`None`: no stream yet).
    fn stock_level(
        &self,
        product: ProductId,
        store: StoreId,
    ) -> BoxFuture<'_, Result<AtPosition<Option<StockLevel>>, StoreError>>;

    /// Stock of a product at every store that has a stream for it, with totals.
    fn product_stock(&self, product: ProductId) -> BoxFuture<'_, Result<AtPosition<ProductStock>, StoreError>>;

    /// A product by id.
    fn product(&self, id: ProductId) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, StoreError>>;

    /// A product by SKU.
    fn product_by_sku(&self, sku: String) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, StoreError>>;

    /// Every open reservation of a store, by product then id (for store snapshots).
    fn open_reservations(&self, store: StoreId) -> BoxFuture<'_, Result<AtPosition<Vec<OpenReservation>>, StoreError>>;

    /// Open reservations recorded by `origin` that expire at or before `now`, soonest
    /// first, at most 1,000 per call.
    fn expired_reservations(
        &self,
        origin: Origin,
        now: OffsetDateTime,
    ) -> BoxFuture<'_, Result<Vec<ReservationId>, StoreError>>;

    /// The projection's checkpoint.
    fn checkpoint(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// The read model on a pool of read-only connections.
pub struct ReadModel {
    reads: Arc<ReadPool>,
}

impl ReadModel {
    /// Reads the read model at `path` (which the projector or a rebuild created).
    pub fn new(path: &Path) -> Self {
        Self {
            reads: Arc::new(ReadPool::new(path.to_owned())),
        }
    }

    /// Events the projection skipped: how many, and the latest `limit` of them.
    pub async fn poison_events(&self, limit: usize) -> Result<(u64, Vec<PoisonEvent>), StoreError> {
        self.reads.run(move |conn| read_poison_events(conn, limit)).await
    }

    fn snapshot<T, F>(&self, read: F) -> BoxFuture<'_, Result<AtPosition<T>, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Box::pin(self.reads.run(move |conn| snapshot(conn, read)))
    }

    /// A store's stock rows, open reservations and the catalog, all as of one checkpoint
    /// (one read transaction): the starting point of a new agent.
    pub async fn store_snapshot(&self, store: StoreId) -> Result<SnapshotResponse, StoreError> {
        let at = self
            .snapshot(move |conn| {
                Ok((
                    read_store_stock(conn, store)?,
                    read_open_reservations(conn, store)?,
                    read_catalog(conn)?,
                ))
            })
            .await?;
        let (stock, reservations, catalog) = at.value;
        Ok(SnapshotResponse {
            store_id: store,
            position: at.position,
            stock,
            reservations: reservations
                .into_iter()
                .map(|r| SnapshotReservation {
                    reservation_id: r.reservation_id,
                    product_id: r.product_id,
                    quantity: r.quantity,
                    expires_at: r.expires_at,
                    origin: r.origin,
                })
                .collect(),
            catalog,
        })
    }
}

impl ReadModelQueries for ReadModel {
    fn stock_level(
        &self,
        product: ProductId,
        store: StoreId,
    ) -> BoxFuture<'_, Result<AtPosition<Option<StockLevel>>, StoreError>> {
        self.snapshot(move |conn| read_stock_level(conn, product, store))
    }

    fn product_stock(&self, product: ProductId) -> BoxFuture<'_, Result<AtPosition<ProductStock>, StoreError>> {
        self.snapshot(move |conn| read_product_stock(conn, product))
    }

    fn product(&self, id: ProductId) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, StoreError>> {
        self.snapshot(move |conn| read_product(conn, "id = ?1", id.as_bytes()))
    }

    fn product_by_sku(&self, sku: String) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, StoreError>> {
        self.snapshot(move |conn| read_product(conn, "sku = ?1", &sku))
    }

    fn open_reservations(&self, store: StoreId) -> BoxFuture<'_, Result<AtPosition<Vec<OpenReservation>>, StoreError>> {
        self.snapshot(move |conn| read_open_reservations(conn, store))
    }

    fn expired_reservations(
        &self,
        origin: Origin,
        now: OffsetDateTime,
    ) -> BoxFuture<'_, Result<Vec<ReservationId>, StoreError>> {
        Box::pin(
            self.reads
                .run(move |conn| read_expired_reservations(conn, origin, now, EXPIRY_SCAN_LIMIT)),
        )
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.reads.run(read_checkpoint))
    }
}

/// The running projector.
pub struct ProjectionHandle {
    read_model: Arc<ReadModel>,
    projected: watch::Receiver<u64>,
    stall: watch::Receiver<Option<String>>,
    touches: Arc<TouchLog>,
    task: JoinHandle<()>,
    lag_task: JoinHandle<()>,
}

impl ProjectionHandle {
    /// The read model's queries (read-only connections).
    pub fn queries(&self) -> Arc<ReadModel> {
        self.read_model.clone()
    }

    /// The position the read model has reached (moves after each commit).
    pub fn projected(&self) -> watch::Receiver<u64> {
        self.projected.clone()
    }

    /// Why the projector is stuck retrying a batch right now (`None` while it keeps up).
    pub fn stall(&self) -> watch::Receiver<Option<String>> {
        self.stall.clone()
    }

    /// What each committed batch touched (for the query cache).
    pub fn touched(&self) -> Arc<TouchLog> {
        self.touches.clone()
    }

    /// Waits for the projector to stop (after the shutdown signal it was spawned with).
    pub async fn join(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the projection task failed");
        }
        self.lag_task.abort();
    }
}

/// Opens (creating and migrating if needed) the read model at `path` and starts the
/// projector from its checkpoint. It runs until `shutdown` turns true (or its sender is
/// dropped), finishing the batch it is writing. Must be called inside a tokio runtime.
///
/// A read model whose checkpoint is ahead of the log's head belongs to another log (the
/// event file was replaced): it is emptied and projected again from zero.
pub fn spawn(
    store: EventStore,
    path: &Path,
    shutdown: watch::Receiver<bool>,
) -> Result<ProjectionHandle, ProjectionError> {
    let mut conn = open_writer(path)?;
    let mut checkpoint = read_checkpoint(&conn)?;
    let head = store.bus().head();
    if checkpoint > head {
        tracing::warn!(
            checkpoint,
            head,
            path = %path.display(),
            "the read model is ahead of the event log (it was built from another log); projecting again from zero"
        );
        clear(&mut conn)?;
        checkpoint = 0;
    }
    metrics::gauge!("shelfsync_hub_projection_position").set(checkpoint as f64);
    let (projected_tx, projected) = watch::channel(checkpoint);
    let (stall_tx, stall) = watch::channel(None);
    let touches = Arc::new(TouchLog::new());
    let lag_task = tokio::spawn(report_lag(store.bus().watch_head(), projected.clone()));
    let projector = Projector {
        store,
        conn: Arc::new(Mutex::new(conn)),
        projected: projected_tx,
        stall: stall_tx,
        touches: touches.clone(),
        shutdown,
        position: checkpoint,
    };
    let task = tokio::spawn(projector.run());
    Ok(ProjectionHandle {
        read_model: Arc::new(ReadModel::new(path)),
        projected,
        stall,
        touches,
        task,
        lag_task,
    })
}

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
    let log = schema::open_read_only(store_path)?;
    let head = reader::head(&log)?;
    let temp = sibling(read_model_path, ".rebuild");
    remove_database_files(&temp)?;
    let started = Instant::now();
    let bar = if show_progress {
        let bar = ProgressBar::new(head);
        if let Ok(style) = ProgressStyle::with_template(
            "rebuilding read model [{bar:40}] {pos}/{len} events, {per_sec}, {elapsed} elapsed, eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut applied = 0u64;
    let mut position = 0;
    {
        let mut conn = open_writer(&temp)?;
        // The file is not live until the rename below: no need to sync each page.
        conn.pragma_update(None, "synchronous", "OFF")?;
        loop {
            let page = reader::events_after(&log, position, REBUILD_PAGE)?;
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

/// The projector task's state.
struct Projector {
    store: EventStore,
    conn: Arc<Mutex<Connection>>,
    projected: watch::Sender<u64>,
    stall: watch::Sender<Option<String>>,
    touches: Arc<TouchLog>,
    shutdown: watch::Receiver<bool>,
    position: u64,
}

impl Projector {
    async fn run(mut self) {
        tracing::info!(from = self.position, "projection started");
        let mut feed = self.store.feed(self.position);
        let mut read_failures = backoff();
        loop {
            let next = tokio::select! {
                biased;
                () = stopped(&mut self.shutdown) => break,
                next = feed.next() => next,
            };
            match next {
                None => {
                    tracing::info!("the event bus closed");
                    break;
                }
                Some(Err(error)) => {
                    // The feed has not moved: the next call re-reads the same events.
                    let delay = read_failures.next().unwrap_or(MAX_BACKOFF);
                    metrics::counter!("shelfsync_hub_projection_retries_total").increment(1);
                    tracing::warn!(%error, position = self.position, retry_in_ms = delay.as_millis() as u64,
                        "reading the event log for the projection failed; retrying");
                    self.stall
                        .send_replace(Some(format!("the event log cannot be read: {error}")));
                    if !self.pause(delay).await {
                        break;
                    }
                }
                Some(Ok(mut events)) => {
                    read_failures = backoff();
                    // Behind the head: take more history into the same transaction. A
                    // failed read here is simply retried by the next turn of the loop.
                    while !feed.caught_up() && events.len() < CATCH_UP_BATCH {
                        match feed.next().await {
                            Some(Ok(more)) => events.extend(more),
                            _ => break,
                        }
                    }
                    if !self.project(events).await {
                        break;
                    }
                }
            }
        }
        // A clean stop leaves an empty WAL (query connections may still be open, so
        // SQLite cannot remove the file itself).
        let conn = self.conn.clone();
        let checkpoint = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        })
        .await;
        if !matches!(checkpoint, Ok(Ok(()))) {
            tracing::warn!(?checkpoint, "final read-model WAL checkpoint failed");
        }
        tracing::info!(position = self.position, "projection stopped");
    }

    /// Applies one batch, retrying it until it commits. False when shut down meanwhile.
    async fn project(&mut self, events: Vec<EventEnvelope>) -> bool {
        let events = Arc::new(events);
        let first = events.first().map_or(0, |e| e.position);
        let last = events.last().map_or(0, |e| e.position);
        let mut delays = backoff();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let started = Instant::now();
            let conn = self.conn.clone();
            let batch = events.clone();
            let (applied, outcome) = tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                apply_skipping_poison(&mut conn, &batch)
            })
            .await
            .unwrap_or_else(|e| (Applied::nothing(self.position), Err(StoreError::Join(e.to_string()))));
            if applied.position > self.position {
                metrics::histogram!("shelfsync_hub_projection_batch_seconds").record(started.elapsed().as_secs_f64());
                metrics::counter!("shelfsync_hub_projection_events_total").increment(applied.events as u64);
                // Touches first, then the position: whoever sees the new position also
                // sees what it invalidated.
                for key in &applied.touched {
                    self.touches.record(key, applied.position);
                }
                self.position = applied.position;
                metrics::gauge!("shelfsync_hub_projection_position").set(applied.position as f64);
                self.projected.send_replace(applied.position);
            }
            match outcome {
                Ok(()) => {
                    if attempt > 1 {
                        tracing::info!(first, last, attempt, "projection batch applied after retries");
                    }
                    self.stall.send_replace(None);
                    return true;
                }
                Err(error) => {
                    let delay = delays.next().unwrap_or(MAX_BACKOFF);
                    metrics::counter!("shelfsync_hub_projection_retries_total").increment(1);
                    tracing::warn!(%error, first, last, attempt, retry_in_ms = delay.as_millis() as u64,
                        "applying events to the read model failed; retrying the rest of the batch");
                    self.stall
                        .send_replace(Some(format!("the read model cannot be written: {error}")));
                    if !self.pause(delay).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Sleeps `delay` unless shut down first (then false).
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            biased;
            () = stopped(&mut self.shutdown) => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// The retry delays of a failed batch: 50 ms doubling to 5 s, with jitter, forever.
fn backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(MIN_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Keeps the lag gauge (head - projected) current until the projector stops.
async fn report_lag(mut head: watch::Receiver<u64>, mut projected: watch::Receiver<u64>) {
    loop {
        let lag = head.borrow_and_update().saturating_sub(*projected.borrow_and_update());
        metrics::gauge!("shelfsync_hub_projection_lag_events").set(lag as f64);
        tokio::select! {
            changed = head.changed() => if changed.is_err() { break },
            changed = projected.changed() => if changed.is_err() { break },
        }
    }
}

/// What one committed batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The checkpoint after the batch.
    pub position: u64,
    /// Events applied (events at or before the old checkpoint are skipped).
    pub events: usize,
    /// Every view key the batch changed.
    pub touched: Vec<ViewKey>,
}

impl Applied {
    /// A batch that changed nothing: the checkpoint stays at `position`.
    fn nothing(position: u64) -> Self {
        Self {
            position,
            events: 0,
            touched: Vec::new(),
        }
    }

    fn absorb(&mut self, later: Applied) {
        self.position = self.position.max(later.position);
        self.events += later.events;
        self.touched.extend(later.touched);
    }
}

/// Applies `events` like [`apply_batch`], but never lets one event stop the read side.
///
/// When the batch fails for a reason other than storage (a row it cannot write, a
/// conversion, a panic), the events are applied again one at a time, each in its own
/// transaction; one that fails alone is a poison event: it is recorded in
/// `poison_events` together with the checkpoint moving past it, counted, logged, and
/// skipped. A storage failure (busy, I/O, full disk) stops the pass: it is returned with
/// what was committed before it, and the caller retries the rest (events at or before the
/// checkpoint are skipped, so passing the same batch again is safe).
pub fn apply_skipping_poison(conn: &mut Connection, events: &[EventEnvelope]) -> (Applied, Result<(), StoreError>) {
    let before = match read_checkpoint(conn) {
        Ok(position) => position,
        Err(error) => return (Applied::nothing(0), Err(error)),
    };
    let error = match applied_or_caught(conn, events) {
        Ok(applied) => return (applied, Ok(())),
        Err(error) if is_storage_failure(&error) => return (Applied::nothing(before), Err(error)),
        Err(error) => error,
    };
    tracing::warn!(%error, events = events.len(), "a projection batch failed; applying its events one at a time");
    let mut applied = Applied::nothing(before);
    for event in events.iter().filter(|e| e.position > before) {
        let outcome = match applied_or_caught(conn, std::slice::from_ref(event)) {
            Ok(one) => Ok(one),
            Err(error) if is_storage_failure(&error) => Err(error),
            Err(reason) => skip_poison(conn, event, &reason.to_string()).map(|()| Applied::nothing(event.position)),
        };
        match outcome {
            Ok(one) => applied.absorb(one),
            Err(error) => return (applied, Err(error)),
        }
    }
    (applied, Ok(()))
}

/// [`apply_batch`], with a panic turned into an error (its transaction rolls back as it
/// unwinds).
fn applied_or_caught(conn: &mut Connection, events: &[EventEnvelope]) -> Result<Applied, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply_batch(conn, events))).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(StoreError::Corrupt(format!("applying the event panicked: {message}")))
    })
}

/// Whether `error` came from the database itself (busy, I/O, a full disk, a constraint
/// the read model's own rows break): retried as is, with `/readyz` failing meanwhile,
/// because the event may well apply once the database recovers (or an operator rebuilds
/// the read model). Everything else (a value that cannot be converted or stored, a panic)
/// is about the event, and would fail the same way for ever.
fn is_storage_failure(error: &StoreError) -> bool {
    match error {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(..)) | StoreError::Join(_) | StoreError::Migration(_) => true,
        StoreError::Sqlite(_) | StoreError::Corrupt(_) => false,
    }
}

/// Records `event` as poison and moves the checkpoint past it, in one transaction.
fn skip_poison(conn: &mut Connection, event: &EventEnvelope, reason: &str) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO poison_events (position, event_id, reason, skipped_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (position) DO NOTHING",
        params![
            event.position as i64,
            &event.event_id.as_bytes()[..],
            reason,
            format_time(OffsetDateTime::now_utc())?,
        ],
    )?;
    tx.execute(
        "INSERT INTO checkpoint (name, position) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        params![CHECKPOINT_NAME, event.position as i64],
    )?;
    tx.commit()?;
    metrics::counter!("shelfsync_hub_projection_poison_events_total").increment(1);
    tracing::error!(
        position = event.position,
        event_id = %event.event_id,
        event_type = event.payload.event_type(),
        %reason,
        "poison event: the read model cannot apply it; skipped and recorded in poison_events"
    );
    Ok(())
}

/// An event the projection skipped because it could not apply it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PoisonEvent {
    /// Its position in the log.
    pub position: u64,
    /// Its id.
    pub event_id: uuid::Uuid,
    /// Why it could not be applied.
    pub reason: String,
}

/// The most recent poison events (at most `limit`, newest first) and how many there are.
pub fn read_poison_events(conn: &Connection, limit: usize) -> Result<(u64, Vec<PoisonEvent>), StoreError> {
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM poison_events", [], |row| row.get(0))?;
    let mut stmt =
        conn.prepare_cached("SELECT position, event_id, reason FROM poison_events ORDER BY position DESC LIMIT ?1")?;
    let rows = stmt.query_map([limit as i64], |row| {
        Ok(PoisonEvent {
            position: row.get::<_, i64>(0)? as u64,
            event_id: uuid::Uuid::from_bytes(row.get(1)?),
            reason: row.get(2)?,
        })
    })?;
    Ok((count as u64, rows.collect::<rusqlite::Result<Vec<_>>>()?))
}

/// Applies `events` (in position order) and moves the checkpoint, in one transaction.
/// Events at or before the checkpoint were applied before and are skipped, so applying
/// a batch twice is harmless.
pub fn apply_batch(conn: &mut Connection, events: &[EventEnvelope]) -> Result<Applied, StoreError> {
    let tx = conn.transaction()?;
    let checkpoint = read_checkpoint(&tx)?;
    let mut position = checkpoint;
    let mut streams: HashMap<(ProductId, StoreId), StreamWork> = HashMap::new();
    let mut touched = HashSet::new();
    let mut applied = 0;
    for event in events {
        if event.position <= position {
            continue;
        }
        if event.position != position + 1 {
            // The log promises gap-free positions, and nothing after the gap will fill it.
            metrics::counter!("shelfsync_hub_projection_gaps_total").increment(1);
            tracing::error!(
                after = position,
                next = event.position,
                "gap in the event log's positions"
            );
        }
        position = event.position;
        applied += 1;
        let product_id = event.stream.product_id;
        match event.stream.store_id {
            None => project_catalog(&tx, event, &mut touched)?,
            Some(store_id) => {
                let work = match streams.entry((product_id, store_id)) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        entry.insert(StreamWork::load(&tx, product_id, store_id)?)
                    }
                };
                work.apply(event);
                touched.insert(ViewKey::Stock(product_id, store_id));
                touched.insert(ViewKey::ProductStock(product_id));
            }
        }
    }
    for ((product_id, store_id), work) in streams {
        work.save(&tx, product_id, store_id)?;
    }
    if position != checkpoint {
        tx.execute(
            "INSERT INTO checkpoint (name, position) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            params![CHECKPOINT_NAME, position as i64],
        )?;
    }
    tx.commit()?;
    Ok(Applied {
        position,
        events: applied,
        touched: touched.into_iter().collect(),
    })
}

fn project_catalog(conn: &Connection, event: &EventEnvelope, touched: &mut HashSet<ViewKey>) -> Result<(), StoreError> {
    let product = match &event.payload {
        EventPayload::ProductRegistered(product) | EventPayload::ProductUpdated(product) => product,
        other => {
            tracing::warn!(
                position = event.position,
                event_type = other.event_type(),
                "non-catalog event on a catalog stream; ignored"
            );
            return Ok(());
        }
    };
    let id = event.stream.product_id;
    let old_sku: Option<String> = conn
        .prepare_cached("SELECT sku FROM products WHERE id = ?1")?
        .query_row([&id.as_bytes()[..]], |row| row.get(0))
        .optional()?;
    conn.prepare_cached(
        "INSERT INTO products (id, sku, name, price_minor, version, position) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET sku = excluded.sku, name = excluded.name,
             price_minor = excluded.price_minor, version = excluded.version, position = excluded.position",
    )?
    .execute(params![
        &id.as_bytes()[..],
        product.sku,
        product.name,
        product.price_minor as i64,
        event.stream_version as i64,
        event.position as i64,
    ])?;
    touched.insert(ViewKey::Product(id));
    touched.insert(ViewKey::Sku(product.sku.clone()));
    if let Some(old) = old_sku {
        touched.insert(ViewKey::Sku(old));
    }
    Ok(())
}

/// One inventory stream while a batch is applied: its state as loaded, folded with
/// [`inventory::apply`], then written back as the difference.
struct StreamWork {
    state: InventoryState,
    loaded: BTreeMap<ReservationId, Reservation>,
    origins: HashMap<ReservationId, Option<StoreId>>,
    position: u64,
}

impl StreamWork {
    fn load(conn: &Connection, product: ProductId, store: StoreId) -> Result<Self, StoreError> {
        let keys = params![&product.as_bytes()[..], &store.as_bytes()[..]];
        let row: Option<(i64, i64, i64)> = conn
            .prepare_cached("SELECT on_hand, version, position FROM stock WHERE product_id = ?1 AND store_id = ?2")?
            .query_row(keys, |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .optional()?;
        let (on_hand, version, position) = row.unwrap_or((0, 0, 0));
        let mut stmt = conn.prepare_cached(
            "SELECT reservation_id, quantity, expires_at FROM reservations WHERE product_id = ?1 AND store_id = ?2",
        )?;
        let mut rows = stmt.query(keys)?;
        let mut reservations = BTreeMap::new();
        while let Some(row) = rows.next()? {
            let id: [u8; 16] = row.get(0)?;
            let quantity: i64 = row.get(1)?;
            let expires_at: String = row.get(2)?;
            reservations.insert(
                ReservationId::from_bytes(id),
                Reservation {
                    quantity: u32::try_from(quantity).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    expires_at: parse_time(&expires_at)?,
                },
            );
        }
        Ok(Self {
            state: InventoryState {
                on_hand,
                reservations: reservations.clone(),
                version: version as u64,
            },
            loaded: reservations,
            origins: HashMap::new(),
            position: position as u64,
        })
    }

    fn apply(&mut self, event: &EventEnvelope) {
        if let EventPayload::StockReserved { reservation_id, .. } = &event.payload {
            let origin = match event.metadata.origin {
                Origin::Hub => None,
                Origin::Store(store) => Some(store),
            };
            self.origins.insert(*reservation_id, origin);
        }
        inventory::apply(&mut self.state, &event.payload);
        // The log's version is authoritative (it also counts events `apply` ignores).
        self.state.version = event.stream_version;
        self.position = event.position;
    }

    fn save(self, conn: &Connection, product: ProductId, store: StoreId) -> Result<(), StoreError> {
        let (p, s) = (&product.as_bytes()[..], &store.as_bytes()[..]);
        let reserved = self.state.reserved();
        conn.prepare_cached(
            "INSERT INTO stock (product_id, store_id, on_hand, reserved, available, version, position)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (product_id, store_id) DO UPDATE SET on_hand = excluded.on_hand,
                 reserved = excluded.reserved, available = excluded.available,
                 version = excluded.version, position = excluded.position",
        )?
        .execute(params![
            p,
            s,
            self.state.on_hand,
            reserved,
            self.state.available(),
            self.state.version as i64,
            self.position as i64,
        ])?;
        let mut delete = conn.prepare_cached(
            "DELETE FROM reservations WHERE product_id = ?1 AND store_id = ?2 AND reservation_id = ?3",
        )?;
        for id in self
            .loaded
            .keys()
            .filter(|id| !self.state.reservations.contains_key(id))
        {
            delete.execute(params![p, s, &id.as_bytes()[..]])?;
        }
        let mut upsert = conn.prepare_cached(
            "INSERT INTO reservations (product_id, store_id, reservation_id, quantity, expires_at, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (product_id, store_id, reservation_id) DO UPDATE SET quantity = excluded.quantity,
                 expires_at = excluded.expires_at, origin = excluded.origin",
        )?;
        for (id, reservation) in &self.state.reservations {
            let changed = self.loaded.get(id) != Some(reservation) || self.origins.contains_key(id);
            if !changed {
                continue;
            }
            let origin = self.origins.get(id).copied().flatten();
            upsert.execute(params![
                p,
                s,
                &id.as_bytes()[..],
                i64::from(reservation.quantity),
                format_time(reservation.expires_at)?,
                origin.as_ref().map(|o| &o.as_bytes()[..]),
            ])?;
        }
        Ok(())
    }
}

/// Opens the read model for writing: WAL, `synchronous=NORMAL` (it is rebuildable),
/// migrated.
fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = schema::open_durable(path)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    schema::migrate(&mut conn, READ_MODEL)?;
    Ok(conn)
}

fn clear(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute_batch("DELETE FROM stock; DELETE FROM products; DELETE FROM reservations; DELETE FROM checkpoint;")?;
    tx.commit()?;
    Ok(())
}

/// Runs `read` and reads the checkpoint in one read transaction.
fn snapshot<T>(
    conn: &Connection,
    read: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<AtPosition<T>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let position = read_checkpoint(&tx)?;
    let value = read(&tx)?;
    tx.commit()?;
    Ok(AtPosition { value, position })
}

/// The stock projection's checkpoint (0 before the first batch).
pub fn read_checkpoint(conn: &Connection) -> Result<u64, StoreError> {
    let position: Option<i64> = conn
        .prepare_cached("SELECT position FROM checkpoint WHERE name = ?1")?
        .query_row([CHECKPOINT_NAME], |row| row.get(0))
        .optional()?;
    Ok(position.unwrap_or(0) as u64)
}

const STOCK_COLUMNS: &str = "product_id, store_id, on_hand, reserved, available, version, position";

fn stock_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StockLevel> {
    Ok(StockLevel {
        product_id: ProductId::from_bytes(row.get(0)?),
        store_id: StoreId::from_bytes(row.get(1)?),
        on_hand: row.get(2)?,
        reserved: row.get(3)?,
        available: row.get(4)?,
        version: row.get::<_, i64>(5)? as u64,
        position: row.get::<_, i64>(6)? as u64,
    })
}

/// Stock of a product at a store.
pub fn read_stock_level(
    conn: &Connection,
    product: ProductId,
    store: StoreId,
) -> Result<Option<StockLevel>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {STOCK_COLUMNS} FROM stock WHERE product_id = ?1 AND store_id = ?2"
        ))?
        .query_row(params![&product.as_bytes()[..], &store.as_bytes()[..]], stock_from_row)
        .optional()?)
}

/// Stock of a product at every store, by store id, with totals.
pub fn read_product_stock(conn: &Connection, product: ProductId) -> Result<ProductStock, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {STOCK_COLUMNS} FROM stock WHERE product_id = ?1 ORDER BY store_id"
    ))?;
    let stores = stmt
        .query_map([&product.as_bytes()[..]], stock_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ProductStock {
        product_id: product,
        total_on_hand: stores.iter().map(|s| s.on_hand).sum(),
        total_available: stores.iter().map(|s| s.available).sum(),
        stores,
    })
}

fn read_product(
    conn: &Connection,
    condition: &str,
    key: &dyn rusqlite::ToSql,
) -> Result<Option<ProductView>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT id, sku, name, price_minor, version FROM products WHERE {condition}"
        ))?
        .query_row([key], product_from_row)
        .optional()?)
}

/// Stock of every product at one store, by product id.
pub fn read_store_stock(conn: &Connection, store: StoreId) -> Result<Vec<StockLevel>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {STOCK_COLUMNS} FROM stock WHERE store_id = ?1 ORDER BY product_id"
    ))?;
    let rows = stmt
        .query_map([&store.as_bytes()[..]], stock_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The whole catalog, by product id.
pub fn read_catalog(conn: &Connection) -> Result<Vec<ProductView>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, sku, name, price_minor, version FROM products ORDER BY id")?;
    let rows = stmt
        .query_map([], product_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn product_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ProductView> {
    Ok(ProductView {
        product: Product {
            id: ProductId::from_bytes(row.get(0)?),
            sku: row.get(1)?,
            name: row.get(2)?,
            price_minor: row.get::<_, i64>(3)? as u64,
        },
        version: row.get::<_, i64>(4)? as u64,
    })
}

/// A product by id.
pub fn read_product_by_id(conn: &Connection, id: ProductId) -> Result<Option<ProductView>, StoreError> {
    read_product(conn, "id = ?1", id.as_bytes())
}

/// A product by SKU.
pub fn read_product_by_sku(conn: &Connection, sku: &str) -> Result<Option<ProductView>, StoreError> {
    read_product(conn, "sku = ?1", &sku)
}

/// Every open reservation of a store.
pub fn read_open_reservations(conn: &Connection, store: StoreId) -> Result<Vec<OpenReservation>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT reservation_id, product_id, quantity, expires_at, origin FROM reservations
         WHERE store_id = ?1 ORDER BY product_id, reservation_id",
    )?;
    let mut rows = stmt.query([&store.as_bytes()[..]])?;
    let mut open = Vec::new();
    while let Some(row) = rows.next()? {
        let quantity: i64 = row.get(2)?;
        let expires_at: String = row.get(3)?;
        let origin: Option<[u8; 16]> = row.get(4)?;
        open.push(OpenReservation {
            reservation_id: ReservationId::from_bytes(row.get(0)?),
            product_id: ProductId::from_bytes(row.get(1)?),
            store_id: store,
            quantity: u32::try_from(quantity).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            expires_at: parse_time(&expires_at)?,
            origin: origin.map_or(Origin::Hub, |id| Origin::Store(StoreId::from_bytes(id))),
        });
    }
    Ok(open)
}

/// Open reservations recorded by `origin` expiring at or before `now`, soonest first.
pub fn read_expired_reservations(
    conn: &Connection,
    origin: Origin,
    now: OffsetDateTime,
    limit: usize,
) -> Result<Vec<ReservationId>, StoreError> {
    let now = format_time(now)?;
    let (condition, store) = match origin {
        Origin::Hub => ("origin IS NULL", None),
        Origin::Store(store) => ("origin = ?3", Some(store)),
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT reservation_id FROM reservations WHERE expires_at <= ?1 AND {condition}
         ORDER BY expires_at LIMIT ?2"
    ))?;
    let limit = limit as i64;
    let id = |row: &rusqlite::Row<'_>| row.get::<_, [u8; 16]>(0).map(ReservationId::from_bytes);
    let ids = match store {
        None => stmt
            .query_map(params![now, limit], id)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        Some(store) => stmt
            .query_map(params![now, limit, &store.as_bytes()[..]], id)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(ids)
}

fn format_time(at: OffsetDateTime) -> Result<String, StoreError> {
    shelfsync_common::timestamp::to_utc("time", at)
        .ok()
        .and_then(|utc| utc.format(TIME_FORMAT).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("time {at} cannot be stored")))
}

fn parse_time(text: &str) -> Result<OffsetDateTime, StoreError> {
    PrimitiveDateTime::parse(text, TIME_FORMAT)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|e| StoreError::Corrupt(format!("stored time {text:?}: {e}")))
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// Removes a SQLite file and its WAL and shared-memory files, if they exist.
fn remove_database_files(path: &Path) -> Result<(), ProjectionError> {
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

/// Helpers shared by the projection and query tests: a real event store in a temporary
/// directory with one store and one product enrolled.
#[cfg(test)]
pub(crate) mod testing {
    use crate::bus::EventBus;
    use crate::store::{Command, CommandRequest, EventStore, InventoryTarget};
    use shelfsync_common::catalog::CatalogCommand;
    use shelfsync_common::product::Product;
    use shelfsync_common::wire::WriteResult;
    use shelfsync_common::{
        EventId, EventMetadata, ExpectedVersion, InventoryCommand, Origin, ProductId, ReservationId, StockQuantity,
        StoreId,
    };
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;
    use time::OffsetDateTime;
    use tokio::sync::watch;

    pub(crate) struct Fixture {
        pub dir: tempfile::TempDir,
        pub store: EventStore,
        pub shop: StoreId,
        pub product: ProductId,
        requests: AtomicU64,
    }

    impl Fixture {
        pub async fn new() -> Self {
            shelfsync_common::server::telemetry::init_test_logging();
            let dir = tempfile::tempdir().unwrap();
            let store = EventStore::open(&dir.path().join("events.sqlite"), EventBus::new()).unwrap();
            let fixture = Self {
                dir,
                store,
                shop: StoreId::new_v7(),
                product: ProductId::new_v7(),
                requests: AtomicU64::new(0),
            };
            fixture
                .store
                .add_store(fixture.shop, "Main street".into())
                .await
                .unwrap();
            fixture.register(fixture.product, "SKU-1", "Coffee").await;
            fixture
        }

        pub fn events_path(&self) -> PathBuf {
            self.dir.path().join("events.sqlite")
        }

        pub fn read_model_path(&self) -> PathBuf {
            self.dir.path().join("read_model.sqlite")
        }

        pub async fn run(&self, command: Command) -> WriteResult {
            let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
            let mut fingerprint = [0u8; 16];
            fingerprint[..8].copy_from_slice(&n.to_be_bytes());
            let request = CommandRequest {
                command,
                expected: ExpectedVersion::Any,
                event_id: EventId::new_v7(),
                fingerprint,
                metadata: EventMetadata {
                    origin: Origin::Hub,
                    actor: "test".into(),
                    correlation_id: uuid::Uuid::now_v7(),
                    causation_id: None,
                    occurred_at: OffsetDateTime::now_utc(),
                    recorded_at: None,
                },
            };
            self.store.execute(request).await.unwrap()
        }

        pub async fn register(&self, id: ProductId, sku: &str, name: &str) -> WriteResult {
            let product = Product {
                id,
                sku: sku.into(),
                name: name.into(),
                price_minor: 499,
            };
            self.run(Command::Catalog(CatalogCommand::RegisterProduct { product }))
                .await
        }

        pub async fn update(&self, id: ProductId, sku: &str, name: &str) -> WriteResult {
            let product = Product {
                id,
                sku: sku.into(),
                name: name.into(),
                price_minor: 599,
            };
            self.run(Command::Catalog(CatalogCommand::UpdateProduct { product }))
                .await
        }

        pub async fn inventory(&self, product: ProductId, store: StoreId, command: InventoryCommand) -> WriteResult {
            self.run(Command::Inventory {
                target: InventoryTarget::Stream(product, store),
                command,
            })
            .await
        }

        pub async fn add(&self, quantity: i64) -> WriteResult {
            self.inventory(
                self.product,
                self.shop,
                InventoryCommand::AddStock {
                    quantity: StockQuantity::new(quantity).unwrap(),
                },
            )
            .await
        }

        pub async fn reserve(
            &self,
            product: ProductId,
            store: StoreId,
            id: ReservationId,
            quantity: i64,
        ) -> WriteResult {
            self.inventory(
                product,
                store,
                InventoryCommand::ReserveStock {
                    reservation_id: id,
                    quantity: StockQuantity::new(quantity).unwrap(),
                    expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(15),
                },
            )
            .await
        }
    }

    /// Waits (at most 10 s) until the projection has reached `position`.
    pub async fn reach(projected: &mut watch::Receiver<u64>, position: u64) {
        tokio::time::timeout(Duration::from_secs(10), projected.wait_for(|p| *p >= position))
            .await
            .expect("the projection did not reach the position in time")
            .expect("the projector stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{reach, Fixture};
    use super::*;
    use shelfsync_common::event::ReleaseReason;
    use shelfsync_common::{InventoryCommand, StockQuantity};
    use time::macros::datetime;

    fn read_model_conn(path: &Path) -> Connection {
        schema::open_read_only(path).unwrap()
    }

    /// Every row of every table, in key order, as text.
    fn dump(path: &Path) -> Vec<String> {
        let conn = read_model_conn(path);
        let mut out = Vec::new();
        for (table, order) in [
            ("stock", "product_id, store_id"),
            ("products", "id"),
            ("reservations", "product_id, store_id, reservation_id"),
            ("checkpoint", "name"),
        ] {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
                .unwrap();
            let columns = stmt.column_count();
            let mut rows = stmt.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                let values: Vec<String> = (0..columns)
                    .map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect();
                out.push(format!("{table}: {}", values.join(", ")));
            }
        }
        out
    }

    fn start(fixture: &Fixture) -> (ProjectionHandle, watch::Sender<bool>) {
        let (stop, stopped) = watch::channel(false);
        let handle = spawn(fixture.store.clone(), &fixture.read_model_path(), stopped).unwrap();
        (handle, stop)
    }

    #[tokio::test]
    async fn projects_events_with_their_checkpoint_and_resumes_after_a_restart() {
        let fixture = Fixture::new().await;
        let rid = ReservationId::new_v7();
        fixture.add(5).await;
        let reserved = fixture.reserve(fixture.product, fixture.shop, rid, 2).await;

        let (handle, stop) = start(&fixture);
        let mut projected = handle.projected();
        reach(&mut projected, reserved.position).await;
        let model = handle.queries();
        let level = model.stock_level(fixture.product, fixture.shop).await.unwrap();
        assert_eq!(
            level.position, reserved.position,
            "value and checkpoint come from one snapshot"
        );
        let level = level.value.unwrap();
        assert_eq!(
            (level.on_hand, level.reserved, level.available, level.version),
            (5, 2, 3, 2)
        );
        assert_eq!(level.position, reserved.position);
        assert_eq!(model.checkpoint().await.unwrap(), reserved.position);
        let open = model.open_reservations(fixture.shop).await.unwrap().value;
        assert_eq!(open.len(), 1);
        assert_eq!(
            (open[0].reservation_id, open[0].quantity, open[0].origin),
            (rid, 2, Origin::Hub)
        );
        let product = model.product(fixture.product).await.unwrap().value.unwrap();
        assert_eq!((product.product.sku.as_str(), product.version), ("SKU-1", 1));
        assert_eq!(
            model
                .product_by_sku("SKU-1".into())
                .await
                .unwrap()
                .value
                .map(|p| p.product.id),
            Some(fixture.product)
        );

        stop.send(true).unwrap();
        handle.join().await;

        // Written while the projector is down.
        fixture.add(3).await;
        let sold = fixture
            .inventory(
                fixture.product,
                fixture.shop,
                InventoryCommand::CommitReservation { reservation_id: rid },
            )
            .await;
        let stale = ReadModel::new(&fixture.read_model_path());
        assert_eq!(stale.checkpoint().await.unwrap(), reserved.position);

        let (handle, _stop) = start(&fixture);
        let mut projected = handle.projected();
        assert_eq!(*projected.borrow(), reserved.position, "restarts from its checkpoint");
        reach(&mut projected, sold.position).await;
        let level = handle
            .queries()
            .stock_level(fixture.product, fixture.shop)
            .await
            .unwrap()
            .value
            .unwrap();
        assert_eq!(
            (level.on_hand, level.reserved, level.available, level.version),
            (6, 0, 6, 4)
        );
        assert!(handle
            .queries()
            .open_reservations(fixture.shop)
            .await
            .unwrap()
            .value
            .is_empty());
        let stock = handle.queries().product_stock(fixture.product).await.unwrap().value;
        assert_eq!(
            (stock.stores.len(), stock.total_on_hand, stock.total_available),
            (1, 6, 6)
        );
    }

    #[tokio::test]
    async fn a_backlog_of_several_feed_pages_is_caught_up_exactly() {
        let fixture = Fixture::new().await;
        let tea = ProductId::new_v7();
        fixture.register(tea, "TEA", "Tea").await;
        let adds = (0..2_500).map(|i| {
            let product = if i % 2 == 0 { fixture.product } else { tea };
            fixture.inventory(
                product,
                fixture.shop,
                InventoryCommand::AddStock {
                    quantity: StockQuantity::new(1 + i % 3).unwrap(),
                },
            )
        });
        futures_util::future::join_all(adds).await;
        let head = fixture.store.bus().head();
        let (handle, _stop) = start(&fixture);
        reach(&mut handle.projected(), head).await;
        let model = handle.queries();
        let coffee = model
            .stock_level(fixture.product, fixture.shop)
            .await
            .unwrap()
            .value
            .unwrap();
        let tea = model.stock_level(tea, fixture.shop).await.unwrap().value.unwrap();
        let expected = |parity: i64| {
            (0..2_500i64)
                .filter(|i| i % 2 == parity)
                .map(|i| 1 + i % 3)
                .sum::<i64>()
        };
        assert_eq!((coffee.on_hand, coffee.version), (expected(0), 1_250));
        assert_eq!((tea.on_hand, tea.version), (expected(1), 1_250));
        assert_eq!(model.checkpoint().await.unwrap(), head);
    }

    #[tokio::test]
    async fn a_failing_batch_changes_nothing_not_even_the_checkpoint() {
        let fixture = Fixture::new().await;
        fixture.add(5).await;
        let other = ProductId::new_v7();
        let last = fixture.register(other, "SKU-2", "Tea").await;
        let events = fixture.store.read_after(0, 100).await.unwrap();
        assert_eq!(events.last().unwrap().position, last.position);

        let mut conn = open_writer(&fixture.read_model_path()).unwrap();
        // A row that makes the last event's insert fail (SKU-2 is unique).
        conn.execute(
            "INSERT INTO products VALUES (?1, 'SKU-2', 'squatter', 1, 1, 0)",
            [&ProductId::new_v7().as_bytes()[..]],
        )
        .unwrap();
        let before = dump(&fixture.read_model_path());
        assert!(apply_batch(&mut conn, &events).is_err());
        assert_eq!(dump(&fixture.read_model_path()), before, "the whole batch rolled back");
        assert_eq!(read_checkpoint(&conn).unwrap(), 0);

        conn.execute("DELETE FROM products WHERE name = 'squatter'", [])
            .unwrap();
        let applied = apply_batch(&mut conn, &events).unwrap();
        assert_eq!((applied.position, applied.events), (last.position, events.len()));
        assert!(applied.touched.contains(&ViewKey::Stock(fixture.product, fixture.shop)));
        assert!(applied.touched.contains(&ViewKey::Sku("SKU-2".into())));
        assert_eq!(read_checkpoint(&conn).unwrap(), last.position);
        // Applying the same events again is a no-op.
        let again = apply_batch(&mut conn, &events).unwrap();
        assert_eq!((again.position, again.events), (last.position, 0));
        assert_eq!(
            read_stock_level(&conn, fixture.product, fixture.shop)
                .unwrap()
                .unwrap()
                .on_hand,
            5
        );
    }

    #[tokio::test]
    async fn the_projector_retries_a_failing_batch_until_it_commits_and_skips_nothing() {
        let fixture = Fixture::new().await;
        let tea = ProductId::new_v7();
        {
            let conn = open_writer(&fixture.read_model_path()).unwrap();
            conn.execute(
                "INSERT INTO products VALUES (?1, 'SKU-2', 'squatter', 1, 1, 0)",
                [&ProductId::new_v7().as_bytes()[..]],
            )
            .unwrap();
        }
        let registered = fixture.register(tea, "SKU-2", "Tea").await;
        let (handle, _stop) = start(&fixture);
        let mut projected = handle.projected();
        // Ahead of the failing event, the projector is stuck (retrying), not skipping.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(*projected.borrow() < registered.position);
        assert!(
            handle.stall().borrow().is_some(),
            "a stuck projector says so (/readyz fails)"
        );
        {
            let conn = open_writer(&fixture.read_model_path()).unwrap();
            conn.execute("DELETE FROM products WHERE name = 'squatter'", [])
                .unwrap();
        }
        reach(&mut projected, registered.position).await;
        let tea_view = handle.queries().product(tea).await.unwrap().value.unwrap();
        assert_eq!(tea_view.product.sku, "SKU-2");
        assert!(handle.queries().product(fixture.product).await.unwrap().value.is_some());
    }

    /// Writes, behind the writer's back, the event an earlier build let in: a hold whose
    /// expiry is valid RFC 3339 text but lies in the year 10000 in UTC. Returns its position.
    fn sneak_in_year_10000_hold(fixture: &Fixture, after: u64, stream_version: u64) -> u64 {
        let conn = schema::open_durable(&fixture.events_path()).unwrap();
        let position = after + 1;
        conn.execute(
            "INSERT INTO events (position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata, fingerprint)
             VALUES (?1, ?2, ?3, ?4, 'StockReserved', 1, ?5, ?6, ?7)",
            params![
                position as i64,
                &shelfsync_common::EventId::new_v7().as_bytes()[..],
                &shelfsync_common::StreamId::inventory(fixture.product, fixture.shop).key()[..],
                stream_version as i64,
                serde_json::json!({
                    "reservation_id": ReservationId::new_v7(),
                    "quantity": 1,
                    "expires_at": "9999-12-31T23:59:59-23:59",
                })
                .to_string(),
                serde_json::json!({
                    "origin": "hub", "actor": "earlier-build", "correlation_id": uuid::Uuid::now_v7(),
                    "occurred_at": "2026-01-01T00:00:00Z", "recorded_at": "2026-01-01T00:00:00Z",
                })
                .to_string(),
                &[0u8; 16][..],
            ],
        )
        .unwrap();
        position
    }

    #[tokio::test]
    async fn a_poison_event_is_skipped_recorded_and_the_projection_goes_on() {
        let mut fixture = Fixture::new().await;
        let added = fixture.add(5).await;
        fixture.store.close().await;
        let poison = sneak_in_year_10000_hold(&fixture, added.position, added.stream_version + 1);
        fixture.store = EventStore::open(&fixture.events_path(), crate::bus::EventBus::new()).unwrap();
        let after = fixture.add(2).await;
        assert!(after.position > poison);

        let (handle, _stop) = start(&fixture);
        let mut projected = handle.projected();
        reach(&mut projected, after.position).await;
        assert_eq!(*handle.stall().borrow(), None, "not stuck");
        let stock = handle
            .queries()
            .stock_level(fixture.product, fixture.shop)
            .await
            .unwrap();
        assert_eq!(stock.value.map(|s| (s.on_hand, s.reserved)), Some((7, 0)));
        let (count, skipped) = handle.queries().poison_events(10).await.unwrap();
        assert_eq!(count, 1);
        assert_eq!(skipped[0].position, poison);
        assert!(skipped[0].reason.contains("cannot be stored"), "{}", skipped[0].reason);
    }

    #[tokio::test]
    async fn a_rebuild_skips_a_poison_event_too() {
        let fixture = Fixture::new().await;
        let added = fixture.add(5).await;
        fixture.store.close().await;
        let poison = sneak_in_year_10000_hold(&fixture, added.position, added.stream_version + 1);
        let applied = rebuild(&fixture.events_path(), &fixture.read_model_path(), false).unwrap();
        assert_eq!(applied, added.position, "every event but the poison one");
        let conn = read_model_conn(&fixture.read_model_path());
        assert_eq!(read_checkpoint(&conn).unwrap(), poison);
        let (count, skipped) = read_poison_events(&conn, 10).unwrap();
        assert_eq!((count, skipped[0].position), (1, poison));
    }

    #[test]
    fn a_batch_around_a_poison_event_applies_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("rm.sqlite")).unwrap();
        let (product, shop) = (ProductId::new_v7(), StoreId::new_v7());
        let event = |position: u64, payload: EventPayload| EventEnvelope {
            event_id: shelfsync_common::EventId::new_v7(),
            stream: shelfsync_common::StreamId::inventory(product, shop),
            stream_version: position,
            position,
            schema_version: 1,
            payload,
            metadata: shelfsync_common::EventMetadata {
                origin: Origin::Hub,
                actor: "test".into(),
                correlation_id: uuid::Uuid::nil(),
                causation_id: None,
                occurred_at: OffsetDateTime::UNIX_EPOCH,
                recorded_at: None,
            },
        };
        let year_10000 = OffsetDateTime::parse(
            "9999-12-31T23:59:59-23:59",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let batch = [
            event(1, EventPayload::StockAdded { quantity: 4 }),
            event(
                2,
                EventPayload::StockReserved {
                    reservation_id: ReservationId::new_v7(),
                    quantity: 1,
                    expires_at: year_10000,
                },
            ),
            event(3, EventPayload::StockAdded { quantity: 1 }),
        ];
        let (applied, outcome) = apply_skipping_poison(&mut conn, &batch);
        outcome.unwrap();
        assert_eq!((applied.position, applied.events), (3, 2));
        assert!(applied.touched.contains(&ViewKey::Stock(product, shop)));
        let level = read_stock_level(&conn, product, shop).unwrap().unwrap();
        assert_eq!((level.on_hand, level.reserved), (5, 0));
        assert_eq!(read_poison_events(&conn, 10).unwrap().0, 1);
        // Applying the same batch again changes nothing (everything is at or before the checkpoint).
        let (again, outcome) = apply_skipping_poison(&mut conn, &batch);
        outcome.unwrap();
        assert_eq!((again.position, again.events), (3, 0));
    }

    #[tokio::test]
    async fn a_rebuild_from_zero_yields_the_same_rows_as_the_live_projection() {
        let fixture = Fixture::new().await;
        let (handle, stop) = start(&fixture);
        let second_shop = StoreId::new_v7();
        fixture.store.add_store(second_shop, "Station".into()).await.unwrap();
        let tea = ProductId::new_v7();
        fixture.register(tea, "TEA", "Tea").await;
        let mut last = 0;
        for round in 0..30u8 {
            for (product, shop) in [(fixture.product, fixture.shop), (tea, second_shop), (tea, fixture.shop)] {
                fixture
                    .inventory(
                        product,
                        shop,
                        InventoryCommand::AddStock {
                            quantity: StockQuantity::new(3).unwrap(),
                        },
                    )
                    .await;
                let rid = ReservationId::new_v7();
                fixture.reserve(product, shop, rid, 1).await;
                let command = match round % 3 {
                    0 => InventoryCommand::CommitReservation { reservation_id: rid },
                    1 => InventoryCommand::ReleaseStock {
                        reservation_id: rid,
                        reason: ReleaseReason::Cancelled,
                    },
                    _ => InventoryCommand::AdjustStock {
                        delta: -1,
                        reason: "breakage".into(),
                    },
                };
                last = fixture.inventory(product, shop, command).await.position;
            }
            if round % 10 == 0 {
                last = fixture.update(tea, &format!("TEA-{round}"), "Green tea").await.position;
            }
        }
        let mut projected = handle.projected();
        reach(&mut projected, last).await;
        stop.send(true).unwrap();
        handle.join().await;
        fixture.store.close().await;
        let live = dump(&fixture.read_model_path());
        assert!(
            live.iter().any(|row| row.starts_with("reservations:")),
            "some holds stay open"
        );

        let rebuilt_path = fixture.dir.path().join("rebuilt.sqlite");
        let applied = rebuild(&fixture.events_path(), &rebuilt_path, false).unwrap();
        assert_eq!(applied, last);
        assert_eq!(dump(&rebuilt_path), live);

        // Over the live file, too (its WAL must not survive the swap).
        let applied = rebuild(&fixture.events_path(), &fixture.read_model_path(), false).unwrap();
        assert_eq!(applied, last);
        assert_eq!(dump(&fixture.read_model_path()), live);
        assert!(!sibling(&fixture.read_model_path(), ".rebuild").exists());
    }

    #[tokio::test]
    async fn a_read_model_ahead_of_the_log_is_projected_again_from_zero() {
        let fixture = Fixture::new().await;
        {
            let mut conn = open_writer(&fixture.read_model_path()).unwrap();
            clear(&mut conn).unwrap();
            conn.execute("INSERT INTO checkpoint VALUES ('stock', 999)", [])
                .unwrap();
        }
        let head = fixture.store.bus().head();
        let (handle, _stop) = start(&fixture);
        let mut projected = handle.projected();
        reach(&mut projected, head).await;
        assert_eq!(handle.queries().checkpoint().await.unwrap(), head);
    }

    #[tokio::test]
    async fn expired_reservations_are_found_by_origin_and_time() {
        let fixture = Fixture::new().await;
        let conn = open_writer(&fixture.read_model_path()).unwrap();
        let hub_hold = ReservationId::new_v7();
        let store_hold = ReservationId::new_v7();
        let insert = |id: ReservationId, at: OffsetDateTime, origin: Option<StoreId>| {
            conn.execute(
                "INSERT INTO reservations VALUES (?1, ?2, ?3, 1, ?4, ?5)",
                params![
                    &fixture.product.as_bytes()[..],
                    &fixture.shop.as_bytes()[..],
                    &id.as_bytes()[..],
                    format_time(at).unwrap(),
                    origin.as_ref().map(|o| &o.as_bytes()[..])
                ],
            )
            .unwrap();
        };
        insert(hub_hold, datetime!(2026-01-01 10:00:00.5 UTC), None);
        insert(store_hold, datetime!(2026-01-01 09:00 UTC), Some(fixture.shop));
        insert(ReservationId::new_v7(), datetime!(2026-01-02 00:00 UTC), None);
        let at = datetime!(2026-01-01 11:00 +01:00); // 10:00 UTC: the hub hold is not due yet
        assert!(read_expired_reservations(&conn, Origin::Hub, at, 10)
            .unwrap()
            .is_empty());
        let later = datetime!(2026-01-01 10:00:01 UTC);
        assert_eq!(
            read_expired_reservations(&conn, Origin::Hub, later, 10).unwrap(),
            vec![hub_hold]
        );
        assert_eq!(
            read_expired_reservations(&conn, Origin::Store(fixture.shop), later, 10).unwrap(),
            vec![store_hold]
        );
        let open = read_open_reservations(&conn, fixture.shop).unwrap();
        assert_eq!(open.len(), 3);
        assert!(open
            .iter()
            .any(|r| r.expires_at == datetime!(2026-01-01 10:00:00.5 UTC)));
    }

    #[test]
    fn the_touch_log_remembers_the_highest_position_per_key() {
        let log = TouchLog::new();
        let key = ViewKey::Sku("A".into());
        assert!(log.is_current(&key, 0));
        log.record(&key, 7);
        log.record(&key, 5);
        assert_eq!(log.last_touch(&key), 7);
        assert!(!log.is_current(&key, 6));
        assert!(log.is_current(&key, 7));
    }
}
