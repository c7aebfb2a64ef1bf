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
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use sha2::{Digest, Sha256};

use crate::clock::now_ms;

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
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Memory(m) => write!(f, "Revocations(memory, {} ids)", m.read().map.len()),
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

    /// Remembers `id` as revoked until the unix millisecond `until`. An empty id or a time
    /// already past changes nothing.
    pub async fn revoke(&self, id: &str, until: u64) {
        let t = now_ms();
        if id.is_empty() || until <= t {
            return;
        }
        match &self.backend {
            Backend::Memory(m) => m.write().insert(key(id), until, m.capacity, t),
        }
    }

    /// Remembers `id` until the unix millisecond `until` and says whether it was new: `false`
    /// when it was already held (and has not run out). Atomic: of two concurrent calls with one
    /// id, one gets `true`. An empty id or a time already past is never new.
    pub async fn first_time(&self, id: &str, until: u64) -> bool {
        let t = now_ms();
        if id.is_empty() || until <= t {
            return false;
        }
        let k = key(id);
        match &self.backend {
            Backend::Memory(m) => {
                let mut entries = m.write();
                if entries.until(&k, t).is_some() {
                    return false;
                }
                entries.insert(k, until, m.capacity, t);
                true
            }
        }
    }

    /// Whether `id` was revoked (and its revocation has not run out).
    pub async fn is_revoked(&self, id: &str) -> bool {
        self.revoked_until(id).await.is_some()
    }

    /// Until when (unix milliseconds) `id` is revoked (a session id, or a `sid`/`sub` key of
    /// `store`), if it is.
    pub async fn revoked_until(&self, id: &str) -> Option<u64> {
        match &self.backend {
            Backend::Memory(m) => m.until(&key(id), now_ms()),
        }
    }

    /// Ids currently held (those past their time dropped first); for tests and diagnostics.
    pub async fn len(&self) -> u64 {
        match &self.backend {
            Backend::Memory(m) => {
                let t = now_ms();
                let mut entries = m.inner.write().unwrap_or_else(|e| e.into_inner());
                entries.map.retain(|_, until| *until > t);
                entries.trim(m.capacity, t);
                entries.map.len() as u64
            }
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
        r.revoke("abc", now_ms() + 3_600_000).await;
        assert!(r.is_revoked("abc").await);
        assert!(!r.is_revoked("abd").await);
        // Already past, or no id: nothing to remember.
        r.revoke("old", now_ms().saturating_sub(1)).await;
        r.revoke("", now_ms() + 3_600_000).await;
        assert!(!r.is_revoked("old").await);
        assert!(!r.is_revoked("").await);
        assert_eq!(r.len().await, 1);
    }

    #[tokio::test]
    async fn a_flood_of_revocations_stays_within_the_capacity() {
        let r = Revocations::in_memory(100);
        for i in 0..5_000 {
            r.revoke(&format!("id-{i}"), u64::MAX).await;
        }
        assert!(r.len().await <= 100, "{}", r.len().await);
        // The newest ids are admitted (no admission filter): the latest sign-out counts, and
        // the oldest revocation goes first.
        assert!(r.is_revoked("id-4999").await);
        assert!(r.is_revoked("id-4900").await);
        assert!(!r.is_revoked("id-4899").await);
        assert!(!r.is_revoked("id-0").await);
    }

    fn queued(r: &Revocations) -> usize {
        match &r.backend {
            Backend::Memory(m) => m.read().order.len(),
        }
    }

    #[tokio::test]
    async fn revoking_one_id_again_and_again_keeps_the_queue_bounded() {
        let r = Revocations::in_memory(10);
        let t = now_ms();
        for i in 0..10_000 {
            r.revoke("same", t + 100_000 + i % 7).await;
        }
        assert!(queued(&r) <= 20, "{}", queued(&r));
        assert_eq!(r.revoked_until("same").await, Some(t + 100_000 + 9_999 % 7));
        // Others still fit beside it.
        for i in 0..9 {
            r.revoke(&format!("other-{i}"), t + 100_000).await;
        }
        assert!(r.is_revoked("same").await);
        assert_eq!(r.len().await, 10);
    }

    #[tokio::test]
    async fn of_many_concurrent_first_uses_of_one_id_exactly_one_is_first() {
        let r = std::sync::Arc::new(Revocations::in_memory(100));
        let until = now_ms() + 600_000;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let r = r.clone();
            set.spawn(async move { r.first_time("jti-1", until).await });
        }
        let firsts = set.join_all().await.into_iter().filter(|f| *f).count();
        assert_eq!(firsts, 1);
        assert!(!r.first_time("jti-1", until).await);
        assert!(r.first_time("jti-2", until).await);
        // A time already past is never new, and is not remembered.
        assert!(!r.first_time("jti-3", now_ms().saturating_sub(1)).await);
    }

    #[tokio::test]
    async fn a_lookup_before_any_revocation_finds_nothing() {
        let r = Revocations::default();
        assert_eq!(r.revoked_until("x").await, None);
        assert!(r.is_empty().await);
    }
}
