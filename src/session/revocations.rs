//! Revoked session ids (and, for back-channel logout, revoked IdP `sid`s and `sub`s under keys
//! of their own, see `store`). Sign-out puts the session's id here until the session could no longer
//! be used anyway (`created_at + max_lifetime`), so a saved copy of its cookie stops working.
//!
//! Kept in memory, per replica, and bounded: at most [`MAX_REVOKED`] ids, each dropped when its
//! session's `max_lifetime` runs out. Only ids of sessions that opened with our key are ever
//! revoked, so a flood needs that many real logins; beyond the bound the least recently seen
//! id is forgotten first (LRU, every new id is admitted). `Revocations` is the one door to the
//! set: a shared (Redis) backend can be added behind the same `revoke` / `is_revoked` calls.

use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::policy::EvictionPolicy;
use moka::Expiry;

use sha2::{Digest, Sha256};

use crate::clock::now;

/// Revoked ids remembered at once, per replica (about 370 bytes each with the cache's
/// bookkeeping: 36 MiB for 100,000, measured by `examples/revocation_memory.rs`).
pub const MAX_REVOKED: u64 = 100_000;

/// Where revoked session ids are kept.
pub struct Revocations {
    backend: Backend,
}

enum Backend {
    /// This replica's memory: unix-seconds expiry by id.
    Memory(Cache<Key, u64>),
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Memory(c) => write!(f, "Revocations(memory, {} ids)", c.entry_count()),
        }
    }
}

/// What the set holds for an id: 128 bits of its SHA-256. A fixed-size key keeps an entry
/// small and off the heap; two ids sharing a key would take 2^64 revocations to find.
type Key = [u8; 16];

fn key(id: &str) -> Key {
    let digest = Sha256::digest(id.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[..16]);
    k
}

/// Each id lives until the unix second stored with it.
struct UntilExpiry;

impl UntilExpiry {
    fn left(until: u64) -> Option<Duration> {
        Some(Duration::from_secs(until.saturating_sub(now())))
    }
}

impl Expiry<Key, u64> for UntilExpiry {
    fn expire_after_create(&self, _id: &Key, until: &u64, _at: Instant) -> Option<Duration> {
        Self::left(*until)
    }

    fn expire_after_update(
        &self,
        _id: &Key,
        until: &u64,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Self::left(*until)
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
        let cache = Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(UntilExpiry)
            .build();
        Revocations {
            backend: Backend::Memory(cache),
        }
    }

    /// Remembers `id` as revoked until the unix second `until`. An empty id or a time already
    /// past changes nothing.
    pub async fn revoke(&self, id: &str, until: u64) {
        if id.is_empty() || until <= now() {
            return;
        }
        match &self.backend {
            Backend::Memory(c) => c.insert(key(id), until).await,
        }
    }

    /// Remembers `id` until `until` and says whether it was new: `false` when it was already
    /// held (and has not run out). Atomic: of two concurrent calls with one id, one gets `true`.
    /// An empty id or a time already past is never new.
    pub async fn first_time(&self, id: &str, until: u64) -> bool {
        if id.is_empty() || until <= now() {
            return false;
        }
        match &self.backend {
            Backend::Memory(c) => {
                // An entry past its time is gone for the cache: `or_insert` makes a fresh one.
                c.entry(key(id)).or_insert(until).await.is_fresh()
            }
        }
    }

    /// Whether `id` was revoked (and its revocation has not run out).
    pub async fn is_revoked(&self, id: &str) -> bool {
        match &self.backend {
            Backend::Memory(c) => c.get(&key(id)).await.is_some_and(|until| until > now()),
        }
    }

    /// Until when `key` is revoked (a session id, or a `sid`/`sub` key of `store`), if it is.
    pub async fn revoked_until(&self, k: &str) -> Option<u64> {
        let t = now();
        match &self.backend {
            Backend::Memory(c) => c.get(&key(k)).await.filter(|until| *until > t),
        }
    }

    /// Ids currently held (after pending evictions ran); for tests and diagnostics.
    pub async fn len(&self) -> u64 {
        match &self.backend {
            Backend::Memory(c) => {
                c.run_pending_tasks().await;
                c.entry_count()
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
        r.revoke("abc", now() + 3600).await;
        assert!(r.is_revoked("abc").await);
        assert!(!r.is_revoked("abd").await);
        // Already past, or no id: nothing to remember.
        r.revoke("old", now().saturating_sub(1)).await;
        r.revoke("", now() + 3600).await;
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
        // The newest ids are admitted (LRU, no admission filter): the latest sign-out counts.
        assert!(r.is_revoked("id-4999").await);
    }
}
