//! Writes one gRPC-framed ext_authz `CheckRequest` for `bench/check_cpu.sh`: a browser GET of a
//! URL that carries a valid session cookie for the rule governing that URL, so oidc-authz takes
//! the valid-session path (open the sealed cookie, check `allowed`, allow with identity headers).
//!
//! Usage: `bench_request CONFIG.yaml URL OUT_FILE`
//!
//! The session is sealed with the config's own `session.secrets` (through the library's
//! `SessionCodec`), `created_at` = now and `expires_at` = now + 1h, so the file stays valid for
//! the whole run (and for `session.max_lifetime`). With `session.store: redis` the session is
//! written to the configured Redis through the product's own store instead, and the cookie
//! holds its sealed id, as a browser's would. OUT_FILE holds one gRPC length-prefixed
//! message (0, 4-byte big-endian length, protobuf bytes), ready for `h2load --data`.

mod bench_common;

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
use envoy_types::pb::google::protobuf::Timestamp;
use oidc_authz::config::{Config, SessionStoreKind};
use oidc_authz::decision::{route, Route};
use oidc_authz::identity::Identity;
use oidc_authz::rules::normalize::{normalize_host, RequestPath};
use oidc_authz::session::{Session, SessionCodec};
use prost::Message;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: bench_request CONFIG.yaml URL OUT_FILE");
        return ExitCode::from(2);
    }
    match run(Path::new(&args[1]), &args[2], Path::new(&args[3])) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_request: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config_path: &Path, url: &str, out: &Path) -> Result<String, String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let rules = oidc_authz::rule_source::initial_rules(&config).map_err(|e| e.to_string())?;

    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let scheme = parsed.scheme().to_string();
    let (authority, raw_path) = bench_common::authority_and_path(&parsed)?;

    // The rule that governs the URL; it must require a login, or no session is ever read.
    let host = normalize_host(&authority);
    let rule = match route(&rules, &host, &RequestPath::parse(&raw_path)) {
        Route::Login { rule, .. } => rule,
        other => {
            return Err(format!(
                "`{url}` does not need a login ({}), so a session would not be read; pick a URL the rules protect",
                other.explain().reason
            ))
        }
    };
    if !rules.all().iter().any(|r| r.name == rule.name) {
        return Err(format!("rule `{}` is not in the rule set", rule.name));
    }

    let now = oidc_authz::app::now();
    let email = match rule.allowed.email_domains.first() {
        Some(d) => format!("jane.doe@{d}"),
        None => "jane.doe@example.com".to_string(),
    };
    let mut groups: Vec<String> = vec!["staff".into(), "eng".into(), "oncall".into()];
    groups.extend(rule.allowed.groups.iter().take(1).cloned());
    let identity = Identity {
        sub: "248289761001-8f1c2a7e-3b4d-4e5f-9a0b-1c2d3e4f5a6b".into(),
        email: Some(email.clone()),
        email_unverified: false,
        preferred_username: Some("jane.doe".into()),
        groups: groups.clone(),
        sid: Some("08a5019c-17e1-4977-8f42-65a12843ea02".into()),
    };
    let id_token = bench_common::fake_id_token(&rule.issuer, &rule.client_id, &identity, now);
    let session = Session {
        id: oidc_authz::session::new_session_id(),
        iss: rule.issuer.clone(),
        client_id: rule.client_id.clone(),
        identity,
        id_token: id_token.clone(),
        access_token: None,
        refresh_token: None,
        created_at: now,
        created_at_ms: 0,
        expires_at: now + 3600,
        access_expires_at: None,
    };
    let set_cookies = match config.session.store {
        SessionStoreKind::Cookie => {
            let codec = SessionCodec::new(&config.session);
            codec.write_session(&session, rule.cookie_domain.as_deref(), std::iter::empty(), now)
        }
        // The redis store: the session goes to the configured Redis through the product's own
        // store, and the cookie holds its sealed id.
        SessionStoreKind::Redis => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("no tokio runtime: {e}"))?;
            runtime.block_on(async {
                let app_rules = oidc_authz::rule_source::initial_rules(&config).map_err(|e| e.to_string())?;
                let app = oidc_authz::app::App::start(&config, app_rules);
                let mut last = String::new();
                for _ in 0..50 {
                    match app
                        .session_store
                        .save(&session, rule.cookie_domain.as_deref(), &[], now)
                        .await
                    {
                        Ok(lines) => return Ok(lines),
                        Err(e) => last = e.to_string(),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(format!("cannot store the session in Redis: {last}"))
            })?
        }
    };
    if set_cookies.is_empty() {
        return Err("the session codec wrote no cookie".into());
    }
    // Set-Cookie lines -> the `cookie` request header a browser sends back, next to a couple of
    // the site's own cookies (which oidc-authz must pass to the backend).
    let mut pairs: Vec<String> = vec!["_ga=GA1.1.1187306121.1714042519".into()];
    pairs.extend(
        set_cookies
            .iter()
            .map(|line| line.split(';').next().unwrap_or("").trim().to_string()),
    );
    pairs.push("theme=dark".into());
    let cookie = pairs.join("; ");

    // Headers as Envoy sends them to ext_authz: lowercase names, pseudo-headers included.
    let mut headers: HashMap<String, String> = HashMap::new();
    for (k, v) in [
        (":authority", authority.as_str()),
        (":method", "GET"),
        (":path", raw_path.as_str()),
        (":scheme", scheme.as_str()),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
        ),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-US,en;q=0.9"),
        ("upgrade-insecure-requests", "1"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("x-forwarded-proto", scheme.as_str()),
        ("x-request-id", "9f6c1f0e-5d1e-4a7b-8c3d-2e1f0a9b8c7d"),
        ("cookie", cookie.as_str()),
    ] {
        headers.insert(k.to_string(), v.to_string());
    }

    let peer = |ip: &str, port: u32| attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer("203.0.113.7", 51234)),
            destination: Some(peer("10.0.0.5", 443)),
            request: Some(attribute_context::Request {
                time: Some(Timestamp {
                    seconds: now as i64,
                    nanos: 0,
                }),
                http: Some(attribute_context::HttpRequest {
                    id: "4129384512345678901".into(),
                    method: "GET".into(),
                    headers,
                    path: raw_path.clone(),
                    host: authority.clone(),
                    scheme: scheme.clone(),
                    protocol: "HTTP/2".into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    };

    let body = request.encode_to_vec();
    let len = u32::try_from(body.len()).map_err(|_| "request too large".to_string())?;
    let mut framed = Vec::with_capacity(5 + body.len());
    framed.push(0);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&body);
    std::fs::write(out, &framed).map_err(|e| format!("cannot write {}: {e}", out.display()))?;

    Ok(format!(
        "rule={} host={} path={} email={} id_token_bytes={} cookie_bytes={} check_request_bytes={} framed_bytes={}",
        rule.name,
        authority,
        raw_path,
        email,
        id_token.len(),
        cookie.len(),
        body.len(),
        framed.len()
    ))
}
