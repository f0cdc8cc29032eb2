//! What the sync worker writes in the local store's batches: the hub's events (an own
//! event coming back leaves the pending set as it is confirmed; each changed stream's
//! confirmed state is written once per batch, in `finish`), the answers to uploads, and
//! an operator's retry or discard of a quarantined event.

use super::*;

impl Batch<'_> {
    pub(super) fn apply_hub(
        &mut self,
        tx: &Transaction<'_>,
        events: Vec<EventEnvelope>,
        cursor: u64,
        head: u64,
    ) -> rusqlite::Result<ApplyReport> {
        let mut sync = self.sync();
        let mut report = ApplyReport::default();
        for event in events {
            if event.position <= sync.cursor {
                continue;
            }
            sync.cursor = event.position;
            sync.anchor = Some((event.position, event.event_id));
            match event.stream.store_id {
                Some(store) if store == self.view.store_id => {
                    report.confirmed_own += usize::from(self.confirm(tx, event)?);
                    report.applied += 1;
                }
                Some(_) => {}
                None => {
                    if let EventPayload::ProductRegistered(product) | EventPayload::ProductUpdated(product) =
                        &event.payload
                    {
                        let view = ProductView {
                            product: product.clone(),
                            version: event.stream_version,
                        };
                        tx.prepare_cached(
                            "INSERT INTO catalog (product_id, sku, name, price_minor, version) VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT (product_id) DO UPDATE SET sku = excluded.sku, name = excluded.name,
                               price_minor = excluded.price_minor, version = excluded.version",
                        )?
                        .execute(params![&product.id.as_bytes()[..], product.sku, product.name, product.price_minor as i64, event.stream_version as i64])?;
                        self.put_product(view);
                        report.applied += 1;
                    }
                }
            }
        }
        sync.cursor = sync.cursor.max(cursor);
        sync.hub_head = sync.hub_head.max(head).max(sync.cursor);
        sync.last_sync_at = Some(self.now);
        report.cursor = sync.cursor;
        self.set_sync(sync);
        Ok(report)
    }

    /// Applies an event of this store's stream to the confirmed state; returns whether it
    /// was one of ours leaving the pending set.
    pub(super) fn confirm(&mut self, tx: &Transaction<'_>, event: EventEnvelope) -> rusqlite::Result<bool> {
        let product = event.stream.product_id;
        let have = self.stream(product).map_or(0, |s| s.confirmed().version);
        if event.stream_version <= have {
            return Ok(false);
        }
        if event.stream_version != have + 1 {
            tracing::warn!(stream = %event.stream, have, got = event.stream_version, "stream version gap in the hub feed");
        }
        let own = self.edit(
            product,
            StreamOp::Confirm {
                event_id: event.event_id,
                payload: event.payload,
                by: event.metadata.origin.into(),
                version: event.stream_version,
            },
        );
        if own || self.recorded_ids.contains(&event.event_id) {
            tx.prepare_cached("UPDATE outbox SET status = 'confirmed', hub_position = ?2 WHERE event_id = ?1")?
                .execute(params![&event.event_id.as_bytes()[..], event.position as i64])?;
        }
        self.confirmed.insert(product);
        Ok(own)
    }

    pub(super) fn acknowledge(&mut self, tx: &Transaction<'_>, results: Vec<UploadResult>) -> rusqlite::Result<()> {
        for result in results {
            let id = &result.event_id.as_bytes()[..];
            match result.outcome {
                UploadOutcome::Appended { position, .. } | UploadOutcome::Duplicate { position, .. } => {
                    tx.prepare_cached("UPDATE outbox SET status = 'acked', hub_position = ?2 WHERE event_id = ?1 AND status = 'pending'")?
                        .execute(params![id, position as i64])?;
                }
                UploadOutcome::Rejected { reason, detail } => {
                    let changed = tx
                        .prepare_cached(
                            "UPDATE outbox SET status = 'quarantined', reject_reason = ?2, reject_detail = ?3
                             WHERE event_id = ?1 AND status IN ('pending', 'acked')",
                        )?
                        .execute(params![id, reason, detail])?;
                    if changed > 0 {
                        tracing::warn!(event_id = %result.event_id, %reason, %detail, "the hub rejected an event; quarantined");
                        self.drop_pending(tx, result.event_id)?;
                        self.count_quarantined(1);
                    }
                }
            }
        }
        let mut sync = self.sync();
        sync.last_sync_at = Some(self.now);
        self.set_sync(sync);
        Ok(())
    }

    /// Removes an event from the pending set of whichever stream holds it.
    pub(super) fn drop_pending(&mut self, tx: &Transaction<'_>, event_id: EventId) -> rusqlite::Result<()> {
        let product: Option<[u8; 16]> = tx
            .prepare_cached("SELECT product_id FROM outbox WHERE event_id = ?1")?
            .query_row([&event_id.as_bytes()[..]], |row| row.get(0))
            .optional()?;
        if let Some(product) = product.map(ProductId::from_bytes) {
            self.edit(product, StreamOp::RemovePending(event_id));
        }
        Ok(())
    }

    pub(super) fn quarantine(
        &mut self,
        tx: &Transaction<'_>,
        event_id: EventId,
        action: QuarantineAction,
    ) -> rusqlite::Result<Result<(), LocalError>> {
        let status = match action {
            QuarantineAction::Retry => "pending",
            QuarantineAction::Discard => "discarded",
        };
        let changed = tx
            .prepare_cached("UPDATE outbox SET status = ?2, reject_reason = NULL, reject_detail = NULL WHERE event_id = ?1 AND status = 'quarantined'")?
            .execute(params![&event_id.as_bytes()[..], status])?;
        if changed == 0 {
            return Ok(Err(LocalError::NotQuarantined(event_id)));
        }
        self.count_quarantined(-1);
        if action == QuarantineAction::Retry {
            let row = tx
                .prepare_cached("SELECT seq, product_id, event_type, schema_version, data, recorded_at FROM outbox WHERE event_id = ?1")?
                .query_row([&event_id.as_bytes()[..]], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, [u8; 16]>(1)?, row.get::<_, String>(2)?, row.get::<_, u16>(3)?, row.get::<_, String>(4)?, row.get::<_, String>(5)?))
                })?;
            let (seq, product, event_type, schema_version, data, recorded_at) = row;
            let payload = EventPayload::decode(&event_type, schema_version, from_json(&data)?)
                .map_err(|e| conversion(e.to_string()))?;
            let product = ProductId::from_bytes(product);
            let pending = PendingEvent {
                seq: seq as u64,
                event_id,
                payload,
                recorded_at: time_text::decode(&recorded_at)?,
            };
            self.edit(product, StreamOp::RestorePending(pending));
        }
        Ok(Ok(()))
    }

    /// Events quarantined (`delta` > 0) or taken out of quarantine.
    fn count_quarantined(&mut self, delta: i64) {
        self.view.quarantined = self.view.quarantined.saturating_add_signed(delta);
        self.changes.quarantined += delta;
    }
}
