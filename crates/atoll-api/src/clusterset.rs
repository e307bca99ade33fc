//! `cluster.atoll.io/v1alpha1` `ManagedClusterSet` and `ManagedClusterSetBinding` (Open Cluster
//! Management's `v1beta2` semantics): a set groups clusters by an exclusive label or by a label
//! selector; a binding makes a set usable in one namespace (a workspace).

// kube-derive's `printcolumn(type_ = ...)` repeats per column, which clippy takes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::Condition;

/// The label that puts a cluster into an `ExclusiveClusterSetLabel` set: one set per cluster.
pub const CLUSTERSET_LABEL: &str = "cluster.atoll.io/clusterset";
/// The set every cluster without a clusterset label lands in.
pub const DEFAULT_SET: &str = "default";
/// The set that holds every cluster.
pub const GLOBAL_SET: &str = "global";
/// On a built-in set, `"false"` stops the hub from recreating it or reverting its selector.
pub const AUTOUPDATE_ANNOTATION: &str = "cluster.atoll.io/autoupdate";
/// The condition of a set: `True` while no cluster is a member.
pub const CONDITION_CLUSTERSET_EMPTY: &str = "ClusterSetEmpty";
/// The condition of a binding: whether its set exists.
pub const CONDITION_BOUND: &str = "Bound";
/// The extra group of bootstrap tokens minted for one set (`atoll hub token --clusterset SET`):
/// `system:bootstrappers:atoll:clusterset:<SET>`.
pub const BOOTSTRAP_SET_GROUP_PREFIX: &str = "system:bootstrappers:atoll:clusterset:";

/// A group of clusters, cluster-scoped.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cluster.atoll.io",
    version = "v1alpha1",
    kind = "ManagedClusterSet",
    plural = "managedclustersets",
    shortname = "mclset",
    shortname = "mclsets",
    category = "atoll",
    status = "ManagedClusterSetStatus",
    crates(kube_core = "::kube_core"),
    doc = "A set of ManagedClusters: those labelled cluster.atoll.io/clusterset=<name> (ExclusiveClusterSetLabel) or those a label selector picks (LabelSelector).",
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.clusterSelector.selectorType"
    ),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.memberCount"),
    printcolumn(
        name = "Empty",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ClusterSetEmpty\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterSetSpec {
    /// Which clusters are members.
    #[serde(default)]
    pub cluster_selector: ManagedClusterSelector,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterSelector {
    /// `ExclusiveClusterSetLabel` (members carry the label cluster.atoll.io/clusterset=<set>)
    /// or `LabelSelector` (members match `labelSelector`).
    #[serde(default)]
    pub selector_type: SelectorType,
    /// With `LabelSelector`: `{}` selects every cluster, none given selects none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SelectorType {
    #[default]
    ExclusiveClusterSetLabel,
    LabelSelector,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterSetStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many clusters are members now.
    #[serde(default)]
    pub member_count: i32,
}

impl ManagedClusterSet {
    /// Whether a cluster with `labels` is a member. A `LabelSelector` set without a selector,
    /// or with one that cannot be parsed, has no members (as OCM's `BuildClusterSelector`).
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        set_selects(name, &self.spec.cluster_selector, labels)
    }
}

/// Whether set `name` with `selector` selects a cluster with `labels`.
pub fn set_selects(
    name: &str,
    selector: &ManagedClusterSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    match selector.selector_type {
        SelectorType::ExclusiveClusterSetLabel => {
            labels.get(CLUSTERSET_LABEL).map(String::as_str) == Some(name)
        }
        SelectorType::LabelSelector => selector
            .label_selector
            .as_ref()
            .is_some_and(|s| crate::selector::matches(s, labels).unwrap_or(false)),
    }
}

/// The spec the hub keeps for built-in set `name` (`default` or `global`), if it is one.
pub fn builtin_set_spec(name: &str) -> Option<ManagedClusterSetSpec> {
    match name {
        DEFAULT_SET => Some(ManagedClusterSetSpec {
            cluster_selector: ManagedClusterSelector {
                selector_type: SelectorType::ExclusiveClusterSetLabel,
                label_selector: None,
            },
        }),
        GLOBAL_SET => Some(ManagedClusterSetSpec {
            cluster_selector: ManagedClusterSelector {
                selector_type: SelectorType::LabelSelector,
                label_selector: Some(LabelSelector::default()),
            },
        }),
        _ => None,
    }
}

/// Makes a set usable in the binding's namespace. Its name must be the set's name.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cluster.atoll.io",
    version = "v1alpha1",
    kind = "ManagedClusterSetBinding",
    plural = "managedclustersetbindings",
    shortname = "mclsetbinding",
    shortname = "mclsetbindings",
    category = "atoll",
    namespaced,
    status = "ManagedClusterSetBindingStatus",
    crates(kube_core = "::kube_core"),
    doc = "Binds a ManagedClusterSet to this namespace, so Placements here may pick its clusters. Named as the set; creating one needs `create` on `managedclustersets/bind`.",
    printcolumn(name = "ClusterSet", type_ = "string", json_path = ".spec.clusterSet"),
    printcolumn(
        name = "Bound",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Bound\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterSetBindingSpec {
    /// The set, which must also be the binding's name.
    #[schemars(length(min = 1))]
    pub cluster_set: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterSetBindingStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn membership_follows_the_selector_type() {
        let exclusive = ManagedClusterSelector::default();
        let in_prod = labels(&[(CLUSTERSET_LABEL, "prod"), ("env", "prod")]);
        let unlabelled = labels(&[("env", "dev")]);
        assert!(set_selects("prod", &exclusive, &in_prod));
        assert!(!set_selects("dev", &exclusive, &in_prod));
        assert!(!set_selects("prod", &exclusive, &unlabelled));

        let everything = builtin_set_spec(GLOBAL_SET).unwrap().cluster_selector;
        assert!(set_selects("global", &everything, &in_prod));
        assert!(set_selects("global", &everything, &BTreeMap::new()));

        let none = ManagedClusterSelector {
            selector_type: SelectorType::LabelSelector,
            label_selector: None,
        };
        assert!(!set_selects("x", &none, &in_prod));

        let env = ManagedClusterSelector {
            selector_type: SelectorType::LabelSelector,
            label_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: Some(vec!["prod".into(), "staging".into()]),
                }]),
                ..Default::default()
            }),
        };
        assert!(set_selects("x", &env, &in_prod));
        assert!(!set_selects("x", &env, &unlabelled));

        let broken = ManagedClusterSelector {
            selector_type: SelectorType::LabelSelector,
            label_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "Near".into(),
                    values: None,
                }]),
                ..Default::default()
            }),
        };
        assert!(
            !set_selects("x", &broken, &in_prod),
            "a selector that cannot be parsed selects nothing"
        );
    }
}
