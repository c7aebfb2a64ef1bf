//! Where the running rules come from at start-up: the `rules_store` (a `file:` store holding
//! `rules:`), or the config file's own `rules` when the store is `inline` or still empty.
//! Writing to the store, and the Redis store, arrive with the admin API.

use std::path::Path;

use serde::Deserialize;

use crate::config::{Config, ConfigError, ConfigErrors, RuleConfig, RulesStore};
use crate::rules::RuleSet;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

/// The rules to run with, compiled.
pub fn initial_rules(config: &Config) -> Result<RuleSet, ConfigErrors> {
    let rules = match &config.rules_store {
        RulesStore::File(path) if path.exists() => read_store_file(path)?,
        RulesStore::Redis(_) => {
            return Err(ConfigErrors(vec![ConfigError {
                file: config.path.display().to_string(),
                rule: None,
                field: "rules_store".into(),
                message:
                    "the redis rule store is not supported by this release; use file:PATH or inline"
                        .into(),
            }]))
        }
        _ => config.rules.clone(),
    };
    let file = match &config.rules_store {
        RulesStore::File(p) if p.exists() => p.display().to_string(),
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

fn read_store_file(path: &Path) -> Result<Vec<RuleConfig>, ConfigErrors> {
    let file = path.display().to_string();
    let fail = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            rule: None,
            field: "rules".into(),
            message,
        }])
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let store: StoreFile =
        serde_saphyr::from_str(&text).map_err(|e| fail(format!("not a valid rule store: {e}")))?;
    Ok(store.rules)
}
