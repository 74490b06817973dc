//! The Rust SDK's integration tests, one test binary: the SDK against in-process servers,
//! through a proxy that cuts and silences connections, via the shared test kit
//! (`crates/testkit`). One module per topic.

mod chaos;
mod sdk;
