//! Allocations: a stream's available stock split between the hub's share and the store's
//! share (escrow, or bounded counters), so that a web promise and an offline sale can
//! never take the same unit.
//!
//! The hub's share is what channels (web shops, apps) may reserve at the hub; the store's
//! share is the rest of `available`, what the store's tills may sell without asking the
//! hub. Only the owner of a share consumes it or gives it away:
//!
//! - the hub reserves (and, in a count correction, writes off) only from its own share,
//!   and may give units of it to the store ([`Share::Store`] transfers);
//! - a store sells from its own share and gives units to the hub only by an event it
//!   records itself ([`Share::Hub`] transfers), or by the one rule it holds from an
//!   [`AllocationPolicy`] it received: a delivery recorded *at the hub* tops the hub's
//!   share up to its target out of the delivered units, never out of units the store
//!   already had.
//!
//! So no event the hub records lowers the store's share, and a store offline, deciding
//! against an older view of its stream, never sells a unit the hub promised (the proof
//! and worked examples are in `docs/allocations.md`). This is O'Neil's escrow method
//! (1986) and the bounded counters of Balegas et al. (EuroSys 2015). The rules that need
//! the state of a stream live here; [`crate::domain::inventory`] calls them from `decide`
//! and `apply`.

use crate::domain::error::DomainError;
use crate::domain::event::Origin;
use crate::domain::inventory::{InventoryCommand, InventoryState};
use serde::{Deserialize, Serialize};

/// The largest fixed number of units a policy may keep for the hub.
pub const MAX_POLICY_UNITS: u32 = 1_000_000;

/// How the hub's share of one stream is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum AllocationPolicy {
    /// No allocation: all stock in one pool (the hub and the store both promise from it;
    /// a conflict is found afterwards, as `OversellDetected`).
    None,
    /// Keep this many units for the hub's channels.
    Fixed {
        /// Units the hub's share aims at.
        #[schema(minimum = 0, maximum = 1_000_000)]
        units: u32,
    },
    /// Keep this percentage of the available units for the hub's channels (rounded down).
    Percent {
        /// 0..=100.
        #[schema(minimum = 0, maximum = 100)]
        percent: u8,
    },
}

impl AllocationPolicy {
    /// Checks the policy's numbers.
    pub fn validate(&self) -> Result<(), DomainError> {
        match *self {
            AllocationPolicy::Fixed { units } if units > MAX_POLICY_UNITS => Err(DomainError::InvalidAllocation),
            AllocationPolicy::Percent { percent } if percent > 100 => Err(DomainError::InvalidAllocation),
            _ => Ok(()),
        }
    }

    /// The hub's share this policy aims at when `available` units are available.
    pub fn target(&self, available: i64) -> i64 {
        match *self {
            AllocationPolicy::None => 0,
            AllocationPolicy::Fixed { units } => i64::from(units),
            AllocationPolicy::Percent { percent } => available.max(0).saturating_mul(i64::from(percent)) / 100,
        }
    }
}

/// Whose share a transfer gives units to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Share {
    /// The hub's share (what channels may reserve at the hub).
    Hub,
    /// The store's share (what its tills may sell without the hub).
    Store,
}

/// The allocation of one stream: the policy and the hub's share as the log's events left
/// it. The store's share is derived: `available - hub_share`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The policy the hub set.
    pub policy: AllocationPolicy,
    /// Units the hub may still promise (its open reservations are already taken out).
    pub hub_share: i64,
}

/// What the till does when a sale needs more than the store's share (a store's policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverShare {
    /// Refuse it: `409 allocation_exhausted`, with what is left.
    #[default]
    Refuse,
    /// Sell, and say in the answer how many units were promised to online orders.
    Mark,
    /// Sell as if there were no allocation.
    Silent,
}

/// Which side recorded an event: what `apply` needs to know of its origin (a store's id
/// does not matter to the fold, only whether the hub or the stream's store recorded it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Recorded at the hub.
    Hub,
    /// Recorded by the stream's store.
    Store,
}

impl From<Origin> for Side {
    fn from(origin: Origin) -> Self {
        match origin {
            Origin::Hub => Side::Hub,
            Origin::Store(_) => Side::Store,
        }
    }
}

/// Who decides a command: the hub (a channel, the back office, the hub's jobs) or a
/// store's agent (its tills and jobs), with that store's over-share policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decider {
    /// The hub.
    Hub,
    /// A store's agent.
    Store(OverShare),
}

impl InventoryState {
    /// The hub's share, when the stream has an allocation.
    pub fn hub_share(&self) -> Option<i64> {
        self.allocation.map(|a| a.hub_share)
    }

    /// The store's share, when the stream has an allocation: available minus the hub's
    /// share (negative only after a sale the store's policy let past its share).
    pub fn store_share(&self) -> Option<i64> {
        self.allocation.map(|a| self.available().saturating_sub(a.hub_share))
    }
}

/// The units the command `command` would take from `state`'s available stock.
fn consumes(command: &InventoryCommand) -> i64 {
    match command {
        InventoryCommand::ReserveStock { quantity, .. } => quantity.as_i64(),
        InventoryCommand::AdjustStock { delta, .. } if *delta < 0 => delta.saturating_neg(),
        _ => 0,
    }
}

/// Units of `command` beyond the store's share (0 without an allocation or when it fits):
/// what a till's "mark" answer reports.
pub fn store_overdraw(state: &InventoryState, command: &InventoryCommand) -> i64 {
    match state.store_share() {
        Some(share) => (consumes(command) - share.max(0)).max(0),
        None => 0,
    }
}

/// The allocation rules `decide` applies before the stock rules: who may consume or give
/// which share. `Ok(())` when the command may go on to the stock rules.
pub(crate) fn check(state: &InventoryState, command: &InventoryCommand, by: Decider) -> Result<(), DomainError> {
    match command {
        InventoryCommand::SetAllocation { policy } => {
            policy.validate()?;
            if by != Decider::Hub {
                return Err(DomainError::NotYourShare);
            }
            return Ok(());
        }
        InventoryCommand::TransferAllocation { to, quantity } => {
            let (Some(hub), Some(store)) = (state.hub_share(), state.store_share()) else {
                return Err(DomainError::NoAllocation);
            };
            let (from_share, left) = match (to, by) {
                (Share::Store, Decider::Hub) => (Share::Hub, hub),
                (Share::Hub, Decider::Store(_)) => (Share::Store, store),
                _ => return Err(DomainError::NotYourShare),
            };
            return ensure_share(from_share, quantity.as_i64(), left);
        }
        _ => {}
    }
    let wanted = consumes(command);
    if wanted == 0 {
        return Ok(());
    }
    match (by, state.hub_share(), state.store_share()) {
        (Decider::Hub, Some(hub), _) => ensure_share(Share::Hub, wanted, hub),
        (Decider::Store(OverShare::Refuse), _, Some(store)) => ensure_share(Share::Store, wanted, store),
        _ => Ok(()),
    }
}

fn ensure_share(share: Share, requested: i64, left: i64) -> Result<(), DomainError> {
    if requested > left {
        Err(DomainError::ShareExhausted {
            share,
            requested,
            left: left.max(0),
        })
    } else {
        Ok(())
    }
}

/// Before an event is applied: the hub's share a hub delivery of `added` units should
/// receive under the policy (out of those units only).
pub(crate) fn top_up(state: &InventoryState, added: i64) -> i64 {
    match state.allocation {
        Some(a) => {
            let deficit = a.policy.target(state.available()).saturating_sub(a.hub_share);
            deficit.clamp(0, added.max(0))
        }
        None => 0,
    }
}

/// The transfer that brings the hub's share back to its policy's target, as `by` may
/// make it: a store gives from its share what the hub lacks; the hub gives back what it
/// holds beyond the target. `None` when nothing should move (or `by` cannot move it).
/// The store's agent and the hub's job run this on a timer and after deliveries.
pub fn rebalance(state: &InventoryState, by: Decider) -> Option<InventoryCommand> {
    let allocation = state.allocation?;
    let surplus = hub_surplus(&allocation, state.available());
    let (to, units) = match by {
        Decider::Store(_) => (Share::Hub, (-surplus).min(state.store_share().unwrap_or(0))),
        Decider::Hub => (Share::Store, surplus),
    };
    let quantity = crate::domain::quantity::StockQuantity::new(units.min(i64::from(MAX_POLICY_UNITS))).ok()?;
    Some(InventoryCommand::TransferAllocation { to, quantity })
}

/// Units the hub's share holds beyond its policy's target with `available` units
/// available (negative: what it lacks).
pub fn hub_surplus(allocation: &Allocation, available: i64) -> i64 {
    allocation.hub_share.saturating_sub(allocation.policy.target(available))
}

/// How many of the `asked` units the hub grants a store asking for more (online): as
/// many as its share holds beyond zero, up to `asked`.
pub fn grant(state: &InventoryState, asked: i64) -> i64 {
    state.hub_share().map_or(0, |hub| asked.min(hub).max(0))
}

#[cfg(test)]
mod tests;
