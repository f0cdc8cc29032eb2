//! Every read of the read model, each answered with the checkpoint it reflects
//! ([`AtPosition`]): the [`ReadModelQueries`] the query service calls, implemented by
//! [`ReadModel`] on a pool of read-only connections, and the row readers beneath it.

use super::*;
use shelfsync_common::domain::allocation::Allocation;
use shelfsync_common::wire::api::AllocationView;

/// The read model's queries, as the query service and the jobs use them. Behind a trait
/// so that tests can inject a failing or slow implementation.
pub trait ReadModelQueries: Send + Sync {
    /// Stock of a product at a store (`None`: no stream yet).
    fn stock_level(
        &self,
        product: ProductId,
        store: StoreId,
    ) -> BoxFuture<'_, Result<AtPosition<Option<StockLevel>>, ReadError>>;

    /// Stock of a product at every store that has a stream for it, with totals.
    fn product_stock(&self, product: ProductId) -> BoxFuture<'_, Result<AtPosition<ProductStock>, ReadError>>;

    /// A product by id.
    fn product(&self, id: ProductId) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, ReadError>>;

    /// A product by SKU.
    fn product_by_sku(&self, sku: String) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, ReadError>>;

    /// Every open reservation of a store, by product then id (for store snapshots).
    fn open_reservations(&self, store: StoreId) -> BoxFuture<'_, Result<AtPosition<Vec<OpenReservation>>, ReadError>>;

    /// Open reservations recorded by `origin` that expire at or before `now`, soonest
    /// first, at most 1,000 per call.
    fn expired_reservations(
        &self,
        origin: Origin,
        now: OffsetDateTime,
    ) -> BoxFuture<'_, Result<Vec<ReservationId>, ReadError>>;

    /// The projection's checkpoint.
    fn checkpoint(&self) -> BoxFuture<'_, Result<u64, ReadError>>;
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
    pub async fn poison_events(&self, limit: usize) -> Result<(u64, Vec<PoisonEvent>), ReadError> {
        self.reads.run(move |conn| read_poison_events(conn, limit)).await
    }

    /// The whole catalog (the back office's product search filters it by name).
    pub async fn catalog(&self) -> Result<Vec<ProductView>, ReadError> {
        self.reads.run(read_catalog).await
    }

    fn snapshot<T, F>(&self, read: F) -> BoxFuture<'_, Result<AtPosition<T>, ReadError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ReadError> + Send + 'static,
    {
        Box::pin(self.reads.run(move |conn| snapshot(conn, read)))
    }

    /// Every stream with an allocation (for the fleet view and the hub's rebalance job).
    pub async fn allocated_streams(&self) -> Result<Vec<StockLevel>, ReadError> {
        self.reads.run(read_allocated_streams).await
    }

    /// A store's stock rows, open reservations and the catalog, all as of one checkpoint
    /// (one read transaction): the starting point of a new agent.
    pub async fn store_snapshot(&self, store: StoreId) -> Result<SnapshotResponse, ReadError> {
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
                    hub_share: r.hub_share,
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
    ) -> BoxFuture<'_, Result<AtPosition<Option<StockLevel>>, ReadError>> {
        self.snapshot(move |conn| read_stock_level(conn, product, store))
    }

    fn product_stock(&self, product: ProductId) -> BoxFuture<'_, Result<AtPosition<ProductStock>, ReadError>> {
        self.snapshot(move |conn| read_product_stock(conn, product))
    }

    fn product(&self, id: ProductId) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, ReadError>> {
        self.snapshot(move |conn| read_product(conn, "id = ?1", id.as_bytes()))
    }

    fn product_by_sku(&self, sku: String) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, ReadError>> {
        self.snapshot(move |conn| read_product(conn, "sku = ?1", &sku))
    }

    fn open_reservations(&self, store: StoreId) -> BoxFuture<'_, Result<AtPosition<Vec<OpenReservation>>, ReadError>> {
        self.snapshot(move |conn| read_open_reservations(conn, store))
    }

    fn expired_reservations(
        &self,
        origin: Origin,
        now: OffsetDateTime,
    ) -> BoxFuture<'_, Result<Vec<ReservationId>, ReadError>> {
        Box::pin(
            self.reads
                .run(move |conn| read_expired_reservations(conn, origin, now, EXPIRY_SCAN_LIMIT)),
        )
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<u64, ReadError>> {
        Box::pin(self.reads.run(read_checkpoint))
    }
}

/// Runs `read` and reads the checkpoint in one read transaction.
fn snapshot<T>(
    conn: &Connection,
    read: impl FnOnce(&Connection) -> Result<T, ReadError>,
) -> Result<AtPosition<T>, ReadError> {
    let tx = conn.unchecked_transaction()?;
    let position = read_checkpoint(&tx)?;
    let value = read(&tx)?;
    tx.commit()?;
    Ok(AtPosition { value, position })
}

/// The stock projection's checkpoint (0 before the first batch).
pub fn read_checkpoint(conn: &Connection) -> Result<u64, ReadError> {
    read_named_checkpoint(conn, CHECKPOINT_NAME)
}

/// The position of the checkpoint row `name` (0 when absent).
pub fn read_named_checkpoint(conn: &Connection, name: &str) -> Result<u64, ReadError> {
    let position: Option<i64> = conn
        .prepare_cached("SELECT position FROM checkpoint WHERE name = ?1")?
        .query_row([name], |row| row.get(0))
        .optional()?;
    Ok(position.unwrap_or(0) as u64)
}

const STOCK_COLUMNS: &str = "product_id, store_id, on_hand, reserved, available, version, position, allocation";

fn stock_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StockLevel> {
    let available = row.get(4)?;
    let allocation = decode_allocation(row.get::<_, Option<String>>(7)?.as_deref())
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, e.to_string().into()))?;
    Ok(StockLevel {
        product_id: ProductId::from_bytes(row.get(0)?),
        store_id: StoreId::from_bytes(row.get(1)?),
        on_hand: row.get(2)?,
        reserved: row.get(3)?,
        available,
        version: row.get::<_, i64>(5)? as u64,
        position: row.get::<_, i64>(6)? as u64,
        allocation: allocation.map(|a| AllocationView::new(a, available)),
    })
}

/// The `allocation` column of a stock row (JSON, NULL without an allocation).
pub fn decode_allocation(text: Option<&str>) -> Result<Option<Allocation>, ReadError> {
    text.map(|t| serde_json::from_str(t).map_err(|e| ReadError::Corrupt(format!("allocation: {e}"))))
        .transpose()
}

/// The `allocation` column for a stream's allocation.
pub fn encode_allocation(allocation: Option<&Allocation>) -> Result<Option<String>, ReadError> {
    allocation
        .map(|a| serde_json::to_string(a).map_err(|e| ReadError::Corrupt(format!("allocation: {e}"))))
        .transpose()
}

/// Stock of a product at a store.
pub fn read_stock_level(
    conn: &Connection,
    product: ProductId,
    store: StoreId,
) -> Result<Option<StockLevel>, ReadError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {STOCK_COLUMNS} FROM stock WHERE product_id = ?1 AND store_id = ?2"
        ))?
        .query_row(params![&product.as_bytes()[..], &store.as_bytes()[..]], stock_from_row)
        .optional()?)
}

/// Stock of a product at every store, by store id, with totals.
pub fn read_product_stock(conn: &Connection, product: ProductId) -> Result<ProductStock, ReadError> {
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
) -> Result<Option<ProductView>, ReadError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT id, sku, name, price_minor, version FROM products WHERE {condition}"
        ))?
        .query_row([key], shelfsync_common::sqlite::rows::product_view)
        .optional()?)
}

/// Stock of every product at one store, by product id.
pub fn read_store_stock(conn: &Connection, store: StoreId) -> Result<Vec<StockLevel>, ReadError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {STOCK_COLUMNS} FROM stock WHERE store_id = ?1 ORDER BY product_id"
    ))?;
    let rows = stmt
        .query_map([&store.as_bytes()[..]], stock_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Every stock row with an allocation, by store then product.
pub fn read_allocated_streams(conn: &Connection) -> Result<Vec<StockLevel>, ReadError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {STOCK_COLUMNS} FROM stock WHERE allocation IS NOT NULL ORDER BY store_id, product_id"
    ))?;
    let rows = stmt
        .query_map([], stock_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The whole catalog, by product id.
pub fn read_catalog(conn: &Connection) -> Result<Vec<ProductView>, ReadError> {
    let mut stmt = conn.prepare_cached("SELECT id, sku, name, price_minor, version FROM products ORDER BY id")?;
    let rows = stmt
        .query_map([], shelfsync_common::sqlite::rows::product_view)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A product by id.
pub fn read_product_by_id(conn: &Connection, id: ProductId) -> Result<Option<ProductView>, ReadError> {
    read_product(conn, "id = ?1", id.as_bytes())
}

/// A product by SKU.
pub fn read_product_by_sku(conn: &Connection, sku: &str) -> Result<Option<ProductView>, ReadError> {
    read_product(conn, "sku = ?1", &sku)
}

/// Every open reservation of a store.
pub fn read_open_reservations(conn: &Connection, store: StoreId) -> Result<Vec<OpenReservation>, ReadError> {
    let mut stmt = conn.prepare_cached(
        "SELECT reservation_id, product_id, quantity, expires_at, origin, hub_share FROM reservations
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
            quantity: u32::try_from(quantity).map_err(|e| ReadError::Corrupt(e.to_string()))?,
            expires_at: time_text::decode(&expires_at)?,
            origin: origin.map_or(Origin::Hub, |id| Origin::Store(StoreId::from_bytes(id))),
            hub_share: row.get(5)?,
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
) -> Result<Vec<ReservationId>, ReadError> {
    let now = time_text::encode(now)?;
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
pub fn read_poison_events(conn: &Connection, limit: usize) -> Result<(u64, Vec<PoisonEvent>), ReadError> {
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
