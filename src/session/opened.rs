//! Session cookies already opened, kept by their exact bytes. Opening a sealed cookie (base64,
//! the AEAD, the JSON) was the largest cost of a `Check` on the valid-session path, and a
//! browser sends the same cookie on every request of a session, so each distinct cookie value
//! is opened once and its session shared (`Arc`) until the cache lets it go.
//!
//! Why this cannot let anything through that opening would not:
//! - The key is the sealed value itself, compared byte for byte on a hit. The hash (foldhash,
//!   seeded at random per process) only picks the slot: no collision, crafted or not, can hand
//!   one cookie another's session.
//! - What is kept is what opening that value gives, which never changes: `open_session` does
//!   not look at the clock. Everything that does change is asked on every request by the
//!   caller: `max_lifetime` (`SessionCodec::is_current`), the ID token's expiry (refresh) and
//!   revocations (sign-out, back-channel logout).
//! - Only values that opened are kept: a flood of invalid cookies costs CPU, never memory.
//!
//! Bounded by bytes (the sealed value plus the session's strings), not by entries, so the bound
//! holds whatever the size of the tokens; see `docs/operations.md` ("Memory").

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use super::Session;

/// An entry no request asked for in this long is dropped (its browser went away).
pub const IDLE: Duration = Duration::from_secs(10 * 60);

/// Opened sessions by sealed cookie value.
#[derive(Debug, Clone)]
pub struct OpenedSessions {
    cache: Cache<Arc<str>, Arc<Session>, foldhash::fast::RandomState>,
}

impl OpenedSessions {
    /// At most `capacity_bytes` of sealed values and sessions (0: nothing is kept).
    pub fn new(capacity_bytes: u64) -> OpenedSessions {
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|sealed: &Arc<str>, session: &Arc<Session>| {
                u32::try_from(sealed.len().saturating_add(session.approx_bytes())).unwrap_or(u32::MAX)
            })
            .time_to_idle(IDLE)
            .build_with_hasher(foldhash::fast::RandomState::default());
        OpenedSessions { cache }
    }

    /// The session `sealed` opens to: kept, or opened now with `open` (and kept when it
    /// opened). `None` when it does not open.
    pub async fn get_or_open(
        &self,
        sealed: &str,
        open: impl FnOnce(&str) -> Option<Session>,
    ) -> Option<Arc<Session>> {
        if let Some(kept) = self.cache.get(sealed).await {
            return Some(kept);
        }
        let session = Arc::new(open(sealed)?);
        self.cache.insert(sealed.into(), session.clone()).await;
        Some(session)
    }

    /// Runs the cache's pending housekeeping (so that `usage` is current).
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Entries kept and their weight in bytes, as of the cache's last housekeeping.
    pub fn usage(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn session(id: &str) -> Session {
        Session {
            id: id.into(),
            iss: "https://idp.example.com".into(),
            client_id: "gateway".into(),
            identity: Identity {
                sub: format!("user-{id}"),
                ..Identity::default()
            },
            id_token: "x".repeat(900),
            access_token: None,
            refresh_token: None,
            created_at: 1000,
            created_at_ms: 0,
            expires_at: 2000,
            access_expires_at: None,
        }
    }

    #[tokio::test]
    async fn a_value_is_opened_once_and_shared() {
        let opened = OpenedSessions::new(crate::config::DEFAULT_SESSIONS_CACHE);
        let mut opens = 0;
        let first = opened
            .get_or_open("sealed-a", |_| {
                opens += 1;
                Some(session("a"))
            })
            .await;
        let again = opened
            .get_or_open("sealed-a", |_| {
                opens += 1;
                Some(session("other"))
            })
            .await;
        assert_eq!(opens, 1);
        let (first, again) = (first.unwrap(), again.unwrap());
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(again.id, "a");
    }

    #[tokio::test]
    async fn another_value_is_opened_even_when_it_shares_a_prefix() {
        let opened = OpenedSessions::new(crate::config::DEFAULT_SESSIONS_CACHE);
        opened.get_or_open("sealed-a", |_| Some(session("a"))).await;
        let b = opened.get_or_open("sealed-a2", |_| Some(session("b"))).await;
        assert_eq!(b.unwrap().id, "b");
        let short = opened.get_or_open("sealed-", |_| None).await;
        assert!(short.is_none());
    }

    #[tokio::test]
    async fn a_value_that_does_not_open_is_not_kept() {
        let opened = OpenedSessions::new(crate::config::DEFAULT_SESSIONS_CACHE);
        for i in 0..100 {
            assert!(opened.get_or_open(&format!("bad-{i}"), |_| None).await.is_none());
        }
        opened.run_pending_tasks().await;
        assert_eq!(opened.usage().0, 0);
    }

    #[tokio::test]
    async fn the_bound_is_in_bytes() {
        // Each entry weighs over 1 KB (the 900-byte ID token and its strings): 64 KB holds
        // fewer than 64 of them, however many are offered.
        let opened = OpenedSessions::new(64 * 1024);
        for i in 0..500 {
            opened
                .get_or_open(&format!("sealed-{i}"), |_| Some(session(&i.to_string())))
                .await;
        }
        opened.run_pending_tasks().await;
        let (entries, bytes) = opened.usage();
        assert!(bytes <= 64 * 1024, "{bytes} bytes kept");
        assert!(entries < 64, "{entries} entries kept");
    }
}
