//! The admin REST API under `/api/v1` (bearer admin token, see `admin::token_ok`) and the web
//! console page, over the `core` rule management. Bodies are bounded; every bad request gets a
//! JSON 4xx. The admin router (`admin::router`) mounts these next to the gRPC service.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::core::{AdminError, RuleAdmin};
use super::{detached, token_ok};
use crate::config::{ConditionConfig, RuleConfig};

/// Largest request body the API reads.
pub const MAX_BODY: usize = 64 * 1024;

const CONSOLE_HTML: &str = include_str!("../console/index.html");

#[derive(Clone)]
struct AdminState {
    admin: Arc<RuleAdmin>,
    token: Arc<str>,
}

/// The REST API under `/api/v1`, behind the admin token, with bounded bodies.
pub fn api(admin: Arc<RuleAdmin>, token: Arc<str>) -> Router {
    let state = AdminState { admin, token };
    Router::new()
        .route("/api/v1/rules", get(list).post(create))
        .route("/api/v1/rules/{name}", get(get_rule).put(update).delete(delete))
        .route("/api/v1/rules/{name}/enable", post(enable))
        .route("/api/v1/rules/{name}/disable", post(disable))
        .route("/api/v1/rules/{name}/conditions", post(add_condition))
        .route("/api/v1/explain", get(explain))
        .route(
            "/api/v1/{*rest}",
            axum::routing::any(|| async { error(StatusCode::NOT_FOUND, "no such API endpoint", None) }),
        )
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
                None,
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The answer to a path the admin listener does not serve.
pub fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found", None)
}

/// The console page, with headers that keep it from being framed or sniffed.
pub async fn console() -> Response {
    let mut r = Html(CONSOLE_HTML).into_response();
    let h = r.headers_mut();
    h.insert("x-frame-options", axum::http::HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        axum::http::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(
        "x-content-type-options",
        axum::http::HeaderValue::from_static("nosniff"),
    );
    h.insert("cache-control", axum::http::HeaderValue::from_static("no-store"));
    r
}

/// A body that could not be read (too large: 413) as a JSON error.
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, BadBody> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the request body is larger than {MAX_BODY} bytes")
        } else {
            rejection.body_text()
        };
        BadBody {
            status,
            message,
            field: None,
        }
    })
}

fn error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    (status, Json(json!({"error": message, "field": field}))).into_response()
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match &self {
            AdminError::NotFound(_) => error(StatusCode::NOT_FOUND, &message, None),
            AdminError::Exists(_) | AdminError::Enabled(_) | AdminError::ReadOnly | AdminError::Conflict => {
                error(StatusCode::CONFLICT, &message, None)
            }
            AdminError::Invalid { field, .. } => error(StatusCode::BAD_REQUEST, &message, Some(field)),
            AdminError::Store(_) | AdminError::Interrupted(_) => {
                tracing::error!(error = %message, "rule store failure");
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, &message, None);
                r.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("1"));
                r
            }
        }
    }
}

async fn require_token(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let header = headers.get("authorization").and_then(|v| v.to_str().ok());
    if !token_ok(header, &state.token) {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong admin token", None);
        r.headers_mut().insert(
            "www-authenticate",
            axum::http::HeaderValue::from_static("Bearer realm=\"oidc-authz admin\""),
        );
        return r;
    }
    next.run(request).await
}

/// A body that cannot be used: too large (413), or not the expected JSON (400, naming the field).
struct BadBody {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl IntoResponse for BadBody {
    fn into_response(self) -> Response {
        error(self.status, &self.message, self.field.as_deref())
    }
}

/// Parses a JSON body, naming the offending field on error.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, BadBody> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // A missing field is reported at its parent; name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        let field = match (path.as_str(), missing) {
            (".", None) => None,
            (".", Some(m)) => Some(m),
            (p, Some(m)) => Some(format!("{p}.{m}")),
            (p, None) => Some(p.to_string()),
        };
        BadBody {
            status: StatusCode::BAD_REQUEST,
            message: format!("invalid JSON body: {message}"),
            field,
        }
    })?;
    de.end().map_err(|e| BadBody {
        status: StatusCode::BAD_REQUEST,
        message: format!("invalid JSON body: {e}"),
        field: None,
    })?;
    Ok(value)
}

/// Reads and parses a JSON body in one step.
fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, BadBody> {
    parse(&read_body(body)?)
}

/// The answer to a change: the rule with `status`, or the error.
fn answer(status: StatusCode, result: Result<RuleConfig, AdminError>) -> Response {
    match result {
        Ok(rule) => (status, Json(rule)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list(State(s): State<AdminState>) -> Response {
    Json(json!({"rules": s.admin.list()})).into_response()
}

async fn get_rule(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match s.admin.get(&name) {
        Ok(rule) => Json(rule).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn create(State(s): State<AdminState>, body: Result<Bytes, BytesRejection>) -> Response {
    let rule: RuleConfig = match json_body(body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let admin = s.admin.clone();
    answer(
        StatusCode::CREATED,
        detached(async move { admin.create(rule).await }).await,
    )
}

async fn update(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let rule: RuleConfig = match json_body(body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let admin = s.admin.clone();
    answer(
        StatusCode::OK,
        detached(async move { admin.update(&name, rule).await }).await,
    )
}

async fn set_enabled(s: AdminState, name: String, enabled: bool) -> Response {
    let admin = s.admin.clone();
    answer(
        StatusCode::OK,
        detached(async move { admin.set_enabled(&name, enabled).await }).await,
    )
}

async fn enable(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    set_enabled(s, name, true).await
}

async fn disable(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    set_enabled(s, name, false).await
}

async fn add_condition(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let condition: ConditionConfig = match json_body(body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let admin = s.admin.clone();
    answer(
        StatusCode::CREATED,
        detached(async move { admin.add_condition(&name, condition).await }).await,
    )
}

async fn delete(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    let admin = s.admin.clone();
    match detached(async move { admin.delete(&name).await }).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ExplainQuery {
    url: Option<String>,
    #[allow(dead_code)]
    method: Option<String>,
}

async fn explain(
    State(s): State<AdminState>,
    query: Result<Query<ExplainQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "bad query string", None);
    };
    let Some(url) = q.url.filter(|u| !u.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "url is required", Some("url"));
    };
    match s.admin.explain(&url) {
        Ok(e) => Json(e).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn each_error_has_its_status_and_message() {
        let answer = |e: AdminError| e.into_response().status();
        assert_eq!(answer(AdminError::NotFound("a".into())), StatusCode::NOT_FOUND);
        assert_eq!(answer(AdminError::Exists("a".into())), StatusCode::CONFLICT);
        assert_eq!(answer(AdminError::Enabled("a".into())), StatusCode::CONFLICT);
        assert_eq!(answer(StoreError::Conflict.into()), StatusCode::CONFLICT);
        let down = AdminError::from(StoreError::Unavailable {
            store: "redis redis://127.0.0.1/".into(),
            message: "no answer within 500 ms".into(),
        })
        .into_response();
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            down.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert_eq!(answer(StoreError::ReadOnly.into()), StatusCode::CONFLICT);
        let invalid = AdminError::Invalid {
            field: "issuer".into(),
            message: "is required".into(),
        };
        assert_eq!(answer(invalid), StatusCode::BAD_REQUEST);
        let io = StoreError::Io {
            path: "/x".into(),
            message: "disk full".into(),
        };
        assert_eq!(answer(io.into()), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            answer(AdminError::Interrupted("panic".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // The texts the console and clients have always seen.
        assert_eq!(
            AdminError::Exists("a".into()).to_string(),
            "a rule named `a` already exists"
        );
        assert_eq!(
            AdminError::Enabled("a".into()).to_string(),
            "rule `a` is enabled: disable it before deleting it"
        );
        assert_eq!(AdminError::ReadOnly.to_string(), StoreError::ReadOnly.to_string());
        assert_eq!(
            AdminError::Interrupted("x".into()).to_string(),
            "the change was interrupted: x"
        );
    }
}
