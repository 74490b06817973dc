// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! End-to-end tests of `switchboard connect` against a real `switchboard serve`.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use testkit::Serve;

use crate::BIN;
/// Upper bound for one client run; a hang fails the test instead of blocking the suite.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for a spawned client, failing the test if it takes longer than `CLIENT_TIMEOUT`.
fn wait_output(child: Child) -> Output {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(CLIENT_TIMEOUT)
        .expect("switchboard connect did not exit in time")
        .expect("wait for switchboard connect")
}

fn connect(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .arg("connect")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchboard connect");
    wait_output(child)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Parses every stdout line that is a JSON object.
fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    text(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[test]
fn execute_sends_messages_and_prints_replies() {
    let server = Serve::start(BIN, &[]);
    let url = format!("ws://{}/ws?user=alice", server.addr);
    let output = connect(&[
        &url,
        "-x",
        r#"{"type":"join","room":"r","id":1}"#,
        "-x",
        r#"{"type":"ping","id":2}"#,
        "--wait",
        "1",
    ]);
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "status {:?}, stderr: {stderr}",
        output.status
    );
    assert!(
        stderr.contains(&format!("connected to {url}")),
        "stderr: {stderr}"
    );

    let frames = json_lines(&output);
    let joined = frames
        .iter()
        .find(|f| f["type"] == "joined")
        .unwrap_or_else(|| panic!("no joined in {frames:?}"));
    assert_eq!(joined["room"], "r");
    assert_eq!(joined["id"], 1);
    assert!(
        frames.iter().any(|f| f["type"] == "pong" && f["id"] == 2),
        "no pong with id 2 in {frames:?}"
    );
}

#[test]
fn refused_upgrade_reports_the_http_status() {
    let server = Serve::start(BIN, &[]);
    let output = connect(&[&format!("ws://{}/nope", server.addr)]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "status {:?}", output.status);
    assert!(
        stderr.contains("upgrade refused: HTTP 404"),
        "stderr: {stderr}"
    );
}

#[test]
fn closed_port_fails() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let output = connect(&[&format!("ws://127.0.0.1:{port}/ws"), "-x", "{}"]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "status {:?}", output.status);
    assert!(stderr.contains("cannot connect"), "stderr: {stderr}");
}

#[test]
fn non_ws_scheme_is_rejected() {
    let output = connect(&["http://127.0.0.1:1/ws"]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "status {:?}", output.status);
    assert!(stderr.contains("unsupported URL"), "stderr: {stderr}");
}

#[test]
fn wss_with_a_generated_certificate() {
    let dir = std::env::temp_dir().join(format!("sb-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let server = Serve::start(
        BIN,
        &[
            "--tls-cert",
            cert_pem.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
        ],
    );
    let port = server.addr.rsplit(':').next().unwrap();
    let url = format!("wss://localhost:{port}/ws?user=tls");
    let output = connect(&[
        &url,
        "--ca-file",
        cert_pem.to_str().unwrap(),
        "-x",
        r#"{"type":"ping","id":5}"#,
        "--wait",
        "1",
    ]);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert!(text(&output.stdout).contains(r#"{"type":"pong","id":5}"#));
    let untrusted = connect(&[&url, "-x", "{}", "--wait", "1"]);
    assert!(!untrusted.status.success(), "an unknown CA must be refused");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn interactive_sends_stdin_lines_until_eof() {
    let server = Serve::start(BIN, &[]);
    let mut child = Command::new(BIN)
        .args(["connect", &format!("ws://{}/ws?user=bob", server.addr)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchboard connect");
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"{\"type\":\"ping\",\"id\":7}\n").unwrap();
        // Dropping stdin closes it: the client sends close 1000 and exits.
    }
    let output = wait_output(child);
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "status {:?}, stderr: {stderr}",
        output.status
    );
    let frames = json_lines(&output);
    assert!(
        frames.iter().any(|f| f["type"] == "pong" && f["id"] == 7),
        "no pong with id 7 in {frames:?}, stderr: {stderr}"
    );
}
