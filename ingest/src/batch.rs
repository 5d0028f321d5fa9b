//! The batch every decoder produces and the engine writer consumes: fixes
//! with their unit references, metadata updates, and the per-fix errors that
//! were found, in one reusable value (text lives in one arena, so a batch
//! allocates nothing per fix once its buffers have grown).

use std::ops::Range;
use std::time::Instant;

use bluelight_engine::{Agency, Fix};

use crate::validate::Reject;

/// How a fix names its unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitRef {
    /// A numeric device key (FlatBuffers `unit`).
    Key(u64),
    /// A human id, as a range of the batch's text.
    Id(Range<u32>),
}

/// A metadata update for one unit (FlatBuffers `UnitInfo`, or JSON fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaUpdate {
    /// The unit.
    pub unit: UnitRef,
    /// Registers the numeric key as an alias of `unit` (an `Id`).
    pub key: Option<u64>,
    /// New agency.
    pub agency: Option<Agency>,
    /// New kind (range of the batch's text).
    pub kind: Option<Range<u32>>,
    /// New tags (range of `IngestBatch::tag_ranges`).
    pub tags: Option<Range<u32>>,
    /// New callsign (range of the batch's text; empty removes it).
    pub callsign: Option<Range<u32>>,
    /// How the position was found (CoT `how`; range of the batch's text).
    pub how: Option<Range<u32>>,
    /// When the unit's latest report goes stale (CoT `stale`), ms.
    pub stale_at_ms: Option<i64>,
}

/// One decoded batch.
#[derive(Debug, Default, Clone)]
pub struct IngestBatch {
    /// Ids, kinds and tags, concatenated.
    pub text: String,
    /// Ranges of tag names in `text`.
    pub tag_ranges: Vec<Range<u32>>,
    /// Metadata updates, applied before the fixes.
    pub metas: Vec<MetaUpdate>,
    /// Valid fixes with their units, in order.
    pub fixes: Vec<(UnitRef, Fix)>,
    /// Index in the input of each of `fixes` (for per-fix replies).
    pub index: Vec<u32>,
    /// Fixes that were rejected: their index in the input and why.
    pub errors: Vec<(u32, Reject)>,
    /// When the transport finished reading it: the start of the server's
    /// fix-to-alert latency.
    pub received: Option<Instant>,
    /// Measurements (speed, heading, accuracy) of accepted fixes that were
    /// out of range and are kept as unknown.
    pub measurements_cleared: u32,
    /// What was wrong with a refused fix, in words naming the field, by
    /// its index in the input (JSON fixes, for HTTP replies). Filled only
    /// on refusals.
    pub error_details: Vec<(u32, String)>,
    /// The agencies whose units the sender may place (bit `1 << agency`),
    /// from its token or certificate; `None`: any. The writer refuses the
    /// rest (`forbidden`), judged against the units' agencies as they are.
    pub agencies: Option<u8>,
}

impl IngestBatch {
    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.text.clear();
        self.tag_ranges.clear();
        self.metas.clear();
        self.fixes.clear();
        self.index.clear();
        self.errors.clear();
        self.received = None;
        self.measurements_cleared = 0;
        self.agencies = None;
        self.error_details.clear();
    }

    /// Appends text, returning its range.
    pub fn push_text(&mut self, s: &str) -> Range<u32> {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        start..self.text.len() as u32
    }

    /// Appends pieces of text as one, returning its range.
    pub fn push_text_parts(&mut self, parts: &[&str]) -> Range<u32> {
        let start = self.text.len() as u32;
        parts.iter().for_each(|p| self.text.push_str(p));
        start..self.text.len() as u32
    }

    /// The text of a range.
    pub fn str(&self, r: &Range<u32>) -> &str {
        self.text.get(r.start as usize..r.end as usize).unwrap_or("")
    }

    /// The tag names of a range of `tag_ranges`.
    pub fn tags(&self, r: &Range<u32>) -> impl Iterator<Item = &str> {
        self.tag_ranges
            .get(r.start as usize..r.end as usize)
            .unwrap_or(&[])
            .iter()
            .map(|t| self.str(t))
    }
}
