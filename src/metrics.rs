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

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
