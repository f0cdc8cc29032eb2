//! Strict commands in the event log's batches (web, apps, back office): idempotency by
//! event id, references and the expected version checked against the heads, then the
//! domain's `decide`.

use super::*;
use shelfsync_common::domain::allocation::Decider;

impl<R: LogRows> Batch<'_, R> {
    pub(super) fn command(&mut self, request: CommandRequest) -> Result<Result<WriteResult, WriteError>, R::Error> {
        if let Some((fingerprint, original)) = self.rows.earlier_write(request.event_id)? {
            if !request.matches_stored(fingerprint) {
                return Ok(Err(WriteError::IdempotencyConflict(request.event_id)));
            }
            return Ok(Ok(WriteResult {
                stream_version: original.stream_version,
                position: original.position,
                events: vec![original],
                duplicate: true,
            }));
        }
        let (stream, decided) = match self.decide(&request) {
            Ok(decided) => decided,
            Err(error) => return Ok(Err(error)),
        };
        self.append(stream, decided, &request).map(Ok)
    }

    /// Checks references and the expected version, then runs the domain's `decide`.
    pub(super) fn decide(
        &self,
        request: &CommandRequest,
    ) -> Result<(StreamId, (StreamState, Vec<EventPayload>)), WriteError> {
        let (stream, state) = match &request.command {
            Command::Catalog(command) => {
                let product = match command {
                    CatalogCommand::RegisterProduct { product } | CatalogCommand::UpdateProduct { product } => product,
                };
                if let Some(owner) = self.sku_owner(&product.sku).filter(|owner| *owner != product.id) {
                    return Err(WriteError::SkuTaken {
                        sku: product.sku.clone(),
                        owner,
                    });
                }
                let stream = StreamId::catalog(product.id);
                let state = self
                    .stream(&stream)
                    .map_or(StreamState::Catalog(CatalogState::default()), |h| h.state.clone());
                (stream, state)
            }
            Command::Inventory { target, .. } => {
                let stream = match *target {
                    InventoryTarget::Stream(product, store) => StreamId::inventory(product, store),
                    InventoryTarget::Reservation(id) => {
                        self.reservation_stream(&id).ok_or(WriteError::UnknownReservation(id))?
                    }
                };
                let store = stream.store_id.unwrap_or(StoreId::from_bytes([0; 16]));
                if !self.store_known(store) {
                    return Err(WriteError::UnknownStore(store));
                }
                if !self.product_registered(stream.product_id) {
                    return Err(DomainError::ProductNotRegistered(stream.product_id).into());
                }
                let state = self
                    .stream(&stream)
                    .map_or(StreamState::Inventory(InventoryState::default()), |h| h.state.clone());
                (stream, state)
            }
        };
        if !request.expected.admits(state.version()) {
            return Err(WriteError::VersionConflict {
                stream,
                expected: request.expected,
                current: state.version(),
            });
        }
        let events = match (&request.command, &state) {
            (Command::Catalog(command), StreamState::Catalog(s)) => catalog::decide(s, command)?,
            (Command::Inventory { command, .. }, StreamState::Inventory(s)) => {
                // Reservations are addressed by id alone (the index maps an id to one
                // stream), so an id open on another stream must not be opened here too.
                if let InventoryCommand::ReserveStock { reservation_id, .. } = command {
                    if self
                        .reservation_stream(reservation_id)
                        .is_some_and(|open| open != stream)
                    {
                        return Err(DomainError::ReservationExists(*reservation_id).into());
                    }
                }
                inventory::decide(s, command, Decider::Hub)?
            }
            _ => {
                return Err(WriteError::Storage(format!(
                    "stream {stream} holds another kind of state"
                )))
            }
        };
        Ok((stream, (state, events)))
    }
}
