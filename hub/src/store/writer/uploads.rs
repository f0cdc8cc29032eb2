//! Store facts in the event log's batches (design section 7): each uploaded event is
//! authorized, deduplicated by id, checked by the facts policy (`store/facts.rs`) and
//! appended after whatever its stream holds, with `OversellDetected` after it when it
//! left the stream oversold. A reservation id open anywhere is not opened again.
//!
//! The events arrive [prepared](facts::prepare): checked, fingerprinted and encoded on
//! the request's thread. Here runs only what needs the writer's state. The dedupe by id
//! costs nothing extra on the common path: a new event's insert finds out itself
//! (`ON CONFLICT (event_id) DO NOTHING`), and only an event about to be refused, or
//! whose insert met its id, looks up the earlier write, so that a retry is answered
//! `duplicate` whatever the rules would now say of it.

use super::*;

impl<R: LogRows> Batch<'_, R> {
    /// Records every uploaded event of `store` that may be recorded; one result each.
    pub(super) fn upload(&mut self, store: StoreId, events: Vec<Prepared>) -> Result<Vec<UploadResult>, R::Error> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let event_id = event.event_id;
            let outcome = self.record_fact(store, event)?;
            results.push(UploadResult { event_id, outcome });
        }
        Ok(results)
    }

    /// Records one store fact after whatever its stream holds (never refused for stock),
    /// and `OversellDetected` after it when it left the stream oversold.
    pub(super) fn record_fact(&mut self, store: StoreId, event: Prepared) -> Result<UploadOutcome, R::Error> {
        if let facts::Verdict::Unauthorized(rejection) = &event.verdict {
            return Ok(self.rejected(store, rejection.reason, rejection.detail.clone()));
        }
        let (event_id, stream, fingerprint) = (event.event_id, event.stream, event.fingerprint);
        let identity = (event_id, fingerprint);
        let facts::Fact {
            payload,
            metadata,
            columns,
            ..
        } = match event.into_fact(|product| self.product_registered(product)) {
            Ok(fact) => fact,
            Err(rejection) => return self.refuse(store, identity, rejection.reason, rejection.detail),
        };
        if let EventPayload::StockReserved { reservation_id, .. } = &payload {
            // Open anywhere, this stream included: a second hold under one id would
            // silently replace the first (`apply` keys holds by id).
            if self.reservation_stream(reservation_id).is_some() {
                let detail = format!("reservation {reservation_id} is already open");
                return self.refuse(store, identity, "reservation_id_in_use", detail);
            }
        }
        let mut state = self
            .stream(&stream)
            .map_or(StreamState::Inventory(InventoryState::default()), |h| h.state.clone());
        let StreamState::Inventory(before) = &state else {
            return self.refuse(store, identity, "wrong_store", "not an inventory stream".into());
        };
        let available_before = before.available();
        let correlation_id = metadata.correlation_id;
        let appended = self.append_event(
            stream,
            &mut state,
            (payload, metadata, Some(columns)),
            identity,
            IdCheck::OnInsert,
        )?;
        let Some(recorded) = appended else {
            // Its id is in the log: a retry (or a reused id), answered as such.
            return self
                .earlier(store, identity)?
                .ok_or_else(|| R::fault(format!("event {event_id} was neither written nor found")));
        };
        if let StreamState::Inventory(after) = &state {
            if let Some(oversell) = inventory::oversell_after(available_before, after, event_id) {
                let metadata = EventMetadata {
                    origin: Origin::Hub,
                    actor: "hub:oversell-rule".into(),
                    correlation_id,
                    causation_id: Some(event_id.0),
                    occurred_at: self.now,
                    recorded_at: None,
                };
                self.append_event(
                    stream,
                    &mut state,
                    (oversell, metadata, None),
                    (EventId::new_v7(), Fingerprint::from_bytes([0; 16])),
                    IdCheck::LookedUp,
                )?;
                self.changes.stats.entry(store).or_default().oversells += 1;
                tracing::warn!(%stream, caused_by = %event_id, "oversell detected");
            }
        }
        self.set_head(stream, state);
        Ok(UploadOutcome::Appended {
            position: recorded.position,
            stream_version: recorded.stream_version,
        })
    }

    /// The answer for an event the rules refuse: `duplicate` (or `event_id_reused`) when
    /// its id was recorded before, else the refusal.
    fn refuse(
        &mut self,
        store: StoreId,
        identity: (EventId, Fingerprint),
        reason: &'static str,
        detail: String,
    ) -> Result<UploadOutcome, R::Error> {
        match self.earlier(store, identity)? {
            Some(answer) => Ok(answer),
            None => Ok(self.rejected(store, reason, detail)),
        }
    }

    /// The answer for an event whose id was recorded before, if it was.
    fn earlier(
        &mut self,
        store: StoreId,
        (event_id, fingerprint): (EventId, Fingerprint),
    ) -> Result<Option<UploadOutcome>, R::Error> {
        let Some((earlier, original)) = self.rows.earlier_write(event_id)? else {
            return Ok(None);
        };
        if earlier == fingerprint {
            return Ok(Some(UploadOutcome::Duplicate {
                position: original.position,
                stream_version: original.stream_version,
            }));
        }
        Ok(Some(self.rejected(
            store,
            "event_id_reused",
            "this event id was recorded with other content".into(),
        )))
    }

    pub(super) fn rejected(&mut self, store: StoreId, reason: &'static str, detail: String) -> UploadOutcome {
        self.changes.stats.entry(store).or_default().rejected_uploads += 1;
        UploadOutcome::Rejected {
            reason: reason.into(),
            detail,
        }
    }
}
