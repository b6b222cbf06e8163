//! Customer passwords: stored as Argon2id hashes, verified with a small cache.
//!
//! Argon2 is deliberately slow (tens of milliseconds), and customers rebind often, so a
//! successful check is remembered by (hash, SHA-1 of the password): the plaintext is never
//! kept, and a changed password (a new hash) misses the cache.

use std::collections::HashSet;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source is available");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 with default parameters").to_string()
}

/// Successful verifications, bounded.
#[derive(Default)]
pub struct Verifier {
    ok: Mutex<HashSet<(String, [u8; 20])>>,
}

const CACHE_MAX: usize = 10_000;

impl Verifier {
    pub fn verify(&self, stored: &str, password: &str) -> bool {
        let key = (stored.to_string(), sha1_smol::Sha1::from(password).digest().bytes());
        if self.ok.lock().unwrap_or_else(|e| e.into_inner()).contains(&key) {
            return true;
        }
        let Ok(parsed) = PasswordHash::new(stored) else { return false };
        let good = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        if good {
            let mut ok = self.ok.lock().unwrap_or_else(|e| e.into_inner());
            if ok.len() >= CACHE_MAX {
                ok.clear();
            }
            ok.insert(key);
        }
        good
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_and_verify() {
        let h = super::hash("s3cret");
        assert!(h.starts_with("$argon2id$"));
        let v = super::Verifier::default();
        assert!(v.verify(&h, "s3cret"));
        assert!(v.verify(&h, "s3cret"), "cached");
        assert!(!v.verify(&h, "wrong"));
        assert!(!v.verify("not a hash", "s3cret"));
    }
}
