//! A positions feed's waiting changes: a log the writer appends to, and
//! conflates (each unit's latest change wins) when the feed flushes.
//!
//! The writer routes every moved unit into every feed that holds it,
//! hundreds of thousands a second at `surge`: a push onto a `Vec` is a
//! store where a hash-set insert was a hash, a probe and often a cache
//! miss. Conflation is a scan with a bitset, once per flush on the
//! session's side, and on the writer only when the log has doubled since
//! it was last conflated, so it never holds more than about twice the
//! feed's distinct units.

use std::cell::RefCell;

/// The log length below which the writer never conflates in place.
const FIRST_CONFLATION: usize = 4096;

/// One routed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    /// The unit's engine slot.
    unit: u32,
    /// Whether it left the feed's area (else it entered or moved).
    left: bool,
}

/// Conflated changes of one positions feed since its last update.
#[derive(Debug)]
pub struct FeedChanges {
    /// Changes in the order the writer routed them (a unit's order is
    /// its fixes' order, so the last entry of a unit is its latest).
    log: Vec<Change>,
    /// The log length at which the writer conflates it in place: twice
    /// what it held after the last conflation, so that work is amortised.
    conflate_at: usize,
}

impl Default for FeedChanges {
    fn default() -> Self {
        Self {
            log: Vec::new(),
            conflate_at: FIRST_CONFLATION,
        }
    }
}

thread_local! {
    /// Units seen in the current conflation scan, a bit a slot; all zero
    /// between scans. Per thread: the writer and the runtime's workers
    /// each conflate without sharing.
    static SEEN: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

impl FeedChanges {
    /// Whether nothing has changed since the last update.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Records that `unit` entered or moved (`left` false) or left the
    /// area. Returns how many earlier changes this conflated away (0 but
    /// when the log had doubled).
    pub fn push(&mut self, unit: u32, left: bool) -> u64 {
        self.log.push(Change { unit, left });
        if self.log.len() < self.conflate_at {
            return 0;
        }
        let dropped = self.conflate();
        self.conflate_at = (self.log.len() * 2).max(FIRST_CONFLATION);
        dropped
    }

    /// Takes the latest change of each unit: `changed` gets the units that
    /// entered or moved, `left` those that left (both cleared first). The
    /// log keeps its room, so the writer does not grow it again after
    /// every update. Returns how many changes were conflated away.
    pub fn take(&mut self, changed: &mut Vec<u32>, left: &mut Vec<u32>) -> u64 {
        let dropped = self.conflate();
        changed.clear();
        left.clear();
        for c in &self.log {
            if c.left {
                left.push(c.unit);
            } else {
                changed.push(c.unit);
            }
        }
        self.conflate_at = (self.log.len() * 2).max(FIRST_CONFLATION);
        self.log.clear();
        dropped
    }

    /// Keeps only each unit's latest change, in place; returns how many
    /// entries went.
    fn conflate(&mut self) -> u64 {
        SEEN.with_borrow_mut(|seen| {
            let log = &mut self.log;
            // Newest first: the first time a unit is seen is its latest
            // change. Kept entries are written from the end backwards.
            let mut write = log.len();
            for read in (0..log.len()).rev() {
                let c = log[read];
                let (word, bit) = ((c.unit >> 6) as usize, 1u64 << (c.unit & 63));
                if word >= seen.len() {
                    seen.resize(word + 1, 0);
                }
                if seen[word] & bit == 0 {
                    seen[word] |= bit;
                    write -= 1;
                    log[write] = c;
                }
            }
            for c in &log[write..] {
                if let Some(w) = seen.get_mut((c.unit >> 6) as usize) {
                    *w = 0;
                }
            }
            log.drain(..write);
            write as u64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn taken(c: &mut FeedChanges) -> (Vec<u32>, Vec<u32>, u64) {
        let (mut changed, mut left) = (Vec::new(), Vec::new());
        let dropped = c.take(&mut changed, &mut left);
        changed.sort_unstable();
        left.sort_unstable();
        (changed, left, dropped)
    }

    #[test]
    fn a_units_latest_change_wins() {
        let mut c = FeedChanges::default();
        assert!(c.is_empty());
        for (unit, left) in [
            (1, false),
            (2, false),
            (1, true),
            (3, true),
            (3, false),
            (1, false),
            (2, true),
        ] {
            assert_eq!(c.push(unit, left), 0);
        }
        assert!(!c.is_empty());
        assert_eq!(taken(&mut c), (vec![1, 3], vec![2], 4));
        assert!(c.is_empty());
        assert_eq!(taken(&mut c), (vec![], vec![], 0));
    }

    /// A feed that is never flushed stays bounded: the writer conflates
    /// the log in place when it doubles, losing no unit's latest change.
    #[test]
    fn an_unflushed_log_stays_within_twice_its_units() {
        let mut c = FeedChanges::default();
        let mut dropped = 0;
        for round in 0..100u32 {
            for unit in 0..1_000u32 {
                dropped += c.push(unit * 70, round % 2 == 1 && unit % 3 == 0);
                assert!(c.log.len() <= FIRST_CONFLATION.max(2_000));
            }
        }
        let (changed, left, rest) = taken(&mut c);
        assert_eq!(
            left,
            (0..1_000u32)
                .filter(|u| u % 3 == 0)
                .map(|u| u * 70)
                .collect::<Vec<_>>()
        );
        assert_eq!(changed.len() + left.len(), 1_000);
        assert_eq!(dropped + rest, 99_000);
    }

    proptest::proptest! {
        /// Against a map of each unit's last change.
        #[test]
        fn matches_a_map_of_latest_changes(pushes in proptest::collection::vec((0u32..300, proptest::bool::ANY), 0..20_000)) {
            let mut c = FeedChanges::default();
            let mut latest = HashMap::new();
            let mut dropped = 0;
            for &(unit, left) in &pushes {
                dropped += c.push(unit, left);
                latest.insert(unit, left);
            }
            let (changed, left, rest) = taken(&mut c);
            let mut want_changed: Vec<u32> = latest.iter().filter(|e| !*e.1).map(|e| *e.0).collect();
            let mut want_left: Vec<u32> = latest.iter().filter(|e| *e.1).map(|e| *e.0).collect();
            want_changed.sort_unstable();
            want_left.sort_unstable();
            proptest::prop_assert_eq!(changed, want_changed);
            proptest::prop_assert_eq!(left, want_left);
            proptest::prop_assert_eq!(dropped + rest, (pushes.len() - latest.len()) as u64);
        }
    }
}
