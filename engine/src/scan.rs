//! The engine's clock scan: staleness, dwell for units that stopped
//! reporting inside a fence, and history expiry, a part of the units at a
//! time.

use crate::alert::{Alert, AlertEvent, Outputs};
use crate::engine::Engine;
use crate::model::{Agency, UnitSlot};
use crate::region::{DWELL_FIRED, Region, RegionKind};
use crate::units::{FLAG_HAS_DETAILS, FLAG_STALE};

impl Engine {
    /// Advances the engine's notion of time: marks units stale, fires dwell
    /// for units that stopped reporting inside a fence, expires history.
    /// Call about once a second with the clock's time.
    pub fn tick(&mut self, now_ms: i64, out: &mut Outputs) {
        self.tick_part(now_ms, 0, 1, out);
    }

    /// [`Engine::tick`] over one of `parts` equal runs of units (`part` in
    /// `0..parts`; history expires with part 0). A server calls the parts in
    /// turn, so the engine is never held for a whole scan of a national
    /// fleet (about 40 ms at 300k units) and fixes and queries wait at most
    /// one part.
    pub fn tick_part(&mut self, now_ms: i64, part: usize, parts: usize, out: &mut Outputs) {
        let parts = parts.max(1);
        let part = part % parts;
        let len = self.units.state.len();
        // One pass over a few bytes a region, against one per unit below.
        let any_dwell = self.regions.any_dwell();
        for i in len * part / parts..len * (part + 1) / parts {
            let st = self.units.state[i];
            if !st.seen() {
                continue;
            }
            let past_stale_time = st.flags & FLAG_HAS_DETAILS != 0
                && self
                    .units
                    .details
                    .get(&(i as u32))
                    .and_then(|d| d.stale_at_ms)
                    .is_some_and(|t| now_ms > t);
            if !st.stale()
                && (past_stale_time
                    || now_ms - st.time_ms > self.cfg.stale_after_ms(Agency::from_u8(st.agency)))
            {
                self.units.state[i].flags |= FLAG_STALE;
                out.push_alert(
                    &mut self.seq,
                    Alert::about(AlertEvent::Stale, UnitSlot(i as u32), now_ms),
                );
            }
            if st.member != 0 && any_dwell {
                self.tick_dwell(i as u32, st.member, now_ms, out);
            }
        }
        if part == 0 {
            self.history.expire(now_ms);
        }
    }

    fn tick_dwell(&mut self, slot: u32, member: u32, now_ms: i64, out: &mut Outputs) {
        let n = self.regions.members.get(member).len();
        for j in 0..n {
            let m = self.regions.members.get(member)[j];
            if m.flags & DWELL_FIRED != 0
                || !self
                    .regions
                    .dwell
                    .get(m.region as usize)
                    .copied()
                    .unwrap_or(false)
            {
                continue;
            }
            let Some(Region {
                kind:
                    RegionKind::Fence {
                        name,
                        detect,
                        dwell_s,
                        ..
                    },
                ..
            }) = self.regions.get(m.region)
            else {
                continue;
            };
            if detect.dwell && now_ms - m.since_ms >= i64::from(*dwell_s) * 1000 {
                let name = name.clone();
                self.regions.members.get_mut(member)[j].flags |= DWELL_FIRED;
                out.push_alert(
                    &mut self.seq,
                    Alert::about(AlertEvent::Dwell, UnitSlot(slot), now_ms).of_fence(name),
                );
            }
        }
    }
}
