//! `peering.atoll.io/v1alpha1`: clusters that share resources as peers (Liqo's model). A
//! consumer knows each remote cluster as a `ForeignCluster`; it asks a provider for resources
//! with a `ResourceRequest` in its tenant namespace there; the provider answers with a
//! `ResourceOffer`, and once the offer is accepted a virtual node with the granted capacity
//! appears in the consumer. A `NamespaceOffloading` in a consumer namespace says where its pods
//! may run; `SearchDomain` names a DNS domain browsed for peers.

// kube-derive's repeated `shortname`/`printcolumn` look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The namespace where a cluster keeps its peering state: the peering tokens it was given and
/// the identities it holds on its providers (Secrets), and its view of each peering.
pub const PEERING_NAMESPACE: &str = "atoll-peering";
/// The tenant namespace of peer `cluster_id` (on a provider: the consumer's; on a consumer: the
/// provider's, holding the mirrored requests and offers).
pub fn tenant_namespace(cluster_id: &str) -> String {
    format!("atoll-tenant-{cluster_id}")
}
/// The namespace in a consumer for its peering with provider `provider_id`: the requests it
/// makes there and the offers mirrored back (not `atoll-tenant-<id>`, which a cluster that is
/// that peer's provider too uses for the other direction).
pub fn peer_namespace(provider_id: &str) -> String {
    format!("atoll-peer-{provider_id}")
}
/// The user a consumer's peering identity names on its provider.
pub fn peer_user(consumer_id: &str) -> String {
    format!("system:atoll:peer:{consumer_id}")
}
/// The group of every peering identity.
pub const PEERS_GROUP: &str = "system:atoll:peers";
/// The extra group of peering tokens (bootstrap tokens that may only ask for a peer identity).
pub const PEERING_BOOTSTRAP_GROUP: &str = "system:bootstrappers:atoll:peering";
/// The name of a consumer's virtual node for provider `provider_name`.
pub fn virtual_node_name(provider_name: &str) -> String {
    format!("atoll-{provider_name}")
}

/// Label on namespaces (tenant and offloaded) and objects a provider keeps for a consumer: the
/// consumer's cluster id.
pub const TENANT_LABEL: &str = "peering.atoll.io/tenant";
/// Label on a consumer's objects about a peer (its virtual node, mirrored offers): the peer's
/// cluster id.
pub const REMOTE_CLUSTER_ID_LABEL: &str = "atoll.io/remote-cluster-id";
/// Label of virtual nodes: `atoll.io/type=virtual-node`.
pub const NODE_TYPE_LABEL: &str = "atoll.io/type";
pub const NODE_TYPE_VIRTUAL: &str = "virtual-node";
/// The taint of every virtual node: only pods of offloaded namespaces tolerate it.
pub const VIRTUAL_NODE_TAINT: &str = "virtual-node.atoll.io/not-allowed";
/// Label on a pod a provider runs for a consumer: the consumer pod's UID.
pub const ORIGIN_UID_LABEL: &str = "peering.atoll.io/origin-uid";
/// Annotation on a provider's namespace or pod: the consumer's namespace and name of the origin.
pub const ORIGIN_ANNOTATION: &str = "peering.atoll.io/origin";
/// Annotation on a CSR: the SHA-256 pin of the provider's CA as the consumer checked it.
pub const CA_PIN_ANNOTATION: &str = "peering.atoll.io/ca-sha256";
/// Annotation on a peering token Secret: the consumer that used it first (a token makes one
/// peering).
pub const TOKEN_CONSUMER_ANNOTATION: &str = "peering.atoll.io/consumer";
/// Label on a peering CSR: the consumer's cluster id it claims.
pub const CSR_PEER_LABEL: &str = "peering.atoll.io/consumer";
/// The name of the one `NamespaceOffloading` of a namespace.
pub const OFFLOADING_NAME: &str = "offloading";
/// Field manager of the peering controllers.
pub const MANAGER: &str = "atoll-peering";

/// ForeignCluster conditions, one per step of a peering.
pub const CONDITION_DISCOVERED: &str = "Discovered";
pub const CONDITION_AUTHENTICATED: &str = "Authenticated";
pub const CONDITION_NEGOTIATED: &str = "ResourcesNegotiated";
pub const CONDITION_VIRTUAL_NODE_READY: &str = "VirtualNodeReady";
pub const CONDITION_REACHABLE: &str = "Reachable";

/// Whether this cluster peers with the other in one direction.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PeeringEnabled {
    /// As the cluster's policy says (outgoing: when a token or a request is there; incoming:
    /// yes).
    #[default]
    Auto,
    Yes,
    No,
}

/// How a ForeignCluster came to be known.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DiscoveredBy {
    #[default]
    Manual,
    #[serde(rename = "DNS")]
    Dns,
    /// It peered with this cluster (this cluster is its provider).
    IncomingPeering,
}

/// A remote cluster this cluster knows as a peer.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "peering.atoll.io",
    version = "v1alpha1",
    kind = "ForeignCluster",
    plural = "foreignclusters",
    status = "ForeignClusterStatus",
    shortname = "fc",
    category = "atoll",
    crates(kube_core = "::kube_core"),
    doc = "A remote cluster known as a peer: where its API is, the pin of its CA, whether to peer each way, and how far each step of the peering got.",
    printcolumn(name = "Cluster-ID", type_ = "string", json_path = ".spec.clusterID"),
    printcolumn(name = "Role", type_ = "string", json_path = ".status.role"),
    printcolumn(
        name = "Authenticated",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Authenticated\")].status"
    ),
    printcolumn(
        name = "Negotiated",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ResourcesNegotiated\")].status"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"VirtualNodeReady\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ForeignClusterSpec {
    /// The remote cluster's id (a DNS label); it names the tenant namespaces. Immutable.
    #[serde(rename = "clusterID")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "clusterID is immutable", "rule": "self == oldSelf"}]))]
    pub cluster_id: String,
    /// The remote cluster's API server (https).
    #[serde(
        rename = "apiServerURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub api_server_url: String,
    /// `sha256:<hex>` of the remote CA's public key (SubjectPublicKeyInfo), as kubeadm pins it.
    #[serde(rename = "caSHA256", default, skip_serializing_if = "String::is_empty")]
    pub ca_sha256: String,
    /// Whether this cluster uses the remote one's resources.
    #[serde(default)]
    pub outgoing_peering: PeeringEnabled,
    /// Whether the remote cluster may use this one's.
    #[serde(default)]
    pub incoming_peering: PeeringEnabled,
    #[serde(default)]
    pub discovered_by: DiscoveredBy,
}

/// How far a peering got.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForeignClusterStatus {
    /// `Consumer` (this cluster uses the remote one), `Provider`, `ConsumerAndProvider`, or
    /// `None` while neither.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_namespace: Option<TenantNamespaces>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The tenant namespaces of a peering.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantNamespaces {
    /// In this cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local: String,
    /// In the remote cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote: String,
}

/// Phases of a request and of an offer.
pub const PHASE_PENDING: &str = "Pending";
pub const PHASE_MANUAL: &str = "ManualActionRequired";
pub const PHASE_ACCEPTED: &str = "Accepted";
pub const PHASE_REFUSED: &str = "Refused";

/// A consumer's request for resources, in its tenant namespace on the provider.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "peering.atoll.io",
    version = "v1alpha1",
    kind = "ResourceRequest",
    plural = "resourcerequests",
    namespaced,
    status = "ResourceRequestStatus",
    shortname = "rr",
    category = "atoll",
    crates(kube_core = "::kube_core"),
    doc = "A consumer's request for resources of a provider (cpu, memory, pods and extended resources), answered with a ResourceOffer.",
    printcolumn(
        name = "Consumer",
        type_ = "string",
        json_path = ".spec.consumerClusterID"
    ),
    printcolumn(name = "CPU", type_ = "string", json_path = ".spec.resources.cpu"),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".spec.resources.memory"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequestSpec {
    #[serde(rename = "consumerClusterID")]
    pub consumer_cluster_id: String,
    #[serde(
        rename = "providerClusterID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub provider_cluster_id: String,
    /// What is asked for: `cpu`, `memory`, `pods` and any extended resource
    /// (`nvidia.com/gpu`).
    #[serde(default)]
    pub resources: BTreeMap<String, Quantity>,
}

/// The provider's answer to a request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequestStatus {
    /// `Pending`, `ManualActionRequired`, `Accepted` or `Refused`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The provider admin's decision under the `Manual` policy (`Approved` or `Refused`,
    /// `atoll peer approve|refuse`); the consumer cannot write status.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// What a provider grants a consumer (in the tenant namespace on the provider; mirrored to the
/// consumer).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "peering.atoll.io",
    version = "v1alpha1",
    kind = "ResourceOffer",
    plural = "resourceoffers",
    namespaced,
    status = "ResourceOfferStatus",
    shortname = "ro",
    category = "atoll",
    crates(kube_core = "::kube_core"),
    doc = "A provider's grant to a consumer: the resource quota, the virtual node's labels and taints, and how long the offer lives unless renewed.",
    printcolumn(
        name = "Provider",
        type_ = "string",
        json_path = ".spec.providerClusterID"
    ),
    printcolumn(
        name = "CPU",
        type_ = "string",
        json_path = ".spec.resourceQuota.hard.cpu"
    ),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".spec.resourceQuota.hard.memory"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Virtual-Node",
        type_ = "string",
        json_path = ".status.virtualNodeStatus"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ResourceOfferSpec {
    #[serde(rename = "providerClusterID")]
    pub provider_cluster_id: String,
    #[serde(
        rename = "consumerClusterID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub consumer_cluster_id: String,
    pub resource_quota: ResourceQuotaGrant,
    /// Labels for the consumer's virtual node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Taints for the consumer's virtual node (besides the virtual-node one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// How long the offer holds without renewal, in seconds; the provider renews it while the
    /// peering lives (`status.expirationTime`).
    #[serde(default)]
    pub time_to_live_seconds: i64,
}

/// The granted quota (`hard`, as a ResourceQuota's).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ResourceQuotaGrant {
    #[serde(default)]
    pub hard: BTreeMap<String, Quantity>,
}

/// The state of an offer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceOfferStatus {
    /// `Pending` until the consumer accepts it, then `Accepted` (or `Refused`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// The consumer's virtual node: `None`, `Created` or `Deleting`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub virtual_node_status: String,
    /// When the offer lapses unless renewed (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expiration_time: String,
}

/// Where the pods of a consumer namespace run, and how the namespace is named remotely.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "peering.atoll.io",
    version = "v1alpha1",
    kind = "NamespaceOffloading",
    plural = "namespaceoffloadings",
    namespaced,
    status = "NamespaceOffloadingStatus",
    shortname = "nsoff",
    category = "atoll",
    crates(kube_core = "::kube_core"),
    doc = "Offloads this namespace to peers: how its remote namespaces are named and where its pods may run. One per namespace, named offloading.",
    printcolumn(
        name = "Mapping",
        type_ = "string",
        json_path = ".spec.namespaceMappingStrategy"
    ),
    printcolumn(
        name = "Pods",
        type_ = "string",
        json_path = ".spec.podOffloadingStrategy"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.offloadingPhase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceOffloadingSpec {
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "namespaceMappingStrategy is immutable", "rule": "self == oldSelf"}]))]
    pub namespace_mapping_strategy: NamespaceMapping,
    /// The remote name under `SelectedName`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "remoteNamespaceName is immutable", "rule": "self == oldSelf"}]))]
    pub remote_namespace_name: String,
    #[serde(default)]
    pub pod_offloading_strategy: PodOffloading,
    /// Which virtual nodes (by their labels) the namespace goes to; none: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<NodeSelector>,
}

/// How an offloaded namespace is named in the provider.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NamespaceMapping {
    /// `<namespace>-<consumer name>`.
    #[default]
    DefaultName,
    /// The same name as here.
    EnforceSameName,
    /// `remoteNamespaceName`.
    SelectedName,
}

/// Where an offloaded namespace's pods run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PodOffloading {
    /// Here or on the virtual nodes.
    #[default]
    LocalAndRemote,
    /// Only here.
    Local,
    /// Only on the virtual nodes.
    Remote,
}

/// How the offloading went, per peer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceOffloadingStatus {
    /// `Ready`, `InProgress`, `NoClusterSelected`, `SomeFailed`, `AllFailed`, `Terminating`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub offloading_phase: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<RemoteNamespaceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The namespace in one provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteNamespaceStatus {
    /// The provider's cluster id.
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_namespace: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A DNS domain browsed for peers (`PTR <domain>` -> `<cluster>._atoll-peering._tcp.<domain>`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "peering.atoll.io",
    version = "v1alpha1",
    kind = "SearchDomain",
    plural = "searchdomains",
    status = "SearchDomainStatus",
    category = "atoll",
    crates(kube_core = "::kube_core"),
    doc = "A DNS domain browsed for peers; what is found becomes ForeignClusters (discoveredBy: DNS).",
    printcolumn(name = "Domain", type_ = "string", json_path = ".spec.domain"),
    printcolumn(name = "Auto-Peer", type_ = "boolean", json_path = ".spec.autoPeer"),
    printcolumn(name = "Found", type_ = "integer", json_path = ".status.found"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SearchDomainSpec {
    pub domain: String,
    /// Whether discovered clusters are peered with at once (they still need a token).
    #[serde(default)]
    pub auto_peer: bool,
    /// The DNS server to ask (`IP:PORT`); the system's resolver when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
}

/// What the last browse found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchDomainStatus {
    #[serde(default)]
    pub found: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Set `c` in `conditions` (metav1 conditions), keeping `lastTransitionTime` when the status
/// does not change. Returns whether anything changed.
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

/// The CRDs of peering.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube_core::CustomResourceExt;
    vec![
        ForeignCluster::crd(),
        ResourceRequest::crd(),
        ResourceOffer::crd(),
        NamespaceOffloading::crd(),
        SearchDomain::crd(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_cluster_reads_with_its_defaults() {
        let fc: ForeignCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "peering.atoll.io/v1alpha1", "kind": "ForeignCluster",
            "metadata": {"name": "member2"},
            "spec": {"clusterID": "member2", "apiServerURL": "https://127.0.0.1:7001", "caSHA256": "sha256:ab"},
        }))
        .unwrap();
        assert_eq!(fc.spec.outgoing_peering, PeeringEnabled::Auto);
        assert_eq!(fc.spec.discovered_by, DiscoveredBy::Manual);
        let back = serde_json::to_value(&fc.spec).unwrap();
        assert_eq!(back["clusterID"], "member2");
        assert_eq!(back["apiServerURL"], "https://127.0.0.1:7001");
        assert_eq!(back["caSHA256"], "sha256:ab");
        let dns: DiscoveredBy = serde_json::from_value(serde_json::json!("DNS")).unwrap();
        assert_eq!(dns, DiscoveredBy::Dns);
    }

    #[test]
    fn the_crds_carry_their_immutability_rules() {
        let crds = crds();
        let fc = serde_json::to_value(&crds[0]).unwrap();
        let rule = &fc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["clusterID"]["x-kubernetes-validations"][0]["rule"];
        assert_eq!(rule, "self == oldSelf");
        assert_eq!(fc["spec"]["scope"], "Cluster");
        assert_eq!(fc["spec"]["names"]["shortNames"][0], "fc");
        let rr = serde_json::to_value(&crds[1]).unwrap();
        assert_eq!(rr["spec"]["scope"], "Namespaced");
    }
}
