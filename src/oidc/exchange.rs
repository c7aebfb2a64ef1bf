//! The authorization-code exchange at the token endpoint, with PKCE and client authentication
//! (client_secret_basic, or client_secret_post when that is all the provider offers).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;

use super::discovery::{ClientAuth, Metadata};
use super::fetch::{self, FetchError};

/// The token endpoint's answer. Tokens are secrets: this type never prints them.
#[derive(Deserialize)]
pub struct Tokens {
    pub id_token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(******)")
    }
}

/// `application/x-www-form-urlencoded` encoding, as RFC 6749 2.3.1 asks for Basic credentials.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub struct CodeExchange<'a> {
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub pkce_verifier: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
}

pub async fn exchange_code(
    http: &reqwest::Client,
    meta: &Metadata,
    x: &CodeExchange<'_>,
) -> Result<Tokens, FetchError> {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "authorization_code"),
        ("code", x.code),
        ("redirect_uri", x.redirect_uri),
        ("code_verifier", x.pkce_verifier),
    ];
    let mut req = http
        .post(&meta.token_endpoint)
        .header("accept", "application/json");
    match meta.client_auth() {
        ClientAuth::Basic => {
            let creds = format!("{}:{}", form_encode(x.client_id), form_encode(x.client_secret));
            req = req.header("authorization", format!("Basic {}", STANDARD.encode(creds)));
        }
        ClientAuth::Post => {
            form.push(("client_id", x.client_id));
            form.push(("client_secret", x.client_secret));
        }
    }
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let req = req
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    // A pooled connection the IdP closed at that very moment fails at once, before any answer:
    // try once more on a fresh connection. (Had the IdP used the code, the retry gets
    // invalid_grant.) A timeout is not retried: the user has waited long enough.
    let retry = req.try_clone();
    match (fetch::json(req, &meta.token_endpoint).await, retry) {
        (Err(FetchError::Unreachable { .. }), Some(again)) => fetch::json(again, &meta.token_endpoint).await,
        (first, _) => first,
    }
}
