//! The Multi-Cluster Services API (KEP-1645, `kubernetes-sigs/mcs-api` v0.5.0):
//! `ServiceExport` and `ServiceImport` in `multicluster.x-k8s.io`, versions `v1beta1` (stored)
//! and `v1alpha1` (served; identical), with their condition types, reasons and labels; and the
//! hub's own records of exports and imports (`networking.atoll.io`).
//!
//! A Service is shared among the clusters of one cluster set: the `ExclusiveClusterSetLabel`
//! set a cluster belongs to (`cluster.atoll.io/clusterset`), as Open Cluster Management's
//! service add-on shares within a set; label-selector sets such as `global` do not share.

// kube-derive's repeated `shortname`/`printcolumn` look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::SessionAffinityConfig;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube_core::CustomResourceExt;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The MCS API group.
pub const GROUP: &str = "multicluster.x-k8s.io";
/// The upstream release whose schema these are (the CRDs' `release-version` label).
pub const RELEASE_VERSION: &str = "v0.5.0";

/// Label on imported EndpointSlices: the multi-cluster service they belong to.
pub const LABEL_SERVICE_NAME: &str = "multicluster.kubernetes.io/service-name";
/// Label on imported EndpointSlices: the cluster whose endpoints they hold.
pub const LABEL_SOURCE_CLUSTER: &str = "multicluster.kubernetes.io/source-cluster";
/// `endpointslice.kubernetes.io/managed-by` of the slices Atoll imports.
pub const SLICE_MANAGER: &str = "mcs-controller.atoll.io";

/// ServiceExport condition: the export names a Service that can be exported.
pub const CONDITION_VALID: &str = "Valid";
/// ServiceExport and ServiceImport condition: exported (or imported) and in use.
pub const CONDITION_READY: &str = "Ready";
/// ServiceExport condition: this export disagrees with the exports of other clusters.
pub const CONDITION_CONFLICT: &str = "Conflict";

pub const REASON_VALID: &str = "Valid";
pub const REASON_NO_SERVICE: &str = "NoService";
pub const REASON_INVALID_SERVICE_TYPE: &str = "InvalidServiceType";
pub const REASON_READY: &str = "Ready";
pub const REASON_PENDING: &str = "Pending";
pub const REASON_NO_CONFLICTS: &str = "NoConflicts";
pub const REASON_PORT_CONFLICT: &str = "PortConflict";
pub const REASON_TYPE_CONFLICT: &str = "TypeConflict";
pub const REASON_SESSION_AFFINITY_CONFLICT: &str = "SessionAffinityConflict";
pub const REASON_SESSION_AFFINITY_CONFIG_CONFLICT: &str = "SessionAffinityConfigConflict";
pub const REASON_LABELS_CONFLICT: &str = "LabelsConflict";
pub const REASON_ANNOTATIONS_CONFLICT: &str = "AnnotationsConflict";
pub const REASON_INTERNAL_TRAFFIC_POLICY_CONFLICT: &str = "InternalTrafficPolicyConflict";
pub const REASON_TRAFFIC_DISTRIBUTION_CONFLICT: &str = "TrafficDistributionConflict";
pub const REASON_IP_FAMILY_CONFLICT: &str = "IPFamilyConflict";

/// ServiceImport `type`s.
pub const TYPE_CLUSTER_SET_IP: &str = "ClusterSetIP";

/// ManagedCluster annotation (set by the hub's admin; `atoll dev up` sets it): the address
/// (`host:port`) of the cluster's east-west gateway, which other members' Service proxies dial
/// for its endpoints when they are not directly reachable.
pub const ANNOTATION_EAST_WEST_ADDRESS: &str = "gateway.atoll.io/east-west-address";
/// ManagedCluster annotation: how other members reach the cluster's endpoints, `Direct` (the
/// default: the pod networks are flat) or `Gateway` (through its east-west gateway).
pub const ANNOTATION_ENDPOINT_REACHABILITY: &str = "gateway.atoll.io/endpoint-reachability";
pub const REACHABILITY_DIRECT: &str = "Direct";
pub const REACHABILITY_GATEWAY: &str = "Gateway";
/// EndpointSlice annotation on a member's imported slices: the east-west gateway through which
/// the slice's endpoints are reached (absent: directly).
pub const ANNOTATION_SLICE_GATEWAY: &str = "gateway.atoll.io/east-west";
pub const TYPE_HEADLESS: &str = "Headless";

/// An MCS object as read and written: `spec` optional (missing reads as empty), unlike the
/// roots kube-derive makes, which require it.
macro_rules! root {
    ($kind:ident, $spec:ident, $status:ident, $plural:literal, $version:literal) => {
        #[doc = concat!("A `", stringify!($kind), "`.")]
        #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
        #[serde(rename_all = "camelCase", default)]
        pub struct $kind {
            pub api_version: String,
            pub kind: String,
            pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            pub spec: $spec,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
        }

        impl kube_core::Resource for $kind {
            type DynamicType = ();
            type Scope = kube_core::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                stringify!($kind).into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                GROUP.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// The two served versions are the same schema; the macro writes each.
macro_rules! mcs_version {
    ($module:ident, $version:literal) => {
        #[doc = concat!("`multicluster.x-k8s.io/", $version, "`.")]
        pub mod $module {
            use super::*;

            /// ServiceExport declares that the Service with the same name and namespace as
            /// this export should be consumable from other clusters.
            #[derive(
                CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema,
            )]
            #[kube(
                group = "multicluster.x-k8s.io",
                version = $version,
                kind = "ServiceExport",
                plural = "serviceexports",
                // The schema's root; objects are read as [`ServiceExport`], whose `spec` is
                // optional as upstream's.
                root = "ServiceExportSchema",
                namespaced,
                status = "ServiceExportStatus",
                shortname = "svcex",
                shortname = "svcexport",
                category = "multicluster",
                crates(kube_core = "::kube_core"),
                doc = "ServiceExport declares that the Service with the same name and namespace as this export should be consumable from other clusters.",
                printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
            )]
            #[serde(rename_all = "camelCase")]
            pub struct ServiceExportSpec {
                /// exportedLabels describes the labels exported. It is optional for
                /// implementation.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub exported_labels: Option<BTreeMap<String, String>>,
                /// exportedAnnotations describes the annotations exported. It is optional for
                /// implementation.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub exported_annotations: Option<BTreeMap<String, String>>,
            }

            /// ServiceExportStatus contains the current status of an export.
            #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
            #[serde(rename_all = "camelCase")]
            pub struct ServiceExportStatus {
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
                pub conditions: Vec<Condition>,
            }

            /// ServiceImport describes a service imported from clusters in a ClusterSet.
            #[derive(
                CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema,
            )]
            #[kube(
                group = "multicluster.x-k8s.io",
                version = $version,
                kind = "ServiceImport",
                plural = "serviceimports",
                root = "ServiceImportSchema",
                namespaced,
                status = "ServiceImportStatus",
                shortname = "svcim",
                shortname = "svcimport",
                category = "multicluster",
                crates(kube_core = "::kube_core"),
                doc = "ServiceImport describes a service imported from clusters in a ClusterSet.",
                printcolumn(name = "Type", type_ = "string", description = "The type of this ServiceImport", json_path = ".spec.type"),
                printcolumn(name = "IP", type_ = "string", description = "The VIP for this ServiceImport", json_path = ".spec.ips"),
                printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
            )]
            #[serde(rename_all = "camelCase")]
            pub struct ServiceImportSpec {
                #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
                pub ports: Vec<ServicePort>,
                /// ip will be used as the VIP for this service when type is ClusterSetIP.
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                #[schemars(length(max = 2))]
                pub ips: Vec<String>,
                /// type defines the type of this service. Must be ClusterSetIP or Headless.
                #[serde(rename = "type")]
                #[schemars(extend("enum" = ["ClusterSetIP", "Headless"]))]
                pub type_: String,
                /// Supports "ClientIP" and "None". Used to maintain session affinity. Ignored
                /// when type is Headless.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub session_affinity: Option<String>,
                /// sessionAffinityConfig contains session affinity configuration.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub session_affinity_config: Option<SessionAffinityConfig>,
                /// IPFamilies identifies all the IPFamilies assigned for this ServiceImport.
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                #[schemars(length(max = 2))]
                pub ip_families: Vec<String>,
                /// InternalTrafficPolicy describes how nodes distribute service traffic they
                /// receive on the ClusterIP.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub internal_traffic_policy: Option<String>,
                /// TrafficDistribution offers a way to express preferences for how traffic is
                /// distributed to Service endpoints.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub traffic_distribution: Option<String>,
            }

            /// ServicePort represents the port on which the service is exposed.
            #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
            #[serde(rename_all = "camelCase")]
            pub struct ServicePort {
                /// The name of this port within the service. This must be a DNS_LABEL.
                #[serde(default, skip_serializing_if = "String::is_empty")]
                pub name: String,
                /// The IP protocol for this port. Supports "TCP", "UDP", and "SCTP". Default
                /// is TCP.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub protocol: Option<String>,
                /// The application protocol for this port.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub app_protocol: Option<String>,
                /// The port that will be exposed by this service.
                pub port: i32,
            }

            /// ServiceImportStatus describes derived state of an imported service.
            #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
            #[serde(rename_all = "camelCase")]
            pub struct ServiceImportStatus {
                /// EndpointSliceObjects indicates whether imported EndpointSlice objects are
                /// present for this ServiceImport.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                #[schemars(extend("enum" = ["Present", "Absent"]))]
                pub endpoint_slice_objects: Option<String>,
                /// clusters is the list of exporting clusters from which this service was
                /// derived.
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["cluster"]))]
                pub clusters: Vec<ClusterStatus>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
                pub conditions: Vec<Condition>,
            }

            root!(ServiceExport, ServiceExportSpec, ServiceExportStatus, "serviceexports", $version);
            root!(ServiceImport, ServiceImportSpec, ServiceImportStatus, "serviceimports", $version);

            /// ClusterStatus contains service configuration mapped to a specific source
            /// cluster.
            #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
            pub struct ClusterStatus {
                /// cluster is the name of the exporting cluster. Must be a valid RFC-1123 DNS
                /// label.
                pub cluster: String,
            }
        }
    };
}

mcs_version!(v1alpha1, "v1alpha1");
mcs_version!(v1beta1, "v1beta1");

/// A CRD served at both versions, stored at v1beta1, with the upstream labels.
fn both_versions(
    alpha: CustomResourceDefinition,
    beta: CustomResourceDefinition,
) -> CustomResourceDefinition {
    let mut crd = kube_core::crd::merge_crds(vec![alpha, beta], "v1beta1")
        .expect("the two versions of one kind merge");
    // As upstream lists them.
    crd.spec.versions.sort_by(|a, b| a.name.cmp(&b.name));
    // `spec` is optional upstream (`kubectl create` of a bare ServiceExport is the usual way).
    for v in crd.spec.versions.iter_mut() {
        if let Some(schema) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            && let Some(required) = schema.required.as_mut()
        {
            required.retain(|r| r != "spec");
            if required.is_empty() {
                schema.required = None;
            }
        }
    }
    crd.metadata.labels = Some(BTreeMap::from([
        (
            "multicluster.x-k8s.io/release-version".to_string(),
            RELEASE_VERSION.to_string(),
        ),
        (
            "multicluster.x-k8s.io/crd-schema-revision".to_string(),
            "0".to_string(),
        ),
    ]));
    crd
}

/// `serviceexports.multicluster.x-k8s.io`.
pub fn service_export_crd() -> CustomResourceDefinition {
    both_versions(
        v1alpha1::ServiceExportSchema::crd(),
        v1beta1::ServiceExportSchema::crd(),
    )
}

/// `serviceimports.multicluster.x-k8s.io`.
pub fn service_import_crd() -> CustomResourceDefinition {
    both_versions(
        v1alpha1::ServiceImportSchema::crd(),
        v1beta1::ServiceImportSchema::crd(),
    )
}

/// One cluster's EndpointSlice of an exported Service, as published to the hub.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportedSlice {
    /// `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// The hub's record of one cluster's export of one Service: the Service's shape and its
/// endpoints, in the cluster's namespace `atoll-cluster-<cluster>` on the hub (written by
/// that cluster's agent, which may write nothing else of the kind), named `<ns>.<name>`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.atoll.io",
    version = "v1alpha1",
    kind = "ExportedService",
    plural = "exportedservices",
    namespaced,
    status = "ExportedServiceStatus",
    shortname = "exsvc",
    crates(kube_core = "::kube_core"),
    doc = "One member cluster's export of one Service, as its agent published it to the hub.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".spec.namespace"),
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.name"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.service.type"),
    printcolumn(
        name = "Conflict",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Conflict\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ExportedServiceSpec {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    /// When the member's ServiceExport was made: among conflicting exports the oldest wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_created: Option<Time>,
    /// The Service as an import of this cluster alone would show it (no `ips`).
    pub service: v1beta1::ServiceImportSpec,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exported_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exported_annotations: BTreeMap<String, String>,
    /// The Service's EndpointSlices in the member.
    #[serde(default)]
    pub slices: Vec<ExportedSlice>,
}

/// What the hub found of an export: `Conflict` (with the upstream reasons) as the merge said.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportedServiceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The clusters that import this export (those of its cluster set): the only ones its
    /// cluster's east-west gateway lets through to its endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub importers: Vec<String>,
}

/// One exporting cluster's part of an import.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedCluster {
    pub cluster: String,
    /// The ports this cluster serves (traffic to a port goes only to clusters that have it).
    #[serde(default)]
    pub ports: Vec<v1beta1::ServicePort>,
    #[serde(default)]
    pub slices: Vec<ExportedSlice>,
    /// The cluster's east-west gateway (`host:port`) when its endpoints are reached through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// The hub's import of one multi-cluster service for one member, in the member's namespace
/// `atoll-cluster-<cluster>` on the hub, named `<ns>.<name>`: the merged ServiceImport and
/// every exporting cluster's endpoints. The member's agent makes the ServiceImport and its
/// EndpointSlices from it where the namespace exists.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.atoll.io",
    version = "v1alpha1",
    kind = "ImportedService",
    plural = "importedservices",
    namespaced,
    shortname = "imsvc",
    crates(kube_core = "::kube_core"),
    doc = "One multi-cluster service as the hub delivers it to one member: the merged ServiceImport and each exporting cluster's endpoints.",
    printcolumn(name = "Namespace", type_ = "string", json_path = ".spec.namespace"),
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.name"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.service.type"),
    printcolumn(name = "IP", type_ = "string", json_path = ".spec.service.ips"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ImportedServiceSpec {
    pub namespace: String,
    pub name: String,
    /// The cluster set it is shared in.
    pub cluster_set: String,
    pub service: v1beta1::ServiceImportSpec,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub clusters: Vec<ImportedCluster>,
}

/// The hub's name for a service's records: `<namespace>.<name>` (both DNS labels, so the dot
/// cannot be ambiguous).
pub fn record_name(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_are_served_and_v1beta1_is_stored() {
        for crd in [service_export_crd(), service_import_crd()] {
            let versions: Vec<(String, bool, bool)> = crd
                .spec
                .versions
                .iter()
                .map(|v| (v.name.clone(), v.served, v.storage))
                .collect();
            assert_eq!(
                versions,
                [
                    ("v1alpha1".to_string(), true, false),
                    ("v1beta1".to_string(), true, true)
                ]
            );
            assert_eq!(
                crd.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("multicluster.x-k8s.io/release-version"))
                    .map(String::as_str),
                Some(RELEASE_VERSION)
            );
        }
        let import = service_import_crd();
        assert_eq!(
            import.spec.names.short_names,
            Some(vec!["svcim".to_string(), "svcimport".to_string()])
        );
        let columns: Vec<String> = import.spec.versions[1]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(columns, ["Type", "IP", "Age"]);
    }

    #[test]
    fn an_export_without_a_spec_reads() {
        let e: v1beta1::ServiceExport = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
            "metadata": {"name": "web", "namespace": "demo"},
        }))
        .expect("a bare ServiceExport");
        assert_eq!(e.spec, v1beta1::ServiceExportSpec::default());
        let crd = service_export_crd();
        let schema = crd.spec.versions[1]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap();
        assert!(!schema.required.iter().flatten().any(|r| r == "spec"));
    }

    #[test]
    fn records_are_named_namespace_dot_name() {
        assert_eq!(record_name("demo", "web"), "demo.web");
    }
}
