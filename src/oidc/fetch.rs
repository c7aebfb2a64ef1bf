//! One HTTP client for every IdP call, with timeouts and a cap on response sizes, so a slow or
//! hostile IdP can neither hang a request nor exhaust memory.

use std::time::Duration;

/// Largest discovery document, JWKS or token response we read.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} did not answer in time")]
    TimedOut { url: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16, body: String },
    #[error("{url} answered more than {MAX_BODY} bytes")]
    TooLarge { url: String },
    #[error("{url} answered something that is not the expected JSON: {reason}")]
    BadJson { url: String, reason: String },
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(8))
        .redirect(reqwest::redirect::Policy::limited(3))
        // IdPs close idle connections after a few seconds (Node: 5 s); reusing one that is
        // being closed fails the request, so do not keep them longer than that.
        .pool_idle_timeout(Duration::from_secs(2))
        .user_agent(concat!("oidc-authz/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Sends a request and parses a JSON answer of at most `MAX_BODY` bytes.
pub async fn json<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
    url: &str,
) -> Result<T, FetchError> {
    let unreachable = |e: reqwest::Error| {
        if e.is_timeout() {
            FetchError::TimedOut { url: url.to_string() }
        } else {
            FetchError::Unreachable {
                url: url.to_string(),
                reason: e.to_string(),
            }
        }
    };
    let mut resp = req.send().await.map_err(unreachable)?;
    let status = resp.status();
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(FetchError::TooLarge { url: url.into() });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(FetchError::TooLarge { url: url.into() });
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        return Err(FetchError::Status {
            url: url.into(),
            status: status.as_u16(),
            body: text,
        });
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::BadJson {
        url: url.into(),
        reason: e.to_string(),
    })
}

// ---- metrics (crate::metrics): every IdP call is counted and timed here ----

use crate::metrics::IdpResult;

/// `json`, counted in `oidc_authz_idp_requests_total` and timed in
/// `oidc_authz_idp_request_duration_seconds` as `call` says.
pub async fn counted_json<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
    url: &str,
    call: crate::metrics::IdpCall<'_>,
) -> Result<T, FetchError> {
    let started = std::time::Instant::now();
    let result = json(req, url).await;
    let outcome = result.as_ref().map_or_else(idp_result, |_| IdpResult::Ok);
    call.record(outcome, started.elapsed());
    result
}

/// The `result` label of a call that failed with `e`.
fn idp_result(e: &FetchError) -> IdpResult {
    match e {
        FetchError::TimedOut { .. } => IdpResult::Timeout,
        FetchError::Unreachable { .. } => IdpResult::Error,
        FetchError::Status { status, .. } if (400..500).contains(status) => IdpResult::Http4xx,
        FetchError::Status { .. } => IdpResult::Http5xx,
        FetchError::TooLarge { .. } | FetchError::BadJson { .. } => IdpResult::Invalid,
    }
}
