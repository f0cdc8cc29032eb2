//! The projector: follows the log and writes the read model with its checkpoint in one
//! transaction per batch, retrying storage failures and skipping poison events with an
//! alarm (see the module above).

use super::follow::{backoff, follow, report_lag, stopped, Follower, MAX_BACKOFF};
use super::*;

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
    log: EventStore,
    path: &Path,
    shutdown: watch::Receiver<bool>,
) -> Result<ProjectionHandle, ProjectionError> {
    let mut conn = open_writer(path)?;
    let mut checkpoint = read_checkpoint(&conn)?;
    let head = log.bus().head();
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
    // Shown from the start, so that a rule on its increase sees the first retry.
    metrics::counter!("shelfsync_hub_projection_retries_total").increment(0);
    let (projected_tx, projected) = watch::channel(checkpoint);
    let (stall_tx, stall) = watch::channel(None);
    let touches = Arc::new(TouchLog::new());
    let lag_task = tokio::spawn(report_lag(
        "shelfsync_hub_projection_lag_events",
        log.bus().watch_head(),
        projected.clone(),
    ));
    let projector = Projector {
        log,
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

/// The projector task's state.
struct Projector {
    log: EventStore,
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
        let mut feed = self.log.feed(self.position);
        let mut shutdown = self.shutdown.clone();
        follow(&mut feed, &mut shutdown, CATCH_UP_BATCH, &mut self).await;
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
            .unwrap_or_else(|e| (Applied::nothing(self.position), Err(ReadError::Join(e.to_string()))));
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

impl Follower for Projector {
    async fn batch(&mut self, events: Vec<EventEnvelope>) -> bool {
        self.project(events).await
    }

    fn read_failed(&mut self, error: &ReadError, retry_in: Duration) {
        metrics::counter!("shelfsync_hub_projection_retries_total").increment(1);
        tracing::warn!(%error, position = self.position, retry_in_ms = retry_in.as_millis() as u64,
            "reading the event log for the projection failed; retrying");
        self.stall
            .send_replace(Some(format!("the event log cannot be read: {error}")));
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
pub fn apply_skipping_poison(conn: &mut Connection, events: &[EventEnvelope]) -> (Applied, Result<(), ReadError>) {
    let error = match applied_or_caught(conn, events) {
        Ok(applied) => return (applied, Ok(())),
        Err(error) => error,
    };
    // The failed batch rolled back, so the checkpoint is where the batch found it.
    let before = match read_checkpoint(conn) {
        Ok(position) => position,
        Err(read_error) => return (Applied::nothing(0), Err(read_error)),
    };
    if is_storage_failure(&error) {
        return (Applied::nothing(before), Err(error));
    }
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
fn applied_or_caught(conn: &mut Connection, events: &[EventEnvelope]) -> Result<Applied, ReadError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply_batch(conn, events))).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(ReadError::Corrupt(format!("applying the event panicked: {message}")))
    })
}

/// Whether `error` came from the database itself (busy, I/O, a full disk, a constraint
/// the read model's own rows break): retried as is, with `/readyz` failing meanwhile,
/// because the event may well apply once the database recovers (or an operator rebuilds
/// the read model). Everything else (a value that cannot be converted or stored, a panic)
/// is about the event, and would fail the same way for ever.
fn is_storage_failure(error: &ReadError) -> bool {
    match error {
        ReadError::Sqlite(rusqlite::Error::SqliteFailure(..))
        | ReadError::Postgres(_)
        | ReadError::Join(_)
        | ReadError::Migration(_) => true,
        ReadError::Sqlite(_) | ReadError::Corrupt(_) => false,
    }
}

/// Records `event` as poison and moves the checkpoint past it, in one transaction.
fn skip_poison(conn: &mut Connection, event: &EventEnvelope, reason: &str) -> Result<(), ReadError> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO poison_events (position, event_id, reason, skipped_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (position) DO NOTHING",
        params![
            event.position as i64,
            &event.event_id.as_bytes()[..],
            reason,
            time_text::encode(OffsetDateTime::now_utc())?,
        ],
    )?;
    write_checkpoint(&tx, CHECKPOINT_NAME, event.position)?;
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

/// Moves the checkpoint row `name` to `position` (in the caller's transaction).
pub(crate) fn write_checkpoint(conn: &Connection, name: &str, position: u64) -> Result<(), ReadError> {
    conn.prepare_cached(
        "INSERT INTO checkpoint (name, position) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
    )?
    .execute(params![name, position as i64])?;
    Ok(())
}

/// Applies `events` (in position order) and moves the checkpoint, in one transaction.
/// Events at or before the checkpoint were applied before and are skipped, so applying
/// a batch twice is harmless.
pub fn apply_batch(conn: &mut Connection, events: &[EventEnvelope]) -> Result<Applied, ReadError> {
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
        write_checkpoint(&tx, CHECKPOINT_NAME, position)?;
    }
    tx.commit()?;
    Ok(Applied {
        position,
        events: applied,
        touched: touched.into_iter().collect(),
    })
}

pub(crate) fn project_catalog(
    conn: &Connection,
    event: &EventEnvelope,
    touched: &mut HashSet<ViewKey>,
) -> Result<(), ReadError> {
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
/// [`inventory::apply`], then written back as the difference. The analytics worker keeps
/// the same tables in its own file and folds them with this too.
pub(crate) struct StreamWork {
    pub(crate) state: InventoryState,
    loaded: BTreeMap<ReservationId, Reservation>,
    origins: HashMap<ReservationId, Option<StoreId>>,
    position: u64,
}

impl StreamWork {
    pub(crate) fn load(conn: &Connection, product: ProductId, store: StoreId) -> Result<Self, ReadError> {
        let keys = params![&product.as_bytes()[..], &store.as_bytes()[..]];
        let row: Option<(i64, i64, i64, Option<String>)> = conn
            .prepare_cached(
                "SELECT on_hand, version, position, allocation FROM stock WHERE product_id = ?1 AND store_id = ?2",
            )?
            .query_row(keys, |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
            .optional()?;
        let (on_hand, version, position, allocation) = row.unwrap_or((0, 0, 0, None));
        let allocation = queries::decode_allocation(allocation.as_deref())?;
        let mut stmt = conn.prepare_cached(
            "SELECT reservation_id, quantity, expires_at, hub_share FROM reservations
             WHERE product_id = ?1 AND store_id = ?2",
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
                    quantity: u32::try_from(quantity).map_err(|e| ReadError::Corrupt(e.to_string()))?,
                    expires_at: time_text::decode(&expires_at)?,
                    hub_share: row.get(3)?,
                },
            );
        }
        Ok(Self {
            state: InventoryState {
                on_hand,
                reservations: reservations.clone(),
                version: version as u64,
                allocation,
            },
            loaded: reservations,
            origins: HashMap::new(),
            position: position as u64,
        })
    }

    pub(crate) fn apply(&mut self, event: &EventEnvelope) {
        if let EventPayload::StockReserved { reservation_id, .. } = &event.payload {
            let origin = match event.metadata.origin {
                Origin::Hub => None,
                Origin::Store(store) => Some(store),
            };
            self.origins.insert(*reservation_id, origin);
        }
        inventory::apply(&mut self.state, &event.payload, event.metadata.origin.into());
        // The log's version is authoritative (it also counts events `apply` ignores).
        self.state.version = event.stream_version;
        self.position = event.position;
    }

    pub(crate) fn save(self, conn: &Connection, product: ProductId, store: StoreId) -> Result<(), ReadError> {
        let (p, s) = (&product.as_bytes()[..], &store.as_bytes()[..]);
        let reserved = self.state.reserved();
        conn.prepare_cached(
            "INSERT INTO stock (product_id, store_id, on_hand, reserved, available, version, position, allocation)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (product_id, store_id) DO UPDATE SET on_hand = excluded.on_hand,
                 reserved = excluded.reserved, available = excluded.available,
                 version = excluded.version, position = excluded.position, allocation = excluded.allocation",
        )?
        .execute(params![
            p,
            s,
            self.state.on_hand,
            reserved,
            self.state.available(),
            self.state.version as i64,
            self.position as i64,
            queries::encode_allocation(self.state.allocation.as_ref())?,
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
            "INSERT INTO reservations (product_id, store_id, reservation_id, quantity, expires_at, origin, hub_share)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (product_id, store_id, reservation_id) DO UPDATE SET quantity = excluded.quantity,
                 expires_at = excluded.expires_at, origin = excluded.origin, hub_share = excluded.hub_share",
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
                time_text::encode(reservation.expires_at)?,
                origin.as_ref().map(|o| &o.as_bytes()[..]),
                reservation.hub_share,
            ])?;
        }
        Ok(())
    }
}
