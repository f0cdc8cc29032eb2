//! HTTPS for a server binary: a rustls acceptor (ring, TLS 1.2 and 1.3, HTTP/1.1 by ALPN)
//! from a PEM certificate chain and private key, read once at start-up. Every failure
//! names the setting and the file, so a wrong path or a key that does not match its
//! certificate stops start-up with a message an operator can act on.

use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Accepts TLS connections (cheap to clone).
pub type TlsAcceptor = tokio_rustls::TlsAcceptor;

/// An acceptor for the chain in `cert_file` and the key in `key_file` (PEM). `settings`
/// names the two settings in messages, e.g. `("tls.cert_file", "tls.key_file")`.
pub fn acceptor(cert_file: &Path, key_file: &Path, settings: (&str, &str)) -> Result<TlsAcceptor, String> {
    let (cert_setting, key_setting) = settings;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| {
            format!(
                "{cert_setting} = {}: cannot read a PEM certificate chain: {e}",
                cert_file.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{cert_setting} = {}: no certificate in the file",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "{key_setting} = {}: cannot read a PEM private key: {e}",
            key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "{cert_setting} and {key_setting}: the key does not fit the certificate, or is of a kind \
                 rustls does not take: {e}"
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
