//! Bearer secrets for both binaries: making them, storing only their SHA-256, comparing
//! digests without an early exit, and writing a generated secret to a file only its owner
//! can read. Configurations hold them as [`Secret`] (defined with the wire types, which
//! carry some too), which `Debug` never shows.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::Path;

pub use crate::wire::secret::Secret;

/// SHA-256 of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random secret: `ss_` and 64 hex digits (256 bits).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("ss_{}", hex::encode(bytes))
}

/// Compares two digests in constant time.
pub fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The secret in an `Authorization: Bearer` header value, if any.
pub fn bearer(header: Option<&axum::http::HeaderValue>) -> Option<&str> {
    header
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Writes a secret to `path` with mode 0600, and syncs it to disk.
pub fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The configured secret, else the one in `path`, else a new one written to `path`
/// (mode 0600). Returns the secret and whether it was generated now.
pub fn configured_or_stored(configured: Option<&str>, path: &Path) -> std::io::Result<(String, bool)> {
    if let Some(secret) = configured {
        return Ok((secret.to_owned(), false));
    }
    match std::fs::read_to_string(path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok((secret.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let secret = new_secret();
    write_private(path, &secret)?;
    Ok((secret, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_digests_compare_exactly() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("ss_") && a.len() == 67);
        assert!(same_digest(&digest(&a), &digest(&a)));
        assert!(!same_digest(&digest(&a), &digest(&b)));
    }

    #[test]
    fn bearer_takes_the_secret_only() {
        let value = axum::http::HeaderValue::from_static("Bearer  abc ");
        assert_eq!(bearer(Some(&value)), Some("abc"));
        assert_eq!(bearer(Some(&axum::http::HeaderValue::from_static("Basic abc"))), None);
        assert_eq!(bearer(None), None);
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_private(&path, "s3cret").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret\n");
    }

    #[test]
    fn a_stored_secret_is_generated_once_and_configuration_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let (first, generated) = configured_or_stored(None, &path).unwrap();
        assert!(generated);
        assert_eq!(configured_or_stored(None, &path).unwrap(), (first, false));
        assert_eq!(
            configured_or_stored(Some("set"), &path).unwrap(),
            ("set".to_owned(), false)
        );
    }
}
