//! Authentication: who is calling. Every RPC is authenticated; the result is a [`Principal`]
//! whose groups and attributes the access policies use.
//!
//! - A password login (Flight handshake with `authorization: Basic …`) is checked against the
//!   argon2 hash of a configured user and returns a signed, expiring session token.
//! - Later calls send `authorization: Bearer <token>`: a session token (`mqt_…`), a service
//!   token (`mqs_…`, long-lived, stored as a SHA-256 hash), or a JWT from the identity
//!   provider (checked against a local JWKS file).
//! - No credentials: refused, unless anonymous access is enabled.
//!
//! Every failure reaches the client as the same UNAUTHENTICATED "authentication failed"; the
//! reason is logged on the server only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use meshql::Principal;
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, JwtConfig, ServiceTokenConfig, UserConfig};
use crate::proto::SessionToken;
use crate::signing::{Kind, Signer};
use crate::FlightError;

/// How long a verified password login is remembered (repeat logins skip argon2).
const VERIFIED_FOR: Duration = Duration::from_secs(300);
/// The most remembered logins (then expired ones are dropped, or all).
const VERIFIED_MAX: usize = 10_000;

const SESSION_PREFIX: &str = "mqt_";
const SERVICE_PREFIX: &str = "mqs_";

/// Why a caller was not authenticated. Logged, never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no credentials")]
    NoCredentials,
    #[error("malformed authorization header")]
    Malformed,
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password")]
    WrongPassword,
    #[error("user disabled")]
    Disabled,
    #[error("token not issued by this server or altered")]
    Forged,
    #[error("token expired")]
    Expired,
    #[error("token revoked")]
    Revoked,
    #[error("unknown service token")]
    UnknownServiceToken,
    #[error("JWT rejected: {0}")]
    Jwt(String),
}

/// Checks credentials and issues session tokens.
#[derive(Debug)]
pub struct Authenticator {
    signer: Signer,
    token_ttl: Duration,
    users: HashMap<String, UserConfig>,
    /// Password logins verified recently, by a keyed hash of (user, its hash, password): a
    /// client that opens a connection per step (Superset) pays argon2 once, not every time.
    verified: std::sync::Mutex<HashMap<[u8; 32], std::time::Instant>>,
    /// The key of `verified` (random per process: nothing of it is stored or sent).
    verified_key: [u8; 32],
    /// How many argon2 verifications ran (tests and metrics).
    verifications: std::sync::atomic::AtomicU64,
    /// SHA-256 of the token → its configuration.
    service_tokens: HashMap<[u8; 32], ServiceTokenConfig>,
    jwt: Option<JwtVerifier>,
    anonymous: Option<Principal>,
}

impl Authenticator {
    /// Validates the configuration: every hash must parse, the JWKS must load.
    pub fn new(config: &AuthConfig, signer: Signer) -> Result<Authenticator, FlightError> {
        let mut users = HashMap::new();
        for u in &config.users {
            PasswordHash::new(&u.password_hash).map_err(|e| {
                FlightError::Config(format!(
                    "user {}: passwordHash is not an argon2 PHC string: {e}",
                    u.name
                ))
            })?;
            if users.insert(u.name.clone(), u.clone()).is_some() {
                return Err(FlightError::Config(format!("user {} is configured twice", u.name)));
            }
        }
        let mut service_tokens = HashMap::new();
        for t in &config.service_tokens {
            let hash = t
                .token_hash
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| {
                    FlightError::Config(format!(
                        "service token {}: tokenHash must be sha256:<64 hex digits> (meshql auth new-service-token)",
                        t.name
                    ))
                })?;
            service_tokens.insert(hash, t.clone());
        }
        let jwt = config.jwt.as_ref().map(JwtVerifier::new).transpose()?;
        let anonymous = config.anonymous.enabled.then(|| {
            Principal::new(config.anonymous.name.clone().unwrap_or_else(|| "anonymous".into()))
                .with_groups(config.anonymous.groups.iter().cloned())
        });
        Ok(Authenticator {
            signer,
            token_ttl: config.token_ttl,
            users,
            verified: std::sync::Mutex::new(HashMap::new()),
            verified_key: rand::random(),
            verifications: std::sync::atomic::AtomicU64::new(0),
            service_tokens,
            jwt,
            anonymous,
        })
    }

    /// How many argon2 password verifications have run.
    pub fn password_verifications(&self) -> u64 {
        self.verifications.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// HMAC-SHA256 under a per-process key of the user, its configured hash and the password:
    /// a changed password hash (a changed configuration) never matches an older entry.
    fn verified_key(&self, user: &UserConfig, password: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.verified_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for part in [user.name.as_bytes(), user.password_hash.as_bytes(), password.as_bytes()] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    fn recently_verified(&self, key: &[u8; 32]) -> bool {
        let Ok(verified) = self.verified.lock() else {
            return false;
        };
        verified.get(key).is_some_and(|at| at.elapsed() < VERIFIED_FOR)
    }

    fn remember_verified(&self, key: [u8; 32]) {
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_MAX {
                verified.retain(|_, at| at.elapsed() < VERIFIED_FOR);
                if verified.len() >= VERIFIED_MAX {
                    verified.clear();
                }
            }
            verified.insert(key, std::time::Instant::now());
        }
    }

    /// The key that also signs handles and tickets.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Checks an `authorization: Basic …` header and returns the principal and a new session
    /// token. Unknown users cost the same argon2 work as known ones.
    pub fn login_basic(&self, authorization: &str) -> Result<(Principal, String), AuthFailure> {
        let encoded = strip_scheme(authorization, "basic").ok_or(AuthFailure::Malformed)?;
        // Padding optional: some clients (the Go Flight client) send unpadded base64.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let decoded = lenient.decode(encoded.trim()).map_err(|_| AuthFailure::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthFailure::Malformed)?;
        let (name, password) = decoded.split_once(':').ok_or(AuthFailure::Malformed)?;
        self.login(name, password)
    }

    /// Checks a user's password and returns the principal and a new session token.
    pub fn login(&self, name: &str, password: &str) -> Result<(Principal, String), AuthFailure> {
        let Some(user) = self.users.get(name) else {
            // Same work as a real check, so timing does not tell which users exist.
            self.verifications.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = Argon2::default().verify_password(password.as_bytes(), &dummy_hash());
            return Err(AuthFailure::UnknownUser);
        };
        let key = self.verified_key(user, password);
        if !self.recently_verified(&key) {
            let hash = PasswordHash::new(&user.password_hash).map_err(|_| AuthFailure::WrongPassword)?;
            self.verifications.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .map_err(|_| AuthFailure::WrongPassword)?;
            self.remember_verified(key);
        }
        if user.disabled {
            return Err(AuthFailure::Disabled);
        }
        let now = unix_now();
        let token = SessionToken {
            user: user.name.clone(),
            issued_at: now,
            expires_at: now.saturating_add(self.token_ttl.as_secs() as i64),
            nonce: rand::random::<[u8; 12]>().to_vec(),
        };
        let sealed = self.signer.seal(Kind::SessionToken, &token);
        Ok((
            user_principal(user),
            format!("{SESSION_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed)),
        ))
    }

    /// Authenticates a call from its `authorization` header (absent: anonymous, if enabled).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthFailure> {
        let Some(header) = authorization else {
            return self.anonymous.clone().ok_or(AuthFailure::NoCredentials);
        };
        let token = strip_scheme(header, "bearer").ok_or(AuthFailure::Malformed)?.trim();
        if let Some(rest) = token.strip_prefix(SESSION_PREFIX) {
            self.session_token(rest)
        } else if token.starts_with(SERVICE_PREFIX) {
            self.service_token(token)
        } else if let Some(jwt) = &self.jwt {
            jwt.verify(token)
        } else {
            Err(AuthFailure::Malformed)
        }
    }

    fn session_token(&self, encoded: &str) -> Result<Principal, AuthFailure> {
        let sealed = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| AuthFailure::Forged)?;
        let token: SessionToken = self
            .signer
            .open(Kind::SessionToken, &sealed)
            .map_err(|_| AuthFailure::Forged)?;
        if token.expires_at <= unix_now() {
            return Err(AuthFailure::Expired);
        }
        // The user as configured now: removed, disabled or revoked users lose their tokens.
        let user = self.users.get(&token.user).ok_or(AuthFailure::Revoked)?;
        if user.disabled || user.tokens_valid_after.is_some_and(|t| token.issued_at < t) {
            return Err(AuthFailure::Revoked);
        }
        Ok(user_principal(user))
    }

    fn service_token(&self, token: &str) -> Result<Principal, AuthFailure> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let t = self.service_tokens.get(&hash).ok_or(AuthFailure::UnknownServiceToken)?;
        if t.revoked {
            return Err(AuthFailure::Revoked);
        }
        let mut p = Principal::new(&t.name).with_groups(t.groups.iter().cloned());
        for (k, v) in &t.attributes {
            p = p.with_attribute(k, v);
        }
        Ok(p)
    }
}

fn user_principal(user: &UserConfig) -> Principal {
    let mut p = Principal::new(&user.name).with_groups(user.groups.iter().cloned());
    for (k, v) in &user.attributes {
        p = p.with_attribute(k, v);
    }
    p
}

/// Whether an `authorization` header carries HTTP Basic credentials (a password login).
pub fn is_basic(header: &str) -> bool {
    strip_scheme(header, "basic").is_some()
}

/// `scheme rest` with a case-insensitive scheme.
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.trim_start().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// A real argon2 hash of nothing anyone knows, for timing-equal refusals of unknown users.
fn dummy_hash() -> PasswordHash<'static> {
    const FALLBACK: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let s = DUMMY.get_or_init(|| hash_password("not a password").unwrap_or_else(|_| FALLBACK.to_string()));
    PasswordHash::new(s).unwrap_or_else(|_| unreachable!("argon2 PHC strings parse"))
}

/// An argon2id hash (PHC string) of `password`, for the `passwordHash` of a user.
pub fn hash_password(password: &str) -> Result<String, FlightError> {
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| FlightError::Config(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| FlightError::Config(format!("hashing failed: {e}")))
}

/// A new service token and the `tokenHash` to configure for it.
pub fn new_service_token() -> (String, String) {
    let token = format!("{SERVICE_PREFIX}{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    let hash = format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())));
    (token, hash)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Verifies JWTs from one issuer.
#[derive(Debug)]
struct JwtVerifier {
    config: JwtConfig,
    keys: JwkSet,
}

impl JwtVerifier {
    fn new(config: &JwtConfig) -> Result<JwtVerifier, FlightError> {
        let text = std::fs::read_to_string(&config.jwks_file)
            .map_err(|e| FlightError::Config(format!("cannot read JWKS {}: {e}", config.jwks_file.display())))?;
        let keys: JwkSet = serde_json::from_str(&text)
            .map_err(|e| FlightError::Config(format!("{}: not a JWKS: {e}", config.jwks_file.display())))?;
        if keys.keys.is_empty() {
            return Err(FlightError::Config(format!("{}: no keys", config.jwks_file.display())));
        }
        Ok(JwtVerifier {
            config: config.clone(),
            keys,
        })
    }

    fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        let fail = |e: &dyn std::fmt::Display| AuthFailure::Jwt(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|e| fail(&e))?;
        let jwk = match &header.kid {
            Some(kid) => self.keys.find(kid),
            None if self.keys.keys.len() == 1 => self.keys.keys.first(),
            None => None,
        }
        .ok_or_else(|| fail(&"no key in the JWKS matches the token's kid"))?;
        // The key decides the algorithm; a token cannot pick a weaker one (or "none").
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse().ok())
            .unwrap_or(header.alg);
        if header.alg != alg {
            return Err(fail(&"algorithm does not match the key"));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| fail(&e))?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.config.leeway.as_secs();
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| fail(&e))?;
        let claims = data.claims;
        let id = claim_string(&claims, &self.config.principal_claim)
            .ok_or_else(|| fail(&format!("claim {} missing", self.config.principal_claim)))?;
        let mut p = Principal::new(id);
        match claims.get(&self.config.groups_claim) {
            Some(serde_json::Value::Array(items)) => {
                p = p.with_groups(items.iter().filter_map(|g| g.as_str().map(str::to_string)));
            }
            Some(serde_json::Value::String(g)) => p = p.with_group(g.clone()),
            _ => {}
        }
        for (attr, claim) in &self.config.attribute_claims {
            if let Some(v) = claim_string(&claims, claim) {
                p = p.with_attribute(attr, v);
            }
        }
        Ok(p)
    }
}

fn claim_string(claims: &serde_json::Value, name: &str) -> Option<String> {
    match claims.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn authenticator(extra: &str) -> Authenticator {
        let hash = hash_password("s3cret").unwrap();
        let yaml = format!(
            "users:\n  - {{name: alice, passwordHash: '{hash}', groups: [analysts], attributes: {{region: EU}}}}\n  - {{name: bob, passwordHash: '{hash}', disabled: true}}\n{extra}"
        );
        let config: AuthConfig = serde_yaml::from_str(&yaml).unwrap();
        Authenticator::new(&config, Signer::random()).unwrap()
    }

    #[test]
    fn password_login_issues_a_token_that_authenticates() {
        let a = authenticator("");
        let basic = format!("Basic {}", STANDARD.encode("alice:s3cret"));
        let (p, token) = a.login_basic(&basic).unwrap();
        // Unpadded base64 (as the Go client sends it) is accepted too.
        let unpadded = format!("Basic {}", STANDARD.encode("alice:s3cret").trim_end_matches('='));
        assert_eq!(a.login_basic(&unpadded).unwrap().0, p);
        assert_eq!(p.id(), "alice");
        let again = a.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(again, p);
        assert!(again.in_group("analysts") && again.attribute("region") == Some("EU"));
    }

    #[test]
    fn repeat_logins_skip_argon2_but_wrong_passwords_never_do() {
        let a = authenticator("");
        a.login("alice", "s3cret").unwrap();
        assert_eq!(a.password_verifications(), 1);
        for _ in 0..3 {
            a.login("alice", "s3cret").unwrap();
        }
        assert_eq!(a.password_verifications(), 1, "remembered");
        for _ in 0..3 {
            assert_eq!(a.login("alice", "wrong").unwrap_err(), AuthFailure::WrongPassword);
        }
        assert_eq!(a.password_verifications(), 4, "every wrong password is checked");
        // A disabled user stays disabled, remembered or not.
        assert_eq!(a.login("bob", "s3cret").unwrap_err(), AuthFailure::Disabled);
        assert_eq!(a.login("bob", "s3cret").unwrap_err(), AuthFailure::Disabled);
    }

    #[tokio::test]
    async fn the_login_gate_bounds_work_and_refuses_repeated_failures() {
        let gate = LoginGate::new(1, Duration::from_millis(50), 3, Duration::from_secs(60));
        let attacker = Some(std::net::IpAddr::from([10, 0, 0, 1]));
        let other = Some(std::net::IpAddr::from([10, 0, 0, 2]));
        // One verification at a time: a second waits, then is told to retry.
        let turn = gate.enter(attacker).await.expect("a turn");
        assert_eq!(gate.enter(other).await.unwrap_err(), GateRefusal::Busy);
        drop(turn);
        for _ in 0..3 {
            let _turn = gate.enter(attacker).await.expect("a turn");
            gate.record(attacker, false);
        }
        assert_eq!(gate.enter(attacker).await.unwrap_err(), GateRefusal::TooManyFailures);
        // Other addresses are not affected; a success clears an address's failures.
        assert!(gate.enter(other).await.is_ok());
        gate.record(attacker, true);
        assert!(gate.enter(attacker).await.is_ok());
    }

    #[test]
    fn failures() {
        let a = authenticator("");
        assert_eq!(a.login("alice", "wrong").unwrap_err(), AuthFailure::WrongPassword);
        assert_eq!(a.login("mallory", "s3cret").unwrap_err(), AuthFailure::UnknownUser);
        assert_eq!(a.login("bob", "s3cret").unwrap_err(), AuthFailure::Disabled);
        assert_eq!(a.authenticate(None).unwrap_err(), AuthFailure::NoCredentials);
        assert_eq!(
            a.authenticate(Some("Bearer mqt_AAAA")).unwrap_err(),
            AuthFailure::Forged
        );
        assert_eq!(
            a.authenticate(Some("Bearer whatever")).unwrap_err(),
            AuthFailure::Malformed
        );
        // A token from another server (another key) is forged here.
        let (_, other) = authenticator("").login("alice", "s3cret").unwrap();
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {other}"))).unwrap_err(),
            AuthFailure::Forged
        );
        // Expired: sealed by the right key with a past expiry.
        let old = SessionToken {
            user: "alice".into(),
            issued_at: 1,
            expires_at: 2,
            nonce: vec![],
        };
        let sealed = URL_SAFE_NO_PAD.encode(a.signer.seal(Kind::SessionToken, &old));
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {SESSION_PREFIX}{sealed}")))
                .unwrap_err(),
            AuthFailure::Expired
        );
    }

    #[test]
    fn service_tokens_and_anonymous() {
        let (token, hash) = new_service_token();
        let (revoked, revoked_hash) = new_service_token();
        let a = authenticator(&format!(
            "serviceTokens:\n  - {{name: dash, tokenHash: '{hash}', groups: [bi]}}\n  - {{name: old, tokenHash: '{revoked_hash}', revoked: true}}\nanonymous: {{enabled: true, groups: [public]}}\n"
        ));
        let p = a.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(p.id(), "dash");
        assert!(p.in_group("bi"));
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {revoked}"))).unwrap_err(),
            AuthFailure::Revoked
        );
        let (unknown, _) = new_service_token();
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {unknown}"))).unwrap_err(),
            AuthFailure::UnknownServiceToken
        );
        let anon = a.authenticate(None).unwrap();
        assert_eq!(anon.id(), "anonymous");
        assert!(anon.in_group("public"));
    }
}

/// Bounds what password logins cost the server, whoever sends them: at most `permits` argon2
/// verifications run at once (each takes ~19 MiB and a core for a fraction of a second; 200 at
/// once grew the server by 3.5 GB), a login waits at most `wait` for its turn, and a source
/// address with `max_failures` failed logins within `window` is refused without any work
/// until the window has passed.
#[derive(Debug)]
pub struct LoginGate {
    permits: Arc<tokio::sync::Semaphore>,
    wait: Duration,
    window: Duration,
    max_failures: u32,
    failures: std::sync::Mutex<HashMap<std::net::IpAddr, (std::time::Instant, u32)>>,
}

/// Why the gate did not let a login through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    #[error("too many failed logins from this address; wait and retry")]
    TooManyFailures,
    #[error("too many logins are being checked at once; retry in a moment")]
    Busy,
}

impl LoginGate {
    pub fn new(permits: usize, wait: Duration, max_failures: u32, window: Duration) -> Self {
        LoginGate {
            permits: Arc::new(tokio::sync::Semaphore::new(permits.max(1))),
            wait,
            window,
            max_failures,
            failures: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A turn to verify a password from `source`, or why not.
    pub async fn enter(
        &self,
        source: Option<std::net::IpAddr>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, GateRefusal> {
        if let Some(ip) = source {
            if self.blocked(ip) {
                return Err(GateRefusal::TooManyFailures);
            }
        }
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(GateRefusal::Busy),
        }
    }

    fn blocked(&self, ip: std::net::IpAddr) -> bool {
        let Ok(failures) = self.failures.lock() else {
            return false;
        };
        failures
            .get(&ip)
            .is_some_and(|(since, n)| since.elapsed() < self.window && *n >= self.max_failures)
    }

    /// Records the outcome of a login from `source`.
    pub fn record(&self, source: Option<std::net::IpAddr>, succeeded: bool) {
        let Some(ip) = source else {
            return;
        };
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if succeeded {
            failures.remove(&ip);
            return;
        }
        // Bounded: old windows go first, and a flood from very many addresses cannot grow it
        // without end.
        if failures.len() >= 100_000 {
            let window = self.window;
            failures.retain(|_, (since, _)| since.elapsed() < window);
        }
        let entry = failures.entry(ip).or_insert((std::time::Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (std::time::Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}
