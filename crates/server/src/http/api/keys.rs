//! API keys: who may call the HTTP API, with which scopes, at what rate.
//!
//! Every key is kept as its SHA-256 only (a key given in clear is hashed at startup), and a
//! presented key is hashed and compared with every configured digest in constant time
//! (`subtle`), so neither the comparison's time nor the logs tell anything about a key.

use std::sync::Arc;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::config::{ApiConfig, ApiScope};
use crate::limits::TokenBucket;

/// Every scope: the key of `SWITCHBOARD_API_KEY`.
const ALL_SCOPES: [ApiScope; 3] = [ApiScope::Publish, ApiScope::Read, ApiScope::Admin];

#[derive(Debug)]
struct Key {
    name: Arc<str>,
    digest: [u8; 32],
    scopes: Vec<ApiScope>,
    /// The key's own request rate (`api.requests_per_second`, `api.burst`).
    bucket: Mutex<TokenBucket>,
}

/// The configured keys. Empty: the API is off.
#[derive(Debug)]
pub(crate) struct ApiKeys {
    keys: Vec<Key>,
}

/// A key that was presented and verified.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verified<'a> {
    key: &'a Key,
}

impl Verified<'_> {
    /// The key's name (for logs: never the key).
    pub(crate) fn name(&self) -> &str {
        &self.key.name
    }

    /// Whether the key has `scope`.
    pub(crate) fn allows(&self, scope: ApiScope) -> bool {
        self.key.scopes.contains(&scope)
    }

    /// Takes one request from the key's bucket: `Err(wait)` when over its rate.
    pub(crate) fn take(&self, now: Instant) -> Result<(), std::time::Duration> {
        self.key.bucket.lock().take(now)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex_digest(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (slot, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *slot = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

impl ApiKeys {
    /// The keys of `config` (`api.key`, named `default`, with every scope; `api.keys`);
    /// `None` when there is none (the API is off). The config was validated.
    pub(crate) fn from_config(config: &ApiConfig) -> Option<Self> {
        let now = Instant::now();
        let bucket = || {
            Mutex::new(TokenBucket::new(
                config.requests_per_second,
                config.burst,
                now,
            ))
        };
        let mut keys = Vec::new();
        if let Some(key) = &config.key {
            keys.push(Key {
                name: Arc::from("default"),
                digest: sha256(key.as_bytes()),
                scopes: ALL_SCOPES.to_vec(),
                bucket: bucket(),
            });
        }
        for entry in &config.keys {
            let digest = match (&entry.key, &entry.sha256) {
                (Some(key), _) => sha256(key.as_bytes()),
                (None, Some(hex)) => match hex_digest(hex) {
                    Some(digest) => digest,
                    None => continue,
                },
                (None, None) => continue,
            };
            keys.push(Key {
                name: Arc::from(entry.name.as_str()),
                digest,
                scopes: entry.scopes.clone(),
                bucket: bucket(),
            });
        }
        (!keys.is_empty()).then_some(Self { keys })
    }

    /// The key `presented` is, if any: hashed, then compared with every digest in constant
    /// time (no early exit).
    pub(crate) fn find(&self, presented: &str) -> Option<Verified<'_>> {
        let digest = sha256(presented.as_bytes());
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(Verified { key });
            }
        }
        found
    }

    /// Whether some key has the `admin` scope (`api.key` has every scope): the operator page
    /// is then on (`crate::admin`).
    pub(crate) fn any_admin(&self) -> bool {
        self.keys
            .iter()
            .any(|key| key.scopes.contains(&ApiScope::Admin))
    }

    /// For other parts of the server (the operator page): the name and scopes of the key
    /// `presented` is, if it is one. No rate is taken.
    pub(crate) fn verify(&self, presented: &str) -> Option<(&str, &[ApiScope])> {
        self.find(presented)
            .map(|verified| (&*verified.key.name, verified.key.scopes.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeyConfig;

    fn config() -> ApiConfig {
        ApiConfig {
            key: Some("k".repeat(20)),
            keys: vec![
                ApiKeyConfig {
                    name: "reader".into(),
                    key: None,
                    // Replaced by the real digest where a test needs it.
                    sha256: Some("0".repeat(64)),
                    scopes: vec![ApiScope::Read],
                },
                ApiKeyConfig {
                    name: "publisher".into(),
                    key: Some("publisher-key-0000".into()),
                    sha256: None,
                    scopes: vec![ApiScope::Publish],
                },
            ],
            requests_per_second: 1,
            burst: 2,
            ..ApiConfig::default()
        }
    }

    #[test]
    fn keys_are_found_by_value_or_by_hash_with_their_scopes() {
        let mut config = config();
        let hash: String = sha256(b"reader-key-000000")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        config.keys[0].sha256 = Some(hash);
        let keys = ApiKeys::from_config(&config).unwrap();
        let (name, scopes) = keys.verify(&"k".repeat(20)).unwrap();
        assert_eq!((name, scopes.len()), ("default", 3));
        assert_eq!(
            keys.verify("reader-key-000000").unwrap(),
            ("reader", &[ApiScope::Read][..])
        );
        let publisher = keys.find("publisher-key-0000").unwrap();
        assert!(publisher.allows(ApiScope::Publish) && !publisher.allows(ApiScope::Admin));
        assert!(keys.verify("publisher-key-0001").is_none());
        assert!(keys.verify("").is_none());
    }

    #[test]
    fn each_key_has_its_own_rate() {
        let keys = ApiKeys::from_config(&config()).unwrap();
        let now = Instant::now();
        let publisher = keys.find("publisher-key-0000").unwrap();
        assert!(publisher.take(now).is_ok() && publisher.take(now).is_ok());
        assert!(publisher.take(now).is_err(), "burst of 2 spent");
        let default = keys.find(&"k".repeat(20)).unwrap();
        assert!(
            default.take(now).is_ok(),
            "another key's bucket is untouched"
        );
    }

    #[test]
    fn no_key_means_no_api() {
        assert!(ApiKeys::from_config(&ApiConfig::default()).is_none());
    }
}
