//! DaemonSet: one pod from the template on every node that wants it (the template's
//! `nodeSelector`, required node affinity and tolerations decide), none elsewhere. Pods are
//! pinned to their node with required node affinity on `metadata.name` and placed by the
//! scheduler, as kube-controller-manager does. A template change rolls out node by node, at
//! most `maxUnavailable` at a time; the template's hash labels the pods of each version.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::json;

use super::update_status;
use super::{Ctx, Key, create_pods, delete_pods, live, pod_of, pods_controlled_by};
use crate::Error;
use crate::util::pod_ready;

/// The label with the template's hash, as Kubernetes names it.
const HASH_LABEL: &str = "controller-revision-hash";

/// Tolerations every daemon pod gets, so that it stays on a node in trouble (and goes to one
/// marked unschedulable), as Kubernetes adds them.
fn daemon_tolerations() -> Vec<Toleration> {
    [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
    .iter()
    .map(|(key, effect)| Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".into()),
        effect: Some(effect.to_string()),
        ..Default::default()
    })
    .collect()
}

fn template_hash(ds: &DaemonSet) -> String {
    super::template_hash(&ds.spec.as_ref().map(|s| &s.template))
}

/// The node a daemon pod is pinned to (by its affinity, or where it was bound).
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

pub(crate) async fn reconcile(
    ctx: Arc<Ctx>,
    (namespace, name): Key,
) -> Result<Option<Duration>, Error> {
    let Some(ds) = live(&ctx.caches.daemonsets, &namespace, &name) else {
        return Ok(None);
    };
    let uid = ds.uid().unwrap_or_default();
    let hash = template_hash(&ds);
    let probe = pod_for(&ds, "", &hash);
    // A pod already on a node stays there when the node later gets a NoSchedule taint (only
    // NoExecute ones drive it away), as Kubernetes decides.
    let mut staying = probe.clone();
    if let Some(spec) = staying.spec.as_mut() {
        spec.tolerations
            .get_or_insert_with(Vec::new)
            .push(Toleration {
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            });
    }
    let nodes = ctx.caches.nodes.state();
    let nodes: Vec<_> = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .collect();
    let wanted: Vec<String> = nodes
        .iter()
        .filter(|n| crate::scheduler::placement(&probe, n).is_ok())
        .map(|n| n.name_any())
        .collect();
    let may_stay: Vec<String> = nodes
        .iter()
        .filter(|n| crate::scheduler::placement(&staying, n).is_ok())
        .map(|n| n.name_any())
        .collect();
    let live = |ctx: &Ctx| -> Vec<Arc<Pod>> {
        pods_controlled_by(ctx, &namespace, &uid)
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    };
    let pods = live(&ctx);
    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in &pods {
        by_node
            .entry(node_of(p).unwrap_or_default())
            .or_default()
            .push(p.clone());
    }
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let updated = |p: &Pod| p.labels().get(HASH_LABEL) == Some(&hash);
    let mut delete: Vec<String> = Vec::new();
    let mut create: Vec<String> = Vec::new();
    // Nodes that do not want one lose theirs; failed pods are replaced; one pod per node.
    for (node, list) in &by_node {
        if !may_stay.contains(node) {
            delete.extend(list.iter().map(|p| p.name_any()));
        }
    }
    // The nodes that keep (or get) a pod: those that want one, and those whose pod may stay.
    let wanted: Vec<String> = may_stay
        .into_iter()
        .filter(|n| wanted.contains(n) || by_node.contains_key(n))
        .collect();
    let mut old: Vec<Arc<Pod>> = Vec::new();
    for node in &wanted {
        let list = by_node.get(node).cloned().unwrap_or_default();
        let (failed, running): (Vec<_>, Vec<_>) =
            list.into_iter().partition(|p| phase(p) == "Failed");
        delete.extend(failed.iter().map(|p| p.name_any()));
        match running.as_slice() {
            [] => create.push(node.clone()),
            [one, extra @ ..] => {
                delete.extend(extra.iter().map(|p| p.name_any()));
                if !updated(one) {
                    old.push(one.clone());
                }
            }
        }
    }
    // Rolling update: old pods go while fewer than maxUnavailable are unavailable; their
    // nodes get the new version on the next pass.
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.clone());
    if strategy.as_ref().and_then(|s| s.type_.as_deref()) != Some("OnDelete") {
        let max_unavailable = match strategy
            .and_then(|s| s.rolling_update)
            .and_then(|r| r.max_unavailable)
        {
            Some(IntOrString::Int(n)) => n.max(1) as usize,
            Some(IntOrString::String(p)) => {
                let pct: f64 = p.trim_end_matches('%').parse().unwrap_or(0.0);
                ((wanted.len() as f64 * pct / 100.0).floor() as usize).max(1)
            }
            None => 1,
        };
        let unavailable = create.len()
            + wanted
                .iter()
                .filter_map(|n| by_node.get(n))
                .flatten()
                .filter(|p| phase(p) != "Failed" && !pod_ready(p))
                .count();
        // Not-ready old pods first: replacing them costs nothing.
        old.sort_by_key(|p| pod_ready(p));
        let mut room = max_unavailable.saturating_sub(unavailable);
        for p in old {
            if !pod_ready(&p) {
                delete.push(p.name_any());
            } else if room > 0 {
                room -= 1;
                delete.push(p.name_any());
            }
        }
    }
    let owner = format!("DaemonSet {namespace}/{name}");
    let new_pods = create
        .iter()
        .map(|node| pod_for(&ds, node, &hash))
        .collect();
    create_pods(&ctx, &namespace, new_pods, &owner).await;
    delete_pods(&ctx, &namespace, &delete, &owner).await;
    // Status from what the cache now shows.
    let pods = live(&ctx);
    let on_wanted: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| node_of(p).is_some_and(|n| wanted.contains(&n)))
        .collect();
    let current = on_wanted
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count();
    let ready = on_wanted.iter().filter(|p| pod_ready(p)).count();
    let up_to_date = on_wanted.iter().filter(|p| updated(p)).count();
    let available_updated = on_wanted
        .iter()
        .filter(|p| updated(p) && pod_ready(p))
        .count();
    let misscheduled = pods.len() - on_wanted.len();
    let status = json!({
        "desiredNumberScheduled": wanted.len(),
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "updatedNumberScheduled": up_to_date,
        "numberAvailable": ready,
        "numberUnavailable": wanted.len().saturating_sub(ready),
        "observedGeneration": ds.metadata.generation,
    });
    let old_status = ds.status.as_ref().map(|s| {
        json!({
            "desiredNumberScheduled": s.desired_number_scheduled,
            "currentNumberScheduled": s.current_number_scheduled,
            "numberMisscheduled": s.number_misscheduled,
            "numberReady": s.number_ready,
            "updatedNumberScheduled": s.updated_number_scheduled.unwrap_or(0),
            "numberAvailable": s.number_available.unwrap_or(0),
            "numberUnavailable": s.number_unavailable.unwrap_or(0),
            "observedGeneration": s.observed_generation,
        })
    });
    let shown = old_status.unwrap_or_default();
    update_status::<DaemonSet>(&ctx, &namespace, &name, &status, &shown).await?;
    // A rollout in progress goes on as pods become ready (their events bring us back); a
    // pass a little later catches the rest.
    let rolling = up_to_date < wanted.len() || available_updated < wanted.len();
    Ok(rolling.then_some(Duration::from_secs(1)))
}

/// The daemon pod for `node` (none yet: the template as it would be placed, for the check of
/// which nodes want one).
fn pod_for(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let mut pod = pod_of(ds, ds.spec.as_ref().map(|s| s.template.clone()));
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .extend(daemon_tolerations());
    if !node.is_empty() {
        let term = NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
            ..Default::default()
        };
        // Which nodes want the pod was decided with the template's own terms: the pod is
        // pinned to its node alone.
        let affinity = spec.affinity.get_or_insert_with(Affinity::default);
        affinity
            .node_affinity
            .get_or_insert_with(Default::default)
            .required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: vec![term],
        });
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_pods_are_pinned_to_their_node_and_labelled_with_the_template() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "ns", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}],
                         "tolerations": [{"key": "own", "operator": "Exists"}]}}}
        }))
        .expect("a DaemonSet");
        let hash = template_hash(&ds);
        let pod = pod_for(&ds, "node-7", &hash);
        assert_eq!(node_of(&pod).as_deref(), Some("node-7"));
        assert_eq!(pod.labels().get(HASH_LABEL), Some(&hash));
        assert_eq!(pod.labels().get("app").map(String::as_str), Some("agent"));
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        assert_eq!(tolerations.len(), 7, "its own and the daemon ones");
        // Another template, another hash; the same template, the same.
        let mut changed = ds.clone();
        if let Some(spec) = changed.spec.as_mut() {
            spec.template.metadata = None;
        }
        assert_ne!(template_hash(&changed), hash);
        assert_eq!(template_hash(&ds.clone()), hash);
    }
}
