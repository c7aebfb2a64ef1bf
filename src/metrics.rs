//! What the server did, for Prometheus: decisions by rule and outcome, `Check` latency, IdP calls,
//! refreshes, logouts, rule states, Redis and the build, served at `/metrics` in the Prometheus
//! text format (0.0.4). The families and their labels are a contract (`docs/metrics.md`).
//!
//! The registry, label sets and text encoding come from `prometheus-client`. The hot path stays
//! a few atomic adds: a rule's counters are looked up in their family once and then kept in the
//! compiled rule (`RuleCounters`), so a `Check` neither hashes a label set nor takes the
//! family's lock; and `Check` latency goes to `AtomicHistogram`, whose buckets are plain atomics
//! (the crate's own histogram takes a mutex on every observation). Label values come from the
//! configuration (rule names) and from fixed enums, never from a request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `rule` label of a decision no rule governs (a malformed host, `default_action`).
pub const NO_RULE: &str = "";

/// `Check` latency buckets, in seconds: 50 µs to 5 s (a cached decision is tens of µs; one that
/// waits for the IdP, a refresh say, is milliseconds to seconds).
const CHECK_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

/// IdP call latency buckets, in seconds: 5 ms to 10 s (the client gives up after 8 s).
const IDP_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Writes a label value that is a fixed name.
fn write_label(encoder: &mut LabelValueEncoder, name: &str) -> Result<(), std::fmt::Error> {
    encoder.write_str(name)
}

macro_rules! label_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                write_label(encoder, self.label())
            }
        }
    };
}

label_enum! {
    /// What one decision came to: the `outcome` label of `oidc_authz_check_total`. The decision
    /// names it; `Metrics::record_check` (for `Check`) and `Metrics::record` (for the HTTP
    /// listener's `/oauth2/start` and `/oauth2/callback`) count it.
    pub enum Outcome {
        AllowSession => "allow_session",
        AllowBearer => "allow_bearer",
        AllowPublic => "allow_public",
        AllowDefault => "allow_default",
        LoginRedirect => "login_redirect",
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        Unavailable => "unavailable",
        BadRequest => "bad_request",
        /// A login completed (or refused) at a rule's redirect URL.
        Callback => "callback",
    }
}

const OUTCOMES: usize = 10;

label_enum! {
    /// What one refresh-token grant came to: the `result` label of
    /// `oidc_authz_sessions_refreshed_total`.
    pub enum RefreshOutcome {
        /// New tokens.
        Success => "success",
        /// The IdP answered `invalid_grant`: the session ended.
        InvalidGrant => "invalid_grant",
        /// Another refusal, or tokens that did not validate: the session ended.
        Rejected => "rejected",
        /// The IdP could not be reached or answered 5xx (`refresh_grace` applies).
        Unavailable => "unavailable",
    }
}

label_enum! {
    /// How a session was ended: the `kind` label of `oidc_authz_logouts_total`.
    pub enum LogoutKind {
        /// `/oauth2/sign_out` (same site).
        SignOut => "sign_out",
        /// A valid back-channel logout token.
        Backchannel => "backchannel",
        /// `/oauth2/frontchannel_logout` that ended the browser's session.
        Frontchannel => "frontchannel",
    }
}

label_enum! {
    /// Which IdP endpoint was called: the `endpoint` label of the IdP families.
    pub enum Endpoint {
        Discovery => "discovery",
        Jwks => "jwks",
        /// The authorization-code exchange at the token endpoint.
        Token => "token",
        /// The refresh-token grant at the token endpoint.
        Refresh => "refresh",
    }
}

label_enum! {
    /// How one IdP call ended: the `result` label of `oidc_authz_idp_requests_total`.
    pub enum IdpResult {
        /// A 2xx answer with a JSON body.
        Ok => "ok",
        /// No answer in time (connect 3 s, whole call 8 s, a refresh 2.5 s).
        Timeout => "timeout",
        /// No answer: connection refused or reset, DNS, TLS.
        Error => "error",
        /// A 4xx answer (an OAuth error such as `invalid_grant` is one).
        Http4xx => "http_4xx",
        /// A 5xx answer (or another non-2xx status).
        Http5xx => "http_5xx",
        /// A 2xx answer that is not the expected JSON, or larger than we read.
        Invalid => "invalid",
    }
}

label_enum! {
    /// The `state` label of `oidc_authz_rules`.
    pub enum RuleState {
        /// Enabled, and its provider is ready (discovery done, keys in hand).
        Enabled => "enabled",
        Disabled => "disabled",
        /// Enabled, but its provider is not ready yet: its logins and tokens fail with 503.
        NotReady => "not_ready",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CheckLabels {
    rule: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IdpLabels {
    rule: String,
    endpoint: Endpoint,
    result: IdpResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: Endpoint,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefreshLabels {
    result: RefreshOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LogoutLabels {
    kind: LogoutKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: RuleState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
}

/// A histogram of durations whose observations are atomic adds: one per bucket, one for the
/// sum (in nanoseconds). The count is the sum of the buckets, so a scrape is consistent with
/// itself.
#[derive(Debug, Clone)]
pub struct AtomicHistogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    /// Upper bounds, in seconds, increasing.
    bounds: &'static [f64],
    /// One per bound, then `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram(Arc::new(HistogramCells {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, d: Duration) {
        let cells = &self.0;
        let secs = d.as_secs_f64();
        let i = cells.bounds.partition_point(|b| *b < secs);
        if let Some(bucket) = cells.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let cells = &self.0;
        let buckets: Vec<(f64, u64)> = cells
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(cells.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = cells.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

/// A counter whose value is read from elsewhere at each scrape (the JWKS fetch counts the key
/// caches keep).
#[derive(Debug, Clone, Default)]
struct ScrapedCounter(Arc<AtomicU64>);

impl EncodeMetric for ScrapedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, u64, u64>(&self.0.load(Ordering::Relaxed), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

impl TypedMetric for ScrapedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

/// A rule's `oidc_authz_check_total` counters, one per outcome, looked up in the family on
/// first use and kept with the compiled rule. A rule is counted by the `Metrics` that first
/// counts it (one per server).
#[derive(Debug, Default)]
pub struct RuleCounters {
    check: [OnceLock<Counter>; OUTCOMES],
}

/// Which rule an IdP call is counted under.
#[derive(Debug, Clone, Copy)]
pub enum IdpRule<'a> {
    /// The rule that made the call (the code exchange, a refresh).
    Named(&'a str),
    /// A provider's own call (discovery, keys), shared by its rules: the first enabled rule
    /// that uses the provider, as of the last rule change.
    Provider(&'a ArcSwap<String>),
}

/// One IdP call about to be made, and where it is counted.
#[derive(Debug, Clone, Copy)]
pub struct IdpCall<'a> {
    pub metrics: &'a Metrics,
    pub rule: IdpRule<'a>,
    pub endpoint: Endpoint,
}

impl IdpCall<'_> {
    /// Counts and times the call.
    pub fn record(&self, result: IdpResult, elapsed: Duration) {
        let labels = |rule: &str| IdpLabels {
            rule: rule.to_string(),
            endpoint: self.endpoint,
            result,
        };
        let labels = match self.rule {
            IdpRule::Named(rule) => labels(rule),
            IdpRule::Provider(rule) => labels(rule.load().as_str()),
        };
        self.metrics.idp_requests.get_or_create(&labels).inc();
        self.metrics
            .idp_duration
            .get_or_create(&EndpointLabels {
                endpoint: self.endpoint,
            })
            .observe(elapsed);
    }
}

/// What `/metrics` reads from the server at each scrape.
#[derive(Debug, Default)]
pub struct ScrapeState {
    /// Rules by state.
    pub rules: RuleStates,
    /// Whether Redis answered a PING just now; `None` when no Redis is configured.
    pub redis_up: Option<bool>,
    /// JWKS fetches so far, by issuer.
    pub jwks_fetches: Vec<(String, u64)>,
}

/// How many rules are in each state.
#[derive(Debug, Default, Clone, Copy)]
pub struct RuleStates {
    pub enabled: u64,
    pub disabled: u64,
    pub not_ready: u64,
}

/// Every family, registered once per server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    check_total: Family<CheckLabels, Counter>,
    check_duration: AtomicHistogram,
    idp_requests: Family<IdpLabels, Counter>,
    idp_duration: Family<EndpointLabels, AtomicHistogram, fn() -> AtomicHistogram>,
    refreshed: Family<RefreshLabels, Counter>,
    logouts: Family<LogoutLabels, Counter>,
    rules: Family<StateLabels, Gauge>,
    redis_up: Gauge,
    jwks_fetches: Family<IssuerLabels, ScrapedCounter>,
    /// `oidc_authz_check_total` of decisions no rule governs.
    no_rule: RuleCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family (`oidc_authz_redis_up` stays 0 when no Redis is configured).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let check_total = Family::<CheckLabels, Counter>::default();
        registry.register(
            "oidc_authz_check",
            "Decisions, by the rule that governed the request (\"\" when none did) and outcome",
            check_total.clone(),
        );
        let check_duration = AtomicHistogram::new(CHECK_BUCKETS);
        registry.register(
            "oidc_authz_check_duration_seconds",
            "Time to decide one Check, from request to verdict, IdP calls included",
            check_duration.clone(),
        );
        let idp_requests = Family::<IdpLabels, Counter>::default();
        registry.register(
            "oidc_authz_idp_requests",
            "Calls to identity providers, by rule, endpoint and result",
            idp_requests.clone(),
        );
        let idp_duration: Family<EndpointLabels, AtomicHistogram, fn() -> AtomicHistogram> =
            Family::new_with_constructor(|| AtomicHistogram::new(IDP_BUCKETS));
        registry.register(
            "oidc_authz_idp_request_duration_seconds",
            "Time of one call to an identity provider, by endpoint, failures included",
            idp_duration.clone(),
        );
        let refreshed = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "oidc_authz_sessions_refreshed",
            "Refresh-token grants, by result",
            refreshed.clone(),
        );
        let logouts = Family::<LogoutLabels, Counter>::default();
        registry.register(
            "oidc_authz_logouts",
            "Sessions ended, by kind of logout",
            logouts.clone(),
        );
        let rules = Family::<StateLabels, Gauge>::default();
        registry.register(
            "oidc_authz_rules",
            "Rules by state (not_ready: enabled, but its identity provider is not ready)",
            rules.clone(),
        );
        // Always present, so that a dashboard or a check finds every family the design lists; 0
        // when no Redis is configured, as nothing answers.
        let redis_up = Gauge::default();
        registry.register(
            "oidc_authz_redis_up",
            "1 when the session Redis answered a PING at this scrape; 0 when it did not, or when no Redis is configured",
            redis_up.clone(),
        );
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "oidc_authz_build_info",
            "The running build (always 1)",
            build_info,
        );
        let jwks_fetches = Family::<IssuerLabels, ScrapedCounter>::default();
        registry.register(
            "oidc_authz_jwks_fetches",
            "JWKS fetches, by issuer",
            jwks_fetches.clone(),
        );
        // Every refresh result and logout kind shows from the start, at 0.
        for &result in RefreshOutcome::ALL {
            drop(refreshed.get_or_create(&RefreshLabels { result }));
        }
        for &kind in LogoutKind::ALL {
            drop(logouts.get_or_create(&LogoutLabels { kind }));
        }
        let metrics = Metrics {
            registry,
            check_total,
            check_duration,
            idp_requests,
            idp_duration,
            refreshed,
            logouts,
            rules,
            redis_up,
            jwks_fetches,
            no_rule: RuleCounters::default(),
        };
        // The outcomes a request no rule governs can have show from the start, at 0 (and with
        // them the family's HELP and TYPE).
        for outcome in [Outcome::AllowDefault, Outcome::Forbidden, Outcome::BadRequest] {
            metrics.counter(None, outcome);
        }
        metrics
    }

    /// Counts one `Check` under `rule` (the governing rule, `None` when no rule governed) and
    /// its latency.
    pub fn record_check(&self, rule: Option<(&str, &RuleCounters)>, outcome: Outcome, elapsed: Duration) {
        self.record(rule, outcome);
        self.check_duration.observe(elapsed);
    }

    /// Counts one decision (`Check`, or the HTTP listener's login start and callback) under
    /// `rule`.
    pub fn record(&self, rule: Option<(&str, &RuleCounters)>, outcome: Outcome) {
        if let Some(counter) = self.counter(rule, outcome) {
            counter.inc();
        }
    }

    /// The counter of `outcome` under `rule`, looked up in its family the first time only.
    fn counter<'a>(
        &'a self,
        rule: Option<(&str, &'a RuleCounters)>,
        outcome: Outcome,
    ) -> Option<&'a Counter> {
        let (name, counters) = match rule {
            Some(rule) => rule,
            None => (NO_RULE, &self.no_rule),
        };
        let slot = counters.check.get(outcome as usize)?;
        Some(slot.get_or_init(|| {
            self.check_total.get_or_create_owned(&CheckLabels {
                rule: name.to_string(),
                outcome,
            })
        }))
    }

    /// Counts one refresh-token grant.
    pub fn record_refresh(&self, outcome: RefreshOutcome) {
        self.refreshed
            .get_or_create(&RefreshLabels { result: outcome })
            .inc();
    }

    /// Counts one logout.
    pub fn record_logout(&self, kind: LogoutKind) {
        self.logouts.get_or_create(&LogoutLabels { kind }).inc();
    }

    /// An IdP call made for `rule`.
    pub fn idp_call<'a>(&'a self, rule: IdpRule<'a>, endpoint: Endpoint) -> IdpCall<'a> {
        IdpCall {
            metrics: self,
            rule,
            endpoint,
        }
    }

    /// Forgets the series of rules that are `gone` (deleted or renamed), so that they do not
    /// pile up.
    pub fn forget_rules(&self, gone: &[&str]) {
        for &rule in gone {
            if rule == NO_RULE {
                continue;
            }
            for &outcome in Outcome::ALL {
                self.check_total.remove(&CheckLabels {
                    rule: rule.to_string(),
                    outcome,
                });
            }
            for &endpoint in Endpoint::ALL {
                for &result in IdpResult::ALL {
                    self.idp_requests.remove(&IdpLabels {
                        rule: rule.to_string(),
                        endpoint,
                        result,
                    });
                }
            }
        }
    }

    /// The Prometheus text, with what is read at scrape time set from `state`.
    pub fn render(&self, state: &ScrapeState) -> String {
        let r = state.rules;
        for (state, n) in [
            (RuleState::Enabled, r.enabled),
            (RuleState::Disabled, r.disabled),
            (RuleState::NotReady, r.not_ready),
        ] {
            self.rules
                .get_or_create(&StateLabels { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(up) = state.redis_up {
            self.redis_up.set(i64::from(up));
        }
        self.jwks_fetches.clear();
        for (issuer, n) in &state.jwks_fetches {
            self.jwks_fetches
                .get_or_create(&IssuerLabels {
                    issuer: issuer.clone(),
                })
                .0
                .store(*n, Ordering::Relaxed);
        }
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# the metrics could not be encoded");
        }
        out
    }

    /// `Check`s timed so far.
    #[cfg(test)]
    pub fn checks_timed(&self) -> u64 {
        self.check_duration.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &Metrics) -> String {
        m.render(&ScrapeState::default())
    }

    #[test]
    fn every_outcome_has_a_slot() {
        assert_eq!(Outcome::ALL.len(), OUTCOMES);
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
    }

    #[test]
    fn checks_are_counted_by_rule_and_outcome_and_timed() {
        let m = Metrics::new();
        let counters = RuleCounters::default();
        m.record_check(
            Some(("web", &counters)),
            Outcome::AllowSession,
            Duration::from_micros(70),
        );
        m.record_check(
            Some(("web", &counters)),
            Outcome::AllowSession,
            Duration::from_millis(3),
        );
        m.record_check(None, Outcome::BadRequest, Duration::from_secs(9));
        let text = scrape(&m);
        assert!(
            text.contains("oidc_authz_check_total{rule=\"web\",outcome=\"allow_session\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("oidc_authz_check_total{rule=\"\",outcome=\"bad_request\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE oidc_authz_check_total counter\n"), "{text}");
        assert!(
            text.contains("# TYPE oidc_authz_check_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("oidc_authz_check_duration_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("oidc_authz_check_duration_seconds_bucket{le=\"5\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("oidc_authz_check_duration_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("oidc_authz_check_duration_seconds_count 3\n"),
            "{text}"
        );
        assert!(text.contains("oidc_authz_redis_up 0\n"), "{text}");
        assert_eq!(m.checks_timed(), 3);
    }

    #[test]
    fn forgotten_rules_leave_the_output() {
        let m = Metrics::default();
        let counters = RuleCounters::default();
        m.record(Some(("old", &counters)), Outcome::Forbidden);
        m.idp_call(IdpRule::Named("old"), Endpoint::Token)
            .record(IdpResult::Http4xx, Duration::from_millis(1));
        assert!(scrape(&m).contains("rule=\"old\""));
        m.forget_rules(&["old"]);
        assert!(!scrape(&m).contains("rule=\"old\""), "{}", scrape(&m));
        assert!(
            scrape(&m).contains("oidc_authz_redis_up 0\n"),
            "no Redis configured: 0"
        );
    }
}
