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
use crate::oidc::exchange::{exchange_code, Client, CodeExchange, Tokens};
use crate::oidc::fetch::FetchError;
use crate::oidc::provider::{Expectation, Provider};
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

/// Why a callback did not complete a login. Each step of `complete` fails with one of these,
/// and `reply` is the one place a failure becomes a page, a status, cookies and a log line.
/// Nothing here holds a secret: a failed exchange keeps only its status and `describe_fetch`.
#[derive(Debug)]
enum LoginFailure {
    /// The callback has no `state`.
    MissingState,
    /// No login cookie for the `state`, or one that does not open, match, belong to this rule,
    /// or has expired.
    UnknownState,
    /// The IdP answered `error` (and perhaps `error_description`) instead of a code.
    Refused {
        error: String,
        description: String,
        return_url: String,
    },
    /// Neither an error nor a code.
    MissingCode,
    /// The provider is not configured, not discovered, or its keys cannot be fetched.
    ProviderUnavailable {
        message: &'static str,
        return_url: String,
    },
    /// The token endpoint did not answer with tokens.
    ExchangeFailed {
        status: Option<u16>,
        reason: String,
        return_url: String,
    },
    /// The token response has no ID token.
    NoIdToken,
    /// The ID token did not validate.
    TokenRejected { error: TokenError, return_url: String },
    /// The ID token's claims give no identity.
    NoSubject,
}

impl LoginFailure {
    /// The answer to a failed callback at `rule`. `clear_login` deletes the login's cookie
    /// (empty before the login is known); the failures that answer with it attach it.
    fn reply(&self, rule: &Rule, clear_login: Vec<String>) -> Reply {
        let (mut reply, clear) = match self {
            LoginFailure::MissingState => (
                bad_state("The sign-in response has no state. Please sign in again."),
                false,
            ),
            LoginFailure::UnknownState => (
                bad_state(
                    "This sign-in link has expired or was already used, or cookies are blocked. Please sign in again.",
                ),
                false,
            ),
            LoginFailure::Refused { error, description, return_url } => {
                // Both come from the callback's query: logged escaped (no forged lines).
                tracing::info!(
                    rule = %rule.name,
                    error = %escape_for_log(error),
                    error_description = %escape_for_log(description),
                    "identity provider refused the login"
                );
                let page = Reply::page(
                    403,
                    "Sign-in was refused",
                    &format!("The identity provider answered `{error}`. {description}"),
                    Some((return_url, "Try again")),
                );
                (page, true)
            }
            LoginFailure::MissingCode => (
                bad_state("The sign-in response has no code. Please sign in again."),
                false,
            ),
            LoginFailure::ProviderUnavailable { message, return_url } => {
                (Reply::unavailable_page(message, return_url), false)
            }
            LoginFailure::ExchangeFailed { status, reason, return_url } => {
                tracing::warn!(rule = %rule.name, status = *status, error = %escape_for_log(reason), "code exchange failed");
                let page = Reply::page(
                    502,
                    "Sign-in failed",
                    "The identity provider's token endpoint could not complete the sign-in. Please try again.",
                    Some((return_url, "Try again")),
                );
                (page, true)
            }
            LoginFailure::NoIdToken => (
                Reply::page(403, "Sign-in failed", "The identity provider returned no ID token.", None),
                true,
            ),
            LoginFailure::TokenRejected { error, return_url } => {
                tracing::warn!(rule = %rule.name, reason = %escape_for_log(error), "ID token rejected at callback");
                let page = Reply::page(
                    403,
                    "Sign-in failed",
                    &format!("The ID token was rejected: {error}."),
                    Some((return_url, "Try again")),
                );
                (page, true)
            }
            LoginFailure::NoSubject => (
                Reply::page(403, "Sign-in failed", "The ID token has no usable subject.", None),
                true,
            ),
        };
        if clear {
            reply.add_cookies(clear_login);
        }
        reply
    }
}

/// A "sign in again" page for a broken or replayed login.
fn bad_state(why: &str) -> Reply {
    let again = format!(
        "/oauth2/start?rd={}",
        url::form_urlencoded::byte_serialize(b"/").collect::<String>()
    );
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
    let (login, cookie_name) = match find_login(app, rule, &params, cookie_header, now) {
        Ok(found) => found,
        Err(failure) => return failure.reply(rule, Vec::new()),
    };
    let clear_login = vec![login_attrs(app, rule).delete(&cookie_name)];
    match sign_in(app, rule, &params, &login, now).await {
        Ok(session) => start_session(app, rule, &login, session, cookie_header, clear_login, now).await,
        Err(failure) => failure.reply(rule, clear_login),
    }
}

/// The login this callback belongs to, and its cookie's name: the `state` must name a login
/// cookie that opens, carries the same state, is for `rule` and has not expired.
fn find_login(
    app: &App,
    rule: &Rule,
    params: &CallbackParams,
    cookie_header: &str,
    now: u64,
) -> Result<(LoginState, String), LoginFailure> {
    let state = params
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(LoginFailure::MissingState)?;
    let cookie_name = app.sessions.login_cookie_name(state);
    let login = cookies::get(cookie_header, &cookie_name)
        .and_then(|v| app.sessions.open_login(v))
        .filter(|l| bool::from(l.state.as_bytes().ct_eq(state.as_bytes())))
        .filter(|l| l.rule == rule.name && now < l.created_at.saturating_add(LOGIN_TTL_SECS))
        .ok_or(LoginFailure::UnknownState)?;
    Ok((login, cookie_name))
}

/// Reads the IdP's answer, exchanges the code and validates the ID token: the new session.
async fn sign_in(
    app: &App,
    rule: &Rule,
    params: &CallbackParams,
    login: &LoginState,
    now: u64,
) -> Result<Session, LoginFailure> {
    let code = code_of(params, login)?;
    let provider = app
        .providers
        .get(&rule.provider_key)
        .ok_or_else(|| unavailable("the identity provider is not configured yet", login))?;
    let tokens = exchange(&provider, rule, code, login).await?;
    let id_token = tokens.id_token.clone().ok_or(LoginFailure::NoIdToken)?;
    let claims = provider
        .verify(
            &id_token,
            &Expectation::id_token(&rule.client_id, &login.nonce),
            now,
        )
        .await
        .map_err(|error| match error {
            TokenError::KeysUnavailable => {
                unavailable("the identity provider's keys cannot be fetched right now", login)
            }
            error => LoginFailure::TokenRejected {
                error,
                return_url: login.url.clone(),
            },
        })?;
    let identity =
        Identity::from_claims(&claims, rule.allowed.allow_unverified_email).ok_or(LoginFailure::NoSubject)?;
    Ok(Session {
        id: new_session_id(),
        iss: rule.issuer.clone(),
        client_id: rule.client_id.clone(),
        identity,
        id_token,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        created_at: now,
        created_at_ms: crate::clock::now_ms().max(now.saturating_mul(1000)),
        expires_at: token::expiry(&claims),
        access_expires_at: tokens.expires_in.map(|s| now.saturating_add(s)),
    })
}

fn unavailable(message: &'static str, login: &LoginState) -> LoginFailure {
    LoginFailure::ProviderUnavailable {
        message,
        return_url: login.url.clone(),
    }
}

/// The code, unless the IdP answered with an error.
fn code_of<'a>(params: &'a CallbackParams, login: &LoginState) -> Result<&'a str, LoginFailure> {
    if let Some(error) = &params.error {
        return Err(LoginFailure::Refused {
            error: error.clone(),
            description: params.error_description.clone().unwrap_or_default(),
            return_url: login.url.clone(),
        });
    }
    params
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or(LoginFailure::MissingCode)
}

/// Exchanges `code` at the provider's token endpoint (with the login's PKCE verifier).
async fn exchange(
    provider: &Provider,
    rule: &Rule,
    code: &str,
    login: &LoginState,
) -> Result<Tokens, LoginFailure> {
    let discovered = provider
        .discovered()
        .ok_or_else(|| unavailable("the identity provider cannot be reached right now", login))?;
    let exchange = CodeExchange {
        code,
        redirect_uri: rule.redirect_url.as_str(),
        pkce_verifier: &login.pkce_verifier,
        client: Client {
            id: &rule.client_id,
            secret: rule.client_secret.expose(),
        },
    };
    let call = provider.call_for(&rule.name, crate::metrics::Endpoint::Token);
    exchange_code(provider.http(), &discovered.metadata, &exchange, call)
        .await
        .map_err(|e| LoginFailure::ExchangeFailed {
            status: match &e {
                FetchError::Status { status, .. } => Some(*status),
                _ => None,
            },
            reason: describe_fetch(&e),
            return_url: login.url.clone(),
        })
}

/// Seals the session into cookies, drops the login cookie and sends the browser back.
async fn start_session(
    app: &App,
    rule: &Rule,
    login: &LoginState,
    session: Session,
    cookie_header: &str,
    clear_login: Vec<String>,
    now: u64,
) -> Reply {
    let present: Vec<&str> = cookies::pairs(cookie_header).map(|(n, _)| n).collect();
    let mut set = match app
        .session_store
        .save(&session, rule.cookie_domain.as_deref(), &present, now)
        .await
    {
        Ok(set) => set,
        Err(down) => {
            tracing::warn!(rule = %rule.name, error = %down, "login completed but the session cannot be stored");
            let mut reply = Reply::unavailable_page(
                "the session store is unavailable; please sign in again shortly",
                &login.url,
            );
            reply.add_cookies(clear_login);
            return reply;
        }
    };
    set.extend(clear_login);
    // Who signed in (escaped: claims come from the IdP); never a token.
    let who = &session.identity;
    tracing::info!(
        rule = %rule.name,
        sub = %escape_for_log(&who.sub),
        email = who.email.as_deref().map(|e| tracing::field::display(escape_for_log(e))),
        has_sid = session.sid().is_some(),
        "login completed"
    );
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DefaultAction};
    use crate::rules::RuleSet;

    fn rule() -> std::sync::Arc<Rule> {
        let text = format!(
            "session:\n  secrets: [\"0123456789abcdef0123456789abcdef\"]\nrules:\n{}",
            crate::test_yaml::rule("corp", "")
        );
        let config = Config::parse(&text, "login.yaml", Path::new("/etc"), &|_| None).expect("parses");
        let set = RuleSet::compile(&config.rules, DefaultAction::Allow).expect("rules compile");
        set.all()[0].clone()
    }

    fn cookies(reply: &Reply) -> Vec<&str> {
        reply
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn each_failure_has_its_status_and_clears_the_login_cookie_only_once_it_is_known() {
        let rule = rule();
        let url = || "https://app.example.com/x".to_string();
        let cases = [
            (LoginFailure::MissingState, 400, false),
            (LoginFailure::UnknownState, 400, false),
            (LoginFailure::MissingCode, 400, false),
            (
                LoginFailure::Refused {
                    error: "access_denied".into(),
                    description: "no".into(),
                    return_url: url(),
                },
                403,
                true,
            ),
            (
                LoginFailure::ProviderUnavailable {
                    message: "down",
                    return_url: url(),
                },
                503,
                false,
            ),
            (
                LoginFailure::ExchangeFailed {
                    status: Some(500),
                    reason: "token endpoint answered HTTP 500".into(),
                    return_url: url(),
                },
                502,
                true,
            ),
            (LoginFailure::NoIdToken, 403, true),
            (
                LoginFailure::TokenRejected {
                    error: TokenError::KeysUnavailable,
                    return_url: url(),
                },
                403,
                true,
            ),
            (LoginFailure::NoSubject, 403, true),
        ];
        for (failure, status, clears) in cases {
            let reply = failure.reply(&rule, vec!["login=; Max-Age=0".into()]);
            assert_eq!(reply.status, status, "{failure:?}");
            let expected: Vec<&str> = if clears { vec!["login=; Max-Age=0"] } else { vec![] };
            assert_eq!(cookies(&reply), expected, "{failure:?}");
        }
    }
}
