//! The integration suite, as one test binary (one build and one link instead of one per file):
//! the in-process IdP (`support`), the whole server on loopback (`harness`), and the scenarios.

mod harness;
mod support;

mod admin_api;
mod backchannel;
mod bearer_tokens;
mod bypasses;
mod cli;
mod crash_safety;
mod endpoints;
mod hostile_http;
mod idp_selftest;
mod login_flow;
mod metrics;
mod redis_rules;
mod redis_sessions;
mod refresh;
mod token_rules;
mod tracing;
