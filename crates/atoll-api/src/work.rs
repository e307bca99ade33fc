//! `work.atoll.io/v1alpha1`: `ManifestWork` (the unit of delivery to one cluster, in the hub
//! namespace `atoll-cluster-<name>`), `AppliedManifestWork` (what a work applied, in the
//! member) and `ManifestWorkReplicaSet` (a work for every cluster a Placement decides, rolled
//! out all at once or progressively). Open Cluster Management's `work/v1` and `v1alpha1`
//! schemas, with its condition names and reasons.

// kube-derive's `printcolumn(type_ = ...)` repeats per column, which clippy takes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::Condition;

/// Finalizer on a ManifestWork: what it applied is removed from the member first.
pub const WORK_FINALIZER: &str = "work.atoll.io/cleanup";
/// Finalizer on an AppliedManifestWork: its resources are deleted first.
pub const APPLIED_FINALIZER: &str = "work.atoll.io/applied-manifest-work-cleanup";
/// Label on what a work applied in a member: the AppliedManifestWork it belongs to (so one
/// watch per kind sees every applied object, for drift).
pub const APPLIED_BY_LABEL: &str = "work.atoll.io/applied-by";
/// Label on the works a replica set made: `<namespace>.<name>` of the replica set.
pub const REPLICASET_LABEL: &str = "work.atoll.io/manifestworkreplicaset";
/// Label on the works a replica set made: the placement that decided the cluster.
pub const PLACEMENT_NAME_LABEL: &str = "work.atoll.io/placementname";
/// Annotation on a replica set's work: the hash of the template it was made from.
pub const TEMPLATE_HASH_ANNOTATION: &str = "work.atoll.io/template-hash";
/// The field manager the applier writes as.
pub const APPLIER_MANAGER: &str = "atoll-work";

pub const CONDITION_APPLIED: &str = "Applied";
pub const CONDITION_AVAILABLE: &str = "Available";
pub const CONDITION_FEEDBACK_SYNCED: &str = "StatusFeedbackSynced";
/// Atoll's health rules by kind (OCM needs CEL rules for these): `True` while a workload
/// is not yet as desired (a Deployment rolling, a Job running).
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// `True` when a workload failed by its kind's rule (a Deployment past its progress
/// deadline, a Job failed).
pub const CONDITION_DEGRADED: &str = "Degraded";

/// Resources for one cluster, applied there by its agent (Pull) or by the hub (Push).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "work.atoll.io",
    version = "v1alpha1",
    kind = "ManifestWork",
    plural = "manifestworks",
    shortname = "mw",
    category = "atoll",
    namespaced,
    status = "ManifestWorkStatus",
    crates(kube_core = "::kube_core"),
    doc = "Resources to apply in one cluster (the cluster of this namespace, atoll-cluster-<name>), with their status read back.",
    printcolumn(
        name = "Applied",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Applied\")].status"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(
        name = "Progressing",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Progressing\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWorkSpec {
    #[serde(default)]
    pub workload: Workload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_option: Option<DeleteOption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest_configs: Vec<ManifestConfigOption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<Executor>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// The resources, each a whole Kubernetes object.
    #[serde(default)]
    pub manifests: Vec<Manifest>,
}

/// A Kubernetes object as it is to be applied (any kind).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(transparent)]
pub struct Manifest(pub serde_json::Value);

impl JsonSchema for Manifest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Manifest".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Not `x-kubernetes-embedded-resource`: a manifest without a kind must reach the
        // agent, which says which one is wrong while the others apply.
        schemars::json_schema!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOption {
    /// `Foreground` (the default: delete what was applied), `Orphan` (leave it all) or
    /// `SelectivelyOrphan` (leave what `selectivelyOrphans` names).
    #[serde(default = "foreground")]
    #[schemars(extend("enum" = ["Foreground", "Orphan", "SelectivelyOrphan"]))]
    pub propagation_policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selectively_orphans: Option<SelectivelyOrphan>,
    /// Delete the work this long after it is Complete (every Job in it finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i64>,
}

fn foreground() -> String {
    "Foreground".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectivelyOrphan {
    #[serde(default)]
    pub orphaning_rules: Vec<OrphaningRule>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrphaningRule {
    #[serde(default)]
    pub group: String,
    pub resource: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestConfigOption {
    pub resource_identifier: ResourceIdentifier,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feedback_rules: Vec<FeedbackRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
}

/// Which manifest a config is for (group and resource, e.g. `apps` and `deployments`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceIdentifier {
    #[serde(default)]
    pub group: String,
    pub resource: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRule {
    /// `WellKnownStatus` (the status fields OCM lists per kind) or `JSONPaths`.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["WellKnownStatus", "JSONPaths"]))]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_paths: Vec<JsonPath>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JsonPath {
    pub name: String,
    /// A JSONPath into the object, e.g. `.status.readyReplicas`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// `Update` (the default: the manifest's fields are kept as it says), `CreateOnly`,
    /// `ServerSideApply` (with its own `force` and field manager) or `ReadOnly`.
    #[serde(rename = "type", default = "update")]
    #[schemars(extend("enum" = ["Update", "CreateOnly", "ServerSideApply", "ReadOnly"]))]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_apply: Option<ServerSideApplyConfig>,
}

fn update() -> String {
    "Update".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSideApplyConfig {
    /// Take fields another manager owns (else a conflict is `Applied=False`).
    #[serde(default)]
    pub force: bool,
    /// The field manager, `atoll-work` by default (`work-agent*` names are kept as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
}

/// Who the work is applied as: a ServiceAccount of the member, by impersonation, so a work can
/// do no more than that account may. The requester needs `execute-as` on it (checked on the
/// hub).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Executor {
    pub subject: ExecutorSubject,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorSubject {
    /// `ServiceAccount`.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["ServiceAccount"]))]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountSubject>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ServiceAccountSubject {
    pub namespace: String,
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWorkStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ObservedCondition>,
    #[serde(default)]
    pub resource_status: ManifestResourceStatus,
}

/// A condition with the generation it was set for (`metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestResourceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ManifestCondition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestCondition {
    pub resource_meta: ManifestResourceMeta,
    #[serde(default)]
    pub status_feedback: StatusFeedback,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ObservedCondition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestResourceMeta {
    /// The manifest's index in `spec.workload.manifests`.
    pub ordinal: i32,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusFeedback {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<FeedbackValue>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackValue {
    pub name: String,
    pub field_value: FieldValue,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldValue {
    /// `Integer`, `String`, `Boolean` or `JsonRaw`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integer: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boolean: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_raw: Option<String>,
}

/// What a ManifestWork applied in this (member) cluster, by uid: what to delete when the work
/// goes or drops a manifest.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "work.atoll.io",
    version = "v1alpha1",
    kind = "AppliedManifestWork",
    plural = "appliedmanifestworks",
    category = "atoll",
    status = "AppliedManifestWorkStatus",
    crates(kube_core = "::kube_core"),
    doc = "What a ManifestWork of the hub applied in this cluster, by uid.",
    printcolumn(name = "Work", type_ = "string", json_path = ".spec.manifestWorkName"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AppliedManifestWorkSpec {
    /// Which hub (a hash of its address): works of another hub are not this one's.
    pub hub_hash: String,
    /// The agent (or the hub, for Push clusters) that applies it.
    #[serde(default)]
    pub agent_id: String,
    /// The ManifestWork's name on the hub.
    pub manifest_work_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedManifestWorkStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_resources: Vec<AppliedResource>,
}

#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct AppliedResource {
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub resource: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// A ManifestWork for every cluster a Placement decides, rolled out as its strategy says.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "work.atoll.io",
    version = "v1alpha1",
    kind = "ManifestWorkReplicaSet",
    plural = "manifestworkreplicasets",
    shortname = "mwrs",
    category = "atoll",
    namespaced,
    status = "ManifestWorkReplicaSetStatus",
    crates(kube_core = "::kube_core"),
    doc = "A ManifestWork for each cluster the placements decide, rolled out all at once or progressively.",
    printcolumn(
        name = "Placement",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"PlacementVerified\")].reason"
    ),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"PlacementRolledOut\")].reason"
    ),
    printcolumn(name = "Total", type_ = "integer", json_path = ".status.summary.total"),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.summary.available"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWorkReplicaSetSpec {
    pub manifest_work_template: ManifestWorkSpec,
    #[serde(default)]
    pub placement_refs: Vec<LocalPlacementReference>,
    /// `Background` (the default) or `Foreground` (the replica set goes after its works).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Background", "Foreground"]))]
    pub cascade_deletion_policy: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalPlacementReference {
    /// A Placement in the replica set's namespace.
    pub name: String,
    #[serde(default)]
    pub rollout_strategy: RolloutStrategy,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// `All`, `Progressive` or `ProgressivePerGroup`.
    #[serde(rename = "type", default = "all")]
    #[schemars(extend("enum" = ["All", "Progressive", "ProgressivePerGroup"]))]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<RolloutAll>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressive: Option<RolloutProgressive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressive_per_group: Option<RolloutProgressivePerGroup>,
}

fn all() -> String {
    "All".into()
}

impl Default for RolloutStrategy {
    fn default() -> Self {
        RolloutStrategy {
            type_: all(),
            all: None,
            progressive: None,
            progressive_per_group: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAll {
    /// `None` or a duration (`90s`, `10m`, `1h`): a cluster not succeeded by then has failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutProgressive {
    /// How long a cluster must stay succeeded before the next ones start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<String>,
    /// How many clusters may fail (a number or a percentage) before the rollout stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    /// Groups rolled out first, none of them allowed to fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mandatory_decision_groups: Vec<MandatoryDecisionGroup>,
    /// How many clusters at once (a number or a percentage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutProgressivePerGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mandatory_decision_groups: Vec<MandatoryDecisionGroup>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MandatoryDecisionGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_index: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWorkReplicaSetStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub summary: ManifestWorkReplicaSetSummary,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_summary: Vec<PlacementSummary>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWorkReplicaSetSummary {
    /// Works that exist.
    #[serde(default)]
    pub total: i32,
    /// Clusters the placements decided.
    #[serde(default)]
    pub desired_total: i32,
    #[serde(default)]
    pub applied: i32,
    #[serde(default)]
    pub available: i32,
    #[serde(default)]
    pub progressing: i32,
    #[serde(default)]
    pub degraded: i32,
    /// Works made from the current template.
    #[serde(default)]
    pub updated: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSummary {
    pub name: String,
    /// `x/y`: decision groups done of all.
    #[serde(default)]
    pub available_decision_groups: String,
    #[serde(default)]
    pub summary: ManifestWorkReplicaSetSummary,
    /// Per cluster: where its rollout is (`ToApply`, `Progressing`, `Succeeded`, `Failed`,
    /// `TimeOut`), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterRolloutStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRolloutStatus {
    pub cluster_name: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When it entered its status (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_transition_time: String,
    /// Its work's `Applied` and `Available` (`True`, `False`, or empty before any status), so
    /// a workspace's users, who may not read cluster namespaces, see them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub applied: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub available: String,
    /// Its work's status feedback, `name=value` pairs (ready replicas and the like).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub feedback: String,
}
