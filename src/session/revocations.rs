//! Revoked session ids (and, for back-channel logout, revoked IdP `sid`s and `sub`s under keys
//! of their own, see `store`; and used logout-token ids). Sign-out puts the session's id here
//! until the session could no longer be used anyway (`created_at + max_lifetime`), so a saved
//! copy of its cookie stops working.
//!
//! Kept in memory, per replica, and bounded: at most [`MAX_REVOKED`] ids, each dropped when its
//! time runs out. Only ids of sessions that opened with our key are ever revoked, so a flood
//! needs that many real logins; beyond the bound the oldest revocation is forgotten first
//! (every new id is admitted: the latest sign-out always counts).
//!
//! Why not a general-purpose cache: an entry here is 16 bytes of key and 8 of expiry, and a
//! cache's per-entry bookkeeping (moka: about 370 bytes) would be fifteen times that. The set
//! is a hash map plus a queue in revocation order, behind one lock; a lookup on the hot path
//! skips the lock entirely while nothing was ever revoked. `Revocations` is the one door to the
//! set: a shared (Redis) backend can be added behind the same calls.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use sha2::{Digest, Sha256};

use super::StoreDown;
use crate::clock::now_ms;
use crate::redis_client::RedisClient;

/// Revoked ids remembered at once, per replica (about 60 bytes each: about 6 MiB for 100,000,
/// measured by `examples/revocation_memory.rs`).
pub const MAX_REVOKED: u64 = 100_000;

/// What the set holds for an id: 128 bits of its SHA-256. A fixed-size key keeps an entry
/// small and off the heap; two ids sharing a key would take about 2^64 revocations to find.
type Key = [u8; 16];

fn key(id: &str) -> Key {
    let digest = Sha256::digest(id.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[..16]);
    k
}

/// Where revoked ids are kept.
pub struct Revocations {
    backend: Backend,
}

enum Backend {
    /// This replica's memory.
    Memory(MemorySet),
    /// Redis (`session.redis_url`): every replica sees every revocation. One key per id,
    /// expiring when the revocation does.
    Redis(Arc<RedisClient>),
}

/// The Redis key of a revoked id.
fn redis_key(k: &Key) -> String {
    let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
    format!("oidc-authz:revoked:{hex}")
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Memory(m) => write!(f, "Revocations(memory, {} ids)", m.read().map.len()),
            Backend::Redis(r) => write!(f, "Revocations(redis {})", r.describe()),
        }
    }
}

/// A bounded map of key → unix millisecond until which it holds, with the order keys came in.
struct MemorySet {
    capacity: usize,
    /// Set by the first revocation: until then a lookup takes no lock.
    used: AtomicBool,
    inner: RwLock<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, u64>,
    /// Keys in the order they were (last) revoked, with that revocation's time. A key revoked
    /// again leaves a stale copy behind, skipped when it reaches the front.
    order: VecDeque<(Key, u64)>,
}

impl Entries {
    /// Drops the front while it is stale, past its time, or beyond `capacity`.
    fn trim(&mut self, capacity: usize, now: u64) {
        while let Some(&(k, until)) = self.order.front() {
            let current = self.map.get(&k) == Some(&until);
            if current && until > now && self.map.len() <= capacity {
                break;
            }
            self.order.pop_front();
            if current {
                self.map.remove(&k);
            }
        }
        // Stale copies from repeated revocations of one key: never more than the live ones.
        if self.order.len() > 2 * capacity.max(1) {
            let map = &self.map;
            self.order.retain(|(k, until)| map.get(k) == Some(until));
        }
    }

    fn insert(&mut self, k: Key, until: u64, capacity: usize, now: u64) {
        self.map.insert(k, until);
        self.order.push_back((k, until));
        self.trim(capacity, now);
    }

    fn until(&self, k: &Key, now: u64) -> Option<u64> {
        self.map.get(k).copied().filter(|until| *until > now)
    }
}

impl MemorySet {
    fn read(&self) -> RwLockReadGuard<'_, Entries> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Entries> {
        self.used.store(true, Ordering::Relaxed);
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn until(&self, k: &Key, now: u64) -> Option<u64> {
        if !self.used.load(Ordering::Relaxed) {
            return None;
        }
        self.read().until(k, now)
    }
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations::in_memory(MAX_REVOKED)
    }
}

impl Revocations {
    /// An in-memory set holding at most `capacity` ids.
    pub fn in_memory(capacity: u64) -> Revocations {
        Revocations {
            backend: Backend::Memory(MemorySet {
                capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
                used: AtomicBool::new(false),
                inner: RwLock::new(Entries::default()),
            }),
        }
    }

    /// A set kept in Redis, shared by every replica.
    pub fn in_redis(redis: Arc<RedisClient>) -> Revocations {
        Revocations {
            backend: Backend::Redis(redis),
        }
    }

    /// Whether every replica sees this set (it is in Redis).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// Remembers `id` as revoked until the unix millisecond `until`. An empty id or a time
    /// already past changes nothing.
    pub async fn revoke(&self, id: &str, until: u64) -> Result<(), StoreDown> {
        let t = now_ms();
        if id.is_empty() || until <= t {
            return Ok(());
        }
        match &self.backend {
            Backend::Memory(m) => {
                m.write().insert(key(id), until, m.capacity, t);
                Ok(())
            }
            Backend::Redis(r) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(redis_key(&key(id))).arg(until).arg("PXAT").arg(until);
                r.query::<()>(&cmd).await.map_err(StoreDown::from)
            }
        }
    }

    /// Remembers `id` until the unix millisecond `until` and says whether it was new: `false`
    /// when it was already held (and has not run out). Atomic: of two concurrent calls with one
    /// id (on any replica, with Redis), one gets `true`. An empty id or a time already past is
    /// never new.
    pub async fn first_time(&self, id: &str, until: u64) -> Result<bool, StoreDown> {
        let t = now_ms();
        if id.is_empty() || until <= t {
            return Ok(false);
        }
        let k = key(id);
        match &self.backend {
            Backend::Memory(m) => {
                let mut entries = m.write();
                if entries.until(&k, t).is_some() {
                    return Ok(false);
                }
                entries.insert(k, until, m.capacity, t);
                Ok(true)
            }
            Backend::Redis(r) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(redis_key(&k)).arg(until).arg("NX").arg("PXAT").arg(until);
                let set: Option<String> = r.query(&cmd).await?;
                Ok(set.is_some())
            }
        }
    }

    /// Whether `id` was revoked (and its revocation has not run out).
    pub async fn is_revoked(&self, id: &str) -> Result<bool, StoreDown> {
        Ok(self.revoked_until(id).await?.is_some())
    }

    /// Until when (unix milliseconds) `id` is revoked (a session id, or a `sid`/`sub` key of
    /// `store`), if it is.
    pub async fn revoked_until(&self, id: &str) -> Result<Option<u64>, StoreDown> {
        Ok(self.revoked_until_each(&[id]).await?.into_iter().next().flatten())
    }

    /// `revoked_until` for several ids in one round trip.
    pub async fn revoked_until_each(&self, ids: &[&str]) -> Result<Vec<Option<u64>>, StoreDown> {
        let t = now_ms();
        match &self.backend {
            // While nothing was ever revoked here, no id is hashed.
            Backend::Memory(m) if !m.used.load(Ordering::Relaxed) => Ok(vec![None; ids.len()]),
            Backend::Memory(m) => Ok(ids.iter().map(|id| m.until(&key(id), t)).collect()),
            Backend::Redis(r) => {
                let mut pipe = redis::pipe();
                for id in ids {
                    pipe.cmd("GET").arg(redis_key(&key(id)));
                }
                let values: Vec<Option<u64>> = r.pipeline(&pipe).await?;
                Ok(values.into_iter().map(|v| v.filter(|until| *until > t)).collect())
            }
        }
    }

    /// Ids currently held in memory (those past their time dropped first); for tests and
    /// diagnostics. A Redis set is not counted (0).
    pub async fn len(&self) -> u64 {
        match &self.backend {
            Backend::Memory(m) => {
                let t = now_ms();
                let mut entries = m.inner.write().unwrap_or_else(|e| e.into_inner());
                entries.map.retain(|_, until| *until > t);
                entries.trim(m.capacity, t);
                entries.map.len() as u64
            }
            Backend::Redis(_) => 0,
        }
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_revoked_id_stays_revoked_until_its_time() {
        let r = Revocations::default();
        r.revoke("abc", now_ms() + 3_600_000).await.unwrap();
        assert!(r.is_revoked("abc").await.unwrap());
        assert!(!r.is_revoked("abd").await.unwrap());
        // Already past, or no id: nothing to remember.
        r.revoke("old", now_ms().saturating_sub(1)).await.unwrap();
        r.revoke("", now_ms() + 3_600_000).await.unwrap();
        assert!(!r.is_revoked("old").await.unwrap());
        assert!(!r.is_revoked("").await.unwrap());
        assert_eq!(r.len().await, 1);
    }

    #[tokio::test]
    async fn a_flood_of_revocations_stays_within_the_capacity() {
        let r = Revocations::in_memory(100);
        for i in 0..5_000 {
            r.revoke(&format!("id-{i}"), u64::MAX).await.unwrap();
        }
        assert!(r.len().await <= 100, "{}", r.len().await);
        // The newest ids are admitted (no admission filter): the latest sign-out counts, and
        // the oldest revocation goes first.
        assert!(r.is_revoked("id-4999").await.unwrap());
        assert!(r.is_revoked("id-4900").await.unwrap());
        assert!(!r.is_revoked("id-4899").await.unwrap());
        assert!(!r.is_revoked("id-0").await.unwrap());
    }

    fn queued(r: &Revocations) -> usize {
        match &r.backend {
            Backend::Memory(m) => m.read().order.len(),
            Backend::Redis(_) => 0,
        }
    }

    #[tokio::test]
    async fn revoking_one_id_again_and_again_keeps_the_queue_bounded() {
        let r = Revocations::in_memory(10);
        let t = now_ms();
        for i in 0..10_000 {
            r.revoke("same", t + 100_000 + i % 7).await.unwrap();
        }
        assert!(queued(&r) <= 20, "{}", queued(&r));
        assert_eq!(
            r.revoked_until("same").await.unwrap(),
            Some(t + 100_000 + 9_999 % 7)
        );
        // Others still fit beside it.
        for i in 0..9 {
            r.revoke(&format!("other-{i}"), t + 100_000).await.unwrap();
        }
        assert!(r.is_revoked("same").await.unwrap());
        assert_eq!(r.len().await, 10);
    }

    #[tokio::test]
    async fn of_many_concurrent_first_uses_of_one_id_exactly_one_is_first() {
        let r = std::sync::Arc::new(Revocations::in_memory(100));
        let until = now_ms() + 600_000;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let r = r.clone();
            set.spawn(async move { r.first_time("jti-1", until).await.unwrap() });
        }
        let firsts = set.join_all().await.into_iter().filter(|f| *f).count();
        assert_eq!(firsts, 1);
        assert!(!r.first_time("jti-1", until).await.unwrap());
        assert!(r.first_time("jti-2", until).await.unwrap());
        // A time already past is never new, and is not remembered.
        assert!(!r.first_time("jti-3", now_ms().saturating_sub(1)).await.unwrap());
    }

    #[tokio::test]
    async fn a_lookup_before_any_revocation_finds_nothing() {
        let r = Revocations::default();
        assert_eq!(r.revoked_until("x").await.unwrap(), None);
        assert!(r.is_empty().await);
    }
}
