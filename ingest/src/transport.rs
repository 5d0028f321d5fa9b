//! Transports: UDP (one `FixBatch` a datagram), TCP (a stream of frames,
//! each a 4-byte little-endian length and a `FixBatch`), Cursor-on-Target
//! XML over TCP, NMEA 0183 over TCP and UDP, and TETRA LIP over UDP.
//!
//! Every listener has a connection cap, an idle timeout and a maximum frame
//! size. A TCP frame whose body does not decode is counted and skipped, and
//! the connection goes on (its length prefix says where the next frame
//! starts); only a length over the limit or a frame cut short closes it,
//! with a logged reason. A bad UDP datagram is counted and dropped alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use crate::batch::IngestBatch;
use crate::decode::decode_flatbuffers;
use crate::nmea::{NmeaError, NmeaSession, Sentence};
use crate::queue::IngestQueue;
use crate::tls::{DeviceAuthority, DeviceGrant, Tls};
use crate::validate::Reject;

/// Limits of a listener, and the security of its connections.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Most concurrent connections (TCP); more wait in the accept backlog.
    pub max_connections: usize,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Largest frame accepted, bytes.
    pub max_frame_bytes: usize,
    /// The networks a UDP datagram must come from (`ingest_allow`); any
    /// when `None`. A device sends no token, so on an open network this is
    /// what stops anyone who can reach the port from placing units.
    pub udp_allow: Option<Arc<[ipnet::IpNet]>>,
    /// With it, the TCP listeners speak TLS (mutual when it has a client CA).
    pub tls: Option<Arc<Tls>>,
    /// Who may connect to a TCP listener and send what (from the client
    /// certificate); `None`: anyone, anything (no tokens are configured).
    pub authority: Option<Arc<dyn DeviceAuthority>>,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(120),
            max_frame_bytes: 4 << 20,
            udp_allow: None,
            tls: None,
            authority: None,
        }
    }
}

/// A device connection's byte stream: plain TCP, or TLS over it.
pub trait DeviceIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> DeviceIo for T {}

/// A device connection, boxed so that one reader serves TCP and TLS alike
/// (a virtual call a read, not a fix).
pub type DeviceStream = Box<dyn DeviceIo>;

/// A device connection as a connection handler gets it: its stream, where
/// it comes from, and what it may send.
pub struct DeviceConnection {
    /// The bytes.
    pub stream: DeviceStream,
    /// The peer's address.
    pub peer: SocketAddr,
    /// What it may do.
    pub grant: DeviceGrant,
}

/// Serves UDP until the socket fails or the queue closes.
pub async fn serve_udp(socket: UdpSocket, queue: IngestQueue, limits: ListenerLimits) {
    udp_loop(socket, queue, limits, false, |datagram, queue, batch| {
        if decode_flatbuffers(datagram, &queue.validation, queue.now_ms(), batch).is_err() {
            queue.counters.reject(Reject::BadFrame);
        }
    })
    .await;
}

/// Serves NMEA 0183 over UDP (`--nmea-udp`): each datagram names its unit
/// with `$PBLU` first, then its sentences.
pub async fn serve_nmea_udp(socket: UdpSocket, queue: IngestQueue, limits: ListenerLimits) {
    udp_loop(socket, queue, limits, true, |datagram, queue, batch| {
        let mut session = NmeaSession::whole();
        let (v, now) = (&queue.validation, queue.now_ms());
        for (i, line) in split_lines(datagram).enumerate() {
            count_nmea(queue, session.line(line, i as u32, v, now, batch));
        }
        session.flush(v, now, batch);
    })
    .await;
}

/// Serves TETRA LIP over UDP (`--lip-udp`): each datagram is the sender's
/// ISSI (3 bytes, big-endian) and one LIP PDU.
pub async fn serve_lip_udp(socket: UdpSocket, queue: IngestQueue, limits: ListenerLimits) {
    udp_loop(
        socket,
        queue,
        limits,
        true,
        |datagram, queue, batch| match crate::lip::decode_lip(
            datagram,
            0,
            &queue.validation,
            queue.now_ms(),
            batch,
        ) {
            Ok(crate::lip::Pdu::Location) => {}
            Ok(crate::lip::Pdu::Ignored) => {
                queue.counters.ignored.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                queue.counters.reject(e.reason());
                tracing::debug!(error = %e, "refused a LIP datagram");
            }
        },
    )
    .await;
}

/// Serves Cursor-on-Target over UDP (`--cot-udp`): one event a datagram,
/// XML or TAK protocol version 1 mesh (`0xbf 0x01 0xbf`, then the
/// protobuf).
pub async fn serve_cot_udp(socket: UdpSocket, queue: IngestQueue, limits: ListenerLimits) {
    let mut decoder = crate::tak::TakDecoder::new();
    udp_loop(socket, queue, limits, true, move |datagram, queue, batch| {
        let (v, now) = (&queue.validation, queue.now_ms());
        let not_a_unit = match crate::tak::mesh_payload(datagram) {
            Some(payload) => decoder
                .decode(payload, 0, v, now, batch)
                .map(|c| c == crate::tak::Content::NotAUnit)
                .map_err(|e| e.to_string()),
            None => std::str::from_utf8(datagram)
                .map_err(|e| e.to_string())
                .and_then(|xml| {
                    crate::cot::decode_cot(xml, 0, v, now, batch)
                        .map(|d| d == crate::cot::Decoded::NotAUnit)
                        .map_err(|e| e.to_string())
                }),
        };
        match not_a_unit {
            Ok(true) => {
                queue.counters.ignored.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) => {
                queue.counters.reject(Reject::BadFrame);
                tracing::debug!(error = %e, "refused a CoT datagram");
            }
        }
    })
    .await;
}

/// Receives datagrams and decodes each with `decode` (which counts its
/// own refusals) into a batch handed on without waiting.
///
/// A FlatBuffers datagram is a batch of its own (its units are applied
/// before its fixes); a full queue drops it and counts the drop. With
/// `coalesce` (device protocols: a fix or a few a datagram), the datagrams
/// already waiting go into the same batch, up to [`UDP_COALESCE`] fixes,
/// so a burst is one batch and nothing waits for more to come; and when
/// the queue is full the batch is kept and added to, up to
/// [`UDP_HOLD_MAX`] fixes, and offered again as datagrams arrive or
/// [`UDP_RETRY`] passes: the writer then takes larger batches, at less
/// cost a fix, instead of the fixes being dropped (at 100k single-fix
/// datagrams a second, 5% were).
async fn udp_loop(
    socket: UdpSocket,
    queue: IngestQueue,
    limits: ListenerLimits,
    coalesce: bool,
    mut decode: impl FnMut(&[u8], &IngestQueue, &mut IngestBatch),
) {
    let mut buf = vec![0u8; limits.max_frame_bytes.min(65_535)];
    let mut batch = queue.batch();
    loop {
        let received = if batch.fixes.is_empty() && batch.errors.is_empty() {
            socket.recv_from(&mut buf).await.map(Some)
        } else {
            // Holding fixes the queue had no room for: try again soon even
            // if nothing more arrives.
            match tokio::time::timeout(UDP_RETRY, socket.recv_from(&mut buf)).await {
                Ok(r) => r.map(Some),
                Err(_) => Ok(None),
            }
        };
        let Ok(received) = received else {
            return;
        };
        if let Some((n, from)) = received {
            batch.received.get_or_insert_with(std::time::Instant::now);
            if allowed(&limits, from, &queue) {
                decode(&buf[..n], &queue, &mut batch);
            }
            let limit = if batch.fixes.len() >= UDP_COALESCE {
                UDP_HOLD_MAX
            } else {
                UDP_COALESCE
            };
            while coalesce && batch.fixes.len() + batch.errors.len() < limit {
                match socket.try_recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if allowed(&limits, from, &queue) {
                            decode(&buf[..n], &queue, &mut batch);
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        if batch.fixes.is_empty() && batch.errors.is_empty() {
            continue;
        }
        if !coalesce {
            queue.try_send(std::mem::replace(&mut batch, queue.batch()));
            continue;
        }
        match queue.offer(std::mem::take(&mut batch)) {
            None => batch = queue.batch(),
            Some(held) if held.fixes.len() >= UDP_HOLD_MAX => {
                queue
                    .counters
                    .udp_dropped
                    .fetch_add(held.fixes.len() as u64, Ordering::Relaxed);
                batch = queue.batch();
            }
            Some(held) => batch = held,
        }
    }
}

/// Whether a datagram from `from` may be read (counted when not).
fn allowed(limits: &ListenerLimits, from: SocketAddr, queue: &IngestQueue) -> bool {
    let ok = limits.udp_allow.as_deref().is_none_or(|nets| {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = from.ip().to_canonical();
        nets.iter().any(|n| n.contains(&ip))
    });
    if !ok {
        queue.counters.udp_refused.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// Most fixes a batch of coalesced device datagrams holds while the queue
/// has room.
pub const UDP_COALESCE: usize = 1024;

/// Most fixes a device listener holds while the queue is full; past it,
/// they are dropped and counted.
pub const UDP_HOLD_MAX: usize = 64 * 1024;

/// How soon fixes held for a full queue are offered again.
pub const UDP_RETRY: Duration = Duration::from_millis(2);

/// The lines of a buffer, split on `\n` (a `\r` before it is the
/// sentence's to trim).
pub fn split_lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(buf);
    std::iter::from_fn(move || {
        let b = rest?;
        match memchr::memchr(b'\n', b) {
            Some(i) => {
                rest = Some(&b[i + 1..]);
                Some(&b[..i])
            }
            None => {
                rest = None;
                Some(b)
            }
        }
    })
}

/// Counts what an NMEA line was, when it was not a position or a unit.
fn count_nmea(queue: &IngestQueue, line: Result<Sentence, NmeaError>) {
    match line {
        Ok(Sentence::Ignored) => {
            queue.counters.ignored.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) => {}
        Err(e) => {
            queue.counters.reject(e.reason());
            tracing::debug!(error = %e, "refused an NMEA sentence");
        }
    }
}

/// Serves TCP framed `FixBatch`es until the listener fails.
pub async fn serve_tcp(listener: TcpListener, queue: IngestQueue, limits: ListenerLimits) {
    accept_loop(listener, queue, limits, "tcp", |conn, queue, limits| async move {
        tcp_connection(conn, &queue, &limits).await
    })
    .await;
}

/// How long an accept loop waits after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections under the cap and runs `conn` on each, after the
/// TLS handshake when the listener has TLS; a connection that ends with
/// `Err(reason)` is counted and logged, the others go on.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    queue: IngestQueue,
    limits: ListenerLimits,
    label: &'static str,
    conn: F,
) where
    F: Fn(DeviceConnection, IngestQueue, ListenerLimits) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let conn = Arc::new(conn);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors (EMFILE) and the like: retrying at
                // once would spin a core and starve the rest of the server.
                queue.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(transport = label, error = %e, "cannot accept; retrying in 100 ms");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (queue, limits, conn) = (queue.clone(), limits.clone(), conn.clone());
        tokio::spawn(async move {
            let counters = queue.counters.clone();
            // The handshake happens here, in the connection's own task, so
            // a slow or silent client holds up no one else.
            match secure(stream, peer, &limits).await {
                Ok(device) => {
                    if let Err(reason) = conn(device, queue, limits).await {
                        counters
                            .connections_closed_bad_frame
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(transport = label, %peer, %reason, "ingest connection closed for a bad frame");
                    }
                }
                Err(reason) => {
                    counters.devices_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(transport = label, %peer, %reason, "device connection refused");
                }
            }
            drop(permit);
        });
    }
}

/// The TLS handshake (when the listener has TLS) and the grant of what the
/// connection may send; `Err` says why it is refused.
async fn secure(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: &ListenerLimits,
) -> Result<DeviceConnection, String> {
    // The stream, and the common name of the client certificate it
    // presented, if it presented one (`Some(None)`: a certificate without).
    let (stream, certificate): (DeviceStream, Option<Option<String>>) = match &limits.tls {
        None => (Box::new(stream), None),
        Some(tls) => {
            let handshake = tls.device_acceptor().accept(stream);
            let s = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                Err(_) => return Err("the TLS handshake timed out".into()),
                Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
                Ok(Ok(s)) => s,
            };
            let cn = s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(crate::tls::common_name);
            (Box::new(s), cn)
        }
    };
    let grant = match (&limits.authority, certificate) {
        (None, _) => DeviceGrant::open(),
        (Some(a), Some(cn)) => a.grant(cn.as_deref()).ok_or_else(|| match cn {
            Some(name) => format!("no token maps the client certificate named {name}"),
            None => "a client certificate without a common name".to_owned(),
        })?,
        (Some(a), None) => a
            .anonymous()
            .ok_or("a device connection without a client certificate")?,
    };
    Ok(DeviceConnection { stream, peer, grant })
}

/// Longest a device's TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads frames from one connection. `Ok` on a clean close or idle timeout;
/// `Err(reason)` when the stream can no longer be followed (a length over
/// the limit, or a frame cut short). A frame whose body does not decode is
/// counted and skipped: its length prefix says where the next one starts,
/// so the good frames behind it still arrive.
async fn tcp_connection(
    conn: DeviceConnection,
    queue: &IngestQueue,
    limits: &ListenerLimits,
) -> Result<(), String> {
    let DeviceConnection {
        mut stream, grant, ..
    } = conn;
    let mut frame = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match tokio::time::timeout(limits.idle_timeout, stream.read_exact(&mut len)).await {
            Err(_) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > limits.max_frame_bytes {
            queue.counters.reject(Reject::BadFrame);
            return Err(format!(
                "frame of {n} bytes exceeds the {} byte limit",
                limits.max_frame_bytes
            ));
        }
        frame.resize(n, 0);
        match tokio::time::timeout(limits.idle_timeout, stream.read_exact(&mut frame)).await {
            Err(_) => return Err("frame body timed out".into()),
            Ok(Err(e)) => return Err(format!("connection ended inside a frame: {e}")),
            Ok(Ok(_)) => {}
        }
        let mut batch = queue.batch();
        batch.received = Some(std::time::Instant::now());
        batch.agencies = grant.agencies;
        if let Err(e) = decode_flatbuffers(&frame, &queue.validation, queue.now_ms(), &mut batch) {
            queue.counters.reject(Reject::BadFrame);
            tracing::debug!(error = %e, "skipped a TCP frame that does not decode");
            continue;
        }
        if queue.send(batch).await.is_err() {
            return Ok(());
        }
    }
}

/// Serves Cursor-on-Target over TCP (`--cot-tcp`, conventionally port
/// 8087): XML, or TAK protocol version 1 streaming, chosen per connection
/// by its first byte (`0xbf` is TAK protocol). XML is split on `</event>`;
/// a malformed event is counted and skipped (the next `</event>`
/// resynchronises the stream), an event longer than the frame limit closes
/// the connection. A TAK message that does not decode is counted and
/// skipped (its length says where the next starts); a stream whose framing
/// is lost is closed.
///
/// With an `outlet` (CoT out, `--cot-out`), each connection's sending half
/// is handed to it as the connection opens: the server then sends the live
/// picture back on the same connection, as TAK clients expect of a server.
pub async fn serve_cot_tcp(
    listener: TcpListener,
    queue: IngestQueue,
    limits: ListenerLimits,
    outlet: Option<Arc<dyn CotOutlet>>,
) {
    accept_loop(listener, queue, limits, "cot", move |conn, queue, limits| {
        let outlet = outlet.clone();
        async move { cot_connection(conn, &queue, &limits, outlet.as_deref()).await }
    })
    .await;
}

/// One thing to send on a CoT connection, in both encodings: its writer
/// sends whichever the connection speaks when the frame's turn comes (so
/// a switch to TAK protocol v1 falls exactly between two frames).
#[derive(Debug, Clone)]
pub struct CotFrame {
    /// XML events, each after its XML declaration.
    pub xml: Arc<[u8]>,
    /// The same as TAK protocol v1 streaming messages.
    pub v1: Arc<[u8]>,
    /// The connection speaks TAK protocol v1 after this frame (the
    /// answer to a client's request for it).
    pub then_v1: bool,
}

/// Frames for a CoT connection's writer.
pub type CotSender = tokio::sync::mpsc::Sender<CotFrame>;

/// A CoT client that takes no bytes for this long is dropped.
pub const COT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames queued for one CoT connection before its senders wait.
const COT_QUEUE: usize = 8;

/// Sends `frames` on `write` until they end or the client takes nothing
/// for [`COT_SEND_TIMEOUT`]; `v1` says which encoding the connection
/// speaks (the reader sets it when the client's first byte is TAK
/// protocol; this sets it after a frame that switches). Notifies
/// `stopped` when it ends.
pub async fn cot_writer(
    mut write: impl AsyncWrite + Unpin,
    mut frames: tokio::sync::mpsc::Receiver<CotFrame>,
    v1: Arc<std::sync::atomic::AtomicBool>,
    stopped: Arc<tokio::sync::Notify>,
) {
    use tokio::io::AsyncWriteExt as _;
    while let Some(f) = frames.recv().await {
        let bytes = if v1.load(Ordering::Relaxed) { &f.v1 } else { &f.xml };
        match tokio::time::timeout(COT_SEND_TIMEOUT, write.write_all(bytes)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
        if f.then_v1 {
            v1.store(true, Ordering::Relaxed);
        }
    }
    // notify_one keeps the permit if the reader is not waiting yet.
    stopped.notify_one();
}

/// A frame queue and its writer for `write`: the sender, and what the
/// writer notifies once it stops.
pub fn cot_channel(
    write: impl AsyncWrite + Unpin + Send + 'static,
    v1: Arc<std::sync::atomic::AtomicBool>,
) -> (CotSender, Arc<tokio::sync::Notify>) {
    let (tx, rx) = tokio::sync::mpsc::channel(COT_QUEUE);
    let stopped = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(cot_writer(write, rx, v1, stopped.clone()));
    (tx, stopped)
}

/// Where the sending side of a CoT connection goes, when the server sends
/// the live picture back (CoT out lives in the api, which builds this
/// before the listener: the listener never calls up into it otherwise).
pub trait CotOutlet: Send + Sync {
    /// A connection opened: `send` queues frames for it, `peer` is its
    /// address, `grant` what it may see. Returns whether it takes the
    /// connection: the reading side then waits on the client without an
    /// idle timeout (a TAK client may only listen) and ends when the
    /// client's writer stops.
    fn attach(&self, send: CotSender, peer: SocketAddr, grant: &DeviceGrant) -> bool;
}

async fn cot_connection(
    conn: DeviceConnection,
    queue: &IngestQueue,
    limits: &ListenerLimits,
    outlet: Option<&dyn CotOutlet>,
) -> Result<(), String> {
    let DeviceConnection { stream, peer, grant } = conn;
    let (mut stream, write) = tokio::io::split(stream);
    let speaks_v1 = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (send, stopped) = cot_channel(write, speaks_v1.clone());
    // As a TAK Server does: the versions it speaks, offered once (XML; a
    // client asks for one with `t-x-takp-q`).
    let _ = send.try_send(crate::tak::control_frame(
        crate::tak::ControlReply::Offer,
        queue.now_ms(),
    ));
    let listening = outlet.is_some_and(|o| o.attach(send.clone(), peer, &grant));
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut tak = None;
    let mut decoder = crate::tak::TakDecoder::new();
    loop {
        let read = if listening {
            tokio::select! {
                r = stream.read(&mut chunk) => Ok(r),
                () = stopped.notified() => return Ok(()),
            }
        } else {
            tokio::time::timeout(limits.idle_timeout, stream.read(&mut chunk)).await
        };
        let n = match read {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let v1 = *tak.get_or_insert_with(|| {
            let v1 = buf.first() == Some(&crate::tak::MAGIC);
            if v1 {
                speaks_v1.store(true, Ordering::Relaxed);
            }
            v1
        });
        let mut batch = queue.batch();
        batch.received = Some(std::time::Instant::now());
        batch.agencies = grant.agencies;
        let (v, now) = (&queue.validation, queue.now_ms());
        let mut index = 0u32;
        let mut replies: Vec<crate::tak::ControlReply> = Vec::new();
        let used = if v1 {
            crate::tak::split_stream(&buf, limits.max_frame_bytes, |payload| {
                match decoder.decode(payload, index, v, now, &mut batch) {
                    Ok(crate::tak::Content::Ping) => replies.push(crate::tak::ControlReply::Pong),
                    Ok(crate::tak::Content::NotAUnit) => {
                        queue.counters.ignored.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        queue.counters.reject(e.reason());
                        tracing::debug!(error = %e, "skipped a TAK message");
                    }
                }
                index += 1;
            })
            .map_err(|e| {
                queue.counters.reject(Reject::BadFrame);
                e.to_string()
            })?
        } else {
            let used = crate::cot::split_events(&buf, |event| {
                let decoded = std::str::from_utf8(event)
                    .map_err(|e| e.to_string())
                    .and_then(|xml| {
                        crate::cot::decode_cot(xml, index, v, now, &mut batch).map_err(|e| e.to_string())
                    });
                match decoded {
                    Ok(crate::cot::Decoded::Control(crate::cot::Control::Ping)) => {
                        replies.push(crate::tak::ControlReply::Pong);
                    }
                    Ok(crate::cot::Decoded::Control(crate::cot::Control::AskV1)) => {
                        replies.push(crate::tak::ControlReply::Accept);
                    }
                    Ok(crate::cot::Decoded::NotAUnit) => {
                        queue.counters.ignored.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => queue.counters.reject(Reject::BadFrame),
                }
                index += 1;
            });
            if buf.len() - used > limits.max_frame_bytes {
                queue.counters.reject(Reject::BadFrame);
                return Err(format!("no </event> within {} bytes", limits.max_frame_bytes));
            }
            used
        };
        buf.drain(..used);
        for reply in replies {
            // A client asking for v1 sends nothing more until it has the
            // answer, and v1 from the next byte on: so do we.
            if reply == crate::tak::ControlReply::Accept {
                tak = Some(true);
            }
            // A client too slow to take an answer is not waited for.
            let _ = send.try_send(crate::tak::control_frame(reply, now));
        }
        if (!batch.fixes.is_empty() || !batch.errors.is_empty()) && queue.send(batch).await.is_err() {
            return Ok(());
        }
    }
}

/// Serves NMEA 0183 over TCP (`--nmea-tcp`, conventionally port 10110):
/// lines ending in LF or CRLF, split across reads as they come, the unit
/// named by `$PBLU` first. A garbage line is counted and passed over; a
/// line longer than [`NMEA_MAX_LINE`] is dropped up to its end.
pub async fn serve_nmea_tcp(listener: TcpListener, queue: IngestQueue, limits: ListenerLimits) {
    accept_loop(
        listener,
        queue,
        limits,
        "nmea",
        |conn, queue, limits| async move { nmea_connection(conn, &queue, &limits).await },
    )
    .await;
}

/// Longest NMEA line taken, bytes (the standard's limit is 82).
pub const NMEA_MAX_LINE: usize = 1024;

/// How long the half of an RMC/GGA pair waits for the other before it
/// goes alone.
pub const NMEA_PAIR_WAIT: Duration = Duration::from_millis(200);

async fn nmea_connection(
    conn: DeviceConnection,
    queue: &IngestQueue,
    limits: &ListenerLimits,
) -> Result<(), String> {
    let DeviceConnection {
        mut stream, grant, ..
    } = conn;
    let mut session = NmeaSession::new();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    // Inside a line over the limit: drop bytes up to its end.
    let mut skipping = false;
    let mut line_no = 0u32;
    loop {
        let wait = if session.holds() {
            NMEA_PAIR_WAIT
        } else {
            limits.idle_timeout
        };
        let read = tokio::time::timeout(wait, stream.read(&mut chunk)).await;
        let mut batch = queue.batch();
        batch.received = Some(std::time::Instant::now());
        batch.agencies = grant.agencies;
        let (v, now) = (&queue.validation, queue.now_ms());
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            Err(_) if session.holds() => {
                // The pair did not come: the half goes alone.
                session.flush(v, now, &mut batch);
                if queue.send(batch).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            _ => {
                session.flush(v, now, &mut batch);
                if !batch.fixes.is_empty() || !batch.errors.is_empty() {
                    let _ = queue.send(batch).await;
                }
                return Ok(());
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(end) = memchr::memchr(b'\n', &buf[start..]) {
            let line = &buf[start..start + end];
            start += end + 1;
            if std::mem::take(&mut skipping) {
                continue;
            }
            count_nmea(queue, session.line(line, line_no, v, now, &mut batch));
            line_no = line_no.wrapping_add(1);
        }
        buf.drain(..start);
        if buf.len() > NMEA_MAX_LINE {
            if !skipping {
                queue.counters.reject(Reject::BadFrame);
            }
            buf.clear();
            skipping = true;
        }
        if (!batch.fixes.is_empty() || !batch.errors.is_empty()) && queue.send(batch).await.is_err() {
            return Ok(());
        }
    }
}

/// UDP receive buffer requested: bursts wait in the kernel rather than being
/// dropped there (the kernel caps it at `net.core.rmem_max`).
pub const UDP_RECV_BUFFER: usize = 32 << 20;

/// Binds a UDP socket with a large receive buffer; returns it and the buffer
/// size the kernel granted.
///
/// # Errors
/// The address cannot be bound.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<(UdpSocket, usize)> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    let _ = sock.set_recv_buffer_size(UDP_RECV_BUFFER);
    let granted = sock.recv_buffer_size().unwrap_or(0);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok((UdpSocket::from_std(sock.into())?, granted))
}

/// UDP datagrams the kernel dropped for a full receive buffer, machine-wide
/// (`RcvbufErrors` in `/proc/net/snmp`), where the platform tells.
pub fn kernel_udp_drops() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

/// Binds UDP and TCP on the same port (PROTOCOL.md: both on the ingest
/// address; port 0 picks one free for both). Returns the bound address.
///
/// # Errors
/// The address cannot be bound.
pub async fn bind_ingest(addr: SocketAddr) -> std::io::Result<(TcpListener, UdpSocket, SocketAddr)> {
    // With port 0 the TCP port chosen may be taken for UDP: try a few.
    for _ in 0..16 {
        let tcp = TcpListener::bind(addr).await?;
        let bound = tcp.local_addr()?;
        match bind_udp(bound) {
            Ok((udp, _)) => return Ok((tcp, udp, bound)),
            Err(e) if addr.port() != 0 => return Err(e),
            Err(_) => continue,
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port free for both TCP and UDP",
    ))
}
