//! `oidc-authz serve`: opens the rule store, binds the gRPC, HTTP and admin listeners, reloads
//! rules on store edits and SIGHUP, and drains in-flight requests on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::RuleAdmin;
use crate::app::App;
use crate::check::CheckService;
use crate::config::Config;
use crate::rules::RuleSet;

/// Largest gRPC message we accept (a `CheckRequest` with big headers fits easily).
const MAX_GRPC_MESSAGE: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0} listener failed: {1}")]
    Listener(&'static str, String),
}

/// The bound listeners, so tests can ask for port 0 and learn the real ports.
pub struct Bound {
    pub grpc: TcpListener,
    pub http: TcpListener,
    /// Bound only when `server.admin_token` is set.
    pub admin: Option<TcpListener>,
}

fn admin_token(config: &Config) -> Option<&str> {
    config.server.admin_token.as_deref().filter(|t| !t.is_empty())
}

pub async fn bind(config: &Config) -> Result<Bound, ServeError> {
    async fn listen(addr: SocketAddr) -> Result<TcpListener, ServeError> {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    }
    let bad = |f: &str| ServeError::Unsupported(format!("bad {f}"));
    let grpc = listen(config.server.grpc_addr().ok_or_else(|| bad("grpc_listen"))?).await?;
    let http = listen(config.server.http_addr().ok_or_else(|| bad("http_listen"))?).await?;
    let admin = match admin_token(config) {
        Some(_) => Some(listen(config.server.admin_addr().ok_or_else(|| bad("admin_listen"))?).await?),
        None => None,
    };
    Ok(Bound { grpc, http, admin })
}

/// The running state: decisions (`App`) and rule management (`RuleAdmin`) over the store.
pub struct Services {
    pub app: Arc<App>,
    pub admin: Arc<RuleAdmin>,
    pub admin_token: Option<String>,
}

/// Opens the rule store (importing the config's rules into an empty one) and builds the state.
pub fn start(config: &Config) -> Result<Services, ServeError> {
    start_with(config, None)
}

/// As `start`, with the config's rules already compiled (by `rule_source::load_config`), so
/// they are not compiled again when they are the ones that run.
pub fn start_with(config: &Config, compiled_config_rules: Option<RuleSet>) -> Result<Services, ServeError> {
    let app = App::start(config, RuleSet::empty(config.default_action));
    let store = crate::store::Store::open(config).map_err(|e| ServeError::Unsupported(e.to_string()))?;
    let admin = RuleAdmin::start(
        app.clone(),
        store,
        &config.rules,
        compiled_config_rules,
        config.default_action,
    )
    .map_err(|e| ServeError::Unsupported(format!("rules_store: {e}")))?;
    Ok(Services {
        app,
        admin: Arc::new(admin),
        admin_token: admin_token(config).map(str::to_string),
    })
}

/// Makes the running rules follow the store: polls its version (every second for a file,
/// every 500 ms for Redis, 250 ms on a Cluster), wakes on the store's change notifications (Redis pub/sub), and
/// reloads unconditionally on SIGHUP. A failure is logged once until it changes or clears.
fn spawn_reloader(admin: Arc<RuleAdmin>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut notifications = admin.subscribe();
        let interval = admin.poll_interval();
        let mut last_error: Option<String> = None;
        // The first round runs at once: a Redis store is read (or filled) as soon as it answers.
        let mut force = false;
        loop {
            match admin.sync(force).await {
                Ok(_) => {
                    if last_error.take().is_some() {
                        tracing::info!(store = %admin.describe_store(), "rule store readable again");
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::error!(error = %message, "rule store reload failed; keeping the running rules");
                        last_error = Some(message);
                    }
                }
            }
            #[cfg(unix)]
            let hup_recv = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup_recv = std::future::pending::<Option<()>>();
            let notified = async {
                match notifications.as_mut() {
                    Some(n) => n.recv().await,
                    None => std::future::pending().await,
                }
            };
            force = tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                n = notified => {
                    if n.is_none() {
                        notifications = None;
                    }
                    false
                }
                _ = hup_recv => true,
                _ = shutdown.wait_for(|s| *s) => return,
            };
        }
    });
}

/// How long `serve` waits for a Redis rule store before opening the listeners with the config
/// file's rules (it keeps trying in the background; `/readyz` names the store until then).
const FIRST_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs until `shutdown` turns true (or, in `serve`, a signal arrives), or until the gRPC
/// listener fails: then the other listeners drain too, and the error is returned (so the
/// process exits and its orchestrator restarts it, rather than serving without `Check`).
pub async fn run(
    services: &Services,
    bound: Bound,
    outer_shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let app = services.app.clone();
    // Every listener stops on `shutdown`: the caller's signal, or the gRPC listener ending.
    let (stop, shutdown) = watch::channel(false);
    let grpc_ended = tokio::sync::Notify::new();
    let forward = async {
        let mut outer = outer_shutdown;
        tokio::select! {
            _ = outer.wait_for(|s| *s) => {}
            _ = grpc_ended.notified() => {}
        }
        let _ = stop.send(true);
    };
    spawn_reloader(services.admin.clone(), shutdown.clone());

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AuthorizationServer<CheckService>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let grpc_addr = bound.grpc.local_addr().ok();
    let http_addr = bound.http.local_addr().ok();
    let check =
        AuthorizationServer::new(CheckService::new(app.clone())).max_decoding_message_size(MAX_GRPC_MESSAGE);

    // Each gRPC connection is served whole on one thread (`grpc_workers`); the threads keep
    // what their decisions started running until this function returns.
    let (_release, release) = watch::channel(());
    let router = tonic::transport::Server::builder()
        .layer(crate::grpc_frames::SmallFramesLayer)
        .add_service(health_service)
        .add_service(check);
    let grpc = crate::grpc_workers::serve(
        bound.grpc,
        crate::grpc_workers::default_threads(),
        move |incoming| {
            let router = router.clone();
            // No signal of its own: a thread's `Incoming` ends at shutdown once the
            // connections already accepted are in, and tonic then drains them.
            async move {
                router
                    .serve_with_incoming_shutdown(incoming, std::future::pending())
                    .await
                    .map_err(|e| e.to_string())
            }
        },
        shutdown.clone(),
        release,
    );
    let grpc = async {
        let served = grpc.await;
        if let Err(e) = &served {
            tracing::error!(error = %e, "gRPC listener failed; stopping");
        }
        grpc_ended.notify_one();
        served
    };

    let mut http_shutdown = shutdown.clone();
    let router = crate::http_listener::router(app.clone());
    let http = axum::serve(bound.http, router).with_graceful_shutdown(async move {
        let _ = http_shutdown.wait_for(|s| *s).await;
    });

    let admin = async {
        match (bound.admin, &services.admin_token) {
            (Some(listener), Some(token)) => {
                tracing::info!(
                    admin = listener.local_addr().ok().map(tracing::field::display),
                    "admin API and console listening"
                );
                let router = crate::admin::router(services.admin.clone(), token);
                let mut admin_shutdown = shutdown.clone();
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = admin_shutdown.wait_for(|s| *s).await;
                    })
                    .await
            }
            _ => {
                tracing::warn!("admin API disabled: set server.admin_token to enable it");
                Ok(())
            }
        }
    };
    tracing::info!(
        grpc = grpc_addr.map(tracing::field::display),
        http = http_addr.map(tracing::field::display),
        "oidc-authz listening"
    );

    let (g, h, a, ()) = tokio::join!(grpc, async { http.await }, admin, forward);
    g.map_err(|e| ServeError::Listener("gRPC", e))?;
    h.map_err(|e| ServeError::Listener("HTTP", e.to_string()))?;
    a.map_err(|e| ServeError::Listener("admin", e.to_string()))?;
    tracing::info!("drained; bye");
    Ok(())
}

/// `oidc-authz serve`, with the config's rules as `rule_source::load_config` compiled them.
pub async fn serve(config: Config, compiled_config_rules: RuleSet) -> Result<(), ServeError> {
    let services = start_with(&config, Some(compiled_config_rules))?;
    if !services.admin.synced() {
        let admin = &services.admin;
        let first = async {
            // Read once (even if what it holds cannot be run: that is logged by the reloader).
            loop {
                let _ = admin.sync(false).await;
                if admin.synced() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        };
        if tokio::time::timeout(FIRST_SYNC_WAIT, first).await.is_err() {
            tracing::warn!(store = %admin.describe_store(), "rule store unreachable: serving the config file's rules until it answers (/readyz names it)");
        }
    }
    let bound = bind(&config).await?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = tx.send(true);
    });
    run(&services, bound, rx).await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
