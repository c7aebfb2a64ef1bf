//! Real `redis-server` processes for the integration tests: each test starts its own on a free
//! loopback port (never the system service), with no persistence, and stops it when the handle
//! is dropped. `stop` and `start_again` (same port) let a test take Redis away mid-test.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server` on 127.0.0.1.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Extra arguments (ACL users, TLS) repeated on a restart.
    args: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn spawn(port: u16, args: &[String]) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--protected-mode", "no", "--loglevel", "warning"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn()
        .expect("redis-server runs (apt-get install -y redis-server)")
}

/// Waits (bounded) until `port` accepts connections.
fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server on port {port} did not start within 10 s");
}

impl RedisServer {
    /// A fresh, empty server.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Vec::new())
    }

    /// A fresh server with extra `redis-server` arguments.
    pub fn start_with(args: Vec<String>) -> RedisServer {
        let port = free_port();
        let child = spawn(port, &args);
        wait_listening(port);
        RedisServer {
            port,
            child: Some(child),
            args,
        }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn start_again(&mut self) {
        self.stop();
        self.child = Some(spawn(self.port, &self.args));
        wait_listening(self.port);
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered, as when a
    /// Redis host stalls. `resume` thaws it, data intact.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let status = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success(), "kill {sig} failed");
        }
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of `n` masters (no replicas) on loopback, made with
/// `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(n: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|i| {
                let dir = std::env::temp_dir().join(format!(
                    "oidc-authz-cluster-{}-{}-{i}",
                    std::process::id(),
                    free_port()
                ));
                std::fs::create_dir_all(&dir).expect("a temp dir");
                RedisServer::start_with(vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.join("nodes.conf").display().to_string(),
                    "--dir".into(),
                    dir.display().to_string(),
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Wait (bounded) until every node says the cluster is ok.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ok = nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster { nodes }
    }

    /// The seed nodes, as `session.redis_cluster` lists them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Keys matching `pattern` on every node.
    pub fn scan(&self, pattern: &str) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.cli(&["--scan", "--pattern", pattern])
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|l| !l.is_empty())
            .collect()
    }
}
