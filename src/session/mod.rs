//! Browser sessions and pending logins, kept in sealed cookies (the stateless `cookie` store).
//! Every session has a random id (what sign-out revokes, see `revocations`), keeps the IdP's
//! `sid` (in its identity) for back-channel logout, and its refresh token; `Session::refresh_due`
//! says when its tokens call for a refresh (the refresh module does it). The request paths reach
//! sessions only through `store::SessionStore`.

pub mod cookies;
pub mod opened;
pub mod redis_store;
pub mod revocations;
pub mod seal;
pub mod store;

/// Where sessions or revocations are kept (Redis) cannot be asked right now: the request is
/// answered 503, never allowed. The text is for logs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the session store is unavailable: {0}")]
pub struct StoreDown(pub String);

impl From<crate::redis_client::RedisDown> for StoreDown {
    fn from(e: crate::redis_client::RedisDown) -> StoreDown {
        StoreDown(e.0)
    }
}

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

use serde::{Deserialize, Serialize};

use crate::config::{SessionConfig, UpstreamToken};
use crate::identity::Identity;
use crate::oidc::token::SKEW_SECS;
use cookies::CookieAttrs;
use seal::{Purpose, Sealer};

/// How long a started login may take.
pub const LOGIN_TTL_SECS: u64 = 600;
/// Logins pending at once per browser; the oldest is dropped beyond this.
pub const MAX_PENDING_LOGINS: usize = 5;

/// Random bytes in a session id (128 bits).
pub const SESSION_ID_BYTES: usize = 16;

/// A fresh random session id: 16 bytes, base64url (22 characters).
pub fn new_session_id() -> String {
    let mut bytes = [0u8; SESSION_ID_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An authenticated browser session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Random id (see `new_session_id`), what sign-out revokes. Kept across refreshes. A
    /// session sealed before sessions had ids has none and is not accepted (log in again).
    #[serde(default)]
    pub id: String,
    /// Issuer and client the tokens were issued by and for.
    pub iss: String,
    pub client_id: String,
    pub identity: Identity,
    pub id_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds: when the login completed (`max_lifetime` counts from here).
    pub created_at: u64,
    /// Unix milliseconds of the same moment, so that a logout and a login in the same second
    /// are told apart (0 in a session sealed before it was kept; see `created_ms`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_at_ms: u64,
    /// Unix seconds: when the ID token expires.
    pub expires_at: u64,
    /// Unix seconds: when the access token expires (the token response's `expires_in`), when
    /// the IdP said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<u64>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Session {
    /// About how many bytes this session holds (its strings and a fixed part), to bound the
    /// caches that keep sessions by bytes.
    pub fn approx_bytes(&self) -> usize {
        let strings = [
            self.id.len(),
            self.iss.len(),
            self.client_id.len(),
            self.id_token.len(),
            self.access_token.as_ref().map_or(0, String::len),
            self.refresh_token.as_ref().map_or(0, String::len),
            self.identity.sub.len(),
            self.identity.email.as_ref().map_or(0, String::len),
            self.identity.preferred_username.as_ref().map_or(0, String::len),
            self.identity.sid.as_ref().map_or(0, String::len),
        ];
        let groups: usize = self.identity.groups.iter().map(|g| g.len() + 24).sum();
        // 450: the cache's own bookkeeping per entry (moka's is ~370 bytes) and allocator
        // rounding; measured by bench/memory_flood.sh (3.8-3.9 KB per 1 KB-token session).
        strings.iter().sum::<usize>() + groups + std::mem::size_of::<Session>() + 450
    }

    /// When the login completed, in Unix milliseconds (a session sealed without it counts from
    /// the start of its `created_at` second).
    pub fn created_ms(&self) -> u64 {
        if self.created_at_ms == 0 {
            self.created_at.saturating_mul(1000)
        } else {
            self.created_at_ms
        }
    }

    /// The IdP's session id (`sid` of the ID token), when it sent one.
    pub fn sid(&self) -> Option<&str> {
        self.identity.sid.as_deref()
    }

    /// When the session's tokens ran out, if they have by `now`: the ID token's `exp`, or,
    /// when the backend is sent the access token, the access token's expiry, whichever came
    /// first. `None` while the session is current. Clock skew widens token validation, never
    /// this. `max_lifetime` is the store's business.
    pub fn refresh_due(&self, now: u64, upstream: UpstreamToken) -> Option<u64> {
        let access = match upstream {
            UpstreamToken::AccessToken => self.access_expires_at,
            UpstreamToken::IdToken | UpstreamToken::None => None,
        };
        let due = access.map_or(self.expires_at, |a| a.min(self.expires_at));
        (now >= due).then_some(due)
    }

    /// Whether the session was made by a login at `issuer` for `client_id`: the rules with
    /// that issuer and client accept it.
    pub fn is_for(&self, issuer: &str, client_id: &str) -> bool {
        self.iss == issuer && self.client_id == client_id
    }
}

/// The state of one login in flight, kept in its own cookie until the callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    pub rule: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where to send the browser after the login.
    pub url: String,
    pub created_at: u64,
}

/// Reads and writes session and login cookies.
#[derive(Debug)]
pub struct SessionCodec {
    sealer: Sealer,
    pub cookie_name: String,
    secure: bool,
    same_site: crate::config::SameSite,
    pub max_lifetime_secs: u64,
}

impl SessionCodec {
    pub fn new(config: &SessionConfig) -> SessionCodec {
        SessionCodec {
            sealer: Sealer::new(&config.secrets),
            cookie_name: config.cookie_name.clone(),
            secure: config.secure,
            same_site: config.same_site,
            max_lifetime_secs: config.max_lifetime.as_secs(),
        }
    }

    pub fn same_site(&self) -> crate::config::SameSite {
        self.same_site
    }

    pub fn attrs(&self, domain: Option<&str>) -> CookieAttrs {
        CookieAttrs {
            secure: self.secure,
            same_site: self.same_site,
            domain: domain.map(str::to_string),
        }
    }

    /// The session in a `cookie` header, if one opens, has an id and has not passed
    /// `max_lifetime`. Expiry of the ID token is the caller's business (it may be refreshable),
    /// and so is revocation (`store::SessionStore::load` checks both the cookie and the revocations).
    pub fn read_session(&self, cookie_header: &str, now: u64) -> Option<Session> {
        let sealed = cookies::get_chunked(cookie_header, &self.cookie_name)?;
        self.open_session(&sealed).filter(|s| self.is_current(s, now))
    }

    /// The session sealed in a session-cookie value, if it opens and has an id, whatever the
    /// time: the same value always opens to the same session, so `session::opened` may keep
    /// it; `is_current` is asked on every request.
    pub fn open_session(&self, sealed: &str) -> Option<Session> {
        let plain = self.sealer.open(Purpose::Session, sealed)?;
        let session: Session = serde_json::from_slice(&plain).ok()?;
        // Sealed before sessions had ids: it could not be revoked, so it is not accepted.
        (!session.id.is_empty()).then_some(session)
    }

    /// Whether `session` is within `max_lifetime` at `now` (and not made in the future).
    pub fn is_current(&self, session: &Session, now: u64) -> bool {
        now < self.end_of(session) && session.created_at <= now.saturating_add(SKEW_SECS)
    }

    /// `Set-Cookie` lines holding only the sealed session id (the `redis` store), for a session
    /// made at `created_at`.
    pub fn write_session_ref<'a>(
        &self,
        id: &str,
        created_at: u64,
        domain: Option<&str>,
        present: impl Iterator<Item = &'a str>,
        now: u64,
    ) -> Vec<String> {
        let sealed = self.sealer.seal(Purpose::SessionRef, id.as_bytes());
        let remaining = created_at
            .saturating_add(self.max_lifetime_secs)
            .saturating_sub(now);
        let max_age = i64::try_from(remaining).unwrap_or(i64::MAX);
        self.attrs(domain)
            .set_chunked(&self.cookie_name, &sealed, max_age, present)
    }

    /// The session id in a sealed session-cookie value.
    pub fn open_session_ref(&self, sealed: &str) -> Option<String> {
        let plain = self.sealer.open(Purpose::SessionRef, sealed)?;
        String::from_utf8(plain).ok().filter(|id| !id.is_empty())
    }

    /// A session sealed for storage in Redis.
    pub fn seal_stored(&self, session: &Session) -> Option<String> {
        let json = serde_json::to_vec(session).ok()?;
        Some(self.sealer.seal(Purpose::StoredSession, &json))
    }

    /// A session stored in Redis, if it opens, has an id and is within `max_lifetime` at `now`.
    pub fn open_stored(&self, sealed: &str, now: u64) -> Option<Session> {
        let plain = self.sealer.open(Purpose::StoredSession, sealed)?;
        let session: Session = serde_json::from_slice(&plain).ok()?;
        if session.id.is_empty() || now >= self.end_of(&session) {
            return None;
        }
        Some(session)
    }

    /// Unix seconds at which `session` ends whatever its tokens say (`max_lifetime`).
    pub fn end_of(&self, session: &Session) -> u64 {
        session.created_at.saturating_add(self.max_lifetime_secs)
    }

    /// `Set-Cookie` lines storing `session`.
    pub fn write_session<'a>(
        &self,
        session: &Session,
        domain: Option<&str>,
        present: impl Iterator<Item = &'a str>,
        now: u64,
    ) -> Vec<String> {
        let Ok(json) = serde_json::to_vec(session) else {
            return Vec::new();
        };
        let sealed = self.sealer.seal(Purpose::Session, &json);
        let remaining = self.end_of(session).saturating_sub(now);
        let max_age = i64::try_from(remaining).unwrap_or(i64::MAX);
        self.attrs(domain)
            .set_chunked(&self.cookie_name, &sealed, max_age, present)
    }

    /// `Set-Cookie` lines deleting the session.
    pub fn clear_session<'a>(
        &self,
        domain: Option<&str>,
        present: impl Iterator<Item = &'a str>,
    ) -> Vec<String> {
        self.attrs(domain).delete_chunked(&self.cookie_name, present)
    }

    /// The cookie name of a login with this state.
    pub fn login_cookie_name(&self, state: &str) -> String {
        let id: String = state.chars().take(16).collect();
        format!("{}{}", cookies::login_prefix(&self.cookie_name), id)
    }

    pub fn seal_login(&self, login: &LoginState) -> String {
        let json = serde_json::to_vec(login).unwrap_or_default();
        self.sealer.seal(Purpose::Login, &json)
    }

    pub fn open_login(&self, sealed: &str) -> Option<LoginState> {
        let plain = self.sealer.open(Purpose::Login, sealed)?;
        serde_json::from_slice(&plain).ok()
    }

    /// Pending logins in a `cookie` header: (cookie name, state), unexpired ones only.
    pub fn pending_logins<'h>(&self, cookie_header: &'h str, now: u64) -> Vec<(&'h str, Option<LoginState>)> {
        let prefix = cookies::login_prefix(&self.cookie_name);
        cookies::pairs(cookie_header)
            .filter(|(n, _)| n.starts_with(&prefix))
            .take(64)
            .map(|(n, v)| {
                let login = self
                    .open_login(v)
                    .filter(|l| now < l.created_at.saturating_add(LOGIN_TTL_SECS));
                (n, login)
            })
            .collect()
    }
}

/// A codec for unit tests: cookie `_s`, a fixed secret, this `max_lifetime` in seconds.
#[cfg(test)]
pub(crate) fn test_codec(max_lifetime: u64) -> SessionCodec {
    SessionCodec::new(&SessionConfig {
        secrets: vec!["a-session-secret-of-at-least-32-bytes!".into()],
        store: Default::default(),
        redis_url: None,
        redis_cluster: Vec::new(),
        cookie_name: "_s".into(),
        secure: true,
        same_site: Default::default(),
        max_lifetime: std::time::Duration::from_secs(max_lifetime),
        refresh_grace: std::time::Duration::from_secs(300),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(max_lifetime: u64) -> SessionCodec {
        test_codec(max_lifetime)
    }

    fn session(created_at: u64) -> Session {
        Session {
            id: "c2Vzc2lvbi1pZC0xMjM0NQ".into(),
            iss: "https://idp".into(),
            client_id: "gw".into(),
            identity: Identity {
                sub: "u".into(),
                ..Default::default()
            },
            id_token: "t".into(),
            access_token: None,
            refresh_token: Some("r".into()),
            created_at,
            created_at_ms: 0,
            expires_at: created_at + 3600,
            access_expires_at: None,
        }
    }

    #[test]
    fn a_refresh_is_due_when_the_id_token_expires_without_skew() {
        let s = session(1000);
        for upstream in [
            UpstreamToken::IdToken,
            UpstreamToken::AccessToken,
            UpstreamToken::None,
        ] {
            assert_eq!(s.refresh_due(4599, upstream), None);
            assert_eq!(s.refresh_due(4600, upstream), Some(4600));
            assert_eq!(s.refresh_due(9999, upstream), Some(4600));
        }
    }

    #[test]
    fn the_access_tokens_expiry_counts_only_when_the_backend_gets_it() {
        let mut s = session(1000);
        s.access_expires_at = Some(1300);
        assert_eq!(s.refresh_due(1299, UpstreamToken::AccessToken), None);
        assert_eq!(s.refresh_due(1300, UpstreamToken::AccessToken), Some(1300));
        assert_eq!(s.refresh_due(1300, UpstreamToken::IdToken), None);
        assert_eq!(s.refresh_due(1300, UpstreamToken::None), None);
        // An access token outliving the ID token: the ID token decides.
        s.access_expires_at = Some(9000);
        assert_eq!(s.refresh_due(4600, UpstreamToken::AccessToken), Some(4600));
    }

    fn header_of(lines: &[String]) -> String {
        lines
            .iter()
            .map(|l| l.split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn session_round_trips_through_its_cookie() {
        let c = codec(3600);
        let lines = c.write_session(&session(1000), Some(".example.com"), std::iter::empty(), 1000);
        assert_eq!(c.read_session(&header_of(&lines), 1001), Some(session(1000)));
    }

    #[test]
    fn max_lifetime_ends_a_session_whatever_its_tokens_say() {
        let c = codec(600);
        let lines = c.write_session(&session(1000), None, std::iter::empty(), 1000);
        let h = header_of(&lines);
        assert!(c.read_session(&h, 1599).is_some());
        assert!(c.read_session(&h, 1600).is_none());
        assert!(lines[0].contains("Max-Age=600"));
    }

    #[test]
    fn sessions_get_random_ids_of_128_bits() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 16);
    }

    #[test]
    fn a_session_sealed_without_an_id_is_not_accepted() {
        // What a session sealed before ids existed looks like: the same JSON without `id`.
        let c = codec(3600);
        let mut json = serde_json::to_value(session(1000)).unwrap();
        json.as_object_mut().unwrap().remove("id");
        let sealed = c.sealer.seal(Purpose::Session, json.to_string().as_bytes());
        assert!(c.read_session(&format!("_s={sealed}"), 1001).is_none());
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        // A max_lifetime near the end of time keeps the cookie (Max-Age stays positive).
        let c = codec(u64::MAX);
        let mut s = session(1000);
        s.expires_at = u64::MAX;
        let lines = c.write_session(&s, None, std::iter::empty(), 1000);
        assert!(!lines[0].contains("Max-Age=0"), "{}", lines[0]);
        assert!(
            lines[0].contains(&format!("Max-Age={}", i64::MAX)),
            "{}",
            lines[0]
        );
        assert_eq!(c.read_session(&header_of(&lines), u64::MAX - 1), Some(s));
    }

    #[test]
    fn a_login_state_cannot_be_used_as_a_session() {
        let c = codec(600);
        let login = LoginState {
            rule: "r".into(),
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            url: "/".into(),
            created_at: 1,
        };
        let sealed = c.seal_login(&login);
        assert!(c.read_session(&format!("_s={sealed}"), 2).is_none());
        assert_eq!(c.open_login(&sealed), Some(login));
    }
}
