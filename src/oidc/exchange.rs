//! The token endpoint: the authorization-code exchange (with PKCE) at the callback, and the
//! refresh-token grant that keeps a session going. Both authenticate the client the same way
//! (client_secret_basic, or client_secret_post when that is all the provider offers).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer};

use super::discovery::{ClientAuth, Metadata};
use super::fetch::{self, FetchError};
use crate::metrics::IdpCall;
use tracing::Instrument;

/// How long one refresh request may take (`refresh::REFRESH_BUDGET` bounds the whole refresh,
/// retry and token check included).
pub const REFRESH_TIMEOUT: Duration = Duration::from_millis(2500);

/// The token endpoint's answer. Tokens are secrets: this type never prints them.
#[derive(Deserialize)]
pub struct Tokens {
    pub id_token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Seconds the access token lives (RFC 6749 §5.1); a number, or a numeric string as some
    /// providers send it; anything else counts as not said.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(******)")
    }
}

fn lenient_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// `application/x-www-form-urlencoded` encoding, as RFC 6749 2.3.1 asks for Basic credentials.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The client, as the token endpoint authenticates it.
#[derive(Clone, Copy)]
pub struct Client<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

pub struct CodeExchange<'a> {
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub pkce_verifier: &'a str,
    pub client: Client<'a>,
}

pub async fn exchange_code(
    http: &reqwest::Client,
    meta: &Metadata,
    x: &CodeExchange<'_>,
    call: IdpCall<'_>,
) -> Result<Tokens, FetchError> {
    let form = vec![
        ("grant_type", "authorization_code"),
        ("code", x.code),
        ("redirect_uri", x.redirect_uri),
        ("code_verifier", x.pkce_verifier),
    ];
    token_request(http, meta, form, x.client, None, call)
        .instrument(crate::telemetry::idp_span("token", "POST", &meta.token_endpoint))
        .await
}

/// Why a refresh did not give new tokens.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// `invalid_grant`: the refresh token was used, revoked or has expired. The session ends.
    #[error("the identity provider answered invalid_grant")]
    InvalidGrant,
    /// The token endpoint could not be reached, timed out or answered 5xx.
    #[error("{0}")]
    Unavailable(String),
    /// Any other refusal (another OAuth error, a body that is not a token response).
    #[error("{0}")]
    Refused(String),
}

/// `grant_type=refresh_token` at the token endpoint.
pub async fn refresh(
    http: &reqwest::Client,
    meta: &Metadata,
    refresh_token: &str,
    client: Client<'_>,
    call: IdpCall<'_>,
) -> Result<Tokens, RefreshError> {
    let form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    token_request(http, meta, form, client, Some(REFRESH_TIMEOUT), call)
        .instrument(crate::telemetry::idp_span(
            "refresh",
            "POST",
            &meta.token_endpoint,
        ))
        .await
        .map_err(|e| match e {
            FetchError::Status { status, body, url } => {
                // 5xx, and 429 (too many requests): the IdP is there but cannot answer now.
                if status >= 500 || status == 429 {
                    RefreshError::Unavailable(format!("{url} answered HTTP {status}"))
                } else if oauth_error(&body).as_deref() == Some("invalid_grant") {
                    RefreshError::InvalidGrant
                } else {
                    let code = oauth_error(&body).unwrap_or_else(|| "no error code".into());
                    // The code is the IdP's text: keep it short and printable.
                    let code: String = code.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
                    RefreshError::Refused(format!("{url} answered HTTP {status} ({code})"))
                }
            }
            e @ (FetchError::Unreachable { .. } | FetchError::TimedOut { .. }) => {
                RefreshError::Unavailable(e.to_string())
            }
            FetchError::TooLarge { url } | FetchError::BadJson { url, .. } => {
                RefreshError::Refused(format!("{url} answered something that is not a token response"))
            }
        })
}

/// The `error` of an OAuth error response body (RFC 6749 §5.2), if it is one.
fn oauth_error(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    serde_json::from_str::<ErrorBody>(body).ok().map(|b| b.error)
}

/// One POST to the token endpoint with the client's authentication.
async fn token_request(
    http: &reqwest::Client,
    meta: &Metadata,
    mut form: Vec<(&str, &str)>,
    client: Client<'_>,
    timeout: Option<Duration>,
    call: IdpCall<'_>,
) -> Result<Tokens, FetchError> {
    let mut req = http
        .post(&meta.token_endpoint)
        .header("accept", "application/json");
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    match meta.client_auth() {
        ClientAuth::Basic => {
            let creds = format!("{}:{}", form_encode(client.id), form_encode(client.secret));
            req = req.header("authorization", format!("Basic {}", STANDARD.encode(creds)));
        }
        ClientAuth::Post => {
            form.push(("client_id", client.id));
            form.push(("client_secret", client.secret));
        }
    }
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let req = req
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    // A pooled connection the IdP closed at that very moment fails at once, before any answer:
    // try once more on a fresh connection. (Had the IdP used the code or a rotating refresh
    // token, the retry gets invalid_grant.) A timeout is not retried: the user has waited
    // long enough.
    let retry = req.try_clone();
    match (fetch::counted_json(req, &meta.token_endpoint, call).await, retry) {
        (Err(FetchError::Unreachable { .. }), Some(again)) => {
            fetch::counted_json(again, &meta.token_endpoint, call).await
        }
        (first, _) => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_is_read_leniently() {
        let t: Tokens = serde_json::from_str(r#"{"id_token":"a","expires_in":300}"#).unwrap();
        assert_eq!(t.expires_in, Some(300));
        let t: Tokens = serde_json::from_str(r#"{"id_token":"a","expires_in":"300"}"#).unwrap();
        assert_eq!(t.expires_in, Some(300));
        for odd in [r#""soon""#, "null", "-5", "[1]"] {
            let t: Tokens = serde_json::from_str(&format!(r#"{{"expires_in":{odd}}}"#)).unwrap();
            assert!(t.expires_in.is_none_or(|s| s == 0), "{odd}");
        }
    }

    #[test]
    fn an_oauth_error_code_is_read_from_the_body() {
        assert_eq!(
            oauth_error(r#"{"error":"invalid_grant","error_description":"x"}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(oauth_error("<html>"), None);
        assert_eq!(oauth_error(r#"{"error":5}"#), None);
    }
}
