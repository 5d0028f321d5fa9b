//! # bluelight-api
//!
//! The `bluelight` server and command line. Today: the GeoJSON fence format
//! and `bluelight demo`, which runs the engine with the simulated fleet and
//! the sample fences and prints what happens. The HTTP/WebSocket server of
//! PROTOCOL.md comes with the api issue.
//!
//! ## Layout
//!
//! * [`fence_json`] — GeoJSON Features ⇄ fences, and protocol filters.
//! * [`demo`] — the demo loop.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod demo;
pub mod fence_json;
