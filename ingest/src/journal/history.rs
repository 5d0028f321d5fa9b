//! Which history segments go with the snapshots (see
//! `bluelight_engine::HistoryLog`): each snapshot writes what history took
//! since the one before as a new segment, and the list drops segments
//! once retention or the history cap has passed all of them.

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
    /// The list after a snapshot that adds segment `added` (if any), at
    /// `now_ms`; with `replaces`, `added` is all of history and the old
    /// segments go.
    pub fn after(&self, added: Option<Segment>, replaces: bool, now_ms: i64) -> Vec<Segment> {
        let mut list = if replaces { Vec::new() } else { self.list.clone() };
        list.extend(added);
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
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: u64, count: u64, newest_ms: i64) -> Segment {
        Segment { id, count, newest_ms }
    }

    #[test]
    fn a_snapshot_adds_its_segment_at_the_end() {
        let s = Segments {
            list: vec![seg(3, 10, 5_000)],
            whole: true,
            retention_ms: 3_600_000,
            max_fixes: 1_000,
        };
        let list = s.after(Some(seg(9, 2, 7_000)), false, 10_000);
        assert_eq!(list, vec![seg(3, 10, 5_000), seg(9, 2, 7_000)]);
        // Nothing new: no segment.
        assert_eq!(s.after(None, false, 10_000), vec![seg(3, 10, 5_000)]);
        // Whole history replaces the list.
        assert_eq!(
            s.after(Some(seg(10, 1, 6_000)), true, 10_000),
            vec![seg(10, 1, 6_000)]
        );
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
        let ids = |l: Vec<Segment>| l.iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(s.after(None, false, 100_000)), vec![2, 3]);
        // With a new segment of 5, segments 2, 3 and it hold 15: without 2
        // they still hold 10, a full cap, so 2 goes; without 3 only 5, so 3
        // stays.
        assert_eq!(ids(s.after(Some(seg(4, 5, 99_000)), false, 100_000)), vec![3, 4]);
    }
}
