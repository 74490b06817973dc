//! A private `redis-server` for a test, on a free port of 127.0.0.1, without persistence;
//! it can be killed (a crash) and restarted on the same port.
//!
//! Needs redis-server: `scripts/services.sh` installs it.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{POLL, PORT_ATTEMPTS, READY_TIMEOUT, free_port, unique_dir};

/// How long `restart` keeps trying while the old port cannot be bound again yet.
const RESTART_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `redis-server` (or a killed one, after `kill`); killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits until it answers PING.
    pub fn start() -> RedisServer {
        let dir = unique_dir("redis");
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut child = spawn(port, &dir);
            match wait_ready(&mut child, port, &dir) {
                Ok(()) => {
                    return RedisServer {
                        port,
                        child: Some(child),
                        dir,
                    };
                }
                Err(log) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if !log.contains("Address already in use") {
                        let _ = fs::remove_dir_all(&dir);
                        panic!("redis-server did not start on port {port}; its log:\n{log}");
                    }
                    // Someone took the port between our probe and its bind: try another.
                    last_log = log;
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!(
            "redis-server found no free port in {PORT_ATTEMPTS} attempts; last log:\n{last_log}"
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL (a crash: no shutdown, connections reset) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGSTOP: a hang. Its connections stay open and what the nodes
    /// send waits in its socket, to be run when it is resumed.
    pub fn pause(&mut self) {
        self.signal("STOP");
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&mut self) {
        self.signal("CONT");
    }

    fn signal(&mut self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is not running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill -{signal}: {e}"));
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Whether the server process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Starts the server again on the same port (killing it first if it still runs), empty,
    /// and waits until it answers PING. Retries for a few seconds while the port cannot be
    /// bound again yet.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + RESTART_TIMEOUT;
        loop {
            let mut child = spawn(self.port, &self.dir);
            match wait_ready(&mut child, self.port, &self.dir) {
                Ok(()) => {
                    self.child = Some(child);
                    return;
                }
                Err(log) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if !log.contains("Address already in use") || Instant::now() >= deadline {
                        panic!(
                            "redis-server did not restart on port {}; its log:\n{log}",
                            self.port
                        );
                    }
                    sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// The server's log (all its runs), for diagnostics.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `redis-server` in the foreground, appending its log to DIR/redis.log.
fn spawn(port: u16, dir: &Path) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("redis.log"))
        .expect("open redis.log");
    let log_err = log.try_clone().expect("clone redis.log handle");
    let bin = super::find_bin("redis-server", &[]);
    Command::new(&bin)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()))
}

/// Waits until the server answers PING with +PONG; its log if it exits or times out.
fn wait_ready(child: &mut Child, port: u16, dir: &Path) -> Result<(), String> {
    let log = || fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("(redis-server exited: {status})\n{}", log()));
        }
        if pings(port) {
            // Ours, not a server that took the port: ours would have exited.
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
            continue;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "(no PONG on port {port} after {READY_TIMEOUT:?})\n{}",
                log()
            ));
        }
        sleep(POLL);
    }
}

/// Sends a RESP command to a Redis on 127.0.0.1:PORT and returns the raw reply (blocking: call
/// it off the runtime, e.g. in `spawn_blocking`).
pub fn command(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).expect("send to redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    let mut reply = [0u8; 512];
    let n = stream.read(&mut reply).expect("read redis's reply");
    String::from_utf8_lossy(reply.get(..n).unwrap_or_default()).into_owned()
}

/// Whether a Redis on 127.0.0.1:PORT answers PING.
fn pings(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let timeout = Some(Duration::from_millis(500));
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        return false;
    }
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0_u8; 7];
    let mut read = 0;
    while read < reply.len() {
        match reply.get_mut(read..).map(|rest| stream.read(rest)) {
            Some(Ok(n)) if n > 0 => read += n,
            _ => break,
        }
    }
    reply.starts_with(b"+PONG")
}
