//! Reads of the analytics file, each in one read transaction with the checkpoint, and
//! each taking `now` from the caller (the store's "today" follows from it and the store's
//! time zone). Velocity windows are *full* store days before today: the 7-day velocity
//! is the units of the 7 days before today divided by 7, so it does not swing through the
//! day; today's units are reported on their own.

use super::{checkpoint, day_text, local_day, Day, Settings};
use crate::store::ReadError;
use rusqlite::{params, Connection};
use shelfsync_common::sqlite::time_text;
use shelfsync_common::wire::analytics::{
    Alert, ProductAnalytics, ProductTotal, StoreAnalytics, StoreDay, StoreProductFigures, TopSeller, TopSellers,
};
use shelfsync_common::{ProductId, StoreId};
use std::collections::{BTreeMap, HashMap};
use time::OffsetDateTime;

/// Runs `read` and reads the checkpoint in one read transaction.
pub fn at_checkpoint<T>(
    conn: &Connection,
    read: impl FnOnce(&Connection, u64) -> Result<T, ReadError>,
) -> Result<T, ReadError> {
    let tx = conn.unchecked_transaction()?;
    let position = checkpoint(&tx)?;
    let value = read(&tx, position)?;
    tx.commit()?;
    Ok(value)
}

/// units / days, rounded to 4 decimals.
fn velocity(units: i64, days: i64) -> f64 {
    (units as f64 / days as f64 * 10_000.0).round() / 10_000.0
}

/// available / velocity in days, rounded to 2 decimals: 0 when nothing is available,
/// `None` when nothing sold (not infinity: JSON has none).
pub fn days_of_cover(available: i64, velocity: f64) -> Option<f64> {
    if available <= 0 {
        return Some(0.0);
    }
    (velocity > 0.0).then(|| (available as f64 / velocity * 100.0).round() / 100.0)
}

/// `GET /v1/analytics/products/{id}`: per store and in total. `None` when no store has
/// any stock row for the product and the catalog does not know it.
pub fn product(
    conn: &Connection,
    product: ProductId,
    now: OffsetDateTime,
) -> Result<Option<ProductAnalytics>, ReadError> {
    at_checkpoint(conn, |conn, position| {
        let settings = Settings::load(conn)?;
        let p = &product.as_bytes()[..];
        let mut stores: BTreeMap<StoreId, StoreProductFigures> = BTreeMap::new();
        let mut stmt =
            conn.prepare_cached("SELECT store_id, on_hand, reserved, available FROM stock WHERE product_id = ?1")?;
        let mut rows = stmt.query([p])?;
        while let Some(row) = rows.next()? {
            let store = StoreId::from_bytes(row.get(0)?);
            let figures = StoreProductFigures {
                store_id: store,
                on_hand: row.get(1)?,
                reserved: row.get(2)?,
                available: row.get(3)?,
                units_today: 0,
                units_7d: 0,
                units_28d: 0,
                velocity_7d: 0.0,
                velocity_28d: 0.0,
                days_of_cover: None,
                units_total: 0,
                revenue_minor_total: 0,
                expired_reservations: 0,
                oversells: 0,
                reorder_point: settings.reorder_point(product, store),
                low_stock: false,
            };
            stores.insert(store, figures);
        }
        let known: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM products WHERE id = ?1)")?
            .query_row([p], |row| row.get(0))?;
        if stores.is_empty() && !known {
            return Ok(None);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT store_id, day, units, revenue_minor, expired, oversells FROM an_daily WHERE product_id = ?1",
        )?;
        let mut rows = stmt.query([p])?;
        while let Some(row) = rows.next()? {
            let store = StoreId::from_bytes(row.get(0)?);
            let Some(f) = stores.get_mut(&store) else { continue };
            let day: Day = row.get(1)?;
            let units: i64 = row.get(2)?;
            let today = local_day(settings.time_zone(store), now);
            if day == today {
                f.units_today += units;
            }
            if (today - 7..today).contains(&day) {
                f.units_7d += units;
            }
            if (today - 28..today).contains(&day) {
                f.units_28d += units;
            }
            f.units_total += units;
            f.revenue_minor_total += row.get::<_, i64>(3)?;
            f.expired_reservations += row.get::<_, i64>(4)?;
            f.oversells += row.get::<_, i64>(5)?;
        }
        let mut stmt = conn.prepare_cached("SELECT store_id FROM an_low_stock WHERE product_id = ?1")?;
        let mut rows = stmt.query([p])?;
        while let Some(row) = rows.next()? {
            if let Some(f) = stores.get_mut(&StoreId::from_bytes(row.get(0)?)) {
                f.low_stock = true;
            }
        }
        let mut total = ProductTotal::default();
        for f in stores.values_mut() {
            f.velocity_7d = velocity(f.units_7d, 7);
            f.velocity_28d = velocity(f.units_28d, 28);
            f.days_of_cover = days_of_cover(f.available, f.velocity_7d);
            total.available += f.available;
            total.units_7d += f.units_7d;
            total.units_28d += f.units_28d;
            total.units_total += f.units_total;
            total.revenue_minor_total += f.revenue_minor_total;
            total.expired_reservations += f.expired_reservations;
            total.oversells += f.oversells;
        }
        total.velocity_7d = velocity(total.units_7d, 7);
        total.velocity_28d = velocity(total.units_28d, 28);
        total.days_of_cover = days_of_cover(total.available, total.velocity_7d);
        Ok(Some(ProductAnalytics {
            product_id: product,
            as_of: now,
            position,
            stores: stores.into_values().collect(),
            total,
        }))
    })
}

/// `GET /v1/analytics/stores/{id}`: the last `days` store days, today included.
pub fn store(conn: &Connection, store: StoreId, days: u32, now: OffsetDateTime) -> Result<StoreAnalytics, ReadError> {
    at_checkpoint(conn, |conn, position| {
        let settings = Settings::load(conn)?;
        let tz = settings.time_zone(store);
        let today = local_day(tz, now);
        let first = today - i64::from(days) + 1;
        let mut sums: BTreeMap<Day, (i64, i64)> = (first..=today).map(|d| (d, (0, 0))).collect();
        let mut stmt = conn.prepare_cached(
            "SELECT day, SUM(units), SUM(revenue_minor) FROM an_daily
             WHERE store_id = ?1 AND day BETWEEN ?2 AND ?3 GROUP BY day",
        )?;
        let mut rows = stmt.query(params![&store.as_bytes()[..], first, today])?;
        while let Some(row) = rows.next()? {
            sums.insert(row.get(0)?, (row.get(1)?, row.get(2)?));
        }
        Ok(StoreAnalytics {
            store_id: store,
            time_zone: tz.name().to_owned(),
            today: day_text(today),
            position,
            days: sums
                .into_iter()
                .map(|(day, (units, revenue_minor))| StoreDay {
                    date: day_text(day),
                    units,
                    revenue_minor,
                })
                .collect(),
        })
    })
}

/// `GET /v1/analytics/top-sellers`: units over each store's `days` full days before its
/// today, summed over `store` or every store; best first.
pub fn top_sellers(
    conn: &Connection,
    store: Option<StoreId>,
    days: u32,
    limit: usize,
    now: OffsetDateTime,
) -> Result<TopSellers, ReadError> {
    at_checkpoint(conn, |conn, position| {
        let settings = Settings::load(conn)?;
        let stores: Vec<StoreId> = match store {
            Some(store) => vec![store],
            None => {
                let mut stmt = conn.prepare_cached("SELECT DISTINCT store_id FROM stock")?;
                let rows = stmt.query_map([], |row| Ok(StoreId::from_bytes(row.get(0)?)))?;
                rows.collect::<Result<_, _>>()?
            }
        };
        let mut sums: HashMap<ProductId, (i64, i64)> = HashMap::new();
        let mut stmt = conn.prepare_cached(
            "SELECT product_id, SUM(units), SUM(revenue_minor) FROM an_daily
             WHERE store_id = ?1 AND day BETWEEN ?2 AND ?3 GROUP BY product_id",
        )?;
        for store in stores {
            let today = local_day(settings.time_zone(store), now);
            let mut rows = stmt.query(params![&store.as_bytes()[..], today - i64::from(days), today - 1])?;
            while let Some(row) = rows.next()? {
                let sum = sums.entry(ProductId::from_bytes(row.get(0)?)).or_default();
                sum.0 += row.get::<_, i64>(1)?;
                sum.1 += row.get::<_, i64>(2)?;
            }
        }
        let mut products: Vec<TopSeller> = sums
            .into_iter()
            .filter(|(_, (units, _))| *units > 0)
            .map(|(product_id, (units, revenue_minor))| TopSeller {
                product_id,
                sku: String::new(),
                units,
                revenue_minor,
            })
            .collect();
        products.sort_by(|a, b| {
            (b.units, b.revenue_minor)
                .cmp(&(a.units, a.revenue_minor))
                .then(a.product_id.as_bytes().cmp(b.product_id.as_bytes()))
        });
        products.truncate(limit);
        let mut sku = conn.prepare_cached("SELECT sku FROM products WHERE id = ?1")?;
        for p in &mut products {
            p.sku = sku
                .query_row([&p.product_id.as_bytes()[..]], |row| row.get(0))
                .unwrap_or_default();
        }
        Ok(TopSellers {
            store_id: store,
            days,
            position,
            products,
        })
    })
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this store.
    pub store: Option<StoreId>,
    /// Only low-stock alerts still open.
    pub open_only: bool,
    /// At most this many, newest first.
    pub limit: usize,
}

/// `GET /v1/analytics/alerts`: newest first, with the checkpoint.
pub fn alerts(conn: &Connection, filter: &AlertFilter) -> Result<(Vec<Alert>, u64), ReadError> {
    at_checkpoint(conn, |conn, position| {
        let mut stmt = conn.prepare_cached(
            "SELECT position, kind, product_id, store_id, available, reorder_point, occurred_at, cleared_by
             FROM an_alerts
             WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR store_id = ?2)
               AND (?3 = 0 OR (kind = 'low_stock' AND cleared_by IS NULL))
             ORDER BY position DESC LIMIT ?4",
        )?;
        let store = filter.store.map(|s| s.as_bytes().to_vec());
        let rows = stmt.query_map(
            params![filter.kind, store, filter.open_only, filter.limit as i64],
            alert_from_row,
        )?;
        let alerts = rows.collect::<Result<Vec<_>, _>>()?;
        Ok((alerts.into_iter().collect::<Result<_, _>>()?, position))
    })
}

/// The alerts after `after` of the given kinds, oldest first, at most `limit` (what a
/// webhook sends next).
pub fn alerts_after(conn: &Connection, after: u64, kinds: &[String], limit: usize) -> Result<Vec<Alert>, ReadError> {
    // The kinds as ",a,b,": a kind matches when ",kind," is in it.
    let kinds = format!(",{},", kinds.join(","));
    let mut stmt = conn.prepare_cached(
        "SELECT position, kind, product_id, store_id, available, reorder_point, occurred_at, cleared_by
         FROM an_alerts WHERE position > ?1 AND instr(?2, ',' || kind || ',') > 0 ORDER BY position LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![after as i64, kinds, limit as i64], alert_from_row)?;
    rows.map(|row| row?).collect()
}

/// One alert by id.
pub fn alert(conn: &Connection, id: u64) -> Result<Option<Alert>, ReadError> {
    let mut stmt = conn.prepare_cached(
        "SELECT position, kind, product_id, store_id, available, reorder_point, occurred_at, cleared_by
         FROM an_alerts WHERE position = ?1",
    )?;
    let mut rows = stmt.query_map([id as i64], alert_from_row)?;
    rows.next().transpose()?.transpose()
}

type AlertRow = Result<Alert, ReadError>;

fn alert_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRow> {
    let kind: String = row.get(1)?;
    let occurred_at: String = row.get(6)?;
    let cleared_by: Option<i64> = row.get(7)?;
    let store: Vec<u8> = row.get(3)?;
    Ok((|| {
        Ok(Alert {
            id: row.get::<_, i64>(0)? as u64,
            open: kind == "low_stock" && cleared_by.is_none(),
            kind,
            product_id: ProductId::from_bytes(row.get(2)?),
            store_id: StoreId::from_bytes(
                <[u8; 16]>::try_from(store.as_slice()).map_err(|_| ReadError::Corrupt("alert store id".into()))?,
            ),
            available: row.get(4)?,
            reorder_point: row.get(5)?,
            occurred_at: time_text::decode(&occurred_at)?,
        })
    })())
}

/// One line of `sales.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesRow {
    /// Store.
    pub store: StoreId,
    /// Store-local day.
    pub day: Day,
    /// Product.
    pub product: ProductId,
    /// Its SKU.
    pub sku: String,
    /// Units sold.
    pub units: i64,
    /// Revenue, minor units.
    pub revenue_minor: i64,
}

/// The CSV's key order: store, day, product (the table's primary key).
pub type SalesKey = (Vec<u8>, Day, Vec<u8>);

/// A page of sales rows with units or revenue between the store days `from..=to`, after
/// `after` in key order, at most `limit`.
pub fn sales_page(
    conn: &Connection,
    from: Day,
    to: Day,
    store: Option<StoreId>,
    after: Option<&SalesKey>,
    limit: usize,
) -> Result<Vec<SalesRow>, ReadError> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.store_id, d.day, d.product_id, COALESCE(p.sku, ''), d.units, d.revenue_minor
         FROM an_daily d LEFT JOIN products p ON p.id = d.product_id
         WHERE d.day BETWEEN ?1 AND ?2 AND (?3 IS NULL OR d.store_id = ?3) AND d.units <> 0
           AND (?4 IS NULL OR (d.store_id, d.day, d.product_id) > (?4, ?5, ?6))
         ORDER BY d.store_id, d.day, d.product_id LIMIT ?7",
    )?;
    let store = store.map(|s| s.as_bytes().to_vec());
    let (a_store, a_day, a_product) = match after {
        Some((s, d, p)) => (Some(s.clone()), Some(*d), Some(p.clone())),
        None => (None, None, None),
    };
    let rows = stmt.query_map(
        params![from, to, store, a_store, a_day, a_product, limit as i64],
        |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (s, day, p, sku, units, revenue_minor) = row?;
        let id = |b: Vec<u8>| <[u8; 16]>::try_from(b.as_slice()).map_err(|_| ReadError::Corrupt("sales row id".into()));
        out.push(SalesRow {
            store: StoreId::from_bytes(id(s)?),
            day,
            product: ProductId::from_bytes(id(p)?),
            sku,
            units,
            revenue_minor,
        });
    }
    Ok(out)
}

/// The figures the roll-up job puts into metrics: they change with the clock, not only
/// with events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollup {
    /// Streams that sold in the last 7 full days and have less than 7 days of cover.
    pub low_cover_streams: u64,
    /// Open low-stock alerts.
    pub open_low_stock: u64,
    /// Units sold on each store's yesterday, summed.
    pub units_yesterday: i64,
}

/// The roll-up at `now`.
pub fn rollup(conn: &Connection, now: OffsetDateTime) -> Result<Rollup, ReadError> {
    at_checkpoint(conn, |conn, _| {
        let settings = Settings::load(conn)?;
        let mut out = Rollup {
            open_low_stock: conn.query_row("SELECT COUNT(*) FROM an_low_stock", [], |row| row.get::<_, i64>(0))? as u64,
            ..Rollup::default()
        };
        let mut stmt = conn.prepare_cached("SELECT product_id, store_id, available FROM stock")?;
        let stock = stmt
            .query_map([], |row| {
                Ok((
                    ProductId::from_bytes(row.get(0)?),
                    StoreId::from_bytes(row.get(1)?),
                    row.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut week = conn.prepare_cached(
            "SELECT COALESCE(SUM(units), 0) FROM an_daily WHERE store_id = ?1 AND product_id = ?2 AND day BETWEEN ?3 AND ?4",
        )?;
        for (product, store, available) in stock {
            let today = local_day(settings.time_zone(store), now);
            let (s, p) = (&store.as_bytes()[..], &product.as_bytes()[..]);
            let units: i64 = week.query_row(params![s, p, today - 7, today - 1], |row| row.get(0))?;
            if days_of_cover(available, velocity(units, 7)).is_some_and(|d| d < 7.0) {
                out.low_cover_streams += 1;
            }
            out.units_yesterday += week.query_row(params![s, p, today - 1, today - 1], |row| row.get::<_, i64>(0))?;
        }
        Ok(out)
    })
}
