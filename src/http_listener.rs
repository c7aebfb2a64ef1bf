//! The HTTP edge: `/oauth2/*` (callback, start, sign-out, userinfo, back-channel and
//! front-channel logout), `/healthz`, `/readyz` and
//! `/metrics`. The login flow itself lives in `login`, sign-out and userinfo in
//! `session_endpoints`; this file only maps HTTP in and out.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tracing::Instrument;

use crate::app::{now, App};
use crate::metrics::Outcome;
use crate::redirect_guard::checked_target;
use crate::reply::{Reply, SIGN_OUT_PATH};
use crate::rules::normalize::parse_host;
use crate::session_endpoints::{self, no_rule, request_base, EndpointRequest, MAX_LOGOUT_BODY};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/oauth2/callback", get(callback))
        .route("/oauth2/start", get(start))
        .route(SIGN_OUT_PATH, get(sign_out).post(sign_out))
        .route("/oauth2/userinfo", get(userinfo))
        .route(
            "/oauth2/backchannel_logout",
            axum::routing::post(backchannel_logout)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_LOGOUT_BODY)),
        )
        .route("/oauth2/frontchannel_logout", get(frontchannel_logout))
        .route_layer(axum::middleware::from_fn(refuse_bad_host))
        .route(
            "/healthz",
            get(|| async { to_response(Reply::text(200, TEXT, "ok\n".into())) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn(traced))
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

/// Each request to a route is a server span (its parent from the request's `traceparent`), and
/// its `x-request-id` is on every log line it causes.
async fn traced(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let span = crate::telemetry::http_span(request.headers(), request.method().as_str(), &route);
    let request_id = header(request.headers(), "x-request-id").map(str::to_string);
    let response =
        crate::telemetry::with_request_id(request_id.as_deref(), next.run(request).instrument(span.clone()))
            .await;
    crate::telemetry::record_http_status(&span, response.status().as_u16());
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
        Err(why) => to_response(Reply::bad_host(&why)),
    }
}

/// The request's host; `refuse_bad_host` has already refused one that does not parse.
fn request_host(headers: &HeaderMap) -> String {
    parse_host(header(headers, "host").unwrap_or("")).unwrap_or_default()
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
        return to_response(no_rule());
    };
    let reply = crate::login::complete(
        &app,
        rule,
        query.as_deref().unwrap_or(""),
        &cookie_header(&headers),
        now(),
    )
    .await;
    app.metrics.record(Some(rule.counted()), Outcome::Callback);
    to_response(reply)
}

async fn start(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let rules = app.rules.load();
    let Some(rule) = rules.endpoint_rule(&request_host(&headers)) else {
        return to_response(no_rule());
    };
    let Some(base) = request_base(
        rule,
        header(&headers, "host"),
        header(&headers, "x-forwarded-proto"),
    ) else {
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
    app.metrics.record(Some(rule.counted()), outcome);
    to_response(reply)
}

/// The facts the session endpoints read: headers as sent, `rd`, and the time.
fn endpoint_request<'a>(headers: &'a HeaderMap, cookie: &'a str, rd: Option<&'a str>) -> EndpointRequest<'a> {
    // A header that is present but unreadable counts as cross-site, as `Some("")`.
    let raw = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    EndpointRequest {
        authority: header(headers, "host"),
        cookie_header: cookie,
        sec_fetch_site: raw("sec-fetch-site"),
        origin: raw("origin"),
        forwarded_proto: header(headers, "x-forwarded-proto"),
        rd,
        now: now(),
    }
}

async fn sign_out(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let cookie = cookie_header(&headers);
    let rd = query_param(&query, "rd");
    let request = endpoint_request(&headers, &cookie, rd.as_deref());
    to_response(session_endpoints::sign_out(&app, &request).await)
}

async fn userinfo(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let cookie = cookie_header(&headers);
    let request = endpoint_request(&headers, &cookie, None);
    to_response(session_endpoints::userinfo(&app, &request).await)
}

/// The body is read as bytes (a form; a wrong content type is not held against the IdP), at
/// most `MAX_LOGOUT_BODY`: a larger one is a 400 like any bad logout request.
async fn backchannel_logout(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    match body {
        Ok(body) => to_response(session_endpoints::backchannel_logout(&app, &body, now()).await),
        Err(_) => to_response(Reply::json(400, json!({"error": "invalid_request"}))),
    }
}

async fn frontchannel_logout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let cookie = cookie_header(&headers);
    let iss = query_param(&query, "iss");
    let sid = query_param(&query, "sid");
    let request = endpoint_request(&headers, &cookie, None);
    to_response(session_endpoints::frontchannel_logout(&app, &request, iss.as_deref(), sid.as_deref()).await)
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    app.check_redis().await;
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
    app.check_redis().await;
    let body = app.metrics.render(&app.scrape_state());
    to_response(Reply::text(200, crate::metrics::CONTENT_TYPE, body))
}
