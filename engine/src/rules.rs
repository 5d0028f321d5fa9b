//! Proximity rules, the state: each rule's definition and its active
//! pairs. A unit of one set within `radius_m` of a unit of another fires
//! once, and re-arms only after they separate beyond
//! `radius_m + hysteresis_m`; the evaluation is in `proximity`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::filter::Filter;

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
    /// The definition as its owner sent it (the JSON of a PUT): what `GET`
    /// answers and a snapshot keeps. `None` for rules made in code.
    pub source: Option<Arc<str>>,
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

    pub fn linked(&self, a: u32, b: u32) -> bool {
        self.partners.get(&a).is_some_and(|l| l.contains(&b))
    }

    pub fn link(&mut self, a: u32, b: u32) {
        self.partners.entry(a).or_default().push(b);
        self.partners.entry(b).or_default().push(a);
    }

    pub fn unlink(&mut self, a: u32, b: u32) {
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

/// Every proximity rule.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    /// Rules in the order they were created.
    pub list: Vec<Rule>,
    /// Reused list of a unit's partners (the rule pass runs per fix).
    pub scratch_partners: Vec<u32>,
}
