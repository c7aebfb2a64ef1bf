//! The `redis` session store: the cookie holds only the sealed session id, and the session
//! lives in Redis, sealed with the session key (a dump of Redis reveals no token), under a key
//! that expires with `max_lifetime`. Any replica serves any session.
//!
//! Keys (all under `oidc-authz:`):
//! - `s:{id}`: the sealed session; expires when the session's `max_lifetime` does.
//! - `sid:{h}` and `sub:{h}` (`h` = SHA-256 of issuer and `sid`/`sub`): sets of session ids, so
//!   that a back-channel logout finds every session it ends; they expire with the longest
//!   session they could name.
//! - `lock:{id}`: a session's refresh lock, with a lease renewed while the refresh runs (a lock
//!   that lapses mid-refresh would let a second replica spend the rotated refresh token).
//! - `revoked:{h}` (via `Revocations`): used logout-token ids.
//!
//! A session read from Redis is kept locally for [`CACHE_TTL`] (half a second), so a busy session
//! is not read and unsealed again on every request; a sign-out, back-channel logout or refresh
//! on another replica is therefore seen within that time, inside the design's 1 s bound (this
//! replica's own writes drop its copy at once). A kept copy is served only once Redis has
//! answered a PING sent after the request arrived (`RedisClient::confirm_up`, one PING shared
//! by all the requests waiting at that moment), so a Redis that stops answering never lets a
//! request through on a remembered session. In a Cluster nothing is kept: a PING to one node
//! says nothing about the node holding the session. Every Redis call is bounded
//! (`redis_client::COMMAND_TIMEOUT`); Redis down is `StoreDown`, which the request paths answer
//! with 503, never an allow.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::revocations::Revocations;
use super::store::{RefreshLocks, RefreshMemory, RefreshResult, MAX_REFRESH_LOCKS, MAX_REFRESH_MEMORY};
use super::{Session, SessionCodec, StoreDown};
use crate::clock::now_ms;
use crate::redis_client::RedisClient;

/// A refresh lock's lease; renewed every third of it while the refresh runs.
const LOCK_LEASE: Duration = Duration::from_millis(3000);
/// How often a waiter asks for a refresh lock another replica holds.
const LOCK_POLL: Duration = Duration::from_millis(25);
/// How long a session read from Redis may be served without reading it again (see the module
/// comment): well inside the 1 s in which another replica's change must hold everywhere.
pub const CACHE_TTL: Duration = Duration::from_millis(500);
/// Sessions kept locally at once (about 2 KB each); more active sessions than this within
/// [`CACHE_TTL`] are simply read from Redis.
pub const CACHE_CAPACITY: u64 = 10_000;

/// Deletes the lock only if it is still ours.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Extends the lock's lease only if it is still ours.
const RENEW: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

fn hashed(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn session_key(id: &str) -> String {
    format!("oidc-authz:s:{id}")
}

fn sid_index(issuer: &str, sid: &str) -> String {
    format!("oidc-authz:sid:{}", hashed(&[issuer, sid]))
}

fn sub_index(issuer: &str, sub: &str) -> String {
    format!("oidc-authz:sub:{}", hashed(&[issuer, sub]))
}

fn lock_key(id: &str) -> String {
    format!("oidc-authz:lock:{id}")
}

/// Sessions in Redis.
pub struct RedisStore {
    codec: Arc<SessionCodec>,
    redis: Arc<RedisClient>,
    locks: RefreshLocks,
    /// Only for "the IdP could not be reached" (the other results are the stored session).
    unavailable: RefreshMemory,
    logout_tokens: Revocations,
    /// Sessions read from Redis in the last [`CACHE_TTL`], by id; `None` in a Cluster.
    recent: Option<moka::future::Cache<String, Arc<Session>>>,
    /// Session ids by the sealed cookie value that names them (a fact that never changes, so
    /// a busy cookie is not opened again on every request). Compared byte for byte on a hit,
    /// as in `session::opened`; the seeded hash only picks the slot.
    ids: moka::future::Cache<Arc<str>, Arc<str>, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisStore({})", self.redis.describe())
    }
}

/// A refresh lock held in Redis; its lease is renewed until it is dropped, then released.
pub struct SharedLock {
    renew: tokio::task::JoinHandle<()>,
    release: Option<(Arc<RedisClient>, String, String)>,
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        self.renew.abort();
        if let Some((redis, key, token)) = self.release.take() {
            tokio::spawn(async move {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RELEASE).arg(1).arg(&key).arg(&token);
                if let Err(e) = redis.query::<i64>(&cmd).await {
                    // The lease runs out by itself.
                    tracing::debug!(error = %e, "refresh lock not released");
                }
            });
        }
    }
}

impl RedisStore {
    pub fn new(codec: Arc<SessionCodec>, redis: Arc<RedisClient>) -> RedisStore {
        RedisStore {
            codec,
            logout_tokens: Revocations::in_redis(redis.clone()),
            locks: RefreshLocks::new(MAX_REFRESH_LOCKS),
            unavailable: RefreshMemory::new(MAX_REFRESH_MEMORY),
            ids: moka::future::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            recent: (!redis.is_cluster()).then(|| {
                moka::future::Cache::builder()
                    .max_capacity(CACHE_CAPACITY)
                    .time_to_live(CACHE_TTL)
                    .build()
            }),
            redis,
        }
    }

    pub(super) fn codec(&self) -> &SessionCodec {
        &self.codec
    }

    pub(super) fn locks(&self) -> &RefreshLocks {
        &self.locks
    }

    pub(super) fn logout_tokens(&self) -> &Revocations {
        &self.logout_tokens
    }

    /// Whether Redis answers (asked only when the last command failed).
    pub(super) async fn ready(&self) -> Result<(), StoreDown> {
        if self.redis.is_up() {
            return Ok(());
        }
        Ok(self.redis.ping().await?)
    }

    /// The session named by the cookie, as Redis has it (or had it less than [`CACHE_TTL`] ago,
    /// with Redis answering now).
    pub(super) async fn load(
        &self,
        sealed: Option<&str>,
        now: u64,
    ) -> Result<Option<Arc<Session>>, StoreDown> {
        let Some(id) = self.session_id(sealed).await else {
            return Ok(None);
        };
        let Some(recent) = &self.recent else {
            return Ok(self.fetch(&id, now).await?.map(Arc::new));
        };
        if let Some(kept) = recent.get(&*id).await {
            self.redis.confirm_up().await?;
            return Ok((now < self.codec.end_of(&kept)).then_some(kept));
        }
        let session = self.fetch(&id, now).await?.map(Arc::new);
        if let Some(s) = &session {
            recent.insert(id.to_string(), s.clone()).await;
        }
        Ok(session)
    }

    /// The session id a sealed cookie value names, if it opens.
    async fn session_id(&self, sealed: Option<&str>) -> Option<Arc<str>> {
        let sealed = sealed?;
        if let Some(id) = self.ids.get(sealed).await {
            return Some(id);
        }
        let id: Arc<str> = self.codec.open_session_ref(sealed)?.into();
        self.ids.insert(sealed.into(), id.clone()).await;
        Some(id)
    }

    /// Drops this replica's copies of the sessions `ids` (they were just written or deleted).
    async fn forget(&self, ids: &[String]) {
        if let Some(recent) = &self.recent {
            for id in ids {
                recent.invalidate(id).await;
            }
        }
    }

    /// The session `id` as Redis has it now.
    async fn fetch(&self, id: &str, now: u64) -> Result<Option<Session>, StoreDown> {
        let sealed: Option<String> = self.redis.query(redis::cmd("GET").arg(session_key(id))).await?;
        Ok(sealed
            .and_then(|s| self.codec.open_stored(&s, now))
            .filter(|s| s.id == id))
    }

    /// Writes `session` (and its index entries) to Redis.
    async fn put(&self, session: &Session) -> Result<(), StoreDown> {
        let sealed = self
            .codec
            .seal_stored(session)
            .ok_or_else(|| StoreDown("the session cannot be serialised".into()))?;
        let end_ms = self.codec.end_of(session).saturating_mul(1000);
        let life_ms = self.codec.max_lifetime_secs.saturating_mul(1000);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(session_key(&session.id))
            .arg(sealed)
            .arg("PXAT")
            .arg(end_ms)
            .ignore();
        let mut indexes = vec![sub_index(&session.iss, &session.identity.sub)];
        if let Some(sid) = session.sid() {
            indexes.push(sid_index(&session.iss, sid));
        }
        for index in indexes {
            pipe.cmd("SADD").arg(&index).arg(&session.id).ignore();
            pipe.cmd("PEXPIRE").arg(&index).arg(life_ms).ignore();
        }
        let written = self.redis.pipeline::<()>(&pipe).await;
        self.forget(std::slice::from_ref(&session.id)).await;
        Ok(written?)
    }

    pub(super) async fn save(
        &self,
        session: &Session,
        domain: Option<&str>,
        present: &[&str],
        now: u64,
    ) -> Result<Vec<String>, StoreDown> {
        self.put(session).await?;
        Ok(self.codec.write_session_ref(
            &session.id,
            session.created_at,
            domain,
            present.iter().copied(),
            now,
        ))
    }

    /// Deletes the session: no copy of its cookie finds it any more.
    pub(super) async fn delete(&self, session: &Session) -> Result<(), StoreDown> {
        self.delete_ids(std::slice::from_ref(&session.id)).await?;
        Ok(())
    }

    async fn delete_ids(&self, ids: &[String]) -> Result<u64, StoreDown> {
        if ids.is_empty() {
            return Ok(0);
        }
        // One key per command: in a cluster the keys may live on different nodes.
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("DEL").arg(session_key(id));
        }
        let each = self.redis.pipeline::<Vec<u64>>(&pipe).await;
        self.forget(ids).await;
        Ok(each?.iter().sum::<u64>())
    }

    async fn members(&self, index: &str) -> Result<Vec<String>, StoreDown> {
        Ok(self.redis.query(redis::cmd("SMEMBERS").arg(index)).await?)
    }

    /// Ends the sessions of the IdP session `sid`, and, with `sub`, that user's sessions that
    /// have no `sid`. Returns how many sessions were deleted.
    pub(super) async fn end_sid(&self, issuer: &str, sid: &str, sub: Option<&str>) -> Result<u64, StoreDown> {
        let index = sid_index(issuer, sid);
        let mut ids = self.members(&index).await?;
        if let Some(sub) = sub {
            let now = now_ms() / 1000;
            for id in self.members(&sub_index(issuer, sub)).await? {
                if ids.contains(&id) {
                    continue;
                }
                if let Some(s) = self.fetch(&id, now).await? {
                    if s.sid().is_none() {
                        ids.push(id);
                    }
                }
            }
        }
        let deleted = self.delete_ids(&ids).await?;
        self.redis.query::<u64>(redis::cmd("DEL").arg(&index)).await?;
        Ok(deleted)
    }

    /// Ends every session of `sub` at `issuer`. Returns how many were deleted.
    pub(super) async fn end_sub(&self, issuer: &str, sub: &str) -> Result<u64, StoreDown> {
        let index = sub_index(issuer, sub);
        let ids = self.members(&index).await?;
        let deleted = self.delete_ids(&ids).await?;
        self.redis.query::<u64>(redis::cmd("DEL").arg(&index)).await?;
        Ok(deleted)
    }

    /// Takes the session's refresh lock in Redis, waiting (polling) while another replica
    /// holds it. The caller bounds the wait.
    pub(super) async fn shared_lock(&self, id: &str) -> Result<SharedLock, StoreDown> {
        let key = lock_key(id);
        let token = super::new_session_id();
        let lease_ms = LOCK_LEASE.as_millis() as u64;
        loop {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(&token).arg("NX").arg("PX").arg(lease_ms);
            let taken: Option<String> = self.redis.query(&cmd).await?;
            if taken.is_some() {
                break;
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
        let redis = self.redis.clone();
        let (renew_key, renew_token) = (key.clone(), token.clone());
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOCK_LEASE / 3).await;
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RENEW)
                    .arg(1)
                    .arg(&renew_key)
                    .arg(&renew_token)
                    .arg(lease_ms);
                if redis.query::<i64>(&cmd).await.ok() != Some(1) {
                    return;
                }
            }
        });
        Ok(SharedLock {
            renew,
            release: Some((self.redis.clone(), key, token)),
        })
    }

    /// The stored session says what became of a refresh: other tokens than `session`'s are its
    /// result; no session means it ended. An unreachable IdP is remembered locally.
    pub(super) async fn recent_refresh(&self, session: &Session) -> Result<Option<RefreshResult>, StoreDown> {
        if let Some(r) = self.unavailable.recall(session).await {
            return Ok(Some(r));
        }
        let now = now_ms() / 1000;
        Ok(match self.fetch(&session.id, now).await? {
            None => Some(RefreshResult::Ended),
            Some(stored)
                if stored.id_token != session.id_token
                    || stored.refresh_token != session.refresh_token
                    || stored.access_token != session.access_token =>
            {
                Some(RefreshResult::Renewed(Arc::new(stored)))
            }
            Some(_) => None,
        })
    }

    /// Stores a refreshed session, deletes an ended one, remembers an unreachable IdP locally.
    pub(super) async fn remember_refresh(
        &self,
        session: &Session,
        result: RefreshResult,
    ) -> Result<(), StoreDown> {
        match result {
            RefreshResult::Renewed(next) => self.put(&next).await,
            RefreshResult::Ended => self.delete(session).await,
            RefreshResult::Unavailable => {
                self.unavailable.remember(session, result).await;
                Ok(())
            }
        }
    }
}
