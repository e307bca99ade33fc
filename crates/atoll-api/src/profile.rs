//! `multicluster.x-k8s.io/v1alpha1` `ClusterProfile`: SIG-Multicluster's cluster inventory API
//! (KEP-4322, `kubernetes-sigs/cluster-inventory-api`), with its schema. The hub keeps one per
//! cluster in every namespace where a binding makes that cluster usable, so a workspace's users
//! and tools that read the standard (Argo CD, MultiKueue) see their clusters.

// kube-derive's `printcolumn(type_ = ...)` repeats per column, which clippy takes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label on every profile: the cluster manager that owns it (`atoll`).
pub const CLUSTER_MANAGER_LABEL: &str = "x-k8s.io/cluster-manager";
/// This cluster manager's name.
pub const CLUSTER_MANAGER: &str = "atoll";
/// Label on a profile: a cluster set the cluster is in (one of those bound to the namespace).
pub const PROFILE_CLUSTERSET_LABEL: &str = "multicluster.x-k8s.io/clusterset";
/// Condition: the cluster's control plane answers (from the ManagedCluster's Available).
pub const CONDITION_CONTROL_PLANE_HEALTHY: &str = "ControlPlaneHealthy";
/// Condition: the cluster has joined the cluster manager.
pub const CONDITION_PROFILE_JOINED: &str = "Joined";

/// One cluster of a multi-cluster inventory.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "multicluster.x-k8s.io",
    version = "v1alpha1",
    kind = "ClusterProfile",
    plural = "clusterprofiles",
    namespaced,
    status = "ClusterProfileStatus",
    crates(kube_core = "::kube_core"),
    doc = "ClusterProfile represents a single cluster in a multi-cluster deployment.",
    printcolumn(
        name = "Healthy",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ControlPlaneHealthy\")].status"
    ),
    printcolumn(
        name = "Kubernetes",
        type_ = "string",
        json_path = ".status.version.kubernetes"
    ),
    printcolumn(
        name = "Manager",
        type_ = "string",
        json_path = ".spec.clusterManager.name"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterProfileSpec {
    /// DisplayName defines a human-readable name of the ClusterProfile
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// ClusterManager defines which cluster manager owns this ClusterProfile resource
    #[schemars(extend("x-kubernetes-validations" = [{"message": "ClusterManager is immutable", "rule": "self == oldSelf"}]))]
    pub cluster_manager: ClusterManager,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ClusterManager {
    /// Name defines the name of the cluster manager
    pub name: String,
}

/// ClusterProfileStatus defines the observed state of ClusterProfile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterProfileStatus {
    /// Conditions contains the different condition statuses for this cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Version defines the version information of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ClusterProfileVersion>,
    /// Properties defines cluster characteristics through a list of Property objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
    /// AccessProviders is a list of cluster access providers that can provide access
    /// information for clusters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_providers: Vec<AccessProvider>,
    /// CredentialProviders is the deprecated name of accessProviders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_providers: Vec<AccessProvider>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ClusterProfileVersion {
    /// Kubernetes is the kubernetes version of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<String>,
}

/// A name/value pair and the last time it was observed on the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    /// Name is the name of a property resource on cluster.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Value is a property-dependent string
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
    /// LastObservedTime is the last time the property was observed on the corresponding cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_observed_time: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AccessProvider {
    pub name: String,
    /// Cluster contains information about how to communicate with a kubernetes cluster
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ProviderCluster>,
}

/// A kubeconfig cluster entry (clientcmd v1 `Cluster`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ProviderCluster {
    /// Server is the address of the kubernetes cluster (https://hostname:port).
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "byte"))]
    pub certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_compression: Option<bool>,
}
