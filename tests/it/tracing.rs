//! Traces and logs of the release binary, as users run it: `serve` with the standard `OTEL_*`
//! variables exports to a real OTLP/gRPC receiver (a tonic `TraceService` in this test), with
//! each `Check` span's parent taken from the gRPC metadata or else the checked request's
//! `traceparent`, and the code exchange a child span that carries `traceparent` to the IdP.
//! `OIDC_AUTHZ_LOG_FORMAT=json` gives JSON lines with the request's `x-request-id`; without
//! the variables, no exporter runs and the lines are text.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use tonic::transport::Channel;

use crate::harness::{idp_approve, Answer, Jar, Req};
use crate::support::idp::{IdpOptions, TestIdp};

const BIN: &str = env!("CARGO_BIN_EXE_oidc-authz");
const SESSION_SECRET: &str = "tracing-test-secret-0123456789abcdef-0000";
/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    attrs: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    exports: Arc<Mutex<usize>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        *self.exports.lock().unwrap() += 1;
        for rs in request.into_inner().resource_spans {
            let resource = rs.resource.map(|r| attrs(&r.attributes)).unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in rs.scope_spans {
                for s in scope.spans {
                    self.spans.lock().unwrap().push(Span {
                        service: service.clone(),
                        name: s.name,
                        kind: s.kind,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attrs: attrs(&s.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        (receiver, addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of `trace_id`, once one named `name` has arrived (bounded wait).
    async fn wait_for(&self, trace_id: &str, name: &str) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if spans.iter().any(|s| s.name == name) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no span {name} in trace {trace_id}; received: {:#?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `serve` of the release binary on free ports, with `env` (and no `OTEL_*` or log variables
/// of the test's own environment).
struct Server {
    child: Child,
    grpc: u16,
    http: u16,
}

impl Server {
    fn start(idp: &TestIdp, name: &str, env: &[(&str, &str)]) -> Server {
        let (grpc, http) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("oidc-authz-tracing-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        let config = format!(
            r#"
server:
  grpc_listen: 127.0.0.1:{grpc}
  http_listen: 127.0.0.1:{http}
session:
  secrets: ["{SESSION_SECRET}"]
rules_store: inline
default_action: allow
rules:
  - name: corp
    issuer: {issuer}
    redirect_url: https://app.example.test/oauth2/callback
    client_id: {client_id}
    client_secret: {client_secret}
    domains: ["*.example.test"]
    authorization:
      mode: whitelist
      conditions:
        - {{ path: /public/, match: prefix }}
"#,
            issuer = idp.issuer(),
            client_id = idp.client_id(),
            client_secret = idp.client_secret(),
        );
        std::fs::File::create(&path)
            .unwrap()
            .write_all(config.as_bytes())
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") || k.starts_with("OIDC_AUTHZ_LOG") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().unwrap();
        Server { child, grpc, http }
    }

    /// Waits (bounded) until `/readyz` answers 200: the IdP's discovery and keys are in.
    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client
                .get(format!("http://127.0.0.1:{}/readyz", self.http))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn client(&self) -> AuthorizationClient<Channel> {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", self.grpc))
            .unwrap()
            .connect_lazy();
        AuthorizationClient::new(channel)
    }

    /// SIGTERM, then its exit code and everything it wrote on stderr.
    async fn stop(mut self) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        let code = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("serve did not exit after SIGTERM");
            }
            // Not a thread sleep: the test's IdP and client live on this thread's runtime.
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (code, err)
    }
}

/// A Check, with `traceparent` in the gRPC metadata when given.
async fn check(client: &AuthorizationClient<Channel>, req: Req, traceparent: Option<&str>) -> Answer {
    let mut request = tonic::Request::new(req.into_check());
    if let Some(tp) = traceparent {
        request.metadata_mut().insert("traceparent", tp.parse().unwrap());
    }
    let answer = client.clone().check(request).await.expect("Check answers");
    Answer(answer.into_inner())
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

#[tokio::test]
async fn spans_reach_an_otlp_receiver_with_envoys_parent_and_the_idp_call_as_a_child() {
    let (receiver, receiver_addr) = Receiver::start().await;
    let idp = TestIdp::start(IdpOptions::default()).await;
    let endpoint = format!("http://{receiver_addr}");
    let server = Server::start(
        &idp,
        "otlp",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OIDC_AUTHZ_LOG_FORMAT", "json"),
        ],
    );
    server.wait_ready().await;
    let client = server.client();

    // 1. traceparent in the gRPC metadata (what Envoy sends): that is the parent, whatever
    //    the checked request's own header says.
    let (trace_a, parent_a) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let first = check(
        &client,
        Req::browser("https://app.example.test/private")
            .header("x-request-id", "req-a")
            .header(
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-01",
            ),
        Some(&format!("00-{trace_a}-{parent_a}-01")),
    )
    .await;
    assert_eq!(first.status(), 302, "{}", first.body());
    let spans = receiver.wait_for(trace_a, "ext_authz.Check").await;
    let span = one(&spans, "ext_authz.Check");
    assert_eq!(span.parent, parent_a);
    assert_eq!(span.kind, SERVER);
    assert_eq!(span.service, "oidc-authz", "service.name defaults to oidc-authz");
    assert_eq!(span.attrs["rule"], "corp");
    assert_eq!(span.attrs["outcome"], "login_redirect");
    assert_eq!(span.attrs["http.request.method"], "GET");
    assert_eq!(span.attrs["server.address"], "app.example.test");

    // 2. No metadata: the checked request's traceparent is the parent.
    let (trace_b, parent_b) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let public = check(
        &client,
        Req::api("GET", "https://app.example.test/public/logo.png")
            .header("traceparent", &format!("00-{trace_b}-{parent_b}-01")),
        None,
    )
    .await;
    assert!(public.is_allow());
    let spans = receiver.wait_for(trace_b, "ext_authz.Check").await;
    let span = one(&spans, "ext_authz.Check");
    assert_eq!(span.parent, parent_b);
    assert_eq!(span.attrs["outcome"], "allow_public");

    // 3. The login's callback, completed inside Check: the code exchange is a client span under
    //    the Check span, and the IdP got a traceparent of that trace, naming that span.
    let mut jar = Jar::default();
    jar.apply(&first.set_cookies());
    let callback = idp_approve(&first.location()).await;
    let (trace_c, parent_c) = ("5b8aa5a2d2c872e8321cf37308d69df2", "051581bf3cb55c13");
    let done = check(
        &client,
        Req::browser(&callback)
            .cookies(&jar)
            .header("x-request-id", "req-callback"),
        Some(&format!("00-{trace_c}-{parent_c}-01")),
    )
    .await;
    assert_eq!(done.status(), 302, "the login completes: {}", done.body());
    let spans = receiver.wait_for(trace_c, "idp.token").await;
    let check_span = one(&spans, "ext_authz.Check");
    assert_eq!(check_span.parent, parent_c);
    assert_eq!(check_span.attrs["outcome"], "callback");
    let token = one(&spans, "idp.token");
    assert_eq!(
        token.parent, check_span.span_id,
        "the token call is a child of Check"
    );
    assert_eq!(token.kind, CLIENT);
    assert_eq!(token.attrs["http.response.status_code"], "200");
    assert!(!token.attrs.values().any(|v| v.contains(&idp.client_secret())));
    let sent = idp.token_traceparents();
    assert_eq!(
        sent.last().map(String::as_str),
        Some(format!("00-{trace_c}-{}-01", token.span_id).as_str()),
        "the IdP receives the token span's traceparent"
    );

    // 4. Discovery at start-up is a root client span of its own.
    let discovery: Vec<Span> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.name == "idp.discovery")
        .collect();
    assert!(!discovery.is_empty(), "discovery is traced");
    assert_eq!(discovery[0].kind, CLIENT);

    // 5. Logs: JSON lines, the request's x-request-id on the lines about it, who signed in,
    //    no Option debug output, no secrets or tokens.
    let (code, err) = server.stop().await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let listening = lines
        .iter()
        .find(|l| l["message"] == "oidc-authz listening")
        .expect("a listening line");
    let grpc = listening["grpc"].as_str().unwrap_or_default();
    assert!(
        grpc.starts_with("127.0.0.1:"),
        "an address, not an Option: {listening}"
    );
    let login = lines
        .iter()
        .find(|l| l["message"] == "login completed")
        .unwrap_or_else(|| panic!("a login completed line: {err}"));
    assert_eq!(login["x_request_id"], "req-callback", "{login}");
    assert_eq!(login["rule"], "corp");
    assert!(login["sub"].as_str().unwrap().contains("alice"), "{login}");
    assert!(login["email"].as_str().is_some(), "{login}");
    assert!(!err.contains("Some("), "{err}");
    assert!(!err.contains(SESSION_SECRET) && !err.contains(&idp.client_secret()));
    assert!(!err.contains("eyJ"), "no token in the logs: {err}");
}

#[tokio::test]
async fn without_otel_variables_nothing_is_exported_and_the_lines_are_text() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let server = Server::start(&idp, "text", &[("OIDC_AUTHZ_LOG", "debug")]);
    server.wait_ready().await;
    let client = server.client();
    // A rejected bearer token is logged (debug) with its request's id, escaped.
    let answer = check(
        &client,
        Req::api("GET", "https://app.example.test/private")
            .header("authorization", "Bearer not-a-jwt")
            .header("x-request-id", "req\nforged"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    )
    .await;
    assert_eq!(answer.status(), 401);
    let (code, err) = server.stop().await;
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("exporting spans"), "{err}");
    assert!(err.lines().all(|l| !l.starts_with('{')), "text lines: {err}");
    let listening = err
        .lines()
        .find(|l| l.contains("oidc-authz listening"))
        .expect("a listening line");
    assert!(listening.contains("grpc=127.0.0.1:"), "{listening}");
    assert!(!err.contains("Some("), "{err}");
    let rejected = err
        .lines()
        .find(|l| l.contains("bearer token rejected"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(rejected.ends_with(r#"x_request_id="req\nforged""#), "{rejected}");
}
