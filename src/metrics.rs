//! Counters of what `Check` and the listener decided, exposed at `/metrics` in the Prometheus
//! text format. Plain atomics: counting must cost nothing on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($field:ident => $label:literal),* $(,)?) => {
        /// Decision counters.
        #[derive(Debug, Default)]
        pub struct Metrics { $(pub $field: AtomicU64,)* }

        impl Metrics {
            /// The counters in the Prometheus text format.
            pub fn render(&self) -> String {
                let mut out = String::from("# TYPE oidc_authz_check_total counter\n");
                $(
                    out.push_str(&format!(
                        "oidc_authz_check_total{{outcome=\"{}\"}} {}\n",
                        $label,
                        self.$field.load(Ordering::Relaxed)
                    ));
                )*
                out
            }
        }
    };
}

counters! {
    allow_public => "allow_public",
    allow_default => "allow_default",
    allow_session => "allow_session",
    allow_bearer => "allow_bearer",
    login_redirect => "login_redirect",
    unauthorized => "unauthorized",
    forbidden => "forbidden",
    unavailable => "unavailable",
    bad_request => "bad_request",
    callback => "callback",
}

/// What one decision came to: the `outcome` label of `oidc_authz_check_total`. The decision
/// names it; `Metrics::record` is the one place that counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    AllowPublic,
    AllowDefault,
    AllowSession,
    AllowBearer,
    LoginRedirect,
    Unauthorized,
    Forbidden,
    Unavailable,
    BadRequest,
    /// A login completed (or refused) at a rule's redirect URL.
    Callback,
}

impl Metrics {
    /// Counts one decision.
    pub fn record(&self, outcome: Outcome) {
        bump(match outcome {
            Outcome::AllowPublic => &self.allow_public,
            Outcome::AllowDefault => &self.allow_default,
            Outcome::AllowSession => &self.allow_session,
            Outcome::AllowBearer => &self.allow_bearer,
            Outcome::LoginRedirect => &self.login_redirect,
            Outcome::Unauthorized => &self.unauthorized,
            Outcome::Forbidden => &self.forbidden,
            Outcome::Unavailable => &self.unavailable,
            Outcome::BadRequest => &self.bad_request,
            Outcome::Callback => &self.callback,
        });
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
