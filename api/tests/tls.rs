//! HTTPS and WSS on the HTTP listener, over real sockets, with
//! certificates made at run time (`rcgen`): a client trusting the server's
//! CA gets through, plaintext and clients trusting another CA do not, and a
//! new certificate is taken on SIGHUP without dropping an open session.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bluelight_api::config::ServeConfig;
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;

/// A certificate authority of the test's own.
struct Ca {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("bluelight test CA {name}"));
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for localhost and 127.0.0.1, written as PEM
    /// to `dir/server.{crt,key}`; the two paths.
    fn server_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        std::fs::create_dir_all(dir).expect("dir");
        let (crt, pem) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&crt, cert.pem()).expect("write crt");
        std::fs::write(&pem, key.serialize_pem()).expect("write key");
        (crt, pem)
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("root");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let cfg = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(cfg))
    }
}

fn scratch(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("bluelight-tls-{}-{test}", std::process::id()))
}

async fn tls_connect(ca: &Ca, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    ca.connector().connect(name, tcp).await
}

/// `GET path` over HTTPS; the whole reply.
async fn https_get(ca: &Ca, addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = tls_connect(ca, addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut reply = Vec::new();
    // A server closing without close_notify is an error to rustls once the
    // reply is in; what was read counts.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

type Wss = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

async fn wss(ca: &Ca, addr: SocketAddr) -> Wss {
    let tls = tls_connect(ca, addr).await.expect("TLS");
    let (ws, _) = tokio_tungstenite::client_async("wss://localhost/v1/ws", tls)
        .await
        .expect("WSS upgrade");
    ws
}

/// A one-shot nearest over the socket; the reply.
async fn ask_nearest(ws: &mut Wss, id: &str) -> Value {
    let q = json!({"type": "nearest", "id": id, "point": [-0.12, 51.5], "k": 1});
    ws.send(Message::Text(q.to_string().into())).await.expect("send");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["id"] == id {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_are_served_and_plaintext_is_refused() {
    let ca = Ca::new("one");
    let (cert, key) = ca.server_files(&scratch("serve"));
    let s = support::server_with(ServeConfig {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..ServeConfig::default()
    })
    .await;

    let reply = https_get(&ca, s.http, "/healthz").await.expect("HTTPS");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"status\":\"ok\""), "{reply}");

    let mut ws = wss(&ca, s.http).await;
    let v = ask_nearest(&mut ws, "q1").await;
    assert_eq!(v["type"], "nearest", "{v}");

    // Plaintext HTTP to the TLS listener gets no HTTP reply.
    let mut plain = TcpStream::connect(s.http).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "plaintext was answered: {:?}",
        String::from_utf8_lossy(&got)
    );

    // A client that trusts another CA refuses the server.
    let other = Ca::new("other");
    assert!(
        tls_connect(&other, s.http).await.is_err(),
        "a certificate from another CA was trusted"
    );
}

#[test]
fn a_certificate_and_key_that_do_not_match_are_refused_at_start() {
    let ca = Ca::new("mismatch");
    let (cert, _) = ca.server_files(&scratch("mismatch-a"));
    let (_, key) = ca.server_files(&scratch("mismatch-b"));
    let err = bluelight_api::tls::Tls::load(&cert, &key).expect_err("a key of another certificate");
    assert!(err.to_string().contains("cannot be used together"), "{err}");
    let err = bluelight_api::tls::Tls::load(Path::new("/nonexistent.crt"), &key).expect_err("no file");
    assert!(err.to_string().contains("/nonexistent.crt"), "{err}");
}

/// `bluelight serve` with TLS, killed when dropped.
struct Server {
    child: Child,
    http: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_tls(cert: &Path, key: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bluelight"))
        .args(["serve", "--listen", "127.0.0.1:0", "--ingest", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bluelight starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("listening "))
        .expect("a listening line");
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .and_then(|a| a.parse().ok())
        .expect("http=ADDR");
    Server { child, http }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_taken_on_sighup_and_open_sessions_carry_on() {
    let dir = scratch("reload");
    let (old_ca, new_ca) = (Ca::new("old"), Ca::new("new"));
    let (cert, key) = old_ca.server_files(&dir);
    let server = serve_tls(&cert, &key);
    let mut session = wss(&old_ca, server.http).await;
    assert_eq!(ask_nearest(&mut session, "before").await["type"], "nearest");

    new_ca.server_files(&dir);
    let hup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    let start = Instant::now();
    while tls_connect(&new_ca, server.http).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the new certificate was not taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tls_connect(&old_ca, server.http).await.is_err(),
        "the old certificate is still served"
    );
    // The session opened under the old certificate goes on.
    assert_eq!(ask_nearest(&mut session, "after").await["type"], "nearest");
    let reply = https_get(&new_ca, server.http, "/healthz").await.expect("HTTPS");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
