//! Talking to OpenID Providers: the claims of a token (`claims`), discovery (`discovery`),
//! signing keys (`keys`), ID and access token validation (`token`), back-channel logout tokens
//! (`logout_token`), the token endpoint (`exchange`: the code exchange and the refresh grant),
//! and `provider`, which keeps one live view of each IdP that rules share.

pub mod claims;
pub mod discovery;
pub mod exchange;
pub mod fetch;
pub mod keys;
pub mod logout_token;
pub mod provider;
pub mod token;
