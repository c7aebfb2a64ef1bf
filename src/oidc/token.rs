//! Validating a JWT from an issuer: the algorithm policy, the signature against the issuer's
//! keys, and the claims (`iss` exact, `aud`/`azp`, `exp`/`nbf`/`iat` with 60 s of skew, `nonce`
//! at the callback). Each failure is its own variant, so callers and logs can say which check
//! failed without ever printing the token.
//!
//! These checks are for ID tokens and bearer tokens: a header with `crit` (RFC 7515 §4.1.11; we
//! understand no extension), a `typ` of `logout+jwt` and an `events` claim are refused, so a
//! back-channel logout token can never be used to sign in. Logout tokens are read with
//! `read_logout_header` and their claims checked by `logout_token`.

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::claims::Claims;
use super::keys::VerifyKey;

/// Allowed clock skew, in seconds.
pub const SKEW_SECS: u64 = 60;
/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Asymmetric algorithms only: never `none`, never HMAC (a public key is not a secret).
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm `{0}` is not accepted")]
    Algorithm(String),
    #[error("no signing key matches the token's kid")]
    UnknownKey,
    #[error("the signing keys cannot be had right now")]
    KeysUnavailable,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token's iss is not this rule's issuer")]
    Issuer,
    #[error("the token's aud does not name this client")]
    Audience,
    #[error("the token's azp is not this client")]
    AuthorizedParty,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("the token's nonce does not match the login")]
    Nonce,
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the token's header has `crit`, and no extension is understood")]
    CriticalHeader,
    #[error("the token is a logout token, not an ID or access token")]
    LogoutToken,
}

/// The algorithms we accept from a provider: its advertised list, asymmetric ones only.
pub fn accepted_algorithms(advertised: &[String]) -> Vec<Algorithm> {
    if advertised.is_empty() {
        return vec![Algorithm::RS256];
    }
    ASYMMETRIC
        .iter()
        .copied()
        .filter(|a| advertised.iter().any(|s| s == alg_name(*a)))
        .collect()
}

fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// What the token header asks for, read before any key is chosen.
#[derive(Debug, Clone)]
pub struct TokenHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Reads the header and applies the algorithm policy. `alg: none` and unknown algorithms fail
/// here, as does any HMAC algorithm, a header with `crit` and a logout token's `typ`.
pub fn read_header(token: &str, accepted: &[Algorithm]) -> Result<TokenHeader, TokenError> {
    parse_header(token, accepted, Kind::SignIn)
}

/// Reads a back-channel logout token's header: the same algorithm policy and `crit` rule as
/// `read_header`, but a `typ` of `logout+jwt` is what it should be (and, as OIDC Back-Channel
/// Logout 1.0 §2.4 only recommends it, its absence is not held against it).
pub fn read_logout_header(token: &str, accepted: &[Algorithm]) -> Result<TokenHeader, TokenError> {
    parse_header(token, accepted, Kind::Logout)
}

/// What a token is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An ID token or a bearer token.
    SignIn,
    /// A back-channel logout token.
    Logout,
}

fn parse_header(token: &str, accepted: &[Algorithm], kind: Kind) -> Result<TokenHeader, TokenError> {
    if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
        return Err(TokenError::Malformed);
    }
    // Read as plain JSON first, so that any `crit` (whatever its shape) and any `typ` are seen.
    let raw = raw_header(token).ok_or(TokenError::Malformed)?;
    if raw.contains_key("crit") {
        return Err(TokenError::CriticalHeader);
    }
    if kind == Kind::SignIn && raw.get("typ").and_then(Value::as_str).is_some_and(is_logout_typ) {
        return Err(TokenError::LogoutToken);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::Json(_) => {
            // `alg` values jsonwebtoken does not know (such as "none") land here.
            TokenError::Algorithm(raw_alg(token).unwrap_or_else(|| "?".into()))
        }
        _ => TokenError::Malformed,
    })?;
    if !accepted.contains(&header.alg) {
        return Err(TokenError::Algorithm(alg_name(header.alg).into()));
    }
    Ok(TokenHeader {
        alg: header.alg,
        kid: header.kid,
    })
}

/// The header as a JSON object, if it is one.
fn raw_header(token: &str) -> Option<Map<String, Value>> {
    use base64::Engine;
    let head = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn raw_alg(token: &str) -> Option<String> {
    let header = raw_header(token)?;
    header.get("alg")?.as_str().map(|s| s.chars().take(16).collect())
}

/// `logout+jwt`, in any case, with or without the `application/` prefix (RFC 7515 §4.1.9).
fn is_logout_typ(typ: &str) -> bool {
    let typ = typ.trim();
    let bare = match (typ.get(..12), typ.get(12..)) {
        (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("application/") => rest,
        _ => typ,
    };
    bare.eq_ignore_ascii_case("logout+jwt")
}

/// What the claims must satisfy.
pub struct Expect<'a> {
    pub issuer: &'a str,
    /// The client; `aud` must contain it or one of `extra_audiences`.
    pub client_id: &'a str,
    pub extra_audiences: &'a [String],
    /// At the callback, the nonce of the login.
    pub nonce: Option<&'a str>,
    pub now: u64,
}

/// Checks the signature with `key` and then every claim. Returns the claims.
pub fn verify(
    token: &str,
    header: &TokenHeader,
    key: &VerifyKey,
    expect: &Expect<'_>,
) -> Result<Claims, TokenError> {
    let claims = verify_signature(token, header, key)?;
    check_claims(&claims, expect)?;
    Ok(claims)
}

/// Checks the signature with `key` and returns the claims, unchecked: the caller checks them
/// (`check_claims`, or `logout_token::check` for a logout token).
pub fn verify_signature(token: &str, header: &TokenHeader, key: &VerifyKey) -> Result<Claims, TokenError> {
    if key.alg.is_some_and(|a| a != header.alg) {
        return Err(TokenError::Algorithm(alg_name(header.alg).into()));
    }
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    // Time and audience are checked below, with our own messages and the iat rule.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
        jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
        | jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => {
            TokenError::Algorithm(alg_name(header.alg).into())
        }
        jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
        | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_)
        | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat => TokenError::Signature,
        _ => TokenError::Malformed,
    })?;
    Ok(data.claims)
}

/// The claim checks, apart from the signature.
pub fn check_claims(claims: &Claims, expect: &Expect<'_>) -> Result<(), TokenError> {
    // A logout token (OIDC Back-Channel Logout 1.0 §2.4) carries `events`; it never signs in.
    if claims.has_events() {
        return Err(TokenError::LogoutToken);
    }
    match claims.issuer() {
        Some(iss) if iss == expect.issuer => {}
        Some(_) => return Err(TokenError::Issuer),
        None => return Err(TokenError::MissingClaim("iss")),
    }
    if claims.subject().is_none_or(str::is_empty) {
        return Err(TokenError::MissingClaim("sub"));
    }

    let audiences = claims.audiences().ok_or(TokenError::MissingClaim("aud"))?;
    let accepted = |a: &str| a == expect.client_id || expect.extra_audiences.iter().any(|x| x == a);
    if !audiences.iter().any(|a| accepted(a)) {
        return Err(TokenError::Audience);
    }
    let azp = claims.authorized_party();
    if audiences.len() > 1 || azp.is_some() {
        match azp {
            Some(p) if accepted(p) => {}
            Some(_) => return Err(TokenError::AuthorizedParty),
            None => return Err(TokenError::MissingClaim("azp")),
        }
    }

    let exp = claims.expires_at().ok_or(TokenError::MissingClaim("exp"))?;
    if expect.now >= exp.saturating_add(SKEW_SECS) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = claims.not_before() {
        if nbf > expect.now.saturating_add(SKEW_SECS) {
            return Err(TokenError::NotYetValid);
        }
    }
    if let Some(iat) = claims.issued_at() {
        if iat > expect.now.saturating_add(SKEW_SECS) {
            return Err(TokenError::IssuedInFuture);
        }
    }
    if let Some(nonce) = expect.nonce {
        let found = claims.nonce().ok_or(TokenError::Nonce)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(found.as_bytes(), nonce.as_bytes())) {
            return Err(TokenError::Nonce);
        }
    }
    Ok(())
}

/// The `exp` of verified claims.
pub fn expiry(claims: &Claims) -> u64 {
    claims.expires_at().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect(now: u64) -> Expect<'static> {
        Expect {
            issuer: "https://idp",
            client_id: "gw",
            extra_audiences: &[],
            nonce: None,
            now,
        }
    }

    fn claims(v: Value) -> Claims {
        Claims::from(v.as_object().cloned().unwrap())
    }

    #[test]
    fn hmac_and_none_are_never_accepted_even_if_advertised() {
        let algs = accepted_algorithms(&["HS256".into(), "none".into(), "RS256".into()]);
        assert_eq!(algs, vec![Algorithm::RS256]);
    }

    #[test]
    fn claims_pass_within_skew_and_fail_outside() {
        let now = 1_000_000;
        let ok =
            claims(json!({"iss": "https://idp", "sub": "u", "aud": "gw", "exp": now + 10, "iat": now + 30}));
        assert_eq!(check_claims(&ok, &expect(now)), Ok(()));
        let expired = claims(json!({"iss": "https://idp", "sub": "u", "aud": "gw", "exp": now - 61}));
        assert_eq!(check_claims(&expired, &expect(now)), Err(TokenError::Expired));
        let future = claims(
            json!({"iss": "https://idp", "sub": "u", "aud": "gw", "exp": now + 999, "iat": now + 120}),
        );
        assert_eq!(
            check_claims(&future, &expect(now)),
            Err(TokenError::IssuedInFuture)
        );
        let nbf = claims(
            json!({"iss": "https://idp", "sub": "u", "aud": "gw", "exp": now + 999, "nbf": now + 120}),
        );
        assert_eq!(check_claims(&nbf, &expect(now)), Err(TokenError::NotYetValid));
    }

    #[test]
    fn several_audiences_require_our_azp() {
        let now = 1_000_000;
        let c = claims(json!({"iss": "https://idp", "sub": "u", "aud": ["gw", "other"], "exp": now + 10}));
        assert_eq!(
            check_claims(&c, &expect(now)),
            Err(TokenError::MissingClaim("azp"))
        );
        let c = claims(
            json!({"iss": "https://idp", "sub": "u", "aud": ["gw", "other"], "azp": "other", "exp": now + 10}),
        );
        assert_eq!(check_claims(&c, &expect(now)), Err(TokenError::AuthorizedParty));
        let c = claims(
            json!({"iss": "https://idp", "sub": "u", "aud": ["gw", "other"], "azp": "gw", "exp": now + 10}),
        );
        assert_eq!(check_claims(&c, &expect(now)), Ok(()));
    }

    #[test]
    fn issuer_must_match_byte_for_byte() {
        let c = claims(json!({"iss": "https://idp/", "sub": "u", "aud": "gw", "exp": 2_000_000}));
        assert_eq!(check_claims(&c, &expect(1_000_000)), Err(TokenError::Issuer));
    }

    #[test]
    fn header_with_alg_none_is_refused() {
        // {"alg":"none"} . {} .
        let t = "eyJhbGciOiJub25lIn0.e30.";
        assert!(matches!(
            read_header(t, &[Algorithm::RS256]),
            Err(TokenError::Algorithm(_))
        ));
    }

    /// An unsigned token with this header and empty claims; `read_header` looks at the header only.
    fn with_header(header: Value) -> String {
        use base64::Engine;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", b64(&header), b64(&json!({})))
    }

    #[test]
    fn a_header_with_crit_is_refused() {
        for crit in [
            json!(["exp"]),
            json!(["b64"]),
            json!([]),
            json!("exp"),
            json!(null),
        ] {
            let t = with_header(json!({"alg": "RS256", "kid": "k1", "crit": crit, "exp": 1}));
            assert_eq!(
                read_header(&t, &[Algorithm::RS256]).map(|h| h.alg),
                Err(TokenError::CriticalHeader),
                "crit: {crit}"
            );
        }
    }

    #[test]
    fn a_logout_token_typ_is_refused_in_any_case_and_form() {
        for typ in [
            "logout+jwt",
            "Logout+JWT",
            "application/logout+jwt",
            "APPLICATION/Logout+Jwt",
        ] {
            let t = with_header(json!({"alg": "RS256", "kid": "k1", "typ": typ}));
            assert_eq!(
                read_header(&t, &[Algorithm::RS256]).map(|h| h.alg),
                Err(TokenError::LogoutToken),
                "typ: {typ}"
            );
        }
        for typ in ["JWT", "at+jwt", "application/jwt", "logout", "application/"] {
            let t = with_header(json!({"alg": "RS256", "kid": "k1", "typ": typ}));
            assert!(read_header(&t, &[Algorithm::RS256]).is_ok(), "typ: {typ}");
        }
    }

    #[test]
    fn claims_with_events_are_a_logout_token_and_refused() {
        let now = 1_000_000;
        let c = claims(json!({
            "iss": "https://idp", "sub": "u", "aud": "gw", "exp": now + 10,
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}}
        }));
        assert_eq!(check_claims(&c, &expect(now)), Err(TokenError::LogoutToken));
        let mut at_callback = expect(now);
        at_callback.nonce = Some("n");
        let c = claims(json!({
            "iss": "https://idp", "sub": "u", "aud": "gw", "exp": now + 10, "nonce": "n",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}}
        }));
        assert_eq!(check_claims(&c, &at_callback), Err(TokenError::LogoutToken));
    }
}
