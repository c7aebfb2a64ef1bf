//! A whole oidc-authz in one test process: the test IdP, the app with its gRPC and HTTP
//! listeners on loopback, a tonic client acting as Envoy, and a tiny cookie jar acting as the
//! browser.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use oidc_authz::app::App;
use oidc_authz::config::Config;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::support::idp::TestIdp;

pub const SECRET: &str = "test-session-secret-0123456789abcdef-0123";
pub const OTHER_SECRET: &str = "other-session-secret-0123456789abcdef-9876";

/// The default test configuration: `{issuer}`, `{client_id}` and `{client_secret}` are filled in.
pub const BASIC_CONFIG: &str = r#"
session:
  secrets: ["{secret}"]
  secure: true
rules_store: inline
default_action: allow
rules:
  - name: corp
    issuer: {issuer}
    redirect_url: https://app1.example.test/oauth2/callback
    client_id: {client_id}
    client_secret: {client_secret}
    cookie_domain: .example.test
    scope: openid;email;profile
    domains: ["*.example.test"]
    authorization:
      mode: whitelist
      conditions:
        - { path: /public/, match: prefix }
"#;

pub struct Stack {
    pub idp: TestIdp,
    pub app: Arc<App>,
    pub admin: Arc<oidc_authz::admin::RuleAdmin>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub client: AuthorizationClient<Channel>,
    shutdown: watch::Sender<bool>,
    pub server: tokio::task::JoinHandle<()>,
}

pub fn fill(template: &str, idp: &TestIdp) -> String {
    template
        .replace("{issuer}", &idp.issuer())
        .replace("{client_id}", &idp.client_id())
        .replace("{client_secret}", &idp.client_secret())
        .replace("{secret}", SECRET)
}

pub fn parse_config(yaml: &str) -> Config {
    match Config::parse(yaml, "test.yaml", Path::new("."), &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("test config invalid:\n{e}\n---\n{yaml}"),
    }
}

impl Stack {
    pub async fn start(idp: TestIdp, template: &str) -> Stack {
        let config = parse_config(&fill(template, &idp));
        Self::start_with(idp, config).await
    }

    pub async fn start_with(idp: TestIdp, mut config: Config) -> Stack {
        config.server.grpc_listen = "127.0.0.1:0".into();
        config.server.http_listen = "127.0.0.1:0".into();
        config.server.admin_listen = "127.0.0.1:0".into();
        let services = oidc_authz::server::start(&config).expect("rules compile and the store opens");
        let app = services.app.clone();
        let admin = services.admin.clone();
        let bound = oidc_authz::server::bind(&config).await.expect("bind");
        let grpc_addr = bound.grpc.local_addr().unwrap();
        let http_addr = bound.http.local_addr().unwrap();
        let admin_addr = bound.admin.as_ref().map(|l| l.local_addr().unwrap());
        let (tx, rx) = watch::channel(false);
        let server = tokio::spawn(async move {
            oidc_authz::server::run(&services, bound, rx)
                .await
                .expect("server runs");
        });
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect_lazy();
        Stack {
            idp,
            app,
            admin,
            grpc_addr,
            http_addr,
            admin_addr,
            client: AuthorizationClient::new(channel),
            shutdown: tx,
            server,
        }
    }

    /// Waits (bounded) until every enabled rule's provider is ready.
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.app.not_ready().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("providers never became ready: {:?}", self.app.not_ready());
    }

    pub async fn check(&self, req: Req) -> Answer {
        let mut client = self.client.clone();
        let resp = client
            .check(req.into_check())
            .await
            .expect("Check must answer Ok, even to deny");
        Answer(resp.into_inner())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.admin_addr.expect("admin listener (set server.admin_token)"),
            path
        )
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http_addr, path)
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
    }
}

/// A request as Envoy would describe it.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub scheme: String,
    pub host: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

impl Req {
    /// A browser navigation.
    pub fn browser(url: &str) -> Req {
        let mut r = Req::api("GET", url);
        r.headers.insert(
            "accept".into(),
            "text/html,application/xhtml+xml,*/*;q=0.8".into(),
        );
        r
    }

    /// A non-browser request.
    pub fn api(method: &str, url: &str) -> Req {
        let u = url::Url::parse(url).expect("test URL");
        let host = match u.port() {
            Some(p) => format!("{}:{p}", u.host_str().unwrap()),
            None => u.host_str().unwrap().to_string(),
        };
        // Keep the path exactly as written (Url::parse would normalize it).
        let after_scheme = &url[url.find("://").unwrap() + 3..];
        let path = after_scheme
            .find('/')
            .map_or("/".to_string(), |i| after_scheme[i..].to_string());
        Req {
            method: method.into(),
            scheme: u.scheme().into(),
            host,
            path,
            headers: HashMap::from([("accept".into(), "application/json".into())]),
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.insert(k.to_ascii_lowercase(), v.to_string());
        self
    }

    pub fn cookies(self, jar: &Jar) -> Req {
        match jar.header() {
            Some(h) => self.header("cookie", &h),
            None => self,
        }
    }

    pub fn into_check(self) -> CheckRequest {
        let mut headers = self.headers;
        headers.insert(":authority".into(), self.host.clone());
        headers.insert(":path".into(), self.path.clone());
        headers.insert(":method".into(), self.method.clone());
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: self.method,
                        scheme: self.scheme,
                        host: self.host,
                        path: self.path,
                        headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}

/// What Check answered.
#[derive(Debug)]
pub struct Answer(pub CheckResponse);

impl Answer {
    pub fn grpc_code(&self) -> i32 {
        self.0.status.as_ref().map_or(-1, |s| s.code)
    }

    pub fn is_allow(&self) -> bool {
        self.grpc_code() == 0 && matches!(self.0.http_response, Some(HttpResponse::OkResponse(_)))
    }

    /// HTTP status of a deny (0 for allow).
    pub fn status(&self) -> u16 {
        match &self.0.http_response {
            Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map_or(403, |s| s.code as u16),
            _ => 0,
        }
    }

    fn denied_headers(&self) -> Vec<(String, String)> {
        match &self.0.http_response {
            Some(HttpResponse::DeniedResponse(d)) => d
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref().map(|h| (h.key.clone(), h.value.clone())))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn denied_header(&self, name: &str) -> Option<String> {
        self.denied_headers()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Every value of a header of the deny (headers may repeat: `set-cookie`).
    pub fn denied_header_all(&self, name: &str) -> Vec<String> {
        self.denied_headers()
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    pub fn location(&self) -> String {
        self.denied_header("location").expect("a location header")
    }

    pub fn set_cookies(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .denied_headers()
            .into_iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v)
            .collect();
        if let Some(HttpResponse::OkResponse(ok)) = &self.0.http_response {
            out.extend(
                ok.response_headers_to_add
                    .iter()
                    .filter_map(|h| h.header.as_ref())
                    .filter(|h| h.key == "set-cookie")
                    .map(|h| h.value.clone()),
            );
        }
        out
    }

    pub fn body(&self) -> String {
        match &self.0.http_response {
            Some(HttpResponse::DeniedResponse(d)) => d.body.clone(),
            _ => String::new(),
        }
    }

    /// Upstream headers set on allow: (value, append_action).
    pub fn upstream(&self, name: &str) -> Option<String> {
        match &self.0.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref().map(|hv| (hv, h.append_action)))
                .find(|(h, _)| h.key == name)
                .map(|(h, action)| {
                    // 2 = OVERWRITE_IF_EXISTS_OR_ADD: identity headers must never append.
                    assert_eq!(action, 2, "header {name} must be written as overwrite");
                    h.value.clone()
                }),
            _ => None,
        }
    }

    pub fn removed(&self) -> Vec<String> {
        match &self.0.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok.headers_to_remove.clone(),
            _ => Vec::new(),
        }
    }
}

/// A browser cookie jar (one jar for all test hosts; domains are checked by the tests).
#[derive(Default, Clone, Debug)]
pub struct Jar {
    pub cookies: Vec<(String, String)>,
}

impl Jar {
    pub fn apply(&mut self, set_cookies: &[String]) {
        for line in set_cookies {
            let first = line.split(';').next().unwrap_or("");
            let (name, value) = first.split_once('=').unwrap_or((first, ""));
            let deleted = line.to_ascii_lowercase().contains("max-age=0");
            self.cookies.retain(|(n, _)| n != name);
            if !deleted {
                self.cookies.push((name.to_string(), value.to_string()));
            }
        }
    }

    pub fn header(&self) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        Some(
            self.cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn names(&self) -> Vec<String> {
        self.cookies.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// An HTTP client that never follows redirects.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// One admin API call with the bearer `token`: the status and the JSON body (`Null` when the
/// body is not JSON).
pub async fn admin_call(
    stack: &Stack,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = http_client()
        .request(method.parse().unwrap(), stack.admin_url(path))
        .header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Follows the IdP's authorization endpoint (auto-approving) and returns the callback URL.
pub async fn idp_approve(authorize_url: &str) -> String {
    let resp = http_client()
        .get(authorize_url)
        .send()
        .await
        .expect("IdP authorize reachable");
    assert_eq!(resp.status().as_u16(), 302, "IdP should approve with a redirect");
    resp.headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    u.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Runs a full browser login through Check: start at `url`, approve at the IdP, complete the
/// callback inside Check. Returns the jar holding the session.
pub async fn login_via_check(stack: &Stack, url: &str, jar: &mut Jar) -> Answer {
    let first = stack.check(Req::browser(url).cookies(jar)).await;
    assert_eq!(
        first.status(),
        302,
        "a browser without a session is sent to log in: {}",
        first.body()
    );
    jar.apply(&first.set_cookies());
    let callback = idp_approve(&first.location()).await;
    let done = stack.check(Req::browser(&callback).cookies(jar)).await;
    jar.apply(&done.set_cookies());
    done
}

/// Log lines captured from this thread (see `capture_logs`).
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Captures the text log lines (as `serve` writes them, without colours) of everything that
/// runs on this thread until the guard drops. In a `#[tokio::test]` (current-thread runtime)
/// that includes the server's tasks, and the gRPC threads a server started meanwhile take the
/// same subscriber (`grpc_workers`), so a test sees what the server logged, `Check` included.
pub fn capture_logs() -> (CapturedLogs, tracing::subscriber::DefaultGuard) {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}
