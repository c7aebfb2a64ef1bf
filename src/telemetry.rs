//! Logs and traces: where the process's `tracing` output goes. It exists so that the edges
//! (`check`, `http_listener`, `oidc::fetch`) only say *what* a request is, and this one module
//! decides how that is logged (text or JSON lines, each with the request's `x-request-id`) and
//! whether it is exported as OpenTelemetry spans (OTLP/gRPC, configured only by the standard
//! `OTEL_*` variables; with none set, no exporter runs and span macros cost one atomic load).
//!
//! Span targets all start with `oidc_authz`: the OpenTelemetry layer takes those and nothing
//! else, and the log layer takes no span at all (its lines are events), so a disabled tracer
//! leaves every span callsite switched off.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::reply::escape_for_log;

/// Set once a span exporter is installed. Until then the decision does not look up the
/// current span to record its rule and outcome on it (a thread-local look-up per `Check`).
static SPANS_EXPORTED: AtomicBool = AtomicBool::new(false);

/// `service.name` when `OTEL_SERVICE_NAME` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "oidc-authz";

/// The longest `x-request-id` written as it is; a longer or odd one is written escaped and cut.
const MAX_PLAIN_REQUEST_ID: usize = 128;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `timestamp LEVEL message key=value …` (the default).
    Text,
    /// One JSON object per line (`OIDC_AUTHZ_LOG_FORMAT=json`).
    Json,
}

/// What `serve` reads from its environment to set up logs and traces.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `OIDC_AUTHZ_LOG` (an `EnvFilter` directive), default `info`.
    pub filter: String,
    pub format: LogFormat,
    /// Colours in text lines (stderr is a terminal).
    pub ansi: bool,
    /// Export spans. `Some(None)`: to the endpoint the `OTEL_EXPORTER_OTLP_*` variables name
    /// (the exporter reads them); `Some(Some(url))`: to `url` (tests); `None`: no exporter.
    pub otlp: Option<Option<String>>,
    pub service_name: String,
}

impl Settings {
    /// The settings the `OIDC_AUTHZ_LOG*` and `OTEL_*` variables give.
    pub fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let exporting = (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some())
            && !var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            && !var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        Settings {
            filter: var("OIDC_AUTHZ_LOG").unwrap_or_else(|| "info".into()),
            format: match var("OIDC_AUTHZ_LOG_FORMAT") {
                Some(f) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
                _ => LogFormat::Text,
            },
            ansi: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            otlp: exporting.then_some(None),
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| DEFAULT_SERVICE_NAME.into()),
        }
    }
}

/// The running exporter, if any: `shutdown` sends the spans still buffered.
#[must_use = "call shutdown() before exiting, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the buffered spans now. Blocks: call it off the async runtime's threads.
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }

    /// Sends the buffered spans and stops the exporter (bounded: 5 s). Blocks, like `flush`.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5)) {
                eprintln!("oidc-authz: spans not all exported at shutdown: {e}");
            }
        }
    }
}

/// A subscriber for `settings`, writing log lines to `writer`. Call it inside the Tokio runtime
/// when `settings.otlp` is set (the gRPC exporter's connection lives there).
pub fn dispatch<W>(settings: &Settings, writer: W) -> (tracing::Dispatch, Telemetry)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let env_filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Log lines are events; spans are only for the exporter.
    let log_filter = env_filter.and(filter_fn(|meta| meta.is_event()));
    let logs = match settings.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_target(false)
            .with_ansi(settings.ansi)
            .fmt_fields(TextFields)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .event_format(JsonWithRequestId(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_target(false)
                    .with_current_span(false)
                    .with_span_list(false),
            ))
            .boxed(),
    }
    .with_filter(log_filter);

    let (otel, provider) = match &settings.otlp {
        None => (None, None),
        Some(endpoint) => match exporter(endpoint.as_deref(), &settings.service_name) {
            Ok(provider) => {
                let tracer = provider.tracer("oidc-authz");
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_threads(false)
                    .with_location(false)
                    .with_tracked_inactivity(false)
                    .with_filter(filter_fn(|meta| {
                        meta.target().starts_with("oidc_authz")
                            && (meta.is_span() || *meta.level() <= tracing::Level::INFO)
                    }));
                (Some(layer), Some(provider))
            }
            Err(e) => {
                eprintln!("oidc-authz: tracing disabled: cannot set up the OTLP exporter: {e}");
                (None, None)
            }
        },
    };
    // Two shapes rather than an `Option` layer: a `None` layer above a filtered one turns every
    // disabled callsite (h2's and hyper's trace events, our spans) from "never" into
    // "sometimes", re-checked on every call, which cost ~50 % more CPU per Check.
    let dispatch = match otel {
        Some(otel) => {
            SPANS_EXPORTED.store(true, Ordering::Relaxed);
            tracing::Dispatch::new(tracing_subscriber::registry().with(logs).with(otel))
        }
        None => tracing::Dispatch::new(tracing_subscriber::registry().with(logs)),
    };
    (dispatch, Telemetry { provider })
}

/// `dispatch` from the environment, to stderr, installed for the whole process. Call it inside
/// the Tokio runtime.
pub fn init() -> Telemetry {
    let settings = Settings::from_env();
    let (dispatch, telemetry) = dispatch(&settings, std::io::stderr);
    let _ = tracing::dispatcher::set_global_default(dispatch);
    if telemetry.exporting() {
        tracing::info!(service_name = %settings.service_name, "exporting spans over OTLP/gRPC");
    }
    telemetry
}

fn exporter(endpoint: Option<&str>, service_name: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(url) = endpoint {
        builder = builder.with_endpoint(url);
    }
    let exporter = builder.build().map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_string())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    // The batch processor runs on its own thread; its delay and sizes follow `OTEL_BSP_*`.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

// ------------------------------------------------------------------------------- request ids

tokio::task_local! {
    /// The `x-request-id` of the request this task serves, ready to be written.
    static REQUEST_ID: Option<Box<str>>;
}

/// Runs `fut` with `id` (the request's `x-request-id`) written on each log line it makes.
pub async fn with_request_id<F: Future>(id: Option<&str>, fut: F) -> F::Output {
    REQUEST_ID.scope(id.map(loggable_request_id), fut).await
}

/// The id as it goes into a log line: as it is when it is short and plain (a UUID, a token of
/// letters, digits and `-_.:/+=`), else escaped like every request value (`escape_for_log`).
fn loggable_request_id(id: &str) -> Box<str> {
    let plain = !id.is_empty()
        && id.len() <= MAX_PLAIN_REQUEST_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b));
    if plain {
        id.into()
    } else {
        escape_for_log(id).into()
    }
}

/// The current task's request id, if it serves a request that has one. (A clone: log lines are
/// rare next to requests, and this keeps the formatters simple.)
fn current_request_id() -> Option<Box<str>> {
    REQUEST_ID.try_with(|id| id.clone()).ok().flatten()
}

/// Text lines: the default fields, then `x_request_id=…` when the line is about a request.
struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        DefaultFields::new().format_fields(writer.by_ref(), fields)?;
        match current_request_id() {
            Some(id) => write!(writer, " x_request_id={id}"),
            None => Ok(()),
        }
    }
}

/// JSON lines: tracing-subscriber's, with `"x_request_id"` added when the line is about a
/// request.
struct JsonWithRequestId<F>(F);

impl<S, N, F> FormatEvent<S, N> for JsonWithRequestId<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some(id) = current_request_id() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.trim_end().strip_suffix('}') {
            Some(open) => {
                let id = serde_json::to_string(&*id).map_err(|_| std::fmt::Error)?;
                let comma = if open.ends_with('{') { "" } else { "," };
                writeln!(writer, "{open}{comma}\"x_request_id\":{id}}}")
            }
            None => writer.write_str(&line),
        }
    }
}

// ------------------------------------------------------------------------------------ spans

/// W3C trace context (`traceparent`, `tracestate`), the format Envoy's tracers send.
fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

/// The trace context in a set of headers, if they carry a valid one.
fn extract(carrier: &dyn Extractor) -> Option<opentelemetry::Context> {
    let cx = propagator().extract(carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// gRPC request metadata as a trace-context carrier.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// HTTP headers as a trace-context carrier to read.
struct HeaderReader<'a>(&'a http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// HTTP headers as a trace-context carrier to write.
struct HeaderWriter<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(key),
            http::HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The server span of one `Check`. Its parent is the trace context in the gRPC metadata (what
/// Envoy sends when its tracer is on), else the one in the checked request's headers.
/// `rule` and `outcome` are recorded by `authorize` (see `record_rule`, `record_outcome`).
pub fn check_span(
    metadata: &tonic::metadata::MetadataMap,
    headers: &HashMap<String, String>,
    method: &str,
    authority: &str,
) -> Span {
    let (host, port) = split_authority(authority);
    let span = tracing::info_span!(
        "ext_authz.Check",
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = "envoy.service.auth.v3.Authorization",
        rpc.method = "Check",
        http.request.method = method,
        server.address = host,
        server.port = port,
        rule = Empty,
        outcome = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(parent) = extract(&Metadata(metadata)).or_else(|| extract(headers)) {
        let _ = span.set_parent(parent);
    }
    span
}

/// `host` and `port` of an authority (`app.example.com:8443`, `[::1]:80`, `app.example.com`).
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            match port.parse() {
                Ok(port) => (host, Some(port)),
                Err(_) => (authority, None),
            }
        }
        _ => (authority, None),
    }
}

/// The server span of one request to the HTTP listener, its parent the request's
/// `traceparent`. `route` is the matched route (`/oauth2/callback`).
pub fn http_span(headers: &http::HeaderMap, method: &str, route: &str) -> Span {
    let span = tracing::info_span!(
        "http",
        otel.name = format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(parent) = extract(&HeaderReader(headers)) {
        let _ = span.set_parent(parent);
    }
    span
}

/// Records the HTTP listener's answer on its span.
pub fn record_http_status(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// Records, on the current `Check` span, the rule that governs the request.
pub fn record_rule(rule: &str) {
    if SPANS_EXPORTED.load(Ordering::Relaxed) {
        Span::current().record("rule", rule);
    }
}

/// Records, on the current `Check` span, what the decision came to.
pub fn record_outcome(outcome: &'static str) {
    if !SPANS_EXPORTED.load(Ordering::Relaxed) {
        return;
    }
    let span = Span::current();
    span.record("outcome", outcome);
    if outcome == "unavailable" {
        span.record("otel.status_code", "ERROR");
    }
}

/// A client span for one call to an identity provider: `endpoint` is `discovery`, `jwks`,
/// `token` or `refresh`; `url` the endpoint's configured URL (no credentials: those go in the
/// body or the `authorization` header, never in a span).
pub fn idp_span(endpoint: &'static str, method: &'static str, url: &str) -> Span {
    tracing::info_span!(
        "idp",
        otel.name = format_args!("idp.{endpoint}"),
        otel.kind = "client",
        otel.status_code = Empty,
        idp.endpoint = endpoint,
        http.request.method = method,
        url.full = url,
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// Adds the current span's `traceparent` (and `tracestate`) to an outgoing request's headers.
pub fn inject_current(headers: &mut http::HeaderMap) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        propagator().inject_context(&cx, &mut HeaderWriter(headers));
    }
}

/// Records an IdP call's result on the current span: its HTTP status, or why it failed.
pub fn record_idp_result(status: Option<u16>, error: Option<&str>) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(status) = status {
        span.record("http.response.status_code", status);
    }
    if let Some(error) = error {
        span.record("error.type", error);
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_request_id_is_written_as_is_and_an_odd_one_escaped() {
        assert_eq!(
            &*loggable_request_id("9f6c1f0e-5d1e-4a7b-8c3d-2e1f0a9b8c7d"),
            "9f6c1f0e-5d1e-4a7b-8c3d-2e1f0a9b8c7d"
        );
        assert_eq!(&*loggable_request_id("a\nb"), "\"a\\nb\"");
        assert_eq!(&*loggable_request_id("a b"), "\"a b\"");
        assert!(loggable_request_id(&"x".repeat(10_000)).len() < 1_000);
    }

    #[test]
    fn an_authority_splits_into_host_and_port() {
        assert_eq!(
            split_authority("app.example.com:8443"),
            ("app.example.com", Some(8443))
        );
        assert_eq!(split_authority("app.example.com"), ("app.example.com", None));
        assert_eq!(split_authority("[::1]:80"), ("[::1]", Some(80)));
        assert_eq!(split_authority("::1"), ("::1", None));
        assert_eq!(split_authority("a:b"), ("a:b", None));
    }

    #[tokio::test]
    async fn the_request_id_is_seen_inside_its_scope_only() {
        assert_eq!(current_request_id(), None);
        let inside = with_request_id(Some("r-1"), async { current_request_id() }).await;
        assert_eq!(inside.as_deref(), Some("r-1"));
    }
}
