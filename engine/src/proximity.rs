//! Proximity rules in the engine: creating and removing them, and the
//! pass a moving unit makes over them.

use crate::alert::{Alert, AlertEvent, Outputs};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::UnitSlot;
use crate::rules::{Rule, RuleSpec};
use crate::shape::cap_aabb;
use crate::sphere::{self, EARTH_RADIUS_M};

impl Engine {
    /// Whether units `a` and `b` form a pair of rule `r` (either direction).
    fn pair_matches(&self, r: usize, a: u32, b: u32) -> bool {
        let rule = &self.rules.list[r];
        let t = i64::MAX;
        (self.matches(&rule.spec.from, a, t) && self.matches(&rule.spec.to, b, t))
            || (self.matches(&rule.spec.from, b, t) && self.matches(&rule.spec.to, a, t))
    }

    fn distance_between(&self, a: u32, b: u32) -> f64 {
        sphere::chord2_to_m(sphere::chord2(self.state(a).xyz(), self.state(b).xyz()))
    }

    /// Re-evaluates every rule for a unit that just moved.
    pub(crate) fn evaluate_rules(&mut self, slot: u32, out: &mut Outputs) {
        for r in 0..self.rules.list.len() {
            // Disarm pairs that separated or stopped matching.
            let mut partners = std::mem::take(&mut self.rules.scratch_partners);
            partners.clear();
            partners.extend(self.rules.list[r].partners.get(&slot).into_iter().flatten());
            let rearm = self.rules.list[r].spec.radius_m + self.rules.list[r].spec.hysteresis_m;
            for &other in &partners {
                if !self.pair_matches(r, slot, other) || self.distance_between(slot, other) > rearm {
                    self.rules.list[r].unlink(slot, other);
                }
            }
            self.rules.scratch_partners = partners;
            let t = i64::MAX;
            let (is_from, is_to) = {
                let rule = &self.rules.list[r];
                (
                    self.matches(&rule.spec.from, slot, t),
                    self.matches(&rule.spec.to, slot, t),
                )
            };
            if !is_from && !is_to {
                continue;
            }
            let radius = self.rules.list[r].spec.radius_m;
            let st = *self.state(slot);
            let b = cap_aabb(st.xyz(), radius / EARTH_RADIUS_M);
            let mut near = std::mem::take(&mut self.scratch_slots);
            near.clear();
            self.index.for_each_cell_in(&b, |c| {
                self.for_each_unit_in_cell(c, |s| {
                    if s != slot {
                        near.push(s);
                    }
                });
            });
            near.sort_unstable();
            near.dedup();
            for &other in &near {
                let o = self.state(other);
                if !o.seen() || o.stale() || self.rules.list[r].linked(slot, other) {
                    continue;
                }
                let rule = &self.rules.list[r];
                let pair = (is_from && self.matches(&rule.spec.to, other, t))
                    || (is_to && self.matches(&rule.spec.from, other, t));
                if !pair {
                    continue;
                }
                let d = self.distance_between(slot, other);
                if d <= radius {
                    self.rules.list[r].link(slot, other);
                    let mut alert = Alert::about(AlertEvent::Proximity, UnitSlot(slot), st.time_ms);
                    alert.rule = Some(self.rules.list[r].name.clone());
                    alert.other = Some(UnitSlot(other));
                    alert.distance_m = Some(d);
                    out.push_alert(&mut self.seq, alert);
                }
            }
            self.scratch_slots = near;
        }
    }

    // ----- rules -------------------------------------------------------

    /// Creates or replaces a proximity rule; returns whether it was new.
    /// A replaced rule starts with no active pairs.
    ///
    /// # Errors
    /// A radius or hysteresis that is not a finite non-negative number.
    pub fn put_rule(&mut self, spec: RuleSpec) -> Result<bool, EngineError> {
        for (what, v) in [("radius_m", spec.radius_m), ("hysteresis_m", spec.hysteresis_m)] {
            if !(v.is_finite() && (0.0..=1_000_000.0).contains(&v)) {
                return Err(EngineError::BadParameter {
                    what,
                    value: v,
                    reason: "must be 0..=1000000",
                });
            }
        }
        let at = self.rules.list.iter().position(|r| r.spec.id == spec.id);
        if at.is_none() && self.rules.list.len() >= self.cfg.max_rules {
            return Err(EngineError::Full {
                what: "rules",
                max: self.cfg.max_rules,
                key: "max_rules",
            });
        }
        let rule = Rule::new(spec);
        match at {
            Some(i) => {
                self.rules.list[i] = rule;
                Ok(false)
            }
            None => {
                self.rules.list.push(rule);
                Ok(true)
            }
        }
    }

    /// Removes a rule.
    ///
    /// # Errors
    /// [`EngineError::NotFound`].
    pub fn remove_rule(&mut self, id: &str) -> Result<(), EngineError> {
        let before = self.rules.list.len();
        self.rules.list.retain(|r| r.spec.id != id);
        if self.rules.list.len() == before {
            return Err(EngineError::NotFound {
                what: "rule",
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// How many proximity rules there are.
    pub fn rule_count(&self) -> usize {
        self.rules.list.len()
    }

    /// Rule definitions.
    pub fn rules(&self) -> Vec<RuleSpec> {
        self.rules.list.iter().map(|r| r.spec.clone()).collect()
    }
}
