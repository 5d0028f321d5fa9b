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

use bluelight_api::config::{ServeConfig, TokenConfig};
use bluelight_engine::{Agency, Fix, Status};
use bluelight_ingest::decode::{UnitInfoSpec, encode_flatbuffers};
use bluelight_ingest::tls::{Tls, TlsFiles};
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
    pem: String,
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
            pem: cert.pem(),
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
        TlsConnector::from(Arc::new(self.client_config().with_no_client_auth()))
    }

    fn client_config(
        &self,
    ) -> tokio_rustls::rustls::ConfigBuilder<ClientConfig, tokio_rustls::rustls::client::WantsClientCert>
    {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("root");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
    }

    /// This CA's certificate as a PEM file (a server's `--tls-client-ca`).
    fn ca_file(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("dir");
        let path = dir.join("clients-ca.crt");
        std::fs::write(&path, &self.pem).expect("write CA");
        path
    }

    /// A device: a client certificate with common name `cn`, signed by
    /// this CA, and a connector that trusts `server` and presents it.
    fn device(&self, cn: &str, server: &Ca) -> TlsConnector {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("client certificate");
        let key =
            tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
        let cfg = server
            .client_config()
            .with_client_auth_cert(vec![cert.der().clone()], key)
            .expect("client auth");
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
    let files = |cert: &Path, key: &Path| TlsFiles {
        cert: cert.to_owned(),
        key: key.to_owned(),
        client_ca: None,
    };
    let err = Tls::load(files(&cert, &key)).expect_err("a key of another certificate");
    assert!(err.to_string().contains("cannot be used together"), "{err}");
    let err = Tls::load(files(Path::new("/nonexistent.crt"), &key)).expect_err("no file");
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

const READER: &str = "reader-token-0123456789abcdef";
const AMB_INGEST: &str = "ambulance-ingest-0123456789ab";

/// A server whose TCP device listeners need a certificate from `clients`:
/// `amb-*` devices may place ambulances, `gw-1` anything; tokens for
/// HTTP beside them (one that reads all, one that may send ambulances).
async fn mutual_tls_server(server: &Ca, clients: &Ca, test: &str) -> bluelight_api::server::Running {
    let dir = scratch(test);
    let (cert, key) = server.server_files(&dir);
    let token =
        |name: &str, t: &str, scopes: &[&str], agencies: Option<&[&str]>, certs: &[&str]| TokenConfig {
            name: Some(name.into()),
            token: t.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            agencies: agencies.map(|a| a.iter().map(|s| s.to_string()).collect()),
            certs: certs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
    let mut cfg = ServeConfig {
        tls_cert: Some(cert),
        tls_key: Some(key),
        tls_client_ca: Some(clients.ca_file(&dir)),
        cot_tcp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        cot_out: true,
        ..ServeConfig::default()
    };
    cfg.auth.tokens = vec![
        token("reader", READER, &["read", "admin"], None, &[]),
        token(
            "ambulance crews",
            "amb-devices-unused-secret-1",
            &["ingest"],
            Some(&["ambulance"]),
            &["amb-*"],
        ),
        token(
            "gateway",
            "gateway-unused-secret-000001",
            &["ingest", "read"],
            None,
            &["gw-1"],
        ),
        token(
            "medics listening",
            "medic-devices-unused-secret-1",
            &["read"],
            Some(&["ambulance"]),
            &["medic-*"],
        ),
        token(
            "ambulance ingest",
            AMB_INGEST,
            &["ingest"],
            Some(&["ambulance"]),
            &[],
        ),
    ];
    support::server_with(cfg).await
}

/// One framed `FixBatch` (4-byte length, then the batch).
fn frame(unit: u64, id: &str, agency: Agency, status: Status, lat: f64) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let mut fix = Fix::at(support::open::now_ms() - 1_000, lat, -1.40);
    fix.status = status;
    let info = UnitInfoSpec {
        unit,
        id,
        agency,
        kind: "rrv",
        tags: &[],
    };
    let body = encode_flatbuffers(&mut fbb, "device", &[(unit, fix)], &[info]).to_vec();
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Sends frames over a device connection (TLS with `connector`, or plain
/// TCP without) and closes it; `Err` when the server refused it.
async fn send_device(
    addr: SocketAddr,
    connector: Option<&TlsConnector>,
    frames: &[Vec<u8>],
) -> std::io::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    let bytes: Vec<u8> = frames.concat();
    match connector {
        None => {
            let mut tcp = tcp;
            tcp.write_all(&bytes).await?;
            tcp.shutdown().await?;
            // A TLS server answers plaintext with an alert or a close.
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
            Ok(())
        }
        Some(c) => {
            let name = ServerName::try_from("localhost").expect("name");
            let mut s = c.connect(name, tcp).await?;
            s.write_all(&bytes).await?;
            s.flush().await?;
            // TLS 1.3 reports a refused client certificate after the
            // handshake: the first read sees the alert.
            s.shutdown().await?;
            let mut rest = Vec::new();
            match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await {
                // The server closes an ingest connection without
                // close_notify once the device has: not a refusal.
                Ok(Err(e)) if e.kind() != std::io::ErrorKind::UnexpectedEof => Err(e),
                _ => Ok(()),
            }
        }
    }
}

/// A request over HTTPS with a token; status and JSON body.
async fn https_json(
    ca: &Ca,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: &str,
) -> (u16, Value) {
    let mut s = tls_connect(ca, addr).await.expect("TLS");
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

async fn unit(ca: &Ca, http: SocketAddr, id: &str) -> (u16, Value) {
    https_json(ca, http, "GET", &format!("/v1/units/{id}"), None, READER).await
}

/// Waits (10 s at most) for a unit to be placed.
async fn until_placed(ca: &Ca, http: SocketAddr, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while unit(ca, http, id).await.0 != 200 {
        assert!(Instant::now() < deadline, "{id} never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn counter(s: &bluelight_api::server::Running) -> (u64, u64) {
    let c = &s.state.queue.counters;
    (
        c.devices_refused.load(std::sync::atomic::Ordering::Relaxed),
        c.rejected(bluelight_ingest::validate::Reject::Forbidden),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_needs_a_certificate_from_the_client_ca_that_a_token_maps() {
    let (server, clients, other) = (Ca::new("server"), Ca::new("devices"), Ca::new("elsewhere"));
    let s = mutual_tls_server(&server, &clients, "mutual").await;
    let ingest = s.devices.ingest;

    // A device with a certificate a token maps: its fixes arrive.
    let amb = clients.device("amb-7", &server);
    send_device(
        ingest,
        Some(&amb),
        &[frame(7, "AMB-7", Agency::Ambulance, Status::Available, 50.90)],
    )
    .await
    .expect("a mapped device is served");
    until_placed(&server, s.http, "AMB-7").await;

    // Plaintext, no certificate, another CA's certificate, a certificate
    // no token maps: each connection refused, nothing placed, counted.
    let refused_before = counter(&s).await.0;
    let tries: [(&str, Option<TlsConnector>); 4] = [
        ("PLAIN-1", None),
        ("NOCERT-1", Some(server.connector())),
        ("OTHER-1", Some(other.device("amb-8", &server))),
        ("STRANGER-1", Some(clients.device("stranger", &server))),
    ];
    for (i, (id, connector)) in tries.iter().enumerate() {
        let _ = send_device(
            ingest,
            connector.as_ref(),
            &[frame(
                100 + i as u64,
                id,
                Agency::Ambulance,
                Status::Emergency,
                50.91,
            )],
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (id, _) in &tries {
        assert_eq!(unit(&server, s.http, id).await.0, 404, "{id} was placed");
    }
    assert!(
        counter(&s).await.0 >= refused_before + 4,
        "refusals not counted: {:?}",
        counter(&s).await
    );
    s.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambulance_device_cannot_place_or_take_over_a_police_unit() {
    let (server, clients) = (Ca::new("server"), Ca::new("devices"));
    let s = mutual_tls_server(&server, &clients, "spoof").await;
    let ingest = s.devices.ingest;
    // The gateway (all agencies) places a police car.
    let gw = clients.device("gw-1", &server);
    send_device(
        ingest,
        Some(&gw),
        &[frame(555, "P-1", Agency::Police, Status::Available, 50.92)],
    )
    .await
    .expect("gateway");
    until_placed(&server, s.http, "P-1").await;
    // The reproducer, from an ambulance crew's device: a police
    // unit in emergency at a made-up place, a new police unit, and the
    // police car's key renamed as an ambulance. None of it lands; an
    // ambulance of its own, sent beside them, does.
    let amb = clients.device("amb-3", &server);
    send_device(
        ingest,
        Some(&amb),
        &[
            frame(555, "P-1", Agency::Police, Status::Emergency, 51.5),
            frame(556, "P-2", Agency::Police, Status::Emergency, 51.5),
            frame(555, "AMB-X", Agency::Ambulance, Status::Emergency, 51.5),
            frame(3, "AMB-3", Agency::Ambulance, Status::Available, 50.93),
        ],
    )
    .await
    .expect("the ambulance device is served");
    until_placed(&server, s.http, "AMB-3").await;
    let (_, p1) = unit(&server, s.http, "P-1").await;
    assert_eq!(p1["properties"]["status"], "available", "{p1}");
    assert_eq!(p1["properties"]["agency"], "police", "{p1}");
    assert!(
        (p1["properties"]["lat"].as_f64().unwrap_or(0.0) - 50.92).abs() < 1e-9,
        "{p1}"
    );
    assert_eq!(unit(&server, s.http, "P-2").await.0, 404);
    assert_eq!(unit(&server, s.http, "AMB-X").await.0, 404);
    assert!(
        counter(&s).await.1 >= 3,
        "forbidden not counted: {:?}",
        counter(&s).await
    );

    // The same holds over HTTP for a token limited to ambulances.
    let batch = json!({"fixes": [
        {"id": "P-1", "lat": 51.5, "lon": -1.4, "time_ms": support::open::now_ms(), "agency": "police", "status": "emergency"},
        {"id": "AMB-9", "lat": 50.94, "lon": -1.4, "time_ms": support::open::now_ms(), "agency": "ambulance"},
    ]});
    let (status, reply) = https_json(&server, s.http, "POST", "/v1/fixes", Some(&batch), AMB_INGEST).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(
        reply["errors"][0],
        json!({"index": 0, "reason": "forbidden"}),
        "{reply}"
    );
    let (_, p1) = unit(&server, s.http, "P-1").await;
    assert_eq!(p1["properties"]["status"], "available", "{p1}");
    s.shutdown(Duration::from_secs(5)).await;
}

/// Reads a CoT out connection (TLS with `device`'s certificate) for `for_`,
/// or until `enough` holds; what it was sent, as text.
async fn cot_out_text(
    addr: SocketAddr,
    device: &TlsConnector,
    for_: Duration,
    enough: impl Fn(&str) -> bool,
) -> String {
    let tcp = TcpStream::connect(addr).await.expect("connects");
    let name = ServerName::try_from("localhost").expect("name");
    let mut s = device.connect(name, tcp).await.expect("handshake");
    let deadline = Instant::now() + for_;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while Instant::now() < deadline && !enough(&String::from_utf8_lossy(&got)) {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Issue 17: CoT out to a device whose certificate maps to a token limited
/// to an agency is that agency's units only (it got no picture at all);
/// a device of an unlimited token is sent every unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_out_to_an_agency_limited_device_is_its_agencies_units_only() {
    let (server, clients) = (Ca::new("server"), Ca::new("devices"));
    let s = mutual_tls_server(&server, &clients, "cot-out-agencies").await;
    let cot = s.devices.cot_tcp.expect("a CoT listener");
    let gw = clients.device("gw-1", &server);
    send_device(
        s.devices.ingest,
        Some(&gw),
        &[
            frame(555, "P-1", Agency::Police, Status::Available, 50.92),
            frame(3, "AMB-3", Agency::Ambulance, Status::Available, 50.93),
        ],
    )
    .await
    .expect("gateway");
    until_placed(&server, s.http, "P-1").await;
    until_placed(&server, s.http, "AMB-3").await;
    let both = |t: &str| t.contains("uid=\"P-1\"") && t.contains("uid=\"AMB-3\"");
    let all = cot_out_text(cot, &gw, Duration::from_secs(10), both).await;
    assert!(both(&all), "the gateway (read, every agency) sees both: {all}");
    let medic = clients.device("medic-7", &server);
    // Past the first whole picture and a second's changes: P-1 never comes.
    let seen = cot_out_text(cot, &medic, Duration::from_secs(3), |_| false).await;
    assert!(
        seen.contains("uid=\"AMB-3\""),
        "the medic sees its agency's unit: {seen}"
    );
    assert!(!seen.contains("P-1"), "the medic sees no police unit: {seen}");
    s.shutdown(Duration::from_secs(5)).await;
}
