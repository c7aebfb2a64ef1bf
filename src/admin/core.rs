//! Rule management, the one core behind the REST API, the gRPC service and the console: every
//! change is validated as a whole rule set, persisted (atomically) before it is acknowledged,
//! compiled and swapped into the running `Check`, and written to the audit log without secrets.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::app::App;
use crate::config::{ConditionConfig, DefaultAction, RuleConfig};
use crate::decision::{explain_url, Explanation};
use crate::rules::RuleSet;
use crate::store::{RuleStore, StoreError};

/// Shown instead of a client secret; sending it back keeps the stored secret.
pub const REDACTED: &str = "******";

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
    /// The store could not be read or written.
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
            other => AdminError::Store(other),
        }
    }
}

pub struct RuleAdmin {
    app: Arc<App>,
    store: Box<dyn RuleStore>,
    default_action: DefaultAction,
    /// The stored rules, secrets included. Held across validate, persist and swap, so changes
    /// apply one at a time and none is lost.
    state: Mutex<State>,
}

struct State {
    rules: Vec<RuleConfig>,
    /// The store's version after our last write or load, to notice external edits.
    version: Option<SystemTime>,
}

impl RuleAdmin {
    /// Opens the store; an empty store receives the config file's rules.
    pub fn start(
        app: Arc<App>,
        store: Box<dyn RuleStore>,
        config_rules: &[RuleConfig],
        compiled_config_rules: Option<RuleSet>,
        default_action: DefaultAction,
    ) -> Result<RuleAdmin, AdminError> {
        let mut compiled_config_rules = compiled_config_rules;
        let rules = match store.load()? {
            Some(rules) => {
                // The store's own rules run; the config's (already checked) do not.
                compiled_config_rules = None;
                rules
            }
            None => {
                let imported: Vec<RuleConfig> = config_rules
                    .iter()
                    .cloned()
                    .map(|mut r| {
                        // The secret was read from the file at load; the store keeps the value.
                        r.client_secret_file = None;
                        r
                    })
                    .collect();
                if !store.read_only() && !imported.is_empty() {
                    store.save(&imported)?;
                    tracing::info!(target: "audit", store = %store.describe(), rules = imported.len(), "audit: imported the config file's rules into the empty store");
                }
                imported
            }
        };
        // The config's rules, when they are what runs and the caller compiled them already,
        // are not compiled a second time.
        let compiled = match compiled_config_rules {
            Some(compiled) => compiled,
            None => compile(&rules, default_action)?,
        };
        app.replace_rules(compiled);
        let version = store.version();
        Ok(RuleAdmin {
            app,
            store,
            default_action,
            state: Mutex::new(State { rules, version }),
        })
    }

    pub fn read_only(&self) -> bool {
        self.store.read_only()
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

    /// Applies `change` to a copy of the rules; if the result compiles, persists it, swaps it
    /// in, and answers the changed rule (redacted). Nothing is stored otherwise.
    fn change(
        &self,
        action: &str,
        name: &str,
        change: impl FnOnce(&mut Vec<RuleConfig>) -> Result<Option<String>, AdminError>,
    ) -> Result<Option<RuleConfig>, AdminError> {
        if self.store.read_only() {
            return Err(AdminError::ReadOnly);
        }
        let mut state = self.lock();
        let mut rules = state.rules.clone();
        let answer_name = change(&mut rules)?;
        let compiled = compile(&rules, self.default_action)?;
        self.store.save(&rules)?;
        self.app.replace_rules(compiled);
        state.rules = rules;
        state.version = self.store.version();
        tracing::info!(target: "audit", action, rule = name, at = %humantime::format_rfc3339_seconds(SystemTime::now()), "audit: rule changed");
        Ok(answer_name.and_then(|n| state.rules.iter().find(|r| r.name == n).map(redact)))
    }

    pub fn create(&self, rule: RuleConfig) -> Result<RuleConfig, AdminError> {
        let name = rule.name.clone();
        self.change("create", &name, |rules| {
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(AdminError::Exists(rule.name.clone()));
            }
            let rule = normalize_incoming(rule, None)?;
            rules.push(rule);
            Ok(Some(name.clone()))
        })?
        .ok_or_else(|| AdminError::NotFound(name.clone()))
    }

    /// Replaces a rule; an omitted or redacted secret keeps the stored one, unless the rule now
    /// points elsewhere (`issuer`, `discovery_url` or `client_id` changed): then the secret must
    /// be sent again, so the admin token alone cannot send the stored secret to another host.
    pub fn update(&self, name: &str, rule: RuleConfig) -> Result<RuleConfig, AdminError> {
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
            rules[i] = normalize_incoming(rule, stored)?;
            Ok(Some(new_name.clone()))
        })?
        .ok_or_else(|| AdminError::NotFound(name.into()))
    }

    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<RuleConfig, AdminError> {
        self.change(if enabled { "enable" } else { "disable" }, name, |rules| {
            let r = rules
                .iter_mut()
                .find(|r| r.name == name)
                .ok_or_else(|| AdminError::NotFound(name.into()))?;
            r.enabled = enabled;
            Ok(Some(name.to_string()))
        })?
        .ok_or_else(|| AdminError::NotFound(name.into()))
    }

    pub fn add_condition(&self, name: &str, condition: ConditionConfig) -> Result<RuleConfig, AdminError> {
        self.change("add_condition", name, |rules| {
            let r = rules
                .iter_mut()
                .find(|r| r.name == name)
                .ok_or_else(|| AdminError::NotFound(name.into()))?;
            r.authorization.conditions.push(condition);
            Ok(Some(name.to_string()))
        })?
        .ok_or_else(|| AdminError::NotFound(name.into()))
    }

    /// Deletes a disabled rule.
    pub fn delete(&self, name: &str) -> Result<(), AdminError> {
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
        .map(|_| ())
    }

    pub fn explain(&self, url: &str) -> Result<Explanation, AdminError> {
        explain_url(&self.app.rules.load(), url).map_err(|m| AdminError::invalid("url", m))
    }

    /// Reloads the store if it changed outside this process (or when `force`, for SIGHUP).
    /// An invalid store is logged and the running rules are kept.
    pub fn reload(&self, force: bool) -> Result<bool, AdminError> {
        let mut state = self.lock();
        let version = self.store.version();
        if !force && version == state.version {
            return Ok(false);
        }
        let Some(rules) = self.store.load()? else {
            state.version = version;
            return Ok(false);
        };
        let compiled = compile(&rules, self.default_action)?;
        self.app.replace_rules(compiled);
        state.rules = rules;
        state.version = version;
        tracing::info!(target: "audit", action = "reload", store = %self.store.describe(), "audit: rules reloaded from the store");
        Ok(true)
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
