//! The public keys auth publishes at `GET /.well-known/jwks.json` and the
//! verifier fetches.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One public key (RFC 8037 OKP form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub key_use: String,
    pub kid: String,
    /// The raw public key, base64url without padding.
    pub x: String,
}

/// `GET /.well-known/jwks.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}
