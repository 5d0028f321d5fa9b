//! loadgen's own pauses: a thread that wakes every [`TICK`] and notes each
//! wake-up that came more than a second late, by the monotonic clock and
//! by the wall clock; and a task on loadgen's main runtime (where the
//! alerts and nearest clients run) that does the same, to tell a client
//! that read late because its runtime was busy from a server that sent
//! late.
//!
//! Soak runs showed a few seconds in which nothing moved, while the
//! server's writer reported no step longer than a quarter of a second. A
//! pause seen here at the same moment was the machine's (loadgen not
//! scheduled, or the virtual machine stopped), not the server's. A virtual
//! machine that is stopped and resumed may not advance its monotonic clock
//! across the stop: the wall clock, corrected afterwards, then runs ahead
//! of it, so both are kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// How often the watcher wakes.
pub const TICK: Duration = Duration::from_millis(100);

/// Lateness that counts as a pause.
pub const PAUSE: Duration = Duration::from_secs(1);

/// Pauses kept with their times.
const KEPT: usize = 8;

/// One late wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pause {
    /// When it ended, seconds after the watcher started.
    pub at_s: f64,
    /// Time between the two wake-ups by the monotonic clock, ms.
    pub monotonic_ms: f64,
    /// The same by the wall clock, ms.
    pub wall_ms: f64,
}

/// What the watcher saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PauseLog {
    /// Wake-ups more than [`PAUSE`] late by either clock.
    pub count: u64,
    /// The longest time between wake-ups by the monotonic clock, ms.
    pub longest_monotonic_ms: f64,
    /// The longest by the wall clock, ms.
    pub longest_wall_ms: f64,
    /// The first [`KEPT`] pauses.
    pub first: Vec<Pause>,
}

impl PauseLog {
    /// Notes the time between two wake-ups.
    fn note(&mut self, at_s: f64, monotonic: Duration, wall: Duration) {
        let (m, w) = (monotonic.as_secs_f64() * 1e3, wall.as_secs_f64() * 1e3);
        self.longest_monotonic_ms = self.longest_monotonic_ms.max(m);
        self.longest_wall_ms = self.longest_wall_ms.max(w);
        if monotonic.max(wall) > TICK + PAUSE {
            self.count += 1;
            if self.first.len() < KEPT {
                self.first.push(Pause {
                    at_s,
                    monotonic_ms: m,
                    wall_ms: w,
                });
            }
        }
    }
}

/// The running watchers.
#[derive(Debug)]
pub struct Pauses {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<PauseLog>,
    /// What the runtime's task saw so far.
    runtime: Arc<std::sync::Mutex<PauseLog>>,
}

impl Pauses {
    /// Starts the watcher (at the default priority: it must see what the
    /// other threads of its priority see).
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(runtime: &tokio::runtime::Handle) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("loadgen-pauses".into())
            .spawn(move || {
                let mut log = PauseLog::default();
                let began = Instant::now();
                let (mut mono, mut wall) = (began, SystemTime::now());
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    let (m, w) = (Instant::now(), SystemTime::now());
                    // A wall clock set back reads as no time: never a pause.
                    let wall_gap = w.duration_since(wall).unwrap_or_default();
                    log.note((m - began).as_secs_f64(), m - mono, wall_gap);
                    (mono, wall) = (m, w);
                }
                log
            })?;
        let seen = Arc::new(std::sync::Mutex::new(PauseLog::default()));
        let (log, stopped) = (seen.clone(), stop.clone());
        runtime.spawn(async move {
            let began = Instant::now();
            let mut last = began;
            while !stopped.load(Ordering::Relaxed) {
                tokio::time::sleep(TICK).await;
                let now = Instant::now();
                if let Ok(mut log) = log.lock() {
                    log.note((now - began).as_secs_f64(), now - last, now - last);
                }
                last = now;
            }
        });
        Ok(Self {
            stop,
            thread,
            runtime: seen,
        })
    }

    /// Stops the watchers and returns what they saw: the thread's, then
    /// the runtime's (whose two clocks are both the monotonic one).
    pub fn finish(self) -> (PauseLog, PauseLog) {
        self.stop.store(true, Ordering::Relaxed);
        let runtime = self.runtime.lock().map(|l| l.clone()).unwrap_or_default();
        (self.thread.join().unwrap_or_default(), runtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A late wake-up by either clock is a pause; on-time ones are not.
    #[test]
    fn a_wake_up_late_by_either_clock_is_a_pause() {
        let mut log = PauseLog::default();
        let ms = Duration::from_millis;
        log.note(1.0, ms(105), ms(104));
        log.note(2.0, ms(1_050), ms(1_060));
        assert_eq!(log.count, 0, "under a second late");
        log.note(3.0, ms(3_100), ms(3_100));
        log.note(4.0, ms(100), ms(9_000));
        assert_eq!(log.count, 2);
        assert_eq!(
            log.first[1],
            Pause {
                at_s: 4.0,
                monotonic_ms: 100.0,
                wall_ms: 9_000.0
            }
        );
        assert_eq!(
            (log.longest_monotonic_ms, log.longest_wall_ms),
            (3_100.0, 9_000.0)
        );
    }

    /// The thread and the runtime's task run, measure their ticks, and
    /// stop; a runtime held busy is seen late by its task only.
    #[test]
    fn the_watchers_start_and_stop_and_a_busy_runtime_shows() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let p = Pauses::start(rt.handle()).expect("thread");
        rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(350)).await;
            // Hold the only worker without yielding.
            std::thread::sleep(Duration::from_millis(1_300));
            tokio::time::sleep(Duration::from_millis(150)).await;
        });
        let (thread, runtime) = p.finish();
        assert!(thread.longest_monotonic_ms >= 100.0, "{thread:?}");
        assert_eq!(thread.count, 0, "the thread was not held: {thread:?}");
        assert_eq!(runtime.count, 1, "{runtime:?}");
        assert!(runtime.longest_monotonic_ms >= 1_300.0, "{runtime:?}");
    }
}
