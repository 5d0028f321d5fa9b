//! Which history segments go with the snapshots (see
//! `bluelight_engine::HistoryLog`): each snapshot writes what history took
//! since the one before as a new segment, and the list drops segments
//! once retention or the history cap has passed all of them.

use bluelight_engine::HistoryLog;

use super::Segment;

/// The segments Redis holds and whether they are all of history.
#[derive(Debug, Clone, Default)]
pub(crate) struct Segments {
    /// Listed by the latest snapshot, oldest first.
    pub list: Vec<Segment>,
    /// Whether the list plus the engine's log is all of history. Not so
    /// for a promoted follower (it logged nothing while following) or
    /// after a snapshot Redis did not take (its log is gone): the next
    /// snapshot then writes history whole.
    pub whole: bool,
    /// How long history keeps a fix, ms of device time.
    pub retention_ms: i64,
    /// The most fixes history holds.
    pub max_fixes: u64,
}

impl Segments {
    /// The list after a snapshot that adds `log` (written as segment
    /// `id`, unless empty), at `now_ms`; with `replaces`, `log` is all of
    /// history and the old segments go.
    pub fn after(&self, log: &HistoryLog, replaces: bool, now_ms: i64) -> (u64, Vec<Segment>) {
        let id = self.list.iter().map(|s| s.id).max().map_or(1, |m| m + 1);
        let mut list = if replaces { Vec::new() } else { self.list.clone() };
        if let Some(newest_ms) = log.newest_ms() {
            list.push(Segment {
                id,
                count: log.len() as u64,
                newest_ms,
            });
        }
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        let mut held: u64 = list.iter().map(|s| s.count).sum();
        let gone = list
            .iter()
            .take_while(|s| {
                // Past retention, or the newer ones alone fill the cap.
                let drop = s.newest_ms < cutoff || held - s.count >= self.max_fixes;
                if drop {
                    held -= s.count;
                }
                drop
            })
            .count();
        list.drain(..gone);
        (id, list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluelight_engine::{Engine, EngineConfig, Fix, Outputs, UnitSlot};

    fn log_of(times: &[i64]) -> HistoryLog {
        let mut e = Engine::new(EngineConfig::default()).expect("engine");
        e.intern_unit("U");
        e.log_history();
        let mut out = Outputs::default();
        for &t in times {
            e.apply(UnitSlot(0), &Fix::at(t, 1.0, 1.0), &mut out);
        }
        e.take_history_log(false)
    }

    fn seg(id: u64, count: u64, newest_ms: i64) -> Segment {
        Segment { id, count, newest_ms }
    }

    #[test]
    fn a_snapshot_adds_a_segment_with_the_next_id() {
        let s = Segments {
            list: vec![seg(3, 10, 5_000)],
            whole: true,
            retention_ms: 3_600_000,
            max_fixes: 1_000,
        };
        let (id, list) = s.after(&log_of(&[6_000, 7_000]), false, 10_000);
        assert_eq!(id, 4);
        assert_eq!(list, vec![seg(3, 10, 5_000), seg(4, 2, 7_000)]);
        // Nothing new: no segment.
        let (_, list) = s.after(&HistoryLog::default(), false, 10_000);
        assert_eq!(list, vec![seg(3, 10, 5_000)]);
        // Whole history replaces the list.
        let (id, list) = s.after(&log_of(&[6_000]), true, 10_000);
        assert_eq!(list, vec![seg(id, 1, 6_000)]);
    }

    #[test]
    fn segments_go_once_retention_or_the_cap_has_passed_all_of_them() {
        let s = Segments {
            list: vec![seg(1, 5, 1_000), seg(2, 5, 50_000), seg(3, 5, 90_000)],
            whole: true,
            retention_ms: 60_000,
            max_fixes: 9,
        };
        // At 100 s, segment 1 (newest 1 s) is past 60 s of retention; 2 is not.
        let (_, list) = s.after(&HistoryLog::default(), false, 100_000);
        assert_eq!(list.iter().map(|s| s.id).collect::<Vec<_>>(), vec![2, 3]);
        // With a new segment of 5, segments 2, 3 and it hold 15: without 2
        // they still hold 10, a full cap, so 2 goes; without 3 only 5, so 3
        // stays.
        let (id, list) = s.after(&log_of(&[95_000, 96_000, 97_000, 98_000, 99_000]), false, 100_000);
        assert_eq!(list.iter().map(|s| s.id).collect::<Vec<_>>(), vec![3, id]);
    }
}
