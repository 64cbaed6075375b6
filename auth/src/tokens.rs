//! Access tokens: short-lived EdDSA JWTs with a `kid`.

use chrono::{Duration, Utc};
use events::Role;
use jsonwebtoken::{Algorithm, Header};
use uuid::Uuid;

use crate::keys::SigningKeys;
use crate::verify::Claims;

/// Default access-token lifetime.
pub const ACCESS_TOKEN_TTL: Duration = Duration::minutes(15);

/// Who the token is for and who it is meant for.
pub struct AccessTokenRequest<'a> {
    pub user_id: Uuid,
    pub email: &'a str,
    pub role: Role,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub ttl: Duration,
}

/// Signs an access token; returns it with its claims.
pub fn issue(
    keys: &SigningKeys,
    req: &AccessTokenRequest<'_>,
) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
    let now = Utc::now().timestamp();
    let claims = Claims {
        sub: req.user_id,
        email: req.email.to_owned(),
        role: req.role,
        iss: req.issuer.to_owned(),
        aud: req.audience.to_owned(),
        iat: now,
        exp: now + req.ttl.num_seconds(),
        jti: Uuid::now_v7(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(keys.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, keys.encoding_key())?;
    Ok((token, claims))
}
