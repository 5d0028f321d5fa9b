//! # bluelight-benches
//!
//! Shared, seeded fixtures for the criterion benches in `benches/` and the
//! memory report (`cargo run --release -p bluelight-benches --bin engine_memory`).
//!
//! ## Layout
//!
//! * [`loadgen`] — the end-to-end load generator and its report.
//! * [`fixture`] — a world of units around UK towns, polygon fences, feeds,
//!   and a stream of steady-state fixes.

#![deny(missing_docs)]

pub mod fixture;
pub mod loadgen;
