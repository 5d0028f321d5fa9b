//! # bluelight-ingest
//!
//! The ingest tier of bluelight: wire formats, validation and position
//! filters, transports, and the pipeline that hands clean batches to the
//! engine's writer; plus the simulated fleet, a source of fixes like any
//! device, used by `bluelight demo`, the benchmarks and the load generator.
//!
//! ## Layout
//!
//! * [`wire`] — the FlatBuffers schema's generated code.
//! * [`decode`] — FlatBuffers and JSON decoders (and an encoder).
//! * [`cot`] — Cursor-on-Target XML events.
//! * [`nmea`] — NMEA 0183 RMC and GGA sentences.
//! * [`lip`] — TETRA LIP location reports.
//! * [`tak`] — TAK protocol version 1 (protobuf) and its framings.
//! * [`definitions`] — fences, proximity rules and filters as their owners
//!   write them (JSON), parsed here and compiled by the writer.
//! * [`validate`] — refusal reasons, validation settings, counters.
//! * [`batch`] — the decoded batch, reused without per-fix allocation.
//! * [`calendar`] — civil dates and days since the epoch.
//! * [`queue`] — the bounded queue from the transports to the writer.
//! * [`journal`] — the Redis journal: the stage between the queue and the
//!   writer, snapshots, and the replay at start-up.
//! * [`writer`] — the one thread that changes the engine, and the
//!   [`OutputConsumer`](writer::OutputConsumer) it hands outputs to.
//! * [`tasks`] — queries and bulk copies the writer runs for others.
//! * [`pipeline`] — queue, tasks and writer wired together in memory.
//! * [`transport`] — UDP and TCP listeners.
//! * [`tls`] — TLS and mutual TLS for the listeners; what a device
//!   certificate may send.
//! * [`fleet`] — the simulated fleet: units of every agency around real
//!   British towns, moving at plausible speeds, changing status, reporting
//!   every 1–10 s.
//! * [`places`] — the towns the fleet lives in (`data/places.csv`).
//! * [`priority`] — lower priority for bulk threads.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod batch;
pub mod calendar;
pub mod cot;
pub mod decode;
pub mod definitions;
pub mod fleet;
pub mod journal;
pub mod lip;
pub mod nmea;
pub mod pipeline;
pub mod places;
pub mod priority;
pub mod queue;
pub mod tak;
pub mod tasks;
pub mod tls;
pub mod transport;
pub mod validate;
pub mod wire;
pub mod writer;
