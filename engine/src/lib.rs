//! # bluelight-engine
//!
//! The in-memory spatial engine of bluelight: every unit's live position in
//! H3-sharded R-trees, exact nearest by great-circle distance, area queries,
//! geofences (enter, exit with hysteresis, dwell), proximity rules, staleness,
//! standing queries (positions feeds and continuous nearest), recent history
//! and snapshots. No I/O, no threads, no clock of its own: the caller passes
//! time in and routes the [`Outputs`].
//!
//! ```
//! use bluelight_engine::{Engine, EngineConfig, Fix, Outputs, Shape, FenceSpec, Detect, Filter};
//! # fn main() -> Result<(), bluelight_engine::EngineError> {
//! let mut engine = Engine::new(EngineConfig::default())?;
//! let mut out = Outputs::default();
//! let fence = FenceSpec {
//!     id: "hospital".into(),
//!     shape: Shape::circle(50.9097, -1.4044, 300.0)?,
//!     detect: Detect::default(),
//!     dwell_s: 0,
//!     hysteresis_m: 0.0,
//!     filter: Filter::all(),
//!     source: None,
//! };
//! engine.put_fence(fence, 0, &mut out)?;
//! let amb = engine.intern_unit("AMB-104");
//! engine.apply(amb, &Fix::at(1_000, 50.9098, -1.4045), &mut out);
//! assert_eq!(out.alerts[0].event.as_str(), "enter");
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! * [`model`] — agencies, statuses, fixes, unit views.
//! * [`clock`] — time, passed in: the wall clock and a manual one for tests.
//! * `units` — interning of unit ids and the flat hot-state table.
//! * `sphere`, `shape`, `polygon` — geometry: unit vectors, exact shapes.
//! * `cell_geometry` — each cell's safe region (its inscribed cap), which
//!   lets most fixes skip H3 and the R-tree entirely.
//! * `shard` — H3-keyed shards of `rstar` trees and the shard-of-shards tree.
//! * `cover` — H3 covers of regions.
//! * `candidates` — the cell → candidate regions index, and the interned
//!   candidate sets occupied cells hold (freed when none does).
//! * `region` — `Regions`: fences, feed areas and nearest zones as one kind
//!   of thing, their covers and per-unit membership lists, and a unit's
//!   evaluation against them.
//! * `standing`, `rules`, `history` — the state of standing queries,
//!   proximity rules and recent fixes.
//! * `engine` — the `Engine`: its state by owner and its per-fix path.
//! * `impl Engine` by concern: `registry` (ids, keys, metadata, filters),
//!   `fences` (fences and feeds), `query` (nearest, areas), `continuous`
//!   (standing nearest), `proximity` (rules), `scan` (the clock's scan),
//!   `snapshot` (durable state).
//!
//! State modules never import `engine`; no module imports one that imports
//! it back.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

mod alert;
mod antimeridian;
mod candidates;
mod cell_geometry;
pub mod clock;
mod config;
mod continuous;
mod cover;
mod engine;
mod error;
mod fences;
mod history;
mod history_log;
pub mod model;
mod polygon;
mod proximity;
mod query;
mod region;
mod registry;
mod rules;
mod scan;
mod shape;
mod shard;
mod snapshot;
pub mod sphere;
mod standing;
mod units;
mod validity;

pub use alert::{Alert, AlertEvent, FeedChange, FeedEvent, Outputs};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::EngineConfig;
pub use cover::Cover;
pub use engine::{Applied, Engine, EngineCounters};
pub use error::EngineError;
pub use filter::Filter;
pub use history::{HistoryCursor, HistoryMemory, HistoryRecord, HistoryStats};
pub use history_log::HistoryLog;
pub use model::Neighbor;
pub use model::{Agency, Fix, Status, UnitSlot, UnitView};
pub use query::NearestQuery;
pub use region::{Detect, FenceSpec};
pub use registry::UnitBorrowed;
pub use rules::RuleSpec;
pub use shape::{Circle, Shape};
pub use snapshot::Frozen;
pub use units::MAX_TAGS;

mod filter;

/// The engine as the server shares it: one writer thread takes the lock a
/// chunk of fixes at a time, rare readers between chunks; nothing awaits
/// while holding it (`parking_lot`: a fair hand-off, and no poisoning, so
/// one panicking reader cannot stop every fix behind it).
pub type SharedEngine = std::sync::Arc<parking_lot::Mutex<Engine>>;

/// Which recent fixes to read back (every condition optional but the window).
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// From this device time, inclusive.
    pub from_ms: i64,
    /// To this device time, inclusive.
    pub to_ms: i64,
    /// Only fixes inside this area.
    pub area: Option<Shape>,
    /// Only these units.
    pub units: Option<Vec<UnitSlot>>,
    /// Only units of these agencies.
    pub agencies: Option<Vec<Agency>>,
}

impl Engine {
    /// Recent fixes matching `q`, in time order (and per unit in time order),
    /// handed to `f` a chunk (about a minute) at a time so a caller can stream
    /// a large window without holding it.
    pub fn history_query(&self, q: &HistoryQuery, f: impl FnMut(&[HistoryRecord])) {
        self.history
            .for_each_chunk(q.from_ms, q.to_ms, self.history_filter(q), f);
    }

    /// [`Engine::history_query`]'s records unsorted, a bounded slice at a
    /// time: copies into `out` those found reading at most `budget`
    /// records from `cursor` on, and returns whether it reached the end.
    /// So a caller can copy a large window out holding the engine a
    /// millisecond or so at a time, then sort and format it without it.
    pub fn history_slice(
        &self,
        q: &HistoryQuery,
        cursor: &mut HistoryCursor,
        budget: usize,
        out: &mut Vec<HistoryRecord>,
    ) -> bool {
        self.history
            .copy_slice(q.from_ms, q.to_ms, self.history_filter(q), cursor, budget, out)
    }

    /// Whether a record matches `q`'s units, agencies and area.
    fn history_filter<'a>(&'a self, q: &'a HistoryQuery) -> impl FnMut(&HistoryRecord) -> bool + 'a {
        let mut units = q.units.clone();
        if let Some(u) = &mut units {
            u.sort_unstable();
        }
        let agencies = q
            .agencies
            .as_ref()
            .map(|a| a.iter().fold(0u8, |m, x| m | (1 << *x as u8)));
        move |r| {
            units.as_ref().is_none_or(|u| u.binary_search(&r.unit).is_ok())
                && agencies.is_none_or(|m| {
                    self.units
                        .state
                        .get(r.unit.index())
                        .is_some_and(|st| m & (1 << st.agency) != 0)
                })
                && q.area.as_ref().is_none_or(|a| a.contains(r.fix.lat, r.fix.lon))
        }
    }

    /// Recent fixes in `[from_ms, to_ms]` for which `keep` holds, in time
    /// order, handed to `f` a chunk (about a minute) at a time so a caller can
    /// stream a large window without holding it.
    pub fn history(
        &self,
        from_ms: i64,
        to_ms: i64,
        keep: impl FnMut(&HistoryRecord) -> bool,
        f: impl FnMut(&[HistoryRecord]),
    ) {
        self.history.for_each_chunk(from_ms, to_ms, keep, f);
    }

    /// The device-time span history holds (whole minutes), if any.
    pub fn history_bounds(&self) -> Option<(i64, i64)> {
        self.history.bounds()
    }

    /// At most this many fixes of history fall in `[from_ms, to_ms]` (the
    /// fixes of the minutes overlapping it; for export progress).
    pub fn history_count_upper_bound(&self, from_ms: i64, to_ms: i64) -> usize {
        self.history.count_upper_bound(from_ms, to_ms)
    }

    /// History counters.
    pub fn history_stats(&self) -> &HistoryStats {
        self.history.stats()
    }
}
