//! TLS on the HTTP listener (`--tls-cert`, `--tls-key`): HTTPS and WSS with
//! rustls (the `ring` provider; no OpenSSL). The certificate and key are
//! read again on SIGHUP: connections made after it use the new ones, and
//! sessions already open carry on with theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file that could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (a key that is not the certificate's, ...).
    #[error("the certificate and key cannot be used together: {0}")]
    Config(String),
}

/// The server's certificate and key, swappable while serving.
#[derive(Debug)]
pub struct Tls {
    /// What each new connection's handshake uses; replaced whole on reload.
    current: RwLock<Arc<ServerConfig>>,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    /// Reads the PEM certificate chain and private key.
    ///
    /// # Errors
    /// [`TlsError`] naming the file and the problem.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(server_config(cert, key)?)),
            cert: cert.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Reads the files again; on an error the old certificate stays.
    ///
    /// # Errors
    /// [`TlsError`]: what is wrong with the new files.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.cert, &self.key)?;
        *self.current.write() = Arc::new(fresh);
        Ok(())
    }

    /// Reloads on every SIGHUP, logging the outcome, for as long as the
    /// process runs.
    pub fn reload_on_sighup(self: &Arc<Self>) {
        let tls = self.clone();
        tokio::spawn(async move {
            let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP: the TLS certificate will not be reloaded");
                return;
            };
            while hangups.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!(cert = %tls.cert.display(), "TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; the old one stays"),
                }
            }
        });
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let file_err = |path: &Path, reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no PEM certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // The HTTP listener speaks HTTP/1.1 (WebSocket upgrades included).
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
