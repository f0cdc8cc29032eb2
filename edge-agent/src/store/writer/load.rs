//! Loading the view at start: the confirmed state, this store's unconfirmed events on
//! top, the catalog, own reservations, quarantine count and the sync position, as the
//! last commit left them.

use super::*;
use crate::store::UNCONFIRMED;

pub(super) fn load_view(conn: &Connection, store_id: StoreId) -> rusqlite::Result<View> {
    let mut view = View::new(store_id);
    let mut stmt = conn.prepare("SELECT product_id, state FROM confirmed_streams")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let state: InventoryState = from_json(&row.get::<_, String>(1)?)?;
        view.apply(ProductId::from_bytes(row.get(0)?), &StreamOp::ReplaceConfirmed(state));
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT seq, event_id, product_id, event_type, schema_version, data, recorded_at FROM outbox
         WHERE {UNCONFIRMED} AND status IN ('pending', 'acked') ORDER BY seq"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let payload = EventPayload::decode(
            &row.get::<_, String>(3)?,
            row.get(4)?,
            from_json(&row.get::<_, String>(5)?)?,
        )
        .map_err(|e| conversion(e.to_string()))?;
        let pending = PendingEvent {
            seq: row.get::<_, i64>(0)? as u64,
            event_id: EventId::from_bytes(row.get(1)?),
            payload,
            recorded_at: time_text::decode(&row.get::<_, String>(6)?)?,
        };
        view.apply(ProductId::from_bytes(row.get(2)?), &StreamOp::Record(pending));
    }
    let mut stmt = conn.prepare("SELECT product_id, sku, name, price_minor, version FROM catalog")?;
    for product in stmt.query_map([], shelfsync_common::sqlite::rows::product_view)? {
        view.put_product(product?);
    }
    let mut stmt = conn.prepare("SELECT reservation_id FROM own_reservations")?;
    for id in stmt.query_map([], |row| row.get::<_, [u8; 16]>(0))? {
        view.own_reservations.insert(ReservationId::from_bytes(id?));
    }
    let quarantined = format!("SELECT COUNT(*) FROM outbox WHERE {UNCONFIRMED} AND status = 'quarantined'");
    view.quarantined = conn.query_row(&quarantined, [], |r| r.get::<_, i64>(0))? as u64;
    view.sync = conn.query_row(
        "SELECT cursor, hub_head, bootstrapped, last_sync_at, anchor_position, anchor_event, resynced_at,
                resynced_reuploaded, resynced_position, resynced_reason FROM sync_state WHERE id = 1",
        [],
        |row| {
            let anchor = match (row.get::<_, Option<i64>>(4)?, row.get::<_, Option<[u8; 16]>>(5)?) {
                (Some(position), Some(id)) => Some((position as u64, EventId::from_bytes(id))),
                _ => None,
            };
            let resynced = match row.get::<_, Option<String>>(6)? {
                Some(at) => Some(shelfsync_common::wire::sync::Resynced {
                    at: time_text::decode(&at)?,
                    reuploaded: row.get::<_, Option<i64>>(7)?.unwrap_or(0) as u64,
                    position: row.get::<_, Option<i64>>(8)?.unwrap_or(0) as u64,
                    reason: row.get::<_, Option<String>>(9)?.unwrap_or_default(),
                }),
                None => None,
            };
            Ok(SyncPosition {
                cursor: row.get::<_, i64>(0)? as u64,
                hub_head: row.get::<_, i64>(1)? as u64,
                bootstrapped: row.get(2)?,
                last_sync_at: row
                    .get::<_, Option<String>>(3)?
                    .map(|t| time_text::decode(&t))
                    .transpose()?,
                anchor,
                resynced,
            })
        },
    )?;
    Ok(view)
}
