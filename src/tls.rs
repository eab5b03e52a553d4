//! TLS settings for the server and the client: loading PEM certificates and
//! keys, and building `rustls` configurations that offer HTTP/2 by ALPN.
//!
//! gRPC over TLS is plain HTTP/2 over TLS, and HTTP/2 over TLS is chosen by
//! ALPN: the client offers `h2` in its ClientHello, the server picks it.
//! PROTOCOL-HTTP2.md leaves transport security to HTTP/2, and RFC 9113 §3.2
//! says: "A client that makes a request to an "https" URI uses TLS with the
//! application-layer protocol negotiation (ALPN) extension [...] The string
//! "h2" identifies HTTP/2". grpc-go refuses a TLS server that does not
//! negotiate `h2`, so both configurations here set it.
//!
//! The cryptography is `ring`'s, chosen explicitly (rather than a
//! process-wide default provider) so that nothing depends on which other
//! crate installed one first.
//!
//! ```no_run
//! # fn demo() -> Result<(), grpc_chat::tls::TlsError> {
//! use grpc_chat::tls;
//! let server = tls::server_config("cert.pem".as_ref(), "key.pem".as_ref())?;
//! let client = tls::client_config(Some("ca.pem".as_ref()))?;
//! # let _ = (server, client);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol id of HTTP/2 over TLS.
pub const ALPN_H2: &[u8] = b"h2";

/// Why a TLS configuration could not be built.
#[derive(Debug)]
pub struct TlsError {
    message: String,
}

impl TlsError {
    fn new(message: impl Into<String>) -> Self {
        TlsError {
            message: message.into(),
        }
    }

    fn file(path: &Path, what: &str, error: impl fmt::Display) -> Self {
        TlsError::new(format!("{}: {what}: {error}", path.display()))
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file at `path`, in order (a chain starts
/// with the leaf).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::file(path, "cannot read certificates", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(path, "invalid PEM certificate", e))?;
    if certs.is_empty() {
        return Err(TlsError::file(
            path,
            "no certificate",
            "expected at least one -----BEGIN CERTIFICATE----- block",
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::file(path, "no usable private key", e))
}

/// A server configuration presenting the chain in `cert` with the key in
/// `key`, offering `h2` by ALPN, without client certificates.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certificates(cert)?;
    let key_path = key;
    let key = load_private_key(key_path)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError::new(format!(
                "{} and {}: certificate and key do not make a usable pair: {e}",
                cert.display(),
                key_path.display()
            ))
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// [`server_config`] from PEM text in memory rather than files: for
/// programs handed their certificate by another process (the conformance
/// runner writes it to `conformance-server`'s stdin).
pub fn server_config_from_pem(
    cert: &[u8],
    key: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(format!("invalid PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new("no certificate in the PEM text"));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| TlsError::new(format!("no usable private key in the PEM text: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError::new(format!(
                "certificate and key do not make a usable pair: {e}"
            ))
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// [`client_config`] trusting the certificates in PEM text in memory.
pub fn client_config_from_pem(ca: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        let cert = cert.map_err(|e| TlsError::new(format!("invalid PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::new(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::new("no certificate in the PEM text"));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts the certificates in the PEM file `ca`,
/// or the system's trusted roots when `ca` is `None`, and offers `h2` by ALPN.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in load_certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::file(path, "unusable CA certificate", e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            // Some unreadable files among the system's certificates are not
            // fatal; having none at all is.
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::new(format!(
                    "no trusted root certificates found on this system ({} errors); pass a CA file",
                    found.errors.len()
                )));
            }
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}
