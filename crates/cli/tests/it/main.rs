//! End-to-end tests of the `switchboard` binary, one test binary: real `switchboard serve`
//! processes (and Redis and nginx where a test needs them, each on free ports) through the
//! shared test kit (`crates/testkit`). One module per topic.

mod backpressure;
mod cluster;
mod connect;
mod examples;
mod first_hour;
mod shutdown;
mod top;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
