// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! End-to-end tests of `switchboard top --once` against a real `switchboard serve`.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

use testkit::Client;
use testkit::Serve;

use crate::BIN;

const KEY: &str = "cli-test-admin-key-0123456789";

fn top(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .arg("top")
        .args(args)
        .env_remove("SWITCHBOARD_ADMIN_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("run switchboard top")
}

fn text(output: &[u8]) -> String {
    String::from_utf8_lossy(output).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn top_once_prints_the_node_and_its_busiest_room() {
    let server = Serve::start(
        BIN,
        &[
            "--admin-key",
            KEY,
            "--rate-limit",
            "1000",
            "--rate-burst",
            "1000",
        ],
    );
    let url = format!("http://{}", server.addr);
    let mut alice = Client::connect_to(&server.addr, "alice").await;
    alice
        .send_json(json!({"type": "join", "room": "busy-room", "id": 1}))
        .await;
    // Publishes until a snapshot ranks the room (snapshots come once a second; bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    let stdout = loop {
        for _ in 0..10 {
            alice
                .send_json(json!({"type": "publish", "room": "busy-room", "data": 1}))
                .await;
        }
        let output = top(&[&url, "--once"], &[("SWITCHBOARD_ADMIN_KEY", KEY)]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let stdout = text(&output.stdout);
        let busiest = stdout
            .lines()
            .skip_while(|line| !line.starts_with("BUSIEST ROOMS"))
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        if busiest.starts_with("busy-room") {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "busy-room never ranked:\n{stdout}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let port = server.addr.rsplit(':').next().unwrap();
    let node = stdout
        .lines()
        .find(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|cell| cell.ends_with(&format!(":{port}")))
        })
        .unwrap_or_else(|| panic!("no node line:\n{stdout}"));
    // NODE BROKER UP CONN ROOMS MEMBERS ...
    let cells: Vec<&str> = node.split_whitespace().collect();
    assert_eq!(&cells[1..2], ["memory"], "{node}");
    assert_eq!(&cells[3..6], ["1", "1", "1"], "{node}");
    assert!(stdout.starts_with("switchboard top"), "{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "--once prints no escape codes: {stdout:?}"
    );
}

#[test]
fn top_with_a_wrong_key_or_without_the_page_says_why_and_exits_1() {
    let keyed = Serve::start(BIN, &["--admin-key", KEY]);
    let output = top(
        &[
            &format!("http://{}", keyed.addr),
            "--once",
            "--key",
            "wrong-key-wrong-key",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("401"),
        "{}",
        text(&output.stderr)
    );
    let plain = Serve::start(BIN, &[]);
    let output = top(
        &[&format!("http://{}", plain.addr), "--once", "--key", KEY],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("SWITCHBOARD_ADMIN_KEY"),
        "{stderr}"
    );
}
