//! The vocabulary of the engine: agencies, statuses, fixes and unit views.

use crate::error::EngineError;

/// The service a unit belongs to (PROTOCOL.md `agency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Agency {
    /// Partners and anything not listed.
    Other = 0,
    /// Police.
    Police = 1,
    /// Fire and rescue.
    Fire = 2,
    /// Ambulance.
    Ambulance = 3,
    /// Coastguard.
    Coastguard = 4,
}

impl Agency {
    /// Every agency, in wire order.
    pub const ALL: [Agency; 5] = [
        Agency::Other,
        Agency::Police,
        Agency::Fire,
        Agency::Ambulance,
        Agency::Coastguard,
    ];

    /// The protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            Agency::Other => "other",
            Agency::Police => "police",
            Agency::Fire => "fire",
            Agency::Ambulance => "ambulance",
            Agency::Coastguard => "coastguard",
        }
    }

    /// Parses a protocol name.
    ///
    /// # Errors
    /// [`EngineError::UnknownName`] for anything but the five names.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| EngineError::UnknownName {
                what: "agency",
                value: s.to_owned(),
            })
    }

    /// The agency of a wire byte; unknown bytes are `Other`.
    pub fn from_u8(v: u8) -> Self {
        Self::ALL.get(usize::from(v)).copied().unwrap_or(Agency::Other)
    }
}

/// What a unit is doing (PROTOCOL.md `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Status {
    /// Not known; in a fix it means "keep the current status".
    Unknown = 0,
    /// Free to be dispatched.
    Available = 1,
    /// On the way to an incident.
    Enroute = 2,
    /// At an incident.
    AtScene = 3,
    /// Off duty, at hospital, refuelling...
    Unavailable = 4,
    /// The crew pressed the emergency button.
    Emergency = 5,
}

impl Status {
    /// Every status, in wire order.
    pub const ALL: [Status; 6] = [
        Status::Unknown,
        Status::Available,
        Status::Enroute,
        Status::AtScene,
        Status::Unavailable,
        Status::Emergency,
    ];

    /// The protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Available => "available",
            Status::Enroute => "enroute",
            Status::AtScene => "at_scene",
            Status::Unavailable => "unavailable",
            Status::Emergency => "emergency",
        }
    }

    /// Parses a protocol name.
    ///
    /// # Errors
    /// [`EngineError::UnknownName`] for anything but the six names.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| EngineError::UnknownName {
                what: "status",
                value: s.to_owned(),
            })
    }

    /// The status of a wire byte; unknown bytes are `Unknown`.
    pub fn from_u8(v: u8) -> Self {
        Self::ALL.get(usize::from(v)).copied().unwrap_or(Status::Unknown)
    }
}

/// One position report of one unit, already validated by ingest.
///
/// Optional measurements are `NaN` when unknown, as on the wire, so a fix is
/// `Copy` and 48 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    /// Device time, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Latitude in degrees, -90..=90.
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    pub lon: f64,
    /// Horizontal accuracy in metres; NaN = unknown.
    pub accuracy_m: f32,
    /// Speed over ground in m/s; NaN = unknown.
    pub speed_mps: f32,
    /// Heading in degrees clockwise from true north; NaN = unknown.
    pub heading_deg: f32,
    /// New status; `Unknown` keeps the unit's current one.
    pub status: Status,
}

/// The fastest speed the engine keeps, m/s (its record holds cm/s in 16
/// bits); a faster one is not a responder's and is stored as unknown.
pub const MAX_SPEED_MPS: f32 = 655.0;
/// The worst accuracy the engine keeps, metres (decimetres in 16 bits).
pub const MAX_ACCURACY_M: f32 = 6553.0;

impl Fix {
    /// Makes unknown (NaN) every measurement outside what it can mean:
    /// speed outside 0..=[`MAX_SPEED_MPS`], heading outside 0..=360,
    /// accuracy outside 0..=[`MAX_ACCURACY_M`] (infinities included).
    /// Returns how many it cleared. A wrong heading must show as unknown,
    /// never as another heading.
    pub fn clear_out_of_range(&mut self) -> u32 {
        let mut cleared = 0;
        for (v, max) in [
            (&mut self.speed_mps, MAX_SPEED_MPS),
            (&mut self.heading_deg, 360.0),
            (&mut self.accuracy_m, MAX_ACCURACY_M),
        ] {
            if !v.is_nan() && !(0.0..=max).contains(v) {
                *v = f32::NAN;
                cleared += 1;
            }
        }
        cleared
    }

    /// A fix with only a time and a position.
    pub fn at(time_ms: i64, lat: f64, lon: f64) -> Self {
        Self {
            time_ms,
            lat,
            lon,
            accuracy_m: f32::NAN,
            speed_mps: f32::NAN,
            heading_deg: f32::NAN,
            status: Status::Unknown,
        }
    }

    /// The same fix with a status.
    pub fn with_status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }
}

/// Dense handle of a unit inside one engine (its slot in the unit table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitSlot(pub u32);

impl UnitSlot {
    /// The slot as a vector index.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Everything known about a unit, as read back out of the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitView {
    /// The unit's slot in this engine.
    pub slot: UnitSlot,
    /// Human id, e.g. `AMB-104`.
    pub id: String,
    /// Agency.
    pub agency: Agency,
    /// Status.
    pub status: Status,
    /// Kind, e.g. `rrv`; `None` when never set.
    pub kind: Option<String>,
    /// Tags, e.g. `paramedic`.
    pub tags: Vec<String>,
    /// Callsign, when the device gave one (CoT `<contact callsign>`).
    pub callsign: Option<String>,
    /// How its position was found (CoT `how`), when the device said.
    pub how: Option<String>,
    /// Latest fix; `None` for a unit registered but never seen.
    pub fix: Option<Fix>,
    /// No fix for longer than the agency's `stale_after`.
    pub stale: bool,
}

/// One result of a nearest query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    /// The unit.
    pub unit: UnitSlot,
    /// Great-circle distance, metres.
    pub distance_m: f64,
}
