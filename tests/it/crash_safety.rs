//! Crash safety of the `file:` rule store: the real binary is killed with SIGKILL at random
//! moments during a stream of writes, 50 times. After every kill the store parses and holds the
//! last acknowledged state, or the one that was in flight, never a corrupt or older one.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oidc_authz::store::FileStore;

const BIN: &str = env!("CARGO_BIN_EXE_oidc-authz");
const KILLS: usize = 50;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn conditions(store: &FileStore) -> usize {
    let rules = store
        .load()
        .expect("the store parses after a kill")
        .expect("the store is not empty");
    rules
        .iter()
        .find(|r| r.name == "corp")
        .expect("the rule survives")
        .authorization
        .conditions
        .len()
}

/// A tiny deterministic random source (no extra crates; reproducible runs).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_never_loses_or_corrupts_an_acknowledged_change() {
    let dir = std::env::temp_dir().join(format!("oidc-authz-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = FileStore::new(dir.join("rules.yaml"));
    let mut rng = Lcg(0x5eed);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut expected = 0usize;
    let mut total_acked = 0usize;

    for round in 0..KILLS {
        let (mut child, admin) = start_server(&dir, round);
        let base = format!("http://127.0.0.1:{admin}/api/v1/rules/corp/conditions");

        // Writes stream in; each acknowledged one is counted.
        let acked = Arc::new(AtomicUsize::new(0));
        let writer = tokio::spawn({
            let (client, acked, base) = (client.clone(), acked.clone(), base.clone());
            async move {
                for i in 0.. {
                    let r = client
                        .post(&base)
                        .header("authorization", "Bearer crash-token-0123456789")
                        .json(&serde_json::json!({"path": format!("/r{round}/c{i}"), "match": "exact"}))
                        .send()
                        .await;
                    match r {
                        Ok(resp) if resp.status().as_u16() == 201 => acked.fetch_add(1, Ordering::SeqCst),
                        _ => return,
                    };
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(5 + rng.next(120))).await;
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;

        let acked = acked.load(Ordering::SeqCst);
        let found = conditions(&store);
        let last_acknowledged = expected + acked;
        assert!(
            found == last_acknowledged || found == last_acknowledged + 1,
            "round {round}: store holds {found} conditions, acknowledged state had {last_acknowledged}"
        );
        expected = found;
        total_acked += acked;
    }
    assert!(
        total_acked >= KILLS,
        "writes were really in flight ({total_acked} acknowledged)"
    );
}

/// Starts `oidc-authz serve` on free ports with a `file:` store in `dir`; returns it and its
/// admin port once the admin listener accepts connections. A port picked free may be taken by
/// a parallel test before the server binds it: the server then exits, and it is started again
/// on other ports (at most 5 times).
fn start_server(dir: &std::path::Path, round: usize) -> (std::process::Child, u16) {
    for attempt in 1..=5 {
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let config = dir.join("config.yaml");
        let text = format!(
            "server:\n  grpc_listen: 127.0.0.1:{grpc}\n  http_listen: 127.0.0.1:{http}\n  admin_listen: 127.0.0.1:{admin}\n  admin_token: crash-token-0123456789\n\
             session:\n  secrets: [\"0123456789abcdef0123456789abcdef\"]\nrules_store: file:rules.yaml\n\
             rules:\n  - name: corp\n    issuer: http://127.0.0.1:1\n    redirect_url: http://127.0.0.1:{http}/oauth2/callback\n    client_id: c\n    client_secret: s\n"
        );
        std::fs::File::create(&config)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("OIDC_AUTHZ_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok() {
                return (child, admin);
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                eprintln!("round {round}: the server exited at start-up (attempt {attempt})");
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("round {round}: the admin listener never came up");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("round {round}: the server exited at start-up 5 times");
}
