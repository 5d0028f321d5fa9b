//! All integration tests of the engine, in one binary.

mod events;
mod props;
mod standing;
mod support;
