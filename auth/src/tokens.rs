//! Access tokens: short-lived EdDSA JWTs with a `kid`.

use chrono::{Duration, Utc};
use events::Role;
use jsonwebtoken::{Algorithm, Header};
use uuid::Uuid;

use crate::keys::SigningKeys;
use access::Claims;

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

#[cfg(test)]
mod tests {
    //! What auth issues, the APIs' verifier accepts, and nothing else.
    use std::time::Duration;

    use access::verify::{TokenVerifier, MAX_TOKEN_BYTES, VERIFIED_TOKENS_CACHED};

    use super::*;

    fn token(keys: &SigningKeys, ttl_seconds: i64) -> String {
        issue(
            keys,
            &AccessTokenRequest {
                user_id: Uuid::now_v7(),
                email: "someone@example.test",
                role: Role::User,
                issuer: "iss",
                audience: "aud",
                ttl: chrono::Duration::seconds(ttl_seconds),
            },
        )
        .expect("sign")
        .0
    }

    #[tokio::test]
    async fn a_remembered_token_still_expires() {
        let keys = SigningKeys::generate();
        let verifier = TokenVerifier::from_jwks(&keys.jwks(), "iss", "aud").expect("verifier");
        // Valid for about one more second: exp is 29 s ago, the leeway 30 s.
        let t = token(&keys, -29);
        let first = verifier.verify(&t).await.expect("valid at first");
        assert_eq!(verifier.verify(&t).await.expect("remembered"), first);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let err = verifier.verify(&t).await.expect_err("expired by now");
        assert!(err.detail.contains("expired"), "{err:?}");
    }

    #[tokio::test]
    async fn the_memory_of_verified_tokens_is_bounded() {
        let keys = SigningKeys::generate();
        let verifier = TokenVerifier::from_jwks(&keys.jwks(), "iss", "aud").expect("verifier");
        for _ in 0..VERIFIED_TOKENS_CACHED + 10 {
            verifier.verify(&token(&keys, 600)).await.expect("valid");
            assert!(verifier.remembered_tokens() <= VERIFIED_TOKENS_CACHED);
        }
        // A bearer value longer than any token is refused before parsing.
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(verifier.verify(&long).await.is_err());
    }

    #[tokio::test]
    async fn lifetime_is_capped_at_the_configured_maximum() {
        let keys = SigningKeys::generate();
        let verifier = TokenVerifier::from_jwks(&keys.jwks(), "iss", "aud")
            .expect("verifier")
            .with_max_lifetime(Duration::from_secs(60));
        assert!(verifier.verify(&token(&keys, 60)).await.is_ok());
        let err = verifier
            .verify(&token(&keys, 61))
            .await
            .expect_err("too long");
        assert!(err.detail.contains("exp - iat"), "{err:?}");
        let default = TokenVerifier::from_jwks(&keys.jwks(), "iss", "aud").expect("verifier");
        assert!(default.verify(&token(&keys, 900)).await.is_ok());
        assert!(default.verify(&token(&keys, 901)).await.is_err());
    }

    #[tokio::test]
    async fn remembering_a_token_accepts_no_other_string() {
        let keys = SigningKeys::generate();
        let verifier = TokenVerifier::from_jwks(&keys.jwks(), "iss", "aud").expect("verifier");
        let t = token(&keys, 600);
        verifier.verify(&t).await.expect("valid");
        let mut tampered = t.clone();
        tampered.pop();
        assert!(verifier.verify(&tampered).await.is_err());
        let other_keys = SigningKeys::generate();
        assert!(verifier.verify(&token(&other_keys, 600)).await.is_err());
        assert!(verifier.verify(&t).await.is_ok());
    }
}
