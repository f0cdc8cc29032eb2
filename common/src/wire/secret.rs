//! [`Secret`]: a token, key or signing secret held as a string that `Debug` never shows,
//! so that logging a configuration, a request body or an answer (`{:?}`, or a tracing
//! field) cannot leak it. It has no `Display`: the one place that needs the value asks for
//! it with [`Secret::expose`]. It lives with the wire types because some of them carry a
//! secret to its owner once (a new token, a store's enrollment answer, a webhook's
//! signing secret): there `Serialize` writes the value, as that answer must.

use std::fmt;

/// A secret string: read and written like a string by serde, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Self(secret.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_read_and_written_as_a_string_but_never_debug_printed() {
        let secret: Secret = serde_json::from_str("\"ss_hunter2\"").unwrap();
        assert_eq!(secret.expose(), "ss_hunter2");
        assert_eq!(&*secret, "ss_hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(secret.clone())).contains("hunter2"));
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"ss_hunter2\"");
    }
}
