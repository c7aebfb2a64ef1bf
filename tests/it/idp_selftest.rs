//! Self-test of the in-process test OpenID Provider (tests/support/idp.rs), over real HTTP.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::idp::{Availability, IdpOptions, Mint, TestIdp};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

const REDIRECT: &str = "https://app.example.com/oauth2/callback";

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn query_of(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn authorize_url(idp: &TestIdp, state: &str, nonce: &str, challenge: &str) -> String {
    let mut u = url::Url::parse(&format!("{}/authorize", idp.issuer())).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &idp.client_id())
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "openid email profile")
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    u.to_string()
}

/// Runs the authorization endpoint and returns the code.
async fn get_code(c: &Client, idp: &TestIdp, nonce: &str, challenge: &str) -> String {
    let state = "st/ate+with spaces&=";
    let r = c
        .get(authorize_url(idp, state, nonce, challenge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let q = query_of(&loc);
    assert_eq!(q["state"], state);
    q["code"].clone()
}

async fn exchange_basic(c: &Client, idp: &TestIdp, code: &str, verifier: &str) -> reqwest::Response {
    c.post(format!("{}/token", idp.issuer()))
        .basic_auth(idp.client_id(), Some(idp.client_secret()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
}

async fn exchange_post(c: &Client, idp: &TestIdp, code: &str, verifier: &str) -> reqwest::Response {
    c.post(format!("{}/token", idp.issuer()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("client_id", &idp.client_id()),
            ("client_secret", &idp.client_secret()),
        ])
        .send()
        .await
        .unwrap()
}

async fn get_json(c: &Client, url: &str) -> Value {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    r.json().await.unwrap()
}

fn header_of(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

fn claims_of(token: &str) -> Value {
    let c = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).unwrap()).unwrap()
}

fn signature_of(token: &str) -> &str {
    token.rsplit('.').next().unwrap()
}

/// Verifies `token` against a JWKS document the way a relying party would.
fn verify(jwks: &Value, token: &str, idp: &TestIdp) -> Result<Value, String> {
    let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or("unknown kid")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = Validation::new(header.alg);
    v.set_audience(&[idp.client_id()]);
    v.set_issuer(&[idp.issuer()]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

fn verify_hs256(token: &str, secret: &[u8], idp: &TestIdp) -> bool {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_audience(&[idp.client_id()]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(secret), &v).is_ok()
}

#[tokio::test]
async fn discovery_document() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let iss = idp.issuer();
    assert!(iss.starts_with("http://127.0.0.1:") && !iss.ends_with('/'));
    let d = get_json(&client(), &idp.discovery_url()).await;
    assert_eq!(d["issuer"], iss);
    assert_eq!(d["authorization_endpoint"], format!("{iss}/authorize"));
    assert_eq!(d["token_endpoint"], format!("{iss}/token"));
    assert_eq!(d["jwks_uri"], format!("{iss}/jwks"));
    assert_eq!(d["userinfo_endpoint"], format!("{iss}/userinfo"));
    assert_eq!(d["end_session_endpoint"], format!("{iss}/session/end"));
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["subject_types_supported"], json!(["public"]));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["RS256"]));
    assert_eq!(
        d["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert!(d["scopes_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("openid")));
    assert!(d["claims_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("email")));

    let jwks = get_json(&client(), &format!("{iss}/jwks")).await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k["kty"], "RSA");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["alg"], "RS256");
    assert_eq!(k["kid"], idp.current_kid());
    assert_eq!(k["e"], "AQAB");
    assert_eq!(
        URL_SAFE_NO_PAD.decode(k["n"].as_str().unwrap()).unwrap().len(),
        256
    );
    assert_eq!(jwks, idp.jwks());

    // Overrides: a null removes, a value replaces.
    idp.set_discovery_overrides(json!({"end_session_endpoint": null, "issuer": "https://other"}));
    let d = get_json(&client(), &idp.discovery_url()).await;
    assert!(d.get("end_session_endpoint").is_none());
    assert_eq!(d["issuer"], "https://other");
    idp.set_jwks_override(Some(json!({"keys": []})));
    let jwks = get_json(&client(), &format!("{iss}/jwks")).await;
    assert_eq!(jwks, json!({"keys": []}));
}

#[tokio::test]
async fn discovery_follows_options() {
    let idp = TestIdp::start(IdpOptions {
        auth_methods: vec!["client_secret_post".into()],
        with_end_session: false,
        with_ec_key: true,
        ..Default::default()
    })
    .await;
    let c = client();
    let d = get_json(&c, &idp.discovery_url()).await;
    assert!(d.get("end_session_endpoint").is_none());
    assert_eq!(
        d["token_endpoint_auth_methods_supported"],
        json!(["client_secret_post"])
    );
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
    let jwks = get_json(&c, &format!("{}/jwks", idp.issuer())).await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1]["kty"], "EC");
    assert_eq!(keys[1]["crv"], "P-256");
    assert_eq!(keys[1]["kid"], idp.ec_kid());
    assert_eq!(idp.published_kids(), vec![idp.current_kid(), idp.ec_kid()]);
    // The EC-signed token verifies against the published EC key.
    let t = idp.mint_with(idp.default_claims("bob"), Mint::Es256);
    assert_eq!(header_of(&t)["alg"], "ES256");
    assert_eq!(verify(&jwks, &t, &idp).unwrap()["sub"], "bob");
    // No end-session endpoint served.
    let r = c
        .get(format!("{}/session/end", idp.issuer()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn code_flow_with_client_secret_basic() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let c = client();
    let (verifier, challenge) = pkce();
    let code = get_code(&c, &idp, "n-123", &challenge).await;
    let auth = idp.last_authorize_params().unwrap();
    assert_eq!(auth["redirect_uri"], REDIRECT);

    let r = exchange_basic(&c, &idp, &code, &verifier).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        idp.last_token_request_auth().as_deref(),
        Some("client_secret_basic")
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["refresh_token"].as_str().unwrap().starts_with("rt-"));

    let jwks = get_json(&c, &format!("{}/jwks", idp.issuer())).await;
    let id_token = body["id_token"].as_str().unwrap();
    assert_eq!(header_of(id_token)["kid"], idp.current_kid());
    let claims = verify(&jwks, id_token, &idp).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["nonce"], "n-123");
    assert_eq!(claims["aud"], "gateway");
    assert_eq!(claims["azp"], "gateway");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["groups"], json!(["staff"]));
    assert_eq!(claims["sid"].as_str(), idp.last_sid().as_deref());
    let access_token = body["access_token"].as_str().unwrap();
    let at_hash = URL_SAFE_NO_PAD.encode(&Sha256::digest(access_token.as_bytes())[..16]);
    assert_eq!(claims["at_hash"], at_hash);
    let access = verify(&jwks, access_token, &idp).unwrap();
    assert_eq!(access["sub"], "alice");

    // The code is single-use.
    let r = exchange_basic(&c, &idp, &code, &verifier).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

    // Userinfo with the access token.
    let r = c
        .get(format!("{}/userinfo", idp.issuer()))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ui: Value = r.json().await.unwrap();
    assert_eq!(ui["sub"], "alice");
    assert_eq!(ui["email"], "alice@example.com");
    assert!(ui.get("nonce").is_none());
    let r = c
        .get(format!("{}/userinfo", idp.issuer()))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Refresh: a fresh set; the refresh token is single-use.
    let rt = body["refresh_token"].as_str().unwrap().to_string();
    idp.set_extra_claims(json!({"groups": ["admins"]}));
    let refresh = |rt: String| {
        c.post(format!("{}/token", idp.issuer()))
            .basic_auth("gateway", Some("s3cret-s3cret"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())])
            .send()
    };
    let r = refresh(rt.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let fresh: Value = r.json().await.unwrap();
    assert_ne!(fresh["refresh_token"], body["refresh_token"]);
    let claims = verify(&jwks, fresh["id_token"].as_str().unwrap(), &idp).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["groups"], json!(["admins"]));
    let r = refresh(rt).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    idp.revoke_refresh_tokens();
    let r = refresh(fresh["refresh_token"].as_str().unwrap().to_string())
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(idp.refresh_requests(), 3);
    assert_eq!(idp.token_requests(), 5);
}

#[tokio::test]
async fn code_flow_with_client_secret_post() {
    let idp = TestIdp::start(IdpOptions {
        auth_methods: vec!["client_secret_post".into()],
        ..Default::default()
    })
    .await;
    let c = client();
    let (verifier, challenge) = pkce();

    // Basic is not accepted by this IdP.
    let code = get_code(&c, &idp, "n1", &challenge).await;
    let r = exchange_basic(&c, &idp, &code, &verifier).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        idp.last_token_request_auth().as_deref(),
        Some("client_secret_basic")
    );
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

    let code = get_code(&c, &idp, "n2", &challenge).await;
    let r = exchange_post(&c, &idp, &code, &verifier).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        idp.last_token_request_auth().as_deref(),
        Some("client_secret_post")
    );
    let body: Value = r.json().await.unwrap();
    let jwks = get_json(&c, &format!("{}/jwks", idp.issuer())).await;
    let claims = verify(&jwks, body["id_token"].as_str().unwrap(), &idp).unwrap();
    assert_eq!(claims["nonce"], "n2");

    // And a basic-only IdP refuses client_secret_post.
    let idp = TestIdp::start(IdpOptions {
        auth_methods: vec!["client_secret_basic".into()],
        ..Default::default()
    })
    .await;
    let code = get_code(&c, &idp, "n3", &challenge).await;
    let r = exchange_post(&c, &idp, &code, &verifier).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn basic_credentials_are_form_urlencoded() {
    let secret = "p@ss:w/rd+%é";
    let idp = TestIdp::start(IdpOptions {
        client_id: "my client".into(),
        client_secret: secret.into(),
        ..Default::default()
    })
    .await;
    let c = client();
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let send = |user: String, pass: String, code: String, verifier: String| {
        let creds = STANDARD.encode(format!("{user}:{pass}"));
        c.post(format!("{}/token", idp.issuer()))
            .header("authorization", format!("Basic {creds}"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
    };
    let (verifier, challenge) = pkce();
    let code = get_code(&c, &idp, "n", &challenge).await;
    let r = send("my client".into(), secret.into(), code, verifier.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "raw secret must not pass");
    let code = get_code(&c, &idp, "n", &challenge).await;
    let r = send(enc("my client"), enc(secret), code, verifier).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_endpoint_rejections() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let c = client();
    let token_url = format!("{}/token", idp.issuer());
    let (verifier, challenge) = pkce();
    let err = |r: reqwest::Response| async move {
        let s = r.status().as_u16();
        (s, r.json::<Value>().await.unwrap()["error"].clone())
    };

    // Wrong secret.
    let code = get_code(&c, &idp, "n", &challenge).await;
    let r = c
        .post(&token_url)
        .basic_auth("gateway", Some("wrong"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(err(r).await, (401, json!("invalid_client")));
    // No client authentication at all.
    let r = c
        .post(&token_url)
        .form(&[("grant_type", "authorization_code"), ("code", &code)])
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await, (401, json!("invalid_client")));
    assert_eq!(idp.last_token_request_auth().as_deref(), Some("none"));
    // Two methods at once.
    let r = c
        .post(&token_url)
        .basic_auth("gateway", Some("s3cret-s3cret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_secret", "s3cret-s3cret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await, (400, json!("invalid_request")));

    // PKCE mismatch.
    let code = get_code(&c, &idp, "n", &challenge).await;
    let (other_verifier, _) = pkce();
    let r = exchange_basic(&c, &idp, &code, &other_verifier).await;
    assert_eq!(err(r).await, (400, json!("invalid_grant")));
    // Malformed verifier.
    let code = get_code(&c, &idp, "n", &challenge).await;
    let r = exchange_basic(&c, &idp, &code, "short").await;
    assert_eq!(err(r).await, (400, json!("invalid_grant")));
    // Redirect URI mismatch.
    let code = get_code(&c, &idp, "n", &challenge).await;
    let r = c
        .post(&token_url)
        .basic_auth("gateway", Some("s3cret-s3cret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://evil.example.com/oauth2/callback"),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await, (400, json!("invalid_grant")));
    // Expired code.
    let code = get_code(&c, &idp, "n", &challenge).await;
    idp.expire_codes();
    let r = exchange_basic(&c, &idp, &code, &verifier).await;
    assert_eq!(err(r).await, (400, json!("invalid_grant")));
    // Unknown code.
    let r = exchange_basic(&c, &idp, "made-up", &verifier).await;
    assert_eq!(err(r).await, (400, json!("invalid_grant")));
    // Grant types.
    let r = c
        .post(&token_url)
        .basic_auth("gateway", Some("s3cret-s3cret"))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await, (400, json!("unsupported_grant_type")));
    // Not a form.
    let r = c
        .post(&token_url)
        .basic_auth("gateway", Some("s3cret-s3cret"))
        .json(&json!({"grant_type": "authorization_code"}))
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await, (400, json!("invalid_request")));
    // Forced failure status.
    let code = get_code(&c, &idp, "n", &challenge).await;
    idp.set_token_endpoint_status(Some(500));
    let r = exchange_basic(&c, &idp, &code, &verifier).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    idp.set_token_endpoint_status(None);
    let r = exchange_basic(&c, &idp, &code, &verifier).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a forced failure does not use the code"
    );
}

#[tokio::test]
async fn authorize_validation_and_denial() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let c = client();
    let (_, challenge) = pkce();
    let good = url::Url::parse(&authorize_url(&idp, "s", "n", &challenge)).unwrap();
    let pairs: Vec<(String, String)> = good.query_pairs().into_owned().collect();
    let with = |name: &str, value: Option<&str>| {
        let mut u = good.clone();
        {
            let mut q = u.query_pairs_mut();
            q.clear();
            for (k, v) in &pairs {
                if k != name {
                    q.append_pair(k, v);
                }
            }
            if let Some(v) = value {
                q.append_pair(name, v);
            }
        }
        u.to_string()
    };
    let cases = [
        with("client_id", Some("someone-else")),
        with("client_id", None),
        with("response_type", Some("token")),
        with("code_challenge_method", Some("plain")),
        with("code_challenge_method", None),
        with("state", None),
        with("nonce", None),
        with("nonce", Some("")),
        with("code_challenge", None),
        with("code_challenge", Some("too-short")),
        with("redirect_uri", None),
        with("redirect_uri", Some("/relative")),
        with("redirect_uri", Some("javascript:alert(1)")),
        with("scope", Some("email")),
        format!("{}&state=again", good),
        format!("{}/authorize", idp.issuer()),
        format!("{}/authorize?%zz=%%&&=", idp.issuer()),
    ];
    for url in &cases {
        let r = c.get(url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{url}");
    }
    assert_eq!(idp.authorize_requests(), cases.len());

    // The redirect keeps the redirect URI's own query and encodes properly.
    let u = with("redirect_uri", Some("https://app.example.com/cb?x=1&y=a%20b"));
    let r = c.get(u).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with("https://app.example.com/cb?x=1&y=a%20b&code="),
        "{loc}"
    );

    // Denial, once.
    idp.set_deny_next(true);
    let r = c.get(good.as_str()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let q = query_of(r.headers()["location"].to_str().unwrap());
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "s");
    assert!(q.contains_key("error_description") && !q.contains_key("code"));
    let r = c.get(good.as_str()).send().await.unwrap();
    assert!(query_of(r.headers()["location"].to_str().unwrap()).contains_key("code"));

    // Registered redirect URIs are enforced when configured.
    let strict = TestIdp::start(IdpOptions {
        redirect_uris: vec!["https://only.example.com/oauth2/callback".into()],
        ..Default::default()
    })
    .await;
    let r = c
        .get(authorize_url(&strict, "s", "n", &challenge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn key_rotation_and_publication() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let c = client();
    let jwks_url = format!("{}/jwks", idp.issuer());
    let kid1 = idp.current_kid();
    let old = idp.mint(idp.default_claims("alice"));
    let jwks1 = get_json(&c, &jwks_url).await;
    assert!(verify(&jwks1, &old, &idp).is_ok());

    let kid2 = idp.rotate_keys();
    assert_ne!(kid1, kid2);
    assert_eq!(idp.current_kid(), kid2);
    let jwks2 = get_json(&c, &jwks_url).await;
    let kids: Vec<&str> = jwks2["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![kid2.as_str()]);
    assert_ne!(jwks1["keys"][0]["n"], jwks2["keys"][0]["n"], "new key material");
    assert_eq!(verify(&jwks2, &old, &idp).unwrap_err(), "unknown kid");
    let new = idp.mint(idp.default_claims("alice"));
    assert_eq!(header_of(&new)["kid"], kid2);
    assert!(verify(&jwks2, &new, &idp).is_ok());

    let kid3 = idp.add_key();
    assert_eq!(idp.current_kid(), kid3);
    assert_eq!(idp.published_kids(), vec![kid2.clone(), kid3.clone()]);
    let jwks3 = get_json(&c, &jwks_url).await;
    assert!(verify(&jwks3, &new, &idp).is_ok());
    assert!(verify(&jwks3, &idp.mint(idp.default_claims("a")), &idp).is_ok());

    assert!(idp.remove_key(&kid3));
    assert_eq!(idp.current_kid(), kid2);
    assert!(!idp.remove_key(&kid2), "the last key stays");
    assert!(!idp.remove_key("nope"));

    // Added keys never reuse the material of a published key.
    for _ in 0..20 {
        idp.add_key();
    }
    let jwks = idp.jwks();
    let mut moduli: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["n"].as_str().unwrap())
        .collect();
    assert_eq!(moduli.len(), 21);
    moduli.sort_unstable();
    moduli.dedup();
    assert_eq!(moduli.len(), 7, "the whole publishable pool, nothing else");
}

#[tokio::test]
async fn counters_count() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let c = client();
    let iss = idp.issuer();
    for _ in 0..3 {
        get_json(&c, &idp.discovery_url()).await;
    }
    for _ in 0..2 {
        get_json(&c, &format!("{iss}/jwks")).await;
    }
    let (verifier, challenge) = pkce();
    let code = get_code(&c, &idp, "n", &challenge).await;
    exchange_basic(&c, &idp, &code, &verifier).await;
    exchange_basic(&c, &idp, &code, &verifier).await;
    c.get(format!("{iss}/session/end")).send().await.unwrap();
    c.get(format!("{iss}/userinfo")).send().await.unwrap();
    assert_eq!(idp.discovery_fetches(), 3);
    assert_eq!(idp.jwks_fetches(), 2);
    assert_eq!(idp.authorize_requests(), 1);
    assert_eq!(idp.token_requests(), 2);
    assert_eq!(idp.refresh_requests(), 0);
    assert_eq!(idp.end_session_calls(), 1);
    assert_eq!(idp.userinfo_requests(), 1);
    // Requests answered 503 count too.
    idp.set_down(true);
    c.get(idp.discovery_url()).send().await.unwrap();
    assert_eq!(idp.discovery_fetches(), 4);
    idp.reset_counters();
    assert_eq!(
        idp.discovery_fetches() + idp.jwks_fetches() + idp.token_requests(),
        0
    );
}

#[tokio::test]
async fn down_and_unreachable() {
    let idp = TestIdp::start(IdpOptions {
        start_down: true,
        ..Default::default()
    })
    .await;
    let c = client();
    let iss = idp.issuer();
    let all = [
        ("GET", idp.discovery_url()),
        ("GET", format!("{iss}/jwks")),
        ("GET", format!("{iss}/authorize")),
        ("POST", format!("{iss}/token")),
        ("GET", format!("{iss}/userinfo")),
        ("GET", format!("{iss}/session/end")),
        ("GET", format!("{iss}/nothing-here")),
    ];
    let send = |m: &str, u: &str| {
        if m == "GET" {
            c.get(u).send()
        } else {
            c.post(u).form(&[("grant_type", "x")]).send()
        }
    };
    assert_eq!(idp.availability(), Availability::Down503);
    for (m, u) in &all {
        let r = send(m, u).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{u}");
    }
    idp.set_down(false);
    get_json(&c, &idp.discovery_url()).await;

    // A keep-alive connection is open now; unreachable cuts it and refuses new ones.
    idp.set_unreachable(true);
    for _ in 0..2 {
        assert!(c.get(idp.discovery_url()).send().await.is_err());
        assert!(client().get(idp.discovery_url()).send().await.is_err());
    }
    idp.set_unreachable(false);
    get_json(&c, &idp.discovery_url()).await;

    // Stalled: no answer within the client's timeout.
    idp.set_availability(Availability::Stall);
    let quick = Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let e = quick.get(idp.discovery_url()).send().await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    idp.set_availability(Availability::Up);
    get_json(&quick, &idp.discovery_url()).await;

    idp.shutdown().await;
    assert!(client().get(idp.discovery_url()).send().await.is_err());
}

#[tokio::test]
async fn mint_variants_produce_the_intended_tokens() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let c = client();
    let discovery = get_json(&c, &idp.discovery_url()).await;
    let jwks = get_json(&c, &format!("{}/jwks", idp.issuer())).await;
    let claims = idp.default_claims("alice");
    let kid = idp.current_kid();
    // Each variant minted once (RSA signing is slow in debug builds).
    let all = [
        Mint::Normal,
        Mint::NoKid,
        Mint::AlgNone,
        Mint::AlgNoneWithKid,
        Mint::Hs256WithPublicKey,
        Mint::Hs256WithPublicKeyDer,
        Mint::Hs256WithClientSecret,
        Mint::BadSignature,
        Mint::UnknownKid,
        Mint::OtherKey,
        Mint::Rs384,
        Mint::Es256,
    ];
    let tokens: Vec<(Mint, String)> = all
        .iter()
        .map(|&how| (how, idp.mint_with(claims.clone(), how)))
        .collect();
    let tok = |how: Mint| tokens.iter().find(|(m, _)| *m == how).unwrap().1.as_str();

    let good = tok(Mint::Normal);
    assert_eq!(header_of(good), json!({"alg": "RS256", "typ": "JWT", "kid": kid}));
    let c = verify(&jwks, good, &idp).unwrap();
    assert_eq!(c, claims);
    assert_eq!(c["aud"], json!(["gateway"]));
    let now = jsonwebtoken::get_current_timestamp();
    assert!(c["iat"].as_u64().unwrap().abs_diff(now) < 5);
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 3600);

    let t = tok(Mint::NoKid);
    assert_eq!(header_of(t), json!({"alg": "RS256", "typ": "JWT"}));
    let key = DecodingKey::from_rsa_pem(idp.current_public_key_pem().as_bytes()).unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&["gateway"]);
    assert!(jsonwebtoken::decode::<Value>(t, &key, &v).is_ok());

    let t = tok(Mint::AlgNone);
    assert_eq!(header_of(t), json!({"alg": "none"}));
    assert!(t.ends_with('.') && t.split('.').count() == 3);
    let t = tok(Mint::AlgNoneWithKid);
    assert_eq!(header_of(t), json!({"alg": "none", "kid": kid}));
    assert_eq!(signature_of(t), "");

    let pem = idp.current_public_key_pem();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let t = tok(Mint::Hs256WithPublicKey);
    assert_eq!(header_of(t), json!({"alg": "HS256", "typ": "JWT", "kid": kid}));
    assert!(verify_hs256(t, pem.as_bytes(), &idp));
    let t = tok(Mint::Hs256WithPublicKeyDer);
    assert_eq!(header_of(t), json!({"alg": "HS256", "typ": "JWT", "kid": kid}));
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(verify_hs256(t, &STANDARD.decode(body).unwrap(), &idp));
    let t = tok(Mint::Hs256WithClientSecret);
    assert!(verify_hs256(t, b"s3cret-s3cret", &idp));

    let t = tok(Mint::BadSignature);
    assert_eq!(header_of(t), header_of(good));
    assert_eq!(t.len(), good.len());
    assert_ne!(signature_of(t), signature_of(good));
    assert_eq!(t.rsplit_once('.').unwrap().0, good.rsplit_once('.').unwrap().0);
    assert!(verify(&jwks, t, &idp).unwrap_err().contains("InvalidSignature"));

    let t = tok(Mint::UnknownKid);
    assert_eq!(header_of(t)["kid"], idp.unpublished_kid());
    assert_ne!(idp.unpublished_kid(), kid);
    assert_eq!(verify(&jwks, t, &idp).unwrap_err(), "unknown kid");

    let t = tok(Mint::OtherKey);
    assert_eq!(header_of(t), json!({"alg": "RS256", "typ": "JWT", "kid": kid}));
    assert!(verify(&jwks, t, &idp).unwrap_err().contains("InvalidSignature"));

    let t = tok(Mint::Rs384);
    assert_eq!(header_of(t), json!({"alg": "RS384", "typ": "JWT", "kid": kid}));
    assert!(verify(&jwks, t, &idp).is_ok(), "real key, unadvertised alg");

    let t = tok(Mint::Es256);
    assert_eq!(
        header_of(t),
        json!({"alg": "ES256", "typ": "JWT", "kid": idp.ec_kid()})
    );
    assert_eq!(
        verify(&jwks, t, &idp).unwrap_err(),
        "unknown kid",
        "EC key unpublished"
    );

    // A strict relying party accepts Normal and NoKid (one key) and rejects the rest.
    for (how, t) in &tokens {
        let ok = strict_verify(&discovery, &jwks, t, &idp);
        let expected = matches!(how, Mint::Normal | Mint::NoKid);
        assert_eq!(ok, expected, "{how:?}");
        assert_eq!(Mint::MUST_REJECT.contains(how), !expected && *how != Mint::Es256);
    }

    // Headers as given, claims untouched.
    let t = idp.mint_raw(json!({"alg": "RS256", "kid": kid, "crit": ["x"]}), claims.clone());
    assert_eq!(header_of(&t)["crit"], json!(["x"]));
    assert_eq!(t.split('.').nth(1), good.split('.').nth(1));
    let t = idp.mint_unpublished(claims.clone());
    assert_eq!(header_of(&t), header_of(tok(Mint::UnknownKid)));

    let t = idp.mint_logout_token(Some("alice"), Some("sid-1"));
    assert_eq!(header_of(&t)["typ"], "logout+jwt");
    let c = verify(&jwks, &t, &idp).unwrap();
    assert_eq!(c["sid"], "sid-1");
    assert!(c["events"]
        .get("http://schemas.openid.net/event/backchannel-logout")
        .is_some());
    assert!(c.get("nonce").is_none());

    // With a second key, a token without kid is ambiguous.
    idp.add_key();
    let jwks = idp.jwks();
    assert!(!strict_verify(&discovery, &jwks, tok(Mint::NoKid), &idp));
}

#[tokio::test]
async fn token_endpoint_id_token_controls() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let c = client();
    let jwks = get_json(&c, &format!("{}/jwks", idp.issuer())).await;
    let (verifier, challenge) = pkce();
    let login = || async {
        let code = get_code(&c, &idp, "the-nonce", &challenge).await;
        let r = exchange_post(&c, &idp, &code, &verifier).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        body["id_token"].as_str().unwrap().to_string()
    };

    idp.set_user("bob");
    idp.set_extra_claims(json!({
        "groups": ["ops", "dev"], "email": null, "hd": "example.com", "exp": 1000,
    }));
    idp.set_wrong_nonce(true);
    let t = login().await;
    // Signature fine (checked first), exp taken from the extra claims.
    assert!(verify(&jwks, &t, &idp).unwrap_err().contains("Expired"));
    let claims = claims_of(&t);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["groups"], json!(["ops", "dev"]));
    assert_eq!(claims["hd"], "example.com");
    assert_eq!(claims["exp"], 1000);
    assert!(claims.get("email").is_none());
    assert!(claims["nonce"].as_str().unwrap() != "the-nonce");
    idp.set_extra_claims(json!({}));
    idp.set_wrong_nonce(false);

    idp.set_id_token_mint(Mint::AlgNone);
    assert_eq!(header_of(&login().await), json!({"alg": "none"}));
    idp.set_id_token_mint(Mint::Normal);

    idp.set_id_token_override(Some("not-a-jwt".into()));
    assert_eq!(login().await, "not-a-jwt");
    idp.set_id_token_override(None);
    let claims = verify(&jwks, &login().await, &idp).unwrap();
    assert_eq!(claims["nonce"], "the-nonce");
    assert_eq!(claims["sub"], "bob");
}

#[tokio::test]
async fn end_session_endpoint() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let c = client();
    let url = format!(
        "{}/session/end?id_token_hint=abc&client_id=gateway&post_logout_redirect_uri={}&state=xyz",
        idp.issuer(),
        "https%3A%2F%2Fapp.example.com%2F"
    );
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "signed out");
    assert_eq!(idp.end_session_calls(), 1);
    let p = idp.last_end_session_params().unwrap();
    assert_eq!(p["id_token_hint"], "abc");
    assert_eq!(p["post_logout_redirect_uri"], "https://app.example.com/");

    idp.set_end_session_redirect(true);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "https://app.example.com/?state=xyz");
    let r = c
        .post(format!("{}/session/end", idp.issuer()))
        .form(&[("client_id", "gateway")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(idp.last_end_session_params().unwrap()["client_id"], "gateway");
    assert_eq!(idp.end_session_calls(), 3);
}

#[tokio::test]
async fn bad_input_is_a_client_error() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let c = client();
    let iss = idp.issuer();
    let token = format!("{iss}/token");
    let mut checks: Vec<reqwest::Response> = Vec::new();
    for body in [
        &b""[..],
        b"grant_type",
        b"%%%%&&&===",
        b"grant_type=authorization_code&grant_type=refresh_token",
        b"\xff\xfe\x00garbage",
        b"grant_type=authorization_code&code=%00&redirect_uri=%ZZ",
    ] {
        for auth in [
            None,
            Some("Basic !!!"),
            Some("Basic Z2F0ZXdheQ=="),
            Some("Basic Z2F0ZXdheTolWlo="),
            Some("Bearer x"),
            Some("Basic"),
        ] {
            let mut rb = c
                .post(&token)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.to_vec());
            if let Some(a) = auth {
                rb = rb.header("authorization", a);
            }
            checks.push(rb.send().await.unwrap());
        }
    }
    checks.push(c.get(&token).send().await.unwrap());
    checks.push(
        c.get(format!("{iss}/authorize?\u{0}=\u{ffff}&client_id=%FF"))
            .send()
            .await
            .unwrap(),
    );
    checks.push(
        c.get(format!("{iss}/userinfo"))
            .header("authorization", "Bearer")
            .send()
            .await
            .unwrap(),
    );
    checks.push(
        c.get(format!("{iss}/session/end?post_logout_redirect_uri=%%"))
            .send()
            .await
            .unwrap(),
    );
    for r in checks {
        let s = r.status();
        assert!(s.is_client_error() || s.is_success(), "{} {s}", r.url());
    }
    // Still serving.
    get_json(&c, &idp.discovery_url()).await;
}

/// A relying party's check: advertised algorithm, kid (or the only key), signature, iss, aud.
fn strict_verify(discovery: &Value, jwks: &Value, token: &str, idp: &TestIdp) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    let alg = serde_json::to_value(header.alg).unwrap();
    let advertised = discovery["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    if !advertised.contains(&alg) {
        return false;
    }
    let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let jwk = match &header.kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    };
    let Some(jwk) = jwk else {
        return false;
    };
    let Ok(key) = DecodingKey::from_jwk(jwk) else {
        return false;
    };
    let mut v = Validation::new(header.alg);
    v.set_audience(&[idp.client_id()]);
    v.set_issuer(&[idp.issuer()]);
    jsonwebtoken::decode::<Value>(token, &key, &v).is_ok()
}
