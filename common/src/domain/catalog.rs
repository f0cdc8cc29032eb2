//! The catalog aggregate: one stream per product, written only at the hub.

use crate::domain::error::DomainError;
use crate::domain::event::EventPayload;
use crate::domain::product::Product;
use serde::{Deserialize, Serialize};

/// The state of one product's catalog stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogState {
    /// The product as last registered or updated (absent before registration).
    pub product: Option<Product>,
    /// Number of events applied.
    pub version: u64,
}

/// A request to change the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum CatalogCommand {
    /// Add a new product.
    RegisterProduct {
        /// The full product.
        product: Product,
    },
    /// Replace a product's SKU, name and price.
    UpdateProduct {
        /// The full new product (same id).
        product: Product,
    },
}

/// Decides which events a catalog command produces.
pub fn decide(state: &CatalogState, command: &CatalogCommand) -> Result<Vec<EventPayload>, DomainError> {
    match command {
        CatalogCommand::RegisterProduct { product } => {
            product.validate()?;
            if state.product.is_some() {
                return Err(DomainError::ProductAlreadyRegistered(product.id));
            }
            Ok(vec![EventPayload::ProductRegistered(product.clone())])
        }
        CatalogCommand::UpdateProduct { product } => {
            product.validate()?;
            let current = state
                .product
                .as_ref()
                .ok_or(DomainError::ProductNotRegistered(product.id))?;
            if current.id != product.id {
                return Err(DomainError::ProductIdMismatch);
            }
            Ok(vec![EventPayload::ProductUpdated(product.clone())])
        }
    }
}

/// Folds one recorded event into the catalog state.
pub fn apply(state: &mut CatalogState, event: &EventPayload) {
    if let EventPayload::ProductRegistered(product) | EventPayload::ProductUpdated(product) = event {
        state.product = Some(product.clone());
    }
    state.version = state.version.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::ProductId;

    fn coffee() -> Product {
        Product {
            id: ProductId::from_bytes([1; 16]),
            sku: "COF".into(),
            name: "Coffee".into(),
            price_minor: 499,
        }
    }

    fn registered() -> CatalogState {
        let mut state = CatalogState::default();
        for e in decide(&state, &CatalogCommand::RegisterProduct { product: coffee() }).unwrap() {
            apply(&mut state, &e);
        }
        state
    }

    #[test]
    fn registering_twice_is_refused() {
        let state = registered();
        assert_eq!(
            decide(&state, &CatalogCommand::RegisterProduct { product: coffee() }),
            Err(DomainError::ProductAlreadyRegistered(coffee().id))
        );
    }

    #[test]
    fn updating_replaces_the_product() {
        let mut state = registered();
        let cheaper = Product {
            price_minor: 399,
            ..coffee()
        };
        for e in decide(
            &state,
            &CatalogCommand::UpdateProduct {
                product: cheaper.clone(),
            },
        )
        .unwrap()
        {
            apply(&mut state, &e);
        }
        assert_eq!(state.product, Some(cheaper));
        assert_eq!(state.version, 2);
    }

    #[test]
    fn updating_an_unknown_product_or_with_bad_fields_is_refused() {
        let none = CatalogState::default();
        assert_eq!(
            decide(&none, &CatalogCommand::UpdateProduct { product: coffee() }),
            Err(DomainError::ProductNotRegistered(coffee().id))
        );
        let bad = Product {
            sku: String::new(),
            ..coffee()
        };
        assert!(matches!(
            decide(&registered(), &CatalogCommand::UpdateProduct { product: bad }),
            Err(DomainError::InvalidProduct { field: "sku", .. })
        ));
    }
}
