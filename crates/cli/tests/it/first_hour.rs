// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! What a new user meets in the first hour, pinned against real processes: the help output,
//! the startup summary, the sample config, `config check`/`show`, and each error a first
//! experiment runs into, which must name its cause once and suggest the fix.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use testkit::Serve;

use crate::BIN;

/// Upper bound for one client run; a hang fails the test instead of blocking the suite.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Long enough for any HS256 secret check (32 bytes minimum).
const SECRET: &str = "first-hour-test-secret-0123456789abcdef";

fn run(args: &[&str]) -> Output {
    run_with_env(args, &[])
}

fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchboard");
    wait_output(child)
}

fn wait_output(child: Child) -> Output {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(RUN_TIMEOUT)
        .expect("switchboard did not exit in time")
        .expect("wait for switchboard")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn repo_path(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// Asserts the command failed with exit code 1 and its error names `cause` exactly once and
/// gives a hint containing `fix`.
fn assert_error(output: &Output, cause: &str, fix: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.matches(cause).count(), 1, "cause not once: {err}");
    let hint = err
        .lines()
        .find(|line| line.starts_with("hint: "))
        .unwrap_or_else(|| panic!("no hint line: {err}"));
    assert!(hint.contains(fix), "hint without {fix:?}: {err}");
}

/// A server started by hand (other listen addresses, stderr kept): the startup lines up to and
/// including the first event after the summary are returned.
struct Started {
    child: Child,
    addr: String,
    log: Vec<String>,
}

impl Started {
    fn new(args: &[&str], lines: usize) -> Self {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("no address line: {line:?}"))
            .to_owned();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        // The summary and the lines after it (notes the server logs while it binds, such as
        // the open-file limit, come before it).
        let mut log = Vec::new();
        while log.len() < lines {
            let mut line = String::new();
            assert!(err.read_line(&mut line).unwrap() > 0, "log ended: {log:?}");
            if log.is_empty() && !line.contains("ready: open") {
                continue;
            }
            log.push(line);
        }
        Self { child, addr, log }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn help_says_what_switchboard_is_and_groups_the_serve_flags() {
    let top = run(&["--help"]);
    assert!(top.status.success());
    let text = stdout(&top);
    assert!(
        text.starts_with("Switchboard: a real-time messaging server"),
        "{text}"
    );
    assert!(text.contains("Exit codes: 0 success"), "{text}");
    assert!(text.contains("config"), "{text}");

    let serve = stdout(&run(&["serve", "--help"]));
    for heading in [
        "Server:",
        "Limits:",
        "History:",
        "Auth:",
        "Origins and proxies:",
        "TLS:",
        "Cluster:",
    ] {
        assert!(serve.contains(heading), "no {heading} in: {serve}");
    }
    // Each group lists its own flags.
    let auth = serve.split("Auth:").nth(1).unwrap();
    let auth = auth.split("Origins and proxies:").next().unwrap();
    assert!(auth.contains("--auth-secret"), "{auth}");
    assert!(!auth.contains("--broker"), "{auth}");

    let connect = stdout(&run(&["connect", "--help"]));
    for flag in ["--origin", "--show-ping-pong"] {
        assert!(connect.contains(flag), "{connect}");
    }
}

#[test]
fn startup_summary_names_version_url_config_broker_auth_origins_and_limits() {
    let sample = repo_path("deploy/switchboard.toml");
    let server = Started::new(
        &[
            "--config",
            &sample,
            "--listen",
            "localhost:0",
            "--log-format",
            "json",
            "--allowed-origin",
            "https://app.example.com",
        ],
        1,
    );
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
    let summary: serde_json::Value = serde_json::from_str(&server.log[0]).unwrap();
    let port = server.addr.rsplit(':').next().unwrap();
    assert_eq!(summary["level"], "INFO");
    assert_eq!(summary["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(summary["url"], format!("http://127.0.0.1:{port}/"));
    assert_eq!(summary["ws_url"], format!("ws://127.0.0.1:{port}/ws"));
    assert_eq!(summary["config"], sample);
    assert_eq!(summary["broker"], "memory");
    assert!(
        summary["auth"]
            .as_str()
            .unwrap()
            .starts_with("anonymous access"),
        "{summary}"
    );
    assert_eq!(summary["origins"], "https://app.example.com");
    assert_eq!(summary["max_connections"], 100_000);
    assert_eq!(summary["ip_connect_rate"], 50);
    // No Rust debug formatting anywhere in the line.
    assert!(
        !server.log[0].contains("Some(") && !server.log[0].contains("None"),
        "{}",
        server.log[0]
    );
}

#[test]
fn anonymous_access_beyond_loopback_is_a_warning() {
    let open = Started::new(&["--listen", ":0"], 2);
    assert!(
        open.log[0].contains("ready: open http://127.0.0.1:"),
        "{:?}",
        open.log
    );
    assert!(
        open.log[1].contains("WARN") && open.log[1].contains("anonymous access is on"),
        "{:?}",
        open.log
    );
    // With a token key, or on loopback, there is nothing to warn about.
    let mut with_key = Command::new(BIN)
        .args(["serve", "--listen", ":0", "--auth-secret", SECRET])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(with_key.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    let _ = Command::new("kill")
        .args(["-TERM", &with_key.id().to_string()])
        .status();
    let output = with_key.wait_with_output().unwrap();
    let log = stderr(&output);
    assert!(log.contains("HS256 tokens"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
    assert!(
        !log.contains(SECRET),
        "the secret leaked into the log: {log}"
    );
}

#[test]
fn the_sample_config_starts_a_server_and_passes_config_check() {
    let sample = repo_path("deploy/switchboard.toml");
    let check = run(&["config", "check", &sample]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(stdout(&check).contains(": ok"), "{}", stdout(&check));
    let server = Serve::start(BIN, &["--config", &sample]);
    assert!(server.addr.starts_with("127.0.0.1:"));
}

#[test]
fn config_show_prints_the_effective_settings_with_secrets_redacted() {
    let output = run_with_env(
        &[
            "config",
            "show",
            "--config",
            &repo_path("deploy/switchboard.toml"),
            "--rate-limit",
            "7",
        ],
        &[
            ("SWITCHBOARD_AUTH_SECRET", SECRET),
            ("SWITCHBOARD_BROKER", "redis://:hunter2@127.0.0.1:1"),
        ],
    );
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(text.contains("messages_per_second = 7"), "{text}");
    assert!(text.contains("hmac_secret = \"[redacted: "), "{text}");
    assert!(
        !text.contains(SECRET) && !text.contains("hunter2"),
        "{text}"
    );
    assert!(
        text.contains("broker = \"redis://:[redacted]@127.0.0.1:1\""),
        "{text}"
    );
}

#[test]
fn a_bad_config_file_is_reported_once_with_its_line() {
    let dir = std::env::temp_dir().join(format!("sb-first-hour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:8080\"\nlisen = 3\n").unwrap();
    for command in [&["config", "check"][..], &["serve", "--config"][..]] {
        let mut args = command.to_vec();
        args.push(file.to_str().unwrap());
        let output = run(&args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{err}");
        assert_eq!(err.matches("unknown field `lisen`").count(), 1, "{err}");
        assert!(err.contains("line 2"), "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_port_in_use_is_reported_once_with_a_fix() {
    let server = Serve::start(BIN, &[]);
    let output = run(&["serve", "--listen", &server.addr]);
    assert_error(&output, "Address already in use", "--listen");
}

#[test]
fn connect_without_a_token_shows_the_servers_reason_and_how_to_get_one() {
    let server = Serve::start(BIN, &["--auth-secret", SECRET]);
    let output = run(&["connect", &format!("ws://{}/ws", server.addr)]);
    assert_error(
        &output,
        "HTTP 401: authentication required",
        "switchboard token",
    );
}

#[test]
fn connect_with_a_bad_token_shows_the_reason_and_hides_the_token() {
    let server = Serve::start(BIN, &["--auth-secret", SECRET]);
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    let output = run(&["connect", &format!("ws://{}/ws?token={token}", server.addr)]);
    assert_error(&output, "HTTP 401: invalid token", "switchboard token");
    let err = stderr(&output);
    assert!(!err.contains(token), "token printed: {err}");
    assert!(err.contains("token=[redacted]"), "{err}");
}

#[test]
fn connect_from_a_refused_origin_names_the_origin_settings() {
    let server = Serve::start(BIN, &[]);
    let output = run(&[
        "connect",
        &format!("ws://{}/ws", server.addr),
        "--origin",
        "https://evil.example",
    ]);
    assert_error(&output, "HTTP 403: origin not allowed", "--allowed-origin");
}

#[test]
fn connect_over_the_rate_limit_names_the_limit_and_its_flag() {
    let server = Serve::start(BIN, &["--ip-connect-rate", "1", "--ip-connect-burst", "1"]);
    let url = format!("ws://{}/ws", server.addr);
    // Bursts of 1 at 1 per second: the second or a later quick attempt is refused (a slow
    // machine may refill the bucket between two attempts, so a few are allowed).
    let second = (0..10)
        .map(|_| {
            run(&[
                "connect",
                &url,
                "-x",
                r#"{"type":"ping","id":1}"#,
                "-w",
                "0",
            ])
        })
        .find(|output| !output.status.success())
        .expect("no connection was refused");
    assert_error(
        &second,
        "HTTP 429: too many new connections from this address",
        "--ip-connect-rate",
    );
}

#[test]
fn connect_with_wss_to_a_plain_server_says_try_ws() {
    let server = Serve::start(BIN, &[]);
    let output = run(&["connect", &format!("wss://{}/ws", server.addr)]);
    assert_error(
        &output,
        "InvalidContentType",
        "the server did not answer TLS; try ws://",
    );
}

#[test]
fn connect_to_the_page_instead_of_the_endpoint_asks_for_ws() {
    let server = Serve::start(BIN, &[]);
    let output = run(&["connect", &format!("ws://{}/", server.addr)]);
    assert_error(&output, "HTTP 200", "did you mean /ws?");
    assert!(!stderr(&output).contains("<html"), "{}", stderr(&output));
}

#[test]
fn connect_slash_commands_send_pings_binary_frames_and_closes() {
    let server = Serve::start(BIN, &["--echo-endpoint"]);
    let output = run(&[
        "connect",
        &format!("ws://{}/echo", server.addr),
        "--show-ping-pong",
        "-x",
        "/ping hello",
        "-x",
        "/binary 00 ff 10",
        "-x",
        "//literal",
        "-w",
        "1",
    ]);
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(output.status.success(), "{err}");
    assert!(err.contains("< pong (5 bytes)"), "{err}");
    assert!(out.contains("binary (3 bytes): 00ff10"), "{out}");
    assert!(out.contains("/literal"), "{out}");

    // Our own close with a code and reason: the server answers it, the client ends with 0.
    let close = run(&[
        "connect",
        &format!("ws://{}/echo", server.addr),
        "-x",
        "/close 4000 done",
    ]);
    assert!(close.status.success(), "{}", stderr(&close));
    assert!(
        !stderr(&close).contains("no close frame"),
        "{}",
        stderr(&close)
    );

    let bad = run(&[
        "connect",
        &format!("ws://{}/echo", server.addr),
        "-x",
        "/close 1006",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("not a close code a client may send"),
        "{}",
        stderr(&bad)
    );
}

/// deploy/systemd/switchboard.service passes `systemd-analyze verify` (with its paths pointed at
/// the built binary and the sample config). Machines without systemd skip it, saying so.
#[test]
fn the_systemd_unit_verifies() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: deploy/systemd/switchboard.service not verified");
        return;
    };
    assert!(version.status.success());
    let unit = std::fs::read_to_string(repo_path("deploy/systemd/switchboard.service")).unwrap();
    assert!(unit.contains("NoNewPrivileges=yes") && unit.contains("ProtectSystem=strict"));
    assert!(unit.contains("LimitNOFILE=") && unit.contains("Restart=on-failure"));
    let unit = unit.replace("/usr/local/bin/switchboard", BIN).replace(
        "/etc/switchboard/switchboard.toml",
        &repo_path("deploy/switchboard.toml"),
    );
    let dir = std::env::temp_dir().join(format!("sb-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("switchboard-test.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    // Warnings about the unit itself (not about the host's other units) fail the test.
    let ours: Vec<&str> = err
        .lines()
        .filter(|line| line.contains("switchboard-test.service"))
        .collect();
    assert!(ours.is_empty(), "{err}");
}

#[test]
fn bench_over_the_per_ip_limit_names_the_server_flags_to_raise() {
    let server = Serve::start(BIN, &["--ip-connect-rate", "1", "--ip-connect-burst", "1"]);
    let output = run(&[
        "bench",
        "fanout",
        "--url",
        &format!("ws://{}/ws", server.addr),
        "--no-spread",
        "-n",
        "20",
        "-d",
        "1",
        "--quiet",
    ]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap();
    assert!(last.contains("could not be set up"), "{err}");
    assert!(last.contains("HTTP 429"), "{err}");
    assert!(
        last.contains("--ip-connect-rate") && last.contains("--ip-connect-burst"),
        "{err}"
    );
}

#[test]
fn connect_with_ws_to_a_tls_server_says_try_wss() {
    let dir = std::env::temp_dir().join(format!("sb-first-hour-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = Serve::start(
        BIN,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let output = run(&["connect", &format!("ws://{}/ws", server.addr)]);
    assert_error(&output, "upgrade handshake", "try wss://");
    std::fs::remove_dir_all(dir).unwrap();
}
