//! One-step enrollment: the bodies of the hub's enrollment routes and the code's format,
//! shared by the hub (which makes and checks codes) and `shelfsync-edge enroll` (which
//! checks what the operator typed before sending it).
//!
//! A code is 8 characters from a 32-letter alphabet without look-alikes (Crockford's
//! base 32: no I, L, O or U), shown as `XXXX-XXXX`: 40 bits. Case, the dash and spaces do
//! not matter, and the look-alikes a person may type for a digit (`O`, `I`, `L`) are read
//! as that digit.

use crate::wire::secret::Secret;
use crate::StoreId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The letters a code is made of.
pub const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Letters in a code (without the dash).
pub const CODE_LENGTH: usize = 8;

/// A code's canonical form (8 letters of [`CODE_ALPHABET`], no dash), or `None` when it
/// cannot be one.
pub fn normalize_code(typed: &str) -> Option<String> {
    let mut out = String::with_capacity(CODE_LENGTH);
    for c in typed.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !CODE_ALPHABET.contains(&(c as u8)) || out.len() == CODE_LENGTH {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_LENGTH).then_some(out)
}

/// A canonical code as people read it: `XXXX-XXXX`.
pub fn display_code(canonical: &str) -> String {
    let (head, tail) = canonical.split_at(canonical.len().min(CODE_LENGTH / 2));
    format!("{head}-{tail}")
}

/// `POST /v1/admin/stores/{id}/enrollment-codes`: a new code, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollmentCode {
    /// The store it enrolls.
    pub store_id: StoreId,
    /// The store's name.
    pub store_name: String,
    /// The code, `XXXX-XXXX`.
    #[schema(value_type = String)]
    pub code: Secret,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The one line to run on the store's machine (it holds the code).
    #[schema(value_type = String)]
    pub command: Secret,
}

/// `POST /v1/enroll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The code, `XXXX-XXXX` (case, dashes and spaces do not matter).
    #[schema(value_type = String, min_length = 8, max_length = 32)]
    pub code: Secret,
}

/// `POST /v1/enroll`'s answer: the store and its new token (any older one stops working).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Enrollment {
    /// The store.
    pub store_id: StoreId,
    /// Its name.
    pub store_name: String,
    /// The store token's secret (shown this once).
    #[schema(value_type = String)]
    pub token: Secret,
    /// The hub's sync protocol version.
    pub protocol_version: String,
}

/// `GET /v1/version`: what an agent checks before it enrolls (no token needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubVersion {
    /// The sync protocol version the hub speaks.
    pub protocol_version: String,
    /// The hub's build.
    pub hub_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_codes_normalize_and_bad_ones_are_refused() {
        assert_eq!(normalize_code("abcd-ef12").as_deref(), Some("ABCDEF12"));
        assert_eq!(normalize_code(" ABCD EF12 ").as_deref(), Some("ABCDEF12"));
        assert_eq!(normalize_code("oIL0-0000").as_deref(), Some("01100000"));
        for bad in ["", "ABCD-EF1", "ABCD-EF123", "ABCD-EFU2", "ÄBCD-EF12", "ABCD_EF12"] {
            assert_eq!(normalize_code(bad), None, "{bad:?}");
        }
        assert_eq!(display_code("ABCDEF12"), "ABCD-EF12");
    }
}
