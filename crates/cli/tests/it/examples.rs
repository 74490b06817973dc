// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The token-minting examples of docs/getting-started.md (examples/tokens/), run with the real
//! `node` and `python3`, and their tokens used against a real server with that secret.

use std::process::{Command, Output, Stdio};

use testkit::Serve;

use crate::BIN;

const SECRET: &str = "getting-started-secret-0123456789abcdef";

fn example(path: &str) -> String {
    format!(
        "{}/../../examples/tokens/{path}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Runs an example; the interpreter must be installed (the test command needs Node for the
/// browser tests and Python 3 for the conformance suite anyway).
fn mint(interpreter: &str, script: &str, args: &[&str]) -> String {
    let output = Command::new(interpreter)
        .arg(example(script))
        .args(args)
        .env("SWITCHBOARD_AUTH_SECRET", SECRET)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {interpreter} (is it installed?): {err}"));
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn join(server: &Serve, token: &str, room: &str) -> Output {
    Command::new(BIN)
        .args([
            "connect",
            &format!("ws://{}/ws?token={token}", server.addr),
            "-x",
            &format!(r#"{{"type":"join","room":"{room}","id":1}}"#),
            "-w",
            "1",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn replies(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn assert_joined_as(output: &Output, user: &str) {
    let replies = replies(output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(replies[0]["type"], "joined", "{replies:?} {stderr}");
    assert_eq!(replies[0]["members"][0], user, "{replies:?}");
}

#[test]
fn the_node_example_mints_tokens_the_server_accepts_with_their_rights() {
    let server = Serve::start(BIN, &["--auth-secret", SECRET]);
    let token = mint("node", "mint-token.mjs", &["alice", "chat:*"]);
    assert_joined_as(&join(&server, &token, "chat:lobby"), "alice");
    // The rights are in the token: another room is refused.
    let refused = replies(&join(&server, &token, "news:today"));
    assert_eq!(refused[0]["type"], "error", "{refused:?}");
    assert_eq!(refused[0]["code"], "forbidden", "{refused:?}");
}

#[test]
fn the_python_example_mints_tokens_the_server_accepts() {
    let server = Serve::start(BIN, &["--auth-secret", SECRET]);
    let token = mint("python3", "mint_token.py", &["bob"]);
    assert_joined_as(&join(&server, &token, "anything"), "bob");
    // A token signed with another secret is refused at the upgrade.
    let other = Command::new("python3")
        .arg(example("mint_token.py"))
        .arg("mallory")
        .env(
            "SWITCHBOARD_AUTH_SECRET",
            "another-secret-0123456789abcdefghij",
        )
        .output()
        .unwrap();
    let forged = String::from_utf8(other.stdout).unwrap();
    let output = join(&server, forged.trim(), "anything");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("HTTP 401"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
