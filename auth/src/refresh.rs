//! Refresh tokens: 256 random bits, opaque to clients, stored only as their
//! SHA-256 hash so a leaked table cannot be replayed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Duration;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// How long a refresh token may be used (each rotation issues a fresh one).
pub const REFRESH_TOKEN_TTL: Duration = Duration::days(7);

/// A newly minted refresh token, as handed to the client once.
pub struct RefreshToken(String);

impl RefreshToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        RefreshToken(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn hash(&self) -> [u8; 32] {
        hash(&self.0)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The stored form of a presented token. Any string hashes; one that was
/// never issued simply matches no row.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_and_distinct() {
        let a = RefreshToken::generate();
        let b = RefreshToken::generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.0).unwrap().len(), 32);
        assert_ne!(a.0, b.0);
        assert_eq!(a.hash(), hash(&a.0));
        assert_ne!(a.hash(), b.hash());
    }
}
