//! The claims of an OIDC Back-Channel Logout 1.0 logout token (§2.4, validated as §2.6 asks):
//! `iss` exact, `aud` naming the client, `iat` recent, `exp` not passed when present, `jti`,
//! the back-channel logout event in `events`, no `nonce`, and a `sid` and/or a `sub`. The
//! signature is checked before this, by `provider::Provider::verify_logout_token`; replay (a
//! `jti` seen before) is the session store's business, since it may be shared by replicas.

use serde_json::Value;

use super::claims::Claims;
use super::token::{TokenError, SKEW_SECS};

/// The event a logout token must carry.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A logout token older than this (by `iat`, beyond the clock skew) is refused: IdPs deliver
/// them at once, and the replay memory only needs to hold a `jti` this long.
pub const MAX_AGE_SECS: u64 = 10 * 60;

/// Longest `sid`, `sub` or `jti` we act on.
const MAX_CLAIM_LEN: usize = 1024;

/// Why a logout token was refused. Nothing here holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("the logout token has no back-channel logout event in `events`")]
    NoLogoutEvent,
    #[error("a logout token must not carry a nonce")]
    Nonce,
    #[error("the logout token names neither a sid nor a sub")]
    NoSubjectOrSession,
    #[error("the logout token was issued too long ago")]
    TooOld,
    #[error("this logout token was already used")]
    Replayed,
    #[error("no enabled rule has the logout token's issuer and audience")]
    NoRule,
}

/// What a valid logout token asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logout {
    /// The IdP session to end (that session only).
    pub sid: Option<String>,
    /// The user whose sessions end, when there is no `sid`.
    pub sub: Option<String>,
    /// The token's id, remembered against replay.
    pub jti: String,
    /// Unix seconds after which the token is refused anyway (so its `jti` need not be
    /// remembered longer).
    pub refused_after: u64,
}

/// A non-empty string claim of bounded length.
fn text<'c>(claims: &'c Claims, name: &'static str) -> Result<Option<&'c str>, LogoutTokenError> {
    match claims.text(name) {
        Some(s) if s.len() > MAX_CLAIM_LEN => Err(TokenError::Malformed.into()),
        Some("") | None => Ok(None),
        Some(s) => Ok(Some(s)),
    }
}

/// Checks a logout token's claims (its signature already checked) for `issuer` and
/// `client_id` at `now`.
pub fn check(claims: &Claims, issuer: &str, client_id: &str, now: u64) -> Result<Logout, LogoutTokenError> {
    match claims.issuer() {
        Some(iss) if iss == issuer => {}
        Some(_) => return Err(TokenError::Issuer.into()),
        None => return Err(TokenError::MissingClaim("iss").into()),
    }
    let audiences = claims.audiences().ok_or(TokenError::MissingClaim("aud"))?;
    if !audiences.contains(&client_id) {
        return Err(TokenError::Audience.into());
    }
    let iat = claims.issued_at().ok_or(TokenError::MissingClaim("iat"))?;
    if iat > now.saturating_add(SKEW_SECS) {
        return Err(TokenError::IssuedInFuture.into());
    }
    if iat.saturating_add(MAX_AGE_SECS + SKEW_SECS) <= now {
        return Err(LogoutTokenError::TooOld);
    }
    if let Some(exp) = claims.expires_at() {
        if now >= exp.saturating_add(SKEW_SECS) {
            return Err(TokenError::Expired.into());
        }
    }
    if let Some(nbf) = claims.not_before() {
        if nbf > now.saturating_add(SKEW_SECS) {
            return Err(TokenError::NotYetValid.into());
        }
    }
    let has_event = claims
        .events()
        .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !has_event {
        return Err(LogoutTokenError::NoLogoutEvent);
    }
    if claims.has("nonce") {
        return Err(LogoutTokenError::Nonce);
    }
    let jti = text(claims, "jti")?.ok_or(TokenError::MissingClaim("jti"))?;
    let sid = text(claims, "sid")?;
    let sub = text(claims, "sub")?;
    if sid.is_none() && sub.is_none() {
        return Err(LogoutTokenError::NoSubjectOrSession);
    }
    Ok(Logout {
        sid: sid.map(str::to_string),
        sub: sub.map(str::to_string),
        jti: jti.to_string(),
        refused_after: iat.saturating_add(MAX_AGE_SECS + 2 * SKEW_SECS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_000_000;

    fn good() -> Value {
        json!({
            "iss": "https://idp", "aud": "gw", "iat": NOW - 5, "exp": NOW + 115, "jti": "j-1",
            "sid": "s-1", "sub": "u",
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        })
    }

    fn checked(v: Value) -> Result<Logout, LogoutTokenError> {
        check(
            &Claims::from(v.as_object().cloned().unwrap()),
            "https://idp",
            "gw",
            NOW,
        )
    }

    fn without(name: &str) -> Value {
        let mut v = good();
        v.as_object_mut().unwrap().remove(name);
        v
    }

    fn with(name: &str, value: Value) -> Value {
        let mut v = good();
        v[name] = value;
        v
    }

    #[test]
    fn a_good_token_names_its_sid_sub_and_jti() {
        let l = checked(good()).unwrap();
        assert_eq!(l.sid.as_deref(), Some("s-1"));
        assert_eq!(l.sub.as_deref(), Some("u"));
        assert_eq!(l.jti, "j-1");
        assert!(l.refused_after > NOW);
        // sid alone, sub alone, no exp, several audiences: all fine.
        assert!(checked(without("sub")).is_ok());
        assert!(checked(without("sid")).is_ok());
        assert!(checked(without("exp")).is_ok());
        assert!(checked(with("aud", json!(["other", "gw"]))).is_ok());
    }

    #[test]
    fn every_bad_kind_is_refused() {
        let cases: Vec<(Value, LogoutTokenError)> = vec![
            (with("iss", json!("https://other")), TokenError::Issuer.into()),
            (without("iss"), TokenError::MissingClaim("iss").into()),
            (with("aud", json!("other")), TokenError::Audience.into()),
            (without("aud"), TokenError::MissingClaim("aud").into()),
            (without("iat"), TokenError::MissingClaim("iat").into()),
            (with("iat", json!(NOW + 600)), TokenError::IssuedInFuture.into()),
            (with("iat", json!(NOW - 3600)), LogoutTokenError::TooOld),
            (with("exp", json!(NOW - 120)), TokenError::Expired.into()),
            (with("nbf", json!(NOW + 600)), TokenError::NotYetValid.into()),
            (without("events"), LogoutTokenError::NoLogoutEvent),
            (with("events", json!({})), LogoutTokenError::NoLogoutEvent),
            (
                with("events", json!({BACKCHANNEL_LOGOUT_EVENT: "yes"})),
                LogoutTokenError::NoLogoutEvent,
            ),
            (
                with("events", json!([BACKCHANNEL_LOGOUT_EVENT])),
                LogoutTokenError::NoLogoutEvent,
            ),
            (with("nonce", json!("n")), LogoutTokenError::Nonce),
            (without("jti"), TokenError::MissingClaim("jti").into()),
            (with("jti", json!("")), TokenError::MissingClaim("jti").into()),
            (with("jti", json!("x".repeat(2000))), TokenError::Malformed.into()),
        ];
        for (claims, expected) in cases {
            assert_eq!(checked(claims.clone()), Err(expected), "{claims}");
        }
        let mut neither = without("sid");
        neither.as_object_mut().unwrap().remove("sub");
        assert_eq!(checked(neither), Err(LogoutTokenError::NoSubjectOrSession));
        assert_eq!(
            checked(
                with("sid", json!(""))
                    .as_object()
                    .cloned()
                    .map(|mut m| {
                        m.remove("sub");
                        Value::Object(m)
                    })
                    .unwrap()
            ),
            Err(LogoutTokenError::NoSubjectOrSession)
        );
    }
}
