//! `[admin]`: the operator page (`/admin`), its JSON endpoint (`/admin/api/stats`) and the
//! cluster view they read.

use serde::{Deserialize, Serialize};

/// Shortest admin key accepted: 16 bytes (128 bits as hex would be 32; a shorter key is a
/// password someone typed).
pub const MIN_KEY_LEN: usize = 16;

/// `[admin]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The key the operator page and `switchboard top` present (`Authorization: Bearer KEY`),
    /// at least 16 bytes. Default unset: the operator page is off and `/admin` answers 404.
    /// Prefer the environment variable `SWITCHBOARD_ADMIN_KEY` to a file.
    pub key: Option<String>,
}

impl AdminConfig {
    /// Whether the operator page is served.
    pub fn enabled(&self) -> bool {
        self.key.is_some()
    }

    /// Checks the key's length.
    pub(crate) fn check(&self) -> Result<(), String> {
        match &self.key {
            Some(key) if key.len() < MIN_KEY_LEN => Err(format!(
                "key must be at least {MIN_KEY_LEN} bytes (e.g. `openssl rand -hex 16`)"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_off_without_a_key_and_a_short_key_is_refused() {
        assert!(!AdminConfig::default().enabled());
        let short = AdminConfig {
            key: Some("hunter2".to_owned()),
        };
        assert!(short.enabled() && short.check().is_err());
        let good = AdminConfig {
            key: Some("0123456789abcdef".to_owned()),
        };
        assert!(good.check().is_ok());
    }
}
