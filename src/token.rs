//! Bearer tokens: generation, hashing and constant-time comparison.
//!
//! A token is 256 random bits from the OS generator, shown once as `tw_` + 64 hex digits.
//! Only its SHA-256 digest is stored. A presented token is hashed and looked up by digest; the
//! final equality check runs in constant time ([`subtle`]) so response timing reveals nothing
//! about how close a guess was.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 digest of a token, the only form that is stored.
pub type TokenHash = [u8; 32];

const PREFIX: &str = "tw_";

/// A new random token (256 bits).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{PREFIX}{}", hex::encode(bytes))
}

/// The stored form of a token.
pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two digests.
pub fn digests_equal(a: &TokenHash, b: &TokenHash) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), PREFIX.len() + 64);
    }

    #[test]
    fn a_token_matches_only_its_own_hash() {
        let t = generate();
        assert!(digests_equal(&hash(&t), &hash(&t)));
        assert!(!digests_equal(&hash(&t), &hash(&generate())));
    }
}
