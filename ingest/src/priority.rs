//! Thread priorities. On a busy machine the kernel shares the CPU between
//! runnable threads fairly; bulk work (a dispatch map's JSON, a load
//! generator's bookkeeping) run at a lower priority lets the writer, alerts
//! and queries have the CPU the moment they need it.

/// The `nice` value bulk threads run at.
pub const BULK_NICE: i32 = 10;

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
}
