//! Local access-token verification for the APIs, and the `AuthUser` extractor.
//!
//! Tokens are verified against auth's published public keys (JWKS), fetched
//! at start and re-fetched when a token names an unknown `kid` (key rotation);
//! no request ever calls auth. Only EdDSA is accepted: `none`, HS256 (for
//! instance signed with the public key as secret) and any other algorithm fail.
//!
//! Beyond the signature, a token must name the configured issuer and
//! audience and must not be expired, not yet valid (`nbf`), issued in the
//! future (`iat` later than now), or live longer than the access-token
//! lifetime (`exp - iat`, [`TokenVerifier::with_max_lifetime`], default 15
//! minutes); each with [`LEEWAY_SECONDS`] of clock skew allowed. A header with
//! `crit` is refused: this verifier understands no JWS extension.
//!
//! Verified tokens are remembered (keyed by their SHA-256) until they expire,
//! at most [`VERIFIED_TOKENS_CACHED`]: a full memory first forgets expired
//! tokens, then everything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use events::Role;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use service::Problem;
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::accounts::{AccountDirectory, Standing};
use crate::jwks::Jwks;

/// The access token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub email: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// The authenticated caller, extracted from `Authorization: Bearer <jwt>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("cannot fetch JWKS from {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("JWKS key {kid} is unusable: {reason}")]
    BadKey { kid: String, reason: String },
}

enum KeySource {
    Static,
    Jwks {
        url: String,
        client: reqwest::Client,
    },
}

struct Inner {
    source: KeySource,
    issuer: String,
    audience: String,
    leeway: u64,
    /// Longest `exp - iat` accepted, in seconds.
    max_lifetime: AtomicI64,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_refresh: RwLock<Option<Instant>>,
    /// Tokens that passed every check, keyed by the token's SHA-256, so a
    /// client's repeated requests pay for the signature check once. `exp`
    /// is checked again on every hit; a key change empties it.
    verified: Mutex<HashMap<[u8; 32], Claims>>,
    /// Account standing beyond the claims (deactivation, current role),
    /// once [`TokenVerifier::with_accounts`] attached it.
    accounts: std::sync::OnceLock<Arc<AccountDirectory>>,
}

/// Verifies access tokens; cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier(Arc<Inner>);

/// Re-fetches on unknown `kid` at most this often, so forged kids cannot
/// turn the APIs into a JWKS request amplifier.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Verified tokens remembered at most; when full, expired ones are
/// forgotten, and if that frees nothing the memory is emptied (simple,
/// bounded, and one signature check per token is all it costs).
pub const VERIFIED_TOKENS_CACHED: usize = 10_000;

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// The longest token lifetime (`exp - iat`) accepted unless configured
/// otherwise: auth's access-token lifetime.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Longer bearer values are refused before any parsing; auth's tokens are
/// well under 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

fn decoding_keys(jwks: &Jwks) -> Result<HashMap<String, DecodingKey>, VerifierError> {
    let mut keys = HashMap::new();
    for jwk in &jwks.keys {
        if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
            continue;
        }
        let key = DecodingKey::from_ed_components(&jwk.x).map_err(|e| VerifierError::BadKey {
            kid: jwk.kid.clone(),
            reason: e.to_string(),
        })?;
        keys.insert(jwk.kid.clone(), key);
    }
    Ok(keys)
}

impl TokenVerifier {
    /// Trusts exactly these keys (tests, or a deployment with a public key file).
    pub fn from_jwks(jwks: &Jwks, issuer: &str, audience: &str) -> Result<Self, VerifierError> {
        Ok(Self::build(
            KeySource::Static,
            decoding_keys(jwks)?,
            issuer,
            audience,
        ))
    }

    /// Fetches the keys from auth's JWKS endpoint now, and again on unknown `kid`.
    pub async fn from_jwks_url(
        url: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, VerifierError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| VerifierError::Fetch {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let keys = fetch(&client, url).await?;
        let v = Self::build(
            KeySource::Jwks {
                url: url.to_owned(),
                client,
            },
            keys,
            issuer,
            audience,
        );
        *v.0.last_refresh.write().await = Some(Instant::now());
        Ok(v)
    }

    fn build(
        source: KeySource,
        keys: HashMap<String, DecodingKey>,
        issuer: &str,
        audience: &str,
    ) -> Self {
        TokenVerifier(Arc::new(Inner {
            source,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway: LEEWAY_SECONDS,
            max_lifetime: AtomicI64::new(DEFAULT_MAX_LIFETIME.as_secs() as i64),
            keys: RwLock::new(keys),
            last_refresh: RwLock::new(None),
            verified: Mutex::new(HashMap::new()),
            accounts: std::sync::OnceLock::new(),
        }))
    }

    /// Checks every caller against `accounts` too: a deactivated account's
    /// tokens are refused (401) and an account's current role replaces the
    /// one in its token, as soon as the directory has seen the change.
    pub fn with_accounts(self, accounts: Arc<AccountDirectory>) -> Self {
        let _ = self.0.accounts.set(accounts);
        self
    }

    /// The caller a verified token names, as the account stands now.
    fn caller(&self, claims: Claims) -> Result<AuthUser, Problem> {
        let role = match self.0.accounts.get().map(|a| a.standing(claims.sub)) {
            Some(Standing::Deactivated) => {
                return Err(Problem::unauthorized("this account has been deactivated"))
            }
            Some(Standing::Active(role)) => role,
            Some(Standing::Unknown) | None => claims.role,
        };
        Ok(AuthUser {
            id: claims.sub,
            email: claims.email,
            role,
        })
    }

    /// Accepts tokens living at most `max` (`exp - iat`); the default is
    /// [`DEFAULT_MAX_LIFETIME`]. Set it to the issuer's access-token lifetime.
    pub fn with_max_lifetime(self, max: Duration) -> Self {
        let secs = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        self.0.max_lifetime.store(secs, Ordering::Relaxed);
        self
    }

    /// Verifies signature (EdDSA only), `iss`, `aud`, `exp`, `nbf`, `iat`,
    /// the lifetime, and the absence of `crit` (see the module docs).
    pub async fn verify(&self, token: &str) -> Result<Claims, Problem> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Problem::unauthorized("access token is invalid"));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.remembered(&digest) {
            return Ok(claims);
        }
        let claims = self.check(token).await?;
        let mut verified = self.verified();
        if verified.len() >= VERIFIED_TOKENS_CACHED {
            let now = chrono::Utc::now().timestamp();
            let leeway = self.0.leeway as i64;
            verified.retain(|_, c| c.exp + leeway > now);
            if verified.len() >= VERIFIED_TOKENS_CACHED {
                verified.clear();
            }
        }
        verified.insert(digest, claims.clone());
        Ok(claims)
    }

    /// How many verified tokens are remembered now.
    pub fn remembered_tokens(&self) -> usize {
        self.verified().len()
    }

    /// A token verified before that has not expired since.
    fn remembered(&self, digest: &[u8; 32]) -> Option<Claims> {
        let mut verified = self.verified();
        let claims = verified.get(digest)?;
        if claims.exp + self.0.leeway as i64 > chrono::Utc::now().timestamp() {
            return Some(claims.clone());
        }
        verified.remove(digest);
        None
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Claims>> {
        // A panic while holding it leaves a map that is still consistent.
        self.0.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn check(&self, token: &str) -> Result<Claims, Problem> {
        refuse_critical_extensions(token)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Problem::unauthorized("malformed access token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(Problem::unauthorized("access token algorithm not accepted"));
        }
        let kid = header
            .kid
            .ok_or_else(|| Problem::unauthorized("access token has no key id"))?;
        let key = match self.key(&kid).await {
            Some(k) => k,
            None => {
                self.refresh().await;
                self.key(&kid)
                    .await
                    .ok_or_else(|| Problem::unauthorized("access token signed by an unknown key"))?
            }
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.0.issuer]);
        validation.set_audience(&[&self.0.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.0.leeway;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    Problem::unauthorized("access token expired")
                }
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    Problem::unauthorized("access token is not valid yet (nbf)")
                }
                _ => Problem::unauthorized("access token is invalid"),
            })?;
        let now = chrono::Utc::now().timestamp();
        if claims.iat > now.saturating_add(self.0.leeway as i64) {
            return Err(Problem::unauthorized(
                "access token is issued in the future (iat)",
            ));
        }
        let max_lifetime = self.0.max_lifetime.load(Ordering::Relaxed);
        if claims.exp.saturating_sub(claims.iat) > max_lifetime {
            return Err(Problem::unauthorized(format!(
                "access token lives longer than {max_lifetime} s (exp - iat)"
            )));
        }
        Ok(claims)
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.0.keys.read().await.get(kid).cloned()
    }

    async fn refresh(&self) {
        let KeySource::Jwks { url, client } = &self.0.source else {
            return;
        };
        {
            let last = self.0.last_refresh.read().await;
            if last.is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL) {
                return;
            }
        }
        *self.0.last_refresh.write().await = Some(Instant::now());
        match fetch(client, url).await {
            Ok(keys) => {
                *self.0.keys.write().await = keys;
                // A token signed by a key that is gone must fail from now on.
                self.verified().clear();
            }
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the known keys"),
        }
    }
}

/// Refuses a token whose protected header has `crit` (RFC 7515 4.1.11):
/// it names extensions the recipient must understand, and this verifier
/// understands none. The JWT library ignores unknown header fields, so the
/// header is read here first.
fn refuse_critical_extensions(token: &str) -> Result<(), Problem> {
    let malformed = || Problem::unauthorized("malformed access token");
    let header = token.split('.').next().ok_or_else(malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| malformed())?;
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if fields.contains_key("crit") {
        return Err(Problem::unauthorized(
            "access token header has `crit`; no critical extension is accepted",
        ));
    }
    Ok(())
}

async fn fetch(
    client: &reqwest::Client,
    url: &str,
) -> Result<HashMap<String, DecodingKey>, VerifierError> {
    let err = |reason: String| VerifierError::Fetch {
        url: url.to_owned(),
        reason,
    };
    let jwks: Jwks = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| err(e.to_string()))?
        .json()
        .await
        .map_err(|e| err(e.to_string()))?;
    decoding_keys(&jwks)
}

impl<S> FromRequestParts<S> for AuthUser
where
    TokenVerifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = TokenVerifier::from_ref(state);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| Problem::unauthorized("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Problem::unauthorized("expected `Authorization: Bearer <token>`"))?;
        let claims = verifier.verify(token).await?;
        verifier.caller(claims)
    }
}

/// An authenticated caller whose token carries the admin role; anyone else
/// is refused with 403 (401 without a valid token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser(pub AuthUser);

impl<S> FromRequestParts<S> for AdminUser
where
    TokenVerifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if !user.is_admin() {
            return Err(Problem::forbidden("this needs the admin role"));
        }
        Ok(AdminUser(user))
    }
}
