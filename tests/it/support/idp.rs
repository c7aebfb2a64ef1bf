//! An in-process, hermetic OpenID Provider for integration tests.
//!
//! `TestIdp::start(IdpOptions::default()).await` binds `127.0.0.1:0` and serves:
//!
//! | path | what |
//! |---|---|
//! | `GET /.well-known/openid-configuration` | discovery document |
//! | `GET /jwks` | the published signing keys |
//! | `GET /authorize` | auto-approving authorization endpoint (code flow + PKCE S256 only) |
//! | `POST /token` | `authorization_code` and `refresh_token` grants |
//! | `GET\|POST /userinfo` | claims for a bearer access token issued here |
//! | `GET\|POST /session/end` | RP-initiated logout (only with `with_end_session`) |
//!
//! Everything is in memory; nothing leaves the loopback interface. Signing keys are pre-generated
//! fixtures (`keys/*.pem`, made with `openssl genpkey`, for tests only), so starting an IdP costs
//! nothing. Counters count every request that reached the IdP, including the ones answered 503
//! while it is down.
//!
//! Clones share one IdP. Its tasks run on the runtime that called `start` and end with it (each
//! `#[tokio::test]` has its own runtime), or earlier with [`TestIdp::shutdown`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey};
use rand::RngCore as _;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Lifetime of an authorization code.
pub const CODE_TTL_SECS: u64 = 60;
/// Lifetime of issued access and ID tokens (and of `default_claims`).
pub const TOKEN_TTL_SECS: u64 = 3600;
/// The back-channel logout event name (OIDC Back-Channel Logout 1.0).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

// ---------------------------------------------------------------------------------------------
// Options

/// How the IdP is configured at start.
#[derive(Clone, Debug)]
pub struct IdpOptions {
    pub client_id: String,
    pub client_secret: String,
    /// `token_endpoint_auth_methods_supported`; only these methods are accepted by `/token`.
    pub auth_methods: Vec<String>,
    /// Advertise and serve `end_session_endpoint` (`/session/end`).
    pub with_end_session: bool,
    /// Start in the `down` state (every endpoint answers 503).
    pub start_down: bool,
    /// Also publish an EC P-256 key (its own kid) and advertise ES256; see [`Mint::Es256`].
    pub with_ec_key: bool,
    /// Registered redirect URIs; empty accepts any absolute http(s) URL.
    pub redirect_uris: Vec<String>,
}

impl Default for IdpOptions {
    fn default() -> Self {
        IdpOptions {
            client_id: "gateway".to_string(),
            client_secret: "s3cret-s3cret".to_string(),
            auth_methods: vec![
                "client_secret_basic".to_string(),
                "client_secret_post".to_string(),
            ],
            with_end_session: true,
            start_down: false,
            with_ec_key: false,
            redirect_uris: Vec::new(),
        }
    }
}

/// How a token is minted by [`TestIdp::mint_with`] (and by the token endpoint, see
/// [`TestIdp::set_id_token_mint`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mint {
    /// RS256 with the current key; header `{"alg":"RS256","typ":"JWT","kid":<current>}`.
    #[default]
    Normal,
    /// RS256 with the current key, but no `kid` in the header.
    NoKid,
    /// Header exactly `{"alg":"none"}`, empty signature (`<h>.<c>.`).
    AlgNone,
    /// Header `{"alg":"none","kid":<current>}`, empty signature.
    AlgNoneWithKid,
    /// HS256 keyed with the current RSA public key's SPKI PEM text (as published by
    /// `openssl pkey -pubout`, trailing newline included); header kid = current.
    Hs256WithPublicKey,
    /// HS256 keyed with the current RSA public key's SPKI DER bytes; header kid = current.
    Hs256WithPublicKeyDer,
    /// HS256 keyed with the client secret (not advertised by discovery); header kid = current.
    Hs256WithClientSecret,
    /// A valid RS256 token with one signature byte flipped.
    BadSignature,
    /// RS256 signed by an unpublished key, with a kid that is not in the JWKS
    /// (the same kid for every call on one IdP).
    UnknownKid,
    /// RS256 signed by an unpublished key, but with the current (published) kid.
    OtherKey,
    /// RS384 with the current key and kid (a real key, an algorithm discovery does not advertise).
    Rs384,
    /// ES256 with the IdP's EC P-256 key; its kid is published only with `with_ec_key`.
    Es256,
}

impl Mint {
    /// Every variant that a relying party trusting only this IdP's JWKS and its advertised
    /// algorithms must reject (`Es256` too unless the IdP runs `with_ec_key`; `NoKid` is
    /// acceptable while the JWKS holds exactly one key).
    pub const MUST_REJECT: [Mint; 9] = [
        Mint::AlgNone,
        Mint::AlgNoneWithKid,
        Mint::Hs256WithPublicKey,
        Mint::Hs256WithPublicKeyDer,
        Mint::Hs256WithClientSecret,
        Mint::BadSignature,
        Mint::UnknownKid,
        Mint::OtherKey,
        Mint::Rs384,
    ];
}

/// Reachability of the IdP, see [`TestIdp::set_availability`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Normal service.
    Up,
    /// Every endpoint answers 503 (`set_down(true)`).
    Down503,
    /// Connections are accepted and closed at once; open keep-alive connections are cut.
    Refuse,
    /// Connections are accepted but never answered (until the availability changes, when they
    /// are closed); open keep-alive connections are cut. Tests using this wait for timeouts.
    Stall,
}

impl Availability {
    fn to_u8(self) -> u8 {
        match self {
            Availability::Up => 0,
            Availability::Down503 => 1,
            Availability::Refuse => 2,
            Availability::Stall => 3,
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Availability::Down503,
            2 => Availability::Refuse,
            3 => Availability::Stall,
            _ => Availability::Up,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Key fixtures

const RSA_FIXTURES: [(&str, &str); 8] = [
    (include_str!("keys/rsa1.pem"), include_str!("keys/rsa1.pub.pem")),
    (include_str!("keys/rsa2.pem"), include_str!("keys/rsa2.pub.pem")),
    (include_str!("keys/rsa3.pem"), include_str!("keys/rsa3.pub.pem")),
    (include_str!("keys/rsa4.pem"), include_str!("keys/rsa4.pub.pem")),
    (include_str!("keys/rsa5.pem"), include_str!("keys/rsa5.pub.pem")),
    (include_str!("keys/rsa6.pem"), include_str!("keys/rsa6.pub.pem")),
    (include_str!("keys/rsa7.pem"), include_str!("keys/rsa7.pub.pem")),
    (include_str!("keys/rsa8.pem"), include_str!("keys/rsa8.pub.pem")),
];
const EC_FIXTURE: &str = include_str!("keys/ec1.pem");
/// Index of the RSA fixture that is never published by any IdP.
const UNPUBLISHED: usize = 0;

struct RsaKey {
    enc: EncodingKey,
    n: String,
    e: String,
    pub_pem: &'static str,
    pub_der: Vec<u8>,
}

struct EcKey {
    enc: EncodingKey,
    x: String,
    y: String,
}

fn rsa_pool() -> &'static [RsaKey] {
    static POOL: OnceLock<Vec<RsaKey>> = OnceLock::new();
    POOL.get_or_init(|| {
        RSA_FIXTURES
            .iter()
            .map(|(private, public)| {
                let enc = EncodingKey::from_rsa_pem(private.as_bytes()).expect("RSA fixture");
                let jwk = Jwk::from_encoding_key(&enc, Algorithm::RS256).expect("RSA JWK");
                let AlgorithmParameters::RSA(params) = jwk.algorithm else {
                    panic!("RSA fixture gave a non-RSA JWK");
                };
                let body: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
                let pub_der = STANDARD.decode(body).expect("public key fixture");
                RsaKey {
                    enc,
                    n: params.n,
                    e: params.e,
                    pub_pem: public,
                    pub_der,
                }
            })
            .collect()
    })
}

fn ec_key() -> &'static EcKey {
    static KEY: OnceLock<EcKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let enc = EncodingKey::from_ec_pem(EC_FIXTURE.as_bytes()).expect("EC fixture");
        let jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).expect("EC JWK");
        let AlgorithmParameters::EllipticCurve(params) = jwk.algorithm else {
            panic!("EC fixture gave a non-EC JWK");
        };
        EcKey {
            enc,
            x: params.x,
            y: params.y,
        }
    })
}

/// Process-wide rotation over the publishable part of the RSA pool.
static NEXT_KEY: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------------------------
// State

struct PublishedKey {
    kid: String,
    key: usize,
}

struct KeyState {
    published: Vec<PublishedKey>,
    current: usize,
    seq: usize,
}

impl KeyState {
    /// A new kid on key material that this IdP does not publish now (while the pool of 7
    /// publishable keys allows). Material comes from a process-wide rotation over the pool,
    /// so IdPs alive at the same time mostly differ too.
    fn new_key(&mut self) -> PublishedKey {
        let publishable = RSA_FIXTURES.len() - 1;
        let mut key = 0;
        for _ in 0..publishable {
            key = 1 + NEXT_KEY.fetch_add(1, Ordering::Relaxed) % publishable;
            if !self.published.iter().any(|p| p.key == key) {
                break;
            }
        }
        self.seq += 1;
        PublishedKey {
            kid: format!("rsa-{}-{}", self.seq, random_token(6)),
            key,
        }
    }
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    nonce: String,
    code_challenge: String,
    sub: String,
    scope: String,
    expires_at: u64,
}

#[derive(Clone)]
struct RefreshGrant {
    client_id: String,
    sub: String,
    scope: String,
    nonce: String,
    sid: String,
}

struct FlowState {
    user: String,
    extra_claims: Value,
    wrong_nonce: bool,
    id_token_mint: Mint,
    id_token_override: Option<String>,
    token_status: Option<u16>,
    /// Lifetime of issued access and ID tokens (default `TOKEN_TTL_SECS`).
    token_ttl: u64,
    /// Refresh grants return a new refresh token and retire the old one (default); when off,
    /// they return none and the old one stays valid.
    rotate_refresh_tokens: bool,
    /// Refresh grants return an ID token (default).
    refresh_id_token: bool,
    /// The token endpoint waits this long before answering (a hung IdP).
    token_delay: Option<std::time::Duration>,
    deny_next: bool,
    end_session_redirect: bool,
    discovery_overrides: Value,
    jwks_override: Option<Value>,
    codes: HashMap<String, CodeGrant>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    access_tokens: HashMap<String, Value>,
    last_auth: Option<String>,
    last_authorize: Option<HashMap<String, String>>,
    last_end_session: Option<HashMap<String, String>>,
    last_sid: Option<String>,
}

#[derive(Default)]
struct Counters {
    discovery: AtomicUsize,
    jwks: AtomicUsize,
    authorize: AtomicUsize,
    token: AtomicUsize,
    refresh: AtomicUsize,
    userinfo: AtomicUsize,
    end_session: AtomicUsize,
}

struct Inner {
    opts: IdpOptions,
    issuer: String,
    addr: SocketAddr,
    availability: AtomicU8,
    kill: watch::Sender<u64>,
    keys: Mutex<KeyState>,
    flow: Mutex<FlowState>,
    counters: Counters,
    unpublished_kid: String,
    ec_kid: String,
    tasks: Mutex<Vec<AbortHandle>>,
    /// The `traceparent` header of each `POST /token`, in order (empty when absent).
    token_traceparents: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A test OpenID Provider; cheap to clone (all clones share one IdP).
#[derive(Clone)]
pub struct TestIdp {
    inner: Arc<Inner>,
}

// ---------------------------------------------------------------------------------------------
// Public API

impl TestIdp {
    /// Starts an IdP on `127.0.0.1:0`. It accepts connections as soon as this returns.
    pub async fn start(opts: IdpOptions) -> TestIdp {
        let public = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test IdP listener");
        let backend = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test IdP backend");
        let addr = public.local_addr().expect("local addr");
        let backend_addr = backend.local_addr().expect("local addr");
        let issuer = format!("http://127.0.0.1:{}", addr.port());

        let mut keys = KeyState {
            published: Vec::new(),
            current: 0,
            seq: 0,
        };
        let first = keys.new_key();
        keys.published.push(first);

        let availability = if opts.start_down {
            Availability::Down503
        } else {
            Availability::Up
        };
        let (kill, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            issuer,
            token_traceparents: Mutex::new(Vec::new()),
            addr,
            availability: AtomicU8::new(availability.to_u8()),
            kill,
            keys: Mutex::new(keys),
            flow: Mutex::new(FlowState {
                user: "alice".to_string(),
                extra_claims: Value::Object(Map::new()),
                wrong_nonce: false,
                id_token_mint: Mint::Normal,
                id_token_override: None,
                token_status: None,
                token_ttl: TOKEN_TTL_SECS,
                rotate_refresh_tokens: true,
                refresh_id_token: true,
                token_delay: None,
                deny_next: false,
                end_session_redirect: false,
                discovery_overrides: Value::Object(Map::new()),
                jwks_override: None,
                codes: HashMap::new(),
                refresh_tokens: HashMap::new(),
                access_tokens: HashMap::new(),
                last_auth: None,
                last_authorize: None,
                last_end_session: None,
                last_sid: None,
            }),
            counters: Counters::default(),
            unpublished_kid: format!("unpublished-{}", random_token(6)),
            ec_kid: format!("ec-{}", random_token(6)),
            tasks: Mutex::new(Vec::new()),
            opts,
        });

        let app = router(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(backend, app).await;
        });
        let acceptor = tokio::spawn(accept_loop(public, backend_addr, inner.clone()));
        lock(&inner.tasks).extend([server.abort_handle(), acceptor.abort_handle()]);
        TestIdp { inner }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn issuer(&self) -> String {
        self.inner.issuer.clone()
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.inner.issuer)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn options(&self) -> IdpOptions {
        self.inner.opts.clone()
    }

    pub fn client_id(&self) -> String {
        self.inner.opts.client_id.clone()
    }

    pub fn client_secret(&self) -> String {
        self.inner.opts.client_secret.clone()
    }

    /// `true`: every endpoint answers 503. `false`: back to normal (from any availability).
    pub fn set_down(&self, down: bool) {
        self.set_availability(if down {
            Availability::Down503
        } else {
            Availability::Up
        });
    }

    /// `true`: connections are closed at once (open ones too), like an unreachable IdP.
    /// `false`: back to normal.
    pub fn set_unreachable(&self, on: bool) {
        self.set_availability(if on {
            Availability::Refuse
        } else {
            Availability::Up
        });
    }

    pub fn set_availability(&self, a: Availability) {
        let old = Availability::from_u8(self.inner.availability.swap(a.to_u8(), Ordering::SeqCst));
        let cuts = |x: Availability| matches!(x, Availability::Refuse | Availability::Stall);
        if old != a && (cuts(a) || cuts(old)) {
            self.inner.kill.send_modify(|g| *g += 1);
        }
    }

    pub fn availability(&self) -> Availability {
        Availability::from_u8(self.inner.availability.load(Ordering::SeqCst))
    }

    /// Stops serving for good: the port refuses connections afterwards.
    pub async fn shutdown(&self) {
        self.set_availability(Availability::Refuse);
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for t in tasks {
            t.abort();
        }
        tokio::task::yield_now().await;
    }

    // -- counters ------------------------------------------------------------------------------

    pub fn discovery_fetches(&self) -> usize {
        self.inner.counters.discovery.load(Ordering::SeqCst)
    }
    pub fn jwks_fetches(&self) -> usize {
        self.inner.counters.jwks.load(Ordering::SeqCst)
    }
    pub fn authorize_requests(&self) -> usize {
        self.inner.counters.authorize.load(Ordering::SeqCst)
    }
    /// Every `POST /token`, whatever its grant and outcome.
    pub fn token_requests(&self) -> usize {
        self.inner.counters.token.load(Ordering::SeqCst)
    }
    /// `POST /token` requests with `grant_type=refresh_token` (also counted in `token_requests`).
    pub fn refresh_requests(&self) -> usize {
        self.inner.counters.refresh.load(Ordering::SeqCst)
    }
    /// The `traceparent` each `POST /token` carried ("" when none), in order.
    pub fn token_traceparents(&self) -> Vec<String> {
        lock(&self.inner.token_traceparents).clone()
    }
    pub fn userinfo_requests(&self) -> usize {
        self.inner.counters.userinfo.load(Ordering::SeqCst)
    }
    pub fn end_session_calls(&self) -> usize {
        self.inner.counters.end_session.load(Ordering::SeqCst)
    }
    pub fn reset_counters(&self) {
        let c = &self.inner.counters;
        for a in [
            &c.discovery,
            &c.jwks,
            &c.authorize,
            &c.token,
            &c.refresh,
            &c.userinfo,
            &c.end_session,
        ] {
            a.store(0, Ordering::SeqCst);
        }
    }

    // -- keys ----------------------------------------------------------------------------------

    /// A new signing key with a new kid becomes current; the JWKS then publishes only it
    /// (plus the EC key with `with_ec_key`).
    pub fn rotate_keys(&self) -> String {
        let mut k = lock(&self.inner.keys);
        let key = k.new_key();
        let kid = key.kid.clone();
        k.published = vec![key];
        k.current = 0;
        kid
    }

    /// Adds a new key (new kid) to the JWKS alongside the others and makes it the signer.
    pub fn add_key(&self) -> String {
        let mut k = lock(&self.inner.keys);
        let key = k.new_key();
        let kid = key.kid.clone();
        k.published.push(key);
        k.current = k.published.len() - 1;
        kid
    }

    /// Unpublishes `kid` (returns whether it was published). Removing the current key makes the
    /// newest remaining one current; the last key cannot be removed.
    pub fn remove_key(&self, kid: &str) -> bool {
        let mut k = lock(&self.inner.keys);
        let Some(pos) = k.published.iter().position(|p| p.kid == kid) else {
            return false;
        };
        if k.published.len() == 1 {
            return false;
        }
        let current_kid = k.published[k.current].kid.clone();
        k.published.remove(pos);
        k.current = k
            .published
            .iter()
            .position(|p| p.kid == current_kid)
            .unwrap_or(k.published.len() - 1);
        true
    }

    pub fn current_kid(&self) -> String {
        let k = lock(&self.inner.keys);
        k.published[k.current].kid.clone()
    }

    /// The kids in the JWKS, in order.
    pub fn published_kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = lock(&self.inner.keys)
            .published
            .iter()
            .map(|p| p.kid.clone())
            .collect();
        if self.inner.opts.with_ec_key {
            kids.push(self.inner.ec_kid.clone());
        }
        kids
    }

    /// The kid used by [`Mint::UnknownKid`] / [`TestIdp::mint_unpublished`].
    pub fn unpublished_kid(&self) -> String {
        self.inner.unpublished_kid.clone()
    }

    /// The kid of the EC key ([`Mint::Es256`]); published only with `with_ec_key`.
    pub fn ec_kid(&self) -> String {
        self.inner.ec_kid.clone()
    }

    /// The JWKS document as served (ignoring `set_jwks_override`).
    pub fn jwks(&self) -> Value {
        self.inner.jwks_doc()
    }

    /// The current RSA public key as SPKI PEM text.
    pub fn current_public_key_pem(&self) -> String {
        let k = lock(&self.inner.keys);
        rsa_pool()[k.published[k.current].key].pub_pem.to_string()
    }

    // -- tokens --------------------------------------------------------------------------------

    /// iss, aud `[client_id]`, azp, sub, email `<sub>@example.com`, email_verified,
    /// preferred_username, groups `["staff"]`, iat/nbf now, exp now + 3600.
    pub fn default_claims(&self, sub: &str) -> Value {
        self.inner.default_claims(sub)
    }

    /// RS256 with the current key, header kid set.
    pub fn mint(&self, claims: Value) -> String {
        self.inner.mint_with(&claims, Mint::Normal)
    }

    pub fn mint_with(&self, claims: Value, how: Mint) -> String {
        self.inner.mint_with(&claims, how)
    }

    /// Signed by a key whose kid is not in the JWKS (= `mint_with(claims, Mint::UnknownKid)`).
    pub fn mint_unpublished(&self, claims: Value) -> String {
        self.inner.mint_with(&claims, Mint::UnknownKid)
    }

    /// Any header (taken as is, whatever its `alg` says), RS256-signed with the current key.
    pub fn mint_raw(&self, header: Value, claims: Value) -> String {
        let k = lock(&self.inner.keys);
        let key = &rsa_pool()[k.published[k.current].key].enc;
        jws(&header, &claims, Some((key, Algorithm::RS256)))
    }

    /// Claims of a back-channel logout token for `sub` and/or `sid`.
    pub fn logout_token_claims(&self, sub: Option<&str>, sid: Option<&str>) -> Value {
        let now = now();
        let mut c = json!({
            "iss": self.inner.issuer,
            "aud": self.inner.opts.client_id,
            "iat": now,
            "exp": now + 120,
            "jti": random_token(16),
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
        });
        if let Some(sub) = sub {
            c["sub"] = json!(sub);
        }
        if let Some(sid) = sid {
            c["sid"] = json!(sid);
        }
        c
    }

    /// A signed back-channel logout token (header `typ: logout+jwt`).
    pub fn mint_logout_token(&self, sub: Option<&str>, sid: Option<&str>) -> String {
        let claims = self.logout_token_claims(sub, sid);
        let k = lock(&self.inner.keys);
        let cur = &k.published[k.current];
        let header = json!({"alg": "RS256", "typ": "logout+jwt", "kid": cur.kid});
        jws(
            &header,
            &claims,
            Some((&rsa_pool()[cur.key].enc, Algorithm::RS256)),
        )
    }

    // -- flow control --------------------------------------------------------------------------

    /// The user the authorization endpoint logs in (default `alice`).
    pub fn set_user(&self, sub: &str) {
        lock(&self.inner.flow).user = sub.to_string();
    }

    /// Merged (shallowly) into ID tokens, refreshed ID tokens and userinfo; a `null` value
    /// removes that claim (e.g. `{"email": null}`). Replaces earlier extra claims.
    pub fn set_extra_claims(&self, claims: Value) {
        lock(&self.inner.flow).extra_claims = claims;
    }

    /// The token endpoint puts a wrong `nonce` into the ID token.
    pub fn set_wrong_nonce(&self, on: bool) {
        lock(&self.inner.flow).wrong_nonce = on;
    }

    /// How the token endpoint mints ID tokens (default `Mint::Normal`).
    pub fn set_id_token_mint(&self, how: Mint) {
        lock(&self.inner.flow).id_token_mint = how;
    }

    /// The token endpoint answers exactly this string as `id_token`.
    pub fn set_id_token_override(&self, token: Option<String>) {
        lock(&self.inner.flow).id_token_override = token;
    }

    /// The token endpoint answers this status (with `{"error":"server_error"}`) to everything.
    pub fn set_token_endpoint_status(&self, status: Option<u16>) {
        lock(&self.inner.flow).token_status = status;
    }

    /// The next authorization request (only that one) is answered with
    /// `error=access_denied` instead of a code.
    pub fn set_deny_next(&self, on: bool) {
        lock(&self.inner.flow).deny_next = on;
    }

    /// `/session/end` answers 302 to `post_logout_redirect_uri` (with `state`) when given,
    /// instead of 200 "signed out".
    pub fn set_end_session_redirect(&self, on: bool) {
        lock(&self.inner.flow).end_session_redirect = on;
    }

    /// Merged (shallowly, `null` removes) into the discovery document, e.g.
    /// `{"issuer": "https://other"}` or `{"end_session_endpoint": null}`.
    pub fn set_discovery_overrides(&self, overrides: Value) {
        lock(&self.inner.flow).discovery_overrides = overrides;
    }

    /// `/jwks` answers exactly this JSON instead of the published keys.
    pub fn set_jwks_override(&self, doc: Option<Value>) {
        lock(&self.inner.flow).jwks_override = doc;
    }

    /// Every outstanding authorization code is expired.
    pub fn expire_codes(&self) {
        for g in lock(&self.inner.flow).codes.values_mut() {
            g.expires_at = 0;
        }
    }

    /// Lifetime of the access and ID tokens issued from now on (and of `default_claims`).
    pub fn set_token_ttl(&self, secs: u64) {
        lock(&self.inner.flow).token_ttl = secs;
    }

    /// Whether refresh grants rotate the refresh token (default on): off, they return none
    /// and the one used stays valid.
    pub fn set_refresh_rotation(&self, on: bool) {
        lock(&self.inner.flow).rotate_refresh_tokens = on;
    }

    /// Whether refresh grants return an ID token (default on).
    pub fn set_refresh_id_token(&self, on: bool) {
        lock(&self.inner.flow).refresh_id_token = on;
    }

    /// The token endpoint waits this long before answering (`None`: at once).
    pub fn set_token_delay(&self, delay: Option<std::time::Duration>) {
        lock(&self.inner.flow).token_delay = delay;
    }

    /// Every outstanding refresh token becomes invalid (`invalid_grant`).
    pub fn revoke_refresh_tokens(&self) {
        lock(&self.inner.flow).refresh_tokens.clear();
    }

    /// `client_secret_basic`, `client_secret_post` or `none` for the last `/token` request.
    pub fn last_token_request_auth(&self) -> Option<String> {
        lock(&self.inner.flow).last_auth.clone()
    }

    /// Query parameters of the last `/authorize` request.
    pub fn last_authorize_params(&self) -> Option<HashMap<String, String>> {
        lock(&self.inner.flow).last_authorize.clone()
    }

    /// Parameters of the last `/session/end` request.
    pub fn last_end_session_params(&self) -> Option<HashMap<String, String>> {
        lock(&self.inner.flow).last_end_session.clone()
    }

    /// The `sid` claim of the last ID token issued by the token endpoint.
    pub fn last_sid(&self) -> Option<String> {
        lock(&self.inner.flow).last_sid.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Internals

impl Inner {
    fn availability(&self) -> Availability {
        Availability::from_u8(self.availability.load(Ordering::SeqCst))
    }

    fn down(&self) -> Option<Response> {
        (self.availability() != Availability::Up).then(|| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "test IdP is down",
            )
                .into_response()
        })
    }

    fn default_claims(&self, sub: &str) -> Value {
        let now = now();
        let ttl = lock(&self.flow).token_ttl;
        json!({
            "iss": self.issuer,
            "aud": [self.opts.client_id],
            "azp": self.opts.client_id,
            "sub": sub,
            "email": format!("{sub}@example.com"),
            "email_verified": true,
            "preferred_username": sub,
            "groups": ["staff"],
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
        })
    }

    fn jwks_doc(&self) -> Value {
        let mut keys: Vec<Value> = {
            let k = lock(&self.keys);
            k.published
                .iter()
                .map(|p| {
                    let key = &rsa_pool()[p.key];
                    json!({
                        "kty": "RSA", "kid": p.kid, "use": "sig", "alg": "RS256",
                        "n": key.n, "e": key.e,
                    })
                })
                .collect()
        };
        if self.opts.with_ec_key {
            let ec = ec_key();
            keys.push(json!({
                "kty": "EC", "kid": self.ec_kid, "use": "sig", "alg": "ES256",
                "crv": "P-256", "x": ec.x, "y": ec.y,
            }));
        }
        json!({ "keys": keys })
    }

    fn discovery_doc(&self) -> Value {
        let iss = &self.issuer;
        let mut algs = vec!["RS256"];
        if self.opts.with_ec_key {
            algs.push("ES256");
        }
        let mut doc = json!({
            "issuer": iss,
            "authorization_endpoint": format!("{iss}/authorize"),
            "token_endpoint": format!("{iss}/token"),
            "jwks_uri": format!("{iss}/jwks"),
            "userinfo_endpoint": format!("{iss}/userinfo"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "token_endpoint_auth_methods_supported": self.opts.auth_methods,
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
            "claims_supported": [
                "sub", "iss", "aud", "exp", "iat", "nbf", "auth_time", "nonce", "azp", "sid",
                "email", "email_verified", "preferred_username", "groups",
            ],
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
        });
        if self.opts.with_end_session {
            doc["end_session_endpoint"] = json!(format!("{iss}/session/end"));
        }
        let overrides = lock(&self.flow).discovery_overrides.clone();
        merge(&mut doc, &overrides);
        doc
    }

    fn mint_with(&self, claims: &Value, how: Mint) -> String {
        let (kid, key) = {
            let k = lock(&self.keys);
            let cur = &k.published[k.current];
            (cur.kid.clone(), &rsa_pool()[cur.key])
        };
        let rs = |alg: &str, kid: Option<&str>| {
            let mut h = json!({"alg": alg, "typ": "JWT"});
            if let Some(kid) = kid {
                h["kid"] = json!(kid);
            }
            h
        };
        let hs = |secret: &[u8]| {
            jws(
                &rs("HS256", Some(&kid)),
                claims,
                Some((&EncodingKey::from_secret(secret), Algorithm::HS256)),
            )
        };
        let unpublished = &rsa_pool()[UNPUBLISHED].enc;
        match how {
            Mint::Normal => jws(
                &rs("RS256", Some(&kid)),
                claims,
                Some((&key.enc, Algorithm::RS256)),
            ),
            Mint::NoKid => jws(&rs("RS256", None), claims, Some((&key.enc, Algorithm::RS256))),
            Mint::AlgNone => jws(&json!({"alg": "none"}), claims, None),
            Mint::AlgNoneWithKid => jws(&json!({"alg": "none", "kid": kid}), claims, None),
            Mint::Hs256WithPublicKey => hs(key.pub_pem.as_bytes()),
            Mint::Hs256WithPublicKeyDer => hs(&key.pub_der),
            Mint::Hs256WithClientSecret => hs(self.opts.client_secret.as_bytes()),
            Mint::BadSignature => {
                let token = self.mint_with(claims, Mint::Normal);
                let (msg, sig) = token.rsplit_once('.').expect("three parts");
                let mut raw = URL_SAFE_NO_PAD.decode(sig).expect("own signature");
                let i = raw.len() / 2;
                raw[i] ^= 0x5a;
                format!("{msg}.{}", URL_SAFE_NO_PAD.encode(raw))
            }
            Mint::UnknownKid => jws(
                &rs("RS256", Some(&self.unpublished_kid)),
                claims,
                Some((unpublished, Algorithm::RS256)),
            ),
            Mint::OtherKey => jws(
                &rs("RS256", Some(&kid)),
                claims,
                Some((unpublished, Algorithm::RS256)),
            ),
            Mint::Rs384 => jws(
                &rs("RS384", Some(&kid)),
                claims,
                Some((&key.enc, Algorithm::RS384)),
            ),
            Mint::Es256 => jws(
                &rs("ES256", Some(&self.ec_kid)),
                claims,
                Some((&ec_key().enc, Algorithm::ES256)),
            ),
        }
    }

    /// Access token, ID token and refresh token for one login (or refresh: `refreshing` is the
    /// refresh token used).
    fn issue_tokens(&self, grant: &RefreshGrant, refreshing: Option<&str>) -> Value {
        let now = now();
        let cid = &grant.client_id;
        let (ttl, rotate, with_id_token) = {
            let f = lock(&self.flow);
            (f.token_ttl, f.rotate_refresh_tokens, f.refresh_id_token)
        };
        let access_claims = json!({
            "iss": self.issuer, "sub": grant.sub, "aud": cid, "azp": cid, "client_id": cid,
            "scope": grant.scope, "iat": now, "nbf": now, "exp": now + ttl,
            "jti": random_token(16),
        });
        let access_token = self.mint_with(&access_claims, Mint::Normal);

        let (extra, wrong_nonce, how, override_token) = {
            let f = lock(&self.flow);
            (
                f.extra_claims.clone(),
                f.wrong_nonce,
                f.id_token_mint,
                f.id_token_override.clone(),
            )
        };
        let mut id = self.default_claims(&grant.sub);
        id["aud"] = json!(cid);
        id["azp"] = json!(cid);
        id["nonce"] = json!(if wrong_nonce {
            format!("wrong-{}", random_token(8))
        } else {
            grant.nonce.clone()
        });
        id["auth_time"] = json!(now);
        id["sid"] = json!(grant.sid);
        let digest = Sha256::digest(access_token.as_bytes());
        id["at_hash"] = json!(URL_SAFE_NO_PAD.encode(&digest[..16]));
        merge(&mut id, &extra);
        let id_token = override_token.unwrap_or_else(|| self.mint_with(&id, how));

        let mut userinfo = id.clone();
        if let Value::Object(m) = &mut userinfo {
            for k in [
                "iss",
                "aud",
                "azp",
                "exp",
                "iat",
                "nbf",
                "nonce",
                "auth_time",
                "sid",
                "at_hash",
                "jti",
            ] {
                m.remove(k);
            }
        }

        let refresh_token = match refreshing {
            // Not rotating: the refresh token used stays valid, and none is returned.
            Some(used) if !rotate => {
                lock(&self.flow)
                    .refresh_tokens
                    .insert(used.to_string(), grant.clone());
                None
            }
            _ => Some(format!("rt-{}", random_token(24))),
        };
        {
            let mut f = lock(&self.flow);
            if let Some(rt) = &refresh_token {
                f.refresh_tokens.insert(rt.clone(), grant.clone());
            }
            f.access_tokens.insert(access_token.clone(), userinfo);
            f.last_sid = Some(grant.sid.clone());
        }
        let mut body = json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": grant.scope,
        });
        if refreshing.is_none() || with_id_token {
            body["id_token"] = json!(id_token);
        }
        if let Some(rt) = refresh_token {
            body["refresh_token"] = json!(rt);
        }
        body
    }

    /// Client authentication at the token endpoint (RFC 6749 section 2.3.1): the error
    /// response, or `None` when the client is authenticated.
    fn client_auth_error(&self, headers: &HeaderMap, params: &HashMap<String, String>) -> Option<Response> {
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, creds)| creds.trim().to_string());
        let post_secret = param(params, "client_secret");
        let (method, creds) = match (basic, post_secret) {
            (Some(_), Some(_)) => {
                lock(&self.flow).last_auth = Some("multiple".to_string());
                return Some(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "more than one client authentication method",
                ));
            }
            (Some(b), None) => ("client_secret_basic", decode_basic(&b)),
            (None, Some(secret)) => (
                "client_secret_post",
                param(params, "client_id").map(|id| (id.to_string(), secret.to_string())),
            ),
            (None, None) => ("none", None),
        };
        lock(&self.flow).last_auth = Some(method.to_string());
        let unauthorized = |desc: &str| {
            let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", desc);
            if method == "client_secret_basic" {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"test-idp\""),
                );
            }
            r
        };
        if !self.opts.auth_methods.iter().any(|m| m == method) {
            return Some(unauthorized(&format!(
                "client authentication method {method} is not allowed"
            )));
        }
        let Some((id, secret)) = creds else {
            return Some(unauthorized("malformed client credentials"));
        };
        if id != self.opts.client_id || secret != self.opts.client_secret {
            return Some(unauthorized("unknown client or wrong secret"));
        }
        if let Some(body_id) = param(params, "client_id") {
            if body_id != id {
                return Some(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id does not match the authenticated client",
                ));
            }
        }
        None
    }
}

fn router(inner: Arc<Inner>) -> Router {
    let mut r = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo).post(userinfo));
    if inner.opts.with_end_session {
        r = r.route("/session/end", get(end_session).post(end_session));
    }
    r.fallback(not_found).with_state(inner)
}

async fn accept_loop(listener: TcpListener, backend: SocketAddr, inner: Arc<Inner>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // e.g. out of file descriptors: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let kill = inner.kill.subscribe();
        let inner = inner.clone();
        tokio::spawn(forward(inbound, backend, kill, inner));
    }
}

async fn forward(
    mut inbound: TcpStream,
    backend: SocketAddr,
    mut kill: watch::Receiver<u64>,
    inner: Arc<Inner>,
) {
    match inner.availability() {
        Availability::Refuse => return,
        Availability::Stall => {
            let _ = kill.changed().await;
            return;
        }
        Availability::Up | Availability::Down503 => {}
    }
    let Ok(mut outbound) = TcpStream::connect(backend).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        biased;
        _ = kill.changed() => {}
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

type St = State<Arc<Inner>>;

async fn not_found(State(st): St) -> Response {
    st.down()
        .unwrap_or_else(|| (StatusCode::NOT_FOUND, "not found").into_response())
}

async fn discovery(State(st): St) -> Response {
    st.counters.discovery.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = st.down() {
        return r;
    }
    Json(st.discovery_doc()).into_response()
}

async fn jwks(State(st): St) -> Response {
    st.counters.jwks.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = st.down() {
        return r;
    }
    let doc = lock(&st.flow)
        .jwks_override
        .clone()
        .unwrap_or_else(|| st.jwks_doc());
    Json(doc).into_response()
}

async fn authorize(State(st): St, RawQuery(query): RawQuery) -> Response {
    st.counters.authorize.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = st.down() {
        return r;
    }
    let bad = |msg: String| (StatusCode::BAD_REQUEST, msg).into_response();
    let params = match parse_params(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    lock(&st.flow).last_authorize = Some(params.clone());

    if param(&params, "client_id") != Some(st.opts.client_id.as_str()) {
        return bad("unknown client_id".into());
    }
    let Some(redirect_uri) = param(&params, "redirect_uri") else {
        return bad("missing redirect_uri".into());
    };
    let mut target = match url::Url::parse(redirect_uri) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => u,
        _ => return bad("redirect_uri must be an absolute http(s) URL".into()),
    };
    if !st.opts.redirect_uris.is_empty() && !st.opts.redirect_uris.iter().any(|u| u == redirect_uri) {
        return bad("redirect_uri is not registered".into());
    }
    if param(&params, "response_type") != Some("code") {
        return bad("response_type must be code".into());
    }
    let scope = param(&params, "scope").unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return bad("scope must include openid".into());
    }
    let (Some(state), Some(nonce), Some(challenge)) = (
        param(&params, "state"),
        param(&params, "nonce"),
        param(&params, "code_challenge"),
    ) else {
        return bad("state, nonce and code_challenge are required".into());
    };
    if param(&params, "code_challenge_method") != Some("S256") {
        return bad("code_challenge_method must be S256".into());
    }
    if challenge.len() != 43 || !challenge.bytes().all(is_b64url_char) {
        return bad("code_challenge must be BASE64URL(SHA256(verifier))".into());
    }

    let mut flow = lock(&st.flow);
    if std::mem::take(&mut flow.deny_next) {
        target
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The user denied the request")
            .append_pair("state", state);
    } else {
        let code = random_token(32);
        let now = now();
        flow.codes.retain(|_, g| g.expires_at > now);
        let sub = flow.user.clone();
        flow.codes.insert(
            code.clone(),
            CodeGrant {
                client_id: st.opts.client_id.clone(),
                redirect_uri: redirect_uri.to_string(),
                nonce: nonce.to_string(),
                code_challenge: challenge.to_string(),
                sub,
                scope: scope.to_string(),
                expires_at: now + CODE_TTL_SECS,
            },
        );
        target
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", state);
    }
    drop(flow);
    match HeaderValue::from_str(target.as_str()) {
        Ok(loc) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, loc),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => bad("redirect_uri cannot be used".into()),
    }
}

async fn token(State(st): St, headers: HeaderMap, body: Bytes) -> Response {
    st.counters.token.fetch_add(1, Ordering::SeqCst);
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    lock(&st.token_traceparents).push(traceparent.to_string());
    if let Some(r) = st.down() {
        return r;
    }
    let (forced, delay) = {
        let f = lock(&st.flow);
        (f.token_status, f.token_delay)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if let Some(status) = forced {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return oauth_error(status, "server_error", "forced by the test");
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "content-type must be application/x-www-form-urlencoded",
        );
    }
    let params = match parse_params(&body) {
        Ok(p) => p,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
    };
    if param(&params, "grant_type") == Some("refresh_token") {
        st.counters.refresh.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(r) = st.client_auth_error(&headers, &params) {
        return r;
    }
    let invalid_grant = |desc: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", desc);
    let grant = match param(&params, "grant_type") {
        Some("authorization_code") => {
            let Some(code) = param(&params, "code") else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "missing code");
            };
            let Some(g) = lock(&st.flow).codes.remove(code) else {
                return invalid_grant("unknown or already used code");
            };
            if g.expires_at <= now() {
                return invalid_grant("code expired");
            }
            if g.client_id != st.opts.client_id {
                return invalid_grant("code was issued to another client");
            }
            if param(&params, "redirect_uri") != Some(g.redirect_uri.as_str()) {
                return invalid_grant("redirect_uri does not match the authorization request");
            }
            let Some(verifier) = param(&params, "code_verifier") else {
                return invalid_grant("missing code_verifier");
            };
            if !(43..=128).contains(&verifier.len())
                || !verifier
                    .bytes()
                    .all(|b| is_b64url_char(b) || b == b'.' || b == b'~')
            {
                return invalid_grant("malformed code_verifier");
            }
            if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != g.code_challenge {
                return invalid_grant("PKCE verification failed");
            }
            RefreshGrant {
                client_id: g.client_id,
                sub: g.sub,
                scope: g.scope,
                nonce: g.nonce,
                sid: format!("sid-{}", random_token(12)),
            }
        }
        Some("refresh_token") => {
            let Some(rt) = param(&params, "refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "missing refresh_token",
                );
            };
            let Some(g) = lock(&st.flow).refresh_tokens.remove(rt) else {
                return invalid_grant("unknown, used or revoked refresh token");
            };
            if g.client_id != st.opts.client_id {
                return invalid_grant("refresh token was issued to another client");
            }
            g
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only authorization_code and refresh_token",
            )
        }
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "missing grant_type"),
    };
    let refreshing = (param(&params, "grant_type") == Some("refresh_token"))
        .then(|| param(&params, "refresh_token").map(str::to_string))
        .flatten();
    let body = st.issue_tokens(&grant, refreshing.as_deref());
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        Json(body),
    )
        .into_response()
}

async fn userinfo(State(st): St, headers: HeaderMap) -> Response {
    st.counters.userinfo.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = st.down() {
        return r;
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let claims = token.and_then(|t| lock(&st.flow).access_tokens.get(&t).cloned());
    match claims {
        Some(c) => Json(c).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
            Json(json!({"error": "invalid_token"})),
        )
            .into_response(),
    }
}

async fn end_session(State(st): St, method: Method, RawQuery(query): RawQuery, body: Bytes) -> Response {
    st.counters.end_session.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = st.down() {
        return r;
    }
    let raw: &[u8] = if method == Method::POST {
        &body
    } else {
        query.as_deref().unwrap_or_default().as_bytes()
    };
    let params = match parse_params(raw) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let redirect = {
        let mut f = lock(&st.flow);
        f.last_end_session = Some(params.clone());
        f.end_session_redirect
    };
    if redirect {
        if let Some(uri) = param(&params, "post_logout_redirect_uri") {
            let Ok(mut target) = url::Url::parse(uri) else {
                return (StatusCode::BAD_REQUEST, "bad post_logout_redirect_uri").into_response();
            };
            if let Some(state) = param(&params, "state") {
                target.query_pairs_mut().append_pair("state", state);
            }
            if let Ok(loc) = HeaderValue::from_str(target.as_str()) {
                return (StatusCode::FOUND, [(header::LOCATION, loc)]).into_response();
            }
            return (StatusCode::BAD_REQUEST, "bad post_logout_redirect_uri").into_response();
        }
    }
    (StatusCode::OK, "signed out").into_response()
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `n` random bytes, base64url without padding.
fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn is_b64url_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `<b64url(header)>.<b64url(claims)>.<signature>`; no key gives an empty signature.
fn jws(header: &Value, claims: &Value, key: Option<(&EncodingKey, Algorithm)>) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let msg = format!("{h}.{c}");
    let sig = match key {
        Some((key, alg)) => jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).expect("sign"),
        None => String::new(),
    };
    format!("{msg}.{sig}")
}

/// Shallow merge; `null` values remove keys.
fn merge(target: &mut Value, extra: &Value) {
    if let (Value::Object(t), Value::Object(e)) = (target, extra) {
        for (k, v) in e {
            if v.is_null() {
                t.remove(k);
            } else {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Form/query parameters; a repeated parameter is an error (RFC 6749 section 3.1).
fn parse_params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if k.is_empty() {
            continue;
        }
        if map.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("parameter {k} repeated"));
        }
    }
    Ok(map)
}

/// A parameter, treating an empty value as absent (RFC 6749 section 3.1).
fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// RFC 6749 section 2.3.1: base64(urlencode(id) ":" urlencode(secret)).
fn decode_basic(b64: &str) -> Option<(String, String)> {
    let raw = STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// application/x-www-form-urlencoded decoding of one component; `None` on a bad escape.
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}
