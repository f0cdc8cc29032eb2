//! The catalog's `Product`: what is sold, under which SKU, at which price. Prices are
//! integer minor units (cents), never floating point, so sums are exact.
//!
//! Text is canonical, so that two SKUs that look the same are the same SKU: a SKU is kept
//! in NFKC (fullwidth and other compatibility forms fold to their plain characters), a
//! name in NFC, and neither may hold control characters or invisible format characters
//! (zero-width spaces, bidi overrides, the byte order mark, ...). [`Product::normalized`]
//! makes input canonical; [`Product::validate`] refuses anything that is not.

use crate::domain::error::DomainError;
use crate::domain::ids::ProductId;
use serde::{Deserialize, Serialize};
use unicode_normalization::{is_nfc, is_nfkc, UnicodeNormalization};

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

/// Whether `c` is a Unicode format character (general category Cf, Unicode 16): invisible
/// characters that change how text displays or joins, bidi controls among them.
pub fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// The canonical form of a SKU: NFKC, so `ＣＯＦＦＥＥ-250` (fullwidth) is `COFFEE-250`.
pub fn normalize_sku(sku: &str) -> String {
    sku.nfkc().collect()
}

/// The canonical form of a product name: NFC.
pub fn normalize_name(name: &str) -> String {
    name.nfc().collect()
}

impl Product {
    /// This product with its SKU and name in canonical form (see the module docs).
    pub fn normalized(self) -> Self {
        Self {
            sku: normalize_sku(&self.sku),
            name: normalize_name(&self.name),
            ..self
        }
    }

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
        if self
            .sku
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_format_char(c))
        {
            return Err(invalid(
                "sku",
                "must not contain whitespace, control or invisible format characters",
            ));
        }
        if !is_nfkc(&self.sku) {
            return Err(invalid("sku", "must be in Unicode NFKC form"));
        }
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be blank"));
        }
        if self.name.len() > MAX_NAME_LEN {
            return Err(invalid("name", "must be at most 200 bytes"));
        }
        if self
            .name
            .chars()
            .any(|c| c.is_control() || is_format_char(c) || (c.is_whitespace() && c != ' '))
        {
            return Err(invalid(
                "name",
                "must not contain control or invisible format characters, or whitespace other than spaces",
            ));
        }
        if !is_nfc(&self.name) {
            return Err(invalid("name", "must be in Unicode NFC form"));
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

    #[test]
    fn look_alike_skus_and_names_are_one_canonical_text_or_refused() {
        let with = |sku: &str, name: &str| Product {
            sku: sku.into(),
            name: name.into(),
            ..product()
        };
        let fullwidth = with("ＣＯＦ-２５０", "Coffee 250g").normalized();
        assert_eq!(fullwidth.sku, "COF-250", "fullwidth folds to the plain SKU");
        assert_eq!(fullwidth.validate(), Ok(()));
        let decomposed = with("COF-250", "Cafe\u{301} 250g").normalized();
        assert_eq!(decomposed.name, "Caf\u{e9} 250g", "names are NFC");
        assert_eq!(decomposed.validate(), Ok(()));

        let refused = |p: Product| match p.normalized().validate() {
            Err(DomainError::InvalidProduct { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(refused(with("COF-250\u{200B}", "Coffee")), "sku", "zero-width space");
        assert_eq!(refused(with("COF-\u{202E}052", "Coffee")), "sku", "bidi override");
        assert_eq!(refused(with("\u{FEFF}COF-250", "Coffee")), "sku", "byte order mark");
        assert_eq!(refused(with("COF-250", "Coffee\u{2066}")), "name", "bidi isolate");
        assert_eq!(refused(with("COF-250", "Coffee\u{2028}250g")), "name", "line separator");
        assert_eq!(refused(with("COF-250", "Coffee\u{7}")), "name", "control");
        match with("ＣＯＦ-250", "Coffee").validate() {
            Err(DomainError::InvalidProduct { field: "sku", .. }) => {}
            other => panic!("a SKU not in NFKC must be refused where it was not normalised: {other:?}"),
        }
    }
}
