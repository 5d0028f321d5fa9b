//! TLS with rustls (the `ring` provider; no OpenSSL): HTTPS and WSS on the
//! HTTP listener (`--tls-cert`, `--tls-key`), and TLS on the TCP device
//! listeners (ingest, CoT, NMEA), where `--tls-client-ca` makes it mutual:
//! a device must present a certificate signed by that CA, and its subject's
//! common name says what it may send (see [`DeviceAuthority`]).
//!
//! The files are read again on SIGHUP: connections made after it use the
//! new ones, and sessions already open carry on with theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

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

/// The files TLS is made from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM certificates of the CA that signs device certificates: with it,
    /// device listeners require one (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// The two handshakes: the HTTP listener's (no client certificate: browsers
/// and integrations carry tokens) and the device listeners'.
#[derive(Debug)]
struct Configs {
    http: Arc<ServerConfig>,
    devices: Arc<ServerConfig>,
}

/// The server's certificate and key (and devices' CA), swappable while
/// serving.
#[derive(Debug)]
pub struct Tls {
    /// What each new connection's handshake uses; replaced whole on reload.
    current: RwLock<Configs>,
    files: TlsFiles,
}

impl Tls {
    /// Reads the PEM files.
    ///
    /// # Errors
    /// [`TlsError`] naming the file and the problem.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: RwLock::new(configs(&files)?),
            files,
        }))
    }

    /// An acceptor for the HTTP listener, with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().http.clone())
    }

    /// An acceptor for a device listener: with a client CA, the handshake
    /// fails unless the device presents a certificate it signed.
    pub fn device_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().devices.clone())
    }

    /// Whether device connections must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reads the files again; on an error the old ones stay.
    ///
    /// # Errors
    /// [`TlsError`]: what is wrong with the new files.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = configs(&self.files)?;
        *self.current.write() = fresh;
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
                    Ok(()) => tracing::info!(cert = %tls.files.cert.display(), "TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; the old one stays"),
                }
            }
        });
    }
}

fn file_err(path: &Path, reason: String) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason,
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(path, "no PEM certificate in it".into()));
    }
    Ok(chain)
}

fn configs(files: &TlsFiles) -> Result<Configs, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = || PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_err(&files.key, e.to_string()));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = || {
        ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))
    };
    let mut http = builder()?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key()?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // The HTTP listener speaks HTTP/1.1 (WebSocket upgrades included).
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    let devices = match &files.client_ca {
        None => builder()?.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certificates(ca)? {
                roots.add(c).map_err(|e| file_err(ca, e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| file_err(ca, e.to_string()))?;
            builder()?.with_client_cert_verifier(verifier)
        }
    }
    .with_single_cert(chain, key()?)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Configs {
        http: Arc::new(http),
        devices: Arc::new(devices),
    })
}

/// The common name (CN) of a certificate's subject, if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Every agency, as a mask of `1 << agency`.
pub const ALL_AGENCIES: u8 = (1 << bluelight_engine::Agency::ALL.len()) - 1;

/// What a device connection may do, granted on its certificate.
#[derive(Debug, Clone)]
pub struct DeviceGrant {
    /// The agencies whose units it may send (bit `1 << agency`); `None`:
    /// all of them.
    pub agencies: Option<u8>,
    /// The agencies whose units it receives in the live picture (CoT
    /// out), as a mask (bit `1 << agency`); `None`: no picture.
    pub picture: Option<u8>,
    /// Who it is, for the log (the token's name).
    pub name: Arc<str>,
    /// Whether a client certificate vouched for it.
    pub certified: bool,
}

impl DeviceGrant {
    /// A connection that needs no grant: no tokens are configured, so the
    /// listener is on loopback or the deployment chose `--insecure`.
    pub fn open() -> Self {
        Self {
            agencies: None,
            picture: Some(ALL_AGENCIES),
            name: Arc::from("anyone"),
            certified: false,
        }
    }
}

/// Decides, from a device certificate's common name, what the device may
/// do. Built by the server from its tokens and handed to the listeners.
pub trait DeviceAuthority: Send + Sync + std::fmt::Debug {
    /// The grant of a certificate with this common name (`None` when it
    /// has none), or `None` to refuse the connection.
    fn grant(&self, common_name: Option<&str>) -> Option<DeviceGrant>;
    /// The grant of a connection without a certificate (plaintext, or TLS
    /// without `--tls-client-ca`), or `None` to refuse it.
    fn anonymous(&self) -> Option<DeviceGrant>;
}
