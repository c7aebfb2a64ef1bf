//! Routing cost against the number of rules (issue 12): one blacklist rule of 10 conditions
//! against 1,000 rules of 10 conditions each (10,000), with a distinct exact domain per rule and
//! with every rule governing every host (the worst case: every condition in one bucket), for a
//! request matching no condition and for one matching the last rule. `route_linear`, the walk the
//! index replaced, is measured on the worst case for reference. After criterion's report, a
//! summary measured in the same run prints each case's time per decision, its ratio to the
//! one-rule case (the target is at most 2×), and how long compiling the 1,000 rules takes.
//!
//! `cargo bench --bench rules_scale`; `-- --quick` for a shorter run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;

use oidc_authz::config::{
    AllowedConfig, AuthorizationConfig, AuthorizationMode, ConditionConfig, DefaultAction, PathMatch,
    RuleConfig, RuleType,
};
use oidc_authz::decision::{route, route_linear, Route};
use oidc_authz::rules::normalize::RequestPath;
use oidc_authz::rules::route_index::RouteIndex;
use oidc_authz::rules::RuleSet;

const CONDITIONS_PER_RULE: usize = 10;

fn condition(path: String, path_match: PathMatch) -> ConditionConfig {
    ConditionConfig {
        domain: None,
        path: Some(path),
        path_match,
    }
}

/// Rule `i`: ten conditions under `/svc{i}/`, one exact, one regex, eight prefixes.
fn rule(i: usize, domains: Vec<String>) -> RuleConfig {
    let mut conditions = vec![
        condition(format!("/svc{i}/admin"), PathMatch::Prefix),
        condition(format!("/svc{i}/secret"), PathMatch::Exact),
        condition(format!("/svc{i}/report/[0-9]+"), PathMatch::Regex),
    ];
    for j in conditions.len()..CONDITIONS_PER_RULE {
        conditions.push(condition(format!("/svc{i}/area{j}"), PathMatch::Prefix));
    }
    RuleConfig {
        name: format!("rule-{i}"),
        enabled: true,
        kind: RuleType::Oidc,
        issuer: "https://idp.example.com".into(),
        discovery_url: None,
        redirect_url: "https://app.example.com/oauth2/callback".into(),
        client_id: "gateway".into(),
        client_secret: Some("client-secret".into()),
        client_secret_file: None,
        cookie_domain: String::new(),
        scope: String::new(),
        authorization: AuthorizationConfig {
            mode: AuthorizationMode::Blacklist,
            conditions,
        },
        domains,
        upstream_token: Default::default(),
        allowed: AllowedConfig::default(),
        audiences: Vec::new(),
        post_logout_redirect_url: None,
        insecure_allow_http: false,
        allow_unverified_email: false,
    }
}

/// `count` rules; each governs only `svc{i}.example.com` when `own_domains`, else every host.
fn configs(count: usize, own_domains: bool) -> Vec<RuleConfig> {
    (0..count)
        .map(|i| {
            let domains = if own_domains {
                vec![format!("svc{i}.example.com")]
            } else {
                Vec::new()
            };
            rule(i, domains)
        })
        .collect()
}

fn compile(configs: &[RuleConfig]) -> RuleSet {
    match RuleSet::compile(configs, DefaultAction::Allow) {
        Ok(set) => set,
        Err(errors) => panic!("the benchmark's rules should compile: {errors:?}"),
    }
}

type Router = for<'a> fn(&'a RuleSet, &str, &RequestPath) -> Route<'a>;

/// One measured decision.
struct Case {
    name: &'static str,
    set: &'static RuleSet,
    host: &'static str,
    path: RequestPath,
    router: Router,
    /// What the decision must be: `Some(rule name)` for a login, `None` for `default_action`.
    expect: Option<&'static str>,
}

impl Case {
    fn new(
        name: &'static str,
        set: &'static RuleSet,
        host: &'static str,
        path: &str,
        router: Router,
        expect: Option<&'static str>,
    ) -> Case {
        let case = Case {
            name,
            set,
            host,
            path: RequestPath::parse(path),
            router,
            expect,
        };
        let decided = match case.decide() {
            Route::Login { rule, .. } => Some(rule.name.as_str()),
            Route::Default(_) => None,
            other => panic!("{name}: unexpected route {other:?}"),
        };
        assert_eq!(decided, expect, "{name}");
        case
    }

    fn decide(&self) -> Route<'static> {
        (self.router)(self.set, self.host, &self.path)
    }
}

fn leak(set: RuleSet) -> &'static RuleSet {
    Box::leak(Box::new(set))
}

fn cases() -> Vec<Case> {
    let small = leak(compile(&configs(1, false)));
    let domains = leak(compile(&configs(1_000, true)));
    let every_host = leak(compile(&configs(1_000, false)));
    assert!(
        small.route_index().is_some()
            && domains.route_index().is_some()
            && every_host.route_index().is_some()
    );
    let host = "app.example.com";
    vec![
        Case::new("1 rule / none", small, host, "/home/page", route, None),
        Case::new(
            "1 rule / match prefix",
            small,
            host,
            "/svc0/area7/x",
            route,
            Some("rule-0"),
        ),
        Case::new(
            "1 rule / match regex",
            small,
            host,
            "/svc0/report/42",
            route,
            Some("rule-0"),
        ),
        Case::new(
            "1000 own-domain / none",
            domains,
            "svc500.example.com",
            "/home/page",
            route,
            None,
        ),
        Case::new(
            "1000 own-domain / other host",
            domains,
            host,
            "/svc999/admin",
            route,
            None,
        ),
        Case::new(
            "1000 own-domain / last rule",
            domains,
            "svc999.example.com",
            "/svc999/area7/x",
            route,
            Some("rule-999"),
        ),
        Case::new(
            "1000 every-host / none",
            every_host,
            host,
            "/home/page",
            route,
            None,
        ),
        Case::new(
            "1000 every-host / last prefix",
            every_host,
            host,
            "/svc999/area7/x",
            route,
            Some("rule-999"),
        ),
        Case::new(
            "1000 every-host / last regex",
            every_host,
            host,
            "/svc999/report/42",
            route,
            Some("rule-999"),
        ),
        Case::new(
            "1000 every-host / none (walk)",
            every_host,
            host,
            "/home/page",
            route_linear,
            None,
        ),
    ]
}

/// Nanoseconds per decision: the median of 21 batches of about 20 ms each.
fn per_decision(case: &Case) -> f64 {
    let start = Instant::now();
    let mut calibration = 0u64;
    while start.elapsed() < Duration::from_millis(20) {
        black_box(case.decide());
        calibration += 1;
    }
    let iterations = calibration.max(1);
    let mut samples: Vec<f64> = (0..21)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                black_box((case.router)(
                    black_box(case.set),
                    black_box(case.host),
                    black_box(&case.path),
                ));
            }
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn summary(cases: &[Case]) {
    println!("\nrules_scale summary (median of 21 batches, nanoseconds per decision; host and path parsed beforehand)");
    let times: Vec<f64> = cases.iter().map(per_decision).collect();
    let baseline = |name: &str| {
        cases
            .iter()
            .zip(&times)
            .find(|(case, _)| case.name == name)
            .map(|(_, t)| *t)
            .unwrap_or(f64::NAN)
    };
    for (case, time) in cases.iter().zip(&times) {
        // Each case against the one-rule case of the same outcome.
        let reference = match case.expect {
            None => baseline("1 rule / none"),
            Some(_) if case.name.contains("regex") => baseline("1 rule / match regex"),
            Some(_) => baseline("1 rule / match prefix"),
        };
        println!(
            "  {:<34} {:>10.1} ns   {:>6.2}× the one-rule case",
            case.name,
            time,
            time / reference
        );
    }
    for (label, own) in [("own domains", true), ("every host", false)] {
        let configs = configs(1_000, own);
        let mut runs: Vec<Duration> = (0..3)
            .map(|_| {
                let start = Instant::now();
                black_box(compile(&configs));
                start.elapsed()
            })
            .collect();
        runs.sort();
        let set = compile(&configs);
        let mut index_runs: Vec<Duration> = (0..3)
            .map(|_| {
                let start = Instant::now();
                black_box(RouteIndex::build(set.all()).is_ok());
                start.elapsed()
            })
            .collect();
        index_runs.sort();
        println!(
            "  RuleSet::compile, 1000 rules / 10000 conditions, {label}: {:.1} ms, of which the cross-rule index {:.1} ms (medians of 3)",
            runs[1].as_secs_f64() * 1e3,
            index_runs[1].as_secs_f64() * 1e3
        );
    }
}

fn main() {
    let cases = cases();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    {
        let mut group = criterion.benchmark_group("route");
        for case in &cases {
            group.bench_function(case.name, |b| {
                b.iter(|| (case.router)(black_box(case.set), black_box(case.host), black_box(&case.path)))
            });
        }
        group.finish();
    }
    criterion.final_summary();
    summary(&cases);
}
