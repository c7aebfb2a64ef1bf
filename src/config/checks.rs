//! The semantic checks of the file's top-level sections (`server`, `session`, `rules_store`):
//! what deserialization alone cannot catch. Kept apart from the schema so that each check reads
//! on its own and every problem is pushed, never returned early.

use std::net::SocketAddr;
use std::path::Path;

use super::{
    ConfigError, RulesStore, SameSite, ServerConfig, SessionConfig, SessionStoreKind, MIN_ADMIN_TOKEN_LEN,
    MIN_SECRET_LEN,
};

pub(super) fn check_server(server: &ServerConfig, file: &str, errors: &mut Vec<ConfigError>) {
    if let Some(token) = &server.admin_token {
        // The token guards every rule and its secret: it must not be guessable. (Its value is
        // never printed, only its length.)
        let chars = token.chars().count();
        if chars < MIN_ADMIN_TOKEN_LEN {
            errors.push(ConfigError {
                file: file.into(),
                rule: None,
                field: "server.admin_token".into(),
                message: format!(
                    "must be at least {MIN_ADMIN_TOKEN_LEN} characters (has {chars}); leave it out to disable the admin API"
                ),
            });
        }
    }
    for (field, value) in [
        ("server.grpc_listen", &server.grpc_listen),
        ("server.http_listen", &server.http_listen),
        ("server.admin_listen", &server.admin_listen),
    ] {
        if value.parse::<SocketAddr>().is_err() {
            errors.push(ConfigError {
                file: file.into(),
                rule: None,
                field: field.into(),
                message: format!("`{value}` is not an address like 0.0.0.0:9001"),
            });
        }
    }
}

pub(super) fn check_session(session: &SessionConfig, file: &str, errors: &mut Vec<ConfigError>) {
    let mut push = |field: String, message: String| {
        errors.push(ConfigError {
            file: file.into(),
            rule: None,
            field,
            message,
        })
    };
    if session.secrets.is_empty() {
        push("session.secrets".into(), "at least one secret is required".into());
    }
    for (i, s) in session.secrets.iter().enumerate() {
        if s.len() < MIN_SECRET_LEN {
            push(
                format!("session.secrets[{i}]"),
                format!("must be at least {MIN_SECRET_LEN} bytes (has {})", s.len()),
            );
        }
    }
    if session.store == SessionStoreKind::Redis
        && session.redis_url.is_none()
        && session.redis_cluster.is_empty()
    {
        push(
            "session.redis_url".into(),
            "required with store: redis (or session.redis_cluster)".into(),
        );
    }
    if session.redis_url.is_some() && !session.redis_cluster.is_empty() {
        push(
            "session.redis_cluster".into(),
            "set redis_url or redis_cluster, not both".into(),
        );
    }
    if let Some(url) = &session.redis_url {
        if let Err(why) = check_redis_url(url) {
            push("session.redis_url".into(), why);
        }
    }
    for (i, node) in session.redis_cluster.iter().enumerate() {
        if let Err(why) = check_redis_url(node) {
            push(format!("session.redis_cluster[{i}]"), why);
        }
    }
    let name_ok = !session.cookie_name.is_empty()
        && session.cookie_name.len() <= 64
        && session
            .cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        push(
            "session.cookie_name".into(),
            "must be 1-64 characters of [A-Za-z0-9_-]".into(),
        );
    }
    if session.same_site == SameSite::None && !session.secure {
        push(
            "session.same_site".into(),
            "`none` requires secure: true (browsers refuse it otherwise)".into(),
        );
    }
    if session.max_lifetime.is_zero() {
        push(
            "session.max_lifetime".into(),
            "must be a positive duration like 30s, 15m or 24h".into(),
        );
    }
}

/// A Redis address: `redis://` or `rediss://`, with a host.
fn check_redis_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{}` is not a URL ({e})", redact(text)))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(format!(
            "`{}` must start with redis:// or rediss://",
            redact(text)
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{}` has no host", redact(text)));
    }
    Ok(())
}

/// A Redis URL for an error message: its password is never shown.
fn redact(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("******"));
            u.to_string()
        }
        Ok(_) => text.to_string(),
        Err(_) => "(unreadable)".into(),
    }
}

/// `rules_store: redis` needs the session's Redis; a `redis://` store needs a good URL.
pub(super) fn check_rules_store_redis(
    store: RulesStore,
    session: &SessionConfig,
) -> Result<RulesStore, String> {
    match &store {
        RulesStore::SessionRedis if session.redis().is_none() => {
            Err("`redis` uses session.redis_url or session.redis_cluster, and neither is set".into())
        }
        RulesStore::Redis(url) => check_redis_url(url).map(|()| store),
        _ => Ok(store),
    }
}

pub(super) fn parse_rules_store(text: Option<&str>, base: &Path) -> Result<RulesStore, String> {
    match text {
        None => Ok(RulesStore::File(base.join("rules.yaml"))),
        Some("inline") => Ok(RulesStore::Inline),
        Some("redis") => Ok(RulesStore::SessionRedis),
        Some(t) if t.starts_with("file:") => {
            let p = &t["file:".len()..];
            if p.is_empty() {
                return Err("file: needs a path, e.g. file:rules.yaml".into());
            }
            Ok(RulesStore::File(base.join(p)))
        }
        Some(t) if t.starts_with("redis://") || t.starts_with("rediss://") => Ok(RulesStore::Redis(t.into())),
        Some(t) => Err(format!(
            "`{}` is not file:PATH, redis://…, redis or inline",
            redact(t)
        )),
    }
}
