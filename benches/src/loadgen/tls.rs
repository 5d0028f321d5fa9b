//! `--tls`: loadgen makes a certificate authority and a server certificate
//! at start (rcgen), starts the server with them (`--tls-cert`,
//! `--tls-key`), and speaks HTTPS and WSS to it, trusting that CA alone:
//! what TLS costs, to set beside the same run in plaintext.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bluelight_ingest::transport::DeviceStream;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The server's certificate files and a client configuration that
/// trusts them.
pub struct Tls {
    /// PEM certificate (for `--tls-cert`).
    pub cert: PathBuf,
    /// PEM key (for `--tls-key`).
    pub key: PathBuf,
    /// Trusts loadgen's CA only.
    pub client: Arc<ClientConfig>,
}

/// Set once, before any client connects, when the run has `--tls`: every
/// client of the run reads it (one run, one server).
static CURRENT: OnceLock<Tls> = OnceLock::new();

/// Makes the CA and the server certificate (for `localhost` and
/// `127.0.0.1`) in `dir`, and makes them the run's.
///
/// # Errors
/// The files cannot be written; a second call.
pub fn install(dir: &Path) -> anyhow::Result<&'static Tls> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "loadgen CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
        .signed_by(&key, &issuer)?;
    std::fs::create_dir_all(dir)?;
    let (cert_path, key_path) = (dir.join("loadgen-server.crt"), dir.join("loadgen-server.key"));
    std::fs::write(&cert_path, server.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone())?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = Tls {
        cert: cert_path,
        key: key_path,
        client: Arc::new(client),
    };
    CURRENT
        .set(tls)
        .map_err(|_| anyhow::anyhow!("loadgen's TLS is made once a run"))?;
    CURRENT
        .get()
        .ok_or_else(|| anyhow::anyhow!("loadgen's TLS was not kept"))
}

/// The run's TLS, if it has `--tls`.
pub fn current() -> Option<&'static Tls> {
    CURRENT.get()
}

/// `https` with `--tls`, else `http`.
pub fn http_scheme() -> &'static str {
    if current().is_some() { "https" } else { "http" }
}

/// `wss` with `--tls`, else `ws`.
pub fn ws_scheme() -> &'static str {
    if current().is_some() { "wss" } else { "ws" }
}

/// A connection to the server: TLS over it with `--tls`, Nagle off either
/// way (a query is one small frame).
///
/// # Errors
/// The connection or the handshake fails.
pub async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<DeviceStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(match current() {
        None => Box::new(tcp),
        Some(t) => {
            let name = ServerName::try_from("localhost")?;
            Box::new(TlsConnector::from(t.client.clone()).connect(name, tcp).await?)
        }
    })
}

/// A device connection for the fleet's sender thread: TLS over `tcp`
/// with `--tls` (the server's TCP ingest then speaks TLS), else `tcp`.
///
/// # Errors
/// The handshake fails.
pub fn blocking(tcp: std::net::TcpStream) -> anyhow::Result<Box<dyn std::io::Write + Send>> {
    Ok(match current() {
        None => Box::new(tcp),
        Some(t) => {
            let name = ServerName::try_from("localhost")?;
            let conn = tokio_rustls::rustls::ClientConnection::new(t.client.clone(), name)?;
            Box::new(tokio_rustls::rustls::StreamOwned::new(conn, tcp))
        }
    })
}

/// An HTTP client for the run (HTTPS trusting loadgen's CA with `--tls`).
///
/// # Errors
/// reqwest cannot build it.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    // reqwest's rustls needs a provider chosen: ring, as the server's.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(t) = current() {
        b = b.tls_backend_preconfigured((*t.client).clone());
    }
    Ok(b.build()?)
}
