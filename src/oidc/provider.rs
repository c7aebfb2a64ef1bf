//! One live view of each identity provider, shared by every rule that uses it: the discovery
//! document (fetched in the background with backoff, so the server starts while the IdP is
//! down), its keys, and a cache of verified bearer tokens.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use jsonwebtoken::Algorithm;
use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::claims::Claims;
use super::discovery::{self, Metadata};
use super::keys::{KeyCache, KeyError, VerifyKey};
use super::logout_token::{self, Logout, LogoutTokenError};
use super::token::{self, Expect, TokenError, TokenHeader};
use crate::config::DEFAULT_TOKENS_CACHE;
use crate::metrics::{Endpoint, IdpCall, IdpRule, Metrics};

/// Backoff of discovery retries: starts here, doubles, and never waits longer than the cap.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(5);
/// How long a verified token is kept at most (its own expiry is checked on every use).
const VERIFIED_TTL: Duration = Duration::from_secs(3600);

/// Discovery result plus what we derive from it once.
pub struct Discovered {
    pub metadata: Metadata,
    pub algorithms: Vec<Algorithm>,
}

pub struct Provider {
    pub issuer: String,
    pub discovery_url: String,
    http: reqwest::Client,
    discovered: ArcSwapOption<Discovered>,
    keys: KeyCache,
    last_error: RwLock<Option<String>>,
    /// sha256(token) → its claims and its weight in bytes (see `token_weight`).
    verified: Cache<[u8; 32], (Arc<Claims>, u32)>,
    /// Where IdP calls are counted, and the rule this provider's own calls are counted under.
    metrics: Arc<Metrics>,
    metrics_rule: ArcSwap<String>,
}

impl Provider {
    pub fn new(
        issuer: &str,
        discovery_url: &str,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        rule: &str,
        token_cache_bytes: u64,
    ) -> Provider {
        Provider {
            issuer: issuer.to_string(),
            discovery_url: discovery_url.to_string(),
            http,
            discovered: ArcSwapOption::empty(),
            keys: KeyCache::default(),
            last_error: RwLock::new(None),
            verified: verified_cache(token_cache_bytes),
            metrics,
            metrics_rule: ArcSwap::from_pointee(rule.to_string()),
        }
    }

    /// Counts this provider's own calls (discovery, keys) under `rule` from now on.
    pub fn count_calls_under(&self, rule: &str) {
        if self.metrics_rule.load().as_str() != rule {
            self.metrics_rule.store(Arc::new(rule.to_string()));
        }
    }

    /// A call this provider makes for itself.
    fn own_call(&self, endpoint: Endpoint) -> IdpCall<'_> {
        self.metrics
            .idp_call(IdpRule::Provider(&self.metrics_rule), endpoint)
    }

    /// A call made for `rule` (the code exchange, a refresh).
    pub fn call_for<'a>(&'a self, rule: &'a str, endpoint: Endpoint) -> IdpCall<'a> {
        self.metrics.idp_call(IdpRule::Named(rule), endpoint)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn discovered(&self) -> Option<Arc<Discovered>> {
        self.discovered.load_full()
    }

    /// Ready: discovery done and keys in hand.
    pub fn is_ready(&self) -> bool {
        self.discovered.load().is_some() && self.keys.has_keys()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().ok().and_then(|e| e.clone())
    }

    pub fn jwks_fetches(&self) -> u64 {
        self.keys.fetch_count()
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut slot) = self.last_error.write() {
            *slot = e;
        }
    }

    /// One discovery attempt, then a key fetch.
    pub async fn discover_once(&self) -> Result<(), String> {
        let call = self.own_call(Endpoint::Discovery);
        let metadata = discovery::fetch(&self.http, &self.discovery_url, &self.issuer, call)
            .await
            .map_err(|e| e.to_string())?;
        let algorithms = token::accepted_algorithms(&metadata.id_token_signing_alg_values_supported);
        if algorithms.is_empty() {
            return Err("the provider advertises no asymmetric signing algorithm".into());
        }
        let jwks_uri = metadata.jwks_uri.clone();
        self.discovered
            .store(Some(Arc::new(Discovered { metadata, algorithms })));
        self.keys
            .refresh(&self.http, &jwks_uri, self.own_call(Endpoint::Jwks))
            .await
            .map_err(|e| e.to_string())
    }

    /// Retries discovery with backoff until it and the first key fetch succeed.
    pub async fn discover_until_ready(self: Arc<Self>) {
        let mut wait = RETRY_FIRST;
        loop {
            match self.discover_once().await {
                Ok(()) => {
                    self.set_error(None);
                    tracing::info!(issuer = %self.issuer, "identity provider ready");
                    return;
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer, error = %e, retry_in = ?wait, "identity provider not ready");
                    self.set_error(Some(e));
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_CAP);
        }
    }

    /// Verifies a token from this issuer against `expected`. Tokens checked without a nonce
    /// (bearer tokens, and ID tokens from a refresh) are cached by hash until they expire, with
    /// their claims checked again on each use; ID tokens at the callback (a nonce) are not.
    pub async fn verify(
        &self,
        token: &str,
        expected: &Expectation<'_>,
        now: u64,
    ) -> Result<Arc<Claims>, TokenError> {
        let Some(d) = self.discovered() else {
            return Err(TokenError::KeysUnavailable);
        };
        let nonce = expected.nonce;
        let expect = Expect {
            issuer: &self.issuer,
            client_id: expected.client_id,
            extra_audiences: expected.audiences,
            nonce,
            now,
        };
        let cache_key: Option<[u8; 32]> = nonce.is_none().then(|| Sha256::digest(token.as_bytes()).into());
        if let Some(k) = &cache_key {
            if let Some((claims, _)) = self.verified.get(k).await {
                // The audience depends on the rule, and time has moved on: re-check the claims.
                token::check_claims(&claims, &expect)?;
                return Ok(claims);
            }
        }
        let header = token::read_header(token, &d.algorithms)?;
        let key = self.key_for(&d, &header).await?;
        let claims = Arc::new(token::verify(token, &header, &key, &expect)?);
        if let Some(k) = cache_key {
            self.verified
                .insert(k, (claims.clone(), token_weight(token)))
                .await;
        }
        Ok(claims)
    }

    /// Verifies a back-channel logout token for `client_id`: the signature against this
    /// provider's keys, then the claims (`logout_token::check`). Never cached: each is used once.
    pub async fn verify_logout_token(
        &self,
        token: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Logout, LogoutTokenError> {
        let d = self.discovered().ok_or(TokenError::KeysUnavailable)?;
        let header = token::read_logout_header(token, &d.algorithms)?;
        let key = self.key_for(&d, &header).await?;
        let claims = token::verify_signature(token, &header, &key)?;
        logout_token::check(&claims, &self.issuer, client_id, now)
    }

    /// The key that signed a token with `header` (the JWKS is refetched, rate-limited, for an
    /// unknown kid).
    async fn key_for(&self, d: &Discovered, header: &TokenHeader) -> Result<Arc<VerifyKey>, TokenError> {
        self.keys
            .key(
                &self.http,
                &d.metadata.jwks_uri,
                header.kid.as_deref(),
                self.own_call(Endpoint::Jwks),
            )
            .await
            .map_err(|e| match e {
                KeyError::Unavailable(_) => TokenError::KeysUnavailable,
                KeyError::UnknownKid => TokenError::UnknownKey,
            })
    }
}

/// What a token must be for, besides this provider's issuer: a bearer token for the client or
/// one of its extra audiences, or an ID token for the client carrying the login's nonce.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'a> {
    client_id: &'a str,
    audiences: &'a [String],
    nonce: Option<&'a str>,
}

impl<'a> Expectation<'a> {
    /// A bearer token: `aud` holds `client_id` or one of `audiences`.
    pub fn bearer(client_id: &'a str, audiences: &'a [String]) -> Expectation<'a> {
        Expectation {
            client_id,
            audiences,
            nonce: None,
        }
    }

    /// An ID token at the callback: for `client_id`, with the login's `nonce`.
    pub fn id_token(client_id: &'a str, nonce: &'a str) -> Expectation<'a> {
        Expectation {
            client_id,
            audiences: &[],
            nonce: Some(nonce),
        }
    }

    /// An ID token from a refresh: for `client_id`, as at the callback but without a nonce
    /// (there is no login to match).
    pub fn refreshed_id_token(client_id: &'a str) -> Expectation<'a> {
        Expectation {
            client_id,
            audiences: &[],
            nonce: None,
        }
    }
}

/// Verified tokens by their SHA-256, bounded by weight in bytes.
fn verified_cache(bytes: u64) -> Cache<[u8; 32], (Arc<Claims>, u32)> {
    Cache::builder()
        .max_capacity(bytes)
        .weigher(|_, (_, weight): &(Arc<Claims>, u32)| *weight)
        .time_to_live(VERIFIED_TTL)
        .build()
}

/// What a verified token is counted as in the cache: its claims, parsed, take about three times
/// the token's length (measured by bench/memory_flood.sh: 3.3 KB for a 957-byte token of 18
/// claims), plus the key and the cache's own bookkeeping.
fn token_weight(token: &str) -> u32 {
    u32::try_from(token.len().saturating_mul(3).saturating_add(512)).unwrap_or(u32::MAX)
}

/// Every provider in use, keyed by where it is found (issuer and discovery URL: rules sharing
/// both share one provider).
pub struct Providers {
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    /// `caches.tokens`: what each provider's verified tokens may weigh, in bytes.
    token_cache_bytes: u64,
    map: RwLock<HashMap<String, Arc<Provider>>>,
}

impl Default for Providers {
    fn default() -> Self {
        Providers::new(reqwest::Client::default(), Arc::default(), DEFAULT_TOKENS_CACHE)
    }
}

impl Providers {
    pub fn new(http: reqwest::Client, metrics: Arc<Metrics>, token_cache_bytes: u64) -> Providers {
        Providers {
            http,
            metrics,
            token_cache_bytes,
            map: RwLock::new(HashMap::new()),
        }
    }

    /// The provider with this key, if it has been started.
    pub fn get(&self, key: &str) -> Option<Arc<Provider>> {
        let map = self.map.read().ok()?;
        map.get(key).cloned()
    }

    /// The provider of `issuer` (discovery at `discovery_url`) under `key`, started (discovery
    /// in the background) if new; a new one counts its own IdP calls under `rule`.
    pub fn ensure(&self, key: &str, issuer: &str, discovery_url: &str, rule: &str) -> Arc<Provider> {
        if let Some(p) = self.get(key) {
            return p;
        }
        let provider = Arc::new(Provider::new(
            issuer,
            discovery_url,
            self.http.clone(),
            self.metrics.clone(),
            rule,
            self.token_cache_bytes,
        ));
        let mut map = match self.map.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = map.entry(key.to_string()).or_insert_with(|| {
            tokio::spawn(provider.clone().discover_until_ready());
            provider
        });
        entry.clone()
    }
}

impl Providers {
    /// Every provider started so far.
    pub fn all(&self) -> Vec<Arc<Provider>> {
        self.map
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
