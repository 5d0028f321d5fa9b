//! The unit table: units interned to dense slots, hot state in one flat array.
//!
//! A unit's hot state is one fixed-size record (`UnitState`) so that a fix
//! touches one or two cache lines. Ids live in one byte arena indexed by
//! slot, looked up through a `hashbrown::HashTable` of slots: no `String`
//! per unit and no key stored twice.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use crate::error::EngineError;
use crate::model::{Agency, Fix, MAX_ACCURACY_M, MAX_SPEED_MPS, Status, UnitSlot};
use crate::shard::NONE;

/// `UnitState::time_ms` of a unit that has never reported a position.
pub(crate) const NEVER: i64 = i64::MIN;
/// `UnitState::flags` bit: the unit is stale.
pub(crate) const FLAG_STALE: u8 = 1;
/// `UnitState::flags` bit: the unit has a kind (`kind` is meaningful).
pub(crate) const FLAG_HAS_KIND: u8 = 2;
/// `UnitState::flags` bit: the unit has an entry in `UnitTable::details`
/// (the clock scan looks there only for these).
pub(crate) const FLAG_HAS_DETAILS: u8 = 4;

/// What some devices say of themselves beyond a fix (Cursor-on-Target's
/// callsign and stale time): kept beside the hot state, since most units
/// have none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UnitDetails {
    /// The name its crew is called by on the radio (`<contact callsign>`).
    pub callsign: Option<Box<str>>,
    /// How its position was found (CoT `how`: `m-g` a machine's GPS,
    /// `h-e` a human's estimate, ...).
    pub how: Option<Box<str>>,
    /// When its latest report stops being current (CoT `stale`): past it,
    /// the unit is stale even within `stale_after`.
    pub stale_at_ms: Option<i64>,
}
/// At most this many distinct tags (one bit each in `UnitState::tags`).
pub const MAX_TAGS: usize = 64;

/// The hot state of one unit: everything a fix or a query reads, in 56
/// bytes. (Nearest bounds units from their cell's f32 member copies and
/// reads this record only for the few that may count.)
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct UnitState {
    /// Device time of the latest fix; `NEVER` before the first.
    pub time_ms: i64,
    /// Latest latitude, degrees.
    pub lat: f64,
    /// Latest longitude, degrees.
    pub lon: f64,
    /// Tag bits (see `UnitTable::tag_names`).
    pub tags: u64,
    /// Index of its occupied fine cell in the shard index, or `NONE`.
    pub cell: u32,
    /// Its index in that cell's member array.
    pub pos_in_cell: u32,
    /// Index of the unit's membership list (0 = member of nothing).
    pub member: u32,
    /// Latest speed in cm/s (`UNKNOWN_U16` unknown).
    pub speed: u16,
    /// Latest heading in hundredths of a degree (`UNKNOWN_U16` unknown).
    pub heading: u16,
    /// Latest accuracy in decimetres (`UNKNOWN_U16` unknown).
    pub accuracy: u16,
    /// Interned kind, valid when `FLAG_HAS_KIND` is set.
    pub kind: u16,
    /// `Status as u8`.
    pub status: u8,
    /// `Agency as u8`.
    pub agency: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
}

/// A quantised measurement that is not known.
pub(crate) const UNKNOWN_U16: u16 = u16::MAX;

/// Quantises a non-negative measurement (NaN = unknown) in `1/scale` units.
#[inline]
pub(crate) fn quantise(v: f32, scale: f32) -> u16 {
    if v.is_nan() {
        UNKNOWN_U16
    } else {
        (v * scale).round().clamp(0.0, f32::from(UNKNOWN_U16 - 1)) as u16
    }
}

/// The value of a quantised measurement (NaN when unknown).
#[inline]
pub(crate) fn unquantise(v: u16, scale: f32) -> f32 {
    if v == UNKNOWN_U16 {
        f32::NAN
    } else {
        f32::from(v) / scale
    }
}

/// Speed is kept in cm/s.
pub(crate) const SPEED_SCALE: f32 = 100.0;
/// Heading is kept in hundredths of a degree.
pub(crate) const HEADING_SCALE: f32 = 100.0;
/// Accuracy is kept in decimetres.
pub(crate) const ACCURACY_SCALE: f32 = 10.0;

impl UnitState {
    fn new() -> Self {
        Self {
            time_ms: NEVER,
            lat: 0.0,
            lon: 0.0,
            tags: 0,
            cell: NONE,
            pos_in_cell: 0,
            member: 0,
            speed: UNKNOWN_U16,
            heading: UNKNOWN_U16,
            accuracy: UNKNOWN_U16,
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

    /// Latest position as a unit vector.
    #[inline]
    pub fn xyz(&self) -> [f64; 3] {
        crate::sphere::to_vec3(self.lat, self.lon)
    }

    /// Stores a fix's measurements.
    #[inline]
    pub fn set_measurements(&mut self, fix: &Fix) {
        // Out of range is unknown, never saturated or wrapped (ingest
        // clears such values and counts them; this holds for any caller).
        let within = |v: f32, max: f32, scale: f32, q: fn(f32) -> f32| {
            if (0.0..=max).contains(&v) {
                quantise(q(v), scale)
            } else {
                UNKNOWN_U16
            }
        };
        self.speed = within(fix.speed_mps, MAX_SPEED_MPS, SPEED_SCALE, |v| v);
        self.heading = within(fix.heading_deg, 360.0, HEADING_SCALE, |v| v.rem_euclid(360.0));
        self.accuracy = within(fix.accuracy_m, MAX_ACCURACY_M, ACCURACY_SCALE, |v| v);
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
    /// (key, slot) by numeric device key (FlatBuffers `unit`). The key is in
    /// the entry, 16 bytes where a bare slot would be 4: a lookup is then
    /// one cache miss, not two, and it is the first thing every fix does.
    by_key: HashTable<(u64, u32)>,
    /// Each unit's numeric key (meaningful only for slots in `by_key`).
    keys: Vec<u64>,
    /// Hasher of `by_id`.
    hasher: DefaultHashBuilder,
    /// Interned kind names; `UnitState::kind` indexes this.
    pub kind_names: Vec<String>,
    /// Interned tag names; bit `i` of `UnitState::tags` is `tag_names[i]`.
    pub tag_names: Vec<String>,
    /// Callsigns and stale times, by slot, for the units that have them
    /// (`FLAG_HAS_DETAILS`).
    pub details: hashbrown::HashMap<u32, UnitDetails>,
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

    /// Every id, concatenated, and where each ends (a snapshot copies them
    /// in two moves).
    pub fn id_arena(&self) -> (&str, &[u32]) {
        (&self.id_bytes, &self.id_end)
    }

    /// Room for `units` more units and `keys` more keys (a restore knows
    /// both, and growing a million-entry table by doubling costs seconds).
    pub fn reserve(&mut self, units: usize, id_bytes: usize, keys: usize) {
        self.state.reserve(units);
        self.id_end.reserve(units);
        self.keys.reserve(units);
        self.id_bytes.reserve(id_bytes);
        let (bytes, ends, hasher) = (&self.id_bytes, &self.id_end, &self.hasher);
        self.by_id.reserve(units, |&s| {
            let i = s as usize;
            let start = if i == 0 { 0 } else { ends[i - 1] as usize };
            hasher.hash_one(&bytes[start..ends[i] as usize])
        });
        self.by_key.reserve(keys, |&(k, _)| hasher.hash_one(k));
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
        self.keys.push(0);
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
        if let Some(s) = self.find_key(key) {
            return s;
        }
        let slot = self.intern(itoa_u64(key).as_str());
        self.set_key(slot, key);
        slot
    }

    /// Registers numeric `key` as an alias of id `id` (FlatBuffers
    /// `UnitInfo`). A unit has one key: registering another replaces it.
    pub fn register_key(&mut self, key: u64, id: &str) -> UnitSlot {
        let slot = self.intern(id);
        self.register_key_of(key, slot);
        slot
    }

    /// Registers `key` for an existing slot (a restore: the snapshot has
    /// the slot, so no id is looked up again).
    pub fn register_key_of(&mut self, key: u64, slot: UnitSlot) {
        if let Some(old) = self.find_key(key) {
            if old == slot {
                return;
            }
            self.drop_key(old);
        }
        self.drop_key(slot);
        self.set_key(slot, key);
    }

    pub(crate) fn find_key(&self, key: u64) -> Option<UnitSlot> {
        let h = self.hasher.hash_one(key);
        self.by_key.find(h, |&(k, _)| k == key).map(|&(_, s)| UnitSlot(s))
    }

    fn set_key(&mut self, slot: UnitSlot, key: u64) {
        self.keys[slot.index()] = key;
        let hasher = &self.hasher;
        self.by_key
            .insert_unique(hasher.hash_one(key), (key, slot.0), |&(k, _)| hasher.hash_one(k));
    }

    fn drop_key(&mut self, slot: UnitSlot) {
        let key = self.keys[slot.index()];
        let h = self.hasher.hash_one(key);
        if let Ok(entry) = self.by_key.find_entry(h, |&(_, s)| s == slot.0) {
            entry.remove();
        }
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

    /// The latest fix of a unit, as a value.
    pub fn fix(&self, slot: UnitSlot) -> Option<Fix> {
        let st = self.state.get(slot.index())?;
        st.seen().then(|| Fix {
            time_ms: st.time_ms,
            lat: st.lat,
            lon: st.lon,
            accuracy_m: unquantise(st.accuracy, ACCURACY_SCALE),
            speed_mps: unquantise(st.speed, SPEED_SCALE),
            heading_deg: unquantise(st.heading, HEADING_SCALE),
            status: Status::from_u8(st.status),
        })
    }

    /// Heap bytes held by each part of the table (for the memory report).
    pub fn heap_parts(&self) -> [(&'static str, usize); 6] {
        // hashbrown: one control byte per bucket; buckets are the next power
        // of two above capacity * 8 / 7.
        let buckets = |cap: usize| {
            if cap == 0 {
                0
            } else {
                (cap * 8 / 7).next_power_of_two()
            }
        };
        [
            (
                "unit records",
                self.state.capacity() * std::mem::size_of::<UnitState>(),
            ),
            ("unit ids", self.id_bytes.capacity() + self.id_end.capacity() * 4),
            ("id index", buckets(self.by_id.capacity()) * 5),
            ("numeric keys", self.keys.capacity() * 8),
            ("key index", buckets(self.by_key.capacity()) * 17),
            (
                "kind and tag names",
                self.kind_names.capacity() * 24 + self.tag_names.capacity() * 24,
            ),
        ]
    }

    /// All numeric key aliases (for snapshots).
    pub fn keys(&self) -> impl Iterator<Item = (u64, UnitSlot)> + '_ {
        self.by_key.iter().map(|&(k, s)| (k, UnitSlot(s)))
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
    fn unit_state_stays_at_56_bytes() {
        assert_eq!(std::mem::size_of::<UnitState>(), 56);
    }

    #[test]
    fn reregistering_a_key_moves_it_and_the_old_key_falls_back_to_its_decimal() {
        let mut t = UnitTable::default();
        let a = t.register_key(7, "AMB-1");
        let b = t.register_key(7, "AMB-2");
        assert_ne!(a, b);
        assert_eq!(t.intern_key(7), b);
        let c = t.register_key(8, "AMB-2");
        assert_eq!(c, b);
        assert_eq!(t.intern_key(8), b);
        let seven = t.intern_key(7);
        assert_eq!(t.id(seven), "7");
    }

    #[test]
    fn measurements_round_trip_to_their_quantum_and_unknown_stays_unknown() {
        assert!(unquantise(quantise(f32::NAN, SPEED_SCALE), SPEED_SCALE).is_nan());
        assert_eq!(unquantise(quantise(12.5, SPEED_SCALE), SPEED_SCALE), 12.5);
        assert!((unquantise(quantise(271.234, HEADING_SCALE), HEADING_SCALE) - 271.23).abs() < 1e-3);
        assert_eq!(quantise(-3.0, SPEED_SCALE), 0);
    }

    #[test]
    fn out_of_range_measurements_are_unknown_not_saturated_or_wrapped() {
        let mut st = UnitState::new();
        let mut fix = Fix::at(0, 51.0, -1.0);
        fix.heading_deg = 1e38;
        fix.speed_mps = -5.0;
        fix.accuracy_m = f32::INFINITY;
        st.set_measurements(&fix);
        assert_eq!(
            (st.heading, st.speed, st.accuracy),
            (UNKNOWN_U16, UNKNOWN_U16, UNKNOWN_U16)
        );
        fix.heading_deg = 360.0;
        fix.speed_mps = 655.0;
        fix.accuracy_m = 0.0;
        st.set_measurements(&fix);
        assert_eq!(unquantise(st.heading, HEADING_SCALE), 0.0, "360 is north");
        assert_eq!(unquantise(st.speed, SPEED_SCALE), 655.0);
        assert_eq!(unquantise(st.accuracy, ACCURACY_SCALE), 0.0);
        let mut f = Fix::at(0, 51.0, -1.0);
        f.speed_mps = 700.0;
        f.heading_deg = -1.0;
        assert_eq!(f.clear_out_of_range(), 2);
        assert!(f.speed_mps.is_nan() && f.heading_deg.is_nan() && f.accuracy_m.is_nan());
    }
}
