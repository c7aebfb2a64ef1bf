//! The admin listener, wired in one place so its parts depend one way: `core` (the rule
//! management every edge shares) depends on no edge; `http` (REST and the console) and `grpc`
//! (the gRPC service) depend on `core` and on this module's bearer-token check and `detached`
//! helper; this module only mounts them on one router.

pub mod core;
pub mod grpc;
pub mod http;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;

pub use self::core::{redact, AdminError, RuleAdmin, REDACTED};

/// The admin listener's router: the gRPC routes (rule service, reflection), the console at `/`
/// and the REST API under `/api/v1`. The gRPC router's own catch-all is replaced so that
/// unknown paths answer a plain 404.
pub fn router(admin: Arc<RuleAdmin>, token: &str) -> Router {
    let token: Arc<str> = token.into();
    grpc::routes(admin.clone(), token.clone())
        .route("/", get(http::console))
        .merge(http::api(admin, token))
        .fallback(|| async { http::not_found() })
}

/// Whether `header` carries the admin token (constant-time comparison).
pub fn token_ok(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
    else {
        return false;
    };
    !token.is_empty() && bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

/// Runs a rule change to its end even if the client goes away meanwhile (a change half
/// applied would leave this replica behind the store until the next sync); a task that stops
/// before answering is `AdminError::Interrupted`.
pub(crate) async fn detached<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, AdminError>> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::spawn(change)
        .await
        .unwrap_or_else(|e| Err(AdminError::Interrupted(e.to_string())))
}
