//! The session work behind `/oauth2/sign_out`, `/oauth2/userinfo`,
//! `/oauth2/backchannel_logout` and `/oauth2/frontchannel_logout`, protocol-free: plain facts
//! about a request in (`EndpointRequest`, or a form body), a `Reply` out. Which session, its
//! revocation, which cookies to clear, whether a sign-out came from another site, where to send
//! the browser afterwards, the userinfo body and which logout token ends which sessions are
//! decided here, so `http_listener` only reads headers.

use serde_json::json;
use url::Url;

use crate::app::App;
use crate::config::UpstreamToken;
use crate::metrics::LogoutKind;
use crate::oidc::claims::Claims;
use crate::oidc::logout_token::{Logout, LogoutTokenError};
use crate::redirect_guard::checked_target;
use crate::refresh::{self, Fresh};
use crate::reply::{escape_for_log, Reply, SIGN_OUT_PATH};
use crate::rules::normalize::{normalize_host, parse_host};
use crate::rules::Rule;
use crate::session::{cookies, StoreDown};

/// What the session endpoints read from a request, as sent; `None` is a header that is absent
/// (or, for `authority` and `forwarded_proto`, unreadable).
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointRequest<'a> {
    /// The `host` header.
    pub authority: Option<&'a str>,
    /// All `cookie` headers joined.
    pub cookie_header: &'a str,
    /// `Sec-Fetch-Site`; an unreadable value is `Some("")` (cross-site).
    pub sec_fetch_site: Option<&'a str>,
    /// `Origin`; an unreadable value is `Some("")` (cross-site).
    pub origin: Option<&'a str>,
    /// `x-forwarded-proto`.
    pub forwarded_proto: Option<&'a str>,
    /// The `rd` query parameter.
    pub rd: Option<&'a str>,
    /// Unix seconds.
    pub now: u64,
}

impl EndpointRequest<'_> {
    /// The request's host; the HTTP edge has already refused one that does not parse.
    fn host(&self) -> String {
        parse_host(self.authority.unwrap_or("")).unwrap_or_default()
    }
}

/// 503 JSON (with `retry-after`): the session store cannot be asked.
fn store_down_json(rule: &str, down: &StoreDown) -> Reply {
    tracing::warn!(error = %down, "session store unavailable");
    Reply::unavailable(rule, "the session store is unavailable; try again shortly")
}

/// 503 page (with `retry-after`): the session store cannot be asked.
fn store_down_page(down: &StoreDown, request: &EndpointRequest<'_>) -> Reply {
    tracing::warn!(error = %down, "session store unavailable");
    let again = format!("//{}{SIGN_OUT_PATH}", request.authority.unwrap_or_default());
    Reply::unavailable_page("the session store is unavailable; try again shortly", &again)
}

/// The answer when no rule serves the request's host.
pub fn no_rule() -> Reply {
    Reply::page(404, "Not found", "No authentication rule serves this host.", None)
}

/// The URL a request came to (scheme from the redirect URL on its host, else
/// `x-forwarded-proto`), for resolving relative `rd` values.
pub fn request_base(rule: &Rule, authority: Option<&str>, forwarded_proto: Option<&str>) -> Option<Url> {
    let authority = authority?;
    let scheme = if normalize_host(authority) == rule.redirect_host {
        rule.redirect_url.scheme()
    } else {
        match forwarded_proto {
            Some(p) if p.eq_ignore_ascii_case("http") => "http",
            _ => "https",
        }
    };
    Url::parse(&format!("{scheme}://{authority}/")).ok()
}

/// Whether a browser marked this request as coming from another site (a logout CSRF: an
/// `<img>`, a link or a form on someone else's page). `Sec-Fetch-Site` decides when present:
/// `same-origin`, `same-site` and `none` (typed, bookmarked) proceed, anything else is
/// cross-site. Without it (older browsers, plain http), an `Origin` header counts as same
/// site only when it is `http(s)` with the request's own host, or a host under the rule's
/// `cookie_domain`, and the request's scheme where that is known (`x-forwarded-proto`, or the
/// redirect URL's on its host); `Origin: null` and anything unreadable are cross-site.
/// Neither header (a non-browser client, or a browser that sends neither): proceed.
pub fn is_cross_site(rule: &Rule, request: &EndpointRequest<'_>) -> bool {
    if let Some(site) = request.sec_fetch_site {
        let site = site.trim().to_ascii_lowercase();
        return !matches!(site.as_str(), "same-origin" | "same-site" | "none");
    }
    match request.origin {
        None => false,
        Some(origin) => !same_site_origin(rule, request, origin.trim()),
    }
}

fn same_site_origin(rule: &Rule, request: &EndpointRequest<'_>, origin: &str) -> bool {
    let Ok(origin) = Url::parse(origin) else {
        return false; // includes `null`
    };
    // `Url` lowercases the host and leaves the port out of it.
    let Some(origin_host) = origin.host_str().map(|h| h.strip_suffix('.').unwrap_or(h)) else {
        return false;
    };
    let host = request.host();
    let scheme_ok = match request_scheme(rule, request.forwarded_proto, &host) {
        Some(scheme) => origin.scheme() == scheme,
        None => matches!(origin.scheme(), "http" | "https"),
    };
    let under_cookie_domain = rule.cookie_domain.as_deref().is_some_and(|d| {
        let d = d.trim_start_matches('.').to_ascii_lowercase();
        !d.is_empty()
            && (origin_host == d
                || origin_host
                    .strip_suffix(d.as_str())
                    .is_some_and(|p| p.ends_with('.')))
    });
    scheme_ok && !host.is_empty() && (origin_host == host || under_cookie_domain)
}

/// The scheme the client used, when we know it.
fn request_scheme(rule: &Rule, forwarded_proto: Option<&str>, host: &str) -> Option<&'static str> {
    match forwarded_proto.map(|p| p.trim().to_ascii_lowercase()) {
        Some(p) if p == "http" => Some("http"),
        Some(p) if p == "https" => Some("https"),
        _ if host == rule.redirect_host => match rule.redirect_url.scheme() {
            "http" => Some("http"),
            _ => Some("https"),
        },
        _ => None,
    }
}

/// The same-origin sign-out a confirmation page's button POSTs, keeping `rd`.
fn sign_out_action(rd: Option<&str>) -> String {
    match rd {
        Some(rd) => format!(
            "{SIGN_OUT_PATH}?rd={}",
            url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        ),
        None => SIGN_OUT_PATH.to_string(),
    }
}

/// Signs out at the rule serving the request's host: a cross-site request only gets a
/// confirmation page; otherwise the session is revoked, its cookies cleared (host-only ones
/// too under a `cookie_domain`), and the browser sent to the IdP's end-session endpoint, or to
/// a checked `rd`, or to the rule's post-logout URL.
pub async fn sign_out(app: &App, request: &EndpointRequest<'_>) -> Reply {
    let rules = app.rules.load();
    let Some(rule) = rules.endpoint_rule(&request.host()) else {
        return no_rule();
    };
    if is_cross_site(rule, request) {
        // Changes nothing: the user confirms with a same-site POST.
        tracing::info!(rule = %rule.name, "cross-site sign-out: asking the user to confirm");
        return Reply::sign_out_confirm(&sign_out_action(request.rd));
    }
    let cookie = request.cookie_header;
    // A session already revoked is no session: its ID token is not handed out as a hint.
    let session = match app.session_store.load(cookie, request.now).await {
        Ok(session) => session,
        Err(down) => return store_down_page(&down, request),
    };
    if let Some(s) = &session {
        // A saved copy of the cookie must not outlive the sign-out.
        if let Err(down) = app.session_store.revoke(s).await {
            return store_down_page(&down, request);
        }
    }
    let present: Vec<&str> = cookies::pairs(cookie).map(|(n, _)| n).collect();
    let mut clear = app.session_store.clear(rule.cookie_domain.as_deref(), &present);
    if rule.cookie_domain.is_some() {
        // A host-only cookie of the same name would otherwise survive.
        clear.extend(app.session_store.clear(None, &present));
    }

    let end_session = app
        .providers
        .get(&rule.provider_key)
        .and_then(|p| p.discovered())
        .and_then(|d| d.metadata.end_session_endpoint.clone())
        .and_then(|e| Url::parse(&e).ok());
    let location = match end_session {
        Some(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = &session {
                    q.append_pair("id_token_hint", &s.id_token);
                }
                q.append_pair("client_id", &rule.client_id);
                q.append_pair("post_logout_redirect_uri", rule.post_logout_redirect_url.as_str());
            }
            url
        }
        None => {
            let base = request_base(rule, request.authority, request.forwarded_proto);
            match (request.rd, base) {
                (Some(rd), Some(base)) => match checked_target(rule, &base, rd) {
                    Some(t) => t,
                    None => {
                        let mut r = Reply::page(
                            400,
                            "Bad redirect",
                            "The address to return to is not allowed.",
                            None,
                        );
                        r.add_cookies(clear);
                        return r;
                    }
                },
                _ => rule.post_logout_redirect_url.clone(),
            }
        }
    };
    tracing::info!(rule = %rule.name, revoked = session.is_some(), "signed out");
    app.metrics.record_logout(LogoutKind::SignOut);
    Reply::redirect(location.as_str(), clear)
}

/// The live session's identity as JSON (the email only where it counts for the session's
/// rule), or a 401 naming the rule that serves the request's host. A session whose tokens ran
/// out is refreshed first, as `Check` would (the new cookie comes with the answer).
pub async fn userinfo(app: &App, request: &EndpointRequest<'_>) -> Reply {
    let rules = app.rules.load();
    let host = request.host();
    let now = request.now;
    let rule_name = rules
        .endpoint_rule(&host)
        .map(|r| r.name.clone())
        .unwrap_or_default();
    let session = match app.session_store.load(request.cookie_header, now).await {
        Ok(Some(session)) => session,
        Ok(None) => return Reply::unauthorized(&rule_name, None),
        Err(down) => return store_down_json(&rule_name, &down),
    };
    let rule = rules.enabled().find(|r| session.is_for(&r.issuer, &r.client_id));
    let (session, cookies) = match rule {
        Some(rule) => match refresh::fresh(app, rule, session, now).await {
            Ok(Fresh::Current(s) | Fresh::Grace(s)) => (s, Vec::new()),
            Ok(Fresh::Renewed(s)) => {
                let present: Vec<&str> = cookies::pairs(request.cookie_header).map(|(n, _)| n).collect();
                match app
                    .session_store
                    .save(&s, rule.cookie_domain.as_deref(), &present, now)
                    .await
                {
                    Ok(set) => (s, set),
                    Err(down) => return store_down_json(&rule_name, &down),
                }
            }
            Ok(Fresh::Ended) => return Reply::unauthorized(&rule_name, None),
            Err(down) => return store_down_json(&rule_name, &down),
        },
        // No enabled rule takes this session any more: shown while its ID token lasts.
        None if session.refresh_due(now, UpstreamToken::IdToken).is_none() => (session, Vec::new()),
        None => return Reply::unauthorized(&rule_name, None),
    };
    // Only an email that counts for the session's rule is shown.
    let email = session
        .identity
        .email_for(rule.is_some_and(|r| r.allowed.allow_unverified_email));
    let mut reply = Reply::json(
        200,
        json!({
            "sub": session.identity.sub,
            "email": email,
            "preferred_username": session.identity.preferred_username,
            "groups": session.identity.groups,
            "rule": rule.map(|r| r.name.clone()),
            "issuer": session.iss,
            "expires_at": session.expires_at,
        }),
    );
    reply.add_cookies(cookies);
    reply
}

/// Largest back-channel logout request body read.
pub const MAX_LOGOUT_BODY: usize = 64 * 1024;

/// OIDC Back-Channel Logout 1.0: the form body's `logout_token`, validated against the rules
/// with its `iss` and `aud`, ends the sessions of its `sid` (that IdP session only) or, without
/// one, of its `sub`. 200 (`cache-control: no-store`, as every `Reply`); a bad or replayed token
/// is 400 `{"error": "invalid_request"}` and revokes nothing; a session store that cannot be
/// asked is 503.
///
/// The rule is found from the token, not from the host it was posted to: an IdP may call an
/// in-cluster address. Its signature decides; the unverified `iss`/`aud` only pick the keys.
pub async fn backchannel_logout(app: &App, body: &[u8], now: u64) -> Reply {
    match logout_of(app, body, now).await {
        Ok(Accepted { rule, issuer, logout }) => {
            let ended = match (&logout.sid, &logout.sub) {
                (Some(sid), sub) => app.session_store.revoke_sid(&issuer, sid, sub.as_deref()).await,
                (None, Some(sub)) => app.session_store.revoke_sub(&issuer, sub).await,
                (None, None) => Ok(None),
            };
            if let Err(down) = ended {
                // Not (surely) revoked: the IdP may deliver it again.
                return store_down_json(&rule, &down);
            }
            app.metrics.record_logout(LogoutKind::Backchannel);
            tracing::info!(
                rule = %rule,
                by = if logout.sid.is_some() { "sid" } else { "sub" },
                "back-channel logout: sessions revoked"
            );
            Reply::json(200, json!({}))
        }
        Err(LogoutFailure::StoreDown(down)) => store_down_json("", &down),
        Err(e) => {
            tracing::info!(reason = %escape_for_log(&e), "back-channel logout refused");
            Reply::json(400, json!({"error": "invalid_request"}))
        }
    }
}

/// A logout token that passed every check.
struct Accepted {
    /// The rule whose keys and client accepted it.
    rule: String,
    /// That rule's issuer (the sessions to end are of this issuer).
    issuer: String,
    logout: Logout,
}

/// The valid logout token in `body`: the rule that accepted it, its issuer, and what it ends.
/// Why a back-channel logout was not carried out.
#[derive(Debug, thiserror::Error)]
enum LogoutFailure {
    /// The request or its token is bad: 400.
    #[error("{0}")]
    Token(LogoutTokenError),
    /// The session store cannot be asked: 503 (the IdP may deliver it again).
    #[error("{0}")]
    StoreDown(StoreDown),
}

impl From<LogoutTokenError> for LogoutFailure {
    fn from(e: LogoutTokenError) -> LogoutFailure {
        LogoutFailure::Token(e)
    }
}

impl From<crate::oidc::token::TokenError> for LogoutFailure {
    fn from(e: crate::oidc::token::TokenError) -> LogoutFailure {
        LogoutFailure::Token(e.into())
    }
}

async fn logout_of(app: &App, body: &[u8], now: u64) -> Result<Accepted, LogoutFailure> {
    let mut tokens = url::form_urlencoded::parse(body)
        .take(16)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    let token = match (tokens.next(), tokens.next()) {
        (Some(t), None) if !t.is_empty() => t,
        _ => return Err(crate::oidc::token::TokenError::Malformed.into()),
    };
    let unverified = unverified_claims(&token).ok_or(crate::oidc::token::TokenError::Malformed)?;
    let issuer = unverified.issuer().unwrap_or_default();
    let audiences = unverified.audiences().unwrap_or_default();
    let rules = app.rules.load();
    let mut first_error = None;
    let mut tried: Vec<(&str, &str)> = Vec::new();
    for rule in rules
        .enabled()
        .filter(|r| r.issuer == issuer && audiences.contains(&r.client_id.as_str()))
    {
        if tried.contains(&(rule.provider_key.as_str(), rule.client_id.as_str())) {
            continue;
        }
        tried.push((&rule.provider_key, &rule.client_id));
        let Some(provider) = app.providers.get(&rule.provider_key) else {
            continue;
        };
        match provider.verify_logout_token(&token, &rule.client_id, now).await {
            Ok(logout) => {
                let first = app
                    .session_store
                    .first_use_of_logout_token(&rule.issuer, &logout.jti, logout.refused_after)
                    .await
                    .map_err(LogoutFailure::StoreDown)?;
                if !first {
                    return Err(LogoutFailure::Token(LogoutTokenError::Replayed));
                }
                return Ok(Accepted {
                    rule: rule.name.clone(),
                    issuer: rule.issuer.clone(),
                    logout,
                });
            }
            Err(e) => {
                first_error.get_or_insert(LogoutFailure::Token(e));
            }
        }
    }
    Err(first_error.unwrap_or(LogoutFailure::Token(LogoutTokenError::NoRule)))
}

/// A JWT's claims read without checking anything: only to pick which rule's keys check it.
fn unverified_claims(token: &str) -> Option<Claims> {
    use base64::Engine;
    if token.len() > crate::oidc::token::MAX_TOKEN_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// OIDC Front-Channel Logout 1.0 (`GET /oauth2/frontchannel_logout?iss&sid`, loaded by the
/// IdP's logout page in an iframe): when the browser's session is of that issuer and IdP
/// session, it is revoked and its cookies cleared. Nothing else is revoked: an unauthenticated
/// GET must not be able to end (or flood the revocation set with) sessions it does not hold.
/// The answer is always 200, an empty page that is never cached.
pub async fn frontchannel_logout(
    app: &App,
    request: &EndpointRequest<'_>,
    iss: Option<&str>,
    sid: Option<&str>,
) -> Reply {
    let mut reply = Reply::page(200, "Signed out", "You are signed out of this application.", None);
    let (Some(iss), Some(sid)) = (iss, sid) else {
        return reply;
    };
    let session = match app.session_store.load(request.cookie_header, request.now).await {
        Ok(Some(session)) => session,
        Ok(None) => return reply,
        Err(down) => return store_down_page(&down, request),
    };
    if session.iss != iss || session.sid() != Some(sid) {
        return reply;
    }
    if let Err(down) = app.session_store.revoke(&session).await {
        return store_down_page(&down, request);
    }
    let rules = app.rules.load();
    let present: Vec<&str> = cookies::pairs(request.cookie_header).map(|(n, _)| n).collect();
    for rule in rules
        .enabled()
        .filter(|r| session.is_for(&r.issuer, &r.client_id))
        .take(1)
    {
        reply.add_cookies(app.session_store.clear(rule.cookie_domain.as_deref(), &present));
    }
    reply.add_cookies(app.session_store.clear(None, &present));
    app.metrics.record_logout(LogoutKind::Frontchannel);
    tracing::info!("front-channel logout: session revoked");
    reply
}

#[cfg(test)]
mod tests;
