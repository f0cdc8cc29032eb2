//! Store facts in the event log's batches (design section 7): each uploaded event is
//! authorized, deduplicated by id, checked by the facts policy (`store/facts.rs`) and
//! appended after whatever its stream holds, with `OversellDetected` after it when it
//! left the stream oversold. A reservation id open anywhere is not opened again.

use super::*;

impl Batch<'_> {
    /// Records every uploaded event of `store` that may be recorded; one result each.
    pub(super) fn upload(
        &mut self,
        tx: &Transaction<'_>,
        store: StoreId,
        events: Vec<UploadEvent>,
    ) -> rusqlite::Result<Vec<UploadResult>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let event_id = event.event_id;
            let outcome = self.record_fact(tx, store, event)?;
            results.push(UploadResult { event_id, outcome });
        }
        Ok(results)
    }

    /// Records one store fact after whatever its stream holds (never refused for stock),
    /// and `OversellDetected` after it when it left the stream oversold.
    pub(super) fn record_fact(
        &mut self,
        tx: &Transaction<'_>,
        store: StoreId,
        event: UploadEvent,
    ) -> rusqlite::Result<UploadOutcome> {
        if let Err(rejection) = facts::authorize(store, &event) {
            return Ok(self.rejected(store, rejection.reason, rejection.detail));
        }
        let fingerprint = Fingerprint::of_upload(&event);
        if let Some((earlier, original)) = self.earlier_write(tx, event.event_id)? {
            if earlier == fingerprint {
                return Ok(UploadOutcome::Duplicate {
                    position: original.position,
                    stream_version: original.stream_version,
                });
            }
            return Ok(self.rejected(
                store,
                "event_id_reused",
                "this event id was recorded with other content".into(),
            ));
        }
        let facts::Fact { payload, occurred_at } =
            match facts::check(store, &event, |product| self.product_registered(product)) {
                Ok(fact) => fact,
                Err(rejection) => return Ok(self.rejected(store, rejection.reason, rejection.detail)),
            };
        let metadata = EventMetadata {
            occurred_at,
            ..event.metadata
        };
        let stream = event.stream;
        if let EventPayload::StockReserved { reservation_id, .. } = &payload {
            // Open anywhere, this stream included: a second hold under one id would
            // silently replace the first (`apply` keys holds by id).
            if self.reservation_stream(reservation_id).is_some() {
                let detail = format!("reservation {reservation_id} is already open");
                return Ok(self.rejected(store, "reservation_id_in_use", detail));
            }
        }
        let mut state = self
            .stream(&stream)
            .map_or(StreamState::Inventory(InventoryState::default()), |h| h.state.clone());
        let StreamState::Inventory(before) = state.clone() else {
            return Ok(self.rejected(store, "wrong_store", "not an inventory stream".into()));
        };
        let recorded = self.append_event(
            tx,
            stream,
            &mut state,
            payload,
            (event.event_id, fingerprint),
            &metadata,
        )?;
        if let StreamState::Inventory(after) = &state {
            if let Some(oversell) = inventory::oversell_after(&before, after, event.event_id) {
                let metadata = EventMetadata {
                    origin: Origin::Hub,
                    actor: "hub:oversell-rule".into(),
                    correlation_id: metadata.correlation_id,
                    causation_id: Some(event.event_id.0),
                    occurred_at: self.now,
                    recorded_at: None,
                };
                self.append_event(
                    tx,
                    stream,
                    &mut state,
                    oversell,
                    (EventId::new_v7(), Fingerprint::from_bytes([0; 16])),
                    &metadata,
                )?;
                self.changes.stats.entry(store).or_default().oversells += 1;
                tracing::warn!(%stream, caused_by = %event.event_id, "oversell detected");
            }
        }
        self.set_head(stream, state);
        Ok(UploadOutcome::Appended {
            position: recorded.position,
            stream_version: recorded.stream_version,
        })
    }

    pub(super) fn rejected(&mut self, store: StoreId, reason: &'static str, detail: String) -> UploadOutcome {
        self.changes.stats.entry(store).or_default().rejected_uploads += 1;
        UploadOutcome::Rejected {
            reason: reason.into(),
            detail,
        }
    }
}
