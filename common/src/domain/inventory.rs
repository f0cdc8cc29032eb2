//! The inventory aggregate: the stock of one product at one store.
//!
//! [`decide`] is the strict rule book for commands (a till at the edge, a web shop at
//! the hub): it never lets `available` drop below zero. [`apply`] is the fold: it accepts
//! every recorded fact, including a store's offline sale that the hub records after the
//! stock was already gone, so `on_hand` and `available` may be negative after `apply`
//! (the hub then records `OversellDetected`, see [`oversell_after`]).
//!
//! A stream may carry an allocation (see [`crate::domain::allocation`]): then `decide`
//! also asks who decides ([`Decider`]) and `apply` who recorded the fact ([`Side`]),
//! because each side may consume and give away only its own share.

use crate::domain::allocation::{self, Allocation, AllocationPolicy, Decider, Share, Side};
use crate::domain::error::DomainError;
use crate::domain::event::{EventPayload, ReleaseReason};
use crate::domain::ids::{EventId, ReservationId};
use crate::domain::quantity::StockQuantity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The largest magnitude of one stock adjustment.
pub const MAX_ADJUSTMENT: i64 = 1_000_000;
/// The longest free-text reason.
pub const MAX_REASON_LEN: usize = 200;

/// One open hold on stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reservation {
    /// Units held.
    pub quantity: u32,
    /// When the hold lapses unless committed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    /// Made at the hub from the hub's share of an allocation: released, its units go back
    /// to that share.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hub_share: bool,
}

/// The state of one inventory stream, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryState {
    /// Units physically in the store (may be negative only through recorded facts).
    pub on_hand: i64,
    /// Open holds by id.
    pub reservations: BTreeMap<ReservationId, Reservation>,
    /// Number of events applied (0 = the stream does not exist yet).
    pub version: u64,
    /// The split between the hub's and the store's shares, when the hub set a policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Allocation>,
}

impl InventoryState {
    /// Units held by open reservations.
    pub fn reserved(&self) -> i64 {
        self.reservations
            .values()
            .fold(0i64, |sum, r| sum.saturating_add(i64::from(r.quantity)))
    }

    /// Units that can still be promised: on hand minus reserved.
    pub fn available(&self) -> i64 {
        self.on_hand.saturating_sub(self.reserved())
    }

    /// Open reservations whose expiry is at or before `now`.
    pub fn expired_reservations(&self, now: OffsetDateTime) -> Vec<ReservationId> {
        self.reservations
            .iter()
            .filter(|(_, r)| r.expires_at <= now)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// A request to change the stock of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum InventoryCommand {
    /// A delivery arrived.
    AddStock {
        /// Units delivered.
        quantity: StockQuantity,
    },
    /// Hold units for a customer.
    ReserveStock {
        /// The client's id for the hold.
        reservation_id: ReservationId,
        /// Units to hold.
        quantity: StockQuantity,
        /// When the hold lapses.
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// Give a hold back.
    ReleaseStock {
        /// The hold.
        reservation_id: ReservationId,
        /// Why.
        reason: ReleaseReason,
    },
    /// Turn a hold into a sale.
    CommitReservation {
        /// The hold.
        reservation_id: ReservationId,
    },
    /// Correct the count.
    AdjustStock {
        /// Signed change in units.
        delta: i64,
        /// Why (stock take, damage, theft...).
        reason: String,
    },
    /// Set how the hub's share is kept (the hub only).
    SetAllocation {
        /// The policy.
        policy: AllocationPolicy,
    },
    /// Give units of one's own share to the other side.
    TransferAllocation {
        /// Who receives them.
        to: Share,
        /// Units moved.
        quantity: StockQuantity,
    },
}

/// Decides which events a command produces against the current state, or why it may not.
/// `by` says who decides: with an allocation, each side consumes only its own share.
pub fn decide(
    state: &InventoryState,
    command: &InventoryCommand,
    by: Decider,
) -> Result<Vec<EventPayload>, DomainError> {
    allocation::check(state, command, by)?;
    let event = match command {
        InventoryCommand::AddStock { quantity } => EventPayload::StockAdded {
            quantity: quantity.get(),
        },
        InventoryCommand::ReserveStock {
            reservation_id,
            quantity,
            expires_at,
        } => {
            if state.reservations.contains_key(reservation_id) {
                return Err(DomainError::ReservationExists(*reservation_id));
            }
            ensure_available(state, quantity.as_i64())?;
            EventPayload::StockReserved {
                reservation_id: *reservation_id,
                quantity: quantity.get(),
                expires_at: *expires_at,
            }
        }
        InventoryCommand::ReleaseStock { reservation_id, reason } => {
            let held = open_reservation(state, reservation_id)?;
            EventPayload::StockReleased {
                reservation_id: *reservation_id,
                quantity: held.quantity,
                reason: *reason,
            }
        }
        InventoryCommand::CommitReservation { reservation_id } => {
            let held = open_reservation(state, reservation_id)?;
            EventPayload::ReservationCommitted {
                reservation_id: *reservation_id,
                quantity: held.quantity,
            }
        }
        InventoryCommand::AdjustStock { delta, reason } => {
            validate_adjustment(*delta)?;
            validate_reason(reason)?;
            if *delta < 0 {
                // In range, so the magnitude fits (i64::MIN has none).
                ensure_available(state, delta.unsigned_abs() as i64)?;
            }
            EventPayload::StockAdjusted {
                delta: *delta,
                reason: reason.clone(),
            }
        }
        InventoryCommand::SetAllocation { policy } => EventPayload::AllocationSet { policy: *policy },
        InventoryCommand::TransferAllocation { to, quantity } => EventPayload::AllocationTransferred {
            to: *to,
            quantity: quantity.get(),
        },
    };
    Ok(vec![event])
}

/// Checks an adjustment's delta: non-zero and within ±[`MAX_ADJUSTMENT`]. Compares
/// magnitudes without negating, so `i64::MIN` (whose negation overflows) is refused too.
pub fn validate_adjustment(delta: i64) -> Result<(), DomainError> {
    if delta == 0 {
        Err(DomainError::ZeroAdjustment)
    } else if delta.unsigned_abs() > MAX_ADJUSTMENT.unsigned_abs() {
        Err(DomainError::AdjustmentOutOfRange)
    } else {
        Ok(())
    }
}

/// The OpenAPI schema of an adjustment's `delta`: a non-zero integer within
/// ±[`MAX_ADJUSTMENT`].
pub fn adjustment_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    OneOfBuilder::new()
        .item(range(1, MAX_ADJUSTMENT))
        .item(range(-MAX_ADJUSTMENT, -1))
        .description(Some(
            "units added (positive) or removed (negative): not zero, at most 1000000 either way",
        ))
        .into()
}

/// Checks a free-text reason.
pub fn validate_reason(reason: &str) -> Result<(), DomainError> {
    if reason.trim().is_empty() || reason.chars().count() > MAX_REASON_LEN || reason.chars().any(char::is_control) {
        Err(DomainError::InvalidReason)
    } else {
        Ok(())
    }
}

fn ensure_available(state: &InventoryState, requested: i64) -> Result<(), DomainError> {
    let available = state.available();
    if requested > available {
        Err(DomainError::InsufficientStock { requested, available })
    } else {
        Ok(())
    }
}

fn open_reservation<'a>(state: &'a InventoryState, id: &ReservationId) -> Result<&'a Reservation, DomainError> {
    state.reservations.get(id).ok_or(DomainError::ReservationNotFound(*id))
}

/// Folds one recorded event into the state. Total: it never fails, so that every fact a
/// store recorded can be replayed. Catalog events do not touch inventory state (they
/// live on their own streams) but still count as applied. `by` (the side that recorded
/// the event) matters only on a stream with an allocation: a hub reservation draws on the
/// hub's share, and a delivery recorded at the hub tops that share up to its target.
pub fn apply(state: &mut InventoryState, event: &EventPayload, by: Side) {
    let at_hub = by == Side::Hub;
    let mut hub_delta = 0i64;
    match event {
        EventPayload::StockAdded { quantity } => {
            state.on_hand = state.on_hand.saturating_add(i64::from(*quantity));
            if at_hub {
                hub_delta = allocation::top_up(state, i64::from(*quantity));
            }
        }
        EventPayload::StockReserved {
            reservation_id,
            quantity,
            expires_at,
        } => {
            let hub_share = at_hub && state.allocation.is_some();
            if hub_share {
                hub_delta = -i64::from(*quantity);
            }
            state.reservations.insert(
                *reservation_id,
                Reservation {
                    quantity: *quantity,
                    expires_at: *expires_at,
                    hub_share,
                },
            );
        }
        EventPayload::StockReleased { reservation_id, .. } => {
            if let Some(released) = state.reservations.remove(reservation_id) {
                if released.hub_share {
                    hub_delta = i64::from(released.quantity);
                }
            }
        }
        EventPayload::ReservationCommitted {
            reservation_id,
            quantity,
        } => {
            state.reservations.remove(reservation_id);
            state.on_hand = state.on_hand.saturating_sub(i64::from(*quantity));
        }
        EventPayload::StockAdjusted { delta, .. } => {
            state.on_hand = state.on_hand.saturating_add(*delta);
            if at_hub {
                hub_delta = if *delta > 0 {
                    allocation::top_up(state, *delta)
                } else {
                    *delta
                };
            }
        }
        EventPayload::AllocationSet { policy } => {
            if *policy == AllocationPolicy::None {
                state.allocation = None;
                state.reservations.values_mut().for_each(|r| r.hub_share = false);
            } else {
                let hub_share = state.allocation.map_or(0, |a| a.hub_share);
                state.allocation = Some(Allocation {
                    policy: *policy,
                    hub_share,
                });
            }
        }
        EventPayload::AllocationTransferred { to, quantity } => {
            hub_delta = match to {
                Share::Hub => i64::from(*quantity),
                Share::Store => -i64::from(*quantity),
            };
        }
        EventPayload::OversellDetected { .. }
        | EventPayload::ProductRegistered(_)
        | EventPayload::ProductUpdated(_) => {}
    }
    if let Some(allocation) = state.allocation.as_mut() {
        allocation.hub_share = allocation.hub_share.saturating_add(hub_delta);
    }
    state.version = state.version.saturating_add(1);
}

/// After a recorded fact from a store, whether the hub must record `OversellDetected`:
/// only when that fact lowered `available` (from `available_before`) and left it below
/// zero. The caller keeps only the figure from before, not a copy of the whole state.
pub fn oversell_after(available_before: i64, after: &InventoryState, caused_by: EventId) -> Option<EventPayload> {
    let available = after.available();
    (available < 0 && available < available_before).then(|| EventPayload::OversellDetected {
        caused_by,
        on_hand: after.on_hand,
        reserved: after.reserved(),
        available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const LATER: OffsetDateTime = datetime!(2030-01-01 00:00 UTC);

    fn qty(n: i64) -> StockQuantity {
        StockQuantity::new(n).unwrap()
    }

    fn rid(n: u8) -> ReservationId {
        ReservationId::from_bytes([n; 16])
    }

    /// Given these commands already happened, when `command` is decided, then...
    fn given(history: &[InventoryCommand]) -> InventoryState {
        let mut state = InventoryState::default();
        for command in history {
            for event in decide(&state, command, Decider::Hub).expect("history must be valid") {
                apply(&mut state, &event, Side::Hub);
            }
        }
        state
    }

    fn reserve(id: u8, n: i64) -> InventoryCommand {
        InventoryCommand::ReserveStock {
            reservation_id: rid(id),
            quantity: qty(n),
            expires_at: LATER,
        }
    }

    fn add(n: i64) -> InventoryCommand {
        InventoryCommand::AddStock { quantity: qty(n) }
    }

    #[test]
    fn adding_stock_raises_on_hand_and_available() {
        let state = given(&[add(5), add(3)]);
        assert_eq!((state.on_hand, state.available(), state.version), (8, 8, 2));
    }

    #[test]
    fn reserving_more_than_available_is_refused() {
        let state = given(&[add(5), reserve(1, 4)]);
        assert_eq!(
            decide(&state, &reserve(2, 2), Decider::Hub),
            Err(DomainError::InsufficientStock {
                requested: 2,
                available: 1
            })
        );
    }

    #[test]
    fn reserving_holds_units_without_moving_on_hand() {
        let state = given(&[add(5), reserve(1, 4)]);
        assert_eq!((state.on_hand, state.reserved(), state.available()), (5, 4, 1));
    }

    #[test]
    fn a_reservation_id_cannot_be_opened_twice() {
        let state = given(&[add(5), reserve(1, 1)]);
        assert_eq!(
            decide(&state, &reserve(1, 1), Decider::Hub),
            Err(DomainError::ReservationExists(rid(1)))
        );
    }

    #[test]
    fn releasing_gives_the_units_back_with_the_reason() {
        let state = given(&[add(5), reserve(1, 4)]);
        let cmd = InventoryCommand::ReleaseStock {
            reservation_id: rid(1),
            reason: ReleaseReason::Expired,
        };
        let events = decide(&state, &cmd, Decider::Hub).unwrap();
        assert_eq!(
            events,
            vec![EventPayload::StockReleased {
                reservation_id: rid(1),
                quantity: 4,
                reason: ReleaseReason::Expired
            }]
        );
        let after = given(&[add(5), reserve(1, 4), cmd]);
        assert_eq!((after.on_hand, after.available()), (5, 5));
    }

    #[test]
    fn committing_is_the_sale_on_hand_and_reserved_both_drop() {
        let state = given(&[
            add(5),
            reserve(1, 2),
            InventoryCommand::CommitReservation { reservation_id: rid(1) },
        ]);
        assert_eq!((state.on_hand, state.reserved(), state.available()), (3, 0, 3));
    }

    #[test]
    fn release_or_commit_of_an_unknown_reservation_is_refused() {
        let state = given(&[add(5)]);
        let commit = InventoryCommand::CommitReservation { reservation_id: rid(9) };
        let release = InventoryCommand::ReleaseStock {
            reservation_id: rid(9),
            reason: ReleaseReason::Cancelled,
        };
        assert_eq!(
            decide(&state, &commit, Decider::Hub),
            Err(DomainError::ReservationNotFound(rid(9)))
        );
        assert_eq!(
            decide(&state, &release, Decider::Hub),
            Err(DomainError::ReservationNotFound(rid(9)))
        );
    }

    #[test]
    fn a_committed_reservation_cannot_be_committed_again() {
        let commit = InventoryCommand::CommitReservation { reservation_id: rid(1) };
        let state = given(&[add(5), reserve(1, 2), commit.clone()]);
        assert_eq!(
            decide(&state, &commit, Decider::Hub),
            Err(DomainError::ReservationNotFound(rid(1)))
        );
    }

    #[test]
    fn adjustments_are_signed_and_may_not_cut_into_holds() {
        let adjust = |delta: i64| InventoryCommand::AdjustStock {
            delta,
            reason: "stock take".into(),
        };
        let state = given(&[add(5), reserve(1, 3), adjust(1)]);
        assert_eq!(state.on_hand, 6);
        assert_eq!(
            decide(&state, &adjust(-4), Decider::Hub),
            Err(DomainError::InsufficientStock {
                requested: 4,
                available: 3
            })
        );
        assert_eq!(
            decide(&state, &adjust(0), Decider::Hub),
            Err(DomainError::ZeroAdjustment)
        );
        assert_eq!(
            decide(&state, &adjust(MAX_ADJUSTMENT + 1), Decider::Hub),
            Err(DomainError::AdjustmentOutOfRange)
        );
        assert_eq!(
            decide(&state, &adjust(-MAX_ADJUSTMENT), Decider::Hub).map(|_| ()),
            Err(DomainError::InsufficientStock {
                requested: MAX_ADJUSTMENT,
                available: 3
            })
        );
        let blank = InventoryCommand::AdjustStock {
            delta: 1,
            reason: " ".into(),
        };
        assert_eq!(decide(&state, &blank, Decider::Hub), Err(DomainError::InvalidReason));
        assert_eq!(given(&[add(5), reserve(1, 3), adjust(-2)]).available(), 0);
    }

    #[test]
    fn extreme_deltas_are_refused_without_overflow() {
        // i64::MIN has no positive counterpart: `abs()` and negation wrap (or panic).
        let state = given(&[add(5)]);
        for delta in [i64::MIN, i64::MIN + 1, i64::MAX, -MAX_ADJUSTMENT - 1] {
            let command = InventoryCommand::AdjustStock {
                delta,
                reason: "count".into(),
            };
            assert_eq!(
                decide(&state, &command, Decider::Hub),
                Err(DomainError::AdjustmentOutOfRange),
                "{delta}"
            );
            assert_eq!(
                validate_adjustment(delta),
                Err(DomainError::AdjustmentOutOfRange),
                "{delta}"
            );
        }
    }

    #[test]
    fn the_fold_saturates_instead_of_wrapping() {
        // Recorded facts are folded whatever they say; the fold must stay total.
        let mut state = InventoryState {
            on_hand: i64::MAX - 1,
            ..InventoryState::default()
        };
        apply(&mut state, &EventPayload::StockAdded { quantity: 10 }, Side::Hub);
        assert_eq!(state.on_hand, i64::MAX);
        state.on_hand = i64::MIN + 1;
        apply(
            &mut state,
            &EventPayload::StockAdjusted {
                delta: -5,
                reason: "count".into(),
            },
            Side::Hub,
        );
        assert_eq!(state.on_hand, i64::MIN);
        apply(
            &mut state,
            &EventPayload::StockReserved {
                reservation_id: rid(1),
                quantity: u32::MAX,
                expires_at: LATER,
            },
            Side::Hub,
        );
        assert_eq!(state.available(), i64::MIN);
    }

    #[test]
    fn expired_reservations_are_found_by_time() {
        let soon = datetime!(2026-01-01 00:00 UTC);
        let mut state = given(&[add(5), reserve(1, 1)]);
        apply(
            &mut state,
            &EventPayload::StockReserved {
                reservation_id: rid(2),
                quantity: 1,
                expires_at: soon,
            },
            Side::Hub,
        );
        assert_eq!(
            state.expired_reservations(datetime!(2026-06-01 00:00 UTC)),
            vec![rid(2)]
        );
    }

    #[test]
    fn a_recorded_offline_sale_is_applied_even_past_zero_and_flags_oversell() {
        let before = given(&[add(1)]);
        let mut after = before.clone();
        let sale = [
            EventPayload::StockReserved {
                reservation_id: rid(7),
                quantity: 3,
                expires_at: LATER,
            },
            EventPayload::ReservationCommitted {
                reservation_id: rid(7),
                quantity: 3,
            },
        ];
        let mut flags = Vec::new();
        for event in &sale {
            let prior = after.available();
            apply(&mut after, event, Side::Hub);
            flags.extend(oversell_after(prior, &after, EventId::from_bytes([1; 16])));
        }
        assert_eq!((after.on_hand, after.available()), (-2, -2));
        assert_eq!(flags.len(), 1, "only the reservation lowered available below zero");
        // A delivery that raises available does not flag, even while still negative.
        let prior = after.available();
        apply(&mut after, &EventPayload::StockAdded { quantity: 1 }, Side::Hub);
        assert_eq!(after.available(), -1);
        assert_eq!(oversell_after(prior, &after, EventId::from_bytes([2; 16])), None);
    }

    fn command_strategy() -> impl Strategy<Value = InventoryCommand> {
        let id = 0u8..6;
        prop_oneof![
            (1i64..20).prop_map(|n| InventoryCommand::AddStock { quantity: qty(n) }),
            (id.clone(), 1i64..20).prop_map(|(i, n)| reserve(i, n)),
            (id.clone(), prop::bool::ANY).prop_map(|(i, expired)| InventoryCommand::ReleaseStock {
                reservation_id: rid(i),
                reason: if expired {
                    ReleaseReason::Expired
                } else {
                    ReleaseReason::Cancelled
                },
            }),
            id.prop_map(|i| InventoryCommand::CommitReservation { reservation_id: rid(i) }),
            (-20i64..20).prop_map(|delta| InventoryCommand::AdjustStock {
                delta,
                reason: "count".into()
            }),
        ]
    }

    proptest! {
        #[test]
        fn commands_never_drive_available_or_on_hand_below_zero(commands in prop::collection::vec(command_strategy(), 0..80)) {
            let mut state = InventoryState::default();
            for command in &commands {
                if let Ok(events) = decide(&state, command, Decider::Hub) {
                    for event in &events {
                        apply(&mut state, event, Side::Hub);
                    }
                }
                prop_assert!(state.available() >= 0, "available {} after {:?}", state.available(), command);
                prop_assert!(state.on_hand >= 0);
                prop_assert!(state.reserved() >= 0);
            }
        }

        #[test]
        fn folding_the_emitted_events_reproduces_the_state(commands in prop::collection::vec(command_strategy(), 0..80)) {
            let mut state = InventoryState::default();
            let mut log = Vec::new();
            for command in &commands {
                if let Ok(events) = decide(&state, command, Decider::Hub) {
                    for event in events {
                        apply(&mut state, &event, Side::Hub);
                        log.push(event);
                    }
                }
            }
            let mut replayed = InventoryState::default();
            for event in &log {
                apply(&mut replayed, event, Side::Hub);
            }
            prop_assert_eq!(replayed, state);
        }
    }
}
