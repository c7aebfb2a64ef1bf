//! The rules to start with: the store's, or, when the store is empty (or `inline`), the config
//! file's own `rules` (with a Redis store, always the config's here: `serve` reads Redis
//! later, in `admin::core`, and `validate`/`explain` never touch the network). Reads only: `validate` and `explain` never write; `serve` imports the
//! config's rules into an empty store (see `admin::core`).
//!
//! It is also where a configuration file and its rules meet: `config` only parses and `rules`
//! only compiles, so reading a file whole (its rules compiled, their errors reported with the
//! others) and turning a `RuleError` into a `ConfigError` happen here, once.

use std::path::Path;

use crate::config::{Config, ConfigError, ConfigErrors, DefaultAction, Draft, RuleConfig, RulesStore};
use crate::rules::{RuleError, RuleSet};
use crate::store;

/// A rule's compile error as a configuration error of `file`. The one place this mapping lives.
fn config_error(file: &str, error: RuleError) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        rule: Some(error.rule),
        field: error.field,
        message: error.message,
    }
}

/// Compiles rules read from `file`, reporting every problem as a configuration error of it.
pub fn compile(
    rules: &[RuleConfig],
    default_action: DefaultAction,
    file: &str,
) -> Result<RuleSet, ConfigErrors> {
    RuleSet::compile(rules, default_action)
        .map_err(|errors| ConfigErrors(errors.into_iter().map(|e| config_error(file, e)).collect()))
}

/// Reads a configuration file and compiles its own rules: the configuration and those rules, or
/// every problem of both in one list. Never touches the network.
pub fn load_config(path: &Path) -> Result<(Config, RuleSet), ConfigErrors> {
    finish_compiled(Draft::read(path)?)
}

/// As `load_config`, for configuration text (see `Config::parse` for the arguments).
pub fn parse_config(
    text: &str,
    file: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, RuleSet), ConfigErrors> {
    finish_compiled(Draft::parse(text, file, base, env))
}

/// Compiles the draft's rules even when the rest of the file is broken, so that one run reports
/// everything, rule errors between the parse errors and the section checks.
fn finish_compiled(mut draft: Draft) -> Result<(Config, RuleSet), ConfigErrors> {
    let compiled = compile(draft.rules(), draft.default_action(), draft.file());
    let rules = match compiled {
        Ok(rules) => Some(rules),
        Err(ConfigErrors(errors)) => {
            draft.report(errors);
            None
        }
    };
    let config = draft.finish()?;
    match rules {
        Some(rules) => Ok((config, rules)),
        // Unreachable: `finish` fails whenever errors were reported.
        None => Err(ConfigErrors(Vec::new())),
    }
}

/// The rule configs to run with, and whether they came from the config file (an empty store).
fn initial_configs(config: &Config) -> Result<(Vec<RuleConfig>, bool), ConfigErrors> {
    let fail = |file: String, message: String| {
        ConfigErrors(vec![ConfigError {
            file,
            rule: None,
            field: "rules_store".into(),
            message,
        }])
    };
    let loaded = match &config.rules_store {
        RulesStore::File(path) => {
            let file = store::FileStore::new(path.clone());
            file.load().map_err(|e| fail(file.describe(), e.to_string()))?
        }
        // `inline`: the config's rules are the store. Redis: `validate` and `explain` never
        // touch the network, so they read the config's rules; `serve` reads Redis (admin::core).
        RulesStore::Inline | RulesStore::Redis(_) | RulesStore::SessionRedis => None,
    };
    match loaded {
        Some(rules) => Ok((rules, false)),
        None => Ok((config.rules.clone(), true)),
    }
}

/// The rules to run with, compiled. Errors name the store file when the rules came from it.
pub fn initial_rules(config: &Config) -> Result<RuleSet, ConfigErrors> {
    let (rules, from_config) = initial_configs(config)?;
    compile(&rules, config.default_action, &rules_file(config, from_config))
}

/// As `initial_rules`, reusing `own`, the config file's rules already compiled (by
/// `load_config`), when the store is empty.
pub fn initial_rules_with(config: &Config, own: RuleSet) -> Result<RuleSet, ConfigErrors> {
    match initial_configs(config)? {
        (_, true) => Ok(own),
        (rules, false) => compile(&rules, config.default_action, &rules_file(config, false)),
    }
}

/// The file errors in the running rules name: the store file, or the config file.
fn rules_file(config: &Config, from_config: bool) -> String {
    match (&config.rules_store, from_config) {
        (RulesStore::File(p), false) => p.display().to_string(),
        _ => config.path.display().to_string(),
    }
}
