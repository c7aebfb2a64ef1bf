//! The configuration file: its schema and the one way in, `Config::load`/`Config::parse`.
//! Every problem is reported with the file, the rule and the field, and all of them are collected
//! before giving up, so one `validate` run shows them all.
//!
//! This module only parses: it knows nothing of compiled rules (`rules` depends on it, never the
//! reverse). `rule_source` compiles a file's rules between `Draft::parse` and `Draft::finish`, so
//! that rule errors are reported with the others. `env` does `${NAME}` substitution, `checks` the
//! semantic checks of the top-level sections.

mod checks;
mod env;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One configuration problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// The rule's name (or `#index` when it has none), when the problem is inside a rule.
    pub rule: Option<String>,
    /// Dotted path of the field, e.g. `authorization.conditions[0].path`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some(rule) = &self.rule {
            write!(f, "rule \"{rule}\": ")?;
        }
        write!(f, "field \"{}\": {}", self.field, self.message)
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The whole file, after substitution and the checks in this module.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConfig,
    pub session: SessionConfig,
    pub caches: CachesConfig,
    pub rules_store: RulesStore,
    pub default_action: DefaultAction,
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTop {
    #[serde(default)]
    server: ServerConfig,
    session: SessionConfig,
    #[serde(default)]
    caches: CachesConfig,
    #[serde(default)]
    rules_store: Option<String>,
    #[serde(default)]
    default_action: DefaultAction,
    // Rules are deserialized one by one, so that errors in several rules are all reported.
    #[serde(default)]
    #[allow(dead_code)]
    rules: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: String,
    #[serde(default = "default_http_listen")]
    pub http_listen: String,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    #[serde(default)]
    pub admin_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_listen: default_grpc_listen(),
            http_listen: default_http_listen(),
            admin_listen: default_admin_listen(),
            admin_token: None,
        }
    }
}

fn default_grpc_listen() -> String {
    "0.0.0.0:9001".into()
}
fn default_http_listen() -> String {
    "0.0.0.0:9002".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9003".into()
}

impl ServerConfig {
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_listen.parse().ok()
    }
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_listen.parse().ok()
    }
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listen.parse().ok()
    }
}

/// What the caches that grow with traffic may hold, in bytes (DESIGN P6: memory is bounded by
/// configured capacities). Written `64MiB`, `512KiB`, `1GiB`, `100MB` or a number of bytes;
/// `0` keeps nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachesConfig {
    /// Session cookies already opened (`session::opened`), by the cookie's bytes and the
    /// session's.
    #[serde(default = "default_sessions_cache", with = "byte_size")]
    pub sessions: u64,
    /// Verified bearer tokens, per issuer (estimated from each token's length).
    #[serde(default = "default_tokens_cache", with = "byte_size")]
    pub tokens: u64,
}

impl Default for CachesConfig {
    fn default() -> Self {
        CachesConfig {
            sessions: default_sessions_cache(),
            tokens: default_tokens_cache(),
        }
    }
}

/// `caches.sessions` unless the file says.
pub const DEFAULT_SESSIONS_CACHE: u64 = 64 * 1024 * 1024;
/// `caches.tokens` unless the file says.
pub const DEFAULT_TOKENS_CACHE: u64 = 32 * 1024 * 1024;

fn default_sessions_cache() -> u64 {
    DEFAULT_SESSIONS_CACHE
}
fn default_tokens_cache() -> u64 {
    DEFAULT_TOKENS_CACHE
}

/// Sizes in bytes: a number, or a number and a unit (`KB`, `MB`, `GB` are powers of 1000;
/// `KiB`, `MiB`, `GiB` of 1024; `B` is bytes).
mod byte_size {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Written::deserialize(d)? {
            Written::Number(n) => Ok(n),
            Written::Text(text) => parse(&text).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a size like 64MiB, 512KiB, 1GiB, 100MB or a number of bytes"
                ))
            }),
        }
    }

    pub fn parse(text: &str) -> Option<u64> {
        let text = text.trim();
        let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: u64 = number.parse().ok()?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            "KiB" => 1024,
            "MiB" => 1024 * 1024,
            "GiB" => 1024 * 1024 * 1024,
            _ => return None,
        };
        number.checked_mul(scale)
    }

    #[cfg(test)]
    mod tests {
        use super::parse;

        #[test]
        fn sizes_read_as_written() {
            assert_eq!(parse("64MiB"), Some(64 << 20));
            assert_eq!(parse("512 KiB"), Some(512 << 10));
            assert_eq!(parse("100MB"), Some(100_000_000));
            assert_eq!(parse("0"), Some(0));
            assert_eq!(parse("1GiB"), Some(1 << 30));
            assert_eq!(parse("12"), Some(12));
            for bad in ["", "MiB", "-1MiB", "1.5MiB", "10 parsecs", "99999999999999GiB"] {
                assert_eq!(parse(bad), None, "{bad}");
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStoreKind {
    #[default]
    Cookie,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    #[default]
    Lax,
    Strict,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    pub secrets: Vec<String>,
    #[serde(default)]
    pub store: SessionStoreKind,
    /// One Redis server (`redis://`, `rediss://`), for `store: redis`, shared revocations and a
    /// `redis` rule store.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Instead of `redis_url`: the seed nodes of a Redis Cluster.
    #[serde(default)]
    pub redis_cluster: Vec<String>,
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    #[serde(default = "yes")]
    pub secure: bool,
    #[serde(default)]
    pub same_site: SameSite,
    #[serde(default = "default_max_lifetime", with = "duration_text")]
    pub max_lifetime: Duration,
    /// How long past its token's expiry a session is still served while the IdP cannot be
    /// reached (or answers 5xx) at refresh. `0s`: not at all.
    #[serde(default = "default_refresh_grace", with = "duration_text")]
    pub refresh_grace: Duration,
}

fn default_cookie_name() -> String {
    "_oidc_authz".into()
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_refresh_grace() -> Duration {
    Duration::from_secs(5 * 60)
}
fn yes() -> bool {
    true
}

/// Durations are written `30s`, `15m`, `24h`. They are counted in whole seconds (cookies and
/// session times are), so a fraction is rounded up: `500ms` is 1 s, never 0.
mod duration_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 30s, 15m or 24h ({e})"))
        })?;
        let whole = parsed
            .as_secs()
            .saturating_add(u64::from(parsed.subsec_nanos() > 0));
        Ok(Duration::from_secs(whole))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesStore {
    /// The rules in this file are the store (read-only API).
    Inline,
    /// A YAML file holding `rules:`; relative paths are relative to the config file.
    File(PathBuf),
    /// The rule set in Redis at this address (`redis://…`, `rediss://…`).
    Redis(String),
    /// `rules_store: redis`: the rule set in the Redis of `session.redis_url` or
    /// `session.redis_cluster`.
    SessionRedis,
}

/// Where Redis is, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddress {
    /// `session.redis_url` (or a `rules_store: redis://…` URL).
    Server(String),
    /// `session.redis_cluster`.
    Cluster(Vec<String>),
}

impl SessionConfig {
    /// The Redis that sessions and revocations use, when one is configured.
    pub fn redis(&self) -> Option<RedisAddress> {
        match (&self.redis_url, self.redis_cluster.is_empty()) {
            (Some(url), _) => Some(RedisAddress::Server(url.clone())),
            (None, false) => Some(RedisAddress::Cluster(self.redis_cluster.clone())),
            (None, true) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleType {
    #[default]
    Oidc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizationMode {
    #[default]
    Whitelist,
    Blacklist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamToken {
    #[default]
    IdToken,
    AccessToken,
    None,
}

/// How a condition's `path` is compared with the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMatch {
    /// String equality.
    Exact,
    /// Plain string prefix, as Envoy's: `/public` matches `/publicity` too.
    #[default]
    Prefix,
    /// Whole-path match by the linear-time `regex` engine.
    Regex,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, rename = "match")]
    pub path_match: PathMatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    #[serde(default)]
    pub mode: AuthorizationMode,
    #[serde(default)]
    pub conditions: Vec<ConditionConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedConfig {
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub email_domains: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl AllowedConfig {
    pub fn is_empty(&self) -> bool {
        self.emails.is_empty() && self.email_domains.is_empty() && self.groups.is_empty()
    }
}

/// One authentication rule, as written in the file (and, later, in the rule store and the API).
/// Its `Debug` output redacts the client secret.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, rename = "type")]
    pub kind: RuleType,
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,
    pub redirect_url: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    #[serde(default)]
    pub cookie_domain: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub authorization: AuthorizationConfig,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub upstream_token: UpstreamToken,
    #[serde(default)]
    pub allowed: AllowedConfig,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_logout_redirect_url: Option<String>,
    #[serde(default)]
    pub insecure_allow_http: bool,
    /// Trust an email whose `email_verified` claim is `false` (for `allowed` and the email header).
    #[serde(default)]
    pub allow_unverified_email: bool,
}

impl fmt::Debug for RuleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleConfig")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("issuer", &self.issuer)
            .field("discovery_url", &self.discovery_url)
            .field("redirect_url", &self.redirect_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "******"))
            .field("client_secret_file", &self.client_secret_file)
            .field("cookie_domain", &self.cookie_domain)
            .field("scope", &self.scope)
            .field("authorization", &self.authorization)
            .field("domains", &self.domains)
            .field("upstream_token", &self.upstream_token)
            .field("allowed", &self.allowed)
            .field("audiences", &self.audiences)
            .field("post_logout_redirect_url", &self.post_logout_redirect_url)
            .field("insecure_allow_http", &self.insecure_allow_http)
            .field("allow_unverified_email", &self.allow_unverified_email)
            .finish()
    }
}

/// Minimum length of a session secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Minimum length of `server.admin_token`, in characters.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

impl Config {
    /// Reads, substitutes and checks a configuration file. Does not compile its rules (see
    /// `rule_source::load_config`, which does). Never touches the network.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Draft::read(path)?.finish()
    }

    /// Parses configuration text. `file` names it in errors, `base` resolves relative paths and
    /// `env` looks up `${VAR}`s. Does not compile the rules (see `rule_source::parse_config`).
    pub fn parse(
        text: &str,
        file: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Draft::parse(text, file, base, env).finish()
    }
}

/// A file substituted and deserialized, with the problems found so far, before the checks of its
/// top-level sections. Its rules are there even when other parts are broken, so that a caller
/// can compile them (`rule_source`) and add their errors in between: one run, every problem, in
/// the order of the file.
#[derive(Debug)]
pub struct Draft {
    path: PathBuf,
    file: String,
    base: PathBuf,
    top: Option<FileTop>,
    rules: Vec<RuleConfig>,
    errors: Vec<ConfigError>,
}

impl Draft {
    /// Reads and parses a file. Fails only when it cannot be read.
    pub fn read(path: &Path) -> Result<Draft, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                rule: None,
                field: "(file)".into(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut draft = Self::parse(&text, &file, &base, &|name| std::env::var(name).ok());
        draft.path = path.to_path_buf();
        Ok(draft)
    }

    /// Substitutes and deserializes configuration text, collecting every problem.
    pub fn parse(text: &str, file: &str, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Draft {
        let mut draft = Draft {
            path: PathBuf::from(file),
            file: file.to_string(),
            base: base.to_path_buf(),
            top: None,
            rules: Vec::new(),
            errors: Vec::new(),
        };
        let err = |rule: Option<String>, field: &str, message: String| ConfigError {
            file: file.to_string(),
            rule,
            field: field.to_string(),
            message,
        };

        // YAML 1.2 booleans only: `name: off` is the string "off", not false.
        let mut options = serde_saphyr::Options::default();
        options.strict_booleans = true;
        let mut root: Value = match serde_saphyr::from_str_with_options(text, options) {
            Ok(v) => v,
            Err(e) => {
                draft
                    .errors
                    .push(err(None, "(yaml)", format!("not valid YAML: {e}")));
                return draft;
            }
        };
        if !root.is_object() {
            draft
                .errors
                .push(err(None, "(yaml)", "the file must hold a mapping".into()));
            return draft;
        }
        stringify_scalars(&mut root, "");
        let mut subst_errors = Vec::new();
        env::substitute_env(&mut root, String::new(), env, &mut subst_errors);
        for (field, var) in subst_errors {
            draft.errors.push(err(
                env::rule_of_path(&root, &field),
                &field,
                format!("environment variable `{var}` is not set"),
            ));
        }

        draft.top = match serde_path_to_error::deserialize::<_, FileTop>(root.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let field = e.path().to_string();
                draft.errors.push(err(None, &field, e.inner().to_string()));
                None
            }
        };

        let raw_rules = match root.get("rules") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => {
                draft
                    .errors
                    .push(err(None, "rules", "must be a list of rules".into()));
                Vec::new()
            }
        };
        draft.rules = parse_rules(&raw_rules, file, base, &mut draft.errors);
        draft
    }

    /// The name errors give the file.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The rules that deserialized, even when other parts of the file did not.
    pub fn rules(&self) -> &[RuleConfig] {
        &self.rules
    }

    /// `default_action`, or its default when the top level did not deserialize.
    pub fn default_action(&self) -> DefaultAction {
        self.top.as_ref().map(|t| t.default_action).unwrap_or_default()
    }

    /// Adds problems found outside this module (the rules' compile errors).
    pub fn report(&mut self, errors: impl IntoIterator<Item = ConfigError>) {
        self.errors.extend(errors);
    }

    /// Runs the checks of the top-level sections and returns the configuration, or every
    /// problem found since `parse`.
    pub fn finish(self) -> Result<Config, ConfigErrors> {
        let Draft {
            path,
            file,
            base,
            top,
            rules,
            mut errors,
        } = self;
        let Some(top) = top else {
            return Err(ConfigErrors(errors));
        };
        checks::check_server(&top.server, &file, &mut errors);
        checks::check_session(&top.session, &file, &mut errors);
        let rules_store = match checks::parse_rules_store(top.rules_store.as_deref(), &base)
            .and_then(|store| checks::check_rules_store_redis(store, &top.session))
        {
            Ok(s) => s,
            Err(message) => {
                errors.push(ConfigError {
                    file: file.clone(),
                    rule: None,
                    field: "rules_store".into(),
                    message,
                });
                RulesStore::Inline
            }
        };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
            path,
            server: top.server,
            session: top.session,
            caches: top.caches,
            rules_store,
            default_action: top.default_action,
            rules,
        })
    }
}

/// Deserializes each rule on its own, resolves `client_secret_file`, and checks names.
fn parse_rules(raw: &[Value], file: &str, base: &Path, errors: &mut Vec<ConfigError>) -> Vec<RuleConfig> {
    let mut rules = Vec::new();
    for (i, value) in raw.iter().enumerate() {
        let label = value
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{i}"));
        let mut rule: RuleConfig = match serde_path_to_error::deserialize(value.clone()) {
            Ok(r) => r,
            Err(e) => {
                let path = e.path().to_string();
                errors.push(ConfigError {
                    file: file.into(),
                    rule: Some(label),
                    field: if path == "." { "(rule)".into() } else { path },
                    message: e.inner().to_string(),
                });
                continue;
            }
        };
        if let Err(message) = resolve_secret_file(&mut rule, base) {
            errors.push(ConfigError {
                file: file.into(),
                rule: Some(label),
                field: "client_secret_file".into(),
                message,
            });
        }
        rules.push(rule);
    }
    rules
}

/// Replaces `client_secret_file` by the file's contents (trimmed), so the rest of the program
/// only ever sees `client_secret`.
fn resolve_secret_file(rule: &mut RuleConfig, base: &Path) -> Result<(), String> {
    let Some(path) = rule.client_secret_file.clone() else {
        return Ok(());
    };
    if rule.client_secret.is_some() {
        return Err("give client_secret or client_secret_file, not both".into());
    }
    let full = base.join(&path);
    let secret =
        std::fs::read_to_string(&full).map_err(|e| format!("cannot read `{}`: {e}", full.display()))?;
    let secret = secret.trim().to_string();
    if secret.is_empty() {
        return Err(format!("`{}` is empty", full.display()));
    }
    rule.client_secret = Some(secret);
    Ok(())
}

/// The schema has no numeric fields and only these boolean ones, so a number anywhere, or a
/// boolean elsewhere, was meant as text (`client_id: 1234567890`): keep it as a string.
fn stringify_scalars(value: &mut Value, key: &str) {
    const BOOLEAN_FIELDS: &[&str] = &[
        "enabled",
        "secure",
        "insecure_allow_http",
        "allow_unverified_email",
    ];
    match value {
        Value::Number(n) => *value = Value::String(n.to_string()),
        Value::Bool(b) if !BOOLEAN_FIELDS.contains(&key) => *value = Value::String(b.to_string()),
        Value::Array(items) => items.iter_mut().for_each(|v| stringify_scalars(v, "")),
        Value::Object(map) => map.iter_mut().for_each(|(k, v)| stringify_scalars(v, k)),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
