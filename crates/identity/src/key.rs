//! API keys: `smk_<id>_<secret>`. The id (16 hex digits) names the key in lists, logs and
//! events; the secret (64 hex digits, 256 random bits) is shown once and kept only as its
//! SHA-256. A slow password hash would add nothing: the secret is random, not chosen by a
//! person, so there is no dictionary to slow down, and every call verifies a key.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

const PREFIX: &str = "smk";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// Why a string is not an API key. Never echoes the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an API key: expected smk_<16 hex digits>_<64 hex digits>")]
    Malformed,
}

/// A full API key, secret included: only ever in the creator's hands.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: String,
    secret: String,
}

impl ApiKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        Self { id: hex::encode(id), secret: hex::encode(secret) }
    }

    /// Parses `smk_<id>_<secret>` (surrounding whitespace ignored, as from a file).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut parts = text.trim().split('_');
        let (Some(PREFIX), Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::Malformed);
        };
        let hex_of =
            |s: &str, bytes: usize| s.len() == bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex_of(id, ID_BYTES) || !hex_of(secret, SECRET_BYTES) {
            return Err(KeyError::Malformed);
        }
        Ok(Self { id: id.to_owned(), secret: secret.to_owned() })
    }

    /// Whether `text` looks like an API key rather than a token (it may still be malformed).
    pub fn is_api_key(text: &str) -> bool {
        text.trim_start().starts_with("smk_")
    }

    /// The public half: names the key, safe to log.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What is stored: the SHA-256 of the secret.
    pub fn hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.secret.as_bytes()).into())
    }

    /// The whole key, secret included, to show its creator once.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}_{}_{}", self.id, self.secret)
    }
}

/// Never prints the secret.
impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({PREFIX}_{}_…)", self.id)
    }
}

/// SHA-256 of a key's secret, as stored and as carried by `ApiKeyCreated`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// From its 64 lowercase hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Whether `key`'s secret hashes to this, in constant time.
    pub fn verifies(&self, key: &ApiKey) -> bool {
        self.0.ct_eq(&key.hash().0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}…)", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_round_trips_and_verifies_against_its_hash_only() {
        let key = ApiKey::generate();
        let text = key.reveal();
        assert!(text.starts_with("smk_") && text.len() == 4 + 16 + 1 + 64, "{text}");
        let parsed = ApiKey::parse(&format!(" {text}\n")).unwrap();
        assert_eq!(parsed, key);
        let stored = SecretHash::from_hex(&key.hash().to_hex()).unwrap();
        assert!(stored.verifies(&parsed));
        assert!(!stored.verifies(&ApiKey::generate()));
        // Same id, another secret: refused.
        let forged = ApiKey::parse(&format!("smk_{}_{}", key.id(), "0".repeat(64))).unwrap();
        assert!(!stored.verifies(&forged));
    }

    #[test]
    fn two_keys_differ_and_debug_hides_the_secret() {
        let (a, b) = (ApiKey::generate(), ApiKey::generate());
        assert_ne!(a.id(), b.id());
        assert_ne!(a.hash(), b.hash());
        let shown = format!("{a:?}");
        assert!(!shown.contains(&a.reveal()[21..]), "{shown}");
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = ApiKey::generate().reveal();
        for bad in [
            "",
            "smk_",
            "smk__",
            &good.replace("smk_", "sk_"),
            &good[..good.len() - 1],
            &format!("{good}0"),
            &format!("{good}_x"),
            &good.to_uppercase().replace("SMK_", "smk_"),
            "eyJhbGciOiJub25lIn0.e30.",
        ] {
            assert_eq!(ApiKey::parse(bad), Err(KeyError::Malformed), "{bad:?}");
        }
        assert!(ApiKey::is_api_key(&good) && !ApiKey::is_api_key("eyJ0eXAiOiJKV1QifQ"));
    }
}
