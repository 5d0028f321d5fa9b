//! End to end: fixes as FlatBuffers frames over real loopback sockets into
//! the engine (100k units, 1k fences), sustained.
//!
//! `cargo bench -p bluelight-benches --bench ingest_e2e`
//! Environment: `BLUELIGHT_E2E_SECONDS` (default 60), `BLUELIGHT_E2E_UDP_RATE`
//! (fixes/s for the UDP run; default 1,000,000, the figure).
//!
//! The sender pre-encodes one frame per 1,000 units and, each round, patches
//! times and positions in place (each fix moves its unit 1–30 m), so sending
//! costs little next to the server. TCP: as fast as the server takes, with
//! the count of fixes sent, accepted and refused; any difference is loss.
//! UDP: paced at a rate, loss counted by the server (queue full) or not
//! (kernel buffer), reported separately.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bluelight_benches::fixture::{T0, World, WorldSpec};
use bluelight_engine::{Fix, SystemClock};
use bluelight_ingest::decode::encode_flatbuffers;
use bluelight_ingest::pipeline::{self, PipelineConfig};
use bluelight_ingest::queue::IngestQueue;
use bluelight_ingest::transport::{ListenerLimits, bind_ingest, serve_tcp, serve_udp};
use bluelight_ingest::validate::{Reject, ValidationConfig};
use bluelight_ingest::writer::Discard;
use tokio::io::AsyncWriteExt;

/// Frames covering every unit, with where to patch each fix.
struct Frames {
    frames: Vec<Vec<u8>>,
    /// Byte offset of the first `Fix` struct in each frame.
    offsets: Vec<usize>,
    /// Per unit: (dlat, dlon) per round.
    steps: Vec<(f64, f64)>,
    round: i64,
}

const FIX_SIZE: usize = std::mem::size_of::<bluelight_ingest::wire::Fix>();

impl Frames {
    fn new(world: &World) -> Self {
        let mut frames = Vec::new();
        let mut offsets = Vec::new();
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        for chunk in world.movers.chunks(1000).enumerate() {
            let (c, movers) = chunk;
            let fixes: Vec<(u64, Fix)> = movers
                .iter()
                .enumerate()
                .map(|(i, m)| ((c * 1000 + i) as u64, Fix::at(m.time_ms, m.lat, m.lon)))
                .collect();
            let buf = encode_flatbuffers(&mut fbb, "e2e", &fixes, &[]).to_vec();
            let batch = bluelight_ingest::wire::root_as_fix_batch(&buf).unwrap_or_else(|e| panic!("{e}"));
            let first = batch
                .fixes()
                .map(|v| v.bytes().as_ptr() as usize - buf.as_ptr() as usize)
                .unwrap_or(0);
            offsets.push(first);
            frames.push(buf);
        }
        let steps = world
            .movers
            .iter()
            .map(|m| {
                let d = 1.0 + (m.heading.abs() % 29.0);
                let h = m.heading.to_radians();
                (
                    d * h.cos() / 111_320.0,
                    d * h.sin() / (111_320.0 * m.lat.to_radians().cos()),
                )
            })
            .collect();
        Self {
            frames,
            offsets,
            steps,
            round: 0,
        }
    }

    /// Calls `send(frame, fixes_in_it)` with frames in order, advancing
    /// each before it goes, until `send` returns false.
    async fn for_each(&mut self, base_ms: i64, mut send: impl AsyncFnMut(&[u8], u64) -> bool) {
        loop {
            self.round += 1;
            for f in 0..self.frames.len() {
                self.advance(f, base_ms);
                let n = ((self.frames[f].len() - self.offsets[f]) / FIX_SIZE).min(1000) as u64;
                if !send(&self.frames[f], n).await {
                    return;
                }
            }
        }
    }

    /// Moves every fix of frame `f` one step and one second on.
    fn advance(&mut self, f: usize, base_ms: i64) {
        let off = self.offsets[f];
        let frame = &mut self.frames[f];
        let n = (frame.len() - off) / FIX_SIZE;
        for i in 0..n.min(1000) {
            let at = off + i * FIX_SIZE;
            let unit = f * 1000 + i;
            let Some(&(dlat, dlon)) = self.steps.get(unit) else {
                break;
            };
            let t = base_ms + self.round * 1000;
            frame[at + 8..at + 16].copy_from_slice(&t.to_le_bytes());
            let lat = f64::from_le_bytes(frame[at + 16..at + 24].try_into().unwrap_or([0; 8])) + dlat;
            let lon = f64::from_le_bytes(frame[at + 24..at + 32].try_into().unwrap_or([0; 8])) + dlon;
            frame[at + 16..at + 24].copy_from_slice(&lat.to_le_bytes());
            frame[at + 24..at + 32].copy_from_slice(&lon.to_le_bytes());
        }
    }
}

fn main() {
    let seconds: u64 = std::env::var("BLUELIGHT_E2E_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    eprintln!("ingest_e2e: building 100k units and 1k fences...");
    let world = World::with_history(
        WorldSpec {
            units: 100_000,
            fences: 1_000,
            feeds: 0,
            seed: 42,
        },
        2_000_000,
    );
    let mut frames = Frames::new(&world);
    let engine = Arc::new(parking_lot::Mutex::new(world.engine));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // Device times here are the fixture's; accept them as current.
    let validation = ValidationConfig {
        max_age_ms: i64::MAX / 4,
        max_future_ms: i64::MAX / 4,
        ..ValidationConfig::default()
    };
    let cfg = PipelineConfig {
        validation,
        ..PipelineConfig::default()
    };
    let handle = pipeline::start(engine.clone(), cfg, Arc::new(SystemClock), Arc::new(Discard))
        .unwrap_or_else(|e| panic!("{e}"))
        .queue;
    let tcp_rate = rt.block_on(async {
        let (tcp, udp, addr) = bind_ingest("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(serve_tcp(tcp, handle.clone(), ListenerLimits::default()));
        tokio::spawn(serve_udp(udp, handle.clone(), ListenerLimits::default()));
        let rate = run_tcp(addr, &mut frames, &handle, seconds).await;
        let udp_rate: f64 = std::env::var("BLUELIGHT_E2E_UDP_RATE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000.0);
        run_udp(addr, &mut frames, &handle, seconds, udp_rate).await;
        rate
    });
    eprintln!("ingest_e2e: done ({tcp_rate:.0} fixes/s over TCP)");
}

async fn run_tcp(addr: SocketAddr, frames: &mut Frames, handle: &IngestQueue, seconds: u64) -> f64 {
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    conn.set_nodelay(true).ok();
    let base = T0 + 10_000;
    let accepted0 = handle.counters.accepted();
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut next_report = Duration::from_secs(10);
    frames
        .for_each(base, async |frame, n| {
            conn.write_all(&(frame.len() as u32).to_le_bytes())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            conn.write_all(frame).await.unwrap_or_else(|e| panic!("{e}"));
            sent += n;
            let el = start.elapsed();
            if el >= next_report {
                let acc = handle.counters.accepted() - accepted0;
                println!(
                    "  {:>3} s: sent {sent}, accepted {acc}, {:.0} fixes/s",
                    el.as_secs(),
                    acc as f64 / el.as_secs_f64()
                );
                next_report += Duration::from_secs(10);
            }
            el < Duration::from_secs(seconds)
        })
        .await;
    conn.shutdown().await.ok();
    // Wait (bounded) for the writer to drain what was sent.
    let drain = Instant::now();
    let rejected = || {
        Reject::ALL
            .iter()
            .map(|r| handle.counters.rejected(*r))
            .sum::<u64>()
    };
    while handle.counters.accepted() - accepted0 + rejected() < sent
        && drain.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let accepted = handle.counters.accepted() - accepted0;
    let refused = rejected();
    let lost = sent.saturating_sub(accepted + refused);
    let rate = accepted as f64 / elapsed;
    println!(
        "ingest_e2e/tcp: {seconds} s, sent {sent}, accepted {accepted}, refused {refused}, lost {lost}: {rate:.0} fixes/s sustained"
    );
    rate
}

/// Sends the frames as datagrams paced at `rate` fixes/s for `seconds`.
async fn run_udp(addr: SocketAddr, frames: &mut Frames, handle: &IngestQueue, seconds: u64, rate: f64) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_probe, granted) =
        bluelight_ingest::transport::bind_udp("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    let accepted0 = handle.counters.accepted();
    let dropped0 = handle.counters.udp_dropped.load(Ordering::Relaxed);
    let kernel0 = bluelight_ingest::transport::kernel_udp_drops().unwrap_or(0);
    let base = T0 + 10_000;
    let start = Instant::now();
    let mut sent: u64 = 0;
    frames
        .for_each(base, async |frame, n| {
            // Pace: never ahead of `rate`.
            let due = Duration::from_secs_f64(sent as f64 / rate);
            let el = start.elapsed();
            if due > el {
                tokio::time::sleep(due - el).await;
            }
            sock.send_to(frame, addr).await.unwrap_or_else(|e| panic!("{e}"));
            sent += n;
            start.elapsed() < Duration::from_secs(seconds)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = start.elapsed().as_secs_f64() - 2.0;
    let accepted = handle.counters.accepted() - accepted0;
    let queue_drops = handle.counters.udp_dropped.load(Ordering::Relaxed) - dropped0;
    let kernel = bluelight_ingest::transport::kernel_udp_drops().map(|k| k - kernel0);
    let lost = sent.saturating_sub(accepted);
    println!(
        "ingest_e2e/udp: {seconds} s at {rate:.0} fixes/s (receive buffer {granted} B): sent {sent}, accepted {accepted} ({:.0}/s), lost {lost} ({:.3}%): {queue_drops} fixes dropped by the server for a full queue (counted), {} datagrams by the kernel (RcvbufErrors)",
        accepted as f64 / elapsed,
        100.0 * lost as f64 / sent.max(1) as f64,
        kernel.map_or("unknown".into(), |k| k.to_string())
    );
}
