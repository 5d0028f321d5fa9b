//! # bluelight-api
//!
//! The `bluelight` server and command line: `serve` (HTTP, WebSocket and ingest
//! listeners around the engine), `demo` (the server with a simulated fleet
//! and the dispatch map) and `export` (history from a running server).
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
//! * [`hub`] — routes alerts, feed changes and nearest answers to sessions.
//! * [`ws`] — the WebSocket protocol (`/v1/ws`, `/v1/ingest`).
//! * [`bulk`] — the low-priority thread that writes positions feeds.
//! * [`latency`] — the fix-to-alert histogram in `/metrics`.
//! * [`cli_export`] — `bluelight export`: streams `/v1/export` to a file.
//! * [`demo`] — the demo loop.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod auth;
pub mod bulk;
pub mod cli_export;
pub mod config;
pub mod demo;
pub mod export;
pub mod fence_json;
pub mod http;
pub mod hub;
pub mod json;
pub mod latency;
pub mod server;
pub mod ws;
