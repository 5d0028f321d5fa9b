//! `bluelight export`: streams `GET /v1/export` (or `/v1/export/h3`) of a
//! running server to a file or stdout, with a progress bar on a terminal.
//!
//! The server names an upper bound of the fixes to come
//! (`x-bluelight-fixes-at-most`); the bar counts rows as they arrive against
//! it. The file is written to `FILE.part` and renamed when complete, so an
//! interrupted export never leaves a truncated file under the real name.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What to export; mirrors the query of `GET /v1/export`.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Base URL of the server, e.g. `http://127.0.0.1:9600`.
    pub server: String,
    /// Bearer token (scope `export`).
    pub token: Option<String>,
    /// Window start, ms since the epoch.
    pub from_ms: i64,
    /// Window end, ms since the epoch.
    pub to_ms: i64,
    /// `w,s,e,n`.
    pub bbox: Option<String>,
    /// Comma-separated unit ids.
    pub units: Option<String>,
    /// Comma-separated agencies.
    pub agency: Option<String>,
    /// `geojson`, `csv` or `ndjson` (`geojson` or `csv` with `h3_res`).
    pub format: String,
    /// `points` or `tracks`.
    pub shape: String,
    /// H3 aggregate at this resolution instead of fixes.
    pub h3_res: Option<u8>,
    /// Output file; `None` = stdout.
    pub out: Option<PathBuf>,
    /// Draw the progress bar (when stderr is a terminal).
    pub progress: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Bytes written.
    pub bytes: u64,
    /// Rows: fixes (points), tracks, or cells.
    pub rows: u64,
}

impl ExportRequest {
    /// The URL of the request.
    fn url(&self) -> String {
        let mut q = vec![
            format!("from_ms={}", self.from_ms),
            format!("to_ms={}", self.to_ms),
            format!("format={}", self.format),
        ];
        let path = match self.h3_res {
            Some(res) => {
                q.push(format!("res={res}"));
                "/v1/export/h3"
            }
            None => {
                q.push(format!("shape={}", self.shape));
                "/v1/export"
            }
        };
        for (k, v) in [
            ("bbox", &self.bbox),
            ("units", &self.units),
            ("agency", &self.agency),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={}", encode(v)));
            }
        }
        format!("{}{path}?{}", self.server.trim_end_matches('/'), q.join("&"))
    }
}

/// Percent-encodes a query value (ids may hold any character but commas).
fn encode(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~,".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Counts rows in a stream of export bytes, whatever the chunking: CSV and
/// NDJSON rows end with a newline (the CSV header is subtracted by the
/// caller); each GeoJSON feature holds `"type":"Feature"` followed by
/// anything but the `C` of the collection.
#[derive(Debug, Default)]
struct RowCounter {
    /// The end of the stream so far that may still start a marker.
    tail: Vec<u8>,
    rows: u64,
}

const FEATURE: &[u8] = b"\"type\":\"Feature\"";

impl RowCounter {
    /// Rows of data so far (a CSV's header row is not one).
    fn data_rows(&self, csv: bool) -> u64 {
        self.rows.saturating_sub(u64::from(csv))
    }

    fn feed(&mut self, chunk: &[u8], geojson: bool) {
        if !geojson {
            self.rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            return;
        }
        self.tail.extend_from_slice(chunk);
        // A marker is decided once the byte after it has arrived; the last
        // `FEATURE.len()` bytes wait for the next chunk.
        let decided = self.tail.len().saturating_sub(FEATURE.len());
        for i in 0..decided {
            if self.tail[i..].starts_with(FEATURE) && self.tail[i + FEATURE.len()] != b'C' {
                self.rows += 1;
            }
        }
        self.tail.drain(..decided);
    }
}

/// Runs the export.
///
/// # Errors
/// The server cannot be reached, refuses the request (its `error` is
/// passed on), or the output cannot be written.
pub async fn run(req: &ExportRequest) -> anyhow::Result<ExportSummary> {
    // HTTPS servers too (the system's roots): reqwest's rustls needs a
    // provider chosen, ring as the server's.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    // A sixth of the bytes over the network; inflated here as it comes.
    let mut get = client
        .get(req.url())
        .header(reqwest::header::ACCEPT_ENCODING, "gzip");
    if let Some(t) = &req.token {
        get = get.bearer_auth(t);
    }
    let mut resp = get
        .send()
        .await
        .with_context(|| format!("cannot reach {}", req.server))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        bail!("the server refused the export ({status}): {reason}");
    }
    let most = resp
        .headers()
        .get(crate::export::FIXES_AT_MOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = match (req.progress, most) {
        (false, _) => ProgressBar::hidden(),
        (true, Some(n)) if req.shape == "points" && req.h3_res.is_none() => {
            let bar = ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/~{len} fixes {binary_bytes} ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
        (true, _) => {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} rows {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        }
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    let part = req.out.as_ref().map(|p| {
        let mut s = p.as_os_str().to_owned();
        s.push(".part");
        PathBuf::from(s)
    });
    let mut sink: Box<dyn Write> = match &part {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let geojson = req.format == "geojson";
    let gzip = resp
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let mut inflate = gzip.then(|| flate2::write::GzDecoder::new(Vec::new()));
    let mut counter = RowCounter::default();
    let mut bytes = 0u64;
    let mut emit = |data: &[u8]| -> anyhow::Result<()> {
        sink.write_all(data).context("cannot write the export")?;
        bytes += data.len() as u64;
        counter.feed(data, geojson);
        bar.set_position(counter.data_rows(req.format == "csv"));
        bar.set_message(format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64));
        Ok(())
    };
    while let Some(chunk) = resp.chunk().await.context("the export stream broke off")? {
        match &mut inflate {
            Some(d) => {
                d.write_all(&chunk)
                    .context("the export's gzip stream is broken")?;
                let out = std::mem::take(d.get_mut());
                emit(&out)?;
            }
            None => emit(&chunk)?,
        }
    }
    if let Some(d) = inflate {
        let rest = d.finish().context("the export's gzip stream is broken")?;
        emit(&rest)?;
    }
    sink.flush().context("cannot write the export")?;
    drop(sink);
    if let (Some(p), Some(out)) = (&part, &req.out) {
        std::fs::rename(p, out)
            .with_context(|| format!("cannot rename {} to {}", p.display(), out.display()))?;
    }
    let rows = counter.data_rows(req.format == "csv");
    bar.finish_and_clear();
    Ok(ExportSummary { bytes, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_markers_split_across_chunks_are_counted_once() {
        let text = br#"{"type":"FeatureCollection","features":[{"geometry":{},"properties":{},"type":"Feature"},{"type":"Feature","geometry":{}}]}"#;
        for cut in 0..text.len() {
            let mut c = RowCounter::default();
            c.feed(&text[..cut], true);
            c.feed(&text[cut..], true);
            assert_eq!(c.rows, 2, "cut at {cut}");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("AMB 1&x,POL-2"), "AMB%201%26x,POL-2");
    }
}
