//! Answers one request end to end, without knowing Envoy: route it through the rules, look at
//! its credentials, and produce a `Verdict` (allow with header changes, or a `Reply` to send
//! back). `check` adapts Envoy's `CheckRequest` to `RequestFacts` and the `Verdict` back.

use std::collections::HashMap;
use std::time::Instant;

use crate::app::App;
use crate::config::{DefaultAction, UpstreamToken};
use crate::decision::{route, Route};
use crate::identity::{check_allowed, Identity};
use crate::metrics::Outcome;
use crate::oidc::provider::Expectation;
use crate::oidc::token::TokenError;
use crate::refresh::{self, Fresh};
use crate::reply::{escape_for_log, Reply};
use crate::rules::normalize::{parse_host, RequestPath};
use crate::rules::{Rule, RuleSet};
use crate::session::cookies::{self, RequestCookies, Upstream};
use crate::session::{Session, StoreDown};

/// Identity headers we set; any other client-sent `x-auth-request-*` header is removed.
pub const IDENTITY_PREFIX: &str = "x-auth-request-";
pub const H_USER: &str = "x-auth-request-user";
pub const H_EMAIL: &str = "x-auth-request-email";
pub const H_USERNAME: &str = "x-auth-request-preferred-username";
pub const H_GROUPS: &str = "x-auth-request-groups";
pub const H_RULE: &str = "x-auth-request-rule";

/// What we know about a request, in protocol-free terms. Header names are lowercase.
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// `http` or `https`, as the client used.
    pub scheme: &'a str,
    /// The authority as sent (with port), for building the return URL.
    pub authority: &'a str,
    /// The path as sent, with query.
    pub raw_path: &'a str,
    /// Request headers by lowercase name (repeated headers joined, as Envoy does).
    pub headers: &'a HashMap<String, String>,
}

impl RequestFacts<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Changes to the upstream request on allow.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Allow {
    /// Headers to set, replacing any the client sent.
    pub set: Vec<(&'static str, String)>,
    /// Headers to remove.
    pub remove: Vec<String>,
    /// `Set-Cookie` lines for the browser (a refreshed session).
    pub response_cookies: Vec<String>,
}

/// What Envoy is to do with the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through to the backend, with these changes.
    Allow(Allow),
    /// Answer the client with this instead (a login redirect, a completed login's redirect with
    /// its session cookie, 400, 401, 403, 503…).
    Respond(Reply),
}

/// A verdict and the outcome it is counted as.
#[derive(Debug, PartialEq, Eq)]
struct Decision {
    outcome: Outcome,
    verdict: Verdict,
}

impl Decision {
    fn allow(outcome: Outcome, allow: Allow) -> Decision {
        Decision {
            outcome,
            verdict: Verdict::Allow(allow),
        }
    }

    fn respond(outcome: Outcome, reply: Reply) -> Decision {
        Decision {
            outcome,
            verdict: Verdict::Respond(reply),
        }
    }
}

/// Whether a client-sent header name is (or could be read by a backend as) one of ours. Many
/// frameworks (CGI, Django, PHP) treat `_` like `-`, so `x_auth_request_user` counts too.
pub fn is_identity_header(name: &str) -> bool {
    name.len() > IDENTITY_PREFIX.len()
        && name
            .bytes()
            .zip(IDENTITY_PREFIX.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// A request is a browser navigation when it is GET/HEAD, accepts HTML and is not XHR.
pub fn is_browser_navigation(method: &str, accept: Option<&str>, requested_with: Option<&str>) -> bool {
    (method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD"))
        && accept.is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
        && !requested_with.is_some_and(|x| x.trim().eq_ignore_ascii_case("xmlhttprequest"))
}

/// Decides one request, and counts it (outcome, governing rule, latency).
pub async fn authorize(app: &App, req: RequestFacts<'_>, now: u64) -> Verdict {
    let started = Instant::now();
    let rules = app.rules.load();
    let (rule, decision) = decide(app, &rules, req, now).await;
    app.metrics
        .record_check(rule.map(|r| r.counted()), decision.outcome, started.elapsed());
    crate::telemetry::record_outcome(decision.outcome.label());
    decision.verdict
}

/// The decision, and the rule that governed it (`None` when none did).
async fn decide<'r>(
    app: &App,
    rules: &'r RuleSet,
    req: RequestFacts<'_>,
    now: u64,
) -> (Option<&'r Rule>, Decision) {
    // The host is checked once, before the rule walk: a name that is not a host name could be
    // routed by Envoy one way and matched by a rule's `domains` another.
    let host = match parse_host(req.authority) {
        Ok(host) => host,
        Err(why) => {
            return (
                None,
                Decision::respond(Outcome::BadRequest, Reply::bad_host(&why)),
            );
        }
    };
    let path = RequestPath::parse(req.raw_path);
    let cookie_header = req.header("cookie").unwrap_or("");
    // Read once: our session cookie's value, and the header the backend is to see.
    let cookies = RequestCookies::parse(cookie_header, &app.sessions.cookie_name);
    // Spoofed identity headers are removed on every allow.
    let spoofed: Vec<String> = req
        .headers
        .keys()
        .filter(|n| is_identity_header(n))
        .cloned()
        .collect();

    let routed = route(rules, &host, &path);
    let governing = match &routed {
        Route::Callback(rule) | Route::Public { rule, .. } | Route::Login { rule, .. } => Some(*rule),
        Route::Default(_) => None,
    };
    crate::telemetry::record_rule(governing.map_or("default_action", |r| r.name.as_str()));
    let decision = match routed {
        Route::Callback(rule) => {
            let query = req.raw_path.split_once('?').map_or("", |(_, q)| q);
            Decision::respond(
                Outcome::Callback,
                // Boxed: the code exchange's future is large and this path is rare; inline, it
                // would make every decision's future (moved as it is wrapped) as large.
                Box::pin(crate::login::complete(app, rule, query, cookie_header, now)).await,
            )
        }
        Route::Public { .. } => {
            Decision::allow(Outcome::AllowPublic, anonymous_allow(spoofed, cookies.upstream))
        }
        Route::Default(DefaultAction::Allow) => {
            Decision::allow(Outcome::AllowDefault, anonymous_allow(spoofed, cookies.upstream))
        }
        Route::Default(DefaultAction::Deny) => Decision::respond(
            Outcome::Forbidden,
            forbidden(
                &req,
                None,
                "default_action",
                "no rule allows this request (default_action: deny)",
                None,
            ),
        ),
        Route::Login { rule, .. } => login_with(app, rule, &req, cookies, spoofed, now).await,
    };
    (governing, decision)
}

fn anonymous_allow(spoofed: Vec<String>, upstream: Upstream) -> Allow {
    let mut allow = Allow {
        remove: spoofed,
        ..Allow::default()
    };
    strip_session_cookie(upstream, &mut allow);
    allow
}

/// The backend never sees our cookies.
fn strip_session_cookie(upstream: Upstream, allow: &mut Allow) {
    match upstream {
        Upstream::Unchanged => {}
        Upstream::Remove => allow.remove.push("cookie".into()),
        Upstream::Replace(kept) => allow.set.push(("cookie", kept)),
    }
}

/// "Login with rule R": a session of R's, or a bearer token from R's issuer.
async fn login_with(
    app: &App,
    rule: &Rule,
    req: &RequestFacts<'_>,
    cookies: RequestCookies<'_>,
    spoofed: Vec<String>,
    now: u64,
) -> Decision {
    let cookie_header = req.header("cookie").unwrap_or("");
    // 1. A session cookie for this rule's issuer and client (not signed out), refreshed when
    //    its tokens have run out.
    let session = match app
        .session_store
        .load_sealed(cookies.session.as_deref(), now)
        .await
    {
        Ok(session) => session.filter(|s| s.is_for(&rule.issuer, &rule.client_id)),
        Err(down) => return store_down(req, &rule.name, &down),
    };
    if let Some(session) = session {
        let fresh = match refresh::fresh(app, rule, session, now).await {
            Ok(fresh) => fresh,
            Err(down) => return store_down(req, &rule.name, &down),
        };
        let (session, renewed) = match fresh {
            Fresh::Current(s) | Fresh::Grace(s) => (Some(s), false),
            Fresh::Renewed(s) => (Some(s), true),
            Fresh::Ended => (None, false),
        };
        if let Some(session) = session {
            let mut decision = session_allow(rule, req, &session, cookies.upstream, spoofed);
            if renewed {
                // The browser keeps the refreshed session, allowed (through Envoy's
                // `response_headers_to_add`) or not (a 403 under this rule must not lose a
                // session that others accept: its old refresh token may be spent).
                let present: Vec<&str> = cookies::pairs(cookie_header).map(|(n, _)| n).collect();
                let set = match Box::pin(app.session_store.save(
                    &session,
                    rule.cookie_domain.as_deref(),
                    &present,
                    now,
                ))
                .await
                {
                    Ok(set) => set,
                    Err(down) => return store_down(req, &rule.name, &down),
                };
                match &mut decision.verdict {
                    Verdict::Allow(allow) => allow.response_cookies = set,
                    Verdict::Respond(reply) => reply.add_cookies(set),
                }
            }
            return decision;
        }
    }

    // 2. A bearer token.
    let bearer = req.header("authorization").and_then(|h| {
        let (scheme, token) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    if let Some(token) = bearer.filter(|t| !t.is_empty()) {
        let Some(provider) = app.providers.get(&rule.provider_key) else {
            return Decision::respond(
                Outcome::Unavailable,
                unavailable(req, &rule.name, "the identity provider is not configured yet"),
            );
        };
        let expected = Expectation::bearer(&rule.client_id, &rule.audiences);
        // Boxed, as the callback above: a key fetch's future is large; a verified token is
        // found in the cache.
        return match Box::pin(provider.verify(token, &expected, now)).await {
            Ok(claims) => match Identity::from_claims(&claims, rule.allowed.allow_unverified_email) {
                Some(identity) => {
                    if let Err(e) = check_allowed(&rule.allowed, &identity) {
                        return Decision::respond(
                            Outcome::Forbidden,
                            forbidden(req, Some(&rule.name), e.requirement, &e.detail, Some(&identity)),
                        );
                    }
                    // The client's own bearer token passes through untouched.
                    let mut allow = identity_allow(rule, &identity, spoofed);
                    strip_session_cookie(cookies.upstream, &mut allow);
                    Decision::allow(Outcome::AllowBearer, allow)
                }
                None => Decision::respond(
                    Outcome::Unauthorized,
                    Reply::unauthorized(&rule.name, Some("the token has no usable subject")),
                ),
            },
            Err(TokenError::KeysUnavailable) => Decision::respond(
                Outcome::Unavailable,
                unavailable(
                    req,
                    &rule.name,
                    "the identity provider's signing keys cannot be fetched",
                ),
            ),
            Err(e) => {
                tracing::debug!(rule = %rule.name, reason = %escape_for_log(&e), "bearer token rejected");
                Decision::respond(
                    Outcome::Unauthorized,
                    Reply::unauthorized(&rule.name, Some(&e.to_string())),
                )
            }
        };
    }

    // 3. No usable credentials.
    if is_navigation(req) {
        // A login that could not be stored at its end is not started.
        if let Err(down) = Box::pin(app.session_store.ready()).await {
            return store_down(req, &rule.name, &down);
        }
        let return_url = request_url(req);
        let (outcome, reply) = crate::login::begin(app, rule, &return_url, cookie_header, now);
        Decision::respond(outcome, reply)
    } else {
        Decision::respond(Outcome::Unauthorized, Reply::unauthorized(&rule.name, None))
    }
}

/// The answer for a request on a current session of `rule`'s: 403 when the identity is not
/// allowed, else an allow with the identity headers and the upstream token.
fn session_allow(
    rule: &Rule,
    req: &RequestFacts<'_>,
    session: &Session,
    upstream: Upstream,
    spoofed: Vec<String>,
) -> Decision {
    if let Err(e) = check_allowed(&rule.allowed, &session.identity) {
        return Decision::respond(
            Outcome::Forbidden,
            forbidden(
                req,
                Some(&rule.name),
                e.requirement,
                &e.detail,
                Some(&session.identity),
            ),
        );
    }
    let token = match rule.upstream_token {
        UpstreamToken::IdToken => Some(session.id_token.as_str()),
        UpstreamToken::AccessToken => session.access_token.as_deref(),
        UpstreamToken::None => None,
    };
    let mut allow = identity_allow(rule, &session.identity, spoofed);
    match token {
        Some(t) => allow.set.push(("authorization", format!("Bearer {t}"))),
        // The session authenticated this request, not whatever the client put in
        // `authorization`: it must not reach the backend as if we had vouched for it.
        None if req.header("authorization").is_some() => allow.remove.push("authorization".into()),
        None => {}
    }
    strip_session_cookie(upstream, &mut allow);
    Decision::allow(Outcome::AllowSession, allow)
}

/// 503 (with `retry-after`): the session store cannot be asked. Never an allow.
fn store_down(req: &RequestFacts<'_>, rule: &str, down: &StoreDown) -> Decision {
    tracing::warn!(rule = %rule, error = %down, "session store unavailable");
    Decision::respond(
        Outcome::Unavailable,
        unavailable(req, rule, "the session store is unavailable; try again shortly"),
    )
}

fn is_navigation(req: &RequestFacts<'_>) -> bool {
    is_browser_navigation(req.method, req.header("accept"), req.header("x-requested-with"))
}

/// The URL the request was made to, for "try again" links.
fn request_url(req: &RequestFacts<'_>) -> String {
    format!("{}://{}{}", req.scheme, req.authority, req.raw_path)
}

/// 403 naming the failed requirement: a page saying who is signed in for a browser
/// navigation, JSON for everyone else.
fn forbidden(
    req: &RequestFacts<'_>,
    rule: Option<&str>,
    requirement: &str,
    message: &str,
    who: Option<&Identity>,
) -> Reply {
    if is_navigation(req) {
        let name = who.map(|id| {
            id.preferred_username
                .as_deref()
                .or(id.email.as_deref())
                .unwrap_or(&id.sub)
        });
        Reply::forbidden_page(rule, requirement, message, name)
    } else {
        Reply::forbidden(rule, requirement, message)
    }
}

/// 503 (with `retry-after`): a page with a retry link for a browser navigation, JSON otherwise.
fn unavailable(req: &RequestFacts<'_>, rule: &str, message: &str) -> Reply {
    if is_navigation(req) {
        Reply::unavailable_page(message, &request_url(req))
    } else {
        Reply::unavailable(rule, message)
    }
}

/// Identity headers for an authenticated request; spoofed ones we do not set are removed.
fn identity_allow(rule: &Rule, id: &Identity, spoofed: Vec<String>) -> Allow {
    let mut set: Vec<(&'static str, String)> = Vec::with_capacity(6);
    set.push((H_USER, id.sub.clone()));
    // Only an email that counts for this rule (a session made under a rule that trusts
    // unverified emails may be used on one that does not).
    if let Some(e) = id.email_for(rule.allowed.allow_unverified_email) {
        set.push((H_EMAIL, e.to_string()));
    }
    if let Some(u) = &id.preferred_username {
        set.push((H_USERNAME, u.clone()));
    }
    if !id.groups.is_empty() {
        set.push((H_GROUPS, id.groups.join(",")));
    }
    set.push((H_RULE, rule.name.clone()));
    let remove = spoofed
        .into_iter()
        .filter(|n| !set.iter().any(|(s, _)| s == n))
        .collect();
    Allow {
        set,
        remove,
        response_cookies: Vec::new(),
    }
}
