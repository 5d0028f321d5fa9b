//! Typed errors: each says what was wrong and carries the offending value.

use thiserror::Error;

/// Why the engine refused a request.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    /// A name that is not one of the protocol's fixed names.
    #[error("unknown {what} {value:?}")]
    UnknownName {
        /// Which kind of name (`agency`, `status`, ...).
        what: &'static str,
        /// The name given.
        value: String,
    },
    /// A coordinate outside the valid range or not finite.
    #[error("invalid coordinate lat={lat} lon={lon}: {reason}")]
    BadCoordinate {
        /// Latitude given.
        lat: f64,
        /// Longitude given.
        lon: f64,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A geometry that cannot be used as an area or a fence.
    #[error("invalid geometry: {0}")]
    BadGeometry(String),
    /// A numeric parameter out of range.
    #[error("invalid {what} {value}: {reason}")]
    BadParameter {
        /// Parameter name.
        what: &'static str,
        /// Value given.
        value: f64,
        /// Allowed range or rule.
        reason: &'static str,
    },
    /// An H3 cell index that does not parse or is not valid.
    #[error("invalid H3 cell {0:?}")]
    BadCell(String),
    /// A fence, rule, unit or query that does not exist.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The engine holds as many distinct tags as its bit set allows.
    #[error("too many distinct tags (at most {max}); {tag:?} not added")]
    TooManyTags {
        /// The limit.
        max: usize,
        /// The tag that did not fit.
        tag: String,
    },
    /// A cover would hold more cells than the configured cap.
    #[error("area too large: its cover needs more than {max} cells at resolution {res}")]
    CoverTooLarge {
        /// The cap.
        max: usize,
        /// The resolution.
        res: u8,
    },
    /// A new fence or rule past its configured cap.
    #[error("{what}: this server holds {max}, the most {key} allows; delete one first")]
    Full {
        /// What is full ("fences", "rules").
        what: &'static str,
        /// The cap.
        max: usize,
        /// The configuration key that sets it.
        key: &'static str,
    },
    /// A snapshot that does not decode.
    #[error("snapshot: {0}")]
    Snapshot(String),
}
