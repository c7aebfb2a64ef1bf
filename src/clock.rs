//! The wall clock, in one place: sessions, login states and token checks count in Unix seconds,
//! revocations in milliseconds (a login right after a logout must not fall in the same tick),
//! and every layer may ask for the time without depending on the app's state.

/// Unix seconds now (0 if the system clock is before 1970).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix milliseconds now (0 if the system clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
