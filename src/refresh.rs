//! Keeps a session going past its tokens' expiry: the refresh-token grant, once per session at
//! a time, with its result shared (DESIGN "Sessions", Refresh). `fresh` is the one entry: the
//! request paths (`authorize`, `session_endpoints`) hand it a loaded session and get back what
//! to serve.
//!
//! - Nothing due (`Session::refresh_due`): the session as it is.
//! - Due, no refresh token: the session is over.
//! - Due: the store's memory first (a refresh of this session and refresh token that another
//!   request made, or that the browser has not seen yet); else the session's refresh lock, the
//!   memory again (the request we waited for may have done it), then one grant at the token
//!   endpoint. A returned ID token is validated as at the callback (no nonce) and must have the
//!   same `sub`; a refresh token that is not returned is kept. The whole refresh is bounded
//!   (`REFRESH_BUDGET`), and so is the wait for another request's refresh.
//! - `invalid_grant`, or tokens that do not validate: the session is over. The IdP unreachable or
//!   answering 5xx: the session is served until `refresh_grace` after its expiry.
//!
//! `max_lifetime` caps everything: a refreshed session keeps its `created_at`, and the store
//! refuses a session past it before this module sees it.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::config::UpstreamToken;
use crate::identity::Identity;
use crate::metrics::RefreshOutcome;
use crate::oidc::exchange::{self, Client, RefreshError};
use crate::oidc::provider::Expectation;
use crate::oidc::token::{self, TokenError};
use crate::reply::escape_for_log;
use crate::rules::Rule;
use crate::session::store::RefreshResult;
use crate::session::{Session, StoreDown};

/// What to serve a request on a session with.
#[derive(Debug, PartialEq, Eq)]
pub enum Fresh {
    /// The session as it came: nothing was due.
    Current(Arc<Session>),
    /// A refreshed session: serve it and send its cookie to the browser.
    Renewed(Arc<Session>),
    /// The IdP could not be reached: serve the session as it is (within `refresh_grace`).
    Grace(Arc<Session>),
    /// The session is over: treat the request as having none.
    Ended,
}

/// At most this many refresh results are followed in one request: a remembered one (the old
/// cookie's), then the refreshed session's own when its tokens ran out again. Of these, at
/// most one is a grant made by this request.
const MAX_HOPS: usize = 2;

/// A whole refresh (the grant, its one retry, and the check of the new ID token, which may
/// fetch keys) takes at most this long: a hung IdP is answered from `refresh_grace` well within
/// Envoy's ext_authz timeout (5 s in the shipped `envoy.yaml`).
pub const REFRESH_BUDGET: Duration = Duration::from_millis(3500);

/// How long a request waits for another request's refresh of the same session, which is
/// itself bounded by `REFRESH_BUDGET`.
const LOCK_WAIT: Duration = Duration::from_millis(4000);

/// The session to serve `rule`'s request with, refreshed when its tokens have run out. `Err`
/// when the session store cannot be asked (answer 503).
pub async fn fresh(app: &App, rule: &Rule, session: Arc<Session>, now: u64) -> Result<Fresh, StoreDown> {
    let mut session = session;
    let mut renewed = false;
    for _ in 0..MAX_HOPS {
        let Some(due) = session.refresh_due(now, rule.upstream_token) else {
            break;
        };
        if session.refresh_token.is_none() {
            // Nothing to refresh with: the session ends with its token.
            return Ok(Fresh::Ended);
        }
        // Boxed: a refresh's future (the lock, the grant, the IdP call) is large, and it runs
        // once per token lifetime; inline, every request's future would carry its size.
        let (result, granted) = match Box::pin(app.session_store.recent_refresh(&session)).await? {
            Some(result) => (result, false),
            None => (Box::pin(refresh_locked(app, rule, &session, now)).await?, true),
        };
        match result {
            RefreshResult::Renewed(next) => {
                session = next;
                renewed = true;
                if granted {
                    // One grant per request, even if the IdP's new tokens are already expired.
                    break;
                }
            }
            RefreshResult::Ended => return Ok(Fresh::Ended),
            RefreshResult::Unavailable => {
                return Ok(if now < due.saturating_add(app.refresh_grace_secs) {
                    Fresh::Grace(session)
                } else {
                    Fresh::Ended
                });
            }
        }
    }
    Ok(if renewed {
        Fresh::Renewed(session)
    } else {
        Fresh::Current(session)
    })
}

/// Refreshes `session` under its lock: the result of the refresh we waited for, if another
/// request made it, else one grant, remembered for the requests that follow.
async fn refresh_locked(
    app: &App,
    rule: &Rule,
    session: &Session,
    now: u64,
) -> Result<RefreshResult, StoreDown> {
    let Ok(guard) = tokio::time::timeout(LOCK_WAIT, app.session_store.refresh_lock(&session.id)).await else {
        // The refresh in flight takes too long: this request is answered from the grace.
        return Ok(RefreshResult::Unavailable);
    };
    let _guard = guard?;
    // The request we waited for may have refreshed this very session.
    if let Some(result) = app.session_store.recent_refresh(session).await? {
        return Ok(result);
    }
    let result = refresh_once(app, rule, session, now).await;
    app.session_store
        .remember_refresh(session, result.clone())
        .await?;
    Ok(result)
}

/// One refresh-token grant for `session` at `rule`'s provider, counted.
async fn refresh_once(app: &App, rule: &Rule, session: &Session, now: u64) -> RefreshResult {
    let granted = tokio::time::timeout(REFRESH_BUDGET, grant(app, rule, session, now))
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Unavailable(format!(
                "the refresh took longer than {} ms",
                REFRESH_BUDGET.as_millis()
            )))
        });
    let (result, outcome) = match granted {
        Ok(next) => (RefreshResult::Renewed(Arc::new(next)), RefreshOutcome::Success),
        Err(Failure::InvalidGrant) => {
            tracing::info!(rule = %rule.name, "refresh token refused (invalid_grant): the session ends");
            (RefreshResult::Ended, RefreshOutcome::InvalidGrant)
        }
        Err(Failure::Rejected(why)) => {
            tracing::warn!(rule = %rule.name, reason = %escape_for_log(&why), "refresh failed: the session ends");
            (RefreshResult::Ended, RefreshOutcome::Rejected)
        }
        Err(Failure::Unavailable(why)) => {
            tracing::warn!(rule = %rule.name, reason = %escape_for_log(&why), "refresh failed: the identity provider cannot be reached");
            (RefreshResult::Unavailable, RefreshOutcome::Unavailable)
        }
    };
    app.metrics.record_refresh(outcome);
    result
}

/// Why a grant gave no session.
enum Failure {
    InvalidGrant,
    Rejected(String),
    Unavailable(String),
}

/// The grant itself: the refreshed session, or why not.
async fn grant(app: &App, rule: &Rule, session: &Session, now: u64) -> Result<Session, Failure> {
    let refresh_token = session
        .refresh_token
        .as_deref()
        .ok_or_else(|| Failure::Rejected("no refresh token".into()))?;
    let provider = app
        .providers
        .get(&rule.provider_key)
        .ok_or_else(|| Failure::Unavailable("the identity provider is not configured yet".into()))?;
    let discovered = provider
        .discovered()
        .ok_or_else(|| Failure::Unavailable("the identity provider has not been discovered yet".into()))?;
    let client = Client {
        id: &rule.client_id,
        secret: rule.client_secret.expose(),
    };
    let call = provider.call_for(&rule.name, crate::metrics::Endpoint::Refresh);
    let tokens = exchange::refresh(provider.http(), &discovered.metadata, refresh_token, client, call)
        .await
        .map_err(|e| match e {
            RefreshError::InvalidGrant => Failure::InvalidGrant,
            RefreshError::Unavailable(why) => Failure::Unavailable(why),
            RefreshError::Refused(why) => Failure::Rejected(why),
        })?;

    let mut next = session.clone();
    match tokens.id_token {
        Some(id_token) => {
            let claims = provider
                .verify(&id_token, &Expectation::refreshed_id_token(&rule.client_id), now)
                .await
                .map_err(|e| match e {
                    // Keys the JWKS cannot give right now (down, or a rotation whose refetch
                    // is rate-limited) say nothing against the session.
                    TokenError::KeysUnavailable | TokenError::UnknownKey => {
                        Failure::Unavailable(format!("the refreshed ID token cannot be checked yet: {e}"))
                    }
                    e => Failure::Rejected(format!("the refreshed ID token was rejected: {e}")),
                })?;
            let identity = Identity::from_claims(&claims, rule.allowed.allow_unverified_email)
                .ok_or_else(|| Failure::Rejected("the refreshed ID token has no usable subject".into()))?;
            if identity.sub != session.identity.sub {
                return Err(Failure::Rejected(
                    "the refreshed ID token is for another subject".into(),
                ));
            }
            let sid = session.identity.sid.clone();
            next.identity = identity;
            // An IdP that leaves `sid` out of a refreshed token still means the same session.
            if next.identity.sid.is_none() {
                next.identity.sid = sid;
            }
            next.id_token = id_token;
            next.expires_at = token::expiry(&claims);
        }
        // No new ID token (OAuth allows it). A backend that is sent the ID token would get an
        // expired one: the session ends. Otherwise the identity stands, and the session lives
        // as long as the new access token.
        None if rule.upstream_token == UpstreamToken::IdToken => {
            return Err(Failure::Rejected(
                "the refresh returned no ID token, and the backend is sent the ID token".into(),
            ));
        }
        None => match tokens.expires_in {
            Some(secs) => next.expires_at = now.saturating_add(secs),
            None => {
                return Err(Failure::Rejected(
                    "the refresh returned neither an ID token nor an expiry".into(),
                ))
            }
        },
    }
    if let Some(access) = tokens.access_token {
        next.access_token = Some(access);
    }
    next.access_expires_at = tokens.expires_in.map(|s| now.saturating_add(s));
    if let Some(rt) = tokens.refresh_token.filter(|t| !t.is_empty()) {
        next.refresh_token = Some(rt);
    }
    Ok(next)
}
