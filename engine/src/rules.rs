//! Proximity rules: a unit of one set within `radius_m` of a unit of another
//! fires once, and re-arms only after they separate beyond
//! `radius_m + hysteresis_m`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::alert::{AlertEvent, Outputs};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::filter::Filter;
use crate::model::UnitSlot;
use crate::shape::cap_aabb;
use crate::sphere::{self, EARTH_RADIUS_M};

/// A proximity rule as defined by its owner.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// The rule's id.
    pub id: String,
    /// One set of units.
    pub from: Filter,
    /// The other set.
    pub to: Filter,
    /// Fire when closer than this, metres.
    pub radius_m: f64,
    /// Re-arm only beyond `radius_m + hysteresis_m`.
    pub hysteresis_m: f64,
}

/// A rule and its active (fired, not yet separated) pairs.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Definition.
    pub spec: RuleSpec,
    /// Its id, shared by its alerts.
    pub name: Arc<str>,
    /// Active partners of each unit (both directions).
    pub partners: HashMap<u32, Vec<u32>>,
}

impl Rule {
    pub fn new(spec: RuleSpec) -> Self {
        Self {
            name: Arc::from(spec.id.as_str()),
            spec,
            partners: HashMap::new(),
        }
    }

    fn linked(&self, a: u32, b: u32) -> bool {
        self.partners.get(&a).is_some_and(|l| l.contains(&b))
    }

    fn link(&mut self, a: u32, b: u32) {
        self.partners.entry(a).or_default().push(b);
        self.partners.entry(b).or_default().push(a);
    }

    fn unlink(&mut self, a: u32, b: u32) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(l) = self.partners.get_mut(&x) {
                l.retain(|&v| v != y);
                if l.is_empty() {
                    self.partners.remove(&x);
                }
            }
        }
    }
}

impl Engine {
    /// Whether units `a` and `b` form a pair of rule `r` (either direction).
    fn pair_matches(&self, r: usize, a: u32, b: u32) -> bool {
        let rule = &self.rules[r];
        let t = i64::MAX;
        (self.matches(&rule.spec.from, a, t) && self.matches(&rule.spec.to, b, t))
            || (self.matches(&rule.spec.from, b, t) && self.matches(&rule.spec.to, a, t))
    }

    fn distance_between(&self, a: u32, b: u32) -> f64 {
        sphere::chord2_to_m(sphere::chord2(self.state(a).xyz(), self.state(b).xyz()))
    }

    /// Re-evaluates every rule for a unit that just moved.
    pub(crate) fn evaluate_rules(&mut self, slot: u32, out: &mut Outputs) {
        for r in 0..self.rules.len() {
            // Disarm pairs that separated or stopped matching.
            let mut partners = std::mem::take(&mut self.scratch_partners);
            partners.clear();
            partners.extend(self.rules[r].partners.get(&slot).into_iter().flatten());
            let rearm = self.rules[r].spec.radius_m + self.rules[r].spec.hysteresis_m;
            for &other in &partners {
                if !self.pair_matches(r, slot, other) || self.distance_between(slot, other) > rearm {
                    self.rules[r].unlink(slot, other);
                }
            }
            self.scratch_partners = partners;
            let t = i64::MAX;
            let (is_from, is_to) = {
                let rule = &self.rules[r];
                (
                    self.matches(&rule.spec.from, slot, t),
                    self.matches(&rule.spec.to, slot, t),
                )
            };
            if !is_from && !is_to {
                continue;
            }
            let radius = self.rules[r].spec.radius_m;
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
                if !o.seen() || o.stale() || self.rules[r].linked(slot, other) {
                    continue;
                }
                let rule = &self.rules[r];
                let pair = (is_from && self.matches(&rule.spec.to, other, t))
                    || (is_to && self.matches(&rule.spec.from, other, t));
                if !pair {
                    continue;
                }
                let d = self.distance_between(slot, other);
                if d <= radius {
                    self.rules[r].link(slot, other);
                    let name = self.rules[r].name.clone();
                    self.emit(
                        out,
                        AlertEvent::Proximity,
                        UnitSlot(slot),
                        st.time_ms,
                        None,
                        Some(name),
                        Some(UnitSlot(other)),
                        Some(d),
                    );
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
        let rule = Rule::new(spec);
        match self.rules.iter_mut().find(|r| r.spec.id == rule.spec.id) {
            Some(r) => {
                *r = rule;
                Ok(false)
            }
            None => {
                self.rules.push(rule);
                Ok(true)
            }
        }
    }

    /// Removes a rule.
    ///
    /// # Errors
    /// [`EngineError::NotFound`].
    pub fn remove_rule(&mut self, id: &str) -> Result<(), EngineError> {
        let before = self.rules.len();
        self.rules.retain(|r| r.spec.id != id);
        if self.rules.len() == before {
            return Err(EngineError::NotFound {
                what: "rule",
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Rule definitions.
    pub fn rules(&self) -> Vec<RuleSpec> {
        self.rules.iter().map(|r| r.spec.clone()).collect()
    }
}
