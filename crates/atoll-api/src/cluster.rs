//! `cluster.atoll.io/v1alpha1`: `ManagedCluster`, a member cluster as the hub knows it (Open
//! Cluster Management's model), and `about.k8s.io/v1alpha1` `ClusterProperty` (KEP-2149), the
//! facts a member states about itself.

// kube-derive's `printcolumn(type_ = ...)` repeats per column, which clippy takes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The hub's admin accepted the cluster (`hubAcceptsClient`).
pub const CONDITION_HUB_ACCEPTED: &str = "HubAcceptedManagedCluster";
/// The hub's admin turned the cluster away (`hubAcceptsClient: false` after acceptance, or a
/// denied CSR).
pub const CONDITION_HUB_DENIED: &str = "HubDeniedManagedCluster";
/// The cluster's agent holds an accepted identity and has renewed its lease.
pub const CONDITION_JOINED: &str = "ManagedClusterJoined";
/// The agent renews its lease: `Unknown` after 5 lease durations without a renewal.
pub const CONDITION_AVAILABLE: &str = "ManagedClusterConditionAvailable";

/// The taint of a cluster whose lease stopped.
pub const TAINT_UNREACHABLE: &str = "cluster.atoll.io/unreachable";
/// The taint of a cluster that is not Available=True for another reason.
pub const TAINT_UNAVAILABLE: &str = "cluster.atoll.io/unavailable";

/// The Lease the agent renews, in the cluster's namespace on the hub.
pub const CLUSTER_LEASE: &str = "cluster-lease";
/// Namespace on the hub for everything of cluster `name`.
pub fn cluster_namespace(name: &str) -> String {
    format!("atoll-cluster-{name}")
}
/// The longest cluster name: its namespace `atoll-cluster-<name>` is a DNS label (63).
pub const MAX_CLUSTER_NAME: usize = 63 - "atoll-cluster-".len();
/// What a cluster name must match (a DNS label: its namespace is named after it).
pub const CLUSTER_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Why `name` cannot name a cluster, if it cannot.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    let label = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label {
        return Err(format!(
            "{name:?} is not a valid cluster name: lower case letters, digits and '-', starting and ending with a letter or digit (a DNS label, as its hub namespace atoll-cluster-NAME is named after it)"
        ));
    }
    if name.len() > MAX_CLUSTER_NAME {
        return Err(format!(
            "{name:?} is not a valid cluster name: at most {MAX_CLUSTER_NAME} characters (its hub namespace atoll-cluster-NAME must fit in 63)"
        ));
    }
    Ok(())
}

/// The ManagedCluster CRD, its name restricted to what `check_cluster_name` accepts (the one
/// restriction of metadata a CRD schema may make).
pub fn managed_cluster_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
    use kube_core::CustomResourceExt;
    let mut crd = ManagedCluster::crd();
    let name = JSONSchemaProps {
        type_: Some("string".into()),
        max_length: Some(MAX_CLUSTER_NAME as i64),
        pattern: Some(CLUSTER_NAME_PATTERN.into()),
        ..Default::default()
    };
    let metadata = JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(BTreeMap::from([("name".to_string(), name)])),
        ..Default::default()
    };
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema
                .properties
                .get_or_insert_with(Default::default)
                .insert("metadata".into(), metadata.clone());
        }
    }
    crd
}
/// The user name of cluster `name`'s agent (its certificate's CN).
pub fn agent_user(name: &str) -> String {
    format!("system:atoll:cluster:{name}:agent")
}
/// The group of cluster `name` (in its agent's certificate's O).
pub fn cluster_group(name: &str) -> String {
    format!("system:atoll:cluster:{name}")
}
/// The group of every cluster's agent.
pub const CLUSTERS_GROUP: &str = "system:atoll:clusters";
/// The extra group of the bootstrap tokens `atoll hub token` issues.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:atoll";
/// Label on CSRs an agent creates: the cluster it asks for.
pub const CSR_CLUSTER_LABEL: &str = "cluster.atoll.io/cluster-name";
/// Finalizer the hub puts on ManagedClusters, to remove what it created for them.
pub const CLUSTER_FINALIZER: &str = "cluster.atoll.io/cleanup";
/// The id property of a cluster (KEP-2149).
pub const CLUSTER_ID_PROPERTY: &str = "cluster.clusterset.k8s.io";
/// Namespace of the agent in its member cluster, and its Secret with the hub kubeconfig.
pub const AGENT_NAMESPACE: &str = "atoll-agent";
pub const HUB_KUBECONFIG_SECRET: &str = "hub-kubeconfig";

/// A member cluster registered with the hub.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cluster.atoll.io",
    version = "v1alpha1",
    kind = "ManagedCluster",
    plural = "managedclusters",
    shortname = "mcl",
    category = "atoll",
    status = "ManagedClusterStatus",
    crates(kube_core = "::kube_core"),
    doc = "A member cluster as the hub knows it: accepted or not, joined, available.",
    printcolumn(
        name = "Accepted",
        type_ = "boolean",
        json_path = ".spec.hubAcceptsClient"
    ),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.syncMode"),
    printcolumn(
        name = "Joined",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ManagedClusterJoined\")].status"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ManagedClusterConditionAvailable\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterSpec {
    /// Whether the hub's admin accepts this cluster. Only someone allowed to `update`
    /// `managedclusters/accept` may set it (`atoll accept`).
    #[serde(default)]
    pub hub_accepts_client: bool,
    /// How to reach the cluster's API server (for push mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_cluster_client_configs: Vec<ClientConfig>,
    /// Seconds between the agent's lease renewals; after 5 without one the cluster is Unknown.
    #[serde(default = "default_lease_seconds")]
    #[schemars(range(min = 1))]
    pub lease_duration_seconds: i32,
    /// `Pull`: the agent fetches its work from the hub; `Push`: the hub writes to the cluster.
    #[serde(default)]
    pub sync_mode: SyncMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<ClusterTaint>,
}

fn default_lease_seconds() -> i32 {
    60
}

/// As a spec decoded from `{}` is: the defaults the schema gives (a derived `Default` would
/// give a lease of 0 s, which the schema refuses).
impl Default for ManagedClusterSpec {
    fn default() -> Self {
        ManagedClusterSpec {
            hub_accepts_client: false,
            managed_cluster_client_configs: Vec::new(),
            lease_duration_seconds: default_lease_seconds(),
            sync_mode: SyncMode::default(),
            taints: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    /// The cluster's API server, `https://host:port`.
    #[schemars(regex(pattern = r"^https://"))]
    pub url: String,
    /// PEM CA certificates, base64 as in a kubeconfig's `certificate-authority-data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "byte"))]
    pub ca_bundle: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SyncMode {
    #[default]
    Pull,
    Push,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTaint {
    /// A qualified name, as label keys are (`example.com/name`).
    #[schemars(
        length(max = 316),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        )
    )]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub value: Option<String>,
    /// `NoSelect`, `PreferNoSelect` or `NoSelectIfNew`.
    #[schemars(extend("enum" = ["NoSelect", "PreferNoSelect", "NoSelectIfNew"]))]
    pub effect: String,
    /// When the taint was added (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub time_added: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Summed over the cluster's nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ClusterVersion>,
    /// The cluster's `ClusterProperty` objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_claims: Vec<ClusterClaim>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterVersion {
    #[serde(default)]
    pub kubernetes: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterClaim {
    pub name: String,
    pub value: String,
}

/// A condition as `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339.
    #[serde(default)]
    pub last_transition_time: String,
}

impl ManagedCluster {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
    }

    /// Whether condition `type_` is `True`.
    pub fn is(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

/// Set `c` in `conditions`, keeping `lastTransitionTime` when the status does not change.
/// Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut c: Condition) -> bool {
    match conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(old) => {
            if old.status == c.status && old.reason == c.reason && old.message == c.message {
                return false;
            }
            if old.status == c.status {
                c.last_transition_time = old.last_transition_time.clone();
            }
            *old = c;
            true
        }
        None => {
            conditions.push(c);
            true
        }
    }
}

/// A fact a cluster states about itself (KEP-2149), e.g. its id
/// (`cluster.clusterset.k8s.io`). Cluster-scoped; the name is the property.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "about.k8s.io",
    version = "v1alpha1",
    kind = "ClusterProperty",
    plural = "clusterproperties",
    crates(kube_core = "::kube_core"),
    doc = "A property of this cluster (KEP-2149): its name is the property, spec.value its value.",
    printcolumn(name = "Value", type_ = "string", json_path = ".spec.value"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ClusterPropertySpec {
    /// The property's value, at most 128k characters.
    #[schemars(length(max = 128000))]
    pub value: String,
}

/// Whether a cluster is to be sent traffic: its lease renewed within `grace_periods` lease
/// durations; without a lease seen yet, whether the hub finds it available.
pub fn lease_live(
    renewed: Option<k8s_openapi::jiff::Timestamp>,
    lease_seconds: i32,
    grace_periods: f64,
    available: bool,
    now: k8s_openapi::jiff::Timestamp,
) -> bool {
    match renewed {
        Some(at) => {
            let age = now.duration_since(at).as_secs_f64();
            age <= f64::from(lease_seconds.max(1)) * grace_periods
        }
        None => available,
    }
}

/// Whether the hub finds cluster `mc` available (`ManagedClusterConditionAvailable=True`).
pub fn is_available(mc: &ManagedCluster) -> bool {
    mc.is(CONDITION_AVAILABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_live_while_its_lease_is_within_the_grace() {
        let now: k8s_openapi::jiff::Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let ago = |s: i64| Some(now - k8s_openapi::jiff::SignedDuration::from_secs(s));
        let cases = [
            ("just renewed", ago(1), 10, 2.0, false, true),
            ("at the grace", ago(20), 10, 2.0, false, true),
            ("past the grace", ago(21), 10, 2.0, true, false),
            ("a longer grace", ago(21), 10, 3.0, false, true),
            ("no lease: as the hub finds it", None, 10, 2.0, true, true),
            ("no lease, unavailable", None, 10, 2.0, false, false),
        ];
        for (what, renewed, lease, grace, available, want) in cases {
            assert_eq!(
                lease_live(renewed, lease, grace, available, now),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn a_default_spec_is_what_an_empty_one_decodes_to() {
        let decoded: ManagedClusterSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(decoded, ManagedClusterSpec::default());
    }

    #[test]
    fn cluster_names_are_dns_labels_that_leave_room_for_the_namespace_prefix() {
        for ok in ["a", "member1", "eu-west-1", &"x".repeat(MAX_CLUSTER_NAME)] {
            assert_eq!(check_cluster_name(ok), Ok(()), "{ok}");
            assert!(cluster_namespace(ok).len() <= 63);
        }
        for bad in [
            "",
            "A",
            "a_b",
            "a.b",
            "-a",
            "a-",
            &"x".repeat(MAX_CLUSTER_NAME + 1),
        ] {
            assert!(check_cluster_name(bad).is_err(), "{bad}");
        }
    }
}
