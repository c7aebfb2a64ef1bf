//! `oidc-authz serve`: binds the gRPC and HTTP listeners, starts the providers, and drains
//! in-flight requests on SIGTERM or Ctrl-C before exiting.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::check::CheckService;
use crate::config::{Config, SessionStoreKind};

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
}

pub async fn bind(config: &Config) -> Result<Bound, ServeError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let grpc_addr = config
        .server
        .grpc_addr()
        .ok_or_else(|| ServeError::Unsupported("bad grpc_listen".into()))?;
    let http_addr = config
        .server
        .http_addr()
        .ok_or_else(|| ServeError::Unsupported("bad http_listen".into()))?;
    Ok(Bound {
        grpc: bind(grpc_addr).await?,
        http: bind(http_addr).await?,
    })
}

/// Runs until `shutdown` turns true (or, in `serve`, a signal arrives).
pub async fn run(
    app: Arc<App>,
    bound: Bound,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AuthorizationServer<CheckService>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let grpc_addr = bound.grpc.local_addr().ok();
    let http_addr = bound.http.local_addr().ok();
    let check = AuthorizationServer::new(CheckService::new(app.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE);

    let mut grpc_shutdown = shutdown.clone();
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(check)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(bound.grpc),
            async move {
                let _ = grpc_shutdown.wait_for(|s| *s).await;
            },
        );

    let mut http_shutdown = shutdown.clone();
    let router = crate::http_listener::router(app.clone());
    let http = axum::serve(bound.http, router).with_graceful_shutdown(async move {
        let _ = http_shutdown.wait_for(|s| *s).await;
    });
    tracing::info!(grpc = ?grpc_addr, http = ?http_addr, "oidc-authz listening");

    let (g, h) = tokio::join!(grpc, async { http.await });
    g.map_err(|e| ServeError::Listener("gRPC", e.to_string()))?;
    h.map_err(|e| ServeError::Listener("HTTP", e.to_string()))?;
    tracing::info!("drained; bye");
    Ok(())
}

/// `oidc-authz serve`.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    if config.session.store == SessionStoreKind::Redis {
        return Err(ServeError::Unsupported(format!(
            "{}: field \"session.store\": the redis session store is not supported by this release; use cookie",
            config.path.display()
        )));
    }
    let rules = crate::rule_source::initial_rules(&config)?;
    let app = App::start(&config, rules);
    let bound = bind(&config).await?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = tx.send(true);
    });
    run(app, bound, rx).await
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
