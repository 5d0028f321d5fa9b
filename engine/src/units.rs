//! The unit table: units interned to dense slots, hot state in one flat array.
//!
//! A unit's hot state is one fixed-size record (`UnitState`) so that a fix
//! touches one or two cache lines. Ids live in one byte arena indexed by
//! slot, looked up through a `hashbrown::HashTable` of slots: no `String`
//! per unit and no key stored twice.

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use std::hash::BuildHasher;

use crate::error::EngineError;
use crate::model::{Agency, Fix, Status, UnitSlot};

/// `UnitState::time_ms` of a unit that has never reported a position.
pub(crate) const NEVER: i64 = i64::MIN;
/// `UnitState::shard` of a unit that is in no shard tree.
pub(crate) const NO_SHARD: u32 = u32::MAX;
/// `UnitState::flags` bit: the unit is stale.
pub(crate) const FLAG_STALE: u8 = 1;
/// `UnitState::flags` bit: the unit has a kind (`kind` is meaningful).
pub(crate) const FLAG_HAS_KIND: u8 = 2;
/// `UnitState::flags` bit: regions changed near the unit; its candidate set
/// must be looked up again at the next refresh.
pub(crate) const FLAG_RECOVER: u8 = 4;
/// At most this many distinct tags (one bit each in `UnitState::tags`).
pub const MAX_TAGS: usize = 64;

/// The hot state of one unit. Field order keeps it at 88 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnitState {
    /// Latest latitude, degrees.
    pub lat: f64,
    /// Latest longitude, degrees.
    pub lon: f64,
    /// Device time of the latest fix; `NEVER` before the first.
    pub time_ms: i64,
    /// Tag bits (see `UnitTable::tag_names`).
    pub tags: u64,
    /// The unit's fine H3 cell (0 before the first fix).
    pub cell: u64,
    /// Latest speed, m/s, NaN unknown.
    pub speed: f32,
    /// Latest heading, degrees, NaN unknown.
    pub heading: f32,
    /// Latest accuracy, metres, NaN unknown.
    pub accuracy: f32,
    /// Centre of the unit's fine cell (unit vector, f32 to halve its size):
    /// the point its shard tree holds for it, and the centre of its safe cap.
    pub anchor: [f32; 3],
    /// Squared chord radius of the cap inscribed in the unit's fine cell:
    /// while the unit is within it, its cell (so its shard, tree entry and
    /// cover candidates) is unchanged. Negative = no cap.
    pub safe_c2: f32,
    /// Interned cover candidate set of the unit's fine cell (0 = none).
    pub candset: u32,
    /// Index of the unit's membership list (0 = member of nothing).
    pub member: u32,
    /// Shard index, or `NO_SHARD`.
    pub shard: u32,
    /// Interned kind, valid when `FLAG_HAS_KIND` is set.
    pub kind: u16,
    /// `Status as u8`.
    pub status: u8,
    /// `Agency as u8`.
    pub agency: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
}

impl UnitState {
    fn new() -> Self {
        Self {
            lat: 0.0,
            lon: 0.0,
            time_ms: NEVER,
            tags: 0,
            cell: 0,
            speed: f32::NAN,
            heading: f32::NAN,
            accuracy: f32::NAN,
            anchor: [0.0; 3],
            safe_c2: -1.0,
            candset: 0,
            member: 0,
            shard: NO_SHARD,
            kind: 0,
            status: Status::Unknown as u8,
            agency: Agency::Other as u8,
            flags: 0,
        }
    }

    /// Whether the unit has reported a position.
    #[inline]
    pub fn seen(&self) -> bool {
        self.time_ms != NEVER
    }

    /// Whether the unit is stale.
    #[inline]
    pub fn stale(&self) -> bool {
        self.flags & FLAG_STALE != 0
    }

    /// The latest fix as a value.
    pub fn fix(&self) -> Option<Fix> {
        self.seen().then(|| Fix {
            time_ms: self.time_ms,
            lat: self.lat,
            lon: self.lon,
            accuracy_m: self.accuracy,
            speed_mps: self.speed,
            heading_deg: self.heading,
            status: Status::from_u8(self.status),
        })
    }
}

/// All units: interning, metadata names and hot state.
#[derive(Debug, Default)]
pub(crate) struct UnitTable {
    /// Hot state by slot.
    pub state: Vec<UnitState>,
    /// Concatenated ids; slot `i` is `id_bytes[id_end[i-1]..id_end[i]]`.
    id_bytes: String,
    /// End offset of each slot's id in `id_bytes`.
    id_end: Vec<u32>,
    /// Slots by id hash.
    by_id: HashTable<u32>,
    /// Numeric device keys (FlatBuffers `unit`) to slots.
    by_key: HashMap<u64, u32>,
    /// Hasher of `by_id`.
    hasher: DefaultHashBuilder,
    /// Interned kind names; `UnitState::kind` indexes this.
    pub kind_names: Vec<String>,
    /// Interned tag names; bit `i` of `UnitState::tags` is `tag_names[i]`.
    pub tag_names: Vec<String>,
}

impl UnitTable {
    /// Number of units.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// The id of a slot.
    pub fn id(&self, slot: UnitSlot) -> &str {
        let i = slot.index();
        let start = if i == 0 { 0 } else { self.id_end[i - 1] as usize };
        &self.id_bytes[start..self.id_end[i] as usize]
    }

    /// The slot of an id, if known.
    pub fn find(&self, id: &str) -> Option<UnitSlot> {
        let h = self.hasher.hash_one(id);
        self.by_id
            .find(h, |&s| self.id(UnitSlot(s)) == id)
            .map(|&s| UnitSlot(s))
    }

    /// The slot of an id, creating the unit on first sight.
    pub fn intern(&mut self, id: &str) -> UnitSlot {
        let h = self.hasher.hash_one(id);
        if let Some(&s) = self.by_id.find(h, |&s| {
            let i = s as usize;
            let start = if i == 0 { 0 } else { self.id_end[i - 1] as usize };
            &self.id_bytes[start..self.id_end[i] as usize] == id
        }) {
            return UnitSlot(s);
        }
        let slot = u32::try_from(self.state.len()).unwrap_or(u32::MAX);
        self.id_bytes.push_str(id);
        self.id_end
            .push(u32::try_from(self.id_bytes.len()).unwrap_or(u32::MAX));
        self.state.push(UnitState::new());
        let (bytes, ends, hasher) = (&self.id_bytes, &self.id_end, &self.hasher);
        self.by_id.insert_unique(h, slot, |&s| {
            let i = s as usize;
            let start = if i == 0 { 0 } else { ends[i - 1] as usize };
            hasher.hash_one(&bytes[start..ends[i] as usize])
        });
        UnitSlot(slot)
    }

    /// The slot of a numeric device key: its registered id, or the decimal
    /// of the key for an unregistered one (PROTOCOL.md: one identity).
    pub fn intern_key(&mut self, key: u64) -> UnitSlot {
        if let Some(&s) = self.by_key.get(&key) {
            return UnitSlot(s);
        }
        let mut buf = itoa_u64(key);
        let slot = self.intern(buf.as_str());
        buf.clear();
        self.by_key.insert(key, slot.0);
        slot
    }

    /// Registers numeric `key` as an alias of id `id` (FlatBuffers `UnitInfo`).
    pub fn register_key(&mut self, key: u64, id: &str) -> UnitSlot {
        let slot = self.intern(id);
        self.by_key.insert(key, slot.0);
        slot
    }

    /// Interns a kind name.
    pub fn intern_kind(&mut self, kind: &str) -> u16 {
        if let Some(i) = self.kind_names.iter().position(|k| k == kind) {
            return i as u16;
        }
        self.kind_names.push(kind.to_owned());
        u16::try_from(self.kind_names.len() - 1).unwrap_or(u16::MAX)
    }

    /// The bit of a tag, interning it.
    ///
    /// # Errors
    /// [`EngineError::TooManyTags`] past [`MAX_TAGS`] distinct tags.
    pub fn intern_tag(&mut self, tag: &str) -> Result<u64, EngineError> {
        if let Some(i) = self.tag_names.iter().position(|t| t == tag) {
            return Ok(1 << i);
        }
        if self.tag_names.len() >= MAX_TAGS {
            return Err(EngineError::TooManyTags {
                max: MAX_TAGS,
                tag: tag.to_owned(),
            });
        }
        self.tag_names.push(tag.to_owned());
        Ok(1 << (self.tag_names.len() - 1))
    }

    /// Tag names of a bit set.
    pub fn tags_of(&self, bits: u64) -> Vec<String> {
        (0..self.tag_names.len())
            .filter(|i| bits & (1 << i) != 0)
            .map(|i| self.tag_names[i].clone())
            .collect()
    }

    /// Heap bytes held by the table (for the memory report).
    pub fn heap_bytes(&self) -> usize {
        self.state.capacity() * std::mem::size_of::<UnitState>()
            + self.id_bytes.capacity()
            + self.id_end.capacity() * 4
            + self.by_id.capacity() * 5
            + self.by_key.capacity() * 17
    }

    /// All numeric key aliases (for snapshots).
    pub fn keys(&self) -> impl Iterator<Item = (u64, UnitSlot)> + '_ {
        self.by_key.iter().map(|(&k, &s)| (k, UnitSlot(s)))
    }
}

/// Decimal digits of a key without going through `format!`.
fn itoa_u64(mut v: u64) -> String {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    digits[i..].iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_key_and_its_decimal_id_are_one_unit() {
        let mut t = UnitTable::default();
        let a = t.intern_key(123);
        let b = t.intern("123");
        assert_eq!(a, b);
        assert_eq!(t.id(a), "123");
    }

    #[test]
    fn registered_key_maps_to_the_human_id() {
        let mut t = UnitTable::default();
        let a = t.register_key(7, "AMB-104");
        assert_eq!(t.intern_key(7), a);
        assert_eq!(t.find("AMB-104"), Some(a));
        assert_eq!(t.find("7"), None);
    }

    #[test]
    fn many_ids_intern_to_distinct_slots_and_read_back() {
        let mut t = UnitTable::default();
        for i in 0..10_000u32 {
            assert_eq!(t.intern(&format!("U-{i}")).0, i);
        }
        for i in (0..10_000u32).step_by(97) {
            let s = t.find(&format!("U-{i}")).expect("interned");
            assert_eq!(t.id(s), format!("U-{i}"));
        }
    }

    #[test]
    fn unit_state_stays_small() {
        assert!(std::mem::size_of::<UnitState>() <= 88);
    }
}
