//! Helpers shared by the ingest integration tests.

use std::time::{Duration, Instant};

/// Waits (bounded) until `cond` holds.
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
