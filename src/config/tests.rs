//! Unit tests of the configuration: every field, every error with its file, rule and field.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::rules::RuleSet;

/// Exactly `MIN_SECRET_LEN` bytes.
const SECRET: &str = "0123456789abcdef0123456789abcdef";

const FILE: &str = "gateway.yaml";

fn no_env(_: &str) -> Option<String> {
    None
}

use crate::test_yaml::rule;

/// A configuration with a valid session and these rules.
fn config(rules: &[String]) -> String {
    format!("session:\n  secrets: [\"{SECRET}\"]\nrules:\n{}", rules.concat())
}

/// Parsed with the rules compiled, as `validate` reads a file: rule errors are reported too.
fn parse(text: &str) -> Result<Config, ConfigErrors> {
    crate::rule_source::parse_config(text, FILE, Path::new("/etc/oidc-authz"), &no_env)
        .map(|(config, _)| config)
}

fn parse_ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(errors) => panic!("should parse, got:\n{errors}\n--- text:\n{text}"),
    }
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("should be rejected:\n{text}"),
        Err(ConfigErrors(errors)) => errors,
    }
}

/// The one error of `text`, which must have exactly one.
fn only_error(text: &str) -> ConfigError {
    let mut found = errors(text);
    assert_eq!(found.len(), 1, "expected one error, got {found:#?}");
    found.remove(0)
}

/// (rule, field) of every error.
fn locations(text: &str) -> Vec<(Option<String>, String)> {
    errors(text).into_iter().map(|e| (e.rule, e.field)).collect()
}

fn at(rule: Option<&str>, field: &str) -> (Option<String>, String) {
    (rule.map(str::to_string), field.to_string())
}

fn compiled(text: &str) -> RuleSet {
    let config = parse_ok(text);
    RuleSet::compile(&config.rules, config.default_action).expect("rules compile")
}

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "oidc-authz-config-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const DESIGN_EXAMPLE: &str = r#"
server:
  grpc_listen: 0.0.0.0:9001
  http_listen: 0.0.0.0:9002
  admin_listen: 127.0.0.1:9003
  admin_token: ${OIDC_AUTHZ_ADMIN_TOKEN}     # required for the admin API
session:
  secrets: ["${OIDC_AUTHZ_SESSION_SECRET}"]  # >= 32 bytes each; the first encrypts, all decrypt
  store: cookie                              # cookie (default, stateless) | redis
  redis_url: redis://127.0.0.1:6379/0        # with store: redis
  cookie_name: _oidc_authz                   # chunks above 4000 bytes: _oidc_authz_1, _oidc_authz_2, …
  secure: true                               # false only for plain-http development
  same_site: lax
  max_lifetime: 24h                          # absolute cap, refreshes included
  refresh_grace: 5m                          # IdP unreachable at refresh: serve this long past expiry
rules_store: file:rules.yaml                 # file:PATH (relative to this file) | redis://… | inline
                                             # inline: the rules below ARE the store (read-only API)
default_action: allow                        # when no rule decides: allow | deny
rules:                                       # initial rules (imported into an empty store)
  - name: corp                               # unique, [a-z0-9-]{1,63}
    enabled: true
    type: oidc
    issuer: https://idp.example.com          # discovery: {issuer}/.well-known/openid-configuration
    discovery_url: http://keycloak:8080/realms/corp/.well-known/openid-configuration  # optional:
                                             # fetch discovery here (an in-cluster address); `iss` is still checked against issuer
    redirect_url: https://app.example.com/oauth2/callback   # path must be /oauth2/callback
    client_id: gateway
    client_secret: ${CORP_CLIENT_SECRET}     # or client_secret_file: PATH
    cookie_domain: .example.com              # empty: host-only cookie
    scope: openid;email;profile              # ';' or ' ' separated; openid is always requested
    authorization:
      mode: whitelist                        # whitelist | blacklist
      conditions:
        - { domain: "*.example.com", path: /public, match: prefix }   # match: exact | prefix | regex
    # beyond the seed, all optional:
    domains: ["*.example.com"]               # hosts this rule governs (default: every host)
    upstream_token: id_token                 # id_token | access_token | none -> Authorization header
    allowed: { emails: [], email_domains: [], groups: [] }   # claim checks -> 403
    audiences: []                            # extra audiences accepted on bearer tokens
    post_logout_redirect_url: https://app.example.com/   # default: the redirect_url's origin + "/"
    insecure_allow_http: false               # allow http:// issuer/redirect on non-loopback hosts (development only)
"#;

fn design_env(name: &str) -> Option<String> {
    match name {
        "OIDC_AUTHZ_ADMIN_TOKEN" => Some("admin-token-0123456789".into()),
        "OIDC_AUTHZ_SESSION_SECRET" => Some(SECRET.into()),
        "CORP_CLIENT_SECRET" => Some("corp-client-secret".into()),
        _ => None,
    }
}

#[test]
fn design_example_configuration_parses() {
    let config = Config::parse(DESIGN_EXAMPLE, FILE, Path::new("/etc/oidc-authz"), &design_env)
        .unwrap_or_else(|e| panic!("the DESIGN.md example must parse:\n{e}"));

    assert_eq!(config.server.grpc_addr(), "0.0.0.0:9001".parse().ok());
    assert_eq!(config.server.http_addr(), "0.0.0.0:9002".parse().ok());
    assert_eq!(config.server.admin_addr(), "127.0.0.1:9003".parse().ok());
    assert_eq!(
        config.server.admin_token.as_deref(),
        Some("admin-token-0123456789")
    );
    assert_eq!(config.session.secrets, vec![SECRET.to_string()]);
    assert_eq!(config.session.store, SessionStoreKind::Cookie);
    assert_eq!(config.session.cookie_name, "_oidc_authz");
    assert!(config.session.secure);
    assert_eq!(config.session.same_site, SameSite::Lax);
    assert_eq!(config.session.max_lifetime, Duration::from_secs(24 * 3600));
    assert_eq!(config.session.refresh_grace, Duration::from_secs(5 * 60));
    assert_eq!(
        config.rules_store,
        RulesStore::File(PathBuf::from("/etc/oidc-authz/rules.yaml"))
    );
    assert_eq!(config.default_action, DefaultAction::Allow);

    assert_eq!(config.rules.len(), 1);
    let corp = &config.rules[0];
    assert_eq!(corp.name, "corp");
    assert!(corp.enabled);
    assert_eq!(corp.kind, RuleType::Oidc);
    assert_eq!(corp.issuer, "https://idp.example.com");
    assert_eq!(
        corp.discovery_url.as_deref(),
        Some("http://keycloak:8080/realms/corp/.well-known/openid-configuration")
    );
    assert_eq!(corp.redirect_url, "https://app.example.com/oauth2/callback");
    assert_eq!(corp.client_id, "gateway");
    assert_eq!(corp.client_secret.as_deref(), Some("corp-client-secret"));
    assert_eq!(corp.cookie_domain, ".example.com");
    assert_eq!(corp.scope, "openid;email;profile");
    assert_eq!(corp.authorization.mode, AuthorizationMode::Whitelist);
    assert_eq!(
        corp.authorization.conditions,
        vec![ConditionConfig {
            domain: Some("*.example.com".into()),
            path: Some("/public".into()),
            path_match: PathMatch::Prefix,
        }]
    );
    assert_eq!(corp.domains, vec!["*.example.com".to_string()]);
    assert_eq!(corp.upstream_token, UpstreamToken::IdToken);
    assert!(corp.allowed.is_empty());
    assert!(corp.audiences.is_empty());
    assert_eq!(
        corp.post_logout_redirect_url.as_deref(),
        Some("https://app.example.com/")
    );
    assert!(!corp.insecure_allow_http);
}

#[test]
fn minimal_configuration_takes_the_documented_defaults() {
    let config = parse_ok(&config(&[rule("corp", "")]));
    assert_eq!(config.server.grpc_listen, "0.0.0.0:9001");
    assert_eq!(config.server.http_listen, "0.0.0.0:9002");
    assert_eq!(config.server.admin_listen, "127.0.0.1:9003");
    assert_eq!(config.session.store, SessionStoreKind::Cookie);
    assert_eq!(config.session.cookie_name, "_oidc_authz");
    assert!(config.session.secure);
    assert_eq!(config.session.max_lifetime, Duration::from_secs(24 * 3600));
    assert_eq!(config.session.refresh_grace, Duration::from_secs(5 * 60));
    assert_eq!(config.default_action, DefaultAction::Allow);
    let corp = &config.rules[0];
    assert!(corp.enabled);
    assert_eq!(corp.upstream_token, UpstreamToken::IdToken);
    assert_eq!(corp.authorization.mode, AuthorizationMode::Whitelist);
    assert!(!corp.insecure_allow_http);
}

#[test]
fn env_variables_are_substituted_in_string_values() {
    let text = format!(
        "{}{}",
        config(&[rule(
            "corp",
            "
            client_id: ${CLIENT}-${REGION}
            client_secret: ${CORP_SECRET}
            authorization:
              conditions:
                - { domain: \"${PUBLIC_HOST}\", path: /public }
            "
        )]),
        "server: { admin_token: \"Bearer-${ADMIN}\" }\n"
    );
    let env = |name: &str| -> Option<String> {
        Some(
            match name {
                "CLIENT" => "gateway",
                "REGION" => "eu",
                "CORP_SECRET" => "from-the-environment",
                "PUBLIC_HOST" => "www.example.com",
                "ADMIN" => "tok-0123456789",
                _ => return None,
            }
            .to_string(),
        )
    };
    let config =
        Config::parse(&text, FILE, Path::new("/etc"), &env).unwrap_or_else(|e| panic!("should parse:\n{e}"));
    let corp = &config.rules[0];
    assert_eq!(corp.client_id, "gateway-eu");
    assert_eq!(corp.client_secret.as_deref(), Some("from-the-environment"));
    assert_eq!(
        corp.authorization.conditions[0].domain.as_deref(),
        Some("www.example.com")
    );
    assert_eq!(
        config.server.admin_token.as_deref(),
        Some("Bearer-tok-0123456789")
    );
}

#[test]
fn session_secret_comes_from_the_environment() {
    let text = "session:\n  secrets: [\"${SESSION_SECRET}\"]\n";
    let env = |name: &str| (name == "SESSION_SECRET").then(|| SECRET.to_string());
    let config =
        Config::parse(text, FILE, Path::new("/etc"), &env).unwrap_or_else(|e| panic!("should parse:\n{e}"));
    assert_eq!(config.session.secrets, vec![SECRET.to_string()]);
}

#[test]
fn unset_env_variable_in_a_rule_names_the_variable_rule_and_field() {
    let found = only_error(&config(&[rule("corp", "client_secret: ${MISSING_SECRET}")]));
    assert_eq!(found.rule.as_deref(), Some("corp"));
    assert!(found.field.ends_with("client_secret"), "{found:?}");
    assert!(found.message.contains("MISSING_SECRET"), "{found:?}");
    assert!(found.message.contains("not set"), "{found:?}");
}

#[test]
fn unset_env_variable_at_top_level_names_the_field() {
    let text = format!(
        "server: {{ admin_token: \"${{NO_SUCH_TOKEN}}\" }}\n{}",
        config(&[])
    );
    let found = only_error(&text);
    assert_eq!(found.rule, None);
    assert_eq!(found.field, "server.admin_token");
    assert!(found.message.contains("NO_SUCH_TOKEN"), "{found:?}");
}

#[test]
fn text_that_is_not_a_variable_reference_is_kept() {
    let config = parse_ok(&config(&[rule(
        "corp",
        "client_secret: \"pa$$word-${-}-$HOME-${unterminated\"",
    )]));
    assert_eq!(
        config.rules[0].client_secret.as_deref(),
        Some("pa$$word-${-}-$HOME-${unterminated")
    );
}

#[test]
fn client_secret_file_is_read_relative_to_the_config_directory() {
    let dir = TempDir::new("secret-file");
    std::fs::create_dir_all(dir.0.join("secrets")).expect("mkdir");
    std::fs::write(dir.0.join("secrets/corp.txt"), "secret-from-file\n").expect("write");
    let text = config(&[rule(
        "corp",
        "
        client_secret: null
        client_secret_file: secrets/corp.txt
        ",
    )]);
    let config = Config::parse(&text, FILE, &dir.0, &no_env).unwrap_or_else(|e| panic!("should parse:\n{e}"));
    assert_eq!(config.rules[0].client_secret.as_deref(), Some("secret-from-file"));
}

#[test]
fn missing_client_secret_file_is_an_error_naming_the_field() {
    let dir = TempDir::new("missing-secret-file");
    let text = config(&[rule(
        "corp",
        "
        client_secret: null
        client_secret_file: absent.txt
        ",
    )]);
    let Err(ConfigErrors(found)) = Config::parse(&text, FILE, &dir.0, &no_env) else {
        panic!("a missing secret file must be rejected");
    };
    assert!(
        found.iter().any(|e| e.rule.as_deref() == Some("corp")
            && e.field == "client_secret_file"
            && e.message.contains("absent.txt")),
        "{found:#?}"
    );
}

#[test]
fn client_secret_and_client_secret_file_together_are_refused() {
    let dir = TempDir::new("both-secrets");
    std::fs::write(dir.0.join("s.txt"), "x").expect("write");
    let text = config(&[rule("corp", "client_secret_file: s.txt")]);
    let Err(ConfigErrors(found)) = Config::parse(&text, FILE, &dir.0, &no_env) else {
        panic!("two secrets must be rejected");
    };
    assert!(
        found
            .iter()
            .any(|e| e.rule.as_deref() == Some("corp") && e.field == "client_secret_file"),
        "{found:#?}"
    );
}

#[test]
fn rule_without_any_client_secret_is_refused() {
    let found = locations(&config(&[rule("corp", "client_secret: null")]));
    assert!(found.contains(&at(Some("corp"), "client_secret")), "{found:?}");
}

#[test]
fn unknown_top_level_key_is_an_error_naming_it() {
    let found = only_error(&format!("colour: blue\n{}", config(&[])));
    assert_eq!(found.rule, None);
    assert_eq!(found.field, "colour");
    assert!(found.message.contains("colour"), "{found:?}");
}

#[test]
fn unknown_session_key_is_an_error_naming_it() {
    let text = format!("session:\n  secrets: [\"{SECRET}\"]\n  secure_cookie: true\n");
    let found = only_error(&text);
    assert_eq!(found.rule, None);
    assert_eq!(found.field, "session.secure_cookie");
}

#[test]
fn unknown_server_key_is_an_error_naming_it() {
    let text = format!("server: {{ grpc_port: 9001 }}\n{}", config(&[]));
    let found = only_error(&text);
    assert_eq!(found.field, "server.grpc_port");
}

#[test]
fn unknown_rule_key_is_an_error_naming_rule_and_field() {
    let found = only_error(&config(&[rule("corp", "client_sekret: x")]));
    assert_eq!(found.rule.as_deref(), Some("corp"));
    assert_eq!(found.field, "client_sekret");
}

#[test]
fn unknown_condition_key_is_an_error_naming_rule_and_field() {
    let found = only_error(&config(&[rule(
        "corp",
        "
        authorization:
          conditions:
            - { path: /a }
            - { path: /b, methods: [GET] }
        ",
    )]));
    assert_eq!(found.rule.as_deref(), Some("corp"));
    assert_eq!(found.field, "authorization.conditions[1].methods");
}

#[test]
fn unknown_key_in_a_rule_without_name_labels_the_rule_by_index() {
    let text = config(&[
        rule("first", ""),
        "  - { issuer: https://idp.example.com, colour: x }\n".to_string(),
    ]);
    let found = locations(&text);
    assert!(
        found.iter().any(|(rule, _)| rule.as_deref() == Some("#1")),
        "{found:?}"
    );
}

#[test]
fn unknown_enum_values_are_refused() {
    let found = locations(&config(&[rule(
        "corp",
        "
        authorization:
          mode: greylist
        ",
    )]));
    assert_eq!(found, vec![at(Some("corp"), "authorization.mode")]);

    let found = locations(&format!("default_action: maybe\n{}", config(&[])));
    assert_eq!(found, vec![at(None, "default_action")]);
}

#[test]
fn duplicate_rule_name_is_an_error_on_the_second_rule() {
    let found = locations(&config(&[rule("corp", ""), rule("corp", "")]));
    assert!(found.contains(&at(Some("corp"), "name")), "{found:?}");
}

#[test]
fn redirect_url_path_must_be_the_callback_path() {
    for url in [
        "https://app.example.com/callback",
        "https://app.example.com/oauth2/callback/",
        "https://app.example.com/",
        "https://app.example.com/OAuth2/Callback",
    ] {
        let found = only_error(&config(&[rule("corp", &format!("redirect_url: {url}"))]));
        assert_eq!(found.rule.as_deref(), Some("corp"), "{url}");
        assert_eq!(found.field, "redirect_url", "{url}");
        assert!(found.message.contains("/oauth2/callback"), "{found:?}");
    }
}

#[test]
fn bad_regex_names_the_condition_path() {
    let found = only_error(&config(&[rule(
        "corp",
        "
        authorization:
          conditions:
            - { path: /ok, match: prefix }
            - { path: \"/api/(v1\", match: regex }
        ",
    )]));
    assert_eq!(found.rule.as_deref(), Some("corp"));
    assert_eq!(found.field, "authorization.conditions[1].path");
}

#[test]
fn bad_condition_domain_names_the_condition_domain() {
    let found = only_error(&config(&[rule(
        "corp",
        "
        authorization:
          conditions:
            - { domain: \"a.*.example.com\", path: /x }
        ",
    )]));
    assert_eq!(found.field, "authorization.conditions[0].domain");
}

#[test]
fn session_secret_shorter_than_32_bytes_is_refused() {
    let short = &SECRET[..31];
    let text = format!("session:\n  secrets: [\"{SECRET}\", \"{short}\"]\n");
    let found = only_error(&text);
    assert_eq!(found.rule, None);
    assert_eq!(found.field, "session.secrets[1]");
    assert!(found.message.contains("32"), "{found:?}");
}

#[test]
fn session_secret_of_exactly_32_bytes_is_accepted() {
    assert_eq!(SECRET.len(), MIN_SECRET_LEN);
    assert_eq!(MIN_SECRET_LEN, 32);
    parse_ok(&config(&[]));
}

#[test]
fn session_needs_at_least_one_secret() {
    let found = only_error("session:\n  secrets: []\n");
    assert_eq!(found.field, "session.secrets");
}

#[test]
fn redis_store_needs_a_redis_url() {
    let text = format!("session:\n  secrets: [\"{SECRET}\"]\n  store: redis\n");
    assert_eq!(only_error(&text).field, "session.redis_url");
}

#[test]
fn http_issuer_on_a_non_loopback_host_is_refused() {
    let found = only_error(&config(&[rule("corp", "issuer: http://idp.example.com")]));
    assert_eq!(found.rule.as_deref(), Some("corp"));
    assert_eq!(found.field, "issuer");
    assert!(found.message.contains("insecure_allow_http"), "{found:?}");
}

#[test]
fn http_issuer_is_allowed_with_insecure_allow_http() {
    let config = parse_ok(&config(&[rule(
        "corp",
        "
        issuer: http://keycloak:8080/realms/corp
        insecure_allow_http: true
        ",
    )]));
    assert!(config.rules[0].insecure_allow_http);
}

#[test]
fn http_issuer_is_allowed_on_loopback_hosts() {
    for issuer in [
        "http://127.0.0.1:8080/realms/corp",
        "http://127.1.2.3:8080",
        "http://localhost:8080/realms/corp",
        "http://LOCALHOST",
        "http://[::1]:8080/realms/corp",
    ] {
        let text = config(&[rule("corp", &format!("issuer: \"{issuer}\""))]);
        if let Err(e) = parse(&text) {
            panic!("{issuer} must be accepted:\n{e}");
        }
    }
}

#[test]
fn http_redirect_url_on_a_non_loopback_host_is_refused_unless_insecure() {
    let found = only_error(&config(&[rule(
        "corp",
        "redirect_url: http://app.example.com/oauth2/callback",
    )]));
    assert_eq!(found.field, "redirect_url");

    parse_ok(&config(&[rule(
        "corp",
        "
        redirect_url: http://app.example.com/oauth2/callback
        insecure_allow_http: true
        ",
    )]));
    parse_ok(&config(&[rule(
        "corp",
        "
        redirect_url: http://localhost:3000/oauth2/callback
        cookie_domain: \"\"
        ",
    )]));
}

#[test]
fn issuer_must_be_an_http_url() {
    for issuer in ["ftp://idp.example.com", "idp.example.com", "not a url"] {
        let found = locations(&config(&[rule("corp", &format!("issuer: \"{issuer}\""))]));
        assert_eq!(found, vec![at(Some("corp"), "issuer")], "{issuer}");
    }
}

#[test]
fn errors_in_several_rules_are_all_reported_at_once() {
    let text = format!(
        "session:\n  secrets: [\"too-short\"]\nrules:\n{}",
        [
            rule("alpha", "colour: red"),
            rule(
                "beta",
                "
                redirect_url: https://app.example.com/login
                authorization:
                  conditions:
                    - { path: \"(\", match: regex }
                ",
            ),
            rule("gamma", "issuer: http://idp.example.com"),
            rule("ok", ""),
            rule("Delta", "scope: \"openid \\\"bad\\\"\""),
        ]
        .concat()
    );
    let found = locations(&text);
    for expected in [
        at(None, "session.secrets[0]"),
        at(Some("alpha"), "colour"),
        at(Some("beta"), "redirect_url"),
        at(Some("beta"), "authorization.conditions[0].path"),
        at(Some("gamma"), "issuer"),
        at(Some("Delta"), "name"),
        at(Some("Delta"), "scope"),
    ] {
        assert!(found.contains(&expected), "{expected:?} missing in {found:#?}");
    }
    assert!(
        !found.iter().any(|(rule, _)| rule.as_deref() == Some("ok")),
        "{found:?}"
    );
}

#[test]
fn error_outside_the_rules_does_not_hide_rule_errors() {
    let bad_rule = rule("corp", "issuer: http://idp.example.com");
    let unknown_top_level = format!("colour: blue\n{}", config(std::slice::from_ref(&bad_rule)));
    let unknown_in_session =
        format!("session:\n  secrets: [\"{SECRET}\"]\n  colour: blue\nrules:\n{bad_rule}");
    for (text, outside) in [
        (unknown_top_level, at(None, "colour")),
        (unknown_in_session, at(None, "session.colour")),
    ] {
        let found = locations(&text);
        assert!(found.contains(&outside), "{outside:?} missing in {found:?}");
        assert!(
            found.contains(&at(Some("corp"), "issuer")),
            "the rule's error is hidden: {found:?}"
        );
    }
}

#[test]
fn every_error_carries_the_file_name() {
    for e in errors(&format!("colour: x\n{}", config(&[rule("corp", "issuer: nope")]))) {
        assert_eq!(e.file, FILE);
    }
}

#[test]
fn durations_are_written_with_a_unit() {
    let parse_duration = |text: &str| duration_text::deserialize(Value::String(text.into()));
    assert_eq!(parse_duration("30s").ok(), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("15m").ok(), Some(Duration::from_secs(15 * 60)));
    assert_eq!(parse_duration("24h").ok(), Some(Duration::from_secs(24 * 3600)));
    for bad in ["soon", "24", "h", "-5m", ""] {
        assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn max_lifetime_accepts_minutes_and_hours() {
    for (text, seconds) in [("15m", 15 * 60), ("24h", 24 * 3600), ("90m", 90 * 60)] {
        let config = parse_ok(&format!(
            "session:\n  secrets: [\"{SECRET}\"]\n  max_lifetime: {text}\n"
        ));
        assert_eq!(
            config.session.max_lifetime,
            Duration::from_secs(seconds),
            "{text}"
        );
    }
}

#[test]
fn max_lifetime_accepts_any_positive_duration() {
    for (text, seconds) in [("3s", 3), ("1s", 1), ("59s", 59), ("1500ms", 2), ("1ms", 1)] {
        let config = parse_ok(&format!(
            "session:\n  secrets: [\"{SECRET}\"]\n  max_lifetime: {text}\n"
        ));
        assert_eq!(
            config.session.max_lifetime,
            Duration::from_secs(seconds),
            "{text} (counted in whole seconds, rounded up)"
        );
    }
}

#[test]
fn zero_max_lifetime_is_an_error_naming_the_field() {
    for zero in ["0s", "0m", "0ns"] {
        let found = only_error(&format!(
            "session:\n  secrets: [\"{SECRET}\"]\n  max_lifetime: {zero}\n"
        ));
        assert_eq!(found.file, FILE);
        assert_eq!(found.field, "session.max_lifetime", "{zero}");
        assert!(found.message.contains("positive"), "{found:?}");
    }
}

#[test]
fn refresh_grace_may_be_zero_and_a_bad_one_names_the_field() {
    for (text, seconds) in [("0s", 0), ("30s", 30), ("10m", 600)] {
        let config = parse_ok(&format!(
            "session:\n  secrets: [\"{SECRET}\"]\n  refresh_grace: {text}\n"
        ));
        assert_eq!(
            config.session.refresh_grace,
            Duration::from_secs(seconds),
            "{text}"
        );
    }
    let found = only_error(&format!(
        "session:\n  secrets: [\"{SECRET}\"]\n  refresh_grace: a-while\n"
    ));
    assert_eq!(found.file, FILE);
    assert_eq!(found.field, "session.refresh_grace", "{found:?}");
}

#[test]
fn admin_token_shorter_than_16_characters_is_refused() {
    for short in [
        "short",
        "admin-token",
        "fifteen-chars-x",
        "\"\"",
        "ééééééééééééééé",
    ] {
        let found = only_error(&format!(
            "server:\n  admin_token: {short}\nsession:\n  secrets: [\"{SECRET}\"]\n"
        ));
        assert_eq!(found.file, FILE);
        assert_eq!(found.rule, None);
        assert_eq!(found.field, "server.admin_token", "{short}");
        assert!(found.message.contains("16 characters"), "{found:?}");
        let shown = found.to_string();
        assert!(
            shown.contains(FILE) && shown.contains("server.admin_token"),
            "{shown}"
        );
        if short.len() > 2 {
            assert!(!shown.contains(short), "the token is never printed: {shown}");
        }
    }
    for long_enough in ["sixteen-chars-xx", "éééééééééééééééé"] {
        let config = parse_ok(&format!(
            "server:\n  admin_token: {long_enough}\nsession:\n  secrets: [\"{SECRET}\"]\n"
        ));
        assert_eq!(config.server.admin_token.as_deref(), Some(long_enough));
    }
}

#[test]
fn allow_unverified_email_is_a_rule_field_defaulting_to_false() {
    let parsed = parse_ok(&config(&[
        rule("strict", ""),
        rule("lenient", "allow_unverified_email: true"),
    ]));
    assert!(!parsed.rules[0].allow_unverified_email);
    assert!(parsed.rules[1].allow_unverified_email);
    let rules = RuleSet::compile(&parsed.rules, parsed.default_action).expect("rules compile");
    assert!(!rules.all()[0].allowed.allow_unverified_email);
    assert!(rules.all()[1].allowed.allow_unverified_email);
    let found = only_error(&config(&[rule("corp", "allow_unverified_email: maybe")]));
    assert_eq!(found.rule.as_deref(), Some("corp"));
    assert_eq!(found.field, "allow_unverified_email");
}

#[test]
fn bad_duration_is_an_error_naming_the_field_and_value() {
    let found = only_error(&format!(
        "session:\n  secrets: [\"{SECRET}\"]\n  max_lifetime: a-while\n"
    ));
    assert_eq!(found.field, "session.max_lifetime");
    assert!(found.message.contains("a-while"), "{found:?}");
}

#[test]
fn rule_name_must_be_lowercase_letters_digits_and_dashes() {
    let too_long = "a".repeat(64);
    for name in ["Corp", "corp_1", "corp.eu", "\"\"", "\"with space\"", &too_long] {
        let found = locations(&config(&[rule(name, "")]));
        assert!(
            found.iter().any(|(_, field)| field == "name"),
            "{name} must be refused: {found:?}"
        );
    }
    let longest = "a".repeat(63);
    for name in ["corp", "corp-2", "\"0\"", &longest] {
        parse_ok(&config(&[rule(name, "")]));
    }
}

#[test]
fn scope_separated_by_semicolons_becomes_space_separated() {
    let rules = compiled(&config(&[rule("corp", "scope: openid;email;profile")]));
    assert_eq!(rules.all()[0].scope, "openid email profile");
}

#[test]
fn openid_scope_is_always_requested_first() {
    for (written, requested) in [
        ("email profile", "openid email profile"),
        ("email;profile", "openid email profile"),
        ("profile;openid", "openid profile"),
        ("\"\"", "openid"),
        ("\" openid ; email ;; email \"", "openid email"),
    ] {
        let rules = compiled(&config(&[rule("corp", &format!("scope: {written}"))]));
        assert_eq!(rules.all()[0].scope, requested, "{written}");
    }
}

#[test]
fn cookie_domain_must_cover_the_redirect_host() {
    let found = only_error(&config(&[rule("corp", "cookie_domain: .example.org")]));
    assert_eq!(found.rule.as_deref(), Some("corp"));
    assert_eq!(found.field, "cookie_domain");

    let found = only_error(&config(&[rule("corp", "cookie_domain: .ple.com")]));
    assert_eq!(found.field, "cookie_domain");

    for covering in [".example.com", "example.com", ".app.example.com", ".EXAMPLE.com"] {
        parse_ok(&config(&[rule(
            "corp",
            &format!("cookie_domain: \"{covering}\""),
        )]));
    }
}

#[test]
fn cookie_domain_must_be_a_domain() {
    for bad in ["\"*.example.com\"", "com", "\"example.com:443\""] {
        let found = locations(&config(&[rule("corp", &format!("cookie_domain: {bad}"))]));
        assert!(
            found.contains(&at(Some("corp"), "cookie_domain")),
            "{bad}: {found:?}"
        );
    }
}

#[test]
fn rules_store_forms_are_understood() {
    let base = Path::new("/etc/oidc-authz");
    let store = |line: &str| {
        Config::parse(&format!("{line}\n{}", config(&[])), FILE, base, &no_env).map(|c| c.rules_store)
    };
    assert_eq!(store("rules_store: inline").ok(), Some(RulesStore::Inline));
    assert_eq!(
        store("rules_store: file:rules.yaml").ok(),
        Some(RulesStore::File(base.join("rules.yaml")))
    );
    assert_eq!(
        store("rules_store: file:/var/lib/rules.yaml").ok(),
        Some(RulesStore::File(PathBuf::from("/var/lib/rules.yaml")))
    );
    assert_eq!(
        store("rules_store: redis://127.0.0.1:6379/0").ok(),
        Some(RulesStore::Redis("redis://127.0.0.1:6379/0".into()))
    );
    let Err(ConfigErrors(found)) = store("rules_store: s3://bucket") else {
        panic!("an unknown store must be refused");
    };
    assert_eq!(found[0].field, "rules_store");
}

#[test]
fn default_action_deny_is_read() {
    let config = parse_ok(&format!("default_action: deny\n{}", config(&[])));
    assert_eq!(config.default_action, DefaultAction::Deny);
}

#[test]
fn rules_must_be_a_list() {
    let text = format!("session:\n  secrets: [\"{SECRET}\"]\nrules: corp\n");
    assert_eq!(only_error(&text).field, "rules");
}

#[test]
fn invalid_yaml_and_non_mapping_files_are_reported_not_panicked() {
    for text in ["session: [unclosed", "- just\n- a list\n", "42", ""] {
        let found = errors(text);
        assert!(!found.is_empty(), "{text:?}");
        assert!(found.iter().all(|e| e.file == FILE));
    }
}

#[test]
fn config_error_display_includes_file_rule_and_field() {
    let found = only_error(&config(&[rule(
        "corp",
        "redirect_url: https://app.example.com/login",
    )]));
    let shown = found.to_string();
    assert!(shown.contains(FILE), "{shown}");
    assert!(shown.contains("corp"), "{shown}");
    assert!(shown.contains("redirect_url"), "{shown}");
    assert!(shown.contains(&found.message), "{shown}");
}

#[test]
fn config_error_display_without_rule_names_file_and_field() {
    let e = ConfigError {
        file: "/etc/oidc-authz/config.yaml".into(),
        rule: None,
        field: "session.secrets[0]".into(),
        message: "must be at least 32 bytes (has 5)".into(),
    };
    assert_eq!(
        e.to_string(),
        "/etc/oidc-authz/config.yaml: field \"session.secrets[0]\": must be at least 32 bytes (has 5)"
    );
    let in_rule = ConfigError {
        rule: Some("corp".into()),
        field: "issuer".into(),
        message: "bad".into(),
        ..e.clone()
    };
    assert_eq!(
        in_rule.to_string(),
        "/etc/oidc-authz/config.yaml: rule \"corp\": field \"issuer\": bad"
    );
    let both = ConfigErrors(vec![e, in_rule]).to_string();
    assert_eq!(both.lines().count(), 2, "{both}");
}

#[test]
fn unquoted_numbers_and_yaml_1_1_words_stay_strings() {
    let yaml = r#"
session:
  secrets: ["0123456789abcdef0123456789abcdef"]
rules_store: inline
rules:
  - name: off
    issuer: https://idp.example.com
    redirect_url: https://app.example.com/oauth2/callback
    client_id: 1234567890
    client_secret: 42
    enabled: true
"#;
    let config = Config::parse(yaml, "t.yaml", std::path::Path::new("."), &|_| None).expect("valid");
    assert_eq!(config.rules[0].name, "off");
    assert_eq!(config.rules[0].client_id, "1234567890");
    assert_eq!(config.rules[0].client_secret.as_deref(), Some("42"));
}

#[test]
fn debug_output_never_shows_the_client_secret() {
    let yaml = r#"
session:
  secrets: ["0123456789abcdef0123456789abcdef"]
rules_store: inline
rules:
  - name: corp
    issuer: https://idp.example.com
    redirect_url: https://app.example.com/oauth2/callback
    client_id: gw
    client_secret: super-secret-value
"#;
    let config = Config::parse(yaml, "t.yaml", std::path::Path::new("."), &|_| None).expect("valid");
    let rules = crate::rules::RuleSet::compile(&config.rules, config.default_action).expect("compiles");
    let shown = format!("{:?} {:?}", config.rules, rules);
    assert!(!shown.contains("super-secret-value"), "{shown}");
}
