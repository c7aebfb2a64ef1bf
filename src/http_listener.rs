//! The HTTP edge: `/oauth2/*` (callback, start, sign-out, userinfo), `/healthz`, `/readyz` and
//! `/metrics`. The login flow itself lives in `login`; this file only maps HTTP in and out.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use url::Url;

use crate::app::{now, App};
use crate::metrics::Outcome;
use crate::redirect_guard::checked_target;
use crate::reply::{Reply, SIGN_OUT_PATH};
use crate::rules::normalize::{normalize_host, parse_host};
use crate::rules::Rule;
use crate::session::cookies;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/oauth2/callback", get(callback))
        .route("/oauth2/start", get(start))
        .route(SIGN_OUT_PATH, get(sign_out).post(sign_out))
        .route("/oauth2/userinfo", get(userinfo))
        .route(
            "/oauth2/backchannel_logout",
            axum::routing::post(backchannel_logout),
        )
        .route_layer(axum::middleware::from_fn(refuse_bad_host))
        .route(
            "/healthz",
            get(|| async { to_response(Reply::text(200, TEXT, "ok\n".into())) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { to_response(Reply::page(404, "Not found", "There is nothing here.", None)) })
        .layer(axum::middleware::map_response(one_content_type))
        .with_state(app)
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Turns a `Reply` into an axum response; header values that cannot be sent are dropped.
/// Every header is set once (so exactly one `content-type`), except `set-cookie`, which may
/// repeat.
pub fn to_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(axum::body::Body::from(reply.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (k, v) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            if name == SET_COOKIE {
                headers.append(name, value);
            } else {
                headers.insert(name, value);
            }
        }
    }
    response
}

/// Answers axum makes itself (405, a rejected extractor) get a content-type too.
async fn one_content_type(mut response: Response) -> Response {
    if !response.headers().contains_key(CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT));
    }
    response
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// All `cookie` headers joined, as one string.
fn cookie_header(headers: &HeaderMap) -> String {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The authority a request came to: its `host` header, or an HTTP/2 `:authority`.
fn authority(request: &axum::extract::Request) -> &str {
    header(request.headers(), "host")
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// `/oauth2/*` picks its rule by host: a host that is not a DNS name or IP literal is refused
/// (400) before any handler runs, as `Check` refuses it before the rule walk.
async fn refuse_bad_host(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match parse_host(authority(&request)) {
        Ok(_) => next.run(request).await,
        Err(why) => to_response(Reply::json(
            400,
            json!({
                "error": "bad_request",
                "message": format!("the Host header is not a DNS name or IP literal: {why}"),
            }),
        )),
    }
}

/// The request's host; `refuse_bad_host` has already refused one that does not parse.
fn request_host(headers: &HeaderMap) -> String {
    parse_host(header(headers, "host").unwrap_or("")).unwrap_or_default()
}

/// The URL this request came to (scheme from the redirect URL on its host, else
/// `x-forwarded-proto`), for resolving relative `rd` values.
fn request_base(rule: &Rule, headers: &HeaderMap) -> Option<Url> {
    let authority = header(headers, "host")?;
    let scheme = if normalize_host(authority) == rule.redirect_host {
        rule.redirect_url.scheme()
    } else {
        match header(headers, "x-forwarded-proto") {
            Some(p) if p.eq_ignore_ascii_case("http") => "http",
            _ => "https",
        }
    };
    Url::parse(&format!("{scheme}://{authority}/")).ok()
}

fn no_rule() -> Response {
    to_response(Reply::page(
        404,
        "Not found",
        "No authentication rule serves this host.",
        None,
    ))
}

fn query_param(query: &Option<String>, name: &str) -> Option<String> {
    let q = query.as_deref()?;
    url::form_urlencoded::parse(q.as_bytes())
        .take(32)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn callback(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let rules = app.rules.load();
    let Some(rule) = rules.endpoint_rule(&request_host(&headers)) else {
        return no_rule();
    };
    let reply = crate::login::complete(
        &app,
        rule,
        query.as_deref().unwrap_or(""),
        &cookie_header(&headers),
        now(),
    )
    .await;
    app.metrics.record(Outcome::Callback);
    to_response(reply)
}

async fn start(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let rules = app.rules.load();
    let Some(rule) = rules.endpoint_rule(&request_host(&headers)) else {
        return no_rule();
    };
    let Some(base) = request_base(rule, &headers) else {
        return to_response(Reply::page(
            400,
            "Bad request",
            "The request has no usable Host header.",
            None,
        ));
    };
    let rd = query_param(&query, "rd").unwrap_or_else(|| "/".into());
    let Some(target) = checked_target(rule, &base, &rd) else {
        return to_response(Reply::page(
            400,
            "Bad redirect",
            "The address to return to after signing in is not allowed.",
            None,
        ));
    };
    let (outcome, reply) = crate::login::begin(&app, rule, target.as_str(), &cookie_header(&headers), now());
    app.metrics.record(outcome);
    to_response(reply)
}

/// Whether a browser marked this request as coming from another site (a logout CSRF: an
/// `<img>`, a link or a form on someone else's page). `Sec-Fetch-Site` decides when present:
/// `same-origin`, `same-site` and `none` (typed, bookmarked) proceed, anything else is
/// cross-site. Without it (older browsers, plain http), an `Origin` header counts as same
/// site only when it is `http(s)` with the request's own host, or a host under the rule's
/// `cookie_domain`, and the request's scheme where that is known (`x-forwarded-proto`, or the
/// redirect URL's on its host); `Origin: null` and anything unreadable are cross-site.
/// Neither header (a non-browser client, or a browser that sends neither): proceed.
fn is_cross_site(rule: &Rule, headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").trim().to_ascii_lowercase();
        return !matches!(site.as_str(), "same-origin" | "same-site" | "none");
    }
    match headers.get("origin") {
        None => false,
        Some(origin) => !origin
            .to_str()
            .is_ok_and(|o| same_site_origin(rule, headers, o.trim())),
    }
}

fn same_site_origin(rule: &Rule, headers: &HeaderMap, origin: &str) -> bool {
    let Ok(origin) = Url::parse(origin) else {
        return false; // includes `null`
    };
    // `Url` lowercases the host and leaves the port out of it.
    let Some(origin_host) = origin.host_str().map(|h| h.strip_suffix('.').unwrap_or(h)) else {
        return false;
    };
    let host = request_host(headers);
    let scheme_ok = match request_scheme(rule, headers, &host) {
        Some(scheme) => origin.scheme() == scheme,
        None => matches!(origin.scheme(), "http" | "https"),
    };
    let under_cookie_domain = rule.cookie_domain.as_deref().is_some_and(|d| {
        let d = d.trim_start_matches('.').to_ascii_lowercase();
        !d.is_empty()
            && (origin_host == d
                || origin_host
                    .strip_suffix(d.as_str())
                    .is_some_and(|p| p.ends_with('.')))
    });
    scheme_ok && !host.is_empty() && (origin_host == host || under_cookie_domain)
}

/// The scheme the client used, when we know it.
fn request_scheme(rule: &Rule, headers: &HeaderMap, host: &str) -> Option<&'static str> {
    match header(headers, "x-forwarded-proto").map(|p| p.trim().to_ascii_lowercase()) {
        Some(p) if p == "http" => Some("http"),
        Some(p) if p == "https" => Some("https"),
        _ if host == rule.redirect_host => match rule.redirect_url.scheme() {
            "http" => Some("http"),
            _ => Some("https"),
        },
        _ => None,
    }
}

/// The same-origin sign-out a confirmation page's button POSTs, keeping `rd`.
fn sign_out_action(query: &Option<String>) -> String {
    match query_param(query, "rd") {
        Some(rd) => format!(
            "{SIGN_OUT_PATH}?rd={}",
            url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        ),
        None => SIGN_OUT_PATH.to_string(),
    }
}

async fn sign_out(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let rules = app.rules.load();
    let Some(rule) = rules.endpoint_rule(&request_host(&headers)) else {
        return no_rule();
    };
    if is_cross_site(rule, &headers) {
        // Changes nothing: the user confirms with a same-site POST.
        tracing::info!(rule = %rule.name, "cross-site sign-out: asking the user to confirm");
        return to_response(Reply::sign_out_confirm(&sign_out_action(&query)));
    }
    let cookie = cookie_header(&headers);
    let now = now();
    // A session already revoked is no session: its ID token is not handed out as a hint.
    let session = app.read_session(&cookie, now).await;
    if let Some(s) = &session {
        // A saved copy of the cookie must not outlive the sign-out.
        app.revoke(s).await;
    }
    let present: Vec<&str> = cookies::pairs(&cookie).map(|(n, _)| n).collect();
    let mut clear = app
        .sessions
        .clear_session(rule.cookie_domain.as_deref(), present.iter().copied());
    if rule.cookie_domain.is_some() {
        // A host-only cookie of the same name would otherwise survive.
        clear.extend(app.sessions.clear_session(None, present.iter().copied()));
    }

    let end_session = app
        .providers
        .get(&rule.provider_key)
        .and_then(|p| p.discovered())
        .and_then(|d| d.metadata.end_session_endpoint.clone())
        .and_then(|e| Url::parse(&e).ok());
    let location = match end_session {
        Some(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = &session {
                    q.append_pair("id_token_hint", &s.id_token);
                }
                q.append_pair("client_id", &rule.client_id);
                q.append_pair("post_logout_redirect_uri", rule.post_logout_redirect_url.as_str());
            }
            url
        }
        None => {
            let base = request_base(rule, &headers);
            match (query_param(&query, "rd"), base) {
                (Some(rd), Some(base)) => match checked_target(rule, &base, &rd) {
                    Some(t) => t,
                    None => {
                        let mut r = Reply::page(
                            400,
                            "Bad redirect",
                            "The address to return to is not allowed.",
                            None,
                        );
                        r.add_cookies(clear);
                        return to_response(r);
                    }
                },
                _ => rule.post_logout_redirect_url.clone(),
            }
        }
    };
    tracing::info!(rule = %rule.name, revoked = session.is_some(), "signed out");
    to_response(Reply::redirect(location.as_str(), clear))
}

async fn userinfo(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let rules = app.rules.load();
    let cookie = cookie_header(&headers);
    let host = request_host(&headers);
    let now = now();
    let session = app.read_session(&cookie, now).await.filter(|s| s.is_live(now));
    let rule_name = rules
        .endpoint_rule(&host)
        .map(|r| r.name.clone())
        .unwrap_or_default();
    match session {
        Some(s) => {
            let rule = rules.enabled().find(|r| s.is_for(&r.issuer, &r.client_id));
            // Only an email that counts for the session's rule is shown.
            let email = s
                .identity
                .email_for(rule.is_some_and(|r| r.allowed.allow_unverified_email));
            let rule = rule.map(|r| r.name.clone());
            to_response(Reply::json(
                200,
                json!({
                    "sub": s.identity.sub,
                    "email": email,
                    "preferred_username": s.identity.preferred_username,
                    "groups": s.identity.groups,
                    "rule": rule,
                    "issuer": s.iss,
                    "expires_at": s.expires_at,
                }),
            ))
        }
        None => to_response(Reply::unauthorized(&rule_name, None)),
    }
}

async fn backchannel_logout() -> Response {
    to_response(Reply::json(
        501,
        json!({"error": "not_implemented", "message": "back-channel logout is not supported in this release"}),
    ))
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let not_ready = app.not_ready();
    if not_ready.is_empty() {
        to_response(Reply::json(200, json!({"ready": true})))
    } else {
        let rules: serde_json::Map<String, serde_json::Value> = not_ready
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        to_response(Reply::json(503, json!({"ready": false, "not_ready": rules})))
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut body = app.metrics.render();
    for p in app.providers.all() {
        body.push_str(&format!(
            "oidc_authz_jwks_fetches_total{{issuer=\"{}\"}} {}\n",
            p.issuer.replace('"', ""),
            p.jwks_fetches()
        ));
    }
    to_response(Reply::text(200, "text/plain; version=0.0.4", body))
}
