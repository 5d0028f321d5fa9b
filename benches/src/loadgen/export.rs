//! `--export-at`: an analyst's full-retention export in the middle of the
//! run, downloaded as a browser would, timed, and marked on the shared
//! clock so the alerts clients can tell the fixes sent while it ran.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::tls;
use super::world::Shared;

/// What the analyst's download did.
#[derive(Debug, Clone, Default)]
pub struct ExportRun {
    /// Seconds into the run it started.
    pub at_s: u64,
    /// Bytes of GeoJSON received (compressed, when `encoding` says so).
    pub bytes: u64,
    /// The reply's `Content-Encoding`, if it had one.
    pub encoding: Option<String>,
    /// The server's upper bound of the fixes to come
    /// (`x-bluelight-fixes-at-most`).
    pub fixes_at_most: u64,
    /// What went wrong, if it did.
    pub error: Option<String>,
    /// When the request went and when its last byte came.
    pub window: Option<(Instant, Instant)>,
}

impl ExportRun {
    /// Seconds from the request to the last byte (0 if it never went).
    pub fn seconds(&self) -> f64 {
        self.window
            .map_or(0.0, |(b, e)| e.duration_since(b).as_secs_f64())
    }

    /// Fix-to-alert of `samples` (sent, µs) in the export's window and in
    /// windows as long just before and just after it: what the run did
    /// without the export, at the same point of the run.
    pub fn windows(&self, samples: &[(Instant, u32)]) -> Option<[(&'static str, Histogram<u64>); 3]> {
        let (began, ended) = self.window?;
        let d = ended.saturating_duration_since(began);
        let before = began.checked_sub(d)?;
        let after = ended + d;
        let mut hs = [
            ("before", super::clients::histogram()),
            ("during", super::clients::histogram()),
            ("after", super::clients::histogram()),
        ];
        for &(sent, us) in samples {
            let i = if sent >= before && sent < began {
                0
            } else if sent >= began && sent <= ended {
                1
            } else if sent > ended && sent <= after {
                2
            } else {
                continue;
            };
            let _ = hs[i].1.record(u64::from(us));
        }
        Some(hs)
    }
}

/// Waits until `at`, then downloads `GET /v1/export` over all history,
/// marking its start and end in `shared`.
pub async fn analyst(
    http: SocketAddr,
    token: Option<String>,
    shared: Arc<Shared>,
    at: Instant,
    at_s: u64,
    gzip: bool,
) -> ExportRun {
    tokio::time::sleep_until(at.into()).await;
    let mut run = ExportRun {
        at_s,
        ..ExportRun::default()
    };
    let began = Instant::now();
    let _ = shared.export_began.set(began);
    let outcome = download(http, token.as_deref(), gzip, &mut run).await;
    let ended = Instant::now();
    let _ = shared.export_ended.set(ended);
    run.window = Some((began, ended));
    if let Err(e) = outcome {
        run.error = Some(format!("{e:#}"));
    }
    run
}

async fn download(
    http: SocketAddr,
    token: Option<&str>,
    gzip: bool,
    run: &mut ExportRun,
) -> anyhow::Result<()> {
    let client = tls::http_client()?;
    let mut req = client
        .get(format!(
            "{}://{http}/v1/export?from_ms=0&to_ms={}",
            tls::http_scheme(),
            i64::MAX
        ))
        // The client's 30 s limit is for small requests; a full export
        // of a busy hour takes longer.
        .timeout(Duration::from_secs(900));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if gzip {
        // Counted as it comes: the analyst's machine, not this one, would
        // inflate it.
        req = req.header(reqwest::header::ACCEPT_ENCODING, "gzip");
    }
    let mut resp = req.send().await?.error_for_status()?;
    run.encoding = resp
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    run.fixes_at_most = resp
        .headers()
        .get("x-bluelight-fixes-at-most")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while let Some(chunk) = resp.chunk().await? {
        run.bytes += chunk.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_are_set_in_the_window_they_were_sent_in() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let run = ExportRun {
            window: Some((at(1000), at(1500))),
            ..ExportRun::default()
        };
        // Before is 500..1000, during 1000..=1500, after 1500..=2000.
        let samples = [
            (at(100), 1),
            (at(600), 2),
            (at(1000), 3),
            (at(1500), 4),
            (at(1501), 5),
            (at(2500), 6),
        ];
        let [before, during, after] = run.windows(&samples).expect("windows");
        assert_eq!((before.0, before.1.len(), before.1.max()), ("before", 1, 2));
        assert_eq!(
            (during.0, during.1.len(), during.1.min(), during.1.max()),
            ("during", 2, 3, 4)
        );
        assert_eq!((after.0, after.1.len(), after.1.max()), ("after", 1, 5));
    }
}
