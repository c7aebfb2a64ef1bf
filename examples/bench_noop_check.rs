//! The benchmark floor: a do-nothing ext_authz v3 `Check` server. It decodes every
//! `CheckRequest` (tonic does that before calling us) and answers OK with an empty
//! `OkHttpResponse`, on the same stack as oidc-authz (tonic 0.14, envoy-types, tokio
//! multi-thread runtime), so `bench/check_cpu.sh` can report oidc-authz's CPU per decision as a
//! ratio to this.
//!
//! Usage: `bench_noop_check 127.0.0.1:PORT [--no-nodelay | --answer FILE]`
//!
//! `--answer FILE`: answer every `Check` with the `CheckResponse` in FILE (gRPC-framed, as
//! oidc-authz answered the benchmark's request: `bench/check_cpu.sh` records it) instead of the
//! empty OK. A floor that sends oidc-authz's very bytes, so the benchmark can tell the cost of
//! deciding from the cost of carrying the answer.
//!
//! By default the listener is tonic's own (`Server::serve_with_shutdown`, which sets
//! TCP_NODELAY on accepted sockets, tonic's default). `--no-nodelay` instead accepts through
//! `TcpIncoming::from(TcpListener)` exactly as `src/server.rs` does, which leaves Nagle's
//! algorithm on: a diagnostic floor that isolates the socket setting from the decision cost.

use std::net::SocketAddr;
use std::process::ExitCode;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

struct Noop {
    answer: Option<CheckResponse>,
}

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        if let Some(answer) = &self.answer {
            return Ok(Response::new(answer.clone()));
        }
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status {
                code: 0,
                message: String::new(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..Default::default()
        }))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, nagle, answer) = match args.as_slice() {
        [addr] => (addr.clone(), false, None),
        [addr, flag] if flag == "--no-nodelay" => (addr.clone(), true, None),
        [addr, flag, file] if flag == "--answer" => match read_answer(file) {
            Ok(answer) => (addr.clone(), false, Some(answer)),
            Err(e) => {
                eprintln!("bench_noop_check: {file}: {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: bench_noop_check ADDR [--no-nodelay | --answer FILE] (e.g. 127.0.0.1:9101)");
            return ExitCode::from(2);
        }
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_noop_check: `{addr}` is not a socket address: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench_noop_check: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async move {
        // Same message limit as oidc-authz, so both decode under the same settings.
        let service = AuthorizationServer::new(Noop { answer }).max_decoding_message_size(4 * 1024 * 1024);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let router = tonic::transport::Server::builder().add_service(service);
        if nagle {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| e.to_string())?;
            router
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
                .await
                .map_err(|e| e.to_string())
        } else {
            router
                .serve_with_shutdown(addr, shutdown)
                .await
                .map_err(|e| e.to_string())
        }
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_noop_check: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A gRPC-framed `CheckResponse` (1 flag byte, 4-byte big-endian length, the message).
fn read_answer(file: &str) -> Result<CheckResponse, String> {
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    let message = bytes.get(5..).ok_or("shorter than a gRPC frame header")?;
    let answer = <CheckResponse as prost::Message>::decode(message).map_err(|e| e.to_string())?;
    if answer.status.as_ref().map(|s| s.code) != Some(0) {
        return Err("not an OK answer".into());
    }
    Ok(answer)
}
