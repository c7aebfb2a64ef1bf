//! The authorization-code flow, shared by `Check` and the HTTP listener: `begin` sends the
//! browser to the IdP (state, nonce, PKCE S256, a sealed login-state cookie); `complete`
//! checks the state, exchanges the code, validates the ID token and sets the session.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

use crate::app::App;
use crate::identity::Identity;
use crate::metrics::Outcome;
use crate::oidc::exchange::{exchange_code, CodeExchange};
use crate::oidc::fetch::FetchError;
use crate::oidc::provider::Expectation;
use crate::oidc::token::{self, TokenError};
use crate::reply::{escape_for_log, Reply};
use crate::rules::Rule;
use crate::session::{cookies, new_session_id, LoginState, Session, LOGIN_TTL_SECS, MAX_PENDING_LOGINS};

/// Longest callback parameter we read.
const MAX_PARAM: usize = 4096;

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The login cookie's attributes: on the rule's cookie domain, and never `Strict`, because the
/// callback arrives as a cross-site navigation from the IdP.
fn login_attrs(app: &App, rule: &Rule) -> cookies::CookieAttrs {
    let mut attrs = app.sessions.attrs(rule.cookie_domain.as_deref());
    if attrs.same_site == crate::config::SameSite::Strict {
        attrs.same_site = crate::config::SameSite::Lax;
    }
    attrs
}

/// Starts a login with `rule` that returns to `return_url`. `cookie_header` is the request's,
/// so that pending logins beyond the limit are dropped (oldest first).
pub fn begin(app: &App, rule: &Rule, return_url: &str, cookie_header: &str, now: u64) -> (Outcome, Reply) {
    // Only browsers are sent to log in, so a missing IdP is a page with a retry link.
    let unavailable = |message: &str| (Outcome::Unavailable, Reply::unavailable_page(message, return_url));
    let Some(provider) = app.providers.get(&rule.provider_key) else {
        return unavailable("the identity provider is not configured yet");
    };
    let Some(discovered) = provider.discovered() else {
        return unavailable("the identity provider cannot be reached; try again shortly");
    };
    let Ok(mut location) = Url::parse(&discovered.metadata.authorization_endpoint) else {
        return unavailable("the identity provider's authorization endpoint is invalid");
    };

    let login = LoginState {
        rule: rule.name.clone(),
        state: random_token(),
        nonce: random_token(),
        pkce_verifier: random_token(),
        url: return_url.to_string(),
        created_at: now,
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(login.pkce_verifier.as_bytes()));
    location
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &rule.client_id)
        .append_pair("redirect_uri", rule.redirect_url.as_str())
        .append_pair("scope", &rule.scope)
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");

    let attrs = login_attrs(app, rule);
    let mut set = Vec::new();
    // Drop expired or unreadable login cookies, and the oldest beyond the limit.
    let mut pending = app.sessions.pending_logins(cookie_header, now);
    pending.sort_by_key(|(_, l)| l.as_ref().map_or(0, |l| l.created_at));
    let live = pending.iter().filter(|(_, l)| l.is_some()).count();
    let mut to_drop = (live + 1).saturating_sub(MAX_PENDING_LOGINS);
    for (name, l) in &pending {
        if l.is_none() {
            set.push(attrs.delete(name));
        } else if to_drop > 0 {
            set.push(attrs.delete(name));
            to_drop -= 1;
        }
    }
    let name = app.sessions.login_cookie_name(&login.state);
    set.push(attrs.set_cookie(&name, &app.sessions.seal_login(&login), LOGIN_TTL_SECS as i64));
    (Outcome::LoginRedirect, Reply::redirect(location.as_str(), set))
}

/// The callback's query parameters.
#[derive(Debug, Default)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl CallbackParams {
    pub fn parse(query: &str) -> CallbackParams {
        let mut p = CallbackParams::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()).take(32) {
            if v.len() > MAX_PARAM {
                continue;
            }
            let slot = match k.as_ref() {
                "code" => &mut p.code,
                "state" => &mut p.state,
                "error" => &mut p.error,
                "error_description" => &mut p.error_description,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        p
    }
}

/// A "sign in again" page for a broken or replayed login.
fn bad_state(rule: &Rule, why: &str) -> Reply {
    let again = format!(
        "/oauth2/start?rd={}",
        url::form_urlencoded::byte_serialize(b"/").collect::<String>()
    );
    let _ = rule;
    Reply::page(
        400,
        "Sign-in could not be completed",
        why,
        Some((&again, "Sign in again")),
    )
}

/// Completes a login at `rule`'s redirect URL.
pub async fn complete(app: &App, rule: &Rule, query: &str, cookie_header: &str, now: u64) -> Reply {
    let params = CallbackParams::parse(query);
    let attrs = login_attrs(app, rule);

    // Find and check the login this callback belongs to.
    let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return bad_state(rule, "The sign-in response has no state. Please sign in again.");
    };
    let cookie_name = app.sessions.login_cookie_name(state);
    let login = cookies::get(cookie_header, &cookie_name)
        .and_then(|v| app.sessions.open_login(v))
        .filter(|l| bool::from(l.state.as_bytes().ct_eq(state.as_bytes())))
        .filter(|l| l.rule == rule.name && now < l.created_at.saturating_add(LOGIN_TTL_SECS));
    let Some(login) = login else {
        return bad_state(
            rule,
            "This sign-in link has expired or was already used, or cookies are blocked. Please sign in again.",
        );
    };
    let clear_login = vec![attrs.delete(&cookie_name)];

    if let Some(error) = &params.error {
        let detail = params.error_description.as_deref().unwrap_or("");
        // Both come from the callback's query: logged escaped (no forged lines).
        tracing::info!(
            rule = %rule.name,
            error = %escape_for_log(error),
            error_description = %escape_for_log(detail),
            "identity provider refused the login"
        );
        let mut r = Reply::page(
            403,
            "Sign-in was refused",
            &format!("The identity provider answered `{error}`. {detail}"),
            Some((&login.url, "Try again")),
        );
        r.add_cookies(clear_login);
        return r;
    }
    let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
        return bad_state(rule, "The sign-in response has no code. Please sign in again.");
    };

    let Some(provider) = app.providers.get(&rule.provider_key) else {
        return Reply::unavailable_page("the identity provider is not configured yet", &login.url);
    };
    let Some(discovered) = provider.discovered() else {
        return Reply::unavailable_page("the identity provider cannot be reached right now", &login.url);
    };
    let exchange = CodeExchange {
        code,
        redirect_uri: rule.redirect_url.as_str(),
        pkce_verifier: &login.pkce_verifier,
        client_id: &rule.client_id,
        client_secret: rule.client_secret.expose(),
    };
    let tokens = match exchange_code(provider.http(), &discovered.metadata, &exchange).await {
        Ok(t) => t,
        Err(e) => {
            let status = match &e {
                FetchError::Status { status, .. } => Some(*status),
                _ => None,
            };
            tracing::warn!(rule = %rule.name, ?status, error = %escape_for_log(describe_fetch(&e)), "code exchange failed");
            let mut r = Reply::page(
                502,
                "Sign-in failed",
                "The identity provider's token endpoint could not complete the sign-in. Please try again.",
                Some((&login.url, "Try again")),
            );
            r.add_cookies(clear_login);
            return r;
        }
    };
    let Some(id_token) = tokens.id_token.as_deref() else {
        let mut r = Reply::page(
            403,
            "Sign-in failed",
            "The identity provider returned no ID token.",
            None,
        );
        r.add_cookies(clear_login);
        return r;
    };
    let claims = match provider
        .verify(
            id_token,
            &Expectation::id_token(&rule.client_id, &login.nonce),
            now,
        )
        .await
    {
        Ok(c) => c,
        Err(TokenError::KeysUnavailable) => {
            return Reply::unavailable_page(
                "the identity provider's keys cannot be fetched right now",
                &login.url,
            );
        }
        Err(e) => {
            tracing::warn!(rule = %rule.name, reason = %escape_for_log(&e), "ID token rejected at callback");
            let mut r = Reply::page(
                403,
                "Sign-in failed",
                &format!("The ID token was rejected: {e}."),
                Some((&login.url, "Try again")),
            );
            r.add_cookies(clear_login);
            return r;
        }
    };
    let Some(identity) = Identity::from_claims(&claims, rule.allowed.allow_unverified_email) else {
        let mut r = Reply::page(403, "Sign-in failed", "The ID token has no usable subject.", None);
        r.add_cookies(clear_login);
        return r;
    };
    let session = Session {
        id: new_session_id(),
        iss: rule.issuer.clone(),
        client_id: rule.client_id.clone(),
        identity,
        id_token: id_token.to_string(),
        access_token: tokens.access_token.clone(),
        refresh_token: tokens.refresh_token.clone(),
        created_at: now,
        expires_at: token::expiry(&claims),
    };
    let present: Vec<&str> = cookies::pairs(cookie_header).map(|(n, _)| n).collect();
    let mut set =
        app.sessions
            .write_session(&session, rule.cookie_domain.as_deref(), present.into_iter(), now);
    set.extend(clear_login);
    tracing::info!(rule = %rule.name, has_sid = session.sid().is_some(), "login completed");
    if app.sessions.same_site() == crate::config::SameSite::Strict {
        // The redirect chain started at the IdP, so a browser would not send a Strict cookie on
        // a 302 to the original URL: continue with a same-site navigation instead.
        return Reply::continue_to(&login.url, set);
    }
    Reply::redirect(&login.url, set)
}

/// A fetch error for logs: never the response body, which may echo secrets.
fn describe_fetch(e: &FetchError) -> String {
    match e {
        FetchError::Status { url, status, .. } => format!("{url} answered HTTP {status}"),
        FetchError::BadJson { url, .. } => {
            format!("{url} answered something that is not a token response")
        }
        other => other.to_string(),
    }
}
