//! Create-only reviews, answered from the authorizer and never stored:
//! `SelfSubjectAccessReview` (`kubectl auth can-i`), `SubjectAccessReview`,
//! `LocalSubjectAccessReview`, `SelfSubjectRulesReview` (`kubectl auth can-i --list`) and
//! `SelfSubjectReview` (`kubectl auth whoami`).

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use crate::authz::{Attributes, Authorizer, Rule};
use crate::error::{ApiError, ApiResult, Cause};
use crate::rest::{Ctx, json_response};
use crate::tls::Identity;

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

fn attributes(spec: &Value, namespace_override: Option<&str>) -> ApiResult<Attributes> {
    if let Some(ra) = spec.get("resourceAttributes") {
        return Ok(Attributes {
            verb: str_at(ra, "/verb").to_string(),
            group: str_at(ra, "/group").to_string(),
            resource: str_at(ra, "/resource").to_string(),
            subresource: str_at(ra, "/subresource").to_string(),
            namespace: namespace_override
                .unwrap_or(str_at(ra, "/namespace"))
                .to_string(),
            name: str_at(ra, "/name").to_string(),
            path: String::new(),
        });
    }
    if let Some(nr) = spec.get("nonResourceAttributes") {
        return Ok(Attributes {
            verb: str_at(nr, "/verb").to_string(),
            path: str_at(nr, "/path").to_string(),
            ..Default::default()
        });
    }
    Err(ApiError::invalid(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "",
        vec![Cause::invalid(
            "spec",
            "",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )],
    ))
}

fn decision(authz: &Authorizer, who: &Identity, a: &Attributes) -> Value {
    let allowed = authz.allowed(who, a);
    let mut status = json!({"allowed": allowed});
    if allowed {
        status["reason"] = json!("allowed by RBAC");
    }
    status
}

fn rules_json(rules: &[Rule]) -> (Vec<Value>, Vec<Value>) {
    let mut resource = Vec::new();
    let mut non_resource = Vec::new();
    for r in rules {
        if r.non_resource_urls.is_empty() {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource.push(v);
        } else {
            non_resource.push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    (resource, non_resource)
}

/// Answer a review POSTed by `who`.
pub fn answer(ctx: &Ctx, who: &Identity, mut review: Value) -> ApiResult<Response> {
    let authz = &ctx.server.authorizer;
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let status = match ctx.rt.kind.as_str() {
        "SelfSubjectAccessReview" => decision(authz, who, &attributes(&spec, None)?),
        "LocalSubjectAccessReview" | "SubjectAccessReview" => {
            let user = str_at(&spec, "/user").to_string();
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if user.is_empty() && groups.is_empty() {
                return Err(ApiError::invalid(
                    "authorization.k8s.io",
                    &ctx.rt.kind,
                    "",
                    vec![Cause::required("spec.user")],
                ));
            }
            let ns = ctx.rr.namespace.as_deref();
            if ctx.rt.kind == "LocalSubjectAccessReview" {
                let asked = str_at(&spec, "/resourceAttributes/namespace");
                if !asked.is_empty() && Some(asked) != ns {
                    return Err(ApiError::bad_request(
                        "spec.resourceAttributes.namespace must match the namespace of the request",
                    ));
                }
            }
            decision(authz, &Identity { user, groups }, &attributes(&spec, ns)?)
        }
        "SelfSubjectRulesReview" => {
            let ns = str_at(&spec, "/namespace");
            let (resource, non_resource) = rules_json(&authz.rules(who, ns));
            json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false})
        }
        "SelfSubjectReview" => json!({"userInfo": {"username": who.user, "groups": who.groups}}),
        "TokenReview" => {
            let token = str_at(&spec, "/token");
            let audiences: Vec<&str> = spec
                .get("audiences")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            // With audiences, only service-account tokens for one of them count.
            let who = if audiences.is_empty() {
                crate::authn::authenticate_token(&ctx.server, token)
            } else {
                crate::authn::service_account(&ctx.server, token, &audiences)
            };
            let audiences = if audiences.is_empty() {
                vec![crate::authn::API_AUDIENCE]
            } else {
                audiences
            };
            match who {
                Some(id) => {
                    json!({"authenticated": true, "user": {"username": id.user, "groups": id.groups}, "audiences": audiences})
                }
                None => json!({"authenticated": false, "error": "the token is not valid"}),
            }
        }
        other => return Err(ApiError::bad_request(format!("{other} is not a review"))),
    };
    review["status"] = status;
    if let Some(m) = review.as_object_mut() {
        m.insert("apiVersion".into(), json!(ctx.rt.api_version()));
        m.insert("kind".into(), json!(ctx.rt.kind));
        m.entry("metadata")
            .or_insert(json!({"creationTimestamp": null}));
    }
    Ok(json_response(StatusCode::CREATED, &review))
}
