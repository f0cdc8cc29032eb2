//! `DomainError`: every reason the domain refuses a command. Each variant maps to one
//! stable problem `code` on the HTTP surface (see [`DomainError::code`]).

use crate::domain::allocation::Share;
use crate::domain::ids::{ProductId, ReservationId};

/// A command the rules do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Fewer units available than the command needs.
    #[error("insufficient stock: requested {requested}, available {available}")]
    InsufficientStock {
        /// Units the command asked for.
        requested: i64,
        /// Units available (on hand minus reserved) before the command.
        available: i64,
    },
    /// The reservation id is not open on this stream.
    #[error("reservation {0} is not open")]
    ReservationNotFound(ReservationId),
    /// A reservation with this id is already open.
    #[error("reservation {0} already exists")]
    ReservationExists(ReservationId),
    /// A stock adjustment must move at least one unit.
    #[error("adjustment delta must not be zero")]
    ZeroAdjustment,
    /// An adjustment moved more than the allowed amount at once.
    #[error("adjustment delta must be within -1000000..=1000000")]
    AdjustmentOutOfRange,
    /// A free-text reason is missing or too long.
    #[error("reason must be 1..=200 characters")]
    InvalidReason,
    /// A product field is invalid.
    #[error("invalid product {field}: {reason}")]
    InvalidProduct {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The product is already registered.
    #[error("product {0} is already registered")]
    ProductAlreadyRegistered(ProductId),
    /// The product is not in the catalog.
    #[error("product {0} is not registered")]
    ProductNotRegistered(ProductId),
    /// An update tried to change a product's id.
    #[error("the product id in the body does not match the stream")]
    ProductIdMismatch,
    /// The stream has an allocation and the decider's share holds fewer units than the
    /// command needs (the hub's share: `insufficient_stock`; the store's share:
    /// `allocation_exhausted`).
    #[error("the {share:?} share holds {left} units, the command needs {requested}")]
    ShareExhausted {
        /// Whose share ran short.
        share: Share,
        /// Units the command asked for.
        requested: i64,
        /// Units left in that share.
        left: i64,
    },
    /// A share may be consumed or given away only by its owner (and a policy set only by
    /// the hub).
    #[error("only the owner of a share may give it away")]
    NotYourShare,
    /// A transfer on a stream without an allocation.
    #[error("the stream has no allocation")]
    NoAllocation,
    /// A policy's numbers are out of range.
    #[error("an allocation keeps 0..=1000000 units or 0..=100 percent")]
    InvalidAllocation,
}

impl DomainError {
    /// The stable machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::InsufficientStock { .. } => "insufficient_stock",
            DomainError::ReservationNotFound(_) => "reservation_not_found",
            DomainError::ReservationExists(_) => "reservation_exists",
            DomainError::ZeroAdjustment => "zero_adjustment",
            DomainError::AdjustmentOutOfRange => "adjustment_out_of_range",
            DomainError::InvalidReason => "invalid_reason",
            DomainError::InvalidProduct { .. } => "invalid_product",
            DomainError::ProductAlreadyRegistered(_) => "product_exists",
            DomainError::ProductNotRegistered(_) => "product_not_found",
            DomainError::ProductIdMismatch => "product_id_mismatch",
            DomainError::ShareExhausted { share: Share::Hub, .. } => "insufficient_stock",
            DomainError::ShareExhausted {
                share: Share::Store, ..
            } => "allocation_exhausted",
            DomainError::NotYourShare => "not_your_share",
            DomainError::NoAllocation => "no_allocation",
            DomainError::InvalidAllocation => "invalid_allocation",
        }
    }
}
