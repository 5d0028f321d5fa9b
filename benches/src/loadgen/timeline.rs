//! The server, second by second: what `/metrics` said at each sample of
//! the run, so a stall can be placed (issue 16: soak runs had seconds in
//! which alerts came seconds late while the writer's longest step was a
//! quarter of a second, and nothing said where the time went).
//!
//! Each [`Second`] holds rates over the time since the sample before (not
//! per tick: a slow `/metrics` stretches a tick) and the gauges as read.

use std::collections::BTreeMap;

use serde::Serialize;

/// Seconds listed in the Markdown report: the ones that accepted fewest.
pub const WORST_LISTED: usize = 5;

/// One sample of the server's `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Second {
    /// When the sample was read, seconds into the load.
    pub at_s: f64,
    /// How long `/metrics` took to answer, ms: a server whose runtime is
    /// stalled answers late.
    pub metrics_ms: f64,
    /// Fixes accepted a second since the sample before.
    pub accepted_per_s: f64,
    /// Batches waiting for the writer.
    pub ingest_queue: f64,
    /// Queries waiting for the writer.
    pub writer_queries: f64,
    /// Messages waiting in session queues, all sessions.
    pub ws_queued: f64,
    /// The most one session had waiting.
    pub ws_queued_max: f64,
    /// The runtime's workers' busy time since the sample before, as a
    /// fraction of all of them (1.0: every worker busy all the time).
    pub runtime_busy: f64,
    /// Tasks in the runtime's global queue.
    pub runtime_global_queue: f64,
    /// Alert frames the server itself sent more than a second after their
    /// fix, since the sample before.
    pub alerts_over_1s: f64,
    /// CPU time the hypervisor took from this machine's CPUs since the
    /// sample before, ms, the CPU it took most from (`/proc/stat` steal):
    /// a virtual CPU stopped for a second stops whatever runs on it, and
    /// a thread watching from the other CPU sees no pause.
    pub steal_ms_max_cpu: f64,
    /// The machine's TCP retransmission timeouts since the sample before
    /// (`TcpExt: TCPTimeouts`): on loopback a lost segment waits at least
    /// 200 ms, doubling, and stops its stream meanwhile.
    pub tcp_timeouts: f64,
    /// TCP segments retransmitted since the sample before.
    pub tcp_retransmits: f64,
    /// Connections dropped because a listener's accept queue was full
    /// (`ListenOverflows`): the client's SYN is sent again a second later.
    pub listen_overflows: f64,
    /// The server's writer thread on a CPU since the sample before, as a
    /// fraction of the time (1.0: a whole core), from its
    /// `/proc/PID/task/TID/schedstat` (0 when loadgen did not start the
    /// server).
    pub writer_cpu: f64,
    /// The writer runnable but waiting for a CPU, as a fraction of the
    /// time: work it had and could not do because other threads (the
    /// server's or loadgen's) held both cores.
    pub writer_waiting: f64,
}

/// Builds [`Second`]s from successive `/metrics` reads.
#[derive(Debug, Default)]
pub struct Timeline {
    /// The samples so far.
    pub seconds: Vec<Second>,
    /// The previous read and when it was taken.
    last: Option<(f64, BTreeMap<String, f64>)>,
    /// Each CPU's steal time at the previous read, in clock ticks.
    last_steal: Vec<u64>,
    /// The kernel's TCP counters at the previous read.
    last_tcp: TcpCounters,
    /// The server's writer thread, and its times at the previous read.
    writer: Option<WriterClock>,
}

/// The server's writer thread's scheduler clocks (`schedstat`: ns on a
/// CPU, ns runnable and waiting for one).
#[derive(Debug)]
struct WriterClock {
    path: String,
    on_cpu_ns: u64,
    waiting_ns: u64,
}

/// The writer thread's name as the kernel keeps it (15 bytes).
const WRITER_COMM: &str = "bluelight-write";

impl WriterClock {
    /// Finds the thread of `pid` named [`WRITER_COMM`].
    fn find(pid: u32) -> Option<Self> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        for task in tasks.flatten() {
            let dir = task.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim_end() == WRITER_COMM {
                let path = dir.join("schedstat").to_string_lossy().into_owned();
                let (on_cpu_ns, waiting_ns) = read_schedstat(&path)?;
                return Some(Self {
                    path,
                    on_cpu_ns,
                    waiting_ns,
                });
            }
        }
        None
    }

    /// (on CPU, waiting) ns since the last call.
    fn since_last(&mut self) -> Option<(u64, u64)> {
        let (on, waiting) = read_schedstat(&self.path)?;
        let d = (
            on.saturating_sub(self.on_cpu_ns),
            waiting.saturating_sub(self.waiting_ns),
        );
        (self.on_cpu_ns, self.waiting_ns) = (on, waiting);
        Some(d)
    }
}

/// A `schedstat` file's first two numbers: ns on a CPU, ns waiting.
fn read_schedstat(path: &str) -> Option<(u64, u64)> {
    parse_schedstat(&std::fs::read_to_string(path).ok()?)
}

fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut n = text.split_ascii_whitespace().map(str::parse::<u64>);
    Some((n.next()?.ok()?, n.next()?.ok()?))
}

const ACCEPTED: &str = "bluelight_fixes_accepted_total";
const BUSY: &str = "bluelight_runtime_busy_seconds_total";
const ALERTS: &str = "bluelight_fix_to_alert_seconds_count";
const ALERTS_UNDER_1S: &str = "bluelight_fix_to_alert_seconds_bucket{le=\"1\"}";

impl Timeline {
    /// Starts from the read before the load (its counters are the base);
    /// `server` is the server's process id when loadgen started it.
    pub fn new(at_s: f64, before: &BTreeMap<String, f64>, server: Option<u32>) -> Self {
        Self {
            seconds: Vec::new(),
            last: Some((at_s, before.clone())),
            last_steal: steal_ticks(),
            last_tcp: TcpCounters::read(),
            writer: server.and_then(WriterClock::find),
        }
    }

    /// Adds a read taken at `at_s` that took `metrics_ms` to answer.
    pub fn push(&mut self, at_s: f64, metrics_ms: f64, m: BTreeMap<String, f64>) {
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
        let dt = self.last.as_ref().map_or(0.0, |(t0, _)| at_s - t0);
        let (writer_cpu, writer_waiting) = match self.writer.as_mut().and_then(WriterClock::since_last) {
            Some((on, waiting)) if dt > 0.0 => (on as f64 / 1e9 / dt, waiting as f64 / 1e9 / dt),
            _ => (0.0, 0.0),
        };
        let (rate, busy, late) = match &self.last {
            Some((_, m0)) if dt > 0.0 => {
                let delta = |k: &str| (get(k) - m0.get(k).copied().unwrap_or(0.0)).max(0.0);
                let workers = get("bluelight_runtime_workers").max(1.0);
                (
                    delta(ACCEPTED) / dt,
                    delta(BUSY) / dt / workers,
                    delta(ALERTS) - delta(ALERTS_UNDER_1S),
                )
            }
            _ => (0.0, 0.0, 0.0),
        };
        let steal_ms_max_cpu = self.steal_since_last();
        let tcp = TcpCounters::read();
        let tcp_delta = |now: u64, then: u64| now.saturating_sub(then) as f64;
        let (tcp_timeouts, tcp_retransmits, listen_overflows) = (
            tcp_delta(tcp.timeouts, self.last_tcp.timeouts),
            tcp_delta(tcp.retransmits, self.last_tcp.retransmits),
            tcp_delta(tcp.listen_overflows, self.last_tcp.listen_overflows),
        );
        self.last_tcp = tcp;
        self.seconds.push(Second {
            at_s,
            metrics_ms,
            accepted_per_s: rate,
            ingest_queue: get("bluelight_ingest_queue_batches"),
            writer_queries: get("bluelight_writer_tasks_queued{kind=\"query\"}"),
            ws_queued: get("bluelight_ws_queued_messages"),
            ws_queued_max: get("bluelight_ws_queued_messages_max"),
            runtime_busy: busy,
            runtime_global_queue: get("bluelight_runtime_global_queue_tasks"),
            alerts_over_1s: late.max(0.0),
            steal_ms_max_cpu,
            tcp_timeouts,
            tcp_retransmits,
            listen_overflows,
            writer_cpu,
            writer_waiting,
        });
        self.last = Some((at_s, m));
    }

    /// The most steal time one CPU had since the last call, ms.
    fn steal_since_last(&mut self) -> f64 {
        let now = steal_ticks();
        let most = now
            .iter()
            .zip(&self.last_steal)
            .map(|(n, l)| n.saturating_sub(*l))
            .max()
            .unwrap_or(0);
        self.last_steal = now;
        most as f64 * 1000.0 / TICKS_PER_S
    }
}

/// The mean of `value` over the samples from `from_s` on, the last
/// (partial) one left out; `None` without any.
pub fn mean_after(seconds: &[Second], from_s: f64, value: impl Fn(&Second) -> f64) -> Option<f64> {
    let whole = seconds.get(..seconds.len().saturating_sub(1)).unwrap_or(&[]);
    let (sum, n) = whole
        .iter()
        .filter(|s| s.at_s >= from_s)
        .fold((0.0, 0usize), |(sum, n), s| (sum + value(s), n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// `/proc/stat`'s clock ticks a second (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// Each CPU's steal time so far, in clock ticks (empty off Linux).
fn steal_ticks() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat").map_or_else(|_| Vec::new(), |s| parse_steal(&s))
}

/// The steal column (the eighth number) of each `cpuN` line.
fn parse_steal(stat: &str) -> Vec<u64> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .filter_map(|l| l.split_ascii_whitespace().nth(8)?.parse().ok())
        .collect()
}

/// The machine's TCP counters that say a stream stopped (all zero off
/// Linux).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct TcpCounters {
    timeouts: u64,
    retransmits: u64,
    listen_overflows: u64,
}

impl TcpCounters {
    fn read() -> Self {
        let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
        Self {
            timeouts: proc_net_counter(&netstat, "TcpExt:", "TCPTimeouts").unwrap_or(0),
            retransmits: proc_net_counter(&snmp, "Tcp:", "RetransSegs").unwrap_or(0),
            listen_overflows: proc_net_counter(&netstat, "TcpExt:", "ListenOverflows").unwrap_or(0),
        }
    }
}

/// A counter of `/proc/net/snmp` or `/proc/net/netstat`: a line of names
/// after `prefix`, then a line of values after the same prefix.
fn proc_net_counter(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let at = names.split_ascii_whitespace().position(|n| n == name)?;
    values.split_ascii_whitespace().nth(at)?.parse().ok()
}

/// The samples worth a look, in time order: the [`WORST_LISTED`] that
/// accepted fewest fixes a second, the [`WORST_LISTED`] in which the
/// server sent most alerts over a second late (a stall may hold alerts
/// and not fixes), and the [`WORST_LISTED`] with most steal time and with
/// most TCP timeouts and listen overflows. The first and last samples
/// are left out: they are partial.
pub fn worst(seconds: &[Second]) -> Vec<Second> {
    let inner = seconds.get(1..seconds.len().saturating_sub(1)).unwrap_or(&[]);
    let mut by_rate: Vec<Second> = inner.to_vec();
    by_rate.sort_by(|a, b| a.accepted_per_s.total_cmp(&b.accepted_per_s));
    by_rate.truncate(WORST_LISTED);
    for key in [
        |s: &Second| s.alerts_over_1s,
        |s: &Second| s.steal_ms_max_cpu,
        |s: &Second| s.tcp_timeouts + s.listen_overflows,
    ] {
        let mut most: Vec<Second> = inner.iter().filter(|s| key(s) > 0.0).copied().collect();
        most.sort_by(|a, b| key(b).total_cmp(&key(a)));
        most.truncate(WORST_LISTED);
        by_rate.extend(most);
    }
    by_rate.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    by_rate.dedup_by(|a, b| a.at_s == b.at_s);
    by_rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(accepted: f64, busy: f64, alerts: f64, under_1s: f64) -> BTreeMap<String, f64> {
        [
            (ACCEPTED, accepted),
            (BUSY, busy),
            (ALERTS, alerts),
            (ALERTS_UNDER_1S, under_1s),
            ("bluelight_runtime_workers", 2.0),
            ("bluelight_ingest_queue_batches", 7.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn tcp_counters_are_read_by_name() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows TCPTimeouts\nTcpExt: 0 39 41\nIpExt: InNoRoutes\nIpExt: 7\n";
        assert_eq!(proc_net_counter(netstat, "TcpExt:", "TCPTimeouts"), Some(41));
        assert_eq!(proc_net_counter(netstat, "TcpExt:", "ListenOverflows"), Some(39));
        assert_eq!(proc_net_counter(netstat, "TcpExt:", "Nothing"), None);
        assert_eq!(proc_net_counter(netstat, "IpExt:", "InNoRoutes"), Some(7));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_writer_is_found_by_its_thread_name_and_its_time_on_cpu_read() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static STOP: AtomicBool = AtomicBool::new(false);
        // The thread takes its name as it starts, before running this.
        static NAMED: AtomicBool = AtomicBool::new(false);
        let spinner = std::thread::Builder::new()
            .name("bluelight-writer".into())
            .spawn(|| {
                NAMED.store(true, Ordering::Relaxed);
                let mut n = 0u64;
                while !STOP.load(Ordering::Relaxed) {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            })
            .expect("thread");
        while !NAMED.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
        let mut clock =
            WriterClock::find(std::process::id()).expect("the thread named as the server names its writer");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (on_cpu_ns, _) = clock.since_last().expect("schedstat");
        STOP.store(true, Ordering::Relaxed);
        spinner.join().expect("spinner");
        assert!(
            on_cpu_ns >= 10_000_000,
            "a spinning thread ran {on_cpu_ns} ns of 100 ms"
        );
    }

    #[test]
    fn means_are_of_the_seconds_after_the_warm_up_without_the_partial_last() {
        let mut t = Timeline::new(0.0, &read(0.0, 0.0, 0.0, 0.0), None);
        for (i, accepted) in [100.0, 300.0, 600.0, 1000.0].into_iter().enumerate() {
            t.push(i as f64 + 1.0, 1.0, read(accepted, 0.0, 0.0, 0.0));
        }
        // Rates 100, 200, 300, 400; from 2 s on, without the last: 200, 300.
        assert_eq!(mean_after(&t.seconds, 2.0, |s| s.accepted_per_s), Some(250.0));
        assert_eq!(mean_after(&t.seconds, 9.0, |s| s.accepted_per_s), None);
    }

    #[test]
    fn schedstat_gives_time_on_cpu_then_time_waiting() {
        assert_eq!(parse_schedstat("123456789 2000 31\n"), Some((123_456_789, 2000)));
        assert_eq!(parse_schedstat("12\n"), None);
    }

    #[test]
    fn steal_is_read_per_cpu_not_from_the_total_line() {
        let stat = "cpu  389899 50190 49565 224329 1500 0 10442 3704 0 0\n\
                    cpu0 196830 25782 24395 110399 536 0 5181 1783 0 0\n\
                    cpu1 193069 24408 25169 113929 963 0 5260 1920 0 0\n\
                    intr 1 2 3\n";
        assert_eq!(parse_steal(stat), vec![1783, 1920]);
    }

    #[test]
    fn rates_are_over_the_time_between_reads_not_per_tick() {
        let mut t = Timeline::new(0.0, &read(0.0, 0.0, 0.0, 0.0), None);
        t.push(1.0, 3.0, read(1000.0, 1.0, 10.0, 10.0));
        // A slow read: three seconds later, 3,000 more fixes.
        t.push(4.0, 2500.0, read(4000.0, 4.0, 30.0, 25.0));
        let s = &t.seconds;
        assert_eq!(s[0].accepted_per_s, 1000.0);
        assert_eq!(s[1].accepted_per_s, 1000.0, "not 3,000 in one 'second'");
        assert_eq!(s[1].runtime_busy, 0.5, "3 busy seconds over 3 s of 2 workers");
        assert_eq!(s[1].alerts_over_1s, 5.0);
        assert_eq!(s[1].ingest_queue, 7.0);
        assert_eq!(s[1].metrics_ms, 2500.0);
    }

    #[test]
    fn the_worst_seconds_leave_out_the_partial_first_and_last() {
        let mut t = Timeline::new(0.0, &read(0.0, 0.0, 0.0, 0.0), None);
        let totals = [0.0, 100.0, 150.0, 350.0, 360.0, 660.0, 660.0];
        for (i, a) in totals.iter().enumerate() {
            t.push(i as f64 + 1.0, 1.0, read(*a, 0.0, 0.0, 0.0));
        }
        let worst: Vec<f64> = worst(&t.seconds).iter().map(|s| s.at_s).collect();
        // Rates 0 (first, left out), 100, 50, 200, 10, 300, 0 (last, left out).
        assert_eq!(worst, vec![2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(worst.len(), WORST_LISTED);
    }

    #[test]
    fn seconds_with_late_alerts_are_listed_beside_the_slow_ones() {
        let mut t = Timeline::new(0.0, &read(0.0, 0.0, 0.0, 0.0), None);
        let mut total = 0.0;
        for i in 1..=20 {
            // Every second accepts 1,000 but the 4th and 5th accept 10; the
            // 12th has 40 alerts over a second, the 4th has 3.
            total += if i == 4 || i == 5 {
                10.0
            } else {
                1000.0 + f64::from(i)
            };
            let late = match i {
                12 => 40.0,
                4 => 3.0,
                _ => 0.0,
            };
            let sent = t.seconds.last().map_or(0.0, |_| 100.0 * f64::from(i));
            t.push(f64::from(i), 1.0, read(total, 0.0, sent + late, sent));
        }
        let at: Vec<f64> = worst(&t.seconds).iter().map(|s| s.at_s).collect();
        assert_eq!(at, vec![2.0, 3.0, 4.0, 5.0, 6.0, 12.0]);
    }
}
