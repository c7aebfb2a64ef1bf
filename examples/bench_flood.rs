//! A flood of distinct credentials against a running oidc-authz, for `bench/memory_flood.sh`
//! (issue 12, DESIGN P6: memory is bounded by the configured cache capacities).
//!
//! Usage:
//!   bench_flood --config CONFIG.yaml --grpc 127.0.0.1:PORT --url URL \
//!       --kind valid-cookies|invalid-cookies|valid-tokens|invalid-tokens --count N \
//!       [--concurrency 64] [--connections 2] \
//!       [--signing-key EC_P256_PKCS8.pem --kid KID] [--issuer URL] [--audience AUD]
//!
//! Sends N ext_authz `Check` requests, each with a credential no other request of this run (or
//! of any other run: every credential carries a random run tag) has used, at most
//! `--concurrency` in flight over `--connections` HTTP/2 connections. Credentials are made as
//! they are sent, never held all at once:
//!
//! - `valid-cookies`: a fresh `Session` (its own id and sub, a ~950-byte ID token) sealed with
//!   the config's `session.secrets` through the library's `SessionCodec`, as a browser would
//!   hold it after a login, next to an unrelated cookie. The URL must be one the rule requires a
//!   login for. Expected: allow (`allow_session`).
//! - `invalid-cookies`: the session cookie's name with random base64url of a sealed cookie's
//!   length (it does not open). Not a navigation (`accept: application/json`), so the expected
//!   answer is 401 (`unauthorized`).
//! - `valid-tokens`: an ES256 JWT signed with `--signing-key` (PKCS#8 P-256 PEM, published by
//!   the issuer under `--kid`): its own `sub` and `jti`, `iss` = the rule's issuer (or
//!   `--issuer`), `aud` = the rule's client_id (or `--audience`), exp = now + 1h, a verified
//!   email in the rule's first allowed domain. Expected: allow (`allow_bearer`).
//! - `invalid-tokens`: the same shape with a random 64-byte signature under the right `kid`.
//!   Expected: 401 (`unauthorized`).
//!
//! Prints one `result` line: the number of answers by gRPC status code inside the
//! `CheckResponse` (0 ok, 7 permission denied, 14 unavailable, 16 unauthenticated), transport
//! errors, how many matched the kind's expected code, and the elapsed time. Exits 0 when every
//! answer was the expected one, 1 otherwise (2 on a usage or setup error).

mod bench_common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::{Parser, ValueEnum};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oidc_authz::config::{Config, SessionStoreKind};
use oidc_authz::decision::{route, Route};
use oidc_authz::identity::Identity;
use oidc_authz::rules::normalize::{normalize_host, RequestPath};
use oidc_authz::session::{Session, SessionCodec};
use rand::RngCore;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    ValidCookies,
    InvalidCookies,
    ValidTokens,
    InvalidTokens,
}

#[derive(Parser, Debug)]
#[command(about = "Flood oidc-authz with distinct credentials (bench/memory_flood.sh)")]
struct Args {
    /// The oidc-authz config (its session secrets seal the cookies; its rules pick the target).
    #[arg(long)]
    config: PathBuf,
    /// oidc-authz's gRPC listener, host:port.
    #[arg(long)]
    grpc: String,
    /// The URL every request asks for; its rule must require a login.
    #[arg(long)]
    url: String,
    #[arg(long, value_enum)]
    kind: Kind,
    #[arg(long)]
    count: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// PKCS#8 PEM of an EC P-256 key (valid-tokens).
    #[arg(long)]
    signing_key: Option<PathBuf>,
    #[arg(long)]
    kid: Option<String>,
    /// The tokens' `iss` (default: the rule's issuer).
    #[arg(long)]
    issuer: Option<String>,
    /// The tokens' `aud` (default: the rule's client_id).
    #[arg(long)]
    audience: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench_flood: no tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench_flood: {e}");
            ExitCode::from(2)
        }
    }
}

/// Everything a request is made from, shared by the tasks.
struct Generator {
    kind: Kind,
    /// Random per run: no two runs send the same credential.
    run_tag: String,
    authority: String,
    raw_path: String,
    scheme: String,
    issuer: String,
    audience: String,
    client_id: String,
    email_domain: String,
    codec: SessionCodec,
    cookie_domain: Option<String>,
    cookie_name: String,
    /// Length of a sealed session cookie value (what an invalid cookie imitates).
    sealed_len: usize,
    signing: Option<(EncodingKey, String)>,
}

impl Generator {
    fn session(&self, i: u64, now: u64) -> Session {
        let sub = format!("flood-{}-{i:010}", self.run_tag);
        let identity = Identity {
            sub: sub.clone(),
            email: Some(format!("user{i}.{}@{}", self.run_tag, self.email_domain)),
            email_unverified: false,
            preferred_username: Some(format!("user{i}")),
            groups: vec!["staff".into(), "eng".into(), "oncall".into()],
            sid: Some(random_b64(16)),
        };
        let id_token = bench_common::fake_id_token(&self.issuer, &self.client_id, &identity, now);
        Session {
            id: oidc_authz::session::new_session_id(),
            iss: self.issuer.clone(),
            client_id: self.client_id.clone(),
            identity,
            id_token,
            access_token: None,
            refresh_token: None,
            created_at: now,
            created_at_ms: 0,
            expires_at: now + 3600,
            access_expires_at: None,
        }
    }

    /// The `cookie` header of a browser holding a freshly sealed session.
    fn valid_cookie(&self, i: u64, now: u64) -> String {
        let session = self.session(i, now);
        let lines =
            self.codec
                .write_session(&session, self.cookie_domain.as_deref(), std::iter::empty(), now);
        let mut pairs: Vec<String> = vec![format!("_ga=GA1.1.{i}.1714042519")];
        pairs.extend(
            lines
                .iter()
                .map(|l| l.split(';').next().unwrap_or("").trim().to_string()),
        );
        pairs.join("; ")
    }

    fn claims(&self, i: u64, now: u64) -> serde_json::Value {
        serde_json::json!({
            "iss": self.issuer,
            "sub": format!("flood-{}-{i:010}", self.run_tag),
            "aud": self.audience,
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "jti": format!("{}-{i}-{}", self.run_tag, random_b64(12)),
            "azp": self.audience,
            "scope": "openid email profile api.read api.write",
            "email": format!("user{i}.{}@{}", self.run_tag, self.email_domain),
            "email_verified": true,
            "preferred_username": format!("user{i}"),
            "name": "Flood Test User",
            "groups": ["staff", "eng", "oncall", "platform-readers", "platform-writers"],
            "sid": random_b64(16),
            "auth_time": now,
            "acr": "urn:mace:incommon:iap:silver",
            "amr": ["pwd", "mfa"],
        })
    }

    fn valid_token(&self, i: u64, now: u64) -> Result<String, String> {
        let (key, kid) = self
            .signing
            .as_ref()
            .ok_or("valid-tokens needs --signing-key and --kid")?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &self.claims(i, now), key).map_err(|e| format!("cannot sign: {e}"))
    }

    fn invalid_token(&self, i: u64, now: u64) -> String {
        let kid = self.signing.as_ref().map_or("unknown", |(_, k)| k.as_str());
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": kid});
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(self.claims(i, now).to_string()),
            random_b64(64)
        )
    }

    /// The (header name, value) carrying request `i`'s credential.
    fn credential(&self, i: u64, now: u64) -> Result<(&'static str, String), String> {
        Ok(match self.kind {
            Kind::ValidCookies => ("cookie", self.valid_cookie(i, now)),
            Kind::InvalidCookies => (
                "cookie",
                format!(
                    "_ga=GA1.1.{i}.1714042519; {}={}",
                    self.cookie_name,
                    random_b64_len(self.sealed_len)
                ),
            ),
            Kind::ValidTokens => ("authorization", format!("Bearer {}", self.valid_token(i, now)?)),
            Kind::InvalidTokens => ("authorization", format!("Bearer {}", self.invalid_token(i, now))),
        })
    }

    fn request(&self, i: u64) -> Result<CheckRequest, String> {
        let now = oidc_authz::app::now();
        let (name, value) = self.credential(i, now)?;
        let mut headers: HashMap<String, String> = HashMap::with_capacity(10);
        for (k, v) in [
            (":authority", self.authority.as_str()),
            (":method", "GET"),
            (":path", self.raw_path.as_str()),
            (":scheme", self.scheme.as_str()),
            ("user-agent", "bench_flood/1.0"),
            ("accept", "application/json"),
            ("x-forwarded-proto", self.scheme.as_str()),
        ] {
            headers.insert(k.to_string(), v.to_string());
        }
        headers.insert("x-request-id".into(), format!("flood-{}-{i}", self.run_tag));
        headers.insert(name.into(), value);
        Ok(CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    time: None,
                    http: Some(attribute_context::HttpRequest {
                        id: i.to_string(),
                        method: "GET".into(),
                        headers,
                        path: self.raw_path.clone(),
                        host: self.authority.clone(),
                        scheme: self.scheme.clone(),
                        protocol: "HTTP/2".into(),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
        })
    }
}

fn random_b64(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// Random base64url of exactly `len` characters.
fn random_b64_len(len: usize) -> String {
    let mut s = random_b64(len * 3 / 4 + 3);
    s.truncate(len);
    s
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    denied: AtomicU64,
    unavailable: AtomicU64,
    unauthenticated: AtomicU64,
    other: AtomicU64,
    rpc_errors: AtomicU64,
    done: AtomicU64,
    /// The first answer that was not the expected one, for the log.
    first_unexpected: Mutex<Option<String>>,
}

fn code_of(response: &CheckResponse) -> Option<i32> {
    response.status.as_ref().map(|s| s.code)
}

async fn run(args: Args) -> Result<bool, String> {
    if args.count == 0 || args.concurrency == 0 || args.connections == 0 {
        return Err("--count, --concurrency and --connections must be positive".into());
    }
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    if !matches!(config.session.store, SessionStoreKind::Cookie) && args.kind == Kind::ValidCookies {
        return Err("valid-cookies needs `session.store: cookie`".into());
    }
    let rules = oidc_authz::rule_source::initial_rules(&config).map_err(|e| e.to_string())?;
    let parsed = url::Url::parse(&args.url).map_err(|e| format!("`{}` is not a URL: {e}", args.url))?;
    let (authority, raw_path) = bench_common::authority_and_path(&parsed)?;
    let rule = match route(
        &rules,
        &normalize_host(&authority),
        &RequestPath::parse(&raw_path),
    ) {
        Route::Login { rule, .. } => rule,
        other => {
            return Err(format!(
                "`{}` does not need a login ({}); pick a URL a rule protects",
                args.url,
                other.explain().reason
            ))
        }
    };
    let signing = match (&args.signing_key, &args.kid) {
        (Some(path), Some(kid)) => {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let key = EncodingKey::from_ec_pem(&pem)
                .map_err(|e| format!("{}: not an EC PEM key: {e}", path.display()))?;
            Some((key, kid.clone()))
        }
        (None, None) => None,
        _ => return Err("--signing-key and --kid go together".into()),
    };
    if args.kind == Kind::ValidTokens && signing.is_none() {
        return Err("valid-tokens needs --signing-key and --kid".into());
    }
    let mut generator = Generator {
        kind: args.kind,
        run_tag: random_b64(6),
        authority,
        raw_path,
        scheme: parsed.scheme().to_string(),
        issuer: args.issuer.clone().unwrap_or_else(|| rule.issuer.clone()),
        audience: args.audience.clone().unwrap_or_else(|| rule.client_id.clone()),
        client_id: rule.client_id.clone(),
        email_domain: rule
            .allowed
            .email_domains
            .first()
            .cloned()
            .unwrap_or_else(|| "example.com".into()),
        codec: SessionCodec::new(&config.session),
        cookie_domain: rule.cookie_domain.clone(),
        cookie_name: config.session.cookie_name.clone(),
        sealed_len: 0,
        signing,
    };
    // One sample of each credential: its size for the log, and the sealed length.
    let now = oidc_authz::app::now();
    let sample_cookie = generator.valid_cookie(u64::MAX, now);
    let sealed = sample_cookie
        .split("; ")
        .find_map(|p| p.strip_prefix(&format!("{}=", generator.cookie_name)))
        .ok_or("the session codec wrote no single session cookie (chunked?)")?;
    generator.sealed_len = sealed.len();
    let sample = generator.credential(u64::MAX - 1, now)?;
    let session_sample = generator.session(0, now);
    eprintln!(
        "bench_flood: kind={:?} rule={} url={} count={} concurrency={} connections={} credential_bytes={} sealed_cookie_bytes={} id_token_bytes={}",
        args.kind,
        rule.name,
        args.url,
        args.count,
        args.concurrency,
        args.connections,
        sample.1.len(),
        generator.sealed_len,
        session_sample.id_token.len()
    );
    // What one kept entry is counted as by the cache it lands in (src/session/opened.rs: the
    // sealed value plus `Session::approx_bytes`; src/oidc/provider.rs `token_weight`). Invalid
    // credentials are never kept.
    let entry_weight = match args.kind {
        Kind::ValidCookies => generator.sealed_len + session_sample.approx_bytes(),
        // `token_weight` is private to the crate: its formula, 3 × length + 512.
        Kind::ValidTokens => 3 * sample.1.trim_start_matches("Bearer ").len() + 512,
        Kind::InvalidCookies | Kind::InvalidTokens => 0,
    };
    let expected: i32 = match args.kind {
        Kind::ValidCookies | Kind::ValidTokens => 0,
        Kind::InvalidCookies | Kind::InvalidTokens => 16,
    };

    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let endpoint = Endpoint::from_shared(format!("http://{}", args.grpc))
            .map_err(|e| format!("bad --grpc: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        let channel: Channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", args.grpc))?;
        clients.push(AuthorizationClient::new(channel));
    }

    let generator = Arc::new(generator);
    let counts = Arc::new(Counts::default());
    let semaphore = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let step = (args.count / 10).max(1);
    let mut next_report = step;
    for i in 0..args.count {
        let permit = semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| format!("a request task failed: {e}"))??;
        }
        let generator = generator.clone();
        let task_counts = counts.clone();
        let mut client = clients[(i as usize) % clients.len()].clone();
        tasks.spawn(async move {
            let _permit = permit;
            let request = generator.request(i)?;
            match client.check(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    let code = code_of(&response);
                    match code {
                        Some(0) => &task_counts.ok,
                        Some(7) => &task_counts.denied,
                        Some(14) => &task_counts.unavailable,
                        Some(16) => &task_counts.unauthenticated,
                        _ => &task_counts.other,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    if code != Some(expected) {
                        let mut first = task_counts.first_unexpected.lock().unwrap();
                        if first.is_none() {
                            *first = Some(format!("{response:?}").chars().take(1500).collect());
                        }
                    }
                }
                Err(status) => {
                    task_counts.rpc_errors.fetch_add(1, Ordering::Relaxed);
                    let mut first = task_counts.first_unexpected.lock().unwrap();
                    if first.is_none() {
                        *first = Some(format!("rpc error: {status}"));
                    }
                }
            }
            task_counts.done.fetch_add(1, Ordering::Relaxed);
            Ok::<(), String>(())
        });
        if i + 1 >= next_report {
            let done = counts.done.load(Ordering::Relaxed);
            eprintln!(
                "bench_flood: {:?} sent {}/{} answered {} ({:.0}/s)",
                args.kind,
                i + 1,
                args.count,
                done,
                done as f64 / start.elapsed().as_secs_f64().max(1e-9)
            );
            next_report += step;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| format!("a request task failed: {e}"))??;
    }
    let elapsed = start.elapsed().as_secs_f64();

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let as_expected = match expected {
        0 => get(&counts.ok),
        _ => get(&counts.unauthenticated),
    };
    println!(
        "result kind={} requests={} ok={} unauthenticated={} denied={} unavailable={} other={} rpc_errors={} expected_code={} as_expected={} credential_bytes={} entry_weight={} elapsed_s={:.2} rate_per_s={:.0}",
        args.kind.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default(),
        args.count,
        get(&counts.ok),
        get(&counts.unauthenticated),
        get(&counts.denied),
        get(&counts.unavailable),
        get(&counts.other),
        get(&counts.rpc_errors),
        expected,
        as_expected,
        sample.1.len(),
        entry_weight,
        elapsed,
        args.count as f64 / elapsed.max(1e-9)
    );
    if let Some(first) = counts.first_unexpected.lock().unwrap().as_ref() {
        eprintln!("bench_flood: first unexpected answer: {first}");
    }
    Ok(as_expected == args.count)
}
