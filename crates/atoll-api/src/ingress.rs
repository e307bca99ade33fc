//! `MultiClusterIngress` (`networking.atoll.io/v1alpha1`): outside traffic to services of a
//! cluster set. The spec is exactly the `networking.k8s.io/v1` Ingress spec (as Karmada's
//! MultiClusterIngress); a backend names a Service in the ingress's namespace, resolved across
//! the clusters of the sets bound to that namespace that export it. `atoll gateway` serves it.
//!
//! Behaviour beyond the Ingress spec is set with annotations, as ingress controllers do:
//! [`ANNOTATION_LOAD_BALANCE`], [`ANNOTATION_PREFER_CLUSTER`], [`ANNOTATION_UPSTREAM_TIMEOUT`].

// kube-derive's repeated `shortname`/`printcolumn` look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::networking::v1::{
    IngressBackend, IngressLoadBalancerStatus, IngressRule, IngressTLS,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a route spreads requests over its endpoints: `round-robin` (the default) or
/// `least-request` (the endpoint with the fewest requests in flight).
pub const ANNOTATION_LOAD_BALANCE: &str = "networking.atoll.io/load-balance";
/// A cluster whose endpoints take every request while any of them is ready; the others take
/// over when none is.
pub const ANNOTATION_PREFER_CLUSTER: &str = "networking.atoll.io/prefer-cluster";
/// How long an upstream may take to start its answer (`30s`, `500ms`; default 60 s) before
/// the client gets a 504.
pub const ANNOTATION_UPSTREAM_TIMEOUT: &str = "networking.atoll.io/upstream-timeout";

/// Condition: the gateway has loaded the ingress's routes.
pub const CONDITION_PROGRAMMED: &str = "Programmed";
/// Condition: every backend has a ready endpoint in some cluster.
pub const CONDITION_BACKENDS_READY: &str = "BackendsReady";

/// Routes outside traffic to Services exported across this namespace's cluster sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.atoll.io",
    version = "v1alpha1",
    kind = "MultiClusterIngress",
    plural = "multiclusteringresses",
    namespaced,
    status = "MultiClusterIngressStatus",
    shortname = "mci",
    shortname = "mcis",
    category = "atoll",
    crates(kube_core = "::kube_core"),
    doc = "Routes outside traffic to Services exported by the clusters of the sets bound to this namespace; the spec is a networking.k8s.io/v1 Ingress spec.",
    printcolumn(name = "Hosts", type_ = "string", json_path = ".spec.rules[*].host"),
    printcolumn(
        name = "Address",
        type_ = "string",
        json_path = ".status.loadBalancer.ingress[*].ip"
    ),
    printcolumn(
        name = "Backends",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"BackendsReady\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MultiClusterIngressSpec {
    /// The backend for requests that match no rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<IngressBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<IngressRule>>,
    /// TLS hosts and the `kubernetes.io/tls` Secrets (in this namespace) with their keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Vec<IngressTLS>>,
}

/// What the gateway found: where it listens, whether it took the routes, and each backend's
/// ready endpoints per cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiClusterIngressStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<IngressLoadBalancerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendStatus>,
}

/// One backend Service port of an ingress and the clusters serving it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    pub service: String,
    /// The Service port: its number or its name.
    pub port: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterEndpoints>,
}

/// How many ready endpoints a cluster has for a backend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEndpoints {
    pub cluster: String,
    pub ready: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ingress_manifest_reads_as_the_ingress_spec() {
        let mci: MultiClusterIngress = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.atoll.io/v1alpha1",
            "kind": "MultiClusterIngress",
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {
                "tls": [{"hosts": ["a.example"], "secretName": "a-tls"}],
                "rules": [{"host": "a.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "web", "port": {"number": 80}}}}
                ]}}]
            }
        }))
        .expect("an Ingress spec");
        let rules = mci.spec.rules.expect("rules");
        assert_eq!(rules[0].host.as_deref(), Some("a.example"));
        let path = &rules[0].http.as_ref().expect("http").paths[0];
        assert_eq!(path.path_type, "Prefix");
        assert_eq!(
            path.backend.service.as_ref().map(|s| s.name.as_str()),
            Some("web")
        );
    }
}
