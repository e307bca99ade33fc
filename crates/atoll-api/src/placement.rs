//! `cluster.atoll.io/v1alpha1` `Placement` and `PlacementDecision` (Open Cluster Management's
//! `v1beta1` schema): a Placement picks clusters from the sets bound to its namespace; the hub
//! writes what it picked into PlacementDecisions of at most 100 clusters each.
//!
//! Beyond OCM, `spreadPolicy` and the `Spread` prioritizer work (OCM ships the API only).

// kube-derive's `printcolumn(type_ = ...)` repeats per column, which clippy takes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::Condition;

/// Label on PlacementDecisions: the placement they belong to.
pub const PLACEMENT_LABEL: &str = "cluster.atoll.io/placement";
/// Label on PlacementDecisions: their decision group's name (empty for unnamed groups).
pub const DECISION_GROUP_NAME_LABEL: &str = "cluster.atoll.io/decision-group-name";
/// Label on PlacementDecisions: their decision group's index, from 0.
pub const DECISION_GROUP_INDEX_LABEL: &str = "cluster.atoll.io/decision-group-index";
/// The most clusters one PlacementDecision lists.
pub const MAX_DECISIONS_PER_OBJECT: usize = 100;
/// `"true"` on a Placement: the hub leaves it alone (OCM's experimental-scheduling-disable).
pub const SCHEDULING_DISABLE_ANNOTATION: &str = "cluster.atoll.io/experimental-scheduling-disable";
/// Condition: whether every decision the placement asks for is made.
pub const CONDITION_SATISFIED: &str = "PlacementSatisfied";
/// Condition: whether the placement's configuration can be evaluated.
pub const CONDITION_MISCONFIGURED: &str = "PlacementMisconfigured";

/// The name of the `k`th (from 1) PlacementDecision of placement `name`.
pub fn decision_name(placement: &str, k: usize) -> String {
    format!("{placement}-decision-{k}")
}

/// Picks clusters from the sets bound to its namespace. The fields are ANDed.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cluster.atoll.io",
    version = "v1alpha1",
    kind = "Placement",
    plural = "placements",
    category = "atoll",
    namespaced,
    status = "PlacementStatus",
    crates(kube_core = "::kube_core"),
    doc = "Picks ManagedClusters from the ManagedClusterSets bound to this namespace: filtered by predicates and taints, scored by prioritizers, spread over topologies; the decisions are in PlacementDecisions labelled cluster.atoll.io/placement=<name>.",
    printcolumn(
        name = "Succeeded",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"PlacementSatisfied\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"PlacementSatisfied\")].reason"
    ),
    printcolumn(
        name = "SelectedClusters",
        type_ = "integer",
        json_path = ".status.numberOfSelectedClusters"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Sets to pick from: the intersection with the sets bound to the namespace; empty means
    /// every bound set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_sets: Vec<String>,
    /// How many clusters to pick (the best by score, then by name); unset picks every
    /// feasible cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub number_of_clusters: Option<i32>,
    /// Predicates, ORed: a cluster must satisfy at least one (none given: every cluster does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicates: Vec<ClusterPredicate>,
    #[serde(default)]
    pub prioritizer_policy: PrioritizerPolicy,
    /// How the picked clusters spread over topologies (a label or claim of the clusters).
    #[serde(default, skip_serializing_if = "SpreadPolicy::is_empty")]
    pub spread_policy: SpreadPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "DecisionStrategy::is_empty")]
    pub decision_strategy: DecisionStrategy,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPredicate {
    #[serde(default)]
    pub required_cluster_selector: ClusterSelector,
}

/// The AND of its selectors; an empty one selects every cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSelector {
    #[serde(default, skip_serializing_if = "is_empty_selector")]
    pub label_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "ClusterClaimSelector::is_empty")]
    pub claim_selector: ClusterClaimSelector,
    #[serde(default, skip_serializing_if = "ClusterCelSelector::is_empty")]
    pub cel_selector: ClusterCelSelector,
}

fn is_empty_selector(s: &LabelSelector) -> bool {
    s == &LabelSelector::default()
}

/// Requirements over `status.clusterClaims` (name -> value), ANDed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterClaimSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl ClusterClaimSelector {
    pub fn is_empty(&self) -> bool {
        self.match_expressions.is_empty()
    }
}

/// CEL expressions over the variable `managedCluster` (the ManagedCluster as an object), ANDed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCelSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cel_expressions: Vec<String>,
}

impl ClusterCelSelector {
    pub fn is_empty(&self) -> bool {
        self.cel_expressions.is_empty()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrioritizerPolicy {
    /// `Additive` (the default: `Balance` and `Steady` at weight 1, plus the configurations) or
    /// `Exact` (only the configurations).
    #[serde(default = "additive")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<PrioritizerConfig>,
}

fn additive() -> String {
    "Additive".into()
}

impl Default for PrioritizerPolicy {
    fn default() -> Self {
        PrioritizerPolicy {
            mode: additive(),
            configurations: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrioritizerConfig {
    pub score_coordinate: ScoreCoordinate,
    /// -10 to 10; 0 turns the prioritizer off. The total score is the sum of weight x score.
    #[serde(default = "one")]
    #[schemars(range(min = -10, max = 10))]
    pub weight: i32,
}

fn one() -> i32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoreCoordinate {
    /// `BuiltIn` or `AddOn`.
    #[serde(rename = "type", default = "builtin")]
    #[schemars(extend("enum" = ["BuiltIn", "AddOn"]))]
    pub type_: String,
    /// `Balance`, `Steady`, `ResourceAllocatableCPU`, `ResourceAllocatableMemory` or `Spread`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_in: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_on: Option<AddOnScore>,
}

fn builtin() -> String {
    "BuiltIn".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddOnScore {
    pub resource_name: String,
    pub score_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpreadPolicy {
    /// Terms in order of importance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub spread_constraints: Vec<SpreadConstraintsTerm>,
}

impl SpreadPolicy {
    pub fn is_empty(&self) -> bool {
        self.spread_constraints.is_empty()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpreadConstraintsTerm {
    /// A label key or a claim name of the clusters.
    #[schemars(
        length(max = 316),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
        )
    )]
    pub topology_key: String,
    /// `Label` or `Claim`.
    #[schemars(extend("enum" = ["Label", "Claim"]))]
    pub topology_key_type: String,
    /// The most the number of picked clusters in one topology may exceed the least.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_skew: i32,
    /// `DoNotSchedule` (pick no cluster that would exceed maxSkew) or `ScheduleAnyway`
    /// (prefer those that do not).
    #[serde(default = "schedule_anyway")]
    #[schemars(extend("enum" = ["DoNotSchedule", "ScheduleAnyway"]))]
    pub when_unsatisfiable: String,
}

fn schedule_anyway() -> String {
    "ScheduleAnyway".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// Empty matches every key (then the operator must be `Exists`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(
        length(max = 316),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        )
    )]
    pub key: String,
    /// `Equal` (the default) or `Exists`.
    #[serde(default = "equal")]
    pub operator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024))]
    pub value: String,
    /// Empty matches every effect.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("enum" = ["NoSelect", "PreferNoSelect", "NoSelectIfNew"]))]
    pub effect: String,
    /// How long the taint is tolerated, counted from its `timeAdded`; unset: forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

fn equal() -> String {
    "Equal".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionStrategy {
    #[serde(default)]
    pub group_strategy: GroupStrategy,
}

impl DecisionStrategy {
    pub fn is_empty(&self) -> bool {
        self.group_strategy.decision_groups.is_empty()
            && self.group_strategy.clusters_per_decision_group.is_none()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStrategy {
    /// Named groups, filled first (each cluster in the first group whose selector it matches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decision_groups: Vec<DecisionGroup>,
    /// The most clusters in one group: a number or a percentage of the picked clusters
    /// (default `100%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters_per_decision_group: Option<IntOrString>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionGroup {
    #[schemars(regex(pattern = r"^[a-zA-Z0-9][-A-Za-z0-9_.]{0,61}[a-zA-Z0-9]$"))]
    pub group_name: String,
    #[serde(default)]
    pub group_cluster_selector: GroupClusterSelector,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupClusterSelector {
    #[serde(default, skip_serializing_if = "is_empty_selector")]
    pub label_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "ClusterClaimSelector::is_empty")]
    pub claim_selector: ClusterClaimSelector,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    #[serde(default)]
    pub number_of_selected_clusters: i32,
    #[serde(default)]
    pub decision_groups: Vec<DecisionGroupStatus>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionGroupStatus {
    #[serde(default)]
    pub decision_group_index: i32,
    #[serde(default)]
    pub decision_group_name: String,
    /// The PlacementDecisions of the group.
    #[serde(default)]
    pub decisions: Vec<String>,
    #[serde(default, rename = "clusterCount")]
    pub clusters_count: i32,
}

/// Clusters a placement picked (at most 100 per object).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cluster.atoll.io",
    version = "v1alpha1",
    kind = "PlacementDecision",
    plural = "placementdecisions",
    category = "atoll",
    namespaced,
    no_spec,
    status = "PlacementDecisionStatus",
    crates(kube_core = "::kube_core"),
    doc = "Clusters a Placement picked, written by the hub (at most 100 per object, labelled with the placement and decision group).",
    printcolumn(
        name = "Placement",
        type_ = "string",
        json_path = ".metadata.labels.cluster\\.atoll\\.io/placement"
    ),
    printcolumn(
        name = "Group",
        type_ = "string",
        json_path = ".metadata.labels.cluster\\.atoll\\.io/decision-group-index"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct PlacementDecisionSpec {}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementDecisionStatus {
    #[serde(default)]
    pub decisions: Vec<ClusterDecision>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDecision {
    pub cluster_name: String,
    #[serde(default)]
    pub reason: String,
}
