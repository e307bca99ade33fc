//! `atoll placement explain`: why a placement (or one not yet created: a dry run) picks what it
//! picks — every cluster of its eligible sets with the predicate or taint that filtered it, or
//! its score per prioritizer and in total, and the resulting decisions and groups.
//!
//! Served by the hub (it holds the clusters, which a workspace's users may not read), on the
//! webhook listener at `POST /explain`, to callers who prove who they are as to the API server
//! (a client certificate of the cluster's CA, or a bearer token checked with a TokenReview) and
//! who may `get` `placements` in the namespace (a SubjectAccessReview). The endpoint and its CA
//! are published in ConfigMap `kube-public/atoll-hub`, readable by every authenticated user.

use std::sync::Arc;

use atoll_api::placement::PlacementSpec;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{Error, Hub, MANAGER};

pub const PATH: &str = "/explain";
/// Where the hub says where it serves `explain`.
pub const ENDPOINT_NAMESPACE: &str = "kube-public";
pub const ENDPOINT_CONFIGMAP: &str = "atoll-hub";

/// Who asks.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
}

/// A request: the placement `name` in `namespace`, or `placement` (a dry run) there.
#[derive(serde::Deserialize, Debug)]
pub struct Request {
    pub namespace: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub placement: Option<Value>,
}

/// Who the bearer token in `authorization` belongs to, by a TokenReview.
pub async fn caller_of_token(client: &Client, authorization: &str) -> Option<Caller> {
    let token = authorization.strip_prefix("Bearer ")?.trim();
    let review: TokenReview = serde_json::from_value(json!({"spec": {"token": token}})).ok()?;
    let status = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()?
        .status?;
    if status.authenticated != Some(true) {
        return None;
    }
    let user = status.user?;
    Some(Caller {
        user: user.username?,
        groups: user.groups.unwrap_or_default(),
    })
}

/// Answer an explain request as (HTTP status, body).
pub async fn handle(hub: &Arc<Hub>, caller: Option<Caller>, body: &[u8]) -> (u16, Value) {
    let status = |code: u16, reason: &str, message: String| {
        (
            code,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message}),
        )
    };
    let Some(caller) = caller else {
        return status(
            401,
            "Unauthorized",
            "present a client certificate of the hub cluster's CA or a bearer token".into(),
        );
    };
    let req: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return status(400, "BadRequest", format!("not an explain request: {e}")),
    };
    let attributes = json!({"group": "cluster.atoll.io", "resource": "placements", "verb": "get",
        "namespace": req.namespace, "name": req.name.clone().unwrap_or_default()});
    let sar: SubjectAccessReview = match serde_json::from_value(json!({"spec": {
        "user": caller.user, "groups": caller.groups, "resourceAttributes": attributes}}))
    {
        Ok(s) => s,
        Err(e) => return status(500, "InternalError", e.to_string()),
    };
    let allowed = Api::<SubjectAccessReview>::all(hub.client.clone())
        .create(&PostParams::default(), &sar)
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed);
    if !allowed {
        return status(
            403,
            "Forbidden",
            format!(
                "{} may not get placements in namespace {}, so cannot have them explained",
                caller.user, req.namespace
            ),
        );
    }
    let ix = hub.index.lock();
    let (spec, key, dry_run) = match (&req.placement, &req.name) {
        (Some(p), _) => {
            let spec = p.get("spec").cloned().unwrap_or_else(|| json!({}));
            match serde_json::from_value::<PlacementSpec>(spec) {
                Ok(spec) => (spec, None, true),
                Err(e) => {
                    return status(400, "BadRequest", format!("the placement's spec: {e}"));
                }
            }
        }
        (None, Some(name)) => {
            let key = (req.namespace.clone(), name.clone());
            match ix.placements.get(&key) {
                Some(p) => (p.spec.clone(), Some(key), false),
                None => {
                    return status(
                        404,
                        "NotFound",
                        format!("placement {name} not found in namespace {}", req.namespace),
                    );
                }
            }
        }
        (None, None) => {
            return status(
                400,
                "BadRequest",
                "name a placement or send one (a dry run)".into(),
            );
        }
    };
    let current = key
        .as_ref()
        .and_then(|k| ix.decided.get(k).cloned())
        .unwrap_or_default();
    let mut out = crate::placement::explain(&spec, &ix, &req.namespace, &current, &hub.cel);
    out["dryRun"] = json!(dry_run);
    out["namespace"] = json!(req.namespace);
    out["name"] = json!(req.name);
    out["current"] = json!(current);
    (200, out)
}

/// Publish where `explain` is served, for every authenticated user to find.
pub async fn publish(client: &Client, url: &str, ca_pem: &str) -> Result<(), Error> {
    let pp = PatchParams::apply(MANAGER).force();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ENDPOINT_CONFIGMAP, "namespace": ENDPOINT_NAMESPACE},
        "data": {"explain-url": url, "ca.crt": ca_pem}});
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ENDPOINT_NAMESPACE)
        .patch(ENDPOINT_CONFIGMAP, &pp, &Patch::Apply(&cm))
        .await?;
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "atoll:hub-endpoint", "namespace": ENDPOINT_NAMESPACE},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [ENDPOINT_CONFIGMAP], "verbs": ["get"]}]});
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), ENDPOINT_NAMESPACE)
        .patch("atoll:hub-endpoint", &pp, &Patch::Apply(&role))
        .await?;
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "atoll:hub-endpoint", "namespace": ENDPOINT_NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "atoll:hub-endpoint"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:authenticated"}]});
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), ENDPOINT_NAMESPACE)
        .patch("atoll:hub-endpoint", &pp, &Patch::Apply(&binding))
        .await?;
    Ok(())
}
