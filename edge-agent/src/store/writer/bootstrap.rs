//! Taking the starting snapshot in the local store's batches: the confirmed state and
//! catalog replaced by the hub's, this store's pending events kept on top.

use super::*;
use shelfsync_common::domain::allocation::Allocation;

impl Batch<'_> {
    pub(super) fn bootstrap(&mut self, tx: &Transaction<'_>, snapshot: SnapshotResponse) -> rusqlite::Result<()> {
        tx.execute_batch("DELETE FROM confirmed_streams; DELETE FROM catalog;")?;
        let mut streams: HashMap<ProductId, InventoryState> = HashMap::new();
        for row in &snapshot.stock {
            let state = streams.entry(row.product_id).or_default();
            state.on_hand = row.on_hand;
            state.version = row.version;
            state.allocation = row.allocation.map(|a| Allocation {
                policy: a.policy,
                hub_share: a.hub_share,
            });
        }
        for hold in &snapshot.reservations {
            // The side that made a hold expires it: this store's own holds stay its to expire.
            if hold.origin == Origin::Store(self.view.store_id) {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO own_reservations (reservation_id, product_id) VALUES (?1, ?2)",
                )?
                .execute(params![
                    &hold.reservation_id.as_bytes()[..],
                    &hold.product_id.as_bytes()[..]
                ])?;
                self.own_reservation(hold.reservation_id);
            }
            let reservation = Reservation {
                quantity: hold.quantity,
                expires_at: hold.expires_at,
                hub_share: hold.hub_share,
            };
            streams
                .entry(hold.product_id)
                .or_default()
                .reservations
                .insert(hold.reservation_id, reservation);
        }
        // The snapshot replaces the confirmed state and the catalog wholesale; events
        // recorded here stay pending on top of it.
        let known: HashSet<ProductId> = self.view.streams().keys().chain(streams.keys()).copied().collect();
        for product in known {
            let confirmed = streams.remove(&product).unwrap_or_default();
            if confirmed != InventoryState::default() {
                tx.prepare_cached("INSERT INTO confirmed_streams (product_id, state) VALUES (?1, ?2)")?
                    .execute(params![&product.as_bytes()[..], to_json(&confirmed)?])?;
            }
            self.edit(product, StreamOp::ReplaceConfirmed(confirmed));
        }
        // Every confirmed state was written just now.
        self.confirmed.clear();
        self.changes.replace_catalog = true;
        self.view.catalog.clear();
        self.view.skus.clear();
        for product in &snapshot.catalog {
            let p = &product.product;
            tx.prepare_cached(
                "INSERT INTO catalog (product_id, sku, name, price_minor, version) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                &p.id.as_bytes()[..],
                p.sku,
                p.name,
                p.price_minor as i64,
                product.version as i64
            ])?;
        }
        self.changes.catalog.clear();
        for product in snapshot.catalog {
            self.put_product(product);
        }
        let mut sync = self.sync();
        sync.cursor = snapshot.position;
        sync.hub_head = sync.hub_head.max(snapshot.position);
        sync.bootstrapped = true;
        sync.last_sync_at = Some(self.now);
        self.set_sync(sync);
        tracing::info!(position = snapshot.position, "bootstrapped from the hub's snapshot");
        Ok(())
    }
}
