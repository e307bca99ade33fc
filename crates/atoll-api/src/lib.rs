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

pub mod cluster;
pub mod clusterset;
pub mod ingress;
pub mod mcs;
pub mod peering;
pub mod placement;
pub mod profile;
pub mod selector;
pub mod work;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_core::CustomResourceExt;

/// Every CRD Atoll defines, as installed on a hub or member (and written to `deploy/crds/`).
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        cluster::managed_cluster_crd(),
        cluster::ClusterProperty::crd(),
        clusterset::ManagedClusterSet::crd(),
        clusterset::ManagedClusterSetBinding::crd(),
        placement::Placement::crd(),
        placement::PlacementDecision::crd(),
        profile::ClusterProfile::crd(),
        work::ManifestWork::crd(),
        work::ManifestWorkReplicaSet::crd(),
        work::AppliedManifestWork::crd(),
        mcs::service_export_crd(),
        mcs::service_import_crd(),
        mcs::ExportedService::crd(),
        mcs::ImportedService::crd(),
        ingress::MultiClusterIngress::crd(),
    ]
    .into_iter()
    .chain(peering::crds())
    .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    /// `deploy/crds/<name>.yaml` is what `crds()` generates; `ATOLL_UPDATE_CRDS=1 cargo test -p
    /// atoll-api` rewrites it. CI runs this test, so a stale file fails the build.
    #[test]
    fn deploy_crds_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
        let update = std::env::var_os("ATOLL_UPDATE_CRDS").is_some();
        let mut stale = Vec::new();
        for crd in super::crds() {
            let name = crd.metadata.name.clone().expect("CRDs are named");
            let text = format!(
                "# Generated from crates/atoll-api by `ATOLL_UPDATE_CRDS=1 cargo test -p atoll-api`; do not edit.\n{}",
                serde_saphyr::to_string(&crd).expect("a CRD serializes")
            );
            // What the file says must read back as the CRD itself (folded long strings too).
            let back: CustomResourceDefinition =
                serde_saphyr::from_str(&text).expect("the YAML reads back");
            assert_eq!(back, crd, "{name}: YAML round trip");
            let path = dir.join(format!("{name}.yaml"));
            if update {
                std::fs::create_dir_all(&dir).expect("deploy/crds");
                std::fs::write(&path, &text).expect("write the CRD");
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "stale or missing CRD files {stale:?}: run `ATOLL_UPDATE_CRDS=1 cargo test -p atoll-api`"
        );
    }
}
