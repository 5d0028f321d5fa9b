//! The engine's tuning knobs, each typed, documented and defaulted in one place.

use crate::model::Agency;

/// How the engine is tuned. `EngineConfig::default()` is the production default.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// H3 resolution of the shards (one R-tree each). Coarse cells (res 3–5)
    /// keep trees large enough to be efficient and few enough to order
    /// quickly; res 4 cells are about 1,770 km².
    pub shard_res: u8,
    /// H3 resolution of fence, feed and zone covers, and of each unit's safe
    /// cell. Finer means fewer exact polygon tests but more cover cells and
    /// more frequent cell changes; res 9 cells are about 0.1 km² (174 m edges).
    pub fence_res: u8,
    /// Seconds without a fix after which a unit is stale, by default.
    pub stale_after_s: u32,
    /// Per-agency overrides of `stale_after_s` (indexed by `Agency as usize`).
    pub stale_after_by_agency: [Option<u32>; 5],
    /// How long history keeps a fix, in seconds (by device time).
    pub history_retention_s: u32,
    /// The most fixes history holds; the oldest go first beyond it.
    pub history_max_fixes: usize,
    /// The most cells one cover may hold, so a huge area cannot exhaust memory.
    pub max_cover_cells: usize,
    /// The most units the engine holds: a fix or a registration naming a
    /// new unit past it is refused (`too_many_units`), so a flood of made-up
    /// ids cannot exhaust memory. Units are never forgotten (a stale unit is
    /// still a unit), so this is the bound of every per-unit table.
    pub max_units: usize,
    /// The most fences; a new one past it is refused (a replaced one is not).
    pub max_fences: usize,
    /// The most proximity rules; a new one past it is refused.
    pub max_rules: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shard_res: 4,
            fence_res: 9,
            stale_after_s: 120,
            stale_after_by_agency: [None; 5],
            history_retention_s: 3600,
            history_max_fixes: 20_000_000,
            max_cover_cells: 4_000_000,
            max_units: 2_000_000,
            max_fences: 100_000,
            max_rules: 1_000,
        }
    }
}

impl EngineConfig {
    /// The staleness threshold of an agency, in milliseconds.
    pub fn stale_after_ms(&self, agency: Agency) -> i64 {
        let s = self.stale_after_by_agency[agency as usize].unwrap_or(self.stale_after_s);
        i64::from(s) * 1000
    }
}
