//! Measures the memory of the revocation set: the resident set before and after revoking
//! 100,000 sessions (random 22-character ids, as sign-out and back-channel logout revoke them),
//! reported per 100,000. Run it with `cargo run --release --example revocation_memory`.
//!
//! Memory is a measurement, not a test: this prints the figure the README quotes.

use oidc_authz::session::new_session_id;
use oidc_authz::session::revocations::{Revocations, MAX_REVOKED};

/// The resident set of this process, in bytes (Linux).
fn rss() -> Result<u64, String> {
    let statm = std::fs::read_to_string("/proc/self/statm").map_err(|e| format!("/proc/self/statm: {e}"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or("unreadable /proc/self/statm")?;
    Ok(pages * 4096)
}

fn main() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let ids: Vec<String> = (0..MAX_REVOKED).map(|_| new_session_id()).collect();
        // Revocations count in unix milliseconds.
        let until = (oidc_authz::app::now() + 24 * 3600) * 1000;
        let set = Revocations::in_memory(MAX_REVOKED);
        let before = rss()?;
        for id in &ids {
            set.revoke(id, until).await.map_err(|e| e.to_string())?;
        }
        let held = set.len().await;
        let after = rss()?;
        let per = (after.saturating_sub(before)) as f64 / held.max(1) as f64;
        println!(
            "revocation set: {held} ids held; resident set {:.1} MiB -> {:.1} MiB; {:.1} MiB per 100,000 revoked sessions ({per:.0} bytes each)",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            per * 100_000.0 / 1048576.0,
        );
        Ok(())
    })
}
