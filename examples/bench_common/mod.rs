//! What the benchmark examples share (`bench_request`, `bench_flood`): a realistic session's
//! ID token, and a URL split as Envoy reports it. Included by each with `mod bench_common;`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use oidc_authz::identity::Identity;

/// A JWT-shaped string of realistic size (~900 bytes, RS256-sized signature). Nothing verifies
/// it on the session path: the session cookie is trusted because we sealed it.
pub fn fake_id_token(issuer: &str, client_id: &str, id: &Identity, now: u64) -> String {
    let header = r#"{"alg":"RS256","kid":"k3Jq9Tz1x0bV7mN2pQ8rW5sY4uA6cE0dF1gH2iJ3kL4","typ":"JWT"}"#;
    let payload = serde_json::json!({
        "iss": issuer,
        "sub": id.sub,
        "aud": client_id,
        "exp": now + 3600,
        "iat": now,
        "nonce": "n-0S6_WzA2Mj-2f7c9e1b4a8d",
        "at_hash": "HK6E_P6Dh8Y93mRNtsDB1Q",
        "sid": id.sid,
        "email": id.email,
        "email_verified": true,
        "preferred_username": id.preferred_username,
        "name": id.preferred_username,
        "groups": id.groups,
    });
    // 256 bytes = one RSA-2048 signature.
    let signature: Vec<u8> = (0u32..256)
        .map(|i| (i.wrapping_mul(197).wrapping_add(89) % 251) as u8)
        .collect();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// `url`'s authority as a browser sends it (with a non-default port, if any) and its path with
/// the query: what Envoy puts in `:authority` and `:path`.
pub fn authority_and_path(url: &url::Url) -> Result<(String, String), String> {
    let host = url.host_str().ok_or_else(|| format!("`{url}` has no host"))?;
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    Ok((authority, path))
}
