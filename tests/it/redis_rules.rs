//! `rules_store: redis://…`: several product instances in one test share one rule set in a real
//! redis-server. A change through any replica's admin API reaches the others within 1 s; 40
//! concurrent edits over two replicas lose nothing; an empty store receives the config's rules
//! once; Redis stopped and started again (empty) is survived; and the propagation time is
//! measured.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;
use crate::support::idp::{IdpOptions, TestIdp};
use crate::support::redis::RedisServer;

const TOKEN: &str = "admin-token-for-tests";
const KEY: &str = "oidc-authz:{rules}";

/// The basic config with an admin token and the rule set in `redis_url`.
fn config(idp: &TestIdp, redis_url: &str) -> oidc_authz::config::Config {
    let yaml = fill(BASIC_CONFIG, idp)
        .replace("rules_store: inline", &format!("rules_store: {redis_url}"))
        .replace("session:", &format!("server:\n  admin_token: {TOKEN}\nsession:"));
    parse_config(&yaml)
}

/// `n` replicas sharing `redis`: all use the first one's IdP (the rules must be the same);
/// each waits (bounded) until it has read the store.
async fn replicas(redis: &RedisServer, n: usize) -> Vec<Stack> {
    let first_idp = TestIdp::start(IdpOptions::default()).await;
    let config = config(&first_idp, &redis.url());
    let mut stacks = vec![Stack::start_with(first_idp, config.clone()).await];
    for _ in 1..n {
        let idp = TestIdp::start(IdpOptions::default()).await;
        stacks.push(Stack::start_with(idp, config.clone()).await);
    }
    for s in &stacks {
        wait_synced(s).await;
    }
    stacks[0].wait_ready().await;
    stacks
}

async fn wait_synced(s: &Stack) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.admin.synced() {
        assert!(
            Instant::now() < deadline,
            "the replica never read the Redis rule store"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn call(s: &Stack, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    admin_call(s, TOKEN, method, path, body).await
}

/// Whether `s` lets a browser through to a protected path (true once `corp` is disabled, as
/// `default_action` is allow).
async fn private_allowed(s: &Stack) -> bool {
    s.check(Req::browser("https://app1.example.test/private"))
        .await
        .is_allow()
}

/// Polls `s` (bounded by `limit`) until `private_allowed` is `want`; the time it took.
async fn time_until(s: &Stack, want: bool, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if private_allowed(s).await == want {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

fn stored(redis: &RedisServer) -> (String, Value) {
    let version = redis.cli(&["HGET", KEY, "version"]).trim().to_string();
    let rules = redis.cli(&["HGET", KEY, "rules"]);
    (version, serde_json::from_str(rules.trim()).unwrap_or(Value::Null))
}

fn conditions(rules: &Value) -> usize {
    rules["rules"][0]["authorization"]["conditions"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_disabled_on_one_replica_stops_being_enforced_on_the_others_within_a_second() {
    let redis = RedisServer::start();
    let s = replicas(&redis, 3).await;
    assert!(!private_allowed(&s[1]).await && !private_allowed(&s[2]).await);

    let (st, rule) = call(&s[0], "POST", "/api/v1/rules/corp/disable", None).await;
    assert_eq!(st, 200, "{rule}");
    // Acknowledged only once stored.
    assert_eq!(stored(&redis).1["rules"][0]["enabled"], false);
    for (i, replica) in s.iter().enumerate().skip(1) {
        let took = time_until(replica, true, Duration::from_secs(1)).await;
        eprintln!("replica {i} follows the disable in {took:?}");
        assert!(
            took.is_some(),
            "replica {i} still enforces the disabled rule after 1 s"
        );
        let (_, got) = call(replica, "GET", "/api/v1/rules/corp", None).await;
        assert_eq!(
            got["enabled"], false,
            "the API of replica {i} shows the change too"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_condition_additions_over_two_replicas_are_all_kept() {
    let redis = RedisServer::start();
    let s = replicas(&redis, 2).await;
    let mut calls = Vec::new();
    for i in 0..40 {
        let url = s[i % 2].admin_url("/api/v1/rules/corp/conditions");
        calls.push(tokio::spawn(async move {
            let resp = http_client()
                .post(url)
                .header("authorization", format!("Bearer {TOKEN}"))
                .json(&json!({"path": format!("/added/{i}"), "match": "prefix"}))
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), 201);
    }
    let (version, rules) = stored(&redis);
    assert_eq!(conditions(&rules), 41, "1 from the config + 40 added");
    assert_eq!(version, "41", "one import and 40 writes");
    let paths: Vec<String> = rules["rules"][0]["authorization"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap_or_default().to_string())
        .collect();
    for i in 0..40 {
        assert!(paths.contains(&format!("/added/{i}")), "/added/{i} lost");
    }
    // Both replicas show all of them within 1 s.
    for replica in &s {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let (_, rule) = call(replica, "GET", "/api/v1/rules/corp", None).await;
            let n = rule["authorization"]["conditions"].as_array().map_or(0, Vec::len);
            if n == 41 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a replica shows {n} conditions after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_import_the_config_rules_once() {
    let redis = RedisServer::start();
    let idp = TestIdp::start(IdpOptions::default()).await;
    let config = config(&idp, &redis.url());
    let (idp2, idp3) = tokio::join!(
        TestIdp::start(IdpOptions::default()),
        TestIdp::start(IdpOptions::default())
    );
    let (a, b, c) = tokio::join!(
        Stack::start_with(idp, config.clone()),
        Stack::start_with(idp2, config.clone()),
        Stack::start_with(idp3, config.clone()),
    );
    for s in [&a, &b, &c] {
        wait_synced(s).await;
    }
    let (version, rules) = stored(&redis);
    assert_eq!(version, "1", "written once");
    let expected: Vec<Value> = config
        .rules
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    assert_eq!(
        rules["rules"],
        Value::Array(expected),
        "the config's rules, secrets included"
    );
    for s in [&a, &b, &c] {
        let (st, list) = call(s, "GET", "/api/v1/rules", None).await;
        assert_eq!(st, 200);
        assert_eq!(list["rules"][0]["name"], "corp");
        assert_eq!(list["rules"][0]["client_secret"], "******");
    }
    // A replica started later reads the store and imports nothing.
    let idp4 = TestIdp::start(IdpOptions::default()).await;
    let d = Stack::start_with(idp4, config).await;
    wait_synced(&d).await;
    assert_eq!(stored(&redis).0, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_started_again_empty_is_survived() {
    let mut redis = RedisServer::start();
    let s = replicas(&redis, 2).await;
    let (st, _) = call(
        &s[0],
        "POST",
        "/api/v1/rules/corp/conditions",
        Some(json!({"path": "/kept/", "match": "prefix"})),
    )
    .await;
    assert_eq!(st, 201);
    assert_eq!(stored(&redis).0, "2");
    let public_b = || s[1].check(Req::browser("https://app1.example.test/kept/x"));
    let deadline = Instant::now() + Duration::from_secs(1);
    while !public_b().await.is_allow() {
        assert!(Instant::now() < deadline, "replica B never followed the change");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    redis.stop();
    // The running rules keep deciding on both replicas.
    for replica in &s {
        assert!(
            !private_allowed(replica).await,
            "a protected path is never allowed"
        );
        assert!(replica
            .check(Req::browser("https://app1.example.test/kept/x"))
            .await
            .is_allow());
    }
    // Changes answer 503 (JSON, retry-after) and store nothing; reads still answer.
    let resp = http_client()
        .post(s[0].admin_url("/api/v1/rules/corp/disable"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap_or_default().contains("redis"),
        "{body}"
    );
    let (st, rule) = call(&s[1], "GET", "/api/v1/rules/corp", None).await;
    assert_eq!((st, rule["enabled"].clone()), (200, json!(true)));
    assert!(!private_allowed(&s[0]).await, "the refused disable did not apply");

    // Redis returns empty (no persistence): the running rules are stored again, once.
    redis.start_again();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (version, rules) = stored(&redis);
        if version == "1" {
            assert_eq!(
                conditions(&rules),
                2,
                "the running rules, the added condition kept"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rules were not stored again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Changes work again and reach the other replica.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (st, _) = call(&s[1], "POST", "/api/v1/rules/corp/disable", None).await;
        if st == 200 {
            break;
        }
        assert_eq!(st, 503);
        assert!(
            Instant::now() < deadline,
            "changes still refused after Redis returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(time_until(&s[0], true, Duration::from_secs(1)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_rule_store_while_redis_cannot_be_read() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.stop();
    let idp = TestIdp::start(IdpOptions::default()).await;
    let cfg = config(&idp, &url);
    let s = Stack::start_with(idp, cfg).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = http_client().get(s.http_url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.unwrap();
    let why = body["not_ready"]["rules_store"].as_str().unwrap_or_default();
    assert!(why.contains("redis"), "{body}");
    // The config's rules decide meanwhile: a protected path is not allowed.
    assert!(!private_allowed(&s).await);
    redis.start_again();
    wait_synced(&s).await;
    let (version, _) = stored(&redis);
    assert_eq!(
        version, "1",
        "the config's rules were imported once Redis answered"
    );
}

/// Not a benchmark: prints how long a change made through one replica takes to be enforced by
/// another (100 changes, alternately disabling and enabling `corp`), and checks the 1 s bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_time_over_100_changes() {
    let redis = RedisServer::start();
    let s = replicas(&redis, 2).await;
    let mut times = Vec::new();
    for i in 0..100 {
        let (path, allowed) = if i % 2 == 0 {
            ("/api/v1/rules/corp/disable", true)
        } else {
            ("/api/v1/rules/corp/enable", false)
        };
        let start = Instant::now();
        let (st, _) = call(&s[0], "POST", path, None).await;
        assert_eq!(st, 200);
        let acked = start.elapsed();
        let seen = time_until(&s[1], allowed, Duration::from_secs(1)).await;
        let Some(seen) = seen else {
            panic!("change {i} not enforced by the other replica within 1 s");
        };
        times.push(acked + seen);
    }
    times.sort();
    eprintln!(
        "rule change to another replica over {} changes: p50 {:?}, p90 {:?}, max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times[times.len() - 1]
    );
    assert!(times[times.len() - 1] < Duration::from_secs(1));
}

/// A write that publishes nothing (made outside oidc-authz) is still followed, by the version
/// poll; a stored set that does not compile is refused and the running rules keep deciding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_poll_follows_silent_writes_and_an_invalid_set_is_not_run() {
    let redis = RedisServer::start();
    let s = replicas(&redis, 1).await;
    let (_, mut rules) = stored(&redis);
    rules["rules"][0]["enabled"] = json!(false);
    let start = Instant::now();
    redis.cli(&["HSET", KEY, "version", "100", "rules", &rules.to_string()]);
    let took = time_until(&s[0], true, Duration::from_secs(2)).await;
    eprintln!("silent write followed by the poll in {took:?}");
    assert!(took.is_some() && start.elapsed() < Duration::from_secs(1));

    // Invalid (a rule without an issuer): logged, not run.
    rules["rules"][0]["enabled"] = json!(true);
    rules["rules"][0]["issuer"] = json!("");
    redis.cli(&["HSET", KEY, "version", "101", "rules", &rules.to_string()]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(private_allowed(&s[0]).await, "the invalid set was not swapped in");
    let (_, got) = call(&s[0], "GET", "/api/v1/rules/corp", None).await;
    assert_eq!(got["enabled"], false);
    // A change here cannot overwrite what this replica could not read: 503, nothing stored.
    let (st, body) = call(&s[0], "POST", "/api/v1/rules/corp/enable", None).await;
    assert_eq!(st, 503, "{body}");
    assert_eq!(stored(&redis).0, "101");
    // Fixed in the store: followed again, and changes work.
    rules["rules"][0]["issuer"] = json!(s[0].idp.issuer());
    rules["rules"][0]["enabled"] = json!(false);
    rules["rules"][0]["authorization"]["conditions"][0]["path"] = json!("/fixed/");
    redis.cli(&["HSET", KEY, "version", "102", "rules", &rules.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (_, got) = call(&s[0], "GET", "/api/v1/rules/corp", None).await;
        if got["authorization"]["conditions"][0]["path"] == "/fixed/" {
            break;
        }
        assert!(Instant::now() < deadline, "the fixed set was not followed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, body) = call(&s[0], "POST", "/api/v1/rules/corp/enable", None).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(stored(&redis).0, "103");
}

/// Three cluster nodes; their working directories (nodes.conf) are removed on drop.
struct Cluster {
    nodes: Vec<RedisServer>,
    dirs: Vec<std::path::PathBuf>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Three empty cluster nodes joined by `redis-cli --cluster create`, ready to serve.
fn redis_cluster() -> Cluster {
    let dirs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            std::env::temp_dir().join(format!(
                "oidc-authz-rules-cluster-{}-{i}-{:x}",
                std::process::id(),
                rand_suffix()
            ))
        })
        .collect();
    let nodes: Vec<RedisServer> = dirs
        .iter()
        .map(|dir| {
            std::fs::create_dir_all(dir).unwrap();
            RedisServer::start_with(vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--dir".into(),
                dir.display().to_string(),
            ])
        })
        .collect();
    let mut args = vec!["--cluster".to_string(), "create".to_string()];
    args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nodes[0].cli(&args);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodes
        .iter()
        .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    {
        assert!(Instant::now() < deadline, "the test cluster never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Cluster { nodes, dirs }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `rules_store: redis` on a 3-node Redis Cluster (no pub/sub there: the version poll carries
/// changes), changed through the gRPC admin service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_store_carries_grpc_changes_to_the_other_replica_within_a_second() {
    use oidc_authz::admin_api::v1::rule_service_client::RuleServiceClient;
    use oidc_authz::admin_api::v1::RuleName;

    let cluster = redis_cluster();
    let nodes = &cluster.nodes;
    let seeds: Vec<String> = nodes
        .iter()
        .map(|n| format!("\"redis://127.0.0.1:{}\"", n.port))
        .collect();
    let first_idp = TestIdp::start(IdpOptions::default()).await;
    let yaml = fill(BASIC_CONFIG, &first_idp)
        .replace("rules_store: inline", "rules_store: redis")
        .replace(
            "session:",
            &format!(
                "server:\n  admin_token: {TOKEN}\nsession:\n  redis_cluster: [{}]",
                seeds.join(", ")
            ),
        );
    let config = parse_config(&yaml);
    let a = Stack::start_with(first_idp, config.clone()).await;
    let b = Stack::start_with(TestIdp::start(IdpOptions::default()).await, config).await;
    wait_synced(&a).await;
    wait_synced(&b).await;
    a.wait_ready().await;
    assert_eq!(nodes[0].cli(&["-c", "HGET", KEY, "version"]).trim(), "1");
    assert!(!private_allowed(&b).await);

    let channel = tonic::transport::Channel::from_shared(a.admin_url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = RuleServiceClient::new(channel);
    let mut request = tonic::Request::new(RuleName { name: "corp".into() });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let rule = grpc.disable_rule(request).await.unwrap().into_inner();
    assert!(!rule.enabled);
    assert_eq!(nodes[0].cli(&["-c", "HGET", KEY, "version"]).trim(), "2");
    let took = time_until(&b, true, Duration::from_secs(1)).await;
    eprintln!("cluster: replica B follows a gRPC disable in {took:?}");
    assert!(took.is_some(), "replica B still enforces the rule after 1 s");
}

/// The release binary: `validate` with a Redis store never touches the network (Redis is down
/// here), and `serve` imports the config's rules into the empty store and exits 0 on SIGTERM.
#[test]
fn the_binary_validates_offline_and_serves_from_redis() {
    use std::process::{Command, Stdio};
    const BIN: &str = env!("CARGO_BIN_EXE_oidc-authz");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    };
    let (grpc, http, admin, idp) = (free(), free(), free(), free());
    let mut redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("oidc-authz-redis-rules-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            r#"
server:
  grpc_listen: 127.0.0.1:{grpc}
  http_listen: 127.0.0.1:{http}
  admin_listen: 127.0.0.1:{admin}
  admin_token: {TOKEN}
session:
  secrets: ["0123456789abcdef0123456789abcdef"]
rules_store: {url}
rules:
  - name: corp
    issuer: http://127.0.0.1:{idp}
    redirect_url: http://127.0.0.1:{http}/oauth2/callback
    client_id: c
    client_secret: the-client-secret
"#,
            url = redis.url()
        ),
    )
    .unwrap();
    redis.stop();
    let out = Command::new(BIN)
        .args(["validate", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    redis.start_again();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis.cli(&["HGET", KEY, "version"]).trim() != "1" {
        assert!(
            Instant::now() < deadline,
            "serve never imported the config's rules"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(redis.cli(&["HGET", KEY, "rules"]).contains("the-client-secret"));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        assert!(Instant::now() < deadline, "serve must exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Redis store that already holds rules: the config's differing `rules:` are not imported,
/// and `serve` says so once it has read the store, with how to import them instead.
#[test]
fn the_binary_warns_when_a_filled_redis_store_ignores_the_config_rules() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    };
    let (grpc, http, idp) = (free(), free(), free());
    let redis = RedisServer::start();
    let stored = json!({"rules": [{
        "name": "corp", "issuer": format!("http://127.0.0.1:{idp}"),
        "redirect_url": format!("http://127.0.0.1:{http}/oauth2/callback"),
        "client_id": "c", "client_secret": "s"
    }]});
    redis.cli(&[
        "HSET",
        KEY,
        "version",
        "3",
        "epoch",
        "e",
        "rules",
        &stored.to_string(),
    ]);
    let dir = std::env::temp_dir().join(format!("oidc-authz-redis-ignored-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            r#"
server:
  grpc_listen: 127.0.0.1:{grpc}
  http_listen: 127.0.0.1:{http}
session:
  secrets: ["0123456789abcdef0123456789abcdef"]
rules_store: {url}
rules:
  - name: other
    issuer: http://127.0.0.1:{idp}
    redirect_url: http://127.0.0.1:{http}/oauth2/callback
    client_id: c
    client_secret: s
"#,
            url = redis.url()
        ),
    )
    .unwrap();
    let log = crate::cli::serve_until_log_line(&path, "were NOT imported");
    let line = log
        .lines()
        .find(|l| l.contains("were NOT imported"))
        .unwrap_or_else(|| panic!("no warning that the config's rules were ignored:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("already holds 1 rule(s)"), "{line}");
    assert!(line.contains("(not as stored: other)"), "{line}");
    assert!(line.contains("DEL 'oidc-authz:{rules}'"), "{line}");
    assert_eq!(log.matches("were NOT imported").count(), 1, "once:\n{log}");
    // The stored rules were kept.
    assert_eq!(redis.cli(&["HGET", KEY, "version"]).trim(), "3");
    let _ = std::fs::remove_dir_all(&dir);
}
