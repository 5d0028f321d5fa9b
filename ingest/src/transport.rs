//! Transports: UDP (one `FixBatch` a datagram) and TCP (a stream of frames,
//! each a 4-byte little-endian length and a `FixBatch`).
//!
//! Every listener has a connection cap, an idle timeout and a maximum frame
//! size. A garbage or oversized frame on TCP closes that connection with a
//! logged reason (the stream can no longer be trusted to be in step); other
//! connections go on. A bad UDP datagram is counted and dropped alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::decode::decode_flatbuffers;
use crate::pipeline::PipelineHandle;
use crate::validate::Reject;

/// Limits of a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerLimits {
    /// Most concurrent connections (TCP); more wait in the accept backlog.
    pub max_connections: usize,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Largest frame accepted, bytes.
    pub max_frame_bytes: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(120),
            max_frame_bytes: 4 << 20,
        }
    }
}

/// The server clock, milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Serves UDP until the socket fails or the pipeline stops.
pub async fn serve_udp(socket: UdpSocket, pipeline: PipelineHandle, limits: ListenerLimits) {
    let mut buf = vec![0u8; limits.max_frame_bytes.min(65_535)];
    loop {
        let Ok((n, _from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let mut batch = pipeline.batch();
        match decode_flatbuffers(&buf[..n], &pipeline.validation, now_ms(), &mut batch) {
            Ok(()) => {
                pipeline.try_send(batch);
            }
            Err(_) => pipeline.counters.reject(Reject::BadFrame),
        }
    }
}

/// Serves TCP framed `FixBatch`es until the listener fails.
pub async fn serve_tcp(listener: TcpListener, pipeline: PipelineHandle, limits: ListenerLimits) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (pipeline, limits) = (pipeline.clone(), limits.clone());
        tokio::spawn(async move {
            if let Err(reason) = tcp_connection(stream, &pipeline, &limits).await {
                pipeline
                    .counters
                    .connections_closed_bad_frame
                    .fetch_add(1, Ordering::Relaxed);
                eprintln!("ingest tcp {peer}: closed: {reason}");
            }
            drop(permit);
        });
    }
}

/// Reads frames from one connection. `Ok` on a clean close or idle timeout;
/// `Err(reason)` when a frame was bad.
async fn tcp_connection(
    mut stream: TcpStream,
    pipeline: &PipelineHandle,
    limits: &ListenerLimits,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut frame = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match tokio::time::timeout(limits.idle_timeout, stream.read_exact(&mut len)).await {
            Err(_) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > limits.max_frame_bytes {
            pipeline.counters.reject(Reject::BadFrame);
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
        let mut batch = pipeline.batch();
        if let Err(e) = decode_flatbuffers(&frame, &pipeline.validation, now_ms(), &mut batch) {
            pipeline.counters.reject(Reject::BadFrame);
            return Err(e.to_string());
        }
        if pipeline.send(batch).await.is_err() {
            return Ok(());
        }
    }
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
        match UdpSocket::bind(bound).await {
            Ok(udp) => return Ok((tcp, udp, bound)),
            Err(e) if addr.port() != 0 => return Err(e),
            Err(_) => continue,
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port free for both TCP and UDP",
    ))
}
