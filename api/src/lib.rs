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
//! * [`server`] — builds the hub, the pipeline and the listeners; the clock.
//! * [`state`] — what every handler and session shares.
//! * [`http`] — the HTTP endpoints; [`metrics`] — `/metrics`;
//!   [`http_serve`] — the HTTP accept loop (header timeout, connection cap);
//!   TLS is `bluelight_ingest::tls` (shared with the device listeners).
//! * [`openapi`] — `/openapi.json`: the reply and body types it describes.
//! * [`export`] — history export: points, tracks, H3 aggregates;
//!   [`body_encoding`] — its body gzip-compressed when the client accepts it.
//! * [`json`] — unit objects and Features; [`rows`] — units copied out of
//!   the engine, written as JSON or FlatBuffers off its lock.
//! * [`protocol`] — request rules shared by HTTP and WebSocket, typed errors.
//! * [`alert_record`] — an alert serialised once.
//! * [`durable`] — start-up with Redis: outbox, snapshot, journal replay.
//! * [`follower`] — `--follow`: tails the leader's journal; promotion.
//! * [`promote`] — `POST /v1/admin/promote`: a follower leads.
//! * [`outbox`] — every alert to the Redis alerts stream and channel.
//! * [`hub`] — routes alerts, feed changes and nearest answers to sessions
//!   (the writer's output consumer).
//! * [`session`] — a connection's outgoing queues and its subscriptions.
//! * [`ws`] — the `/v1/ws` socket loop; [`subscriptions`] — its requests;
//!   [`feeds`] — when and how its rate-limited updates go out;
//!   [`feed_changes`] — a feed's changes waiting for it, conflated.
//! * [`ws_ingest`] — `/v1/ingest`.
//! * [`feed_writer`] — the low-priority thread that writes positions feeds.
//! * [`cot_out`] — the live picture to TAK clients and a TAK Server.
//! * [`latency`] — the fix-to-alert histogram in `/metrics`.
//! * [`cli_export`] — `bluelight export`: streams `/v1/export` to a file.
//! * [`demo`] — the demo loop.
//! * [`web`] — the dispatch map page and its built-in assets.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod alert_record;
pub mod auth;
pub mod body_encoding;
pub mod cli_export;
pub mod config;
pub mod cot_out;
pub mod demo;
pub mod durable;
pub mod export;
pub mod feed_changes;
pub mod feed_writer;
pub mod feeds;
pub mod follower;
pub mod http;
pub mod http_serve;
pub mod hub;
pub mod json;
pub mod latency;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod promote;
pub mod protocol;
pub mod rows;
pub mod server;
pub mod session;
pub mod state;
pub mod subscriptions;
pub mod web;
pub mod ws;
pub mod ws_ingest;
