//! An export's body as the client accepts it: as it is, or gzip
//! (`Accept-Encoding`, RFC 9110 §12.5.3), compressed on the export's own
//! thread.
//!
//! A full-retention export is gigabytes of GeoJSON that compress about
//! sixfold at gzip's fastest level. Compressed on the export's
//! `SCHED_IDLE` thread, the bytes the runtime's workers write into the
//! socket (beside every alert frame) and the bytes an analyst downloads
//! are a sixth; the compression itself takes only CPU nothing else wants.

use std::convert::Infallible;
use std::io::Write;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;

/// How a body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As it is.
    Identity,
    /// gzip, at the fastest level (a sixth of an export's GeoJSON; the
    /// higher levels cost several times the CPU for a little more).
    Gzip,
}

impl Encoding {
    /// gzip if `Accept-Encoding` accepts it (`gzip`, `x-gzip` or `*`
    /// with a weight above 0), else the body as it is.
    pub fn accepted(headers: &HeaderMap) -> Self {
        let accepts = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|item| {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or_default().trim();
                let weight = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                weight > 0.0
                    && (coding.eq_ignore_ascii_case("gzip")
                        || coding.eq_ignore_ascii_case("x-gzip")
                        || coding == "*")
            });
        if accepts { Self::Gzip } else { Self::Identity }
    }

    /// The `Content-Encoding` header this body needs, if any.
    pub fn header(self) -> Option<(header::HeaderName, HeaderValue)> {
        match self {
            Self::Identity => None,
            Self::Gzip => Some((header::CONTENT_ENCODING, HeaderValue::from_static("gzip"))),
        }
    }

    /// A whole body, encoded (on the caller's thread).
    pub fn whole(self, body: Vec<u8>) -> Vec<u8> {
        match self {
            Self::Identity => body,
            Self::Gzip => {
                let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 8), Compression::fast());
                // Writing into a Vec cannot fail.
                let _ = gz.write_all(&body);
                gz.finish().unwrap_or_default()
            }
        }
    }
}

/// A streamed body's pieces on their way to the client from a blocking
/// thread, encoded there first.
pub struct BodyOut {
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    gzip: Option<GzEncoder<Vec<u8>>>,
}

impl BodyOut {
    /// Pieces go into `tx`, encoded as `encoding`.
    pub fn new(tx: mpsc::Sender<Result<Bytes, Infallible>>, encoding: Encoding) -> Self {
        let gzip = match encoding {
            Encoding::Identity => None,
            Encoding::Gzip => Some(GzEncoder::new(Vec::new(), Compression::fast())),
        };
        Self { tx, gzip }
    }

    /// Sends a piece (waiting while the client is behind); false once the
    /// client has gone.
    pub fn send(&mut self, piece: Vec<u8>) -> bool {
        let Some(gz) = &mut self.gzip else {
            return self.tx.blocking_send(Ok(Bytes::from(piece))).is_ok();
        };
        let _ = gz.write_all(&piece);
        self.send_compressed()
    }

    /// Ends the body (gzip's trailer); false if the client has gone.
    pub fn finish(mut self) -> bool {
        let Some(gz) = self.gzip.take() else {
            return true;
        };
        match gz.finish() {
            Ok(rest) => rest.is_empty() || self.tx.blocking_send(Ok(Bytes::from(rest))).is_ok(),
            Err(_) => false,
        }
    }

    /// Sends what the compressor has written so far.
    fn send_compressed(&mut self) -> bool {
        let Some(gz) = &mut self.gzip else {
            return true;
        };
        let out = std::mem::take(gz.get_mut());
        out.is_empty() || self.tx.blocking_send(Ok(Bytes::from(out))).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn with(accept: &[&str]) -> Encoding {
        let mut h = HeaderMap::new();
        for a in accept {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(a).expect("header"));
        }
        Encoding::accepted(&h)
    }

    #[test]
    fn gzip_is_chosen_only_when_the_client_accepts_it() {
        assert_eq!(with(&[]), Encoding::Identity);
        assert_eq!(with(&["gzip, deflate, br"]), Encoding::Gzip);
        assert_eq!(with(&["br", "GZIP;q=0.5"]), Encoding::Gzip);
        assert_eq!(with(&["x-gzip"]), Encoding::Gzip);
        assert_eq!(with(&["*"]), Encoding::Gzip);
        assert_eq!(with(&["gzip;q=0"]), Encoding::Identity, "q=0 refuses it");
        assert_eq!(with(&["gzip; q=0.000"]), Encoding::Identity);
        assert_eq!(with(&["deflate, br"]), Encoding::Identity);
        assert_eq!(with(&["identity"]), Encoding::Identity);
        assert_eq!(
            with(&["gzipped"]),
            Encoding::Identity,
            "a whole token, not a prefix"
        );
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("a whole gzip stream");
        out
    }

    #[test]
    fn a_streamed_body_gunzips_to_its_pieces_in_order() {
        let (tx, mut rx) = mpsc::channel(1024);
        let pieces: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("{{\"piece\":{i},\"fill\":\"{}\"}}\n", "x".repeat(i * 997)).into_bytes())
            .collect();
        let sent = std::thread::spawn({
            let pieces = pieces.clone();
            move || {
                let mut out = BodyOut::new(tx, Encoding::Gzip);
                pieces.into_iter().all(|p| out.send(p)) && out.finish()
            }
        })
        .join()
        .expect("thread");
        assert!(sent);
        let mut gz = Vec::new();
        while let Ok(Ok(b)) = rx.try_recv() {
            gz.extend_from_slice(&b);
        }
        assert_eq!(gunzip(&gz), pieces.concat());
        assert!(
            gz.len() * 10 < pieces.concat().len(),
            "compressed: {} bytes",
            gz.len()
        );
    }

    #[test]
    fn identity_passes_pieces_as_they_are_and_a_gone_client_is_told() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut out = BodyOut::new(tx, Encoding::Identity);
        assert!(out.send(b"abc".to_vec()));
        assert_eq!(
            rx.try_recv().ok().and_then(Result::ok),
            Some(Bytes::from_static(b"abc"))
        );
        drop(rx);
        assert!(!out.send(b"def".to_vec()), "the client has gone");
        assert_eq!(Encoding::Identity.whole(b"xyz".to_vec()), b"xyz");
        assert_eq!(gunzip(&Encoding::Gzip.whole(b"xyz".to_vec())), b"xyz");
    }
}
