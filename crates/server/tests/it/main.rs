//! The server's integration tests, one binary (one link, one process start per test run):
//! in-process servers on ephemeral ports, real sockets, real Redis where a test needs it —
//! all through the shared test kit (`crates/testkit`). One module per topic.

mod admin;
mod admission;
mod api;
mod api_cluster;
mod bad_input;
mod cluster;
mod deflate;
mod fail_closed;
mod large_rooms;
mod lifecycle;
mod memory;
mod metrics;
mod protocol;
mod redis_faults;
mod security;
mod webhooks;
