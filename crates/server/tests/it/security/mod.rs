// Tests fail loudly by design: unwrapping, indexing and panicking are the assertions here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Hardening over real sockets: the controls of docs/security.md — authentication at the
//! upgrade, refresh and expiry, room rights, the Origin check, rate/room/connection limits,
//! malformed input at the framing and JSON level, and TLS. The backpressure test at scale runs
//! the real binary and lives in crates/cli/tests/it/backpressure.rs; the cross-origin test in a
//! real browser in web/tests/origin.test.mjs.
//!
//! Synchronisation: no sleeps. Replies, closes and EOFs are awaited with timeouts. The only
//! time windows: silence checks (nothing arrives while a deadline passes: the old expiry after
//! a refresh, the first 300 ms of a connection within the leeway), lower bounds on the
//! handshake timeouts, the paced writes of a slowloris client, and one bounded retry loop for
//! a server-side effect no frame reports (a freed connection slot).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use switchboard_protocol::binary::encode_client;
use switchboard_server::Config;
use switchboard_server::config::AuthConfig;
use testkit::{
    Client, RECV_TIMEOUT, TestServer, masked_fragment, masked_frame, members, opcode,
    read_to_end_within, unthrottled,
};
use testkit::{
    SECRET, TempDir, assert_serves, connect_with, exp_of, hs256_config, p256_key_pair, read_head,
    read_until_close, rsa_key_pair, sign_hs256, sign_with_pem, token, token_path, unix_now,
    upgrade, upgrade_with_host,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_websockets::Message;

mod auth;
mod bad_input;
mod limits;
mod origin;
mod refresh;
mod rights;
mod tls;

/// Connects with `?token=` and returns the client.
async fn connect_token(server: &TestServer, token: &str, name: &str) -> Client {
    Client::connect_path(server, &token_path(token), name).await
}

/// Joins a fresh room and returns its members: whom the server thinks this connection is.
async fn whoami(client: &mut Client, room: &str) -> Vec<String> {
    members(&client.join(room).await)
}
