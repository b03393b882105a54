//! TLS on the public listener (`[tls] cert`, `key`): rustls with `ring` as
//! its only crypto provider, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`.
//! The handshake runs in the connection's own task, under its connection
//! slot and within `server.header_timeout`: a client that speaks plain HTTP
//! to the port, or stalls mid-handshake, costs one slot for that long and
//! never delays anyone else.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why the certificate or key cannot be used; names the key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {path}: {message}")]
pub struct TlsError {
    /// `tls.cert` or `tls.key`.
    pub key: &'static str,
    /// The file.
    pub path: std::path::PathBuf,
    /// What is wrong.
    pub message: String,
}

/// The acceptor for `cfg`.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let error = |key: &'static str, path: &Path, message: String| TlsError {
        key,
        path: path.to_owned(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| error("tls.cert", &cfg.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| error("tls.cert", &cfg.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(error(
            "tls.cert",
            &cfg.cert,
            "no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| error("tls.key", &cfg.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| error("tls.cert", &cfg.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| error("tls.key", &cfg.key, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
