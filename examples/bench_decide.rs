//! In-process companion to `bench/check_cpu.sh`: where the time of one valid-session `Check`
//! goes, without the network, HTTP/2 or the scheduler. It times, in a loop on one thread, the
//! pieces of the hot path on the exact request the load benchmark sends.
//!
//! Usage: `bench_decide CONFIG.yaml REQUEST_FILE [SECONDS_PER_ITEM]`
//! (REQUEST_FILE is the gRPC-framed body written by `bench_request`.)
//!
//! Wall time per call (best of five slices) on a shared machine: compare the lines with each
//! other, not across runs.

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use oidc_authz::app::App;
use oidc_authz::check::CheckService;
use oidc_authz::config::Config;
use oidc_authz::session::cookies::RequestCookies;
use oidc_authz::session::seal::{Purpose, Sealer};
use oidc_authz::session::Session;
use prost::Message;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bench_decide CONFIG.yaml REQUEST_FILE [SECONDS_PER_ITEM]");
        return ExitCode::from(2);
    }
    let secs: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench_decide: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(
        Path::new(&args[1]),
        Path::new(&args[2]),
        Duration::from_secs_f64(secs),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_decide: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `f` for about `budget`, in five slices, and prints the best slice's mean time per call
/// (the least disturbed by other work on the machine).
async fn time<F, Fut, T>(label: &str, budget: Duration, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..1000 {
        black_box(f().await);
    }
    let slice = budget / 5;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let mut iters: u64 = 0;
        let start = Instant::now();
        while start.elapsed() < slice {
            for _ in 0..200 {
                black_box(f().await);
            }
            iters += 200;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / iters as f64);
    }
    println!("{label:<58} {:>9.2} us", best / 1000.0);
    best
}

async fn run(config_path: &Path, request_path: &Path, budget: Duration) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let rules = oidc_authz::rule_source::initial_rules(&config).map_err(|e| e.to_string())?;
    let framed =
        std::fs::read(request_path).map_err(|e| format!("cannot read {}: {e}", request_path.display()))?;
    if framed.len() < 5 || framed[0] != 0 {
        return Err("not a gRPC-framed, uncompressed message".into());
    }
    let body = framed[5..].to_vec();
    let request = CheckRequest::decode(body.as_slice()).map_err(|e| e.to_string())?;
    let cookie = request
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .and_then(|h| h.headers.get("cookie"))
        .cloned()
        .ok_or("the request has no cookie header")?;

    let app: Arc<App> = App::start(&config, rules);
    let service = CheckService::new(app.clone());
    let now = oidc_authz::app::now();
    let name = app.sessions.cookie_name.clone();

    // The size of the decision's future: it is moved (copied) as it is wrapped and boxed.
    let empty = std::collections::HashMap::new();
    let facts = oidc_authz::authorize::RequestFacts {
        method: "GET",
        scheme: "https",
        authority: "app.bench.test",
        raw_path: "/",
        headers: &empty,
    };
    let future = oidc_authz::authorize::authorize(&app, facts, now);
    let future_bytes = std::mem::size_of_val(&future);
    drop(future);

    // The request must take the session path, or the numbers mean nothing.
    let before = allow_sessions(&app);
    let response = service
        .check(tonic::Request::new(request.clone()))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let after = allow_sessions(&app);
    if after != before + 1 || response.status.as_ref().map(|s| s.code) != Some(0) {
        return Err("the request was not allowed through the session path".into());
    }
    let response_bytes = response.encode_to_vec();
    let noop_answer = CheckResponse::default().encode_to_vec();
    println!(
        "request {} bytes, cookie {} bytes, response {} bytes (noop's: {} bytes), decision future {} bytes",
        body.len(),
        cookie.len(),
        response_bytes.len(),
        noop_answer.len(),
        future_bytes
    );

    let b = budget;
    println!("-- what the floor (noop) also does");
    time("prost decode CheckRequest", b, || async {
        CheckRequest::decode(black_box(body.as_slice())).ok()
    })
    .await;
    println!("-- what oidc-authz does on top");
    let clone = time("CheckRequest clone (harness cost, subtract it)", b, || async {
        black_box(&request).clone()
    })
    .await;
    let full = time("CheckService::check (clone included)", b, || async {
        service
            .check(tonic::Request::new(black_box(&request).clone()))
            .await
            .ok()
    })
    .await;
    println!(
        "{:<58} {:>9.2} us",
        "  => decision (check minus clone)",
        (full - clone) / 1000.0
    );
    time("  SessionStore::load (codec + revocation look-up)", b, || async {
        app.session_store.load(black_box(&cookie), now).await
    })
    .await;
    time("  SessionCodec::read_session", b, || async {
        app.sessions.read_session(black_box(&cookie), now)
    })
    .await;
    time(
        "    RequestCookies::parse (session value + upstream cookie, one pass)",
        b,
        || async { RequestCookies::parse(black_box(&cookie), &name).upstream },
    )
    .await;
    let sealed = RequestCookies::parse(&cookie, &name)
        .session
        .ok_or("no session cookie")?
        .into_owned();
    let sealer = Sealer::new(&config.session.secrets);
    time(
        "    Sealer::open (base64 decode + XChaCha20-Poly1305)",
        b,
        || async { sealer.open(Purpose::Session, black_box(&sealed)) },
    )
    .await;
    let plain = sealer
        .open(Purpose::Session, &sealed)
        .ok_or("the session cookie does not open")?;
    time("    serde_json::from_slice::<Session>", b, || async {
        serde_json::from_slice::<Session>(black_box(&plain)).ok()
    })
    .await;
    time("prost encode the CheckResponse", b, || async {
        black_box(&response).encode_to_vec()
    })
    .await;
    time("prost encode noop's CheckResponse", b, || async {
        CheckResponse::default().encode_to_vec()
    })
    .await;
    Ok(())
}

/// `oidc_authz_check_total{outcome="allow_session"}`, summed over rules, as `/metrics` shows it.
fn allow_sessions(app: &App) -> u64 {
    app.metrics
        .render(&app.scrape_state())
        .lines()
        .filter(|l| l.starts_with("oidc_authz_check_total{") && l.contains("outcome=\"allow_session\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
