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
//!   same `sub`; a refresh token that is not returned is kept.
//! - `invalid_grant`, or tokens that do not validate: the session is over. The IdP unreachable or
//!   answering 5xx: the session is served until `refresh_grace` after its expiry.
//!
//! `max_lifetime` caps everything: a refreshed session keeps its `created_at`, and the store
//! refuses a session past it before this module sees it.

use std::sync::Arc;

use crate::app::App;
use crate::identity::Identity;
use crate::metrics::RefreshOutcome;
use crate::oidc::exchange::{self, Client, RefreshError};
use crate::oidc::provider::Expectation;
use crate::oidc::token::{self, TokenError};
use crate::reply::escape_for_log;
use crate::rules::Rule;
use crate::session::store::RefreshResult;
use crate::session::Session;

/// What to serve a request on a session with.
#[derive(Debug, PartialEq, Eq)]
pub enum Fresh {
    /// The session as it came: nothing was due.
    Current(Session),
    /// A refreshed session: serve it and send its cookie to the browser.
    Renewed(Session),
    /// The IdP could not be reached: serve the session as it is (within `refresh_grace`).
    Grace(Session),
    /// The session is over: treat the request as having none.
    Ended,
}

/// At most this many refreshes are followed in one request: the old cookie's result, then the
/// refreshed session's own refresh when its tokens already ran out again.
const MAX_HOPS: usize = 2;

/// The session to serve `rule`'s request with, refreshed when its tokens have run out.
pub async fn fresh(app: &App, rule: &Rule, session: Session, now: u64) -> Fresh {
    let mut session = session;
    let mut renewed = false;
    for _ in 0..MAX_HOPS {
        let Some(due) = session.refresh_due(now, rule.upstream_token) else {
            return if renewed {
                Fresh::Renewed(session)
            } else {
                Fresh::Current(session)
            };
        };
        if session.refresh_token.is_none() {
            // Nothing to refresh with: the session ends with its token.
            return Fresh::Ended;
        }
        let result = match app.session_store.recent_refresh(&session).await {
            Some(result) => result,
            None => {
                let _guard = app.session_store.refresh_lock(&session.id).await;
                // The request we waited for may have refreshed this very session.
                match app.session_store.recent_refresh(&session).await {
                    Some(result) => result,
                    None => {
                        let result = refresh_once(app, rule, &session, now).await;
                        app.session_store.remember_refresh(&session, result.clone()).await;
                        result
                    }
                }
            }
        };
        match result {
            RefreshResult::Renewed(next) => {
                session = Arc::unwrap_or_clone(next);
                renewed = true;
            }
            RefreshResult::Ended => return Fresh::Ended,
            RefreshResult::Unavailable => {
                return if now < due.saturating_add(app.refresh_grace_secs) {
                    Fresh::Grace(session)
                } else {
                    Fresh::Ended
                };
            }
        }
    }
    // Refreshed, and due again at once (an IdP issuing tokens that are already expired):
    // serve what we have rather than loop.
    if renewed {
        Fresh::Renewed(session)
    } else {
        Fresh::Current(session)
    }
}

/// One refresh-token grant for `session` at `rule`'s provider, counted.
async fn refresh_once(app: &App, rule: &Rule, session: &Session, now: u64) -> RefreshResult {
    let (result, outcome) = match grant(app, rule, session, now).await {
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
    let tokens = exchange::refresh(provider.http(), &discovered.metadata, refresh_token, client)
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
                    TokenError::KeysUnavailable => Failure::Unavailable(e.to_string()),
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
        // No new ID token (OAuth allows it): the identity stands, and the session lives as long
        // as the new access token.
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
