//! Sessions and revocations shared by replicas through a real `redis-server` (DESIGN "Sessions",
//! "Reliability", "Several replicas"): the `redis` store (any replica serves any session, the
//! cookie holds only a sealed id, Redis holds no readable token, sign-out and back-channel
//! logout reach every replica within 1 s, one refresh per session across replicas, Redis down
//! is 503 and never an allow), and the cookie store with `redis_url` (revocations shared).

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::idp::{IdpOptions, TestIdp};
use crate::support::redis::{RedisCluster, RedisServer};

const APP: &str = "https://app1.example.test/dash";
const PUBLIC: &str = "https://app1.example.test/public/x";

fn config(store: &str, redis: &RedisServer) -> String {
    BASIC_CONFIG.replace(
        "  secure: true\n",
        &format!("  secure: true\n  store: {store}\n  redis_url: {}\n", redis.url()),
    )
}

/// Two replicas sharing one IdP and one Redis.
async fn replicas(store: &str, redis: &RedisServer) -> (Stack, Stack) {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let a = Stack::start(idp.clone(), &config(store, redis)).await;
    let b = Stack::start(idp, &config(store, redis)).await;
    a.wait_ready().await;
    b.wait_ready().await;
    (a, b)
}

async fn allowed(s: &Stack, jar: &Jar) -> bool {
    s.check(Req::api("GET", APP).cookies(jar)).await.is_allow()
}

/// Polls `probe` every 20 ms for at most 1 s; the time it took.
async fn within_1s<F, Fut>(mut probe: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if probe().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn sign_out(s: &Stack, jar: &Jar) -> u16 {
    http_client()
        .get(s.http_url("/oauth2/sign_out"))
        .header("host", "app1.example.test")
        .header("cookie", jar.header().unwrap())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn any_replica_serves_a_session_whose_cookie_holds_only_a_sealed_id() {
    let redis = RedisServer::start();
    let (a, b) = replicas("redis", &redis).await;
    let mut jar = Jar::default();
    login_via_check(&a, APP, &mut jar).await;
    let cookie = jar.get("_oidc_authz").expect("a session cookie").to_string();
    assert!(
        cookie.len() < 200,
        "the cookie holds an id, not the session ({} bytes)",
        cookie.len()
    );
    assert!(jar.get("_oidc_authz_1").is_none(), "never chunked");
    let on_b = b.check(Req::api("GET", APP).cookies(&jar)).await;
    assert!(on_b.is_allow(), "{}", on_b.body());
    assert_eq!(on_b.upstream("x-auth-request-user").as_deref(), Some("alice"));
    // Redis holds the session sealed: no token, no claim in clear.
    let keys = redis.cli(&["--scan", "--pattern", "oidc-authz:s:*"]);
    let key = keys.lines().next().expect("the session is in redis");
    let stored = redis.cli(&["GET", key]);
    assert!(!stored.contains("eyJ"), "no JWT in redis: {stored}");
    assert!(!stored.contains("alice"), "no claim in clear: {stored}");
    let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().unwrap();
    assert!(
        ttl > 0 && ttl <= 24 * 3600 * 1000,
        "expires with max_lifetime: {ttl}"
    );
}

#[tokio::test]
async fn a_sign_out_on_one_replica_ends_the_session_on_the_other_within_1s() {
    let redis = RedisServer::start();
    let (a, b) = replicas("redis", &redis).await;
    let mut jar = Jar::default();
    login_via_check(&a, APP, &mut jar).await;
    assert!(allowed(&b, &jar).await);
    assert_eq!(sign_out(&a, &jar).await, 302);
    let took = within_1s(|| async { !allowed(&b, &jar).await }).await;
    println!("sign-out on A reached B after {took:?}");
    assert!(
        took.is_some(),
        "replica B still serves the signed-out session after 1 s"
    );
}

/// A replica keeps a session it read for at most half a second: a session deleted behind its
/// back (another replica, or by hand) stops working there well within 1 s, and not at once
/// (which shows the copy is there and bounded).
#[tokio::test]
async fn a_session_read_recently_is_served_from_the_local_copy_for_at_most_half_a_second() {
    let redis = RedisServer::start();
    let (a, _b) = replicas("redis", &redis).await;
    let mut jar = Jar::default();
    login_via_check(&a, APP, &mut jar).await;
    assert!(allowed(&a, &jar).await);
    let keys = redis.cli(&["--scan", "--pattern", "oidc-authz:s:*"]);
    let key = keys.trim();
    assert!(key.starts_with("oidc-authz:s:"), "{keys}");
    assert!(allowed(&a, &jar).await, "read once more: the copy is fresh");
    redis.cli(&["DEL", key]);
    let deleted = Instant::now();
    let still_served = allowed(&a, &jar).await;
    let mut gone = None;
    while deleted.elapsed() < Duration::from_secs(2) {
        if !allowed(&a, &jar).await {
            gone = Some(deleted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("local copy: served right after the delete: {still_served}; ended after {gone:?}");
    assert!(
        still_served,
        "the session read a moment ago is served from the local copy"
    );
    let gone = gone.expect("the local copy runs out");
    assert!(
        gone < Duration::from_millis(600),
        "the local copy outlived 500 ms: {gone:?}"
    );
}

/// The local copy is served only after Redis answered a PING sent after the request: a Redis
/// that stops answering ends it at once, not half a second later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_kept_locally_is_not_served_while_redis_is_frozen() {
    let redis = RedisServer::start();
    let (a, _b) = replicas("redis", &redis).await;
    let mut jar = Jar::default();
    login_via_check(&a, APP, &mut jar).await;
    assert!(allowed(&a, &jar).await);
    redis.pause();
    let answer = a.check(Req::api("GET", APP).cookies(&jar)).await;
    redis.resume();
    assert_eq!(answer.status(), 503, "{}", answer.body());
    assert!(!answer.is_allow());
    assert!(allowed(&a, &jar).await, "served again once redis answers");
}

#[tokio::test]
async fn a_back_channel_logout_on_one_replica_ends_the_session_everywhere() {
    let redis = RedisServer::start();
    let (a, b) = replicas("redis", &redis).await;
    let mut jar = Jar::default();
    login_via_check(&a, APP, &mut jar).await;
    assert!(allowed(&b, &jar).await);
    let sid = a.idp.last_sid().unwrap();
    let token = a.idp.mint_logout_token(Some("alice"), Some(&sid));
    let resp = http_client()
        .post(b.http_url("/oauth2/backchannel_logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(within_1s(|| async { !allowed(&a, &jar).await }).await.is_some());
    assert!(!allowed(&b, &jar).await);
    assert_eq!(
        redis.cli(&["--scan", "--pattern", "oidc-authz:s:*"]).trim(),
        "",
        "deleted from redis"
    );
}

#[tokio::test]
async fn one_refresh_per_session_across_replicas() {
    let redis = RedisServer::start();
    let (a, b) = replicas("redis", &redis).await;
    a.idp.set_token_ttl(0);
    let mut jar = Jar::default();
    login_via_check(&a, APP, &mut jar).await;
    a.idp.set_token_ttl(3600);
    a.idp.reset_counters();
    a.idp.set_token_delay(Some(Duration::from_millis(300)));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let mut client = if i % 2 == 0 {
            a.client.clone()
        } else {
            b.client.clone()
        };
        let req = Req::api("GET", APP).cookies(&jar).into_check();
        set.spawn(async move { Answer(client.check(req).await.expect("Check answers").into_inner()) });
    }
    let answers = set.join_all().await;
    let tokens: Vec<String> = answers
        .iter()
        .map(|x| {
            assert!(x.is_allow(), "{}", x.body());
            x.upstream("authorization").unwrap()
        })
        .collect();
    assert_eq!(
        a.idp.refresh_requests(),
        1,
        "one refresh for 20 requests on two replicas"
    );
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    // The same cookie keeps working on both (the session in redis was refreshed).
    assert!(allowed(&a, &jar).await && allowed(&b, &jar).await);
    assert_eq!(a.idp.refresh_requests(), 1);
}

#[tokio::test]
async fn redis_down_is_503_never_an_allow_and_service_resumes_by_itself() {
    let mut redis = RedisServer::start();
    let (a, _b) = replicas("redis", &redis).await;
    let mut jar = Jar::default();
    login_via_check(&a, APP, &mut jar).await;
    assert!(allowed(&a, &jar).await);
    redis.stop();
    // Every request that needs a session answers 503 at once (there is no local copy).
    for _ in 0..5 {
        let x = a.check(Req::api("GET", APP).cookies(&jar)).await;
        assert_eq!(x.status(), 503, "{}", x.body());
        assert!(x.denied_header("retry-after").is_some());
    }
    // A login cannot be stored: 503, not a trip to the IdP.
    let nav = a.check(Req::browser(APP)).await;
    assert_eq!(nav.status(), 503);
    // Public paths do not need a session.
    assert!(a.check(Req::api("GET", PUBLIC)).await.is_allow());
    let ready = http_client().get(a.http_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(ready.text().await.unwrap().contains("redis"));
    let metrics = http_client()
        .get(a.http_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("oidc_authz_redis_up 0"), "{metrics}");

    // Redis returns (empty: no persistence): the old session is gone, logins work again.
    redis.start_again();
    let start = Instant::now();
    let mut resumed = None;
    while start.elapsed() < Duration::from_secs(10) {
        if a.check(Req::browser(APP)).await.status() == 302 {
            resumed = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resumed = resumed.expect("service resumes by itself within 10 s");
    println!(
        "redis session store: service resumed {} ms after redis returned",
        resumed.as_millis()
    );
    let mut fresh = Jar::default();
    login_via_check(&a, APP, &mut fresh).await;
    assert!(allowed(&a, &fresh).await);
}

#[tokio::test]
async fn with_the_cookie_store_and_redis_url_revocations_reach_every_replica() {
    let redis = RedisServer::start();
    let (a, b) = replicas("cookie", &redis).await;
    let mut jar = Jar::default();
    login_via_check(&a, APP, &mut jar).await;
    assert!(
        allowed(&b, &jar).await,
        "the cookie store needs no redis to serve"
    );
    assert_eq!(sign_out(&a, &jar).await, 302);
    assert!(
        !allowed(&b, &jar).await,
        "the copy of the cookie is refused on the other replica"
    );
    // Back-channel on B by sub ends A's sessions of that user.
    let mut other = Jar::default();
    login_via_check(&a, APP, &mut other).await;
    assert!(allowed(&a, &other).await);
    let token = b.idp.mint_logout_token(Some("alice"), None);
    let resp = http_client()
        .post(b.http_url("/oauth2/backchannel_logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(!allowed(&a, &other).await);
    // The logout token is used once, on any replica.
    let again = http_client()
        .post(a.http_url("/oauth2/backchannel_logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 400);
}

#[tokio::test]
async fn a_redis_cluster_serves_sessions_like_a_single_server() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let nodes = cluster
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = BASIC_CONFIG.replace(
        "  secure: true\n",
        &format!("  secure: true\n  store: redis\n  redis_cluster: [{nodes}]\n"),
    );
    let idp = TestIdp::start(IdpOptions::default()).await;
    let a = Stack::start(idp.clone(), &cfg).await;
    let b = Stack::start(idp, &cfg).await;
    a.wait_ready().await;
    b.wait_ready().await;
    // Several sessions, so that their keys land on several nodes.
    let mut jars = Vec::new();
    for user in ["alice", "bob", "carol", "dave"] {
        a.idp.set_user(user);
        let mut jar = Jar::default();
        let done = login_via_check(&a, APP, &mut jar).await;
        assert_eq!(done.status(), 302, "{user}: {}", done.body());
        jars.push(jar);
    }
    for jar in &jars {
        assert!(allowed(&b, jar).await);
    }
    assert_eq!(cluster.scan("oidc-authz:s:*").len(), 4);
    // Back-channel logout by sub through the cluster's indexes; sign-out of another.
    let token = b.idp.mint_logout_token(Some("alice"), None);
    let resp = http_client()
        .post(b.http_url("/oauth2/backchannel_logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(sign_out(&b, &jars[1]).await, 302);
    assert!(
        within_1s(|| async { !allowed(&a, &jars[0]).await && !allowed(&a, &jars[1]).await })
            .await
            .is_some()
    );
    assert!(allowed(&a, &jars[2]).await && allowed(&b, &jars[3]).await);
    assert_eq!(cluster.scan("oidc-authz:s:*").len(), 2);
}

/// A CA and a server certificate for 127.0.0.1, made with `openssl` in `dir`.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=oidc-authz test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[tokio::test]
async fn rediss_with_a_private_ca_and_an_acl_user() {
    let dir = std::env::temp_dir().join(format!("oidc-authz-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    let path = |f: &str| dir.join(f).display().to_string();
    // TLS only: the plain port is off.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            &path("server.crt"),
            "--tls-key-file",
            &path("server.key"),
        ])
        .args(["--tls-ca-cert-file", &path("ca.crt"), "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .args([
            "--user",
            "gateway",
            "on",
            ">gateway-password",
            "~*",
            "&*",
            "+@all",
        ])
        .args(["--user", "default", "off"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server (TLS) did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The private CA is trusted through SSL_CERT_FILE, as the README says. (Only Redis reads
    // the system roots in this process; the IdP client has its own.)
    std::env::set_var("SSL_CERT_FILE", path("ca.crt"));
    let cfg = BASIC_CONFIG.replace(
        "  secure: true\n",
        &format!("  secure: true\n  store: redis\n  redis_url: rediss://gateway:gateway-password@127.0.0.1:{port}/0\n"),
    );
    let idp = TestIdp::start(IdpOptions::default()).await;
    let a = Stack::start(idp.clone(), &cfg).await;
    let b = Stack::start(idp, &cfg).await;
    a.wait_ready().await;
    b.wait_ready().await;
    let mut jar = Jar::default();
    let done = login_via_check(&a, APP, &mut jar).await;
    assert_eq!(done.status(), 302, "{}", done.body());
    assert!(allowed(&b, &jar).await);
    // A wrong password is Redis refusing: 503, never an allow.
    let wrong = BASIC_CONFIG.replace(
        "  secure: true\n",
        &format!("  secure: true\n  store: redis\n  redis_url: rediss://gateway:wrong@127.0.0.1:{port}/0\n"),
    );
    let c = Stack::start(a.idp.clone(), &wrong).await;
    let x = c.check(Req::api("GET", APP).cookies(&jar)).await;
    assert_eq!(x.status(), 503, "{}", x.body());

    // The rule store over the same TLS server (`rules_store: rediss://…`): a rule disabled
    // through one replica's admin API is followed by the other within 1 s.
    let token = "admin-token-for-tests";
    let rules_cfg = cfg
        .replace(
            "rules_store: inline",
            &format!("rules_store: rediss://gateway:gateway-password@127.0.0.1:{port}/0"),
        )
        .replace("session:", &format!("server:\n  admin_token: {token}\nsession:"));
    let r1 = Stack::start(a.idp.clone(), &rules_cfg).await;
    let r2 = Stack::start(a.idp.clone(), &rules_cfg).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(r1.admin.synced() && r2.admin.synced()) {
        assert!(
            Instant::now() < deadline,
            "the replicas never read the rediss:// rule store"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let private = || Req::browser("https://app1.example.test/private");
    assert!(!r2.check(private()).await.is_allow());
    let (st, body) = admin_call(&r1, token, "POST", "/api/v1/rules/corp/disable", None).await;
    assert_eq!(st, 200, "{body}");
    let followed = within_1s(|| async { r2.check(private()).await.is_allow() }).await;
    println!("rediss:// rule store: the disable reached the other replica after {followed:?}");
    assert!(followed.is_some(), "the other replica did not follow within 1 s");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_redis_frozen_for_5s_under_load_lets_nothing_through() {
    let redis = RedisServer::start();
    let (a, b) = replicas("redis", &redis).await;
    let mut jar = Jar::default();
    login_via_check(&a, APP, &mut jar).await;
    assert!(allowed(&a, &jar).await && allowed(&b, &jar).await);

    // Load: 8 workers over both replicas, each recording (when the Check was sent, when it
    // was answered, allowed, status).
    let start = Instant::now();
    let stop_at = Duration::from_secs(9);
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let mut client = if i % 2 == 0 {
            a.client.clone()
        } else {
            b.client.clone()
        };
        let req = Req::api("GET", APP).cookies(&jar).into_check();
        workers.spawn(async move {
            let mut seen = Vec::new();
            while start.elapsed() < stop_at {
                let sent = start.elapsed();
                let answer = Answer(
                    client
                        .check(req.clone())
                        .await
                        .expect("Check answers")
                        .into_inner(),
                );
                seen.push((sent, start.elapsed(), answer.is_allow(), answer.status()));
            }
            seen
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paused_at = start.elapsed();
    redis.pause();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let resumed_at = start.elapsed();
    redis.resume();
    let seen: Vec<(Duration, Duration, bool, u16)> = workers.join_all().await.into_iter().flatten().collect();

    // Checks sent and answered during the outage (sent 5 ms after `kill -STOP` returned, so
    // that the signal has surely stopped Redis; answered before `kill -CONT`: a Check waiting
    // on Redis when it returns is rightly allowed).
    let during: Vec<_> = seen
        .iter()
        .filter(|(sent, answered, _, _)| {
            *sent > paused_at + Duration::from_millis(5) && *answered < resumed_at
        })
        .collect();
    let allowed_during = during.iter().filter(|(_, _, ok, _)| *ok).count();
    let unavailable = during.iter().filter(|(_, _, _, status)| *status == 503).count();
    let first_allow_after = seen
        .iter()
        .filter(|(_, answered, ok, _)| *ok && *answered > resumed_at)
        .map(|(_, answered, _, _)| *answered - resumed_at)
        .min();
    println!(
        "chaos: {} Checks, {} sent and answered during the 5 s outage: {} allowed, {} answered 503; first allow {:?} after redis returned",
        seen.len(),
        during.len(),
        allowed_during,
        unavailable,
        first_allow_after
    );
    assert!(
        seen.iter()
            .filter(|(_, answered, _, _)| *answered < paused_at)
            .all(|(_, _, ok, _)| *ok),
        "all allowed before"
    );
    assert!(!during.is_empty());
    assert_eq!(allowed_during, 0, "allowed while redis was down");
    assert_eq!(unavailable, during.len(), "every Check during the outage is 503");
    assert!(
        first_allow_after.is_some_and(|d| d < Duration::from_secs(2)),
        "service resumes by itself"
    );
}
