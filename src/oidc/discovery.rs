//! The provider's discovery document (OpenID Connect Discovery 1.0): the endpoints and the
//! algorithms we may accept. The `issuer` in it must equal the configured issuer byte for byte.

use serde::Deserialize;

use super::fetch::{self, FetchError};
use crate::metrics::IdpCall;
use tracing::Instrument;

#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(
        "discovery says issuer `{found}`, but the rule's issuer is `{expected}` (they must match exactly)"
    )]
    IssuerMismatch { expected: String, found: String },
    #[error("discovery document field `{0}` is not an http(s) URL")]
    BadEndpoint(&'static str),
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

impl Metadata {
    /// client_secret_basic, unless the provider offers only client_secret_post.
    pub fn client_auth(&self) -> ClientAuth {
        match &self.token_endpoint_auth_methods_supported {
            Some(methods)
                if !methods.iter().any(|m| m == "client_secret_basic")
                    && methods.iter().any(|m| m == "client_secret_post") =>
            {
                ClientAuth::Post
            }
            _ => ClientAuth::Basic,
        }
    }
}

pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    expected_issuer: &str,
    call: IdpCall<'_>,
) -> Result<Metadata, DiscoveryError> {
    let meta: Metadata = fetch::counted_json(http.get(url), url, call)
        .instrument(crate::telemetry::idp_span("discovery", "GET", url))
        .await?;
    if meta.issuer != expected_issuer {
        return Err(DiscoveryError::IssuerMismatch {
            expected: expected_issuer.into(),
            found: meta.issuer,
        });
    }
    for (name, value) in [
        ("authorization_endpoint", &meta.authorization_endpoint),
        ("token_endpoint", &meta.token_endpoint),
        ("jwks_uri", &meta.jwks_uri),
    ] {
        match url::Url::parse(value) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
            _ => return Err(DiscoveryError::BadEndpoint(name)),
        }
    }
    Ok(meta)
}
