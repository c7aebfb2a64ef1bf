//! The rules to start with: the store's, or, when the store is empty (or `inline`), the config
//! file's own `rules`. Reads only: `validate` and `explain` never write; `serve` imports the
//! config's rules into an empty store (see `admin::core`).

use crate::config::{Config, ConfigError, ConfigErrors, RuleConfig};
use crate::rules::RuleSet;
use crate::store;

/// The rule configs to run with, and whether they came from the config file (an empty store).
pub fn initial_configs(config: &Config) -> Result<(Vec<RuleConfig>, bool), ConfigErrors> {
    let fail = |file: String, message: String| {
        ConfigErrors(vec![ConfigError {
            file,
            rule: None,
            field: "rules_store".into(),
            message,
        }])
    };
    let store = store::open(config).map_err(|e| fail(config.path.display().to_string(), e.to_string()))?;
    match store.load() {
        Ok(Some(rules)) => Ok((rules, false)),
        Ok(None) => Ok((config.rules.clone(), true)),
        Err(e) => Err(fail(store.describe(), e.to_string())),
    }
}

/// The rules to run with, compiled. Errors name the store file when the rules came from it.
pub fn initial_rules(config: &Config) -> Result<RuleSet, ConfigErrors> {
    let (rules, from_config) = initial_configs(config)?;
    let file = match (&config.rules_store, from_config) {
        (crate::config::RulesStore::File(p), false) => p.display().to_string(),
        _ => config.path.display().to_string(),
    };
    RuleSet::compile(&rules, config.default_action).map_err(|errors| {
        ConfigErrors(
            errors
                .into_iter()
                .map(|e| ConfigError {
                    file: file.clone(),
                    rule: Some(e.rule),
                    field: e.field,
                    message: e.message,
                })
                .collect(),
        )
    })
}
