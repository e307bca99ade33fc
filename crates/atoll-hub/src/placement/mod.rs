//! Placements: which clusters each one picks, written into its PlacementDecisions and status,
//! and kept current as clusters, sets, bindings and the placement itself change (the
//! scheduling itself is the pure [`schedule`] module).
//!
//! # Guarantees
//! - At least one PlacementDecision per placement, named `<placement>-decision-<k>` (k from 1),
//!   each of at most 100 clusters, labelled with the placement and decision group, owned by
//!   the placement (so it goes with it); a deleted or edited one is put back.
//! - A misconfigured placement keeps its last decisions (OCM empties them: a typo would
//!   withdraw a workload from every cluster) and says what is wrong in
//!   `PlacementMisconfigured`.
//! - Only the placement's own writes are skipped when they come back from the watch; anything
//!   else that changes a decision object schedules the placement again.

pub mod cel;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use atoll_api::cluster::{Condition, set_condition};
use atoll_api::placement::{
    CONDITION_MISCONFIGURED, CONDITION_SATISFIED, ClusterDecision, DECISION_GROUP_INDEX_LABEL,
    DECISION_GROUP_NAME_LABEL, DecisionGroupStatus, MAX_DECISIONS_PER_OBJECT, PLACEMENT_LABEL,
    Placement, PlacementDecision, PlacementDecisionStatus, PlacementStatus,
    SCHEDULING_DISABLE_ANNOTATION, decision_name,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::index::Key;
use crate::{Error, Hub, now_rfc3339};

/// What a placement's PlacementDecisions should be: name, group index and name, clusters.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredDecision {
    pub name: String,
    pub group_index: usize,
    pub group_name: String,
    pub clusters: Vec<String>,
}

/// Split decision groups into PlacementDecisions of at most 100 clusters, numbered from 1
/// across groups; a group with no cluster still gets one (empty) object.
pub fn desired_decisions(placement: &str, groups: &[schedule::Group]) -> Vec<DesiredDecision> {
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let mut chunks: Vec<&[String]> = g.clusters.chunks(MAX_DECISIONS_PER_OBJECT).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            out.push(DesiredDecision {
                name: decision_name(placement, out.len() + 1),
                group_index: i,
                group_name: g.name.clone(),
                clusters: chunk.to_vec(),
            });
        }
    }
    out
}

fn decision_labels(placement: &str, d: &DesiredDecision) -> BTreeMap<String, String> {
    [
        (PLACEMENT_LABEL.to_string(), placement.to_string()),
        (DECISION_GROUP_NAME_LABEL.to_string(), d.group_name.clone()),
        (
            DECISION_GROUP_INDEX_LABEL.to_string(),
            d.group_index.to_string(),
        ),
    ]
    .into()
}

fn clusters_of(pd: &PlacementDecision) -> Vec<String> {
    pd.status
        .as_ref()
        .map(|s| s.decisions.iter().map(|d| d.cluster_name.clone()).collect())
        .unwrap_or_default()
}

fn cond(type_: &str, status: &str, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: now_rfc3339(),
    }
}

/// Schedule one placement and write what it decided.
pub async fn reconcile(hub: Arc<Hub>, key: Key) -> Result<Option<Duration>, Error> {
    let (ns, name) = &key;
    // Everything the scheduler needs, copied out of the index (the lock is not held across
    // the scheduling or the writes).
    let snapshot = {
        let ix = hub.index.lock();
        let Some(p) = ix.placements.get(&key).cloned() else {
            return Ok(None);
        };
        if p.metadata.deletion_timestamp.is_some()
            || p.annotations()
                .get(SCHEDULING_DISABLE_ANNOTATION)
                .is_some_and(|v| v == "true")
        {
            return Ok(None);
        }
        let bound = ix.bound_sets(ns);
        let eligible = schedule::eligible_sets(&p.spec, &bound);
        let candidates = ix.members(&eligible);
        let current = ix.decided.get(&key).cloned().unwrap_or_default();
        let refs: Vec<&schedule::Cluster> = candidates.iter().map(|c| c.as_ref()).collect();
        let (others, max_others) = schedule::others_of(&refs, &ix.counts, &current);
        let existing = ix.decisions_of(&key);
        Snapshot {
            placement: p,
            bindings: bound.len(),
            eligible,
            candidates,
            current,
            others,
            max_others,
            existing,
        }
    };
    let refs: Vec<&schedule::Cluster> = snapshot.candidates.iter().map(|c| c.as_ref()).collect();
    let outcome = schedule::schedule(
        &snapshot.placement.spec,
        &refs,
        &schedule::Context {
            current: &snapshot.current,
            others: &snapshot.others,
            max_others: snapshot.max_others,
            now: k8s_openapi::jiff::Timestamp::now(),
            cel: &hub.cel,
            explain: false,
        },
    );
    let p = &snapshot.placement;
    let mut conditions = p
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let (desired, selected, requeue) = match &outcome {
        Ok(o) => {
            hub.index.lock().bounds.insert(key.clone(), o.bounds);
            set_condition(
                &mut conditions,
                cond(
                    CONDITION_MISCONFIGURED,
                    "False",
                    "Succeedconfigured",
                    "Placement configurations check pass".into(),
                ),
            );
            let (status, reason, message) = schedule::satisfied(
                &p.spec,
                &snapshot.eligible,
                snapshot.bindings,
                snapshot.candidates.len(),
                o.decisions.len(),
                o.unscheduled,
            );
            set_condition(
                &mut conditions,
                cond(CONDITION_SATISFIED, status, reason, message),
            );
            (
                desired_decisions(name, &o.groups),
                o.decisions.len(),
                o.requeue_after,
            )
        }
        Err(m) => {
            set_condition(
                &mut conditions,
                cond(
                    CONDITION_MISCONFIGURED,
                    "True",
                    "Misconfigured",
                    m.to_string(),
                ),
            );
            set_condition(
                &mut conditions,
                cond(
                    CONDITION_SATISFIED,
                    "False",
                    "NotAllDecisionsScheduled",
                    "the placement is misconfigured (see PlacementMisconfigured); its previous decisions are kept until it is fixed".into(),
                ),
            );
            // Keep what exists; a placement that never had a decision gets its empty one.
            let kept: Vec<DesiredDecision> = snapshot
                .existing
                .iter()
                .map(|pd| DesiredDecision {
                    name: pd.name_any(),
                    group_index: pd
                        .labels()
                        .get(DECISION_GROUP_INDEX_LABEL)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    group_name: pd
                        .labels()
                        .get(DECISION_GROUP_NAME_LABEL)
                        .cloned()
                        .unwrap_or_default(),
                    clusters: clusters_of(pd),
                })
                .collect();
            let kept = if kept.is_empty() {
                desired_decisions(name, &[schedule::Group::default()])
            } else {
                kept
            };
            (kept, snapshot.current.len(), None)
        }
    };
    write_decisions(&hub, p, &desired, &snapshot.existing).await?;
    let decided: BTreeSet<String> = desired
        .iter()
        .flat_map(|d| d.clusters.iter().cloned())
        .collect();
    if decided != snapshot.current {
        let added: Vec<&String> = decided.difference(&snapshot.current).collect();
        let removed: Vec<&String> = snapshot.current.difference(&decided).collect();
        let mut message = format!(
            "{} cluster(s) decided; added {:?}, removed {:?}",
            decided.len(),
            added,
            removed
        );
        message.truncate(1000);
        atoll_runtime::record_event(
            &hub.client,
            p.as_ref(),
            "Normal",
            "DecisionUpdate",
            &message,
            "atoll-hub",
        )
        .await;
    }
    let moved = decided != snapshot.current;
    hub.index.lock().set_decided(&key, decided);
    if moved {
        hub.decisions_moved(&key);
    }

    // Status: how many, the groups, the conditions.
    let mut groups: Vec<DecisionGroupStatus> = Vec::new();
    for d in &desired {
        match groups
            .iter_mut()
            .find(|g| g.decision_group_index as usize == d.group_index)
        {
            Some(g) => {
                g.decisions.push(d.name.clone());
                g.clusters_count += d.clusters.len() as i32;
            }
            None => groups.push(DecisionGroupStatus {
                decision_group_index: d.group_index as i32,
                decision_group_name: d.group_name.clone(),
                decisions: vec![d.name.clone()],
                clusters_count: d.clusters.len() as i32,
            }),
        }
    }
    let status = PlacementStatus {
        number_of_selected_clusters: selected as i32,
        decision_groups: groups,
        conditions,
    };
    if p.status.as_ref() != Some(&status) {
        let api: Api<Placement> = Api::namespaced(hub.client.clone(), ns);
        match api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            Ok(updated) => hub.index.lock().upsert_placement(Arc::new(updated)),
            // Deleted meanwhile: nothing to say.
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    // Half a second late rather than early, so the toleration has surely run out.
    Ok(requeue.map(|d| d + Duration::from_millis(500)))
}

struct Snapshot {
    placement: Arc<Placement>,
    bindings: usize,
    eligible: Vec<String>,
    candidates: Vec<Arc<schedule::Cluster>>,
    current: BTreeSet<String>,
    others: Vec<u32>,
    max_others: u32,
    existing: Vec<Arc<PlacementDecision>>,
}

/// Make the placement's PlacementDecisions `desired`: create missing ones, fix labels and
/// decisions that differ, delete the rest.
async fn write_decisions(
    hub: &Hub,
    p: &Placement,
    desired: &[DesiredDecision],
    existing: &[Arc<PlacementDecision>],
) -> Result<(), Error> {
    let ns = p.namespace().unwrap_or_default();
    let placement = p.name_any();
    let api: Api<PlacementDecision> = Api::namespaced(hub.client.clone(), &ns);
    let by_name: BTreeMap<String, &Arc<PlacementDecision>> =
        existing.iter().map(|pd| (pd.name_any(), pd)).collect();
    for d in desired {
        let labels = decision_labels(&placement, d);
        let mut current: Option<PlacementDecision> = by_name.get(&d.name).map(|pd| (***pd).clone());
        if current.is_none() {
            let owner = p
                .controller_owner_ref(&())
                .ok_or_else(|| Error::Invalid(format!("placement {ns}/{placement} has no uid")))?;
            let mut pd = PlacementDecision::new(&d.name, Default::default());
            pd.metadata.namespace = Some(ns.clone());
            pd.metadata.labels = Some(labels.clone());
            pd.metadata.owner_references = Some(vec![owner]);
            current = Some(match api.create(&PostParams::default(), &pd).await {
                Ok(created) => created,
                Err(kube::Error::Api(e)) if e.code == 409 => api.get(&d.name).await?,
                // The namespace is going away with the placement.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => return Ok(()),
                Err(e) => return Err(e.into()),
            });
        }
        let Some(mut pd) = current else { continue };
        if !labels.iter().all(|(k, v)| pd.labels().get(k) == Some(v)) {
            pd = api
                .patch(
                    &d.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": labels}})),
                )
                .await?;
        }
        if clusters_of(&pd) != d.clusters {
            let status = PlacementDecisionStatus {
                decisions: d
                    .clusters
                    .iter()
                    .map(|c| ClusterDecision {
                        cluster_name: c.clone(),
                        reason: String::new(),
                    })
                    .collect(),
            };
            pd = api
                .patch_status(
                    &d.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await?;
        }
        hub.index.lock().upsert_decision(Arc::new(pd));
    }
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    for pd in existing {
        let n = pd.name_any();
        if wanted.contains(n.as_str()) {
            continue;
        }
        match api.delete(&n, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        hub.index.lock().remove_decision(&(ns.clone(), n));
    }
    Ok(())
}

/// Whether a change of cluster `old` -> `new` (either may be absent: added, deleted) can change
/// what placement `key` decides: it holds the cluster; or the cluster is feasible for it now
/// (it might be picked); or it was feasible before and the placement ranks by something it
/// took part in unpicked (the least or most allocatable resources, spread topologies).
/// Anything else cannot move its decisions, so a change to one cluster reschedules a few
/// placements, not every placement of its sets.
pub fn touched_by(
    ix: &crate::index::Index,
    key: &Key,
    bound: &BTreeSet<String>,
    old: Option<&schedule::Cluster>,
    new: Option<&schedule::Cluster>,
    cel: &cel::Cache,
) -> bool {
    let Some(p) = ix.placements.get(key) else {
        return false;
    };
    let Some(name) = new.or(old).map(|c| c.name.as_str()) else {
        return false;
    };
    if ix.decided.get(key).is_some_and(|d| d.contains(name)) {
        return true;
    }
    let eligible = schedule::eligible_sets(&p.spec, bound);
    let now = k8s_openapi::jiff::Timestamp::now();
    let feasible = |c: Option<&schedule::Cluster>| {
        c.is_some_and(|c| {
            eligible
                .iter()
                .any(|s| ix.sets.get(s).is_some_and(|set| set.selects(&c.labels)))
                && schedule::feasible(&p.spec, c, now, cel)
        })
    };
    if feasible(new) {
        return true;
    }
    match old {
        Some(o) if feasible(old) => schedule::depends_on_unpicked(&p.spec, o, ix.bounds.get(key)),
        _ => false,
    }
}

/// A placement as the CLI shows why it picked what it picked (`atoll placement explain`):
/// `current` are its decisions (none for a dry run).
pub fn explain(
    spec: &atoll_api::placement::PlacementSpec,
    ix: &crate::index::Index,
    namespace: &str,
    current: &BTreeSet<String>,
    cel: &cel::Cache,
) -> serde_json::Value {
    let bound = ix.bound_sets(namespace);
    let eligible = schedule::eligible_sets(spec, &bound);
    let candidates = ix.members(&eligible);
    let refs: Vec<&schedule::Cluster> = candidates.iter().map(|c| c.as_ref()).collect();
    let (others, max_others) = schedule::others_of(&refs, &ix.counts, current);
    let outcome = schedule::schedule(
        spec,
        &refs,
        &schedule::Context {
            current,
            others: &others,
            max_others,
            now: k8s_openapi::jiff::Timestamp::now(),
            cel,
            explain: true,
        },
    );
    let clusters: Vec<serde_json::Value> = candidates
        .iter()
        .map(|c| {
            json!({"name": c.name, "sets": ix.sets_of(&c.labels).into_iter().filter(|s| eligible.contains(s)).collect::<Vec<_>>(), "terminating": c.terminating})
        })
        .collect();
    match outcome {
        Err(m) => json!({
            "boundSets": bound, "eligibleSets": eligible, "clusters": clusters,
            "misconfigured": m.to_string(),
        }),
        Ok(o) => {
            let (status, reason, message) = schedule::satisfied(
                spec,
                &eligible,
                bound.len(),
                candidates.len(),
                o.decisions.len(),
                o.unscheduled,
            );
            json!({
                "boundSets": bound, "eligibleSets": eligible, "clusters": clusters,
                "filtered": o.filtered.iter().map(|f| json!({"cluster": f.cluster, "filter": f.filter, "reason": f.reason})).collect::<Vec<_>>(),
                "prioritizers": o.prioritizers.iter().map(|p| json!({"name": p.name, "weight": p.weight, "scores": p.scores})).collect::<Vec<_>>(),
                "total": o.total,
                "feasible": o.feasible,
                "decisions": o.decisions,
                "spreadRefused": o.spread_refused,
                "groups": o.groups.iter().map(|g| json!({"name": g.name, "clusters": g.clusters})).collect::<Vec<_>>(),
                "satisfied": {"status": status, "reason": reason, "message": message},
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_split_by_100_and_numbered_across_groups() {
        let many: Vec<String> = (0..250).map(|i| format!("c{i:03}")).collect();
        let groups = vec![
            schedule::Group {
                name: "canary".into(),
                clusters: many[..2].to_vec(),
            },
            schedule::Group {
                name: String::new(),
                clusters: many[2..].to_vec(),
            },
        ];
        let d = desired_decisions("web", &groups);
        let shape: Vec<(String, usize, usize)> = d
            .iter()
            .map(|d| (d.name.clone(), d.group_index, d.clusters.len()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("web-decision-1".into(), 0, 2),
                ("web-decision-2".into(), 1, 100),
                ("web-decision-3".into(), 1, 100),
                ("web-decision-4".into(), 1, 48),
            ]
        );
        // 101 clusters give two objects; none still one.
        let g = |n: usize| {
            vec![schedule::Group {
                name: String::new(),
                clusters: many[..n].to_vec(),
            }]
        };
        assert_eq!(desired_decisions("p", &g(101)).len(), 2);
        let empty = desired_decisions("p", &g(0));
        assert_eq!(empty.len(), 1);
        assert!(empty[0].clusters.is_empty());
        assert_eq!(empty[0].name, "p-decision-1");
    }
}
