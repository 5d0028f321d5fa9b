//! Unit filters (PROTOCOL.md `filter`): OR within a key, AND across keys.

use crate::model::{Agency, Status, UnitSlot};
use crate::units::{FLAG_HAS_KIND, UnitState};

/// A filter compiled against one engine's interned kinds and tags.
///
/// Built by [`crate::Engine::compile_filter`]; every key is optional and an
/// empty filter matches every unit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Bit `a` set = agency `a` matches; `None` = any agency.
    pub agencies: Option<u8>,
    /// Bit `s` set = status `s` matches; `None` = any status.
    pub statuses: Option<u8>,
    /// Interned kinds that match; `None` = any kind. A kind no unit has yet
    /// is interned too, so a filter keeps working when such a unit appears.
    pub kinds: Option<Vec<u16>>,
    /// Tag bits of which at least one must be set; `None` = no tag condition.
    pub tags: Option<u64>,
    /// Units that match, sorted; `None` = any unit.
    pub ids: Option<Vec<UnitSlot>>,
    /// Only units whose latest fix is at most this old (milliseconds) at the
    /// time of the query.
    pub max_age_ms: Option<i64>,
}

impl Filter {
    /// Matches every unit.
    pub fn all() -> Self {
        Self::default()
    }

    /// A filter on agencies only.
    pub fn agencies(list: &[Agency]) -> Self {
        Self {
            agencies: Some(list.iter().fold(0, |m, a| m | (1 << *a as u8))),
            ..Self::default()
        }
    }

    /// A filter on statuses only.
    pub fn statuses(list: &[Status]) -> Self {
        Self {
            statuses: Some(list.iter().fold(0, |m, s| m | (1 << *s as u8))),
            ..Self::default()
        }
    }

    /// Whether the filter ignores time (then a unit's match only changes when
    /// its metadata does).
    pub fn is_timeless(&self) -> bool {
        self.max_age_ms.is_none()
    }

    /// Whether the unit in `slot` with record `st` matches, at `now_ms`.
    #[inline]
    pub(crate) fn matches_state(&self, slot: u32, st: &UnitState, now_ms: i64) -> bool {
        self.agencies.is_none_or(|m| m & (1 << st.agency) != 0)
            && self.statuses.is_none_or(|m| m & (1 << st.status) != 0)
            && self.tags.is_none_or(|t| t & st.tags != 0)
            && self
                .kinds
                .as_ref()
                .is_none_or(|k| st.flags & FLAG_HAS_KIND != 0 && k.contains(&st.kind))
            && self
                .ids
                .as_ref()
                .is_none_or(|ids| ids.binary_search(&UnitSlot(slot)).is_ok())
            && self
                .max_age_ms
                .is_none_or(|age| now_ms.saturating_sub(st.time_ms) <= age)
    }
}
