//! `StockQuantity`: the validated amount a command moves. Always at least one and at most
//! [`StockQuantity::MAX`], so a typo of a barcode into the quantity field is refused instead
//! of booking a billion units.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A positive number of units for a command (1 ..= 1,000,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "u32")]
pub struct StockQuantity(u32);

impl utoipa::PartialSchema for StockQuantity {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(1))
            .maximum(Some(Self::MAX))
            .description(Some("units, 1 to 1000000"))
            .into()
    }
}
impl utoipa::ToSchema for StockQuantity {}

impl StockQuantity {
    /// The largest quantity one command may move.
    pub const MAX: u32 = 1_000_000;

    /// Validates a raw count.
    pub fn new(value: i64) -> Result<Self, QuantityError> {
        if value < 1 {
            Err(QuantityError::NotPositive(value))
        } else if value > i64::from(Self::MAX) {
            Err(QuantityError::TooLarge(value))
        } else {
            Ok(Self(value as u32))
        }
    }

    /// The count as an unsigned number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The count as a signed number, for stock arithmetic.
    pub fn as_i64(self) -> i64 {
        i64::from(self.0)
    }
}

impl TryFrom<i64> for StockQuantity {
    type Error = QuantityError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

/// Any JSON number is read, so that every wrong one gets a sentence about quantities: a
/// number too large for an integer arrives as a float, and "invalid type: floating point"
/// would tell a till nothing.
impl<'de> Deserialize<'de> for StockQuantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Units;
        impl Visitor<'_> for Units {
            type Value = StockQuantity;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number of units, 1 to 1000000")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<StockQuantity, E> {
                StockQuantity::new(value).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<StockQuantity, E> {
                match i64::try_from(value) {
                    Ok(value) => self.visit_i64(value),
                    Err(_) => Err(E::custom(format!("quantity must be at most 1000000, got {value}"))),
                }
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<StockQuantity, E> {
                if value.fract() != 0.0 || !value.is_finite() {
                    Err(E::custom(format!(
                        "quantity must be a whole number of units, got {value}"
                    )))
                } else if value > f64::from(StockQuantity::MAX) {
                    Err(E::custom(format!("quantity must be at most 1000000, got {value}")))
                } else {
                    // Whole and at most MAX: exact as an integer.
                    self.visit_i64(value as i64)
                }
            }
        }
        deserializer.deserialize_i64(Units)
    }
}

impl From<StockQuantity> for u32 {
    fn from(q: StockQuantity) -> u32 {
        q.0
    }
}

/// Why a raw count is not a valid quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Zero or negative.
    #[error("quantity must be at least 1, got {0}")]
    NotPositive(i64),
    /// Above [`StockQuantity::MAX`].
    #[error("quantity must be at most 1000000, got {0}")]
    TooLarge(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_valid_range_only() {
        assert_eq!(StockQuantity::new(0), Err(QuantityError::NotPositive(0)));
        assert_eq!(StockQuantity::new(-3), Err(QuantityError::NotPositive(-3)));
        assert_eq!(StockQuantity::new(1_000_001), Err(QuantityError::TooLarge(1_000_001)));
        assert_eq!(StockQuantity::new(5).unwrap().get(), 5);
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<StockQuantity>("0").is_err());
        assert!(serde_json::from_str::<StockQuantity>("-1").is_err());
        assert!(serde_json::from_str::<StockQuantity>("2.5").is_err());
        assert_eq!(serde_json::from_str::<StockQuantity>("7").unwrap().get(), 7);
        assert_eq!(serde_json::to_string(&StockQuantity::new(7).unwrap()).unwrap(), "7");
    }

    #[test]
    fn every_wrong_number_gets_a_sentence_about_quantities() {
        let error = |json: &str| serde_json::from_str::<StockQuantity>(json).unwrap_err().to_string();
        for (json, said) in [
            (
                "99999999999999999999",
                "quantity must be at most 1000000, got 100000000000000000000",
            ),
            (
                "18446744073709551615",
                "quantity must be at most 1000000, got 18446744073709551615",
            ),
            ("1e7", "quantity must be at most 1000000, got 10000000"),
            ("2.5", "quantity must be a whole number of units, got 2.5"),
            ("-1e30", "quantity must be at least 1"),
            ("\"3\"", "expected a whole number of units, 1 to 1000000"),
        ] {
            let text = error(json);
            assert!(
                text.contains(said) && !text.contains("floating point"),
                "{json}: {text}"
            );
        }
        assert_eq!(serde_json::from_str::<StockQuantity>("3.0").unwrap().get(), 3);
    }
}
