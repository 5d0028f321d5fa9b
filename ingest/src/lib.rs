//! # bluelight-ingest
//!
//! The ingest tier of bluelight. Today it holds the simulated fleet, a source
//! of fixes like any device, used by `bluelight demo`, the benchmarks and the
//! load generator. Wire formats (FlatBuffers, JSON, Cursor-on-Target),
//! validation and transports come next (see the open issue).
//!
//! ## Layout
//!
//! * [`fleet`] — the simulated fleet: units of every agency around real
//!   British towns, moving at plausible speeds, changing status, reporting
//!   every 1–10 s.
//! * [`places`] — the towns the fleet lives in (`data/places.csv`).

#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod fleet;
pub mod places;
