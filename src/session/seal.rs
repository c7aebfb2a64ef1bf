//! Sealing cookie values: XChaCha20-Poly1305 with keys derived (HKDF-SHA256) from
//! `session.secrets`. The first secret seals; every secret opens, so secrets rotate without
//! logging anyone out. The purpose (session, login) is bound as associated data, so one kind of
//! cookie can never be replayed as another.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// A sealed value larger than this is refused before any work is done.
pub const MAX_SEALED_LEN: usize = 64 * 1024;

/// What a sealed value is for; bound into the ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A whole session in its cookie (the `cookie` store).
    Session,
    /// A pending login's state.
    Login,
    /// The cookie of the `redis` store: only the session's id.
    SessionRef,
    /// A session as the `redis` store keeps it in Redis (a dump reveals no token).
    StoredSession,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"oidc-authz session v1",
            Purpose::Login => b"oidc-authz login-state v1",
            Purpose::SessionRef => b"oidc-authz session-ref v1",
            Purpose::StoredSession => b"oidc-authz stored-session v1",
        }
    }
}

/// The keys derived from `session.secrets`.
pub struct Sealer {
    ciphers: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({} keys)", self.ciphers.len())
    }
}

impl Sealer {
    /// Derives one key per secret. `secrets` must not be empty (the config checks that).
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Sealer {
        let ciphers = secrets
            .iter()
            .map(|s| {
                let hk = Hkdf::<Sha256>::new(Some(b"oidc-authz"), s.as_ref());
                let mut key = [0u8; 32];
                // 32 bytes is far below HKDF-SHA256's output limit, so this cannot fail.
                let _ = hk.expand(b"cookie seal key v1", &mut key);
                XChaCha20Poly1305::new(&key.into())
            })
            .collect();
        Sealer { ciphers }
    }

    /// Encrypts and authenticates `plaintext` with the first key; the result is cookie-safe.
    pub fn seal(&self, purpose: Purpose, plaintext: &[u8]) -> String {
        let Some(cipher) = self.ciphers.first() else {
            return String::new();
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.aad(),
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a value sealed by any of the keys. `None` for anything tampered, truncated, sealed
    /// for another purpose or under a secret no longer configured.
    pub fn open(&self, purpose: Purpose, text: &str) -> Option<Vec<u8>> {
        if text.len() > MAX_SEALED_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        if raw.len() < 1 + NONCE_LEN + 16 || raw[0] != VERSION {
            return None;
        }
        let nonce = XNonce::from_slice(&raw[1..1 + NONCE_LEN]);
        let body = &raw[1 + NONCE_LEN..];
        self.ciphers.iter().find_map(|c| {
            c.decrypt(
                nonce,
                Payload {
                    msg: body,
                    aad: purpose.aad(),
                },
            )
            .ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a-secret-that-is-at-least-32-bytes-long";
    const B: &str = "another-secret-that-is-32-bytes-or-more";

    #[test]
    fn sealed_value_opens_with_the_same_secret() {
        let s = Sealer::new(&[A]);
        let t = s.seal(Purpose::Session, b"hello");
        assert_eq!(s.open(Purpose::Session, &t).as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn tampered_value_does_not_open() {
        let s = Sealer::new(&[A]);
        let t = s.seal(Purpose::Session, b"hello");
        let mut bytes = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(s.open(Purpose::Session, &URL_SAFE_NO_PAD.encode(bytes)).is_none());
        assert!(s.open(Purpose::Session, &t[..t.len() - 2]).is_none());
        assert!(s.open(Purpose::Session, "garbage!*").is_none());
        assert!(s.open(Purpose::Session, "").is_none());
    }

    #[test]
    fn value_sealed_for_login_is_not_a_session() {
        let s = Sealer::new(&[A]);
        let t = s.seal(Purpose::Login, b"x");
        assert!(s.open(Purpose::Session, &t).is_none());
    }

    #[test]
    fn value_under_another_secret_does_not_open() {
        let t = Sealer::new(&[B]).seal(Purpose::Session, b"x");
        assert!(Sealer::new(&[A]).open(Purpose::Session, &t).is_none());
    }

    #[test]
    fn rotation_new_secret_seals_old_secret_still_opens() {
        let old = Sealer::new(&[A]).seal(Purpose::Session, b"old");
        let rotated = Sealer::new(&[B, A]);
        assert_eq!(rotated.open(Purpose::Session, &old).as_deref(), Some(&b"old"[..]));
        let new = rotated.seal(Purpose::Session, b"new");
        assert!(Sealer::new(&[A]).open(Purpose::Session, &new).is_none());
        assert!(Sealer::new(&[B]).open(Purpose::Session, &new).is_some());
    }
}
