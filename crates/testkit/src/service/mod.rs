//! External services for a test, each its own process on a free port of 127.0.0.1, in its own
//! temporary directory, stopped (and the directory removed) when dropped: [`RedisServer`] and
//! [`Nginx`]. No test uses a service someone else started (never Redis on 6379): two test
//! binaries, or two helpers on one machine, never share state.
//!
//! Needs redis-server and nginx: `scripts/services.sh` installs them.

mod nginx;
mod redis;

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use nginx::Nginx;
pub use redis::{RedisServer, command};

/// How many ports to try when another process takes the free port first.
const PORT_ATTEMPTS: usize = 5;
/// How long a service may take to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// A port free right now on 127.0.0.1 (another process may take it before we bind it: the
/// services retry with another port when their log says so).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A new empty directory under the system temp dir, unique to this process and call.
pub fn unique_dir(kind: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "switchboard-{kind}-{}-{n}-{nanos}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// `name` on PATH, or else the first of `elsewhere` that exists (Debian puts nginx in
/// /usr/sbin, not on every user's PATH).
fn find_bin(name: &str, elsewhere: &[&str]) -> PathBuf {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name))
        .chain(elsewhere.iter().map(PathBuf::from))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH or in {elsewhere:?}: run scripts/services.sh to install it")
        })
}
