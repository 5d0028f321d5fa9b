//! The unit registry: ids and device keys to slots, metadata, views, and
//! filters compiled against the engine's interned names.

use crate::engine::Engine;
use crate::error::EngineError;
use crate::filter::Filter;
use crate::model::{Agency, Status, UnitSlot, UnitView};
use crate::units::{FLAG_HAS_DETAILS, FLAG_HAS_KIND};

impl Engine {
    // ----- units -------------------------------------------------------

    /// The slot of a unit id, creating (interning) the unit on first
    /// sight; [`Engine::find_unit`] only looks.
    pub fn intern_unit(&mut self, id: &str) -> UnitSlot {
        self.units.intern(id)
    }

    /// The slot of a numeric device key (its registered id, or its
    /// decimal), creating the unit on first sight.
    pub fn intern_key(&mut self, key: u64) -> UnitSlot {
        self.units.intern_key(key)
    }

    /// The unit numeric `key` names, if any.
    pub fn find_key(&self, key: u64) -> Option<UnitSlot> {
        self.units.find_key(key)
    }

    /// Registers numeric `key` as the unit with id `id`.
    pub fn register_key(&mut self, key: u64, id: &str) -> UnitSlot {
        self.units.register_key(key, id)
    }

    /// The slot of an id, if the unit exists.
    pub fn find_unit(&self, id: &str) -> Option<UnitSlot> {
        self.units.find(id)
    }

    /// Number of units (including registered but never seen).
    pub fn unit_count(&self) -> usize {
        self.units.len()
    }

    /// Sets a unit's metadata; `None` leaves a field as it is. Fences and
    /// feeds whose filters depend on it re-evaluate at the unit's next fix.
    ///
    /// # Errors
    /// [`EngineError::TooManyTags`] when a new tag does not fit.
    pub fn set_meta(
        &mut self,
        slot: UnitSlot,
        agency: Option<Agency>,
        kind: Option<&str>,
        tags: Option<&[&str]>,
    ) -> Result<(), EngineError> {
        let kind = kind.map(|k| self.units.intern_kind(k));
        let tags = match tags {
            Some(list) => {
                let mut bits = 0;
                for t in list {
                    bits |= self.units.intern_tag(t)?;
                }
                Some(bits)
            }
            None => None,
        };
        let st = &mut self.units.state[slot.index()];
        if let Some(a) = agency {
            st.agency = a as u8;
        }
        if let Some(k) = kind {
            st.kind = k;
            st.flags |= FLAG_HAS_KIND;
        }
        if let Some(t) = tags {
            st.tags = t;
        }
        Ok(())
    }

    /// Sets what a device says of itself beyond a fix (Cursor-on-Target):
    /// its callsign and how its position was found (empty removes either),
    /// and when its latest report goes stale. `None` keeps what the unit
    /// had. For a slot that does not exist, nothing.
    pub fn set_details(
        &mut self,
        slot: UnitSlot,
        callsign: Option<&str>,
        how: Option<&str>,
        stale_at_ms: Option<i64>,
    ) {
        if callsign.is_none() && how.is_none() && stale_at_ms.is_none() {
            return;
        }
        let Some(st) = self.units.state.get_mut(slot.index()) else {
            return;
        };
        let d = self.units.details.entry(slot.0).or_default();
        // Compared first: a device repeats them with every report, and
        // an unchanged one costs no allocation.
        for (field, new) in [(&mut d.callsign, callsign), (&mut d.how, how)] {
            if let Some(v) = new
                && field.as_deref().unwrap_or_default() != v
            {
                *field = (!v.is_empty()).then(|| Box::from(v));
            }
        }
        if stale_at_ms.is_some() {
            d.stale_at_ms = stale_at_ms;
        }
        if *d == crate::units::UnitDetails::default() {
            self.units.details.remove(&slot.0);
            st.flags &= !FLAG_HAS_DETAILS;
        } else {
            st.flags |= FLAG_HAS_DETAILS;
        }
    }

    /// A unit's details (callsign, how), if it has any.
    fn details(&self, slot: UnitSlot, st_flags: u8) -> Option<&crate::units::UnitDetails> {
        if st_flags & FLAG_HAS_DETAILS == 0 {
            return None;
        }
        self.units.details.get(&slot.0)
    }

    /// What [`Engine::unit_view`] gives, borrowed (no allocation): for
    /// writing unit objects by the hundred thousand. `None` for an unknown
    /// slot or a unit never seen.
    pub fn unit_borrowed(&self, slot: UnitSlot) -> Option<UnitBorrowed<'_>> {
        let st = self.units.state.get(slot.index())?;
        let fix = self.units.fix(slot)?;
        Some(UnitBorrowed {
            id: self.units.id(slot),
            agency: Agency::from_u8(st.agency),
            status: Status::from_u8(st.status),
            kind: (st.flags & FLAG_HAS_KIND != 0)
                .then(|| {
                    self.units
                        .kind_names
                        .get(usize::from(st.kind))
                        .map(String::as_str)
                })
                .flatten(),
            tag_bits: st.tags,
            tag_names: &self.units.tag_names,
            callsign: self.details(slot, st.flags).and_then(|d| d.callsign.as_deref()),
            how: self.details(slot, st.flags).and_then(|d| d.how.as_deref()),
            fix,
            stale: st.stale(),
        })
    }

    /// Everything known about a unit.
    pub fn unit_view(&self, slot: UnitSlot) -> Option<UnitView> {
        let st = self.units.state.get(slot.index())?;
        Some(UnitView {
            slot,
            id: self.units.id(slot).to_owned(),
            agency: Agency::from_u8(st.agency),
            status: Status::from_u8(st.status),
            kind: (st.flags & FLAG_HAS_KIND != 0)
                .then(|| self.units.kind_names.get(usize::from(st.kind)).cloned())
                .flatten(),
            tags: self.units.tags_of(st.tags),
            callsign: self
                .details(slot, st.flags)
                .and_then(|d| d.callsign.as_deref())
                .map(str::to_owned),
            how: self
                .details(slot, st.flags)
                .and_then(|d| d.how.as_deref())
                .map(str::to_owned),
            fix: self.units.fix(slot),
            stale: st.stale(),
        })
    }

    /// The id of a unit.
    pub fn unit_id(&self, slot: UnitSlot) -> &str {
        self.units.id(slot)
    }

    /// Compiles a filter from names. Unknown kinds, tags and ids are interned
    /// so the filter matches units that appear later.
    ///
    /// # Errors
    /// [`EngineError::TooManyTags`] past the tag limit.
    #[allow(clippy::too_many_arguments, reason = "one argument per protocol key")]
    pub fn compile_filter(
        &mut self,
        agencies: Option<&[Agency]>,
        statuses: Option<&[Status]>,
        kinds: Option<&[&str]>,
        tags: Option<&[&str]>,
        ids: Option<&[&str]>,
        max_age_s: Option<f64>,
    ) -> Result<Filter, EngineError> {
        let mut f = Filter::all();
        if let Some(a) = agencies {
            f.agencies = Filter::agencies(a).agencies;
        }
        if let Some(s) = statuses {
            f.statuses = Filter::statuses(s).statuses;
        }
        if let Some(k) = kinds {
            f.kinds = Some(k.iter().map(|k| self.units.intern_kind(k)).collect());
        }
        if let Some(t) = tags {
            let mut bits = 0;
            for tag in t {
                bits |= self.units.intern_tag(tag)?;
            }
            f.tags = Some(bits);
        }
        if let Some(ids) = ids {
            let mut slots: Vec<UnitSlot> = ids.iter().map(|i| self.units.intern(i)).collect();
            slots.sort_unstable();
            slots.dedup();
            f.ids = Some(slots);
        }
        if let Some(s) = max_age_s {
            if !(s.is_finite() && s >= 0.0) {
                return Err(EngineError::BadParameter {
                    what: "max_age_s",
                    value: s,
                    reason: "must be a non-negative number",
                });
            }
            f.max_age_ms = Some((s * 1000.0) as i64);
        }
        Ok(f)
    }

    #[inline]
    pub(crate) fn matches(&self, f: &Filter, slot: u32, now_ms: i64) -> bool {
        f.matches_state(slot, &self.units.state[slot as usize], now_ms)
    }

    /// Whether a unit counts for a query: seen, not stale unless asked, and
    /// matching the filter.
    #[inline]
    pub(crate) fn eligible(&self, slot: u32, f: &Filter, include_stale: bool, now_ms: i64) -> bool {
        let st = &self.units.state[slot as usize];
        st.seen() && (include_stale || !st.stale()) && f.matches_state(slot, st, now_ms)
    }

    /// A unit's latest device time and position, if it has reported (for
    /// position filters upstream).
    #[inline]
    pub fn last_position(&self, slot: UnitSlot) -> Option<(i64, f64, f64)> {
        let st = self.units.state.get(slot.index())?;
        st.seen().then_some((st.time_ms, st.lat, st.lon))
    }

    /// Whether a unit matches a filter now (time conditions at its own
    /// latest fix).
    pub fn unit_matches(&self, slot: UnitSlot, f: &Filter) -> bool {
        self.units
            .state
            .get(slot.index())
            .is_some_and(|st| f.matches_state(slot.0, st, st.time_ms))
    }

    /// A unit's agency.
    #[inline]
    pub fn unit_agency(&self, slot: UnitSlot) -> Option<Agency> {
        self.units
            .state
            .get(slot.index())
            .map(|st| Agency::from_u8(st.agency))
    }
}

/// A seen unit's state, borrowed from the engine (see
/// [`Engine::unit_borrowed`]).
#[derive(Debug, Clone, Copy)]
pub struct UnitBorrowed<'a> {
    /// Human id.
    pub id: &'a str,
    /// Agency.
    pub agency: Agency,
    /// Status.
    pub status: Status,
    /// Kind, when set.
    pub kind: Option<&'a str>,
    tag_bits: u64,
    tag_names: &'a [String],
    /// Callsign, when the device gave one.
    pub callsign: Option<&'a str>,
    /// How its position was found (CoT `how`), when the device said.
    pub how: Option<&'a str>,
    /// Latest fix.
    pub fix: crate::model::Fix,
    /// Stale.
    pub stale: bool,
}

impl<'a> UnitBorrowed<'a> {
    /// Its tags.
    pub fn tags(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let (bits, names) = (self.tag_bits, self.tag_names);
        names
            .iter()
            .enumerate()
            .filter(move |(i, _)| bits & (1 << i) != 0)
            .map(|(_, n)| n.as_str())
    }
}
