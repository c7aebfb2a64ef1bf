//! An issuer's signing keys. Keys are parsed once per fetch, not per token. An unknown `kid`
//! triggers a refetch at most once per 10 s, and however many requests wait, one fetch serves
//! them all. A failed fetch keeps the keys we had, so sessions survive an IdP outage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::fetch::{self, FetchError};
use crate::metrics::IdpCall;
use tracing::Instrument;

/// Refetch on an unknown `kid` at most this often.
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(10);
/// With no keys at all, try again at most this often.
pub const EMPTY_REFETCH: Duration = Duration::from_secs(1);
/// Keys beyond this in one JWKS are ignored.
const MAX_KEYS: usize = 64;

/// One usable verification key.
pub struct VerifyKey {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it names one.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

/// The keys of one JWKS fetch.
pub struct KeySet {
    pub keys: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    /// Parses a JWKS document, skipping keys we cannot use (symmetric keys are never used).
    pub fn from_json(doc: &serde_json::Value) -> KeySet {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            keys: Vec<serde_json::Value>,
        }
        let items = Doc::deserialize(doc).map(|d| d.keys).unwrap_or_default();
        let keys = items
            .into_iter()
            .take(MAX_KEYS)
            .filter_map(|item| {
                let jwk: Jwk = serde_json::from_value(item).ok()?;
                if matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) {
                    return None;
                }
                if matches!(
                    jwk.common.public_key_use,
                    Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
                ) {
                    return None;
                }
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                let alg = jwk.common.key_algorithm.and_then(key_alg);
                Some(Arc::new(VerifyKey {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                }))
            })
            .collect();
        KeySet { keys }
    }

    /// The key for a token's `kid`. Without a `kid`, only a JWKS of exactly one key will do.
    pub fn find(&self, kid: Option<&str>) -> Option<&Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

fn key_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key has ever been fetched and none can be had now.
    #[error("no signing keys are available for this issuer: {0}")]
    Unavailable(String),
    #[error("no signing key matches the token's kid")]
    UnknownKid,
}

/// The cached keys of one issuer.
pub struct KeyCache {
    current: ArcSwapOption<KeySet>,
    /// Held while fetching; records the last on-demand fetch (an unknown `kid`, or no keys),
    /// which is what the rate limit counts. The fetch after discovery does not count.
    refresh: Mutex<Option<Instant>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            current: ArcSwapOption::empty(),
            refresh: Mutex::new(None),
            fetches: Default::default(),
        }
    }
}

impl KeyCache {
    pub fn has_keys(&self) -> bool {
        self.current.load().is_some()
    }

    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fetches the JWKS now (used right after discovery). Keeps the old keys on failure.
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        jwks_uri: &str,
        call: IdpCall<'_>,
    ) -> Result<(), FetchError> {
        let _guard = self.refresh.lock().await;
        self.fetch(http, jwks_uri, call).await
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
        jwks_uri: &str,
        call: IdpCall<'_>,
    ) -> Result<(), FetchError> {
        self.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let doc: serde_json::Value = fetch::counted_json(http.get(jwks_uri), jwks_uri, call)
            .instrument(crate::telemetry::idp_span("jwks", "GET", jwks_uri))
            .await?;
        let set = KeySet::from_json(&doc);
        if set.keys.is_empty() {
            return Err(FetchError::BadJson {
                url: jwks_uri.into(),
                reason: "the JWKS holds no usable key".into(),
            });
        }
        self.current.store(Some(Arc::new(set)));
        Ok(())
    }

    /// The key for `kid`, refetching the JWKS when it is unknown (rate-limited, coalesced).
    pub async fn key(
        &self,
        http: &reqwest::Client,
        jwks_uri: &str,
        kid: Option<&str>,
        call: IdpCall<'_>,
    ) -> Result<Arc<VerifyKey>, KeyError> {
        if let Some(set) = self.current.load().as_ref() {
            if let Some(k) = set.find(kid) {
                return Ok(k.clone());
            }
        }
        // Every waiter queues here; the first fetches, the rest find its result.
        let mut last = self.refresh.lock().await;
        let current = self.current.load_full();
        if let Some(set) = &current {
            if let Some(k) = set.find(kid) {
                return Ok(k.clone());
            }
        }
        let wait = if current.is_some() {
            UNKNOWN_KID_REFETCH
        } else {
            EMPTY_REFETCH
        };
        if last.is_some_and(|t| t.elapsed() < wait) {
            return Err(if current.is_some() {
                KeyError::UnknownKid
            } else {
                KeyError::Unavailable("the last fetch failed".into())
            });
        }
        *last = Some(Instant::now());
        match self.fetch(http, jwks_uri, call).await {
            Ok(()) => self
                .current
                .load()
                .as_ref()
                .and_then(|s| s.find(kid).cloned())
                .ok_or(KeyError::UnknownKid),
            Err(e) if current.is_none() => Err(KeyError::Unavailable(e.to_string())),
            Err(_) => Err(KeyError::UnknownKid),
        }
    }
}
