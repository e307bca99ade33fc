//! Atoll's API surface as data: group names, well-known labels and condition types.
//!
//! This crate owns no I/O and must compile without tokio or a network, like `kube-core`.
//! The CRD types of the registration, work, services and peering areas land here as their
//! issues are built; for now it holds the names the API server and later controllers share.

/// API group of `ManagedCluster`, `ManagedClusterSet` and their bindings.
pub const CLUSTER_GROUP: &str = "cluster.atoll.io";
/// API group of `ManifestWork` and `ManifestWorkReplicaSet`.
pub const WORK_GROUP: &str = "work.atoll.io";
/// API group of `ForeignCluster`, `ResourceRequest` and `ResourceOffer`.
pub const PEERING_GROUP: &str = "peering.atoll.io";
/// API group of `MultiClusterIngress`.
pub const NETWORKING_GROUP: &str = "networking.atoll.io";
/// The version every Atoll group serves today.
pub const VERSION: &str = "v1alpha1";

/// The version string `atoll` reports as its own (`/version` adds the Kubernetes level it serves).
pub const ATOLL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Annotation on a `Node`: the SHA-256 (hex) of the node agent's serving certificate, which the
/// API server pins when it fetches container logs from the node.
pub const KUBELET_SERVING_CERT_ANNOTATION: &str = "node.atoll.io/serving-cert-sha256";
