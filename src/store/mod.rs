//! The rule store: where rules live between restarts, and, with Redis, what replicas share.
//!
//! - `file:PATH` (`store::file`) writes atomically (a temporary file, fsync, rename, fsync of the
//!   directory) before a change is acknowledged;
//! - `inline` is the config file itself and refuses changes (GitOps);
//! - `redis://…`, `rediss://…` or `redis` (`store::redis`) keeps the whole rule set as one
//!   versioned value that every replica reads and writes.
//!
//! Why an enum of async operations rather than the old synchronous `RuleStore` trait: Redis is
//! reached through async I/O, and several replicas write the same value, so a write must say
//! which version it was computed from (`save(rules, expected)`, answered `Conflict` when
//! another replica wrote first) and an empty store must be filled exactly once (`import`). The
//! file store keeps its blocking implementation and runs it off the async workers; its version
//! is the file's modification time, as before.

pub mod file;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, RedisAddress, RuleConfig, RulesStore};
use crate::redis_client::{RedisClient, RedisTarget};

pub use self::file::{FileStore, InlineStore};
pub use self::redis::RedisStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the rule store is read-only (rules_store: inline): change the config file instead")]
    ReadOnly,
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: not a valid rule store: {message}")]
    Corrupt { path: String, message: String },
    /// Another writer changed the store since the version the change was computed from.
    #[error("the rule set was changed by another replica meanwhile")]
    Conflict,
    /// The store cannot be reached now (Redis down or slow); nothing was written.
    #[error("{store} is unavailable: {message}")]
    Unavailable { store: String, message: String },
}

/// Which state of the store a rule set was read from: an opaque token compared for equality.
/// `Version::default()` is the empty store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version(Option<String>);

impl Version {
    pub fn new(token: String) -> Version {
        Version(Some(token))
    }
    /// Whether this is the version of an empty store (never written).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
    pub fn token(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// A rule set as read, with the version it was read at; `rules` is `None` for an empty store.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub rules: Option<Vec<RuleConfig>>,
    pub version: Version,
}

/// The store a configuration names.
pub enum Store {
    File(Arc<FileStore>),
    Inline(InlineStore),
    Redis(RedisStore),
}

/// How often the file store is checked for outside edits.
const FILE_POLL: Duration = Duration::from_secs(1);

impl Store {
    /// Opens the store a configuration names. A Redis store connects lazily (Redis may be down
    /// now); it must be opened inside the Tokio runtime.
    pub fn open(config: &Config) -> Result<Store, StoreError> {
        let redis_target = match &config.rules_store {
            RulesStore::Inline => return Ok(Store::Inline(InlineStore::new(config.rules.clone()))),
            RulesStore::File(path) => return Ok(Store::File(Arc::new(FileStore::new(path.clone())))),
            RulesStore::Redis(url) => RedisTarget::Server(url.clone()),
            RulesStore::SessionRedis => match config.session.redis() {
                Some(RedisAddress::Server(url)) => RedisTarget::Server(url),
                Some(RedisAddress::Cluster(nodes)) => RedisTarget::Cluster(nodes),
                None => {
                    return Err(StoreError::Io {
                        path: "rules_store".into(),
                        message: "`redis` needs session.redis_url or session.redis_cluster".into(),
                    })
                }
            },
        };
        let describe = redis_target.describe();
        let cluster = matches!(redis_target, RedisTarget::Cluster(_));
        let client = RedisClient::start(redis_target).map_err(|e| StoreError::Io {
            path: describe,
            message: e.to_string(),
        })?;
        Ok(Store::Redis(RedisStore::new(client, cluster)))
    }

    /// Reads the whole rule set.
    pub async fn load(&self) -> Result<Loaded, StoreError> {
        match self {
            Store::File(f) => {
                let f = f.clone();
                blocking(move || {
                    let version = f.version();
                    Ok(Loaded {
                        rules: f.load()?,
                        version,
                    })
                })
                .await
            }
            Store::Inline(s) => Ok(Loaded {
                rules: s.load()?,
                version: Version::default(),
            }),
            Store::Redis(r) => r.load().await,
        }
    }

    /// Stores `rules` if the store is still at `expected` (else `Conflict`, nothing written);
    /// answers the new version once the write is durable. The file store has one writer (this
    /// process, one change at a time) and does not compare.
    pub async fn save(&self, rules: &[RuleConfig], expected: &Version) -> Result<Version, StoreError> {
        match self {
            Store::File(f) => {
                let f = f.clone();
                let rules = rules.to_vec();
                blocking(move || {
                    f.save(&rules)?;
                    Ok(f.version())
                })
                .await
            }
            Store::Inline(_) => Err(StoreError::ReadOnly),
            Store::Redis(r) => r.save(rules, expected).await,
        }
    }

    /// Fills an empty store with `rules`, exactly once even when several replicas try at the
    /// same time: answers what the store holds afterwards, and whether this call wrote it.
    pub async fn import(&self, rules: &[RuleConfig]) -> Result<(Loaded, bool), StoreError> {
        let written = Loaded {
            rules: Some(rules.to_vec()),
            version: Version::default(),
        };
        match self.save(rules, &Version::default()).await {
            Ok(version) => Ok((Loaded { version, ..written }, true)),
            Err(StoreError::Conflict) => Ok((self.load().await?, false)),
            Err(e) => Err(e),
        }
    }

    /// The store's current version (cheap: no rules are read).
    pub async fn version(&self) -> Result<Version, StoreError> {
        match self {
            Store::File(f) => {
                let f = f.clone();
                blocking(move || Ok(f.version())).await
            }
            Store::Inline(_) => Ok(Version::default()),
            Store::Redis(r) => r.version().await,
        }
    }

    pub fn read_only(&self) -> bool {
        matches!(self, Store::Inline(_))
    }

    /// Whether other processes write this store too (Redis): then an empty store found later
    /// (Redis lost its data) is filled again with the running rules.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    pub fn describe(&self) -> String {
        match self {
            Store::File(f) => f.describe(),
            Store::Inline(_) => "inline".into(),
            Store::Redis(r) => r.describe(),
        }
    }

    /// How often to compare the store's version with the running one.
    pub fn poll_interval(&self) -> Duration {
        match self {
            Store::Redis(r) => r.poll_interval(),
            _ => FILE_POLL,
        }
    }

    /// Notifications of changes made by other processes (Redis pub/sub on one server); `None`
    /// where only polling notices them.
    pub fn subscribe(&self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        match self {
            Store::Redis(r) => r.subscribe(),
            _ => None,
        }
    }
}

/// What to say when a store that already holds rules is opened with a config file whose own
/// `rules:` differ from them: those rules are imported only into an empty store, so they do not
/// run, and without this line a user editing them would see nothing happen. `None` when the
/// config has no rules or they are exactly the stored ones (nothing is being ignored).
/// `config` are the config's rules as the store would keep them (`client_secret_file` resolved).
pub fn ignored_config_rules(store: &Store, stored: &[RuleConfig], config: &[RuleConfig]) -> Option<String> {
    let redo = match store {
        Store::File(f) => format!(
            "to import them instead, stop oidc-authz, delete {} and start it again",
            f.path().display()
        ),
        Store::Redis(_) => format!(
            "to import them instead, stop every replica, delete the key {} (redis-cli DEL '{}') and start them again",
            redis::KEY,
            redis::KEY
        ),
        // The config's rules are the store: never ignored.
        Store::Inline(_) => return None,
    };
    ignored_config_rules_message(&store.describe(), stored, config, &redo)
}

/// The message of `ignored_config_rules`, for a store described as `store`; `redo` says how to
/// re-import the config's rules.
fn ignored_config_rules_message(
    store: &str,
    stored: &[RuleConfig],
    config: &[RuleConfig],
    redo: &str,
) -> Option<String> {
    if config.is_empty() || stored == config {
        return None;
    }
    let differing: Vec<&str> = config
        .iter()
        .filter(|c| !stored.contains(c))
        .map(|c| c.name.as_str())
        .collect();
    let which = if differing.is_empty() {
        String::new()
    } else {
        format!(" (not as stored: {})", differing.join(", "))
    };
    Some(format!(
        "rules_store {store} already holds {} rule(s), which run: the config file's {} rule(s){which} were NOT imported \
         (the config's `rules:` are imported only into an empty store). Change rules through the admin API or console; \
         {redo}",
        stored.len(),
        config.len()
    ))
}

/// Runs blocking file I/O (fsync) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Io {
            path: "rule store".into(),
            message: format!("the worker stopped: {e}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, secret: &str) -> RuleConfig {
        serde_json::from_value(serde_json::json!({
            "name": name, "issuer": "https://idp.example.com",
            "redirect_url": "https://a.example.com/oauth2/callback",
            "client_id": "c", "client_secret": secret
        }))
        .unwrap()
    }

    #[test]
    fn config_rules_that_differ_from_a_filled_store_are_reported_as_ignored() {
        let stored = vec![rule("corp", "s"), rule("extra", "s")];
        let config = vec![rule("corp", "s"), rule("new", "s")];
        let message =
            ignored_config_rules_message("file:/x/rules.yaml", &stored, &config, "delete it").unwrap();
        assert!(
            message.contains("file:/x/rules.yaml already holds 2 rule(s)"),
            "{message}"
        );
        assert!(
            message.contains("config file's 2 rule(s) (not as stored: new) were NOT imported"),
            "{message}"
        );
        assert!(message.contains("delete it"), "{message}");
        // A changed secret counts as a difference (the new one does not run), but is never shown.
        let changed = vec![rule("corp", "rotated-secret-value")];
        let message = ignored_config_rules_message("s", &[rule("corp", "s")], &changed, "r").unwrap();
        assert!(message.contains("not as stored: corp"), "{message}");
        assert!(!message.contains("rotated-secret-value"), "{message}");
    }

    #[test]
    fn nothing_is_reported_when_the_config_has_no_rules_or_the_same_ones() {
        let stored = vec![rule("corp", "s")];
        assert_eq!(ignored_config_rules_message("s", &stored, &[], "r"), None);
        assert_eq!(
            ignored_config_rules_message("s", &stored, &stored.clone(), "r"),
            None
        );
    }

    #[test]
    fn an_inline_store_never_ignores_the_config_rules() {
        let store = Store::Inline(InlineStore::new(vec![rule("a", "s")]));
        assert_eq!(
            ignored_config_rules(&store, &[rule("a", "s")], &[rule("b", "s")]),
            None
        );
    }

    #[test]
    fn the_file_store_says_which_file_to_delete() {
        let store = Store::File(Arc::new(FileStore::new("/srv/oidc/rules.yaml".into())));
        let message = ignored_config_rules(&store, &[rule("a", "s")], &[rule("b", "s")]).unwrap();
        assert!(message.contains("delete /srv/oidc/rules.yaml"), "{message}");
    }
}
