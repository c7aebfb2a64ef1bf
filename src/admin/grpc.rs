//! The rule-management API over gRPC (`proto/oidc_authz/admin/v1/admin.proto`): the same
//! operations as the REST API, on the same `core::RuleAdmin`, with server reflection. Requests
//! carry the admin token as `authorization: Bearer …` metadata (checked by `admin::token_ok`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::core::{AdminError, RuleAdmin};
use super::{detached, token_ok};
use crate::admin_api::v1 as pb;
use crate::admin_api::v1::rule_service_server::{RuleService, RuleServiceServer};
use crate::config::{
    AllowedConfig, AuthorizationConfig, AuthorizationMode, ConditionConfig, RuleConfig, RuleType,
    UpstreamToken,
};
use crate::rules::conditions::PathMatch;

/// The gRPC routes (rule service and reflection), to merge into the admin router.
pub fn routes(admin: Arc<RuleAdmin>, token: Arc<str>) -> axum::Router {
    let check_token = move |req: Request<()>| {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if token_ok(header, &token) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong admin token"))
        }
    };
    let service = RuleServiceServer::with_interceptor(GrpcAdmin { admin }, check_token);
    let mut routes = tonic::service::Routes::new(service);
    if let Ok(reflection) = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::admin_api::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        routes = routes.add_service(reflection);
    }
    routes.prepare().into_axum_router()
}

struct GrpcAdmin {
    admin: Arc<RuleAdmin>,
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Status {
        match &e {
            AdminError::NotFound(_) => Status::not_found(e.to_string()),
            AdminError::Exists(_) => Status::already_exists(e.to_string()),
            AdminError::Enabled(_) | AdminError::ReadOnly => Status::failed_precondition(e.to_string()),
            AdminError::Invalid { field, .. } => Status::invalid_argument(format!("{field}: {e}")),
            AdminError::Store(_) => Status::unavailable(e.to_string()),
            AdminError::Conflict => Status::aborted(e.to_string()),
            AdminError::Interrupted(_) => Status::internal(e.to_string()),
        }
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn bad(field: &str, value: i32) -> Status {
    Status::invalid_argument(format!("{field}: `{value}` is not an accepted value"))
}

fn to_config(r: pb::Rule) -> Result<RuleConfig, Status> {
    let authorization = r.authorization.unwrap_or_default();
    let mode = match pb::AuthorizationMode::try_from(authorization.mode) {
        Ok(pb::AuthorizationMode::Unspecified | pb::AuthorizationMode::Whitelist) => {
            AuthorizationMode::Whitelist
        }
        Ok(pb::AuthorizationMode::Blacklist) => AuthorizationMode::Blacklist,
        Err(_) => return Err(bad("authorization.mode", authorization.mode)),
    };
    let conditions = authorization
        .conditions
        .into_iter()
        .map(to_condition)
        .collect::<Result<Vec<_>, _>>()?;
    let upstream_token = match pb::UpstreamToken::try_from(r.upstream_token) {
        Ok(pb::UpstreamToken::Unspecified | pb::UpstreamToken::IdToken) => UpstreamToken::IdToken,
        Ok(pb::UpstreamToken::AccessToken) => UpstreamToken::AccessToken,
        Ok(pb::UpstreamToken::None) => UpstreamToken::None,
        Err(_) => return Err(bad("upstream_token", r.upstream_token)),
    };
    if pb::RuleType::try_from(r.r#type).is_err() {
        return Err(bad("type", r.r#type));
    }
    let allowed = r.allowed.unwrap_or_default();
    Ok(RuleConfig {
        name: r.name,
        enabled: r.enabled,
        kind: RuleType::Oidc,
        issuer: r.issuer,
        discovery_url: non_empty(r.discovery_url),
        redirect_url: r.redirect_url,
        client_id: r.client_id,
        client_secret: non_empty(r.client_secret),
        client_secret_file: None,
        cookie_domain: r.cookie_domain,
        scope: r.scope,
        authorization: AuthorizationConfig { mode, conditions },
        domains: r.domains,
        upstream_token,
        allowed: AllowedConfig {
            emails: allowed.emails,
            email_domains: allowed.email_domains,
            groups: allowed.groups,
        },
        audiences: r.audiences,
        post_logout_redirect_url: non_empty(r.post_logout_redirect_url),
        insecure_allow_http: r.insecure_allow_http,
        allow_unverified_email: r.allow_unverified_email,
    })
}

fn to_condition(c: pb::Condition) -> Result<ConditionConfig, Status> {
    let path_match = match pb::PathMatch::try_from(c.r#match) {
        Ok(pb::PathMatch::Unspecified | pb::PathMatch::Prefix) => PathMatch::Prefix,
        Ok(pb::PathMatch::Exact) => PathMatch::Exact,
        Ok(pb::PathMatch::Regex) => PathMatch::Regex,
        Err(_) => return Err(bad("match", c.r#match)),
    };
    Ok(ConditionConfig {
        domain: non_empty(c.domain),
        path: non_empty(c.path),
        path_match,
    })
}

fn to_proto(r: RuleConfig) -> pb::Rule {
    pb::Rule {
        name: r.name,
        enabled: r.enabled,
        r#type: pb::RuleType::Oidc.into(),
        issuer: r.issuer,
        discovery_url: r.discovery_url.unwrap_or_default(),
        redirect_url: r.redirect_url,
        client_id: r.client_id,
        client_secret: r.client_secret.unwrap_or_default(),
        cookie_domain: r.cookie_domain,
        scope: r.scope,
        authorization: Some(pb::Authorization {
            mode: match r.authorization.mode {
                AuthorizationMode::Whitelist => pb::AuthorizationMode::Whitelist,
                AuthorizationMode::Blacklist => pb::AuthorizationMode::Blacklist,
            }
            .into(),
            conditions: r
                .authorization
                .conditions
                .into_iter()
                .map(|c| pb::Condition {
                    domain: c.domain.unwrap_or_default(),
                    path: c.path.unwrap_or_default(),
                    r#match: match c.path_match {
                        PathMatch::Exact => pb::PathMatch::Exact,
                        PathMatch::Prefix => pb::PathMatch::Prefix,
                        PathMatch::Regex => pb::PathMatch::Regex,
                    }
                    .into(),
                })
                .collect(),
        }),
        domains: r.domains,
        upstream_token: match r.upstream_token {
            UpstreamToken::IdToken => pb::UpstreamToken::IdToken,
            UpstreamToken::AccessToken => pb::UpstreamToken::AccessToken,
            UpstreamToken::None => pb::UpstreamToken::None,
        }
        .into(),
        allowed: Some(pb::Allowed {
            emails: r.allowed.emails,
            email_domains: r.allowed.email_domains,
            groups: r.allowed.groups,
        }),
        audiences: r.audiences,
        post_logout_redirect_url: r.post_logout_redirect_url.unwrap_or_default(),
        insecure_allow_http: r.insecure_allow_http,
        allow_unverified_email: r.allow_unverified_email,
    }
}

#[tonic::async_trait]
impl RuleService for GrpcAdmin {
    async fn list_rules(
        &self,
        _: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        Ok(Response::new(pb::ListRulesResponse {
            rules: self.admin.list().into_iter().map(to_proto).collect(),
        }))
    }

    async fn get_rule(&self, req: Request<pb::GetRuleRequest>) -> Result<Response<pb::Rule>, Status> {
        Ok(Response::new(to_proto(self.admin.get(&req.into_inner().name)?)))
    }

    async fn create_rule(&self, req: Request<pb::CreateRuleRequest>) -> Result<Response<pb::Rule>, Status> {
        let rule = to_config(
            req.into_inner()
                .rule
                .ok_or_else(|| Status::invalid_argument("rule is required"))?,
        )?;
        let admin = self.admin.clone();
        Ok(Response::new(to_proto(
            detached(async move { admin.create(rule).await }).await?,
        )))
    }

    async fn update_rule(&self, req: Request<pb::UpdateRuleRequest>) -> Result<Response<pb::Rule>, Status> {
        let req = req.into_inner();
        let rule = to_config(
            req.rule
                .ok_or_else(|| Status::invalid_argument("rule is required"))?,
        )?;
        let admin = self.admin.clone();
        Ok(Response::new(to_proto(
            detached(async move { admin.update(&req.name, rule).await }).await?,
        )))
    }

    async fn enable_rule(&self, req: Request<pb::RuleName>) -> Result<Response<pb::Rule>, Status> {
        let name = req.into_inner().name;
        let admin = self.admin.clone();
        Ok(Response::new(to_proto(
            detached(async move { admin.set_enabled(&name, true).await }).await?,
        )))
    }

    async fn disable_rule(&self, req: Request<pb::RuleName>) -> Result<Response<pb::Rule>, Status> {
        let name = req.into_inner().name;
        let admin = self.admin.clone();
        Ok(Response::new(to_proto(
            detached(async move { admin.set_enabled(&name, false).await }).await?,
        )))
    }

    async fn add_condition(
        &self,
        req: Request<pb::AddConditionRequest>,
    ) -> Result<Response<pb::Rule>, Status> {
        let req = req.into_inner();
        let condition = to_condition(
            req.condition
                .ok_or_else(|| Status::invalid_argument("condition is required"))?,
        )?;
        let admin = self.admin.clone();
        Ok(Response::new(to_proto(
            detached(async move { admin.add_condition(&req.name, condition).await }).await?,
        )))
    }

    async fn delete_rule(
        &self,
        req: Request<pb::RuleName>,
    ) -> Result<Response<pb::DeleteRuleResponse>, Status> {
        let name = req.into_inner().name;
        let admin = self.admin.clone();
        detached(async move { admin.delete(&name).await }).await?;
        Ok(Response::new(pb::DeleteRuleResponse {}))
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let e = self.admin.explain(&req.into_inner().url)?;
        Ok(Response::new(pb::ExplainResponse {
            action: e.action.into(),
            rule: e.rule.unwrap_or_default(),
            has_condition: e.condition.is_some(),
            condition: e.condition.map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX)),
            reason: e.reason,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use tonic::Code;

    #[test]
    fn each_error_has_its_code() {
        let code = |e: AdminError| Status::from(e).code();
        assert_eq!(code(AdminError::NotFound("a".into())), Code::NotFound);
        assert_eq!(code(AdminError::Exists("a".into())), Code::AlreadyExists);
        assert_eq!(code(AdminError::Enabled("a".into())), Code::FailedPrecondition);
        assert_eq!(code(AdminError::ReadOnly), Code::FailedPrecondition);
        assert_eq!(code(StoreError::Conflict.into()), Code::Aborted);
        let down = StoreError::Unavailable {
            store: "redis redis://127.0.0.1/".into(),
            message: "no answer within 500 ms".into(),
        };
        assert_eq!(code(down.into()), Code::Unavailable);
        assert_eq!(code(StoreError::ReadOnly.into()), Code::FailedPrecondition);
        let invalid = Status::from(AdminError::Invalid {
            field: "issuer".into(),
            message: "is required".into(),
        });
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert_eq!(invalid.message(), "issuer: is required");
        let io = StoreError::Io {
            path: "/x".into(),
            message: "disk full".into(),
        };
        assert_eq!(code(io.into()), Code::Unavailable);
        assert_eq!(code(AdminError::Interrupted("panic".into())), Code::Internal);
    }

    fn rule(mode: i32, r#match: i32, upstream_token: i32, r#type: i32) -> pb::Rule {
        pb::Rule {
            name: "corp".into(),
            r#type,
            authorization: Some(pb::Authorization {
                mode,
                conditions: vec![pb::Condition {
                    path: "/public".into(),
                    r#match,
                    ..Default::default()
                }],
            }),
            upstream_token,
            ..Default::default()
        }
    }

    #[test]
    fn unspecified_enums_take_the_config_defaults() {
        let c = to_config(rule(0, 0, 0, 0)).expect("converts");
        assert_eq!(c.authorization.mode, AuthorizationMode::Whitelist);
        assert_eq!(c.authorization.conditions[0].path_match, PathMatch::Prefix);
        assert_eq!(c.upstream_token, UpstreamToken::IdToken);
    }

    #[test]
    fn enums_round_trip_through_the_config() {
        let sent = rule(
            pb::AuthorizationMode::Blacklist.into(),
            pb::PathMatch::Regex.into(),
            pb::UpstreamToken::None.into(),
            pb::RuleType::Oidc.into(),
        );
        let back = to_proto(to_config(sent.clone()).expect("converts"));
        assert_eq!(back.authorization, sent.authorization);
        assert_eq!(back.upstream_token, sent.upstream_token);
        assert_eq!(back.r#type, sent.r#type);
    }

    #[test]
    fn unknown_enum_values_are_invalid_arguments_naming_the_field() {
        for (r, field) in [
            (rule(9, 0, 0, 0), "authorization.mode"),
            (rule(0, 9, 0, 0), "match"),
            (rule(0, 0, 9, 0), "upstream_token"),
            (rule(0, 0, 0, 9), "type"),
        ] {
            let status = to_config(r).expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().starts_with(field), "{}", status.message());
        }
    }
}
