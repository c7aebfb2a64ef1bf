//! The wall clock, in one place: sessions, login states, revocations and token checks all count
//! in Unix seconds, and every layer may ask for the time without depending on the app's state.

/// Unix seconds now (0 if the system clock is before 1970).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
