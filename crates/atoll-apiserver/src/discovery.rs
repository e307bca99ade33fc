//! Discovery: `/api`, `/apis`, `/apis/G`, `/apis/G/V`, the aggregated v2 documents new kubectl
//! asks for, `/version`, and the OpenAPI documents (`openapi.rs`).

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::error::ApiResult;
use crate::registry::{ResourceType, Snapshot};
use crate::rest::json_response;

/// The Kubernetes level the server implements.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0-atoll.{}", atoll_api::ATOLL_VERSION),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", other => other }),
    })
}

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// Serve a discovery path, or `None` if the path is not one.
pub fn serve(server: &Arc<ApiServer>, path: &str, accept: &str) -> ApiResult<Option<Response>> {
    let snap = server.registry.snapshot();
    let path = path.trim_end_matches('/');
    if let Some(resp) = crate::openapi::serve(&snap, path, accept)? {
        return Ok(Some(resp));
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let body = match parts.as_slice() {
        ["api"] => {
            if wants_aggregated(accept) {
                return Ok(Some(aggregated(&snap, true)));
            }
            json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server.config.advertise_address}],
            })
        }
        ["apis"] => {
            if wants_aggregated(accept) {
                return Ok(Some(aggregated(&snap, false)));
            }
            let groups: Vec<Value> = snap
                .groups
                .iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, vs)| api_group(g, vs))
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        ["api", v] => match resource_list(&snap, "", v) {
            Some(b) => b,
            None => return Ok(None),
        },
        ["apis", g] => match snap.groups.iter().find(|(name, _)| name == g) {
            Some((g, vs)) => {
                let mut doc = api_group(g, vs);
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                doc
            }
            None => return Ok(None),
        },
        ["apis", g, v] => match resource_list(&snap, g, v) {
            Some(b) => b,
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some(json_response(StatusCode::OK, &body)))
}

fn api_group(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({
        "name": g,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or_default(),
    })
}

fn subresource_entries(r: &ResourceType) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if r.status_subresource {
        out.push((
            "status".to_string(),
            json!({"group": r.group, "version": r.version, "kind": r.kind}),
        ));
    }
    if r.scale.is_some() {
        out.push((
            "scale".to_string(),
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
        ));
    }
    out
}

fn resource_list(snap: &Snapshot, group: &str, version: &str) -> Option<Value> {
    let resources = snap.group_version(group, version);
    if resources.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in resources {
        list.push(r.api_resource());
        for (sub, kind) in subresource_entries(r) {
            let mut e = json!({
                "name": format!("{}/{sub}", r.resource),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind["kind"],
                "verbs": ["get", "patch", "update"],
            });
            if sub == "scale" {
                e["group"] = json!("autoscaling");
                e["version"] = json!("v1");
            }
            list.push(e);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

/// `apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`, for `/api` (core) or `/apis` (the rest).
fn aggregated(snap: &Snapshot, core: bool) -> Response {
    let items: Vec<Value> = snap
        .groups
        .iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = snap
                        .group_version(g, v)
                        .iter()
                        .map(|r| {
                            let mut e = json!({
                                "resource": r.resource,
                                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": r.singular,
                                "verbs": r.verbs(),
                            });
                            if !r.short_names.is_empty() {
                                e["shortNames"] = json!(r.short_names);
                            }
                            if !r.categories.is_empty() {
                                e["categories"] = json!(r.categories);
                            }
                            let subs: Vec<Value> = subresource_entries(r)
                                .into_iter()
                                .map(|(s, kind)| json!({"subresource": s, "responseKind": kind, "verbs": ["get", "patch", "update"]}))
                                .collect();
                            if !subs.is_empty() {
                                e["subresources"] = json!(subs);
                            }
                            e
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs})
        })
        .collect();
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, AGGREGATED_V2),
            (header::VARY, "Accept"),
        ],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}
