//! The state every listener shares: the live rules, the providers, the session codec (login
//! cookies), the session store, Redis (when configured) and the counters. Built once by `server` (or by a test) and passed
//! around in an `Arc`.

use std::sync::Arc;

pub use crate::clock::now;
use crate::config::{Config, RedisAddress, SessionStoreKind};
use crate::metrics::{Metrics, RuleStates, ScrapeState};
use crate::oidc::fetch;
use crate::oidc::provider::Providers;
use crate::redis_client::{RedisClient, RedisTarget};
use crate::rules::{RuleSet, RuleSetHandle};
use crate::session::revocations::Revocations;
use crate::session::store::{CookieStore, RedisStore, SessionStore, MAX_LOGOUT_TOKENS};
use crate::session::SessionCodec;

pub struct App {
    pub rules: RuleSetHandle,
    pub providers: Providers,
    /// Seals login states and names the session cookie; sessions themselves go through
    /// `session_store`.
    pub sessions: Arc<SessionCodec>,
    /// Where sessions are loaded, saved, cleared and revoked.
    pub session_store: SessionStore,
    pub metrics: Arc<Metrics>,
    /// `session.refresh_grace` in seconds: how long past expiry a session is served while the
    /// IdP cannot be reached at refresh.
    pub refresh_grace_secs: u64,
    /// The Redis of `session.redis_url` / `session.redis_cluster`, when one is configured.
    pub redis: Option<Arc<RedisClient>>,
    /// Why the rule store cannot be read yet (a Redis rule store down at start-up): shown by
    /// `/readyz` until it is read.
    rule_store_problem: arc_swap::ArcSwapOption<String>,
}

/// The session store the configuration asks for: the redis store; or the cookie store with
/// revocations and used logout tokens in Redis when one is configured (shared by replicas),
/// else in memory.
fn session_store(
    config: &Config,
    codec: Arc<SessionCodec>,
    redis: Option<&Arc<RedisClient>>,
) -> SessionStore {
    let (revoked, logout_tokens) = match (config.session.store, redis) {
        (SessionStoreKind::Redis, Some(redis)) => {
            return SessionStore::Redis(RedisStore::new(codec, redis.clone()))
        }
        (_, Some(redis)) => (
            Revocations::in_redis(redis.clone()),
            Revocations::in_redis(redis.clone()),
        ),
        // (`store: redis` without an address does not pass the configuration check.)
        (_, None) => (Revocations::default(), Revocations::in_memory(MAX_LOGOUT_TOKENS)),
    };
    SessionStore::Cookie(
        CookieStore::with_logout_tokens(codec, revoked, logout_tokens)
            .with_opened_capacity(config.caches.sessions),
    )
}

impl App {
    /// Builds the state and starts discovery for every enabled rule's provider.
    pub fn start(config: &Config, rules: RuleSet) -> Arc<App> {
        let sessions = Arc::new(SessionCodec::new(&config.session));
        let redis = config.session.redis().map(|address| {
            RedisClient::start_or_broken(match address {
                RedisAddress::Server(url) => RedisTarget::Server(url),
                RedisAddress::Cluster(nodes) => RedisTarget::Cluster(nodes),
            })
        });
        let session_store = session_store(config, sessions.clone(), redis.as_ref());
        let metrics = Arc::new(Metrics::new());
        let app = Arc::new(App {
            rules: RuleSetHandle::new(rules),
            providers: Providers::new(fetch::client(), metrics.clone(), config.caches.tokens),
            sessions,
            session_store,
            metrics,
            refresh_grace_secs: config.session.refresh_grace.as_secs(),
            redis,
            rule_store_problem: arc_swap::ArcSwapOption::empty(),
        });
        app.start_providers();
        app
    }

    /// Makes sure every enabled rule's provider exists (discovery runs in the background).
    /// A provider's own IdP calls (discovery, keys) are counted under the first enabled rule
    /// that uses it; those of a provider no enabled rule uses any more, under no rule.
    pub fn start_providers(&self) {
        let rules = self.rules.load();
        let mut seen = std::collections::HashSet::new();
        let mut used = Vec::new();
        for rule in rules.enabled() {
            let provider = self.providers.ensure(
                &rule.provider_key,
                &rule.issuer,
                rule.discovery_url.as_str(),
                &rule.name,
            );
            if seen.insert(rule.provider_key.as_str()) {
                provider.count_calls_under(&rule.name);
                used.push(provider);
            }
        }
        for provider in self.providers.all() {
            if !used.iter().any(|u| Arc::ptr_eq(u, &provider)) {
                provider.count_calls_under(crate::metrics::NO_RULE);
            }
        }
    }

    /// Swaps in a new rule set; `Check` follows from the next request. The metrics of rules
    /// that are gone are dropped.
    pub fn replace_rules(&self, rules: RuleSet) {
        let old = self.rules.load_full();
        self.rules.store(rules);
        let new = self.rules.load();
        let gone: Vec<&str> = old
            .all()
            .iter()
            .map(|r| r.name.as_str())
            .filter(|name| new.by_name(name).is_none())
            .collect();
        self.metrics.forget_rules(&gone);
        self.start_providers();
    }

    /// What `/metrics` reads at a scrape: rules by state, Redis (as last checked), JWKS fetches.
    pub fn scrape_state(&self) -> ScrapeState {
        let rules = self.rules.load();
        let mut states = RuleStates::default();
        for rule in rules.all() {
            let slot = if !rule.enabled {
                &mut states.disabled
            } else if self
                .providers
                .get(&rule.provider_key)
                .is_some_and(|p| p.is_ready())
            {
                &mut states.enabled
            } else {
                &mut states.not_ready
            };
            *slot += 1;
        }
        ScrapeState {
            rules: states,
            redis_up: self.redis.as_ref().map(|r| r.is_up()),
            jwks_fetches: self
                .providers
                .all()
                .iter()
                .map(|p| (p.issuer.clone(), p.jwks_fetches()))
                .collect(),
        }
    }

    /// Sets (or clears) what `/readyz` says about the rule store.
    pub fn set_rule_store_problem(&self, problem: Option<String>) {
        self.rule_store_problem.store(problem.map(Arc::new));
    }

    /// Enabled rules whose provider is not ready, with the reason; and `rules_store` when the
    /// rule store has not been read yet.
    pub fn not_ready(&self) -> Vec<(String, String)> {
        let store = self
            .rule_store_problem
            .load_full()
            .map(|p| ("rules_store".to_string(), p.as_ref().clone()));
        let rules = self.rules.load();
        let mut not_ready: Vec<(String, String)> = store
            .into_iter()
            .chain(rules.enabled().filter_map(|r| {
                let p = self.providers.get(&r.provider_key);
                match p {
                    Some(p) if p.is_ready() => None,
                    Some(p) => Some((
                        r.name.clone(),
                        p.last_error().unwrap_or_else(|| "discovery in progress".into()),
                    )),
                    None => Some((r.name.clone(), "not started".into())),
                }
            }))
            .collect();
        if let Some(redis) = self.redis.as_ref().filter(|r| !r.is_up()) {
            not_ready.push(("redis".into(), format!("{} is not reachable", redis.describe())));
        }
        not_ready
    }

    /// Asks Redis (when one is configured) whether it is up; `/readyz` and `/metrics` call it
    /// so that they report Redis as it is now, not as the last request found it.
    pub async fn check_redis(&self) {
        if let Some(redis) = &self.redis {
            if let Err(e) = redis.ping().await {
                tracing::debug!(error = %e, "redis ping failed");
            }
        }
    }
}
