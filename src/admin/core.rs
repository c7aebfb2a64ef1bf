//! Rule management, the one core behind the REST API, the gRPC service and the console: every
//! change is validated as a whole rule set, persisted before it is acknowledged, compiled and
//! swapped into the running `Check`, and written to the audit log without secrets.
//!
//! A change is an operation (add a condition, enable, edit…), not a new rule set: when the
//! store is shared (Redis) and another replica wrote first, the store answers `Conflict`, the
//! fresh rule set is loaded and swapped in, and the operation is applied again to it, a
//! bounded number of times. `sync` makes the running rules follow the store (outside edits of
//! the file, other replicas' writes, an emptied Redis filled again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::app::App;
use crate::config::{ConditionConfig, DefaultAction, RuleConfig};
use crate::decision::{explain_url, Explanation};
use crate::rules::RuleSet;
use crate::store::{Loaded, Store, StoreError, Version};

/// Shown instead of a client secret; sending it back keeps the stored secret.
pub const REDACTED: &str = "******";

/// How many times a change is applied to a freshly read rule set when other replicas keep
/// writing first, before it is answered `Conflict`.
const MAX_ATTEMPTS: u32 = 16;

/// What a rule change can fail with. The edges (REST, gRPC) map these by variant, never by
/// message text.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No rule has this name.
    #[error("no rule named `{0}`")]
    NotFound(String),
    /// A rule with this name exists already.
    #[error("a rule named `{0}` already exists")]
    Exists(String),
    /// The rule is enabled, and only a disabled rule may be deleted.
    #[error("rule `{0}` is enabled: disable it before deleting it")]
    Enabled(String),
    /// The store is read-only (`rules_store: inline`): rules change in the config file.
    #[error("{}", StoreError::ReadOnly)]
    ReadOnly,
    /// The change does not validate; `field` names what is wrong.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// Other replicas kept changing the rules: the change was retried and never stored.
    #[error("the rules kept changing on other replicas; nothing was stored: try again")]
    Conflict,
    /// The store could not be read or written (nothing was stored).
    #[error("the rule store failed: {0}")]
    Store(StoreError),
    /// The worker running the change stopped before it answered.
    #[error("the change was interrupted: {0}")]
    Interrupted(String),
}

impl AdminError {
    fn invalid(field: &str, message: impl Into<String>) -> AdminError {
        AdminError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ReadOnly => AdminError::ReadOnly,
            StoreError::Conflict => AdminError::Conflict,
            other => AdminError::Store(other),
        }
    }
}

pub struct RuleAdmin {
    app: Arc<App>,
    store: Store,
    default_action: DefaultAction,
    /// The stored rules, secrets included, and the version they were read or written at. Only
    /// held briefly (never across I/O); writers are serialised by `writer`.
    state: Mutex<State>,
    /// One change or sync at a time in this process, so none is lost here; other replicas are
    /// handled by the store's compare-and-set.
    writer: tokio::sync::Mutex<()>,
    /// Whether the store has been read since start-up (false until Redis first answers).
    synced: AtomicBool,
}

struct State {
    rules: Vec<RuleConfig>,
    version: Version,
    /// A stored version this replica cannot run (it does not parse or compile), and why: not
    /// read again until the store changes, and never the base of a write, so a change here
    /// cannot overwrite what it could not read (another release's rules during an upgrade).
    rejected: Option<(Version, String)>,
}

impl RuleAdmin {
    /// Opens the store. A local store (file, inline) is read now, and an empty one receives the
    /// config file's rules. A shared store (Redis) is not touched here: the config's rules run
    /// until the first `sync` reads the store (or imports them into an empty one).
    pub fn start(
        app: Arc<App>,
        store: Store,
        config_rules: &[RuleConfig],
        compiled_config_rules: Option<RuleSet>,
        default_action: DefaultAction,
    ) -> Result<RuleAdmin, AdminError> {
        let mut compiled_config_rules = compiled_config_rules;
        let imported: Vec<RuleConfig> = config_rules
            .iter()
            .cloned()
            .map(|mut r| {
                // The secret was read from the file at load; the store keeps the value.
                r.client_secret_file = None;
                r
            })
            .collect();
        let (rules, version, synced) = match &store {
            Store::Redis(_) => (imported, Version::default(), false),
            Store::Inline(inline) => (inline.load()?.unwrap_or_default(), Version::default(), true),
            Store::File(file) => match file.load()? {
                Some(rules) => {
                    // The store's own rules run; the config's (already checked) do not.
                    compiled_config_rules = None;
                    if let Some(message) = crate::store::ignored_config_rules(&store, &rules, &imported) {
                        tracing::warn!(store = %store.describe(), stored_rules = rules.len(), config_rules = imported.len(), "{message}");
                    }
                    (rules, file.version(), true)
                }
                None => {
                    if !imported.is_empty() {
                        file.save(&imported)?;
                        tracing::info!(target: "audit", store = %file.describe(), rules = imported.len(), "audit: imported the config file's rules into the empty store");
                    }
                    (imported, file.version(), true)
                }
            },
        };
        // The config's rules, when they are what runs and the caller compiled them already,
        // are not compiled a second time.
        let compiled = match compiled_config_rules {
            Some(compiled) => compiled,
            None => compile(&rules, default_action)?,
        };
        app.replace_rules(compiled);
        if !synced {
            app.set_rule_store_problem(Some(format!(
                "{}: the rule set has not been read yet; running the config file's rules",
                store.describe()
            )));
        }
        Ok(RuleAdmin {
            app,
            store,
            default_action,
            state: Mutex::new(State {
                rules,
                version,
                rejected: None,
            }),
            writer: tokio::sync::Mutex::new(()),
            synced: AtomicBool::new(synced),
        })
    }

    pub fn read_only(&self) -> bool {
        self.store.read_only()
    }

    /// Whether the store has been read since start-up.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// What the store is (for logs).
    pub fn describe_store(&self) -> String {
        self.store.describe()
    }

    /// How often `sync` should run, and the store's change notifications, if it has any.
    pub fn poll_interval(&self) -> Duration {
        self.store.poll_interval()
    }

    pub fn subscribe(&self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        self.store.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn list(&self) -> Vec<RuleConfig> {
        self.lock().rules.iter().map(redact).collect()
    }

    pub fn get(&self, name: &str) -> Result<RuleConfig, AdminError> {
        self.lock()
            .rules
            .iter()
            .find(|r| r.name == name)
            .map(redact)
            .ok_or_else(|| AdminError::NotFound(name.into()))
    }

    /// Applies `change` to a copy of the rules; if the result compiles, stores it (comparing
    /// versions), swaps it in, and answers the changed rule (redacted). When another replica
    /// wrote first, the fresh rules are loaded and `change` is applied to them again. Nothing
    /// is stored when `change` or the compile fails.
    async fn change(
        &self,
        action: &str,
        name: &str,
        change: impl Fn(&mut Vec<RuleConfig>) -> Result<Option<String>, AdminError>,
    ) -> Result<Option<RuleConfig>, AdminError> {
        if self.store.read_only() {
            return Err(AdminError::ReadOnly);
        }
        let _writer = self.writer.lock().await;
        for attempt in 0..MAX_ATTEMPTS {
            let (mut rules, version) = {
                let state = self.lock();
                (state.rules.clone(), state.version.clone())
            };
            let answer_name = change(&mut rules)?;
            let compiled = compile(&rules, self.default_action)?;
            match self.store.save(&rules, &version).await {
                Ok(version) => {
                    self.app.replace_rules(compiled);
                    self.mark_synced();
                    let mut state = self.lock();
                    state.rules = rules;
                    state.version = version;
                    tracing::info!(target: "audit", action, rule = name, attempt = attempt + 1, at = %humantime::format_rfc3339_seconds(SystemTime::now()), "audit: rule changed");
                    return Ok(answer_name.and_then(|n| state.rules.iter().find(|r| r.name == n).map(redact)));
                }
                Err(StoreError::Conflict) => {
                    // Another replica wrote first: take its rules (they run here too) and
                    // apply the operation again, after a short random pause.
                    self.refresh(false).await?;
                    let pause = rand::random::<u64>() % (5 * u64::from(attempt + 1));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(
            action,
            rule = name,
            attempts = MAX_ATTEMPTS,
            "rule change abandoned: other replicas kept writing first"
        );
        Err(AdminError::Conflict)
    }

    pub async fn create(&self, rule: RuleConfig) -> Result<RuleConfig, AdminError> {
        let name = rule.name.clone();
        self.change("create", &name, |rules| {
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(AdminError::Exists(rule.name.clone()));
            }
            let rule = normalize_incoming(rule.clone(), None)?;
            rules.push(rule);
            Ok(Some(name.clone()))
        })
        .await?
        .ok_or_else(|| AdminError::NotFound(name.clone()))
    }

    /// Replaces a rule; an omitted or redacted secret keeps the stored one, unless the rule now
    /// points elsewhere (`issuer`, `discovery_url` or `client_id` changed): then the secret must
    /// be sent again, so the admin token alone cannot send the stored secret to another host.
    pub async fn update(&self, name: &str, rule: RuleConfig) -> Result<RuleConfig, AdminError> {
        let new_name = rule.name.clone();
        self.change("update", name, |rules| {
            let i = rules
                .iter()
                .position(|r| r.name == name)
                .ok_or_else(|| AdminError::NotFound(name.into()))?;
            if new_name != name {
                return Err(AdminError::invalid(
                    "name",
                    format!("a rule cannot be renamed (`{name}` to `{new_name}`): create a new rule instead"),
                ));
            }
            let stored = kept_secret(&rules[i], &rule)?;
            rules[i] = normalize_incoming(rule.clone(), stored)?;
            Ok(Some(new_name.clone()))
        })
        .await?
        .ok_or_else(|| AdminError::NotFound(name.into()))
    }

    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<RuleConfig, AdminError> {
        self.change(if enabled { "enable" } else { "disable" }, name, |rules| {
            let r = rules
                .iter_mut()
                .find(|r| r.name == name)
                .ok_or_else(|| AdminError::NotFound(name.into()))?;
            r.enabled = enabled;
            Ok(Some(name.to_string()))
        })
        .await?
        .ok_or_else(|| AdminError::NotFound(name.into()))
    }

    pub async fn add_condition(
        &self,
        name: &str,
        condition: ConditionConfig,
    ) -> Result<RuleConfig, AdminError> {
        self.change("add_condition", name, |rules| {
            let r = rules
                .iter_mut()
                .find(|r| r.name == name)
                .ok_or_else(|| AdminError::NotFound(name.into()))?;
            r.authorization.conditions.push(condition.clone());
            Ok(Some(name.to_string()))
        })
        .await?
        .ok_or_else(|| AdminError::NotFound(name.into()))
    }

    /// Deletes a disabled rule.
    pub async fn delete(&self, name: &str) -> Result<(), AdminError> {
        self.change("delete", name, |rules| {
            let i = rules
                .iter()
                .position(|r| r.name == name)
                .ok_or_else(|| AdminError::NotFound(name.into()))?;
            if rules[i].enabled {
                return Err(AdminError::Enabled(name.into()));
            }
            rules.remove(i);
            Ok(None)
        })
        .await
        .map(|_| ())
    }

    pub fn explain(&self, url: &str) -> Result<Explanation, AdminError> {
        explain_url(&self.app.rules.load(), url).map_err(|m| AdminError::invalid("url", m))
    }

    /// Makes the running rules follow the store when its version differs from the running one
    /// (or always, when `force`, for SIGHUP): outside edits of the file, other replicas'
    /// writes. A shared store found empty (Redis lost its data, or this is the first start) is
    /// filled with the running rules, once across replicas. An invalid stored set is logged
    /// and the running rules are kept. Answers whether the running rules changed.
    pub async fn sync(&self, force: bool) -> Result<bool, AdminError> {
        let _writer = self.writer.lock().await;
        self.refresh(force).await
    }

    /// `sync`, with `writer` held by the caller.
    async fn refresh(&self, force: bool) -> Result<bool, AdminError> {
        let result = self.refresh_inner(force).await;
        if let Err(AdminError::Store(e)) = &result {
            if !self.synced() {
                self.app.set_rule_store_problem(Some(format!(
                    "{e}; running the config file's rules until it answers"
                )));
            }
        }
        result
    }

    async fn refresh_inner(&self, force: bool) -> Result<bool, AdminError> {
        let version = self.store.version().await?;
        // Before the first read of a shared store, the running rules are the config file's.
        let config_rules = (!self.synced() && !version.is_empty()).then(|| self.lock().rules.clone());
        if !force && self.synced() && version == self.lock().version {
            return Ok(false);
        }
        if let Some((rejected, why)) = &self.lock().rejected {
            if !force && *rejected == version {
                return Err(self.unusable(why.clone()));
            }
        }
        let loaded = if version.is_empty() && self.store.is_shared() {
            let running = self.lock().rules.clone();
            match self.store.import(&running).await {
                Ok((loaded, wrote)) => {
                    if wrote {
                        tracing::info!(target: "audit", store = %self.store.describe(), rules = running.len(), "audit: imported the running rules into the empty store");
                    }
                    Ok(loaded)
                }
                Err(e) => Err(e),
            }
        } else {
            self.store.load().await
        };
        let loaded = match loaded {
            Err(StoreError::Corrupt { message, .. }) => {
                self.mark_synced();
                self.lock().rejected = Some((version, message.clone()));
                return Err(self.unusable(message));
            }
            other => other?,
        };
        let Loaded { rules, version } = loaded;
        if let (Some(config_rules), Some(stored)) = (&config_rules, &rules) {
            if let Some(message) = crate::store::ignored_config_rules(&self.store, stored, config_rules) {
                tracing::warn!(store = %self.store.describe(), stored_rules = stored.len(), config_rules = config_rules.len(), "{message}");
            }
        }
        self.mark_synced();
        let Some(rules) = rules else {
            let mut state = self.lock();
            state.version = version;
            state.rejected = None;
            return Ok(false);
        };
        if rules == self.lock().rules {
            let mut state = self.lock();
            state.version = version;
            state.rejected = None;
            return Ok(false);
        }
        let compiled = match compile(&rules, self.default_action) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("the stored rules do not compile: {e}");
                self.lock().rejected = Some((version, why.clone()));
                return Err(self.unusable(why));
            }
        };
        self.app.replace_rules(compiled);
        let mut state = self.lock();
        state.rules = rules;
        state.version = version;
        state.rejected = None;
        tracing::info!(target: "audit", action = "reload", store = %self.store.describe(), "audit: rules reloaded from the store");
        Ok(true)
    }

    /// The stored rule set cannot be run by this replica: the running rules are kept, and
    /// changes are refused (503) until the store holds a set it can run.
    fn unusable(&self, why: String) -> AdminError {
        AdminError::Store(StoreError::Corrupt {
            path: self.store.describe(),
            message: format!("{why}; keeping the running rules"),
        })
    }

    fn mark_synced(&self) {
        if !self.synced.swap(true, Ordering::Relaxed) {
            self.app.set_rule_store_problem(None);
            tracing::info!(store = %self.store.describe(), "rule store read");
        }
    }
}

/// The stored secret an edit may keep: none when the edit changes where the secret would be
/// sent (`issuer`, `discovery_url`: the token endpoint comes from discovery) or whom it belongs
/// to (`client_id`). Then an edit without a new secret is refused.
fn kept_secret(stored: &RuleConfig, incoming: &RuleConfig) -> Result<Option<String>, AdminError> {
    let given = incoming
        .client_secret
        .as_deref()
        .is_some_and(|s| s != REDACTED && !s.is_empty());
    let blank_is_none = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    // A blank issuer or client_id is no move: validation refuses it, naming that field, and
    // nothing is sent anywhere.
    let changed = |old: &str, new: &str| !new.trim().is_empty() && old != new;
    let moved = if changed(&stored.issuer, &incoming.issuer) {
        Some("issuer")
    } else if blank_is_none(&stored.discovery_url) != blank_is_none(&incoming.discovery_url) {
        Some("discovery_url")
    } else if changed(&stored.client_id, &incoming.client_id) {
        Some("client_id")
    } else {
        None
    };
    match moved {
        None => Ok(stored.client_secret.clone()),
        Some(_) if given => Ok(None),
        Some(field) => Err(AdminError::invalid(
            "client_secret",
            format!("`{field}` changed: send client_secret again (the stored secret is kept only for the same issuer, discovery_url and client_id)"),
        )),
    }
}

/// The secret rules for an incoming rule: a new rule needs a real secret; an edit may keep
/// the stored one by omitting it or sending it redacted.
fn normalize_incoming(mut rule: RuleConfig, stored: Option<String>) -> Result<RuleConfig, AdminError> {
    if rule.client_secret_file.is_some() {
        return Err(AdminError::invalid(
            "client_secret_file",
            "not accepted through the API: send client_secret",
        ));
    }
    let given = rule
        .client_secret
        .take()
        .filter(|s| s != REDACTED && !s.is_empty());
    rule.client_secret = match (given, stored) {
        (Some(s), _) => Some(s),
        (None, Some(s)) => Some(s),
        (None, None) => return Err(AdminError::invalid("client_secret", "is required")),
    };
    Ok(rule)
}

fn compile(rules: &[RuleConfig], default_action: DefaultAction) -> Result<RuleSet, AdminError> {
    RuleSet::compile(rules, default_action).map_err(|errors| {
        let field = errors.first().map(|e| e.field.clone()).unwrap_or_default();
        let message = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        AdminError::Invalid { field, message }
    })
}

/// A rule as the API shows it: the secret replaced by `******`.
pub fn redact(rule: &RuleConfig) -> RuleConfig {
    let mut r = rule.clone();
    r.client_secret = Some(REDACTED.into());
    r.client_secret_file = None;
    r
}
