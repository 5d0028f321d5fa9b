//! # bluelight-api
//!
//! The `bluelight` server and command line: `serve` (HTTP and ingest
//! listeners around the engine) and `demo`. WebSocket feeds, alerts,
//! export and auth enforcement are being built (see the open api issue).
//!
//! ## Layout
//!
//! * [`auth`] — tokens, scopes and agency limits.
//! * [`config`] — `serve` configuration (TOML file, flags, environment).
//! * [`server`] — binding, the writer, the clock, shared state.
//! * [`http`] — the HTTP endpoints.
//! * [`export`] — history export: points, tracks, H3 aggregates.
//! * [`json`] — unit objects and Features.
//! * [`fence_json`] — GeoJSON Features ⇄ fences, and protocol filters.
//! * [`demo`] — the demo loop.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod auth;
pub mod config;
pub mod demo;
pub mod export;
pub mod fence_json;
pub mod http;
pub mod hub;
pub mod json;
pub mod server;
pub mod ws;
