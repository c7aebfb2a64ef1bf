//! The Envoy edge: the ext_authz v3 `Authorization/Check` gRPC service. It turns a
//! `CheckRequest` into `RequestFacts`, asks `authorize`, and turns the `Verdict` into a
//! `CheckResponse`. A deny is always `Ok(CheckResponse)` with a non-OK status, never `Err`.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue,
    HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::app::{now, App};
use crate::authorize::{authorize, Allow, RequestFacts, Verdict};
use crate::reply::Reply;

/// gRPC status codes used in the `CheckResponse`.
const GRPC_OK: i32 = 0;
const GRPC_PERMISSION_DENIED: i32 = 7;
const GRPC_UNAVAILABLE: i32 = 14;
const GRPC_UNAUTHENTICATED: i32 = 16;

pub struct CheckService {
    app: Arc<App>,
}

impl CheckService {
    pub fn new(app: Arc<App>) -> CheckService {
        CheckService { app }
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        let empty = HashMap::new();
        let http = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let Some(http) = http else {
            // Not an HTTP request: nothing we can authenticate.
            let metrics = &self.app.metrics; // counted at once: there is nothing to decide
            metrics.record_check(None, crate::metrics::Outcome::Forbidden, Default::default());
            return Ok(Response::new(deny(Reply::forbidden(
                None,
                "request",
                "not an HTTP request",
            ))));
        };
        let headers = if http.headers.is_empty() {
            &empty
        } else {
            &http.headers
        };
        let authority = if http.host.is_empty() {
            headers.get(":authority").map(String::as_str).unwrap_or("")
        } else {
            http.host.as_str()
        };
        let scheme = match http.scheme.as_str() {
            "" => headers
                .get("x-forwarded-proto")
                .map(String::as_str)
                .unwrap_or("https"),
            s => s,
        };
        let facts = RequestFacts {
            method: http.method.as_str(),
            scheme: if scheme.eq_ignore_ascii_case("http") {
                "http"
            } else {
                "https"
            },
            authority,
            raw_path: if http.path.is_empty() {
                "/"
            } else {
                http.path.as_str()
            },
            headers,
        };
        // One server span per Check (its parent from Envoy's `traceparent`), and the request's
        // `x-request-id` on every log line the decision writes.
        let span = crate::telemetry::check_span(&metadata, headers, facts.method, authority);
        let request_id = headers.get("x-request-id").map(String::as_str);
        let decision = authorize(&self.app, facts, now());
        // Without a tracer the span is disabled: not entering it on every poll is measurable
        // on the hot path (bench/).
        let verdict = if span.is_disabled() {
            crate::telemetry::with_request_id(request_id, decision).await
        } else {
            crate::telemetry::with_request_id(request_id, decision.instrument(span)).await
        };
        Ok(Response::new(match verdict {
            Verdict::Allow(allow) => ok(allow),
            Verdict::Respond(reply) => deny(reply),
        }))
    }
}

fn header(key: &str, value: String, action: HeaderAppendAction) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value,
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: action.into(),
        keep_empty_value: false,
    }
}

fn status(code: i32) -> Option<rpc::Status> {
    Some(rpc::Status {
        code,
        message: String::new(),
        details: Vec::new(),
    })
}

/// Allow: identity headers overwrite whatever the client sent; never append.
fn ok(allow: Allow) -> CheckResponse {
    let headers = allow
        .set
        .into_iter()
        .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect();
    let response_headers_to_add = allow
        .response_cookies
        .into_iter()
        .map(|c| header("set-cookie", c, HeaderAppendAction::AppendIfExistsOrAdd))
        .collect();
    CheckResponse {
        status: status(GRPC_OK),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove: allow.remove,
            response_headers_to_add,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Deny: the `Reply` becomes Envoy's local response. `set-cookie` lines are appended (there
/// may be several); every other header is set once.
fn deny(reply: Reply) -> CheckResponse {
    let code = match reply.status {
        401 => GRPC_UNAUTHENTICATED,
        503 => GRPC_UNAVAILABLE,
        _ => GRPC_PERMISSION_DENIED,
    };
    let headers = reply
        .headers
        .into_iter()
        .map(|(k, v)| {
            let action = if k == "set-cookie" {
                HeaderAppendAction::AppendIfExistsOrAdd
            } else {
                HeaderAppendAction::OverwriteIfExistsOrAdd
            };
            header(&k, v, action)
        })
        .collect();
    CheckResponse {
        status: status(code),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(reply.status),
            }),
            headers,
            body: reply.body,
        })),
        ..Default::default()
    }
}
