//! The claims of a token, read through typed accessors. A token's payload is JSON a client or
//! an IdP wrote, so every claim may be missing or of the wrong type: each accessor says what a
//! usable value is (a string, a NumericDate, one or many audiences) once, and the checks in
//! `token` and the identity in `identity` never pick at raw JSON.

use serde::Deserialize;
use serde_json::{Map, Value};

/// A token's claims as it carried them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Claims(Map<String, Value>);

/// What a `groups` claim holds: an array (of which only the strings count) or one string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GroupsClaim<'a> {
    None,
    One(&'a str),
    Many(&'a [Value]),
}

impl Claims {
    /// A string claim; `None` when missing or not a string.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    pub fn issuer(&self) -> Option<&str> {
        self.text("iss")
    }

    pub fn subject(&self) -> Option<&str> {
        self.text("sub")
    }

    pub fn authorized_party(&self) -> Option<&str> {
        self.text("azp")
    }

    pub fn nonce(&self) -> Option<&str> {
        self.text("nonce")
    }

    /// `aud`: one string or an array (its strings); `None` when missing or of another type.
    pub fn audiences(&self) -> Option<Vec<&str>> {
        match self.0.get("aud") {
            Some(Value::String(s)) => Some(vec![s.as_str()]),
            Some(Value::Array(items)) => Some(items.iter().filter_map(Value::as_str).collect()),
            _ => None,
        }
    }

    /// A NumericDate claim in whole seconds (negative counts as 0, fractions are dropped,
    /// values past `u64` saturate); `None` when missing or not a number.
    fn time(&self, name: &str) -> Option<u64> {
        self.0
            .get(name)
            .and_then(Value::as_f64)
            .map(|f| f.max(0.0) as u64)
    }

    pub fn expires_at(&self) -> Option<u64> {
        self.time("exp")
    }

    pub fn not_before(&self) -> Option<u64> {
        self.time("nbf")
    }

    pub fn issued_at(&self) -> Option<u64> {
        self.time("iat")
    }

    /// A logout token (OIDC Back-Channel Logout 1.0 §2.4) carries `events`.
    pub fn has_events(&self) -> bool {
        self.has("events")
    }

    /// `events`, when it is a JSON object.
    pub fn events(&self) -> Option<&Map<String, Value>> {
        self.0.get("events").and_then(Value::as_object)
    }

    /// Whether the claim is present, whatever its value.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Whether the email is verified: only an `email_verified` of `false` (or the string
    /// `"false"`, which some providers send) says it is not; a missing claim counts as verified.
    pub fn email_verified(&self) -> bool {
        match self.0.get("email_verified") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => !s.trim().eq_ignore_ascii_case("false"),
            _ => true,
        }
    }

    pub fn groups(&self) -> GroupsClaim<'_> {
        match self.0.get("groups") {
            Some(Value::Array(items)) => GroupsClaim::Many(items),
            Some(Value::String(s)) => GroupsClaim::One(s),
            _ => GroupsClaim::None,
        }
    }
}

impl From<Map<String, Value>> for Claims {
    fn from(map: Map<String, Value>) -> Claims {
        Claims(map)
    }
}
