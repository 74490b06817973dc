//! The library half of the `switchboard` binary's crate: what the binary decides and the test
//! kit reuses so that in-process test servers are built exactly as `switchboard serve` builds
//! them (today: the choice of engine).

pub mod engine;
