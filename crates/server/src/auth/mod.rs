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
    /// An `Authorization` header with a scheme other than `Bearer`.
    #[error("unsupported authorization scheme: send Authorization: Bearer TOKEN")]
    BadScheme,
    /// The token is malformed, badly signed, or its claims are unusable.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The anonymous user name (`?user=`) is not acceptable.
    #[error("invalid user name: {0}")]
    BadUser(String),
}

/// The claims Switchboard writes when it mints a token (`switchboard token`, tests).
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

/// The claims Switchboard reads when it verifies a token; others are ignored. `rooms` is kept
/// as raw JSON so that a present-but-unusable value (`null`, a list, a string) is told apart
/// from an absent one: only an absent claim means "every right" (F4: Go serialises an empty
/// map as `null`, and that must not grant everything).
#[derive(Debug, Deserialize)]
struct ReadClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    rooms: Option<serde_json::Value>,
}

/// `Some(value)` for any present value, `null` included (plain `Option` maps `null` to `None`).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

/// Checks tokens with the configured key.
pub struct Authenticator {
    key: Option<(DecodingKey, Validation)>,
    anonymous: bool,
    cookie: String,
    /// Longest accepted `exp - now`, in seconds.
    max_lifetime: u64,
    /// Prepended to every anonymous name when tokens are verified too (F9); empty without a
    /// key (no token names to collide with).
    anonymous_prefix: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("verifies_tokens", &self.key.is_some())
            .field("anonymous", &self.anonymous)
            .field("cookie", &self.cookie)
            .field("max_lifetime", &self.max_lifetime)
            .field("anonymous_prefix", &self.anonymous_prefix)
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
        let anonymous = config.anonymous.unwrap_or(key.is_none());
        // Beside a key, anonymous names live in their own namespace so that a guest cannot
        // act as a token's user (F9). Without a key there are no token users.
        let anonymous_prefix = if anonymous && key.is_some() {
            if config.anonymous_prefix.is_empty() {
                return Err(invalid(
                    "anonymous_prefix must not be empty when anonymous access is on beside a key \
                     (guests could otherwise take the names of token users)"
                        .into(),
                ));
            }
            validate_user(&config.anonymous_prefix)
                .map_err(|e| invalid(format!("anonymous_prefix {e}")))?;
            config.anonymous_prefix.clone()
        } else {
            String::new()
        };
        if config.max_token_lifetime.is_zero() {
            return Err(invalid("max_token_lifetime must be above zero".into()));
        }
        Ok(Self {
            anonymous,
            key,
            cookie: config.cookie.clone(),
            max_lifetime: config.max_token_lifetime.as_secs().max(1),
            anonymous_prefix,
        })
    }

    /// Whether connections without a token are accepted.
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous
    }

    /// Whether tokens are verified (a secret or public key is configured).
    pub fn verifies_tokens(&self) -> bool {
        self.key.is_some()
    }

    /// The prefix of anonymous names: non-empty only when anonymous access is on beside a key.
    pub fn anonymous_prefix(&self) -> &str {
        &self.anonymous_prefix
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
        match self.token_in(headers, query_token)? {
            Some(token) => self.verify(token),
            None if self.anonymous => {
                let user: Arc<str> = match query_user {
                    Some(user) => {
                        validate_user(user).map_err(|e| AuthError::BadUser(e.to_string()))?;
                        let name = format!("{}{user}", self.anonymous_prefix);
                        validate_user(&name).map_err(|e| {
                            AuthError::BadUser(format!(
                                "with the anonymous prefix {:?} the name {e}",
                                self.anonymous_prefix
                            ))
                        })?;
                        name.into()
                    }
                    None => {
                        let prefix = if self.anonymous_prefix.is_empty() {
                            "anon-"
                        } else {
                            &self.anonymous_prefix
                        };
                        format!("{prefix}{:08x}", fastrand::u32(..)).into()
                    }
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

    /// Verifies a token (header, signature, `exp`, `sub`, `rooms`). Every refusal says in
    /// words what is wrong, never the parser's internals.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let invalid = |why: &str| AuthError::Invalid(why.to_owned());
        let Some((key, validation)) = &self.key else {
            return Err(invalid("this server is not configured to verify tokens"));
        };
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed"))?;
        // RFC 7515 4.1.11: a recipient that does not understand every extension listed in
        // `crit` must reject the token. This server understands none.
        if header.crit.is_some() {
            return Err(invalid("unsupported critical header extension (crit)"));
        }
        let claims = jsonwebtoken::decode::<ReadClaims>(token, key, validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => invalid("bad signature"),
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    invalid("wrong algorithm")
                }
                ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                    "exp" => invalid("missing claim exp"),
                    "sub" => invalid("missing claim sub"),
                    _ => invalid("missing a required claim"),
                },
                ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => invalid(
                    "malformed claims (sub must be a string, exp a whole number of seconds)",
                ),
                _ => invalid("malformed"),
            })?
            .claims;
        let Some(exp) = claims.exp else {
            return Err(invalid("missing claim exp"));
        };
        let Some(sub) = claims.sub else {
            return Err(invalid("missing claim sub"));
        };
        let now = unix_now();
        if exp > now.saturating_add(self.max_lifetime) {
            return Err(AuthError::Invalid(format!(
                "exp is more than {} away (this server's limit on token lifetime)",
                humantime_serde::re::humantime::format_duration(Duration::from_secs(
                    self.max_lifetime
                ))
            )));
        }
        validate_user(&sub)
            .map_err(|e| AuthError::Invalid(format!("sub is not a usable user name: it {e}")))?;
        if !self.anonymous_prefix.is_empty() && sub.starts_with(&self.anonymous_prefix) {
            return Err(AuthError::Invalid(format!(
                "sub starts with {:?}, the prefix reserved for anonymous users",
                self.anonymous_prefix
            )));
        }
        let grants = Grants::from_json(claims.rooms.as_ref()).map_err(AuthError::Invalid)?;
        Ok(Identity {
            user: sub.into(),
            expires_at: Some(exp),
            grants,
        })
    }

    /// The token this request carries, from the first place that has one: `Authorization`,
    /// the `token` query parameter, the cookie. An `Authorization` header that is not a usable
    /// `Bearer` (another scheme, no token, not text) is refused rather than skipped: falling
    /// through to a weaker source would make the header's meaning depend on what else is sent.
    fn token_in<'a>(
        &self,
        headers: &'a HeaderMap,
        query_token: Option<&'a str>,
    ) -> Result<Option<&'a str>, AuthError> {
        if let Some(value) = headers.get(AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| AuthError::Invalid("malformed Authorization header".into()))?;
            let (scheme, credentials) = value.trim().split_once([' ', '\t']).unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::BadScheme);
            }
            let token = credentials.trim();
            if token.is_empty() {
                return Err(AuthError::Invalid(
                    "malformed Authorization header: no token after Bearer".into(),
                ));
            }
            return Ok(Some(token));
        }
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
        Ok(query_token.or_else(cookie).filter(|t| !t.is_empty()))
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

    fn sign(claims: &serde_json::Value, header: &Header) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn f4_rooms_null_is_refused() {
        let a = auth(None);
        let exp = unix_now() + 60;
        let header = Header::new(Algorithm::HS256);
        for rooms in [
            serde_json::json!(null),
            serde_json::json!([]),
            serde_json::json!("*"),
        ] {
            let token = sign(
                &serde_json::json!({"sub": "alice", "exp": exp, "rooms": rooms}),
                &header,
            );
            let err = a.verify(&token).unwrap_err();
            assert_eq!(
                err.to_string(),
                "invalid token: rooms must be a map of room pattern to a list of rights (or left out)",
                "{rooms}"
            );
        }
        // Absent: every right; an empty map: none.
        let token = sign(&serde_json::json!({"sub": "alice", "exp": exp}), &header);
        assert_eq!(a.verify(&token).unwrap().grants, Grants::All);
        let token = sign(
            &serde_json::json!({"sub": "alice", "exp": exp, "rooms": {}}),
            &header,
        );
        assert!(!a.verify(&token).unwrap().grants.rights("any").join);
    }

    #[test]
    fn f15_crit_with_unknown_extensions_is_refused() {
        let a = auth(None);
        let claims = serde_json::json!({"sub": "alice", "exp": unix_now() + 60});
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp-v2".to_owned()]);
        assert_eq!(
            a.verify(&sign(&claims, &header)).unwrap_err().to_string(),
            "invalid token: unsupported critical header extension (crit)"
        );
        header.crit = Some(Vec::new());
        assert!(a.verify(&sign(&claims, &header)).is_err());
        assert!(
            a.verify(&sign(&claims, &Header::new(Algorithm::HS256)))
                .is_ok()
        );
    }

    #[test]
    fn f15_exp_is_bounded_by_the_max_lifetime() {
        let a = auth(None);
        let header = Header::new(Algorithm::HS256);
        for exp in [u64::MAX, unix_now() + 31 * 24 * 3600] {
            let token = sign(&serde_json::json!({"sub": "alice", "exp": exp}), &header);
            assert_eq!(
                a.verify(&token).unwrap_err().to_string(),
                "invalid token: exp is more than 30days away (this server's limit on token lifetime)",
                "{exp}"
            );
        }
        let token = sign(
            &serde_json::json!({"sub": "alice", "exp": unix_now() + 29 * 24 * 3600}),
            &header,
        );
        assert!(a.verify(&token).is_ok());
    }

    #[test]
    fn f15_auth_schemes_are_case_insensitive_and_unknown_ones_refused() {
        let a = auth(None);
        let token = mint_hs256(SECRET.as_bytes(), "alice", None, Duration::from_secs(60)).unwrap();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let headers = bearer(&format!("{scheme} {token}"));
            assert_eq!(
                &*a.authenticate(&headers, None, None).unwrap().user,
                "alice"
            );
        }
        let headers = bearer(&format!("Bearer   {token}  "));
        assert_eq!(
            &*a.authenticate(&headers, None, None).unwrap().user,
            "alice"
        );
        // Another scheme is refused, not skipped in favour of the query token or the cookie.
        for value in [
            "Basic YWxpY2U6cHc=",
            "Token abc",
            "Bearer",
            "Bearer  ",
            token.as_str(),
        ] {
            let mut headers = bearer(value);
            headers.insert(
                COOKIE,
                HeaderValue::from_str(&format!("switchboard_token={token}")).unwrap(),
            );
            let err = a.authenticate(&headers, Some(&token), None).unwrap_err();
            assert!(
                matches!(err, AuthError::BadScheme | AuthError::Invalid(_)),
                "{value}: {err:?}"
            );
        }
        assert_eq!(
            a.authenticate(&bearer("Basic YWxpY2U6cHc="), None, None)
                .unwrap_err()
                .to_string(),
            "unsupported authorization scheme: send Authorization: Bearer TOKEN"
        );
    }

    #[test]
    fn f15_refusals_say_what_is_wrong_without_parser_internals() {
        let a = auth(None);
        let exp = unix_now() + 60;
        let header = Header::new(Algorithm::HS256);
        let cases = [
            ("not.a.jwt".to_owned(), "invalid token: malformed"),
            ("garbage".to_owned(), "invalid token: malformed"),
            (
                sign(&serde_json::json!({"sub": 7, "exp": exp}), &header),
                "invalid token: malformed claims (sub must be a string, exp a whole number of seconds)",
            ),
            (
                sign(&serde_json::json!({"sub": "a", "exp": "soon"}), &header),
                "invalid token: malformed claims (sub must be a string, exp a whole number of seconds)",
            ),
            (
                sign(&serde_json::json!({"exp": exp}), &header),
                "invalid token: missing claim sub",
            ),
            (
                sign(&serde_json::json!({"sub": "a"}), &header),
                "invalid token: missing claim exp",
            ),
            (
                jsonwebtoken::encode(
                    &Header::new(Algorithm::HS384),
                    &serde_json::json!({"sub": "a", "exp": exp}),
                    &EncodingKey::from_secret(SECRET.as_bytes()),
                )
                .unwrap(),
                "invalid token: wrong algorithm",
            ),
        ];
        for (token, expected) in cases {
            let text = a.verify(&token).unwrap_err().to_string();
            assert_eq!(text, expected, "{token}");
            for internal in ["Error", "Kind", "Json", "Base64", "line", "column", "("] {
                if expected.contains(internal) {
                    continue;
                }
                assert!(!text.contains(internal), "{text}");
            }
        }
    }

    fn anonymous_beside_a_key(prefix: &str) -> Result<Authenticator, ConfigError> {
        Authenticator::from_config(&AuthConfig {
            hmac_secret: Some(SECRET.into()),
            anonymous: Some(true),
            anonymous_prefix: prefix.into(),
            ..AuthConfig::default()
        })
    }

    #[test]
    fn f9_anonymous_names_beside_a_key_carry_the_prefix() {
        let a = anonymous_beside_a_key("guest-").unwrap();
        let headers = HeaderMap::new();
        let user = a.authenticate(&headers, None, Some("alice")).unwrap().user;
        assert_eq!(&*user, "guest-alice");
        let generated = a.authenticate(&headers, None, None).unwrap().user;
        assert!(
            generated.starts_with("guest-") && generated.len() == 14,
            "{generated}"
        );
        // A token user keeps its name; a token may not use the guests' namespace.
        let alice = mint_hs256(SECRET.as_bytes(), "alice", None, Duration::from_secs(60)).unwrap();
        assert_eq!(&*a.verify(&alice).unwrap().user, "alice");
        let guest = mint_hs256(
            SECRET.as_bytes(),
            "guest-bob",
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(matches!(a.verify(&guest), Err(AuthError::Invalid(_))));
        // The prefixed name must still fit the user-name rules.
        let long = "x".repeat(60);
        assert!(matches!(
            a.authenticate(&headers, None, Some(&long)),
            Err(AuthError::BadUser(_))
        ));
        // An empty prefix beside a key would let guests take token names: refused at start.
        assert!(anonymous_beside_a_key("").is_err());
        assert!(anonymous_beside_a_key("bad\n").is_err());
        // Without a key there are no token users: names are taken as given.
        let dev = Authenticator::from_config(&AuthConfig::default()).unwrap();
        assert_eq!(
            &*dev
                .authenticate(&headers, None, Some("alice"))
                .unwrap()
                .user,
            "alice"
        );
        assert!(
            dev.authenticate(&headers, None, None)
                .unwrap()
                .user
                .starts_with("anon-")
        );
    }
}
