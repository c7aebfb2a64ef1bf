//! One HTTP client for every IdP call, with timeouts and a cap on response sizes, so a slow or
//! hostile IdP can neither hang a request nor exhaust memory. A failure says why in words
//! (connection refused, DNS, TLS, timeout); each call carries the current span's
//! `traceparent` to the IdP.

use std::error::Error as _;
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
    let result = send_json(req, url).await;
    match &result {
        Ok(_) => crate::telemetry::record_idp_result(Some(200), None),
        Err(FetchError::Status { status, .. }) => {
            crate::telemetry::record_idp_result(Some(*status), Some("http_status"))
        }
        Err(e) => crate::telemetry::record_idp_result(None, Some(e.kind())),
    }
    result
}

impl FetchError {
    /// A short name for the kind of failure (the `error.type` of the call's span).
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Unreachable { .. } => "unreachable",
            FetchError::TimedOut { .. } => "timeout",
            FetchError::Status { .. } => "http_status",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::BadJson { .. } => "bad_json",
        }
    }
}

async fn send_json<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
    url: &str,
) -> Result<T, FetchError> {
    let unreachable = |e: reqwest::Error| {
        if e.is_timeout() {
            FetchError::TimedOut { url: url.to_string() }
        } else {
            FetchError::Unreachable {
                url: url.to_string(),
                reason: why_unreachable(&e),
            }
        }
    };
    let (client, request) = req.build_split();
    let mut request = request.map_err(unreachable)?;
    crate::telemetry::inject_current(request.headers_mut());
    let mut resp = client.execute(request).await.map_err(unreachable)?;
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

/// Why a request got no answer, in words: "connection refused by 127.0.0.1:1", "DNS lookup of
/// idp.example failed: …", "TLS handshake with idp.example:443 failed: …", "connection to … timed
/// out". Read from the error's chain of causes (reqwest → hyper → io / rustls); anything else
/// is the chain's messages joined.
fn why_unreachable(e: &reqwest::Error) -> String {
    let url = e.url();
    let host = url.and_then(|u| u.host_str()).unwrap_or("the identity provider");
    let target = match url.and_then(|u| u.port_or_known_default()) {
        Some(port) if host.contains(':') => format!("[{host}]:{port}"),
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    // The chain of causes, with what each io::Error wraps (its own `source` skips that error).
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(c) = next {
        if chain.len() >= 16 {
            break;
        }
        chain.push(c);
        next = match c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    let mut messages: Vec<String> = Vec::new();
    let mut dns = false;
    for c in &chain {
        let message = c.to_string();
        if message.starts_with("dns error") {
            dns = true;
        }
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return format!("TLS handshake with {target} failed: {tls}");
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::ConnectionRefused => return format!("connection refused by {target}"),
                ErrorKind::ConnectionReset => return format!("connection reset by {target}"),
                ErrorKind::TimedOut => return format!("connection to {target} timed out"),
                ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                    return format!("{target} is unreachable (no route)")
                }
                _ if dns => return format!("DNS lookup of {host} failed: {message}"),
                _ => {}
            }
        }
        if messages.last() != Some(&message) {
            messages.push(message);
        }
    }
    if dns {
        return format!("DNS lookup of {host} failed");
    }
    if e.is_timeout() {
        return format!("connection to {target} timed out");
    }
    if messages.is_empty() {
        e.to_string()
    } else {
        messages.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reason `json` gives for a GET of `url` with a short timeout.
    async fn reason(url: &str) -> String {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        match json::<serde_json::Value>(client.get(url), url).await {
            Err(FetchError::Unreachable { reason, .. }) => reason,
            other => format!("not unreachable: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_says_so_and_names_the_address() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
        assert_eq!(
            reason(&url).await,
            format!("connection refused by 127.0.0.1:{port}")
        );
        let e = FetchError::Unreachable {
            url: url.clone(),
            reason: reason(&url).await,
        };
        assert_eq!(
            e.to_string(),
            format!("cannot reach {url}: connection refused by 127.0.0.1:{port}")
        );
    }

    #[tokio::test]
    async fn a_failed_dns_lookup_names_the_host() {
        // `.invalid` never resolves (RFC 2606).
        let why = reason("https://idp.invalid/.well-known/openid-configuration").await;
        assert!(why.starts_with("DNS lookup of idp.invalid failed"), "{why}");
    }

    #[tokio::test]
    async fn a_tls_failure_says_tls() {
        // A listener that answers the TLS ClientHello with plain HTTP.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let why = reason(&format!("https://127.0.0.1:{port}/jwks")).await;
        assert!(
            why.starts_with(&format!("TLS handshake with 127.0.0.1:{port} failed: ")),
            "{why}"
        );
    }

    #[tokio::test]
    async fn an_idp_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let url = format!("http://127.0.0.1:{port}/token");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let e = json::<serde_json::Value>(client.get(&url), &url)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), format!("{url} did not answer in time"));
    }
}
