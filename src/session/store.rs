//! Where sessions live: the one seam between the request paths (`authorize`, `login`,
//! `refresh`, `session_endpoints`) and how sessions are kept. Those call only
//! [`SessionStore`]: load the session in a `cookie` header, save one (its `Set-Cookie` lines),
//! clear it, revoke it (or every session of an IdP `sid` / `sub`, for back-channel logout),
//! take a session's refresh lock and remember what its refresh came to, and remember which
//! logout tokens were used. A new kind of store (Redis: the cookie holds only a sealed session
//! id) is a new variant here, and nothing above this module changes.
//!
//! `SessionStore` is an enum over the implementations, not a trait object: its calls are
//! `async`, and an `async fn` in a trait is not object-safe (`dyn SessionStore` would need the
//! `async-trait` crate, a boxed future per call on the hot path, and a new dependency). The
//! enum dispatches statically and costs one `match`.
//!
//! [`CookieStore`] is today's stateless store: the whole session sealed in its cookie
//! (`SessionCodec`), plus this replica's bounded [`Revocations`]. Revoking an IdP `sid` or
//! `sub` records it (keyed apart from session ids, scoped by issuer) until `max_lifetime` has
//! run out for every session made before it; `load` refuses a session of that `sid`/`sub`
//! created at or before the revocation (a login in the same second is refused too: log in
//! again). The refresh lock is per session id and per replica (a bounded map of mutexes).
//!
//! The refresh memory: a refresh is remembered under the session id and the refresh token it
//! used, for [`REFRESH_MEMORY`] (an IdP that could not be reached, for [`RETRY_AFTER`]). A
//! request that waited for the lock, or that still carries the cookie from before the refresh
//! (its browser had not seen the new one yet), gets that result instead of a second refresh,
//! which an IdP that rotates refresh tokens would answer with `invalid_grant`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::policy::EvictionPolicy;
use moka::Expiry;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::cookies::RequestCookies;
use super::opened::OpenedSessions;
pub use super::redis_store::RedisStore;
use super::redis_store::SharedLock;
use super::revocations::Revocations;
use super::{Session, SessionCodec, StoreDown};
use crate::clock::now_ms;

/// Session ids whose refresh lock is kept at once, per replica.
pub const MAX_REFRESH_LOCKS: u64 = 10_000;
/// A refresh lock nobody asked for in this long is dropped.
pub const REFRESH_LOCK_IDLE: Duration = Duration::from_secs(120);
/// How long a refresh's result is remembered for the cookie it replaced.
pub const REFRESH_MEMORY: Duration = Duration::from_secs(60);
/// How long an IdP that could not be reached at refresh is not asked again for that session
/// (requests meanwhile are answered from `refresh_grace` at once, not after a timeout).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Refresh results remembered at once, per replica.
pub const MAX_REFRESH_MEMORY: u64 = 10_000;
/// Logout-token ids (`jti`) remembered at once, per replica, against replay.
pub const MAX_LOGOUT_TOKENS: u64 = 100_000;

/// What a session's refresh came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshResult {
    /// New tokens: the refreshed session (same id, same `created_at`).
    Renewed(Arc<Session>),
    /// The IdP refused (`invalid_grant`, or tokens that did not validate): the session is over.
    Ended,
    /// The IdP could not be reached or answered 5xx.
    Unavailable,
}

/// Where sessions are kept (see the module comment for why this is an enum).
#[derive(Debug)]
pub enum SessionStore {
    /// The whole session in a sealed cookie.
    Cookie(CookieStore),
    /// The session in Redis; the cookie holds its sealed id.
    Redis(RedisStore),
}

/// Held while a session's tokens are refreshed: one refresh at a time per session. Dropping
/// it lets the next refresh in.
pub struct RefreshGuard {
    _local: OwnedMutexGuard<()>,
    /// With the redis store, the lock every replica sees (released on drop).
    _shared: Option<SharedLock>,
}

impl SessionStore {
    /// The session in a `cookie` header: one that opens, has an id, is within `max_lifetime`
    /// and was not revoked (neither itself nor its `sid`/`sub`). Expiry of its ID token is the
    /// caller's business (refresh). `Err` when the store (Redis) cannot be asked: answer 503.
    pub async fn load(&self, cookie_header: &str, now: u64) -> Result<Option<Arc<Session>>, StoreDown> {
        let cookies = RequestCookies::parse(cookie_header, &self.codec().cookie_name);
        self.load_sealed(cookies.session.as_deref(), now).await
    }

    /// As `load`, given the session cookie's value (`RequestCookies::session`) when the
    /// caller has already read the header.
    pub async fn load_sealed(
        &self,
        sealed: Option<&str>,
        now: u64,
    ) -> Result<Option<Arc<Session>>, StoreDown> {
        match self {
            SessionStore::Cookie(s) => s.load(sealed, now).await,
            SessionStore::Redis(s) => s.load(sealed, now).await,
        }
    }

    fn codec(&self) -> &SessionCodec {
        match self {
            SessionStore::Cookie(s) => &s.codec,
            SessionStore::Redis(s) => s.codec(),
        }
    }

    /// Stores `session` and returns the `Set-Cookie` lines for it (`present`: the cookie names
    /// the request carried, so stale chunks are deleted).
    pub async fn save(
        &self,
        session: &Session,
        domain: Option<&str>,
        present: &[&str],
        now: u64,
    ) -> Result<Vec<String>, StoreDown> {
        match self {
            SessionStore::Cookie(s) => Ok(s.save(session, domain, present, now)),
            SessionStore::Redis(s) => s.save(session, domain, present, now).await,
        }
    }

    /// Whether a new session could be stored now (the redis store asks Redis when the last
    /// command failed); the cookie store always can.
    pub async fn ready(&self) -> Result<(), StoreDown> {
        match self {
            SessionStore::Cookie(_) => Ok(()),
            SessionStore::Redis(s) => s.ready().await,
        }
    }

    /// `Set-Cookie` lines deleting the session's cookies.
    pub fn clear(&self, domain: Option<&str>, present: &[&str]) -> Vec<String> {
        self.codec().clear_session(domain, present.iter().copied())
    }

    /// Revokes `session` until its `max_lifetime` runs out, so no copy of its cookie works.
    pub async fn revoke(&self, session: &Session) -> Result<(), StoreDown> {
        match self {
            SessionStore::Cookie(s) => s.revoke(session).await,
            SessionStore::Redis(s) => s.delete(session).await,
        }
    }

    /// Ends every session made before now for the IdP session `sid` at `issuer` (back-channel
    /// logout), and, when the logout token also names the user `sub`, that user's sessions made
    /// from ID tokens without a `sid` (which no `sid` can name). Returns how many sessions were
    /// ended when the store can count them; the cookie store holds no sessions, so it returns
    /// `None` (its sessions are refused all the same).
    pub async fn revoke_sid(
        &self,
        issuer: &str,
        sid: &str,
        sub: Option<&str>,
    ) -> Result<Option<u64>, StoreDown> {
        match self {
            SessionStore::Cookie(s) => {
                s.revoke_principal(Principal::Sid, issuer, sid).await?;
                if let Some(sub) = sub {
                    s.revoke_principal(Principal::SubWithoutSid, issuer, sub).await?;
                }
                Ok(None)
            }
            SessionStore::Redis(s) => s.end_sid(issuer, sid, sub).await.map(Some),
        }
    }

    /// Ends every session made before now for the user `sub` at `issuer` (back-channel logout
    /// without a `sid`). Returns a count as `revoke_sid` does.
    pub async fn revoke_sub(&self, issuer: &str, sub: &str) -> Result<Option<u64>, StoreDown> {
        match self {
            SessionStore::Cookie(s) => {
                s.revoke_principal(Principal::Sub, issuer, sub).await?;
                Ok(None)
            }
            SessionStore::Redis(s) => s.end_sub(issuer, sub).await.map(Some),
        }
    }

    /// Waits for, then holds, the refresh lock of `session_id`: one refresh at a time per
    /// session (per replica for the cookie store; across replicas for the redis store).
    pub async fn refresh_lock(&self, session_id: &str) -> Result<RefreshGuard, StoreDown> {
        match self {
            SessionStore::Cookie(s) => Ok(RefreshGuard {
                _local: s.locks.lock(session_id).await,
                _shared: None,
            }),
            SessionStore::Redis(s) => {
                let local = s.locks().lock(session_id).await;
                let shared = s.shared_lock(session_id).await?;
                Ok(RefreshGuard {
                    _local: local,
                    _shared: Some(shared),
                })
            }
        }
    }

    /// What the refresh of `session` (this id, these tokens) came to, if one happened within
    /// `REFRESH_MEMORY` (`RETRY_AFTER` for an unreachable IdP). With the redis store, the
    /// stored session itself says: newer tokens are the refresh's result, and no session
    /// means it ended.
    pub async fn recent_refresh(&self, session: &Session) -> Result<Option<RefreshResult>, StoreDown> {
        match self {
            SessionStore::Cookie(s) => Ok(s.recent.recall(session).await),
            SessionStore::Redis(s) => s.recent_refresh(session).await,
        }
    }

    /// Remembers what the refresh of `session` came to (with the redis store: stores the
    /// refreshed session, or deletes an ended one).
    pub async fn remember_refresh(&self, session: &Session, result: RefreshResult) -> Result<(), StoreDown> {
        match self {
            SessionStore::Cookie(s) => {
                s.recent.remember(session, result).await;
                Ok(())
            }
            SessionStore::Redis(s) => s.remember_refresh(session, result).await,
        }
    }

    /// Whether this is the first use of the logout token `jti` from `issuer`: it is remembered
    /// until `until` (unix seconds), after which the token is refused anyway.
    pub async fn first_use_of_logout_token(
        &self,
        issuer: &str,
        jti: &str,
        until: u64,
    ) -> Result<bool, StoreDown> {
        let used = match self {
            SessionStore::Cookie(s) => &s.logout_tokens,
            SessionStore::Redis(s) => s.logout_tokens(),
        };
        used.first_time(&used_token_key(issuer, jti), until.saturating_mul(1000))
            .await
    }
}

/// What a back-channel logout names.
#[derive(Debug, Clone, Copy)]
enum Principal {
    /// One IdP session.
    Sid,
    /// Every session of a user.
    Sub,
    /// The sessions of a user that have no IdP `sid`.
    SubWithoutSid,
}

/// The revocation key of an IdP `sid` or `sub` at `issuer`. Session ids are base64url, so a
/// key with a newline is never one.
fn principal_key(principal: Principal, issuer: &str, value: &str) -> String {
    let kind = match principal {
        Principal::Sid => "sid",
        Principal::Sub => "sub",
        Principal::SubWithoutSid => "sub-without-sid",
    };
    format!("{kind}\n{issuer}\n{value}")
}

/// The key of a used logout token (apart from session ids and principals: it starts `jti`).
fn used_token_key(issuer: &str, jti: &str) -> String {
    format!("jti\n{issuer}\n{jti}")
}

/// Sessions in sealed cookies; revocations in this replica's memory, or in Redis when
/// `session.redis_url` is set (then every replica honours them).
#[derive(Debug)]
pub struct CookieStore {
    codec: Arc<SessionCodec>,
    revocations: Revocations,
    /// Set once a `sid` or `sub` was revoked here: until then, with revocations in memory,
    /// `load` skips those look-ups.
    principals_revoked: AtomicBool,
    locks: RefreshLocks,
    recent: RefreshMemory,
    /// Logout-token ids already used.
    logout_tokens: Revocations,
    /// Cookie values already opened (`session::opened`).
    opened: OpenedSessions,
}

impl CookieStore {
    /// Revocations and used logout tokens in this replica's memory.
    pub fn new(codec: Arc<SessionCodec>, revocations: Revocations) -> CookieStore {
        CookieStore::with_logout_tokens(codec, revocations, Revocations::in_memory(MAX_LOGOUT_TOKENS))
    }

    /// With the given sets (in Redis, to share them across replicas).
    pub fn with_logout_tokens(
        codec: Arc<SessionCodec>,
        revocations: Revocations,
        logout_tokens: Revocations,
    ) -> CookieStore {
        CookieStore {
            codec,
            revocations,
            principals_revoked: AtomicBool::new(false),
            locks: RefreshLocks::new(MAX_REFRESH_LOCKS),
            recent: RefreshMemory::new(MAX_REFRESH_MEMORY),
            logout_tokens,
            opened: OpenedSessions::new(crate::config::DEFAULT_SESSIONS_CACHE),
        }
    }

    /// Keeps at most `bytes` of opened session cookies (`caches.sessions`).
    pub fn with_opened_capacity(mut self, bytes: u64) -> CookieStore {
        self.opened = OpenedSessions::new(bytes);
        self
    }

    async fn load(&self, sealed: Option<&str>, now: u64) -> Result<Option<Arc<Session>>, StoreDown> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let opened = self
            .opened
            .get_or_open(sealed, |s| self.codec.open_session(s))
            .await;
        let Some(session) = opened.filter(|s| self.codec.is_current(s, now)) else {
            return Ok(None);
        };
        // The session's id, then (when any may be revoked) its `sub` and its `sid` (or the
        // "sub without sid" key): one round trip with Redis.
        let mut keys = vec![session.id.clone()];
        let principals = self.revocations.is_shared() || self.principals_revoked.load(Ordering::Relaxed);
        if principals {
            keys.push(principal_key(Principal::Sub, &session.iss, &session.identity.sub));
            keys.push(match session.sid() {
                Some(sid) => principal_key(Principal::Sid, &session.iss, sid),
                None => principal_key(Principal::SubWithoutSid, &session.iss, &session.identity.sub),
            });
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let untils = self.revocations.revoked_until_each(&refs).await?;
        if untils.first().is_some_and(Option::is_some) {
            return Ok(None);
        }
        // A principal revoked until `u` (milliseconds) was revoked at `u - max_lifetime`: the
        // session is refused when it was made at or before that.
        let end_ms = session
            .created_ms()
            .saturating_add(self.codec.max_lifetime_secs.saturating_mul(1000));
        if untils.iter().skip(1).flatten().any(|until| end_ms <= *until) {
            return Ok(None);
        }
        Ok(Some(session))
    }

    fn save(&self, session: &Session, domain: Option<&str>, present: &[&str], now: u64) -> Vec<String> {
        self.codec
            .write_session(session, domain, present.iter().copied(), now)
    }

    async fn revoke(&self, session: &Session) -> Result<(), StoreDown> {
        self.revocations
            .revoke(&session.id, self.codec.end_of(session).saturating_mul(1000))
            .await
    }

    async fn revoke_principal(
        &self,
        principal: Principal,
        issuer: &str,
        value: &str,
    ) -> Result<(), StoreDown> {
        if value.is_empty() {
            return Ok(());
        }
        let until = now_ms().saturating_add(self.codec.max_lifetime_secs.saturating_mul(1000));
        self.principals_revoked.store(true, Ordering::Relaxed);
        self.revocations
            .revoke(&principal_key(principal, issuer, value), until)
            .await
    }
}

/// One mutex per session id, bounded: an id idle for `REFRESH_LOCK_IDLE` is dropped, and beyond
/// the capacity the least recently used (LRU: a new id is always admitted). An id evicted while
/// its lock is held (more than `MAX_REFRESH_LOCKS` sessions refreshing at once on one replica)
/// could let a second refresh of it in; with an IdP that rotates refresh tokens that one gets
/// `invalid_grant`, but the refreshed session remembered first is kept (`RefreshMemory`).
pub(super) struct RefreshLocks(Cache<String, Arc<Mutex<()>>>);

impl std::fmt::Debug for RefreshLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefreshLocks({} ids)", self.0.entry_count())
    }
}

impl RefreshLocks {
    pub(super) fn new(capacity: u64) -> RefreshLocks {
        RefreshLocks(
            Cache::builder()
                .max_capacity(capacity)
                .eviction_policy(EvictionPolicy::lru())
                .time_to_idle(REFRESH_LOCK_IDLE)
                .build(),
        )
    }

    pub(super) async fn lock(&self, id: &str) -> OwnedMutexGuard<()> {
        let mutex = self
            .0
            .get_with(id.to_string(), async { Arc::new(Mutex::new(())) })
            .await;
        mutex.lock_owned().await
    }
}

/// Refresh results by sha256(session id, refresh token, ID token, access token): one key per
/// state of a session, so a refreshed session (new tokens) is a new key even when the IdP kept
/// the refresh token. Each is kept for as long as its kind allows (`KeepFor`); beyond the
/// capacity the least recently used goes first.
pub(super) struct RefreshMemory(Cache<[u8; 32], RefreshResult>);

impl std::fmt::Debug for RefreshMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefreshMemory({} results)", self.0.entry_count())
    }
}

struct KeepFor;

impl KeepFor {
    fn keep(result: &RefreshResult) -> Duration {
        match result {
            RefreshResult::Renewed(_) | RefreshResult::Ended => REFRESH_MEMORY,
            RefreshResult::Unavailable => RETRY_AFTER,
        }
    }
}

impl Expiry<[u8; 32], RefreshResult> for KeepFor {
    fn expire_after_create(&self, _k: &[u8; 32], v: &RefreshResult, _at: Instant) -> Option<Duration> {
        Some(Self::keep(v))
    }

    fn expire_after_update(
        &self,
        _k: &[u8; 32],
        v: &RefreshResult,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(Self::keep(v))
    }
}

impl RefreshMemory {
    pub(super) fn new(capacity: u64) -> RefreshMemory {
        RefreshMemory(
            Cache::builder()
                .max_capacity(capacity)
                .expire_after(KeepFor)
                .build(),
        )
    }

    /// The key of a session's refresh: its id and tokens. A session without a refresh token is
    /// never refreshed, so it has none.
    fn key(session: &Session) -> Option<[u8; 32]> {
        let token = session.refresh_token.as_deref()?;
        let mut h = Sha256::new();
        for part in [
            session.id.as_str(),
            token,
            session.id_token.as_str(),
            session.access_token.as_deref().unwrap_or(""),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        Some(h.finalize().into())
    }

    pub(super) async fn recall(&self, session: &Session) -> Option<RefreshResult> {
        self.0.get(&Self::key(session)?).await
    }

    /// Remembers `result`, unless a refreshed session is already remembered for this key (a
    /// second refresh, after the lock was evicted, must not take the first one's result away
    /// from the requests still carrying the old cookie).
    pub(super) async fn remember(&self, session: &Session, result: RefreshResult) {
        if let Some(k) = Self::key(session) {
            self.0
                .entry(k)
                .and_upsert_with(|old| async move {
                    match old.map(|e| e.into_value()) {
                        Some(kept @ RefreshResult::Renewed(_)) => kept,
                        _ => result,
                    }
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now;
    use crate::identity::Identity;

    fn store() -> SessionStore {
        let codec = crate::session::test_codec(3600);
        SessionStore::Cookie(CookieStore::new(Arc::new(codec), Revocations::default()))
    }

    fn session(id: &str, sub: &str, sid: Option<&str>, created_at: u64) -> Session {
        Session {
            id: id.into(),
            iss: "https://idp".into(),
            client_id: "gw".into(),
            identity: Identity {
                sub: sub.into(),
                sid: sid.map(str::to_string),
                ..Default::default()
            },
            id_token: "t".into(),
            access_token: None,
            refresh_token: None,
            created_at,
            created_at_ms: 0,
            expires_at: created_at + 600,
            access_expires_at: None,
        }
    }

    async fn header(store: &SessionStore, s: &Session) -> String {
        store
            .save(s, None, &[], now())
            .await
            .unwrap()
            .iter()
            .map(|l| l.split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The opened-session cache keeps what a cookie opens to, never whether it may be used: a
    /// cookie already opened (and kept) is refused as soon as its IdP session is logged out
    /// or its `max_lifetime` has passed.
    #[tokio::test]
    async fn a_kept_session_is_still_refused_when_revoked_or_past_its_lifetime() {
        let st = store();
        let t = now();
        let a = session("aWQtYQ", "u", Some("sid-a"), t - 10);
        let b = session("aWQtYg", "v", Some("sid-b"), t - 10);
        let (ha, hb) = (header(&st, &a).await, header(&st, &b).await);
        for _ in 0..3 {
            assert!(st.load(&ha, t).await.unwrap().is_some());
            assert!(st.load(&hb, t).await.unwrap().is_some());
        }
        let SessionStore::Cookie(cookie_store) = &st else {
            unreachable!("store() is a cookie store")
        };
        cookie_store.opened.run_pending_tasks().await;
        assert_eq!(cookie_store.opened.usage().0, 2, "both cookies are kept");

        st.revoke_sid("https://idp", "sid-a", None).await.unwrap();
        assert_eq!(
            st.load(&ha, t).await.unwrap(),
            None,
            "a kept cookie of a logged-out sid"
        );
        assert!(st.load(&hb, t).await.unwrap().is_some());
        // test_codec(3600): max_lifetime is one hour from created_at.
        assert_eq!(
            st.load(&hb, t - 10 + 3600).await.unwrap(),
            None,
            "past max_lifetime"
        );
        assert!(st.load(&hb, t - 10 + 3599).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_saved_session_loads_until_it_is_revoked() {
        let st = store();
        let t = now();
        let s = session("aWQtMQ", "u", Some("sid-1"), t - 10);
        let h = header(&st, &s).await;
        assert_eq!(st.load(&h, t).await.unwrap().as_deref().cloned(), Some(s.clone()));
        st.revoke(&s).await.unwrap();
        assert_eq!(st.load(&h, t).await.unwrap().as_deref().cloned(), None);
        let clear = st.clear(Some(".example.com"), &["_s"]);
        assert!(clear[0].starts_with("_s=;"), "{clear:?}");
    }

    #[tokio::test]
    async fn revoking_a_sid_refuses_its_sessions_made_before() {
        let st = store();
        let t = now();
        let a = session("aWQtMQ", "u", Some("sid-1"), t - 10);
        let b = session("aWQtMg", "u", Some("sid-2"), t - 10);
        let (ha, hb) = (header(&st, &a).await, header(&st, &b).await);
        assert_eq!(st.revoke_sid("https://idp", "sid-1", None).await.unwrap(), None);
        assert_eq!(st.load(&ha, t).await.unwrap().as_deref().cloned(), None);
        assert_eq!(st.load(&hb, t).await.unwrap().as_deref().cloned(), Some(b));
        // The same sid at another issuer is another IdP session.
        let mut other = session("aWQtMw", "u", Some("sid-1"), t - 10);
        other.iss = "https://other".into();
        let ho = header(&st, &other).await;
        assert_eq!(st.load(&ho, t).await.unwrap().as_deref().cloned(), Some(other));
        // A login after the revocation is a new session.
        let later = session("aWQtNA", "u", Some("sid-1"), t + 2);
        let hl = header(&st, &later).await;
        assert_eq!(
            st.load(&hl, t + 3).await.unwrap().as_deref().cloned(),
            Some(later)
        );
    }

    #[tokio::test]
    async fn revoking_a_sub_refuses_every_session_of_the_user() {
        let st = store();
        let t = now();
        let a = session("aWQtMQ", "u", Some("sid-1"), t - 10);
        let b = session("aWQtMg", "u", None, t - 20);
        let c = session("aWQtMw", "v", None, t - 20);
        let (ha, hb, hc) = (
            header(&st, &a).await,
            header(&st, &b).await,
            header(&st, &c).await,
        );
        assert_eq!(st.revoke_sub("https://idp", "u").await.unwrap(), None);
        assert_eq!(st.load(&ha, t).await.unwrap().as_deref().cloned(), None);
        assert_eq!(st.load(&hb, t).await.unwrap().as_deref().cloned(), None);
        assert_eq!(st.load(&hc, t).await.unwrap().as_deref().cloned(), Some(c));
        // Nothing to revoke: nothing changes.
        st.revoke_sub("https://idp", "").await.unwrap();
        st.revoke_sid("https://idp", "", None).await.unwrap();
    }

    #[tokio::test]
    async fn a_sid_logout_naming_the_user_also_ends_the_users_sessions_without_a_sid() {
        let st = store();
        let t = now();
        let with_sid = session("aWQtMQ", "u", Some("sid-1"), t - 10);
        let other_sid = session("aWQtMg", "u", Some("sid-2"), t - 10);
        let without = session("aWQtMw", "u", None, t - 10);
        let stranger = session("aWQtNA", "v", None, t - 10);
        let h: Vec<String> = headers(&st, &[&with_sid, &other_sid, &without, &stranger]).await;
        st.revoke_sid("https://idp", "sid-1", Some("u")).await.unwrap();
        assert_eq!(st.load(&h[0], t).await.unwrap().as_deref().cloned(), None);
        assert_eq!(
            st.load(&h[1], t).await.unwrap().as_deref().cloned(),
            Some(other_sid),
            "another IdP session goes on"
        );
        assert_eq!(
            st.load(&h[2], t).await.unwrap().as_deref().cloned(),
            None,
            "no sid to name it by: the sub does"
        );
        assert_eq!(
            st.load(&h[3], t).await.unwrap().as_deref().cloned(),
            Some(stranger)
        );
    }

    async fn headers(st: &SessionStore, sessions: &[&Session]) -> Vec<String> {
        let mut out = Vec::new();
        for s in sessions {
            out.push(header(st, s).await);
        }
        out
    }

    #[tokio::test]
    async fn a_login_right_after_a_logout_is_a_new_session() {
        // Same second, later millisecond: the new login is not refused.
        let st = store();
        let t = now();
        let before = session("aWQtMQ", "u", None, t);
        let h_before = header(&st, &before).await;
        st.revoke_sub("https://idp", "u").await.unwrap();
        let mut after = session("aWQtMg", "u", None, t);
        after.created_at_ms = now_ms() + 1;
        let h_after = header(&st, &after).await;
        assert_eq!(st.load(&h_before, t).await.unwrap().as_deref().cloned(), None);
        assert_eq!(
            st.load(&h_after, t).await.unwrap().as_deref().cloned(),
            Some(after)
        );
    }

    #[tokio::test]
    async fn a_refresh_is_remembered_for_the_cookie_it_replaced() {
        let st = store();
        let t = now();
        let mut old = session("aWQtMQ", "u", None, t - 10);
        // No refresh token: nothing to remember.
        st.remember_refresh(&old, RefreshResult::Ended).await.unwrap();
        assert_eq!(st.recent_refresh(&old).await.unwrap(), None);
        old.refresh_token = Some("rt-1".into());
        let mut new = old.clone();
        new.refresh_token = Some("rt-2".into());
        new.expires_at = t + 600;
        assert_eq!(st.recent_refresh(&old).await.unwrap(), None);
        st.remember_refresh(&old, RefreshResult::Renewed(Arc::new(new.clone())))
            .await
            .unwrap();
        assert_eq!(
            st.recent_refresh(&old).await.unwrap(),
            Some(RefreshResult::Renewed(Arc::new(new.clone())))
        );
        // The new cookie (another refresh token) has no refresh behind it.
        assert_eq!(st.recent_refresh(&new).await.unwrap(), None);
        // Another session with the same refresh token text is another key.
        let mut other = old.clone();
        other.id = "aWQtMg".into();
        assert_eq!(st.recent_refresh(&other).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_logout_token_is_used_once() {
        let st = store();
        let until = now() + 600;
        assert!(st
            .first_use_of_logout_token("https://idp", "j-1", until)
            .await
            .unwrap());
        assert!(!st
            .first_use_of_logout_token("https://idp", "j-1", until)
            .await
            .unwrap());
        // Another issuer's jti is its own.
        assert!(st
            .first_use_of_logout_token("https://other", "j-1", until)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn one_refresh_at_a_time_per_session() {
        let st = Arc::new(store());
        let guard = st.refresh_lock("aWQtMQ").await.unwrap();
        // Another session refreshes meanwhile.
        drop(st.refresh_lock("aWQtMg").await.unwrap());
        let waiting = {
            let st = st.clone();
            tokio::spawn(async move {
                let _g = st.refresh_lock("aWQtMQ").await.unwrap();
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}
