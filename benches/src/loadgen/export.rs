//! `--export-at`: an analyst's full-retention export in the middle of the
//! run, downloaded as a browser would, timed, and marked on the shared
//! clock so the alerts clients can tell the fixes sent while it ran.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tls;
use super::world::Shared;

/// What the analyst's download did.
#[derive(Debug, Clone, Default)]
pub struct ExportRun {
    /// Seconds into the run it started.
    pub at_s: u64,
    /// Seconds from the request to the last byte.
    pub seconds: f64,
    /// Bytes of GeoJSON received.
    pub bytes: u64,
    /// The server's upper bound of the fixes to come
    /// (`x-bluelight-fixes-at-most`).
    pub fixes_at_most: u64,
    /// What went wrong, if it did.
    pub error: Option<String>,
}

/// Waits until `at`, then downloads `GET /v1/export` over all history,
/// marking its start and end in `shared`.
pub async fn analyst(
    http: SocketAddr,
    token: Option<String>,
    shared: Arc<Shared>,
    at: Instant,
    at_s: u64,
) -> ExportRun {
    tokio::time::sleep_until(at.into()).await;
    let mut run = ExportRun {
        at_s,
        ..ExportRun::default()
    };
    let began = Instant::now();
    let _ = shared.export_began.set(began);
    let outcome = download(http, token.as_deref(), &mut run).await;
    let _ = shared.export_ended.set(Instant::now());
    run.seconds = began.elapsed().as_secs_f64();
    if let Err(e) = outcome {
        run.error = Some(format!("{e:#}"));
    }
    run
}

async fn download(http: SocketAddr, token: Option<&str>, run: &mut ExportRun) -> anyhow::Result<()> {
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
    let mut resp = req.send().await?.error_for_status()?;
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
