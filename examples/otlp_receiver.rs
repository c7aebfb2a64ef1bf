//! A tiny OTLP/gRPC trace receiver (the collector side of `TraceService/Export`), for the
//! end-to-end tracing test and the tracing benchmark: it writes every span it receives as one
//! JSON line, flattened (ids in hex, attributes as strings), to a file.
//!
//! Usage: `otlp_receiver ADDR OUT_FILE` (ADDR like `127.0.0.1:0`). Once listening it prints
//! `listening on 127.0.0.1:PORT` on stdout. Runs until killed.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use tonic::{Request, Response, Status};

struct Receiver {
    out: Arc<Mutex<std::fs::File>>,
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut lines = String::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let line = serde_json::json!({
                        "service": service,
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": hex(&span.trace_id),
                        "span_id": hex(&span.span_id),
                        "parent_span_id": hex(&span.parent_span_id),
                        "attributes": attributes(&span.attributes),
                        "status_code": span.status.map(|s| s.code).unwrap_or_default(),
                        "resource": resource,
                    });
                    lines.push_str(&line.to_string());
                    lines.push('\n');
                }
            }
        }
        let mut out = self.out.lock().map_err(|_| Status::internal("poisoned"))?;
        out.write_all(lines.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: otlp_receiver ADDR OUT_FILE");
        std::process::exit(2);
    };
    let out = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Receiver {
            out: Arc::new(Mutex::new(out)),
        }))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await?;
    Ok(())
}
