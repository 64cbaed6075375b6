//! The Ed25519 signing key and its public form (JWKS).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::EncodingKey;
use sha2::{Digest, Sha256};

pub use access::jwks::{Jwk, Jwks};

/// The key auth signs access tokens with (EdDSA / Ed25519).
#[derive(Clone)]
pub struct SigningKeys {
    pub kid: String,
    encoding: EncodingKey,
    public: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read signing key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signing key {path} is not an Ed25519 PKCS#8 PEM private key: {reason}")]
    Parse { path: String, reason: String },
}

impl SigningKeys {
    pub fn from_pem_file(path: &str) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&pem).map_err(|reason| KeyError::Parse {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let signing = SigningKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())?;
        let public = signing.verifying_key().to_bytes();
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        let kid = hex(&Sha256::digest(public)[..8]);
        Ok(SigningKeys {
            kid,
            encoding,
            public,
        })
    }

    /// A fresh random key (tests and tools).
    pub fn generate() -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = signing
            .to_pkcs8_pem(Default::default())
            .map(|p| p.to_string())
            .unwrap_or_default();
        // A key we just generated always round-trips.
        Self::from_pem(&pem).unwrap_or_else(|e| panic!("generated key does not parse: {e}"))
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            alg: "EdDSA".into(),
            key_use: "sig".into(),
            kid: self.kid.clone(),
            x: URL_SAFE_NO_PAD.encode(self.public),
        }
    }

    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![self.jwk()],
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
