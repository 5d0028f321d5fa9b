//! All integration tests of the engine, in one binary.

mod events;
mod props;
mod snapshot;
mod standing;
mod support;
