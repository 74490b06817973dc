//! A real nginx in front of `switchboard serve` nodes, running the shipped example
//! `deploy/nginx/switchboard.conf` with its upstream `server` lines and its `listen 8080;`
//! rewritten, so the example is what the cluster tests exercise.
//!
//! Needs nginx (on PATH or at /usr/sbin/nginx): `scripts/services.sh` installs it.

use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{POLL, PORT_ATTEMPTS, READY_TIMEOUT, free_port, unique_dir};

/// The shipped example configuration.
const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/nginx/switchboard.conf"
);

/// A running nginx (master and one worker) proxying to the given nodes; stopped and its
/// directory removed when dropped.
#[derive(Debug)]
pub struct Nginx {
    /// `127.0.0.1:PORT` that nginx listens on.
    pub addr: String,
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx with the example configuration proxying to `upstreams` (`IP:PORT` each),
    /// listening on a free port of 127.0.0.1, and waits until it accepts connections.
    pub fn start(upstreams: &[String]) -> Nginx {
        assert!(!upstreams.is_empty(), "nginx needs at least one upstream");
        let bin = super::find_bin("nginx", &["/usr/sbin/nginx"]);
        let dir = unique_dir("nginx");
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            write_configs(&dir, upstreams, port);
            let _ = fs::remove_file(dir.join("error.log"));
            let child = spawn(&bin, &dir);
            let mut nginx = Nginx {
                addr: format!("127.0.0.1:{port}"),
                child,
                dir: dir.clone(),
            };
            match nginx.wait_ready() {
                Ok(()) => return nginx,
                Err(log) if log.contains("Address already in use") => {
                    // Someone took the port between our probe and nginx's bind: try another.
                    // Dropping `nginx` would remove the directory: keep it for the next try.
                    last_log = log;
                    nginx.stop();
                    std::mem::forget(nginx);
                }
                Err(log) => panic!("nginx did not start; its error log:\n{log}"),
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("nginx found no free port in {PORT_ATTEMPTS} attempts; last error log:\n{last_log}");
    }

    /// Points nginx at a new set of nodes: rewrites the configuration and reloads it
    /// (SIGHUP), then waits until the new worker runs and the old one has stopped accepting.
    /// Connections the old worker holds (WebSockets) stay on it until they close.
    pub fn reload(&mut self, upstreams: &[String]) {
        assert!(!upstreams.is_empty(), "nginx needs at least one upstream");
        let port = self
            .addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .expect("nginx address has a port");
        write_configs(&self.dir, upstreams, port);
        let count = |log: &str| {
            (
                log.matches("start worker process ").count(),
                log.matches("gracefully shutting down").count(),
            )
        };
        let (started, retired) = count(&self.error_log());
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill -HUP");
        assert!(status.success(), "kill -HUP nginx failed");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = self.error_log();
            let (now_started, now_retired) = count(&log);
            if now_started > started && now_retired > retired {
                // The old worker logs that line just before it closes its listening sockets.
                sleep(POLL);
                return;
            }
            if log.contains("[emerg]") || Instant::now() >= deadline {
                panic!("nginx did not reload; its error log:\n{log}");
            }
            sleep(POLL);
        }
    }

    /// nginx's error log so far (the configuration logs at `info`), for diagnostics.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// The master's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until nginx accepts TCP connections; the error log if it exits or times out.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("(nginx exited: {status})\n{}", self.error_log()));
            }
            // The master binds before it starts its worker, and keeps retrying a failed
            // bind for a while before exiting: until the worker starts, a connection may be
            // reaching whoever else holds the port.
            if self.error_log().contains("start worker process ")
                && TcpStream::connect(&self.addr).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "(not accepting on {} after {READY_TIMEOUT:?})\n{}",
                    self.addr,
                    self.error_log()
                ));
            }
            sleep(POLL);
        }
    }

    /// Stops nginx: a fast shutdown (SIGTERM), in which the master stops its worker before
    /// exiting; SIGKILL to both if that takes too long. SIGKILL to the master alone would
    /// leave its worker running, still holding the port and the proxied connections.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let master = self.child.id();
            let _ = Command::new("kill")
                .args(["-TERM", &master.to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                sleep(POLL);
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                // Still unreaped, so its pid is still ours and names its children.
                for worker in children_of(master) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &worker.to_string()])
                        .stderr(Stdio::null())
                        .status();
                }
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The processes whose parent is `pid` (Linux /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| {
            // /proc/PID/stat: `PID (COMM) STATE PPID …`; COMM may hold spaces and parens.
            fs::read_to_string(format!("/proc/{candidate}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn spawn(bin: &Path, dir: &Path) -> Child {
    let stderr = File::create(dir.join("stderr.log")).expect("create nginx stderr.log");
    Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()))
}

/// Writes DIR/switchboard.conf (the example, rewritten) and DIR/nginx.conf (a main
/// configuration that keeps everything inside DIR and includes it).
fn write_configs(dir: &Path, upstreams: &[String], port: u16) {
    let example = fs::read_to_string(EXAMPLE)
        .unwrap_or_else(|e| panic!("read the example nginx configuration {EXAMPLE}: {e}"));
    fs::write(
        dir.join("switchboard.conf"),
        rewrite(&example, upstreams, port),
    )
    .expect("write switchboard.conf");

    let d = dir.display();
    // As root, nginx would switch its worker to `nobody`, which may not read DIR.
    let user = if is_root() { "user root;\n" } else { "" };
    let main = format!(
        "# Generated by crates/testkit/src/service/nginx.rs around deploy/nginx/switchboard.conf.\n\
         daemon off;\n\
         {user}\
         worker_processes 1;\n\
         worker_rlimit_nofile 8192;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n    \
             access_log off;\n    \
             client_body_temp_path {d}/body;\n    \
             proxy_temp_path {d}/proxy;\n    \
             fastcgi_temp_path {d}/fcgi;\n    \
             uwsgi_temp_path {d}/uwsgi;\n    \
             scgi_temp_path {d}/scgi;\n    \
             include {d}/switchboard.conf;\n\
         }}\n"
    );
    fs::write(dir.join("nginx.conf"), main).expect("write nginx.conf");
}

/// The example with the `server 127.0.0.1:…;` lines of its upstream block replaced by one
/// per upstream (keeping the parameters of the first, e.g. `max_fails=1 fail_timeout=5s`)
/// and `listen 8080;` replaced by `listen 127.0.0.1:PORT;`.
fn rewrite(example: &str, upstreams: &[String], port: u16) -> String {
    let mut out = String::with_capacity(example.len() + 64 * upstreams.len());
    let mut in_upstream = false;
    let mut servers_written = false;
    let mut listens = 0;
    for line in example.lines() {
        let trimmed = line.trim();
        let indent = line
            .get(..line.len() - line.trim_start().len())
            .unwrap_or("");
        if trimmed.starts_with("upstream ") && trimmed.ends_with('{') {
            in_upstream = true;
        } else if in_upstream && trimmed == "}" {
            in_upstream = false;
        } else if in_upstream && trimmed.starts_with("server 127.0.0.1:") {
            if !servers_written {
                let spec = trimmed
                    .trim_start_matches("server ")
                    .trim_end_matches(';')
                    .trim();
                let params = spec.split_once(char::is_whitespace).map_or("", |(_, p)| p);
                for upstream in upstreams {
                    let sep = if params.is_empty() { "" } else { " " };
                    out.push_str(&format!("{indent}server {upstream}{sep}{params};\n"));
                }
                servers_written = true;
            }
            continue;
        } else if trimmed == "listen 8080;" {
            out.push_str(&format!("{indent}listen 127.0.0.1:{port};\n"));
            listens += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        servers_written,
        "{EXAMPLE}: no `server 127.0.0.1:PORT …;` line in an upstream block to rewrite"
    );
    assert_eq!(
        listens, 1,
        "{EXAMPLE}: expected exactly one `listen 8080;` line"
    );
    out
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}
