//! Analytics with known histories and a controlled clock: figures computed by hand,
//! alerts per crossing, and a rebuild from zero that gives the same figures.

use super::fold::apply_batch;
use super::queries::{self, AlertFilter};
use super::*;
use crate::bus::EventBus;
use crate::store::EventStore;
use shelfsync_common::domain::event::ReleaseReason;
use shelfsync_common::domain::product::Product;
use shelfsync_common::wire::sync::UploadEvent;
use shelfsync_common::{EventEnvelope, EventId, EventMetadata, EventPayload, Origin, ReservationId, StreamId};
use std::path::PathBuf;
use time::macros::datetime;

/// A history of hand-made events with positions in order.
struct History {
    events: Vec<EventEnvelope>,
}

impl History {
    fn new() -> Self {
        Self { events: Vec::new() }
    }

    fn push(&mut self, stream: StreamId, payload: EventPayload, at: OffsetDateTime) -> u64 {
        let position = self.events.len() as u64 + 1;
        let version = self.events.iter().filter(|e| e.stream == stream).count() as u64 + 1;
        self.events.push(EventEnvelope {
            event_id: EventId::new_v7(),
            stream,
            stream_version: version,
            position,
            schema_version: 1,
            payload,
            metadata: EventMetadata {
                origin: Origin::Hub,
                actor: "test".into(),
                correlation_id: uuid::Uuid::now_v7(),
                causation_id: None,
                occurred_at: at,
                recorded_at: Some(at),
            },
        });
        position
    }

    fn product(&mut self, id: ProductId, price_minor: u64, at: OffsetDateTime) {
        let product = Product {
            id,
            sku: format!("SKU-{}", &id.to_string()[28..]),
            name: "Thing".into(),
            price_minor,
        };
        let payload = if self.events.iter().any(|e| e.stream == StreamId::catalog(id)) {
            EventPayload::ProductUpdated(product)
        } else {
            EventPayload::ProductRegistered(product)
        };
        self.push(StreamId::catalog(id), payload, at);
    }

    fn add(&mut self, p: ProductId, s: StoreId, quantity: u32, at: OffsetDateTime) -> u64 {
        self.push(StreamId::inventory(p, s), EventPayload::StockAdded { quantity }, at)
    }

    /// A till's sale without a hold.
    fn sell(&mut self, p: ProductId, s: StoreId, quantity: i64, at: OffsetDateTime) -> u64 {
        let payload = EventPayload::StockAdjusted {
            delta: -quantity,
            reason: "sale".into(),
        };
        self.push(StreamId::inventory(p, s), payload, at)
    }

    /// A hold and its commit.
    fn hold_and_commit(&mut self, p: ProductId, s: StoreId, quantity: u32, at: OffsetDateTime) -> u64 {
        let reservation_id = ReservationId::new_v7();
        let expires_at = at + time::Duration::minutes(15);
        let stream = StreamId::inventory(p, s);
        self.push(
            stream,
            EventPayload::StockReserved {
                reservation_id,
                quantity,
                expires_at,
            },
            at,
        );
        self.push(
            stream,
            EventPayload::ReservationCommitted {
                reservation_id,
                quantity,
            },
            at,
        )
    }
}

fn fresh(dir: &tempfile::TempDir) -> Connection {
    open_writer(&dir.path().join("analytics.sqlite"), false).unwrap()
}

fn settings(conn: &Connection, tz: &[(StoreId, &str)], points: &[(ProductId, Option<StoreId>, i64)]) -> Settings {
    for (store, name) in tz {
        conn.execute(
            "INSERT INTO store_settings (store_id, time_zone) VALUES (?1, ?2)",
            params![&store.as_bytes()[..], name],
        )
        .unwrap();
    }
    for (product, store, point) in points {
        conn.execute(
            "INSERT INTO reorder_points (product_id, store_id, reorder_point) VALUES (?1, ?2, ?3)",
            params![
                &product.as_bytes()[..],
                store.map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
                point
            ],
        )
        .unwrap();
    }
    Settings::load(conn).unwrap()
}

#[test]
fn velocity_and_days_of_cover_follow_the_store_day_across_midnight_in_berlin() {
    // Given a Berlin store (UTC+1 in January) and a product at 2.50,
    let dir = tempfile::tempdir().unwrap();
    let mut conn = fresh(&dir);
    let (berlin, coffee, tea) = (StoreId::new_v7(), ProductId::new_v7(), ProductId::new_v7());
    let settings = settings(&conn, &[(berlin, "Europe/Berlin")], &[]);
    let mut h = History::new();
    h.product(coffee, 250, datetime!(2025-12-01 09:00 UTC));
    h.product(tea, 100, datetime!(2025-12-01 09:00 UTC));
    h.add(coffee, berlin, 100, datetime!(2025-12-01 10:00 UTC));
    h.add(tea, berlin, 10, datetime!(2025-12-01 10:00 UTC));
    // and sales on both sides of the store's midnights:
    h.sell(coffee, berlin, 2, datetime!(2025-12-20 12:00 UTC)); // Dec 20: outside 28 days
    h.sell(coffee, berlin, 7, datetime!(2026-01-12 22:30 UTC)); // Jan 12 23:30 local: 28 days only
    h.hold_and_commit(coffee, berlin, 3, datetime!(2026-01-12 23:30 UTC)); // Jan 13 00:30 local: 7 days
    h.sell(coffee, berlin, 4, datetime!(2026-01-19 22:30 UTC)); // Jan 19 23:30 local: 7 days
    h.product(coffee, 300, datetime!(2026-01-19 23:00 UTC)); // the price changes
    h.hold_and_commit(coffee, berlin, 5, datetime!(2026-01-19 23:30 UTC)); // Jan 20 00:30 local: today
                                                                           // when it is folded and read at 2026-01-20 11:00 in Berlin,
    let folded = apply_batch(&mut conn, &settings, &h.events).unwrap();
    assert_eq!(folded.position, h.events.len() as u64);
    let now = datetime!(2026-01-20 10:00 UTC);
    let figures = queries::product(&conn, coffee, now).unwrap().unwrap();
    let f = &figures.stores[0];
    // then by hand: 7 full days = Jan 13..=19 local: 3 + 4 = 7 units, 1.0 a day (in UTC
    // days it would be 4 + 5 = 9); 28 days = Dec 23..=Jan 19: 7 + 3 + 4 = 14, 0.5 a day;
    assert_eq!((f.units_today, f.units_7d, f.units_28d), (5, 7, 14));
    assert_eq!((f.velocity_7d, f.velocity_28d), (1.0, 0.5));
    // available 100 - 21 = 79, so 79 days of cover at 1.0 a day;
    assert_eq!(f.available, 79);
    assert_eq!(f.days_of_cover, Some(79.0));
    // revenue at each sale's price: 16 units at 2.50 and 5 at 3.00.
    assert_eq!(f.units_total, 21);
    assert_eq!(f.revenue_minor_total, 16 * 250 + 5 * 300);
    assert_eq!(figures.total.days_of_cover, Some(79.0));
    // A product with no sales has no finite cover: JSON null, not infinity.
    let idle = queries::product(&conn, tea, now).unwrap().unwrap();
    assert_eq!(idle.stores[0].days_of_cover, None);
    let json = serde_json::to_value(&idle).unwrap();
    assert!(json["stores"][0]["days_of_cover"].is_null(), "{json}");
    // The store's days are Berlin days: Jan 13 has the 00:30 sale, Jan 20 the last one.
    let store = queries::store(&conn, berlin, 8, now).unwrap();
    assert_eq!(store.time_zone, "Europe/Berlin");
    assert_eq!(store.today, "2026-01-20");
    let day = |d: &str| store.days.iter().find(|x| x.date == d).unwrap().clone();
    assert_eq!((day("2026-01-13").units, day("2026-01-13").revenue_minor), (3, 750));
    assert_eq!((day("2026-01-19").units, day("2026-01-20").units), (4, 5));
    assert_eq!(day("2026-01-20").revenue_minor, 1500);
    // Top sellers over the 7 full days: coffee only.
    let top = queries::top_sellers(&conn, None, 7, 10, now).unwrap();
    assert_eq!(top.products.len(), 1);
    assert_eq!((top.products[0].product_id, top.products[0].units), (coffee, 7));
}

#[test]
fn the_same_history_in_utc_books_the_midnight_sales_on_other_days() {
    // The control of the test above: without the time zone the windows differ.
    let dir = tempfile::tempdir().unwrap();
    let mut conn = fresh(&dir);
    let (store, coffee) = (StoreId::new_v7(), ProductId::new_v7());
    let mut h = History::new();
    h.product(coffee, 250, datetime!(2025-12-01 09:00 UTC));
    h.add(coffee, store, 100, datetime!(2025-12-01 10:00 UTC));
    h.hold_and_commit(coffee, store, 3, datetime!(2026-01-12 23:30 UTC));
    h.sell(coffee, store, 4, datetime!(2026-01-19 22:30 UTC));
    h.hold_and_commit(coffee, store, 5, datetime!(2026-01-19 23:30 UTC));
    apply_batch(&mut conn, &Settings::default(), &h.events).unwrap();
    let f = queries::product(&conn, coffee, datetime!(2026-01-20 10:00 UTC))
        .unwrap()
        .unwrap();
    assert_eq!((f.stores[0].units_today, f.stores[0].units_7d), (0, 9));
}

#[test]
fn a_low_stock_alert_fires_once_per_crossing_and_clears_on_restock() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = fresh(&dir);
    let (shop, other, p) = (StoreId::new_v7(), StoreId::new_v7(), ProductId::new_v7());
    // Given a reorder point of 10 for the product, and 3 for one store of its own,
    let settings = settings(&conn, &[], &[(p, None, 10), (p, Some(other), 3)]);
    let t = datetime!(2026-03-01 12:00 UTC);
    let mut h = History::new();
    h.product(p, 100, t);
    h.add(p, shop, 20, t);
    h.add(p, other, 20, t);
    h.sell(p, shop, 5, t); // 15: above
    let crossed = h.sell(p, shop, 6, t); // 9: below 10, alert
    h.sell(p, shop, 2, t); // 7: still below, no second alert
    h.sell(p, other, 11, t); // 9 at the other store: its point is 3, no alert
                             // (folded in two batches: the open alert is carried by the file, not by memory)
    let split = h.events.len();
    let restocked = h.add(p, shop, 10, t); // 17: cleared
    let again = h.sell(p, shop, 8, t); // 9: a new crossing, a new alert
    let oversold = h.push(
        StreamId::inventory(p, other),
        EventPayload::OversellDetected {
            caused_by: EventId::new_v7(),
            on_hand: -1,
            reserved: 0,
            available: -1,
        },
        t,
    );
    apply_batch(&mut conn, &settings, &h.events[..split]).unwrap();
    apply_batch(&mut conn, &settings, &h.events).unwrap();
    let all = AlertFilter {
        limit: 100,
        ..AlertFilter::default()
    };
    let (alerts, _) = queries::alerts(&conn, &all).unwrap();
    let seen: Vec<(u64, &str, i64, bool)> = alerts
        .iter()
        .map(|a| (a.id, a.kind.as_str(), a.available, a.open))
        .collect();
    assert_eq!(
        seen,
        vec![
            (oversold, "oversell", -1, false),
            (again, "low_stock", 9, true),
            (restocked, "low_stock_cleared", 17, false),
            (crossed, "low_stock", 9, false),
        ]
    );
    let open = AlertFilter {
        open_only: true,
        limit: 100,
        ..AlertFilter::default()
    };
    let (open, _) = queries::alerts(&conn, &open).unwrap();
    assert_eq!(open.iter().map(|a| a.id).collect::<Vec<_>>(), vec![again]);
    let f = queries::product(&conn, p, t).unwrap().unwrap();
    let shop_figures = f.stores.iter().find(|s| s.store_id == shop).unwrap();
    assert!(shop_figures.low_stock);
    assert_eq!(shop_figures.reorder_point, Some(10));
    let other_figures = f.stores.iter().find(|s| s.store_id == other).unwrap();
    assert_eq!((other_figures.reorder_point, other_figures.oversells), (Some(3), 1));
    // What a webhook sends next: its kinds only, oldest first, after its cursor.
    let kinds = |k: &[&str]| k.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let next = queries::alerts_after(&conn, 0, &kinds(&["oversell"]), 10).unwrap();
    assert_eq!(next.iter().map(|a| a.id).collect::<Vec<_>>(), vec![oversold]);
    let next = queries::alerts_after(&conn, crossed, &kinds(&["low_stock", "low_stock_cleared"]), 1).unwrap();
    assert_eq!(next.iter().map(|a| a.id).collect::<Vec<_>>(), vec![restocked]);
    // Folding the same events again changes nothing (they are at or before the checkpoint).
    assert_eq!(apply_batch(&mut conn, &settings, &h.events).unwrap().events, 0);
    assert_eq!(queries::alerts(&conn, &all).unwrap().0.len(), 4);
}

/// Every derived row of the analytics file, in key order.
fn dump(path: &Path) -> Vec<String> {
    let conn = schema::open_read_only(path).unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT quote(store_id), day, quote(product_id), units, revenue_minor, expired, oversells FROM an_daily ORDER BY 1, 2, 3",
        "SELECT position, kind, quote(product_id), quote(store_id), available, reorder_point, occurred_at, cleared_by FROM an_alerts ORDER BY 1",
        "SELECT quote(product_id), quote(store_id), alert FROM an_low_stock ORDER BY 1, 2",
        "SELECT quote(product_id), quote(store_id), on_hand, reserved, available FROM stock ORDER BY 1, 2",
        "SELECT name, position FROM checkpoint ORDER BY 1",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |row| {
                Ok((0..columns)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_from_zero_gives_the_same_figures_as_the_live_worker() {
    shelfsync_common::server::telemetry::init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let (log_path, path) = (dir.path().join("events.sqlite"), dir.path().join("analytics.sqlite"));
    let log = EventStore::open(&log_path, EventBus::new()).unwrap();
    let (shop, p) = (StoreId::new_v7(), ProductId::new_v7());
    log.add_store(shop, "Shop".into()).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = spawn(log.clone(), &path, stopped).unwrap();
    let db = worker.db();
    db.set_time_zone(shop, "America/New_York".into()).await.unwrap();
    db.set_reorder_point(p, None, Some(30)).await.unwrap();
    // Given a live history: the catalog at the hub, then a store's uploads across days,
    let mut h = History::new();
    h.product(p, 1999, datetime!(2026-02-01 00:00 UTC));
    let register = h.events.remove(0);
    let catalog = crate::store::Command::Catalog(shelfsync_common::domain::catalog::CatalogCommand::RegisterProduct {
        product: match register.payload {
            EventPayload::ProductRegistered(product) => product,
            _ => unreachable!(),
        },
    });
    log.execute(crate::store::CommandRequest {
        command: catalog,
        expected: Default::default(),
        event_id: EventId::new_v7(),
        fingerprint: shelfsync_common::wire::fingerprint::Fingerprint::from_bytes([1; 16]),
        legacy_fingerprint: None,
        metadata: register.metadata.clone(),
    })
    .await
    .unwrap();
    let mut uploads = Vec::new();
    let mut day = datetime!(2026-02-01 03:30 UTC);
    let mut facts = History::new();
    facts.add(p, shop, 100, day);
    for n in 0..40u32 {
        facts.sell(p, shop, i64::from(n % 4 + 1), day);
        if n % 7 == 0 {
            facts.hold_and_commit(p, shop, 2, day + time::Duration::hours(1));
        }
        if n % 13 == 0 {
            let rid = ReservationId::new_v7();
            let stream = StreamId::inventory(p, shop);
            facts.push(
                stream,
                EventPayload::StockReserved {
                    reservation_id: rid,
                    quantity: 1,
                    expires_at: day,
                },
                day,
            );
            facts.push(
                stream,
                EventPayload::StockReleased {
                    reservation_id: rid,
                    quantity: 1,
                    reason: ReleaseReason::Expired,
                },
                day,
            );
        }
        if n == 30 {
            facts.add(p, shop, 60, day);
        }
        day += time::Duration::hours(9);
    }
    for event in facts.events {
        uploads.push(UploadEvent {
            event_id: event.event_id,
            stream: event.stream,
            event_type: event.payload.event_type().to_owned(),
            schema_version: 1,
            data: serde_json::from_str(&event.payload.data_json().unwrap()).unwrap(),
            metadata: EventMetadata {
                origin: Origin::Store(shop),
                ..event.metadata
            },
        });
    }
    for chunk in uploads.chunks(25) {
        let results = log.upload(shop, chunk.to_vec()).await.unwrap();
        assert!(
            results
                .iter()
                .all(|r| !matches!(r.outcome, shelfsync_common::wire::sync::UploadOutcome::Rejected { .. })),
            "{results:?}"
        );
    }
    // when the live worker has folded it all,
    let head = log.bus().head();
    let mut position = worker.position();
    tokio::time::timeout(std::time::Duration::from_secs(20), position.wait_for(|p| *p >= head))
        .await
        .unwrap()
        .unwrap();
    let now = datetime!(2026-02-20 12:00 UTC);
    let read = |path: PathBuf| {
        let conn = schema::open_read_only(&path).unwrap();
        let all = AlertFilter {
            limit: 1000,
            ..AlertFilter::default()
        };
        (
            queries::product(&conn, p, now).unwrap(),
            queries::store(&conn, shop, 28, now).unwrap(),
            queries::alerts(&conn, &all).unwrap(),
        )
    };
    let live = (read(path.clone()), dump(&path));
    stop.send(true).unwrap();
    worker.join().await;
    log.close().await;
    // then a rebuild from zero gives the same figures, row for row.
    let folded = rebuild(&log_path, &path, false).unwrap();
    assert_eq!(folded, head);
    let rebuilt = (read(path.clone()), dump(&path));
    assert_eq!(live, rebuilt);
    let alerts = &live.0 .2 .0;
    assert!(
        alerts.iter().any(|a| a.kind == "low_stock"),
        "the history crosses the reorder point"
    );
    assert!(live.0 .0.as_ref().unwrap().stores[0].expired_reservations > 0);
}
