//! The edge to Redis: one client that the session store, the shared revocations and the rule
//! store use, so that timeouts, reconnection and the `oidc_authz_redis_up` gauge are decided
//! once. Nothing above this module sees a Redis type but the commands it builds.
//!
//! - A standalone server (`redis://`, `rediss://` for TLS, `user:password@` for ACLs) is reached
//!   through redis-rs's `ConnectionManager`, created lazily: the server starts while Redis is
//!   down, and the manager reconnects by itself when it returns.
//! - A Redis Cluster (`session.redis_cluster` seed nodes) is connected in the background, with
//!   backoff, and reconnects by itself afterwards.
//! - Every command is bounded by [`COMMAND_TIMEOUT`]: Redis that does not answer is Redis down,
//!   and the callers answer 503, never an allow.
//!
//! - [`RedisClient::confirm_up`] proves that a standalone Redis is answering *now*: it resolves
//!   once Redis has answered a PING sent after the call. Callers waiting at the same time share
//!   one PING, so the proof costs one round trip per batch, not per request. The session store
//!   uses it to serve a session it read less than a second ago without reading it again, and
//!   still never allow a request while Redis is down.
//!
//! TLS uses rustls with the system's roots; `SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured, so a
//! private CA is trusted by pointing `SSL_CERT_FILE` at it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, Value};

/// The longest a command may take before Redis counts as down.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Backoff of the background cluster connection: starts here, doubles, never above the cap.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(2);
/// How often Redis is pinged in the background.
const HEALTH_EVERY: Duration = Duration::from_millis(500);

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server: `redis://…` or `rediss://…`.
    Server(String),
    /// A Redis Cluster: its seed nodes, each `redis://host:port` or `rediss://…`.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// What to show in logs and `/readyz`: the addresses without credentials.
    pub fn describe(&self) -> String {
        match self {
            RedisTarget::Server(url) => without_credentials(url),
            RedisTarget::Cluster(nodes) => format!(
                "cluster {}",
                nodes
                    .iter()
                    .map(|n| without_credentials(n))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(unreadable address)".into(),
    }
}

/// Redis could not be asked: down, slow, refusing, or an answer of the wrong shape. The text is
/// for logs and never holds a credential.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisDown(pub String);

#[derive(Clone)]
enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The shared client (cheap to share behind an `Arc`).
pub struct RedisClient {
    target: RedisTarget,
    conn: ArcSwapOption<Conn>,
    up: AtomicBool,
    /// Why there can be no connection at all (an address the driver refuses): every command
    /// fails with it, so everything that needs Redis answers 503.
    broken: Option<String>,
    /// The shared PING of [`RedisClient::confirm_up`] (a standalone server only).
    heartbeat: Option<Arc<Heartbeat>>,
}

/// PINGs numbered in the order they are sent, and the latest answered one, so that a caller can
/// wait for the answer to a PING sent after it asked.
struct Heartbeat {
    /// How many PINGs have been started (the number of the latest one).
    started: AtomicU64,
    /// The latest PING that came back, and whether Redis answered it.
    answered: tokio::sync::watch::Sender<Answered>,
    /// Asks the pinger for another PING (a stored permit: never lost, never more than one).
    wake: tokio::sync::Notify,
}

#[derive(Debug, Clone, Copy, Default)]
struct Answered {
    number: u64,
    up: bool,
}

impl Heartbeat {
    fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            started: AtomicU64::new(0),
            answered: tokio::sync::watch::Sender::new(Answered::default()),
            wake: tokio::sync::Notify::new(),
        })
    }
}

impl Drop for RedisClient {
    fn drop(&mut self) {
        // Lets the pinger see that the client is gone and end.
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.wake.notify_one();
        }
    }
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisClient({}, up: {})", self.target.describe(), self.is_up())
    }
}

impl RedisClient {
    /// A client for `target`. An address that cannot be read is an error here (the
    /// configuration check reports it first); Redis being down is not: commands fail until it
    /// is back. Must run inside the Tokio runtime.
    pub fn start(target: RedisTarget) -> Result<Arc<RedisClient>, RedisDown> {
        let heartbeat = matches!(target, RedisTarget::Server(_)).then(Heartbeat::new);
        let client = Arc::new(RedisClient {
            target: target.clone(),
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            broken: None,
            heartbeat: heartbeat.clone(),
        });
        match target {
            RedisTarget::Server(url) => {
                let redis = redis::Client::open(url.as_str()).map_err(|e| RedisDown(e.to_string()))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(RETRY_CAP);
                let manager = ConnectionManager::new_lazy_with_config(redis, config)
                    .map_err(|e| RedisDown(e.to_string()))?;
                client.conn.store(Some(Arc::new(Conn::Server(manager))));
            }
            RedisTarget::Cluster(nodes) => {
                let builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT)
                    .retries(1);
                let cluster = builder.build().map_err(|e| RedisDown(e.to_string()))?;
                let weak = Arc::downgrade(&client);
                tokio::spawn(async move {
                    let mut wait = RETRY_FIRST;
                    loop {
                        let Some(client) = weak.upgrade() else { return };
                        match cluster.get_async_connection().await {
                            Ok(conn) => {
                                client.conn.store(Some(Arc::new(Conn::Cluster(conn))));
                                client.up.store(true, Ordering::Relaxed);
                                tracing::info!(redis = %client.target.describe(), "redis cluster connected");
                                return;
                            }
                            Err(e) => {
                                client.up.store(false, Ordering::Relaxed);
                                tracing::warn!(redis = %client.target.describe(), error = %e, retry_in = ?wait, "redis cluster not reachable");
                            }
                        }
                        drop(client);
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(RETRY_CAP);
                    }
                });
            }
        }
        // Keeps `is_up` true to the moment (for `/readyz` and `oidc_authz_redis_up`), and
        // connects at start rather than on the first request.
        let weak = Arc::downgrade(&client);
        tokio::spawn(async move {
            loop {
                let Some(client) = weak.upgrade() else { return };
                let _ = client.ping().await;
                drop(client);
                tokio::time::sleep(HEALTH_EVERY).await;
            }
        });
        if let Some(heartbeat) = heartbeat {
            let weak = Arc::downgrade(&client);
            tokio::spawn(async move {
                loop {
                    heartbeat.wake.notified().await;
                    let Some(client) = weak.upgrade() else { return };
                    // Numbered before it is sent: a caller that read a lower number asked first.
                    let number = heartbeat.started.fetch_add(1, Ordering::SeqCst) + 1;
                    let up = client.ping().await.is_ok();
                    drop(client);
                    heartbeat.answered.send_if_modified(|last| {
                        let newer = number > last.number;
                        if newer {
                            *last = Answered { number, up };
                        }
                        newer
                    });
                }
            });
        }
        Ok(client)
    }

    /// `start`, or, when the address cannot be used at all, a client whose every command fails
    /// (fail closed: 503), with the reason logged.
    pub fn start_or_broken(target: RedisTarget) -> Arc<RedisClient> {
        match RedisClient::start(target.clone()) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(redis = %target.describe(), error = %e, "redis address unusable: everything that needs redis answers 503");
                Arc::new(RedisClient {
                    target,
                    conn: ArcSwapOption::empty(),
                    up: AtomicBool::new(false),
                    broken: Some(e.0),
                    heartbeat: None,
                })
            }
        }
    }

    /// What the client talks to (for logs and `/readyz`).
    pub fn describe(&self) -> String {
        self.target.describe()
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, RedisTarget::Cluster(_))
    }

    /// Whether the last command reached Redis (`oidc_authz_redis_up`).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn connection(&self) -> Result<Conn, RedisDown> {
        if let Some(why) = &self.broken {
            return Err(RedisDown(why.clone()));
        }
        self.conn
            .load_full()
            .map(|c| Conn::clone(&c))
            .ok_or_else(|| RedisDown("not connected yet".into()))
    }

    fn settle<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, RedisDown> {
        let result = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if !is_connection_error(&e) => {
                // Redis answered, with an error of its own: it is up.
                self.up.store(true, Ordering::Relaxed);
                return Err(RedisDown(e.to_string()));
            }
            Ok(Err(e)) => Err(RedisDown(e.to_string())),
            Err(_) => Err(RedisDown(format!(
                "no answer within {} ms",
                COMMAND_TIMEOUT.as_millis()
            ))),
        };
        self.up.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisDown> {
        let conn = self.connection()?;
        let result = tokio::time::timeout(COMMAND_TIMEOUT, async move {
            match conn {
                Conn::Server(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        })
        .await;
        self.settle(result)
    }

    /// Runs a pipeline of independent commands and returns every command's answer (the
    /// `ignore` marks are not used: read the answers as `()` or as one value per command). On a
    /// single server it is one round trip; in a Cluster the keys may live on different nodes,
    /// so each command is sent on its own, one after the other. Not for transactions.
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, RedisDown> {
        let conn = self.connection()?;
        let result = tokio::time::timeout(COMMAND_TIMEOUT, async move {
            let values: Vec<Value> = match conn {
                Conn::Server(mut c) => {
                    let mut each = Vec::with_capacity(pipe.len());
                    for cmd in pipe.cmd_iter() {
                        each.push(cmd.clone());
                    }
                    let mut plain = redis::pipe();
                    for cmd in each {
                        plain.add_command(cmd);
                    }
                    plain.query_async(&mut c).await?
                }
                Conn::Cluster(mut c) => {
                    let mut values = Vec::with_capacity(pipe.len());
                    for cmd in pipe.cmd_iter() {
                        values.push(cmd.query_async::<Value>(&mut c).await?);
                    }
                    values
                }
            };
            T::from_redis_value(Value::Array(values)).map_err(redis::RedisError::from)
        })
        .await;
        self.settle(result)
    }

    /// Resolves once Redis has answered a PING that was sent after this call began: Redis is up
    /// now, not just a moment ago. Callers waiting at the same time share one PING. Without a
    /// shared PING (a Cluster, an unusable address) it sends its own.
    pub async fn confirm_up(&self) -> Result<(), RedisDown> {
        let Some(heartbeat) = &self.heartbeat else {
            return self.ping().await;
        };
        // Every PING numbered above this one is sent after this point.
        let needed = heartbeat.started.load(Ordering::SeqCst) + 1;
        let mut answered = heartbeat.answered.subscribe();
        heartbeat.wake.notify_one();
        // The PING itself is bounded by COMMAND_TIMEOUT; one may be in flight before ours.
        let wait = tokio::time::timeout(
            COMMAND_TIMEOUT * 2 + Duration::from_millis(100),
            answered.wait_for(|a| a.number >= needed),
        )
        .await;
        match wait {
            Ok(Ok(a)) if a.up => Ok(()),
            Ok(Ok(_)) => Err(RedisDown("redis did not answer a PING".into())),
            Ok(Err(_)) => Err(RedisDown("the redis client is shutting down".into())),
            Err(_) => Err(RedisDown(format!(
                "no answer within {} ms",
                (COMMAND_TIMEOUT * 2).as_millis()
            ))),
        }
    }

    /// Checks the connection with a PING.
    pub async fn ping(&self) -> Result<(), RedisDown> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RedisDown(format!("PING answered {pong:?}")))
        }
    }
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

impl RedisClient {
    /// Wakes the receiver on each message published on `channel`, and after each
    /// (re)subscription, since messages may have been missed meanwhile. One server only:
    /// `None` for a Cluster, where callers poll. The subscription has its own connection,
    /// reconnects with backoff, and ends when the receiver is dropped.
    pub fn subscribe(&self, channel: &str) -> Option<tokio::sync::mpsc::Receiver<()>> {
        use tonic::codegen::tokio_stream::StreamExt;
        let RedisTarget::Server(url) = &self.target else {
            return None;
        };
        let client = redis::Client::open(url.as_str()).ok()?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let channel = channel.to_string();
        let target = self.describe();
        tokio::spawn(async move {
            let mut wait = RETRY_FIRST;
            let mut failing = false;
            loop {
                let subscribed = tokio::time::timeout(CONNECT_TIMEOUT, async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                })
                .await;
                match subscribed {
                    Ok(Ok(pubsub)) => {
                        wait = RETRY_FIRST;
                        if failing {
                            tracing::info!(redis = %target, channel, "redis subscription restored");
                        }
                        failing = false;
                        let _ = tx.try_send(());
                        let mut messages = pubsub.into_on_message();
                        loop {
                            tokio::select! {
                                message = messages.next() => match message {
                                    Some(_) => { let _ = tx.try_send(()); }
                                    None => break,
                                },
                                _ = tx.closed() => return,
                            }
                        }
                        tracing::warn!(redis = %target, channel, "redis subscription lost; resubscribing");
                    }
                    Ok(Err(e)) if !failing => {
                        failing = true;
                        tracing::warn!(redis = %target, channel, error = %e, "redis subscription failed; retrying");
                    }
                    Err(_) if !failing => {
                        failing = true;
                        tracing::warn!(redis = %target, channel, "redis subscription timed out; retrying");
                    }
                    _ => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = tx.closed() => return,
                }
                wait = (wait * 2).min(RETRY_CAP);
            }
        });
        Some(rx)
    }
}
