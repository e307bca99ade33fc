//! ClusterProfiles (`multicluster.x-k8s.io/v1alpha1`, KEP-4322): one per cluster in every
//! namespace where a binding makes that cluster usable, so a workspace's users see their
//! clusters with a namespaced `kubectl get clusterprofiles`, and inventory readers (Argo CD,
//! MultiKueue) find them. Open Cluster Management writes the same (its `ClusterProfile`
//! feature); its users cannot list their clusters otherwise, ManagedClusters being
//! cluster-scoped.
//!
//! Status: `ControlPlaneHealthy` from `ManagedClusterConditionAvailable`, `Joined` from
//! `ManagedClusterJoined`, the Kubernetes version, and the cluster's claims as properties.
//! Profiles the hub no longer wants (the cluster left the set, the binding went) are deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use atoll_api::cluster::{CONDITION_AVAILABLE, CONDITION_JOINED, ManagedCluster};
use atoll_api::profile::{
    CLUSTER_MANAGER, CLUSTER_MANAGER_LABEL, CONDITION_CONTROL_PLANE_HEALTHY,
    CONDITION_PROFILE_JOINED, ClusterManager, ClusterProfile, ClusterProfileSpec,
    ClusterProfileStatus, ClusterProfileVersion, PROFILE_CLUSTERSET_LABEL, Property,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::index::{Index, Key};
use crate::{Error, Hub};

/// What the profile of cluster `mc` in a namespace binding `sets` should say.
pub fn desired(
    mc: &ManagedCluster,
    sets: &[String],
    old: Option<&ClusterProfile>,
) -> (
    BTreeMap<String, String>,
    ClusterProfileSpec,
    ClusterProfileStatus,
) {
    let name = mc.name_any();
    let mut labels: BTreeMap<String, String> = [(
        CLUSTER_MANAGER_LABEL.to_string(),
        CLUSTER_MANAGER.to_string(),
    )]
    .into();
    if let Some(s) = sets.first() {
        labels.insert(PROFILE_CLUSTERSET_LABEL.to_string(), s.clone());
    }
    let spec = ClusterProfileSpec {
        display_name: Some(name),
        cluster_manager: ClusterManager {
            name: CLUSTER_MANAGER.into(),
        },
    };
    let old_conditions = old
        .and_then(|p| p.status.as_ref())
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let from = |profile_type: &str, cluster_type: &str, missing_reason: &str| {
        let (status, reason, message) = match mc.condition(cluster_type) {
            Some(c) => (
                c.status.clone(),
                if c.reason.is_empty() {
                    missing_reason.to_string()
                } else {
                    c.reason.clone()
                },
                c.message.clone(),
            ),
            None => (
                "Unknown".to_string(),
                missing_reason.to_string(),
                format!("the ManagedCluster has no {cluster_type} condition yet"),
            ),
        };
        let since = old_conditions
            .iter()
            .find(|c| c.type_ == profile_type && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(atoll_runtime::now);
        Condition {
            type_: profile_type.into(),
            status,
            reason,
            message,
            last_transition_time: since,
            observed_generation: None,
        }
    };
    let status = mc.status.clone().unwrap_or_default();
    let observed = old
        .and_then(|p| p.status.as_ref())
        .map(|s| s.properties.clone())
        .unwrap_or_default();
    let properties = status
        .cluster_claims
        .iter()
        .filter(|c| (1..=253).contains(&c.name.len()) && (1..=1024).contains(&c.value.len()))
        .map(|c| {
            // The time a property was last seen to change, kept while its value stays.
            let seen = observed
                .iter()
                .find(|p| p.name == c.name && p.value == c.value)
                .and_then(|p| p.last_observed_time.clone())
                .unwrap_or_else(atoll_runtime::now);
            Property {
                name: c.name.clone(),
                value: c.value.clone(),
                last_observed_time: Some(seen),
            }
        })
        .collect();
    let status = ClusterProfileStatus {
        conditions: vec![
            from(
                CONDITION_CONTROL_PLANE_HEALTHY,
                CONDITION_AVAILABLE,
                "ManagedClusterAvailabilityUnknown",
            ),
            from(
                CONDITION_PROFILE_JOINED,
                CONDITION_JOINED,
                "ManagedClusterNotJoined",
            ),
        ],
        version: status.version.map(|v| ClusterProfileVersion {
            kubernetes: (!v.kubernetes.is_empty()).then_some(v.kubernetes),
        }),
        properties,
        access_providers: old
            .and_then(|p| p.status.as_ref())
            .map(|s| s.access_providers.clone())
            .unwrap_or_default(),
        credential_providers: Vec::new(),
    };
    (labels, spec, status)
}

/// The sets bound to `ns` that hold cluster `c` (sorted), empty if it is not usable there.
fn usable_through(ix: &Index, ns: &str, c: &str) -> Vec<String> {
    let Some(cluster) = ix.clusters.get(c) else {
        return Vec::new();
    };
    if cluster.terminating {
        return Vec::new();
    }
    ix.bound_sets(ns)
        .into_iter()
        .filter(|s| {
            ix.sets
                .get(s)
                .is_some_and(|set| set.selects(&cluster.labels))
        })
        .collect()
}

/// A cluster, its object, the sets it is usable through, and its current profile.
type ProfileWork = (
    String,
    Option<Arc<ManagedCluster>>,
    Vec<String>,
    Option<Arc<ClusterProfile>>,
);

/// Reconcile the profiles of `(namespace, cluster)`, or of the whole namespace when the
/// cluster is empty.
pub async fn reconcile(hub: Arc<Hub>, key: Key) -> Result<Option<Duration>, Error> {
    let (ns, cluster) = &key;
    let work: Vec<ProfileWork> = {
        let ix = hub.index.lock();
        let names: Vec<String> = if cluster.is_empty() {
            let mut v: Vec<String> = ix.clusters.keys().cloned().collect();
            v.extend(
                ix.profiles
                    .keys()
                    .filter(|(pns, _)| pns == ns)
                    .map(|(_, n)| n.clone()),
            );
            v.sort();
            v.dedup();
            v
        } else {
            vec![cluster.clone()]
        };
        names
            .into_iter()
            .map(|n| {
                let sets = usable_through(&ix, ns, &n);
                let mc = ix.managed.get(&n).cloned();
                let profile = ix.profiles.get(&(ns.clone(), n.clone())).cloned();
                (n, mc, sets, profile)
            })
            .filter(|(_, _, sets, profile)| !sets.is_empty() || profile.is_some())
            .collect()
    };
    let api: Api<ClusterProfile> = Api::namespaced(hub.client.clone(), ns);
    for (name, mc, sets, profile) in work {
        let (Some(mc), false) = (mc, sets.is_empty()) else {
            // Not usable here (any more): the hub's own profile goes.
            if profile.is_some_and(|p| crate::changes::managed_by_atoll(p.as_ref())) {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                hub.index.lock().profiles.remove(&(ns.clone(), name));
            }
            continue;
        };
        let (labels, spec, status) = desired(&mc, &sets, profile.as_deref());
        let mut current = match profile {
            Some(p) => (*p).clone(),
            None => {
                let mut p = ClusterProfile::new(&name, spec.clone());
                p.metadata.namespace = Some(ns.clone());
                p.metadata.labels = Some(labels.clone());
                match api.create(&PostParams::default(), &p).await {
                    Ok(created) => created,
                    Err(kube::Error::Api(e)) if e.code == 409 => api.get(&name).await?,
                    // The namespace is going away.
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => {
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if current.metadata.labels.as_ref() != Some(&labels) || current.spec != spec {
            current = api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": labels}, "spec": {"displayName": spec.display_name}})),
                )
                .await?;
        }
        if !same_status(current.status.as_ref(), &status) {
            current = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await?;
        }
        hub.index
            .lock()
            .profiles
            .insert((ns.clone(), name), Arc::new(current));
    }
    Ok(None)
}

/// Equal but for the times the server rounds (RFC 3339 to the second).
fn same_status(old: Option<&ClusterProfileStatus>, new: &ClusterProfileStatus) -> bool {
    let Some(old) = old else { return false };
    let strip = |s: &ClusterProfileStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        for p in &mut s.properties {
            p.last_observed_time = None;
        }
        s
    };
    strip(old) == strip(new)
}
