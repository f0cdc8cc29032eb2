//! Taking the starting snapshot in the local store's batches: the confirmed state and
//! catalog replaced by the hub's, this store's pending events kept on top; and taking a
//! new one later (a re-sync, after the hub was restored from an older backup or by an
//! operator), with the own events the hub already counted in it confirmed.

use super::*;
use shelfsync_common::domain::allocation::Allocation;
use shelfsync_common::wire::sync::Resynced;

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

    /// A new snapshot over the existing state: the hub's positions of the events sent
    /// again recorded (`positions`; `reuploaded` of them were new to the hub), the
    /// confirmed state and catalog replaced, own events the hub acknowledged at or below
    /// the snapshot's position confirmed by it, every other unconfirmed event kept on top;
    /// the cursor set to the snapshot's position (lower than before when the hub was
    /// restored). One transaction: a re-sync cut short leaves the store as it was.
    pub(super) fn resync(
        &mut self,
        tx: &Transaction<'_>,
        snapshot: SnapshotResponse,
        (positions, reuploaded): (Vec<(EventId, u64)>, u64),
        reason: String,
    ) -> rusqlite::Result<()> {
        let position = snapshot.position;
        for (event_id, at) in positions {
            tx.prepare_cached(
                "UPDATE outbox SET hub_position = ?2 WHERE event_id = ?1 AND status IN ('acked', 'confirmed')",
            )?
            .execute(params![&event_id.as_bytes()[..], at as i64])?;
        }
        let counted: Vec<[u8; 16]> = tx
            .prepare_cached(&format!(
                "SELECT event_id FROM outbox WHERE {} AND status = 'acked' AND hub_position <= ?1",
                crate::store::UNCONFIRMED
            ))?
            .query_map([position as i64], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in counted {
            let event_id = EventId::from_bytes(id);
            self.drop_pending(tx, event_id)?;
            tx.prepare_cached("UPDATE outbox SET status = 'confirmed' WHERE event_id = ?1")?
                .execute([&id[..]])?;
        }
        let pending = self.view.outbox().0;
        self.bootstrap(tx, snapshot)?;
        let mut sync = self.sync();
        sync.cursor = position;
        sync.hub_head = position;
        sync.anchor = None;
        sync.resynced = Some(Resynced {
            at: self.now,
            reuploaded,
            position,
            reason,
        });
        self.set_sync(sync);
        tracing::info!(
            position,
            reuploaded,
            pending,
            "re-seeded from the hub's snapshot; unconfirmed events kept"
        );
        Ok(())
    }
}
