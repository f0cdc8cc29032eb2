//! The catalog's `Product`: what is sold, under which SKU, at which price. Prices are
//! integer minor units (cents), never floating point, so sums are exact.

use crate::error::DomainError;
use crate::ids::ProductId;
use serde::{Deserialize, Serialize};

/// The longest SKU accepted.
pub const MAX_SKU_LEN: usize = 64;
/// The longest product name accepted.
pub const MAX_NAME_LEN: usize = 200;
/// The highest price accepted, in minor units (ten billion in major units).
pub const MAX_PRICE_MINOR: u64 = 1_000_000_000_000;

/// A product in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    /// Stable id of the product.
    pub id: ProductId,
    /// Stock keeping unit: unique across the catalog, 1..=64 bytes, no whitespace or
    /// control characters.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$")]
    pub sku: String,
    /// Human-readable name: 1..=200 bytes, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// Price in minor units of the deployment's currency (1299 = 12.99), at most 10^12.
    #[schema(maximum = 1_000_000_000_000_u64)]
    pub price_minor: u64,
}

impl Product {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), DomainError> {
        let invalid = |field: &'static str, reason: &str| DomainError::InvalidProduct {
            field,
            reason: reason.to_owned(),
        };
        if self.sku.is_empty() {
            return Err(invalid("sku", "must not be empty"));
        }
        if self.sku.len() > MAX_SKU_LEN {
            return Err(invalid("sku", "must be at most 64 bytes"));
        }
        if self.sku.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("sku", "must not contain whitespace or control characters"));
        }
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be blank"));
        }
        if self.name.len() > MAX_NAME_LEN {
            return Err(invalid("name", "must be at most 200 bytes"));
        }
        if self.name.chars().any(char::is_control) {
            return Err(invalid("name", "must not contain control characters"));
        }
        if self.price_minor > MAX_PRICE_MINOR {
            return Err(invalid("price_minor", "must be at most 1000000000000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product() -> Product {
        Product {
            id: ProductId::new_v7(),
            sku: "COF-250".into(),
            name: "Coffee 250g".into(),
            price_minor: 499,
        }
    }

    #[test]
    fn a_well_formed_product_is_valid() {
        assert_eq!(product().validate(), Ok(()));
    }

    #[test]
    fn each_field_is_checked() {
        let cases: Vec<(Product, &str)> = vec![
            (
                Product {
                    sku: String::new(),
                    ..product()
                },
                "sku",
            ),
            (
                Product {
                    sku: "A B".into(),
                    ..product()
                },
                "sku",
            ),
            (
                Product {
                    sku: "X".repeat(65),
                    ..product()
                },
                "sku",
            ),
            (
                Product {
                    name: "  ".into(),
                    ..product()
                },
                "name",
            ),
            (
                Product {
                    name: "n".repeat(201),
                    ..product()
                },
                "name",
            ),
            (
                Product {
                    price_minor: MAX_PRICE_MINOR + 1,
                    ..product()
                },
                "price_minor",
            ),
        ];
        for (p, field) in cases {
            match p.validate() {
                Err(DomainError::InvalidProduct { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
    }
}
