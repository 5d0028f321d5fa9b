//! Thread priorities. On a busy machine the kernel shares the CPU between
//! runnable threads fairly; bulk work (a dispatch map's JSON, a load
//! generator's bookkeeping) run at a lower priority lets the writer, alerts
//! and queries have the CPU the moment they need it. On a machine that
//! serves bluelight first, `--realtime` goes further: the threads on the
//! path of a fix and a query run under `SCHED_FIFO` and never wait for a
//! core behind normal threads (the writer above the runtime's workers).

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The `nice` value bulk threads run at.
pub const BULK_NICE: i32 = 10;

/// The writer's `nice` as it runs (see [`raise_this_thread`]), for
/// `/metrics`.
static WRITER_NICE_NOW: AtomicI32 = AtomicI32::new(0);

/// The `nice` value the engine's writer runs at.
pub fn writer_nice() -> i32 {
    WRITER_NICE_NOW.load(Ordering::Relaxed)
}

/// Sets the calling thread's `nice` to `nice` (Linux: `nice` is per
/// thread), which below the process's own needs root, `CAP_SYS_NICE` or
/// an `RLIMIT_NICE` that allows it (systemd: `LimitNICE=`). Returns the
/// `nice` the thread runs at afterwards.
///
/// # Errors
/// Refused, or not Linux: the thread keeps its priority.
pub fn raise_this_thread(nice: i32) -> std::io::Result<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::setpriority_process(None, nice)?;
        Ok(rustix::process::getpriority_process(None)?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "thread priorities are only supported on Linux",
        ))
    }
}

/// Raises the calling thread, the engine's writer, to `nice` when that is
/// below the thread's own (0 leaves it), and records where it runs for
/// [`writer_nice`]. A refusal is logged with how to allow it.
///
/// Off by default (`tuning.writer_nice`, `serve --writer-nice`). At
/// `surge` on two cores shared with loadgen, the writer at 0 was runnable
/// but off a core a third of each second and the fix-to-alert p99 was
/// 0.45–1.3 s; at -10 it waited 6–9% and the p99 was 27–149 ms, but the
/// threads it then ran ahead of (loadgen's sender, the server's readers
/// and feeds) fell behind in some runs, and at `national` and `api` runs
/// differed by more than it changed (`benches/README.md`).
pub fn raise_writer(nice: i32) {
    #[cfg(target_os = "linux")]
    let now = rustix::process::getpriority_process(None).unwrap_or(0);
    #[cfg(not(target_os = "linux"))]
    let now = 0;
    // 0 is "not asked for": a server started under `nice` keeps its
    // writer there too, rather than lifting it to 0.
    let now = if nice != 0 && nice < now {
        match raise_this_thread(nice) {
            Ok(n) => {
                tracing::info!(nice = n, "the writer runs ahead of the server's other threads");
                n
            }
            Err(e) => {
                tracing::info!(
                    error = %e,
                    nice = now,
                    wanted = nice,
                    "the writer runs at the server's own priority: on a busy machine fixes and alerts then wait for a core behind other threads; allow it with CAP_SYS_NICE or an RLIMIT_NICE (systemd: LimitNICE={nice})"
                );
                now
            }
        }
    } else {
        now
    };
    WRITER_NICE_NOW.store(now, Ordering::Relaxed);
}

/// Puts the calling thread under Linux's `SCHED_IDLE`: it runs on what
/// the other threads leave, and any of them that wakes takes its core at
/// once, where a `nice` thread can keep a woken one waiting until the
/// next tick. No privilege is needed, but none lets it back to normal
/// scheduling either, so it is for a thread of its own that ends with its
/// work (an export's), never a pooled one. Returns whether it was set;
/// elsewhere, or refused, the thread is lowered to [`BULK_NICE`] instead.
pub fn idle_this_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread, and `param` is a valid
        // `sched_param` that lives across the call, which only reads it.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            return true;
        }
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot put a bulk thread under SCHED_IDLE");
    }
    lower_this_thread();
    false
}

/// Lowers the calling thread's priority to at least [`BULK_NICE`] (Linux: `nice` is
/// per thread). Returns whether it was lowered; elsewhere, or when refused,
/// the thread keeps its priority and works as before.
pub fn lower_this_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        // Already as low (a whole process started with `nice`): keep it.
        if rustix::process::getpriority_process(None).is_ok_and(|n| n >= BULK_NICE) {
            return true;
        }
        match rustix::process::setpriority_process(None, BULK_NICE) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "cannot lower a bulk thread's priority");
                false
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Threads of this process put under real-time scheduling so far.
static REALTIME_THREADS: AtomicU64 = AtomicU64::new(0);

/// How many threads of this process [`realtime_this_thread`] has put under
/// real-time scheduling (for `/metrics` and reports).
pub fn realtime_threads() -> u64 {
    REALTIME_THREADS.load(Ordering::Relaxed)
}

/// The real-time priority of a runtime's workers ([`realtime_workers`]):
/// low among real-time ones, so the kernel's own (watchdogs, interrupt
/// threads at 50) still come first.
pub const REALTIME_PRIORITY: i32 = 10;

/// The engine writer's real-time priority: above the workers'. Under
/// `SCHED_FIFO` equals never preempt each other, and a worker writing a
/// burst of alert frames would hold the writer, and every fix behind it,
/// off a core.
pub const WRITER_PRIORITY: i32 = REALTIME_PRIORITY + 2;

/// Puts the calling thread under the `SCHED_FIFO` policy at `priority`
/// (1–99; Linux only), so it runs the moment it is runnable instead of
/// waiting for its fair share behind other threads.
///
/// Only for a thread that blocks when it has nothing to do (the engine's
/// writer, a runtime's workers): a real-time thread that spun would starve
/// its core, up to the kernel's real-time throttle. Threads it starts do
/// not inherit the policy (`SCHED_RESET_ON_FORK`).
///
/// # Errors
/// Not permitted (it needs root, `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` of at
/// least `priority`), or not Linux. The thread then keeps its policy.
pub fn realtime_this_thread(priority: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: pid 0 is the calling thread, and `param` is a valid
        // `sched_param` that lives across the call, which only reads it.
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        REALTIME_THREADS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "real-time scheduling is only supported on Linux",
        ))
    }
}

/// Puts a tokio runtime's worker threads under real-time scheduling at
/// `priority` (a server's: [`REALTIME_PRIORITY`]), each as it first parks
/// ([`tokio::runtime::Builder::on_thread_park`]): only workers park, so
/// threads of the blocking pool (long exports, file work) keep their normal
/// priority. A refusal is logged once, as a warning.
pub fn realtime_workers(
    builder: &mut tokio::runtime::Builder,
    priority: i32,
) -> &mut tokio::runtime::Builder {
    use std::cell::Cell;
    use std::sync::atomic::AtomicBool;
    static WARNED: AtomicBool = AtomicBool::new(false);
    thread_local!(static ASKED: Cell<bool> = const { Cell::new(false) });
    builder.on_thread_park(move || {
        if ASKED.with(|a| a.replace(true)) {
            return;
        }
        if let Err(e) = realtime_this_thread(priority)
            && !WARNED.swap(true, Ordering::Relaxed)
        {
            warn_refused("the runtime's workers", priority, &e);
        }
    })
}

/// Logs that real-time scheduling at `priority` was refused for `what`,
/// which then runs at normal priority.
pub(crate) fn warn_refused(what: &str, priority: i32, e: &std::io::Error) {
    tracing::warn!(
        error = %e,
        "cannot run {what} at real-time priority (it needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO of {priority}); normal priority instead"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn a_bulk_thread_runs_at_the_bulk_nice_and_others_do_not() {
        let before = rustix::process::getpriority_process(None).expect("priority");
        let lowered = std::thread::spawn(|| {
            let ok = super::lower_this_thread();
            (ok, rustix::process::getpriority_process(None).expect("priority"))
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, (true, super::BULK_NICE.max(before)));
        // Only that thread: this one keeps its priority.
        assert_eq!(
            rustix::process::getpriority_process(None).expect("priority"),
            before
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn an_idle_thread_runs_under_sched_idle_and_others_do_not() {
        // SAFETY (both calls): pid 0 is the calling thread; no pointers.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let before = policy();
        let idle = std::thread::spawn(move || (super::idle_this_thread(), policy()))
            .join()
            .expect("thread");
        assert_eq!(idle, (true, libc::SCHED_IDLE));
        assert_eq!(policy(), before, "only that thread");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_raised_thread_runs_at_its_nice_when_permitted_and_others_do_not() {
        let before = rustix::process::getpriority_process(None).expect("priority");
        let (result, own) = std::thread::spawn(move || {
            let result = super::raise_this_thread(before - 5);
            (
                result,
                rustix::process::getpriority_process(None).expect("priority"),
            )
        })
        .join()
        .expect("thread");
        match result {
            Ok(n) => assert_eq!((n, own), (before - 5, before - 5)),
            // Refused (no privilege here): said so, and nothing changed.
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
                assert_eq!(own, before);
            }
        }
        assert_eq!(
            rustix::process::getpriority_process(None).expect("priority"),
            before,
            "only that thread"
        );
    }

    /// The calling thread's policy, without the reset-on-fork flag.
    #[cfg(target_os = "linux")]
    fn policy() -> i32 {
        // SAFETY: pid 0 is the calling thread; the call takes no pointers.
        unsafe { libc::sched_getscheduler(0) & !libc::SCHED_RESET_ON_FORK }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_realtime_thread_is_fifo_when_permitted_and_its_children_and_siblings_are_not() {
        let (result, own, child) = std::thread::spawn(|| {
            let result = super::realtime_this_thread(super::REALTIME_PRIORITY);
            let child = std::thread::spawn(policy).join().expect("child");
            (result, policy(), child)
        })
        .join()
        .expect("thread");
        match result {
            Ok(()) => assert_eq!(own, libc::SCHED_FIFO),
            // Refused (no privilege here): said so, and nothing changed.
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
                assert_eq!(own, libc::SCHED_OTHER);
            }
        }
        assert_eq!(child, libc::SCHED_OTHER, "threads it starts are not real-time");
        assert_eq!(policy(), libc::SCHED_OTHER, "only that thread");
    }
}
