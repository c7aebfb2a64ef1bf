//! oidc-authz: an Envoy ext_authz (v3, gRPC) server that does OpenID Connect login at the
//! gateway, so backends only ever see authenticated requests.
//!
//! # Layout
//! Data flows config → compiled rules → (request → decision) → Envoy response.
//!
//! - `config`: the schema and the YAML file, errors with file, rule and field; `config::env`
//!   (`${ENV}` substitution) and `config::checks` (server, session and store checks). It
//!   parses; it never compiles rules.
//! - `rule_source`: where a configuration file and its rules meet (the file read whole, rule
//!   errors mapped to config errors, once), and where the running rules come from at start-up
//!   (file store or inline; a Redis store is read by `admin::core` once serving).
//! - `rules`: compiled rules (`RuleSet`, swapped atomically); `rules::normalize` (host
//!   validation, the canonical path, what makes a path ambiguous and every reading a backend may
//!   make of it), `rules::domain` (domain patterns), `rules::conditions` (the indexed
//!   authorization list), `rules::route_index` (the enabled rules indexed across rules, so the
//!   first deciding rule is found without walking them).
//! - `decision`: pure routing: which rule governs a request (through the cross-rule index, or
//!   the walk in order it must agree with) and whether it is public, needs a login, or falls to
//!   `default_action`; `explain` output; `validate`'s warning about hosts that
//!   `default_action: allow` leaves unprotected.
//! - `identity`: the identity taken from verified claims, and the `allowed` checks.
//! - `session`: sealed cookie sessions and login states (`session::seal`, `session::cookies`,
//!   which reads the `cookie` header in one pass), the opened sessions kept by cookie value
//!   (`session::opened`),
//!   the bounded set of revoked session ids, in memory or Redis (`session::revocations`), and
//!   `session::store`,
//!   the one seam the request paths use to load, save, clear and revoke sessions (cookie store
//!   or Redis), revoke by IdP `sid`/`sub`, take a session's refresh lock and remember its
//!   result, and remember used logout tokens; `session::redis_store` is the `redis` store (the
//!   cookie holds a sealed id, the session lives in Redis, sealed).
//! - `oidc`: the identity providers: `oidc::claims` (a token's claims, typed accessors),
//!   `oidc::fetch` (the HTTP client, bounded bodies),
//!   `oidc::discovery`, `oidc::keys` (the JWKS cache), `oidc::token` (validation),
//!   `oidc::logout_token` (back-channel logout tokens), `oidc::exchange` (the code exchange and
//!   the refresh grant) and `oidc::provider` (live providers, one per issuer).
//! - `login`: the authorization-code flow (begin, complete), shared by `Check` and HTTP.
//! - `refresh`: keeps a session going past its tokens' expiry (the refresh-token grant, one at
//!   a time per session, its result shared; `refresh_grace` when the IdP is down).
//! - `redirect_guard`: which `rd` targets are allowed (no open redirects).
//! - `redis_client`: the edge to Redis (one server, TLS, or a Cluster): lazy connection,
//!   reconnection, bounded commands, and whether Redis is up.
//! - `authorize`: one request end to end, protocol-free: facts in, `Verdict` out.
//! - `reply`: protocol-free responses (redirects, JSON errors, HTML pages), and
//!   `escape_for_log` for request values in logs.
//! - `check`: the Envoy edge (`CheckRequest` → facts, `Verdict` → `CheckResponse`).
//! - `grpc_frames`: the gRPC listener's answers cut into small HTTP/2 frames, so that many
//!   answers leave in one write.
//! - `grpc_workers`: the gRPC listener's accept loop; each connection is served whole on one
//!   thread of its own (a current-thread runtime), the cores shared out by connection.
//! - `session_endpoints`: sign-out, userinfo, back-channel and front-channel logout,
//!   protocol-free: request facts in, `Reply` out.
//! - `http_listener`: the HTTP edge (`/oauth2/*`, health, readiness, metrics).
//! - `app`: shared state; `clock`: Unix seconds; `metrics`: the Prometheus families of
//!   `/metrics` (`prometheus-client`; each rule keeps its own decision counters, and `Check`
//!   latency is a lock-free histogram); `server`: listeners and graceful shutdown.
//! - `telemetry`: logs (text or JSON lines, each with its request's `x-request-id`) and
//!   OpenTelemetry spans (OTLP/gRPC when the `OTEL_*` variables ask for it): the `Check` and
//!   HTTP server spans with their parents from `traceparent`, the IdP client spans.
//! - `store`: where rules are kept: `store::file` (`file:` with atomic writes, or `inline`,
//!   read-only) and `store::redis` (one versioned value shared by replicas, compare-and-set
//!   writes, pub/sub change notifications).
//! - `admin`: the admin listener's router, bearer-token check and `detached` helper;
//!   `admin::core` is the one core of rule management (validate, persist, swap, audit), and
//!   `admin::http` (REST and the console) and `admin::grpc` (the gRPC service) are its edges,
//!   depending on it and never on each other.
//! - `admin_api`: types generated from `proto/` (the rule-management gRPC API).
//!
//! # Errors
//! One error type per boundary: `config::ConfigErrors` (file, rule, field), `rules::RuleError`,
//! `oidc::token::TokenError`, `oidc::fetch::FetchError`, `server::ServeError`. Request paths
//! never panic: bad input becomes a 4xx `Reply`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_api;
pub mod app;
pub mod authorize;
pub mod check;
pub(crate) mod clock;
pub mod config;
pub mod decision;
pub(crate) mod grpc_frames;
pub(crate) mod grpc_workers;
pub(crate) mod http_listener;
pub mod identity;
pub(crate) mod login;
pub(crate) mod metrics;
pub(crate) mod oidc;
pub(crate) mod redirect_guard;
pub(crate) mod redis_client;
pub(crate) mod refresh;
pub(crate) mod reply;
pub mod rule_source;
pub mod rules;
pub mod server;
pub mod session;
pub(crate) mod session_endpoints;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_yaml;
