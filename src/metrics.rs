//! Counters of what `Check` and the listener decided, of refreshes and of logouts, exposed at
//! `/metrics` in the Prometheus text format. Plain atomics: counting must cost nothing on the
//! hot path.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($field:ident => $label:literal),* $(,)?) => {
        /// Decision counters, refreshes by result and logouts by kind.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(pub $field: AtomicU64,)*
            refreshed: [AtomicU64; RefreshOutcome::ALL.len()],
            logouts: [AtomicU64; LogoutKind::ALL.len()],
        }

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
                out.push_str("# TYPE oidc_authz_sessions_refreshed_total counter\n");
                for (o, c) in RefreshOutcome::ALL.iter().zip(&self.refreshed) {
                    out.push_str(&format!(
                        "oidc_authz_sessions_refreshed_total{{result=\"{}\"}} {}\n",
                        o.label(),
                        c.load(Ordering::Relaxed)
                    ));
                }
                out.push_str("# TYPE oidc_authz_logouts_total counter\n");
                for (k, c) in LogoutKind::ALL.iter().zip(&self.logouts) {
                    out.push_str(&format!(
                        "oidc_authz_logouts_total{{kind=\"{}\"}} {}\n",
                        k.label(),
                        c.load(Ordering::Relaxed)
                    ));
                }
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

/// What one refresh-token grant came to: the `result` label of
/// `oidc_authz_sessions_refreshed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// New tokens.
    Success,
    /// The IdP answered `invalid_grant`: the session ended.
    InvalidGrant,
    /// Another refusal, or tokens that did not validate: the session ended.
    Rejected,
    /// The IdP could not be reached or answered 5xx (`refresh_grace` applies).
    Unavailable,
}

impl RefreshOutcome {
    const ALL: [RefreshOutcome; 4] = [
        RefreshOutcome::Success,
        RefreshOutcome::InvalidGrant,
        RefreshOutcome::Rejected,
        RefreshOutcome::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RefreshOutcome::Success => "success",
            RefreshOutcome::InvalidGrant => "invalid_grant",
            RefreshOutcome::Rejected => "rejected",
            RefreshOutcome::Unavailable => "unavailable",
        }
    }
}

/// How a session was ended: the `kind` label of `oidc_authz_logouts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutKind {
    /// `/oauth2/sign_out` (same site).
    SignOut,
    /// A valid back-channel logout token.
    Backchannel,
    /// `/oauth2/frontchannel_logout` that ended the browser's session.
    Frontchannel,
}

impl LogoutKind {
    const ALL: [LogoutKind; 3] = [
        LogoutKind::SignOut,
        LogoutKind::Backchannel,
        LogoutKind::Frontchannel,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LogoutKind::SignOut => "sign_out",
            LogoutKind::Backchannel => "backchannel",
            LogoutKind::Frontchannel => "frontchannel",
        }
    }
}

impl Metrics {
    /// Counts one refresh-token grant.
    pub fn record_refresh(&self, outcome: RefreshOutcome) {
        bump(&self.refreshed[outcome as usize]);
    }

    /// Counts one logout.
    pub fn record_logout(&self, kind: LogoutKind) {
        bump(&self.logouts[kind as usize]);
    }

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
