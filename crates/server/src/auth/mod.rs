//! Authentication at the upgrade: who the connection is (a JWT's `sub`, or an anonymous name
//! when anonymous access is on) and what it may do (the `rooms` claim).

pub mod grants;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use switchboard_protocol::names::validate_user;

use self::grants::{Grants, RoomsClaim};
use crate::config::{AuthConfig, ConfigError};

/// Who a connection is and what it may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user name (`sub`, or the anonymous name).
    pub user: Arc<str>,
    /// When the token expires (seconds since the Unix epoch); `None` for anonymous access.
    pub expires_at: Option<u64>,
    /// Rights per room.
    pub grants: Grants,
}

/// Why a connection (or a refresh) was refused. The text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, and anonymous access is off.
    #[error("authentication required: send a token (Authorization: Bearer, ?token= or the cookie)")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token is malformed, badly signed, or its claims are unusable.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The anonymous user name (`?user=`) is not acceptable.
    #[error("invalid user name: {0}")]
    BadUser(String),
}

/// The claims Switchboard reads; others are ignored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user name.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Room rights (see [`grants::RoomsClaim`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<RoomsClaim>,
}

/// Checks tokens with the configured key.
pub struct Authenticator {
    key: Option<(DecodingKey, Validation)>,
    anonymous: bool,
    cookie: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("verifies_tokens", &self.key.is_some())
            .field("anonymous", &self.anonymous)
            .field("cookie", &self.cookie)
            .finish()
    }
}

impl Authenticator {
    /// Builds the verifier from the `[auth]` settings (reads the public key file, if any).
    pub fn from_config(config: &AuthConfig) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            field: "auth",
            reason,
        };
        let key = match (&config.hmac_secret, &config.public_key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "set either hmac_secret or public_key_file, not both".into(),
                ));
            }
            (Some(secret), None) => {
                if secret.len() < 32 {
                    return Err(invalid("hmac_secret must be at least 32 bytes".into()));
                }
                Some((
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                ))
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
                let key = match DecodingKey::from_rsa_pem(&pem) {
                    Ok(key) => (key, Algorithm::RS256),
                    Err(_) => DecodingKey::from_ec_pem(&pem)
                        .map(|key| (key, Algorithm::ES256))
                        .map_err(|e| {
                            invalid(format!(
                                "{} is neither an RSA nor an EC public key: {e}",
                                path.display()
                            ))
                        })?,
                };
                Some(key)
            }
            (None, None) => None,
        };
        let key = key.map(|(key, algorithm)| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = config.leeway.as_secs();
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "sub"]);
            (key, validation)
        });
        Ok(Self {
            anonymous: config.anonymous.unwrap_or(key.is_none()),
            key,
            cookie: config.cookie.clone(),
        })
    }

    /// Whether connections without a token are accepted.
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous
    }

    /// Authenticates an upgrade request: a token from `Authorization: Bearer`, the `token`
    /// query parameter or the cookie; else, if allowed, anonymous as `user` (or a generated
    /// name).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        query_user: Option<&str>,
    ) -> Result<Identity, AuthError> {
        match self.token_in(headers, query_token) {
            Some(token) => self.verify(&token),
            None if self.anonymous => {
                let user: Arc<str> = match query_user {
                    Some(user) => {
                        validate_user(user).map_err(|e| AuthError::BadUser(e.to_string()))?;
                        user.into()
                    }
                    None => format!("anon-{:08x}", fastrand::u32(..)).into(),
                };
                Ok(Identity {
                    user,
                    expires_at: None,
                    grants: Grants::All,
                })
            }
            None => Err(AuthError::Missing),
        }
    }

    /// Verifies a token (signature, `exp`, `sub`, `rooms`).
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let Some((key, validation)) = &self.key else {
            return Err(AuthError::Invalid(
                "this server is not configured to verify tokens".into(),
            ));
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("unexpected algorithm".into()),
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Invalid(format!("missing claim {claim}"))
                }
                _ => AuthError::Invalid(err.to_string()),
            })?
            .claims;
        validate_user(&claims.sub)
            .map_err(|e| AuthError::Invalid(format!("`sub` is not a usable user name: {e}")))?;
        let grants = Grants::from_claim(claims.rooms.as_ref()).map_err(AuthError::Invalid)?;
        Ok(Identity {
            user: claims.sub.into(),
            expires_at: Some(claims.exp),
            grants,
        })
    }

    fn token_in(&self, headers: &HeaderMap, query_token: Option<&str>) -> Option<String> {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let cookie = || {
            headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == self.cookie)
                .map(|(_, value)| value)
        };
        bearer
            .or(query_token)
            .or_else(cookie)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    }
}

/// Mints an HS256 token (for `switchboard token` and tests).
pub fn mint_hs256(
    secret: &[u8],
    sub: &str,
    rooms: Option<RoomsClaim>,
    ttl: Duration,
) -> Result<String, AuthError> {
    let claims = Claims {
        sub: sub.to_owned(),
        exp: unix_now().saturating_add(ttl.as_secs()),
        rooms,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth(anonymous: Option<bool>) -> Authenticator {
        Authenticator::from_config(&AuthConfig {
            hmac_secret: Some(SECRET.into()),
            anonymous,
            ..AuthConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn anonymous_is_the_default_only_without_a_key() {
        assert!(
            Authenticator::from_config(&AuthConfig::default())
                .unwrap()
                .allows_anonymous()
        );
        assert!(!auth(None).allows_anonymous());
        assert!(auth(Some(true)).allows_anonymous());
    }

    #[test]
    fn token_from_header_query_or_cookie() {
        let a = auth(None);
        let token = mint_hs256(SECRET.as_bytes(), "alice", None, Duration::from_secs(60)).unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            a.authenticate(&headers, None, Some("x")).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            &*a.authenticate(&headers, Some(&token), None).unwrap().user,
            "alice"
        );
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; switchboard_token={token}")).unwrap(),
        );
        assert_eq!(
            &*a.authenticate(&headers, None, None).unwrap().user,
            "alice"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let identity = a.authenticate(&headers, None, Some("mallory")).unwrap();
        assert_eq!(&*identity.user, "alice", "the token wins over ?user=");
        assert!(identity.expires_at.unwrap() > unix_now());
    }

    #[test]
    fn rejects_bad_tokens() {
        let a = auth(None);
        let other = mint_hs256(
            b"another secret, another secret!!",
            "alice",
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(matches!(a.verify(&other), Err(AuthError::Invalid(_))));
        assert!(matches!(a.verify("not.a.jwt"), Err(AuthError::Invalid(_))));
        let claims = Claims {
            sub: "alice".into(),
            exp: unix_now() - 3600,
            rooms: None,
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(a.verify(&expired).unwrap_err(), AuthError::Expired);
        let bad_sub = mint_hs256(SECRET.as_bytes(), "a\nb", None, Duration::from_secs(60)).unwrap();
        assert!(matches!(a.verify(&bad_sub), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn rooms_claim_becomes_grants() {
        let a = auth(None);
        let rooms = RoomsClaim(
            [("chat:*".to_owned(), vec!["join".to_owned()])]
                .into_iter()
                .collect(),
        );
        let token = mint_hs256(
            SECRET.as_bytes(),
            "bob",
            Some(rooms),
            Duration::from_secs(60),
        )
        .unwrap();
        let identity = a.verify(&token).unwrap();
        assert!(identity.grants.rights("chat:1").join);
        assert!(!identity.grants.rights("chat:1").publish);
        assert!(!identity.grants.rights("news").join);
    }
}
