//! ManifestWorkReplicaSets: a ManifestWork for each cluster the referenced placements decide
//! (named `<namespace>.<name>` in the cluster's namespace, labelled with the replica set and
//! placement), made from the template, rolled out as each placement's strategy says
//! ([`crate::rollout`]), removed when the cluster is no longer decided (a lost cluster's
//! replacement gets the work; the lost one's is removed when it comes back), all removed
//! with the replica set (finalizer).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use atoll_api::cluster::{Condition, cluster_namespace, set_condition};
use atoll_api::placement::{DECISION_GROUP_INDEX_LABEL, DECISION_GROUP_NAME_LABEL};
use atoll_api::work::{
    CONDITION_APPLIED, CONDITION_AVAILABLE, CONDITION_DEGRADED, CONDITION_PROGRESSING,
    ClusterRolloutStatus, ManifestWork, ManifestWorkReplicaSet, ManifestWorkReplicaSetStatus,
    ManifestWorkReplicaSetSummary, PLACEMENT_NAME_LABEL, PlacementSummary, REPLICASET_LABEL,
    RolloutStrategy, TEMPLATE_HASH_ANNOTATION,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::index::Key;
use crate::rollout::{self, Kind, State, Strategy};
use crate::{Error, Hub, now_rfc3339};

/// Finalizer on a replica set: its works go first.
pub const FINALIZER: &str = "work.atoll.io/replicaset-cleanup";
/// Annotation on a replica set's work: when its template was last written (a progress
/// deadline counts from there).
pub const APPLIED_AT_ANNOTATION: &str = "work.atoll.io/applied-at";

/// The name of replica set `ns/name`'s work in each cluster namespace.
pub fn work_name(ns: &str, name: &str) -> String {
    format!("{ns}.{name}")
}

/// The label value naming replica set `ns/name` (a hash when `<ns>.<name>` is too long for a
/// label).
pub fn label_value(ns: &str, name: &str) -> String {
    let v = work_name(ns, name);
    if v.len() <= 63 {
        v
    } else {
        atoll_work::hub_hash(&v)
    }
}

/// The hash of a template: works from another one are outdated.
pub fn template_hash(t: &atoll_api::work::ManifestWorkSpec) -> String {
    atoll_work::hub_hash(&serde_json::to_string(t).unwrap_or_default())
}

fn strategy_of(s: &RolloutStrategy) -> Result<Strategy, String> {
    let parse = |d: &Option<String>, field: &str| {
        d.as_deref()
            .map(rollout::parse_duration)
            .transpose()
            .map(Option::flatten)
            .map_err(|e| format!("{field}: {e}"))
    };
    let mandatory = |groups: &[atoll_api::work::MandatoryDecisionGroup]| {
        groups
            .iter()
            .map(|g| {
                (
                    g.group_index.map(|i| i.max(0) as usize),
                    g.group_name.clone(),
                )
            })
            .collect()
    };
    Ok(match s.type_.as_str() {
        "All" | "" => Strategy {
            kind: Kind::All,
            min_success: Duration::ZERO,
            progress_deadline: parse(
                &s.all.as_ref().and_then(|a| a.progress_deadline.clone()),
                "all.progressDeadline",
            )?,
            max_failures: None,
            max_concurrency: None,
            mandatory: Vec::new(),
        },
        "Progressive" => {
            let p = s.progressive.clone().unwrap_or_default();
            Strategy {
                kind: Kind::Progressive,
                min_success: parse(&p.min_success_time, "progressive.minSuccessTime")?
                    .unwrap_or_default(),
                progress_deadline: parse(&p.progress_deadline, "progressive.progressDeadline")?,
                max_failures: p.max_failures,
                max_concurrency: p.max_concurrency,
                mandatory: mandatory(&p.mandatory_decision_groups),
            }
        }
        "ProgressivePerGroup" => {
            let p = s.progressive_per_group.clone().unwrap_or_default();
            Strategy {
                kind: Kind::ProgressivePerGroup,
                min_success: parse(&p.min_success_time, "progressivePerGroup.minSuccessTime")?
                    .unwrap_or_default(),
                progress_deadline: parse(
                    &p.progress_deadline,
                    "progressivePerGroup.progressDeadline",
                )?,
                max_failures: p.max_failures,
                max_concurrency: None,
                mandatory: mandatory(&p.mandatory_decision_groups),
            }
        }
        other => {
            return Err(format!(
                "rolloutStrategy.type {other:?} must be All, Progressive or ProgressivePerGroup"
            ));
        }
    })
}

fn work_condition<'a>(
    w: &'a ManifestWork,
    t: &str,
) -> Option<&'a atoll_api::work::ObservedCondition> {
    w.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
}

/// Where a cluster's rollout is, from its work.
pub fn state_of(w: Option<&ManifestWork>, hash: &str, deadline: Option<Duration>) -> State {
    let Some(w) = w else {
        return State::ToApply;
    };
    if w.annotations()
        .get(TEMPLATE_HASH_ANNOTATION)
        .map(String::as_str)
        != Some(hash)
        || w.metadata.deletion_timestamp.is_some()
    {
        return State::ToApply;
    }
    let generation = w.metadata.generation.unwrap_or(0);
    let seen =
        |t: &str| work_condition(w, t).filter(|c| c.observed_generation.unwrap_or(0) >= generation);
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let since = |c: &atoll_api::work::ObservedCondition| {
        c.last_transition_time
            .parse::<k8s_openapi::jiff::Timestamp>()
            .map(|t| now - t.as_second())
            .unwrap_or(0)
    };
    let started = w
        .annotations()
        .get(APPLIED_AT_ANNOTATION)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| now - t.as_second())
        .unwrap_or(0);
    let timed_out = deadline.is_some_and(|d| started as u64 > d.as_secs());
    match (seen(CONDITION_APPLIED), seen(CONDITION_PROGRESSING)) {
        (Some(a), _) if a.status == "False" => {
            if timed_out {
                State::TimeOut
            } else {
                State::Failed(a.message.clone())
            }
        }
        (Some(a), Some(p)) if a.status == "True" => {
            if seen(CONDITION_DEGRADED).is_some_and(|d| d.status == "True") {
                let why = seen(CONDITION_DEGRADED)
                    .map(|d| d.message.clone())
                    .unwrap_or_default();
                return State::Failed(why);
            }
            if p.status == "False" {
                State::Succeeded(since(p))
            } else if timed_out {
                State::TimeOut
            } else {
                State::Progressing
            }
        }
        _ if timed_out => State::TimeOut,
        _ => State::Applying,
    }
}

fn cond(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: now_rfc3339(),
    }
}

/// Make the works of replica set `key` what its placements and strategy say.
pub async fn reconcile(hub: Arc<Hub>, key: Key) -> Result<Option<Duration>, Error> {
    let (ns, name) = &key;
    let (rs, works, decisions) = {
        let ix = hub.index.lock();
        let Some(rs) = ix.replicasets.get(&key).cloned() else {
            return Ok(None);
        };
        let works: BTreeMap<String, Arc<ManifestWork>> =
            ix.replicaset_works.get(&key).cloned().unwrap_or_default();
        // Per placement: its clusters with their group (index, name), or None if missing.
        let decisions: Vec<Option<Vec<(String, usize, String)>>> = rs
            .spec
            .placement_refs
            .iter()
            .map(|r| {
                let pk = (ns.clone(), r.name.clone());
                ix.placements.get(&pk)?;
                let mut out = Vec::new();
                for pd in ix.decisions_of(&pk) {
                    let group = pd
                        .labels()
                        .get(DECISION_GROUP_INDEX_LABEL)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let group_name = pd
                        .labels()
                        .get(DECISION_GROUP_NAME_LABEL)
                        .cloned()
                        .unwrap_or_default();
                    for d in pd.status.iter().flat_map(|s| s.decisions.iter()) {
                        out.push((d.cluster_name.clone(), group, group_name.clone()));
                    }
                }
                out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
                Some(out)
            })
            .collect();
        (rs, works, decisions)
    };
    let rs_api: Api<ManifestWorkReplicaSet> = Api::namespaced(hub.client.clone(), ns);
    let wname = work_name(ns, name);
    if rs.metadata.deletion_timestamp.is_some() {
        for (cluster, w) in &works {
            if w.metadata.deletion_timestamp.is_none() {
                delete_work(&hub, cluster, &wname).await?;
            }
        }
        let foreground = rs.spec.cascade_deletion_policy.as_deref() == Some("Foreground");
        if foreground && !works.is_empty() {
            return Ok(Some(Duration::from_secs(1)));
        }
        let rest: Vec<&String> = rs.finalizers().iter().filter(|f| *f != FINALIZER).collect();
        match rs_api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": rest, "resourceVersion": rs.resource_version()}})),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(None);
    }
    if !rs.finalizers().iter().any(|f| f == FINALIZER) {
        let mut all = rs.finalizers().to_vec();
        all.push(FINALIZER.into());
        rs_api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": all, "resourceVersion": rs.resource_version()}})),
            )
            .await?;
        return Ok(None);
    }

    let hash = template_hash(&rs.spec.manifest_work_template);
    let mut conditions = rs
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut summaries = Vec::new();
    let mut wanted: HashMap<String, String> = HashMap::new(); // cluster -> placement
    let mut verified: Result<(), (&str, String)> = Ok(());
    let mut rolled: Result<bool, String> = Ok(true);
    let mut requeue: Option<Duration> = None;
    for (r, decided) in rs.spec.placement_refs.iter().zip(&decisions) {
        let Some(decided) = decided else {
            verified = Err((
                "PlacementDecisionNotFound",
                format!("placement {} not found in namespace {ns}", r.name),
            ));
            continue;
        };
        if decided.is_empty() && verified.is_ok() {
            verified = Err((
                "PlacementDecisionEmpty",
                format!("placement {} decided no cluster", r.name),
            ));
        }
        let strategy = match strategy_of(&r.rollout_strategy) {
            Ok(s) => s,
            Err(e) => {
                rolled = Err(format!("placement {}: {e}", r.name));
                continue;
            }
        };
        let clusters: Vec<rollout::Cluster> = decided
            .iter()
            .map(|(c, g, gn)| rollout::Cluster {
                name: c.clone(),
                group: *g,
                group_name: gn.clone(),
                state: state_of(
                    works.get(c).map(|w| w.as_ref()),
                    &hash,
                    strategy.progress_deadline,
                ),
            })
            .collect();
        for c in &clusters {
            wanted.insert(c.name.clone(), r.name.clone());
        }
        let plan = match rollout::plan(&strategy, &clusters) {
            Ok(p) => p,
            Err(e) => {
                rolled = Err(format!("placement {}: {e}", r.name));
                continue;
            }
        };
        for c in &plan.apply {
            write_work(&hub, &rs, c, &r.name, &hash).await?;
        }
        if let Some(why) = &plan.stopped {
            rolled = Err(why.clone());
        } else if !plan.complete && rolled == Ok(true) {
            rolled = Ok(false);
        }
        requeue = match (requeue, plan.requeue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(d) = strategy.progress_deadline {
            // A deadline is judged again when it can have passed.
            requeue = Some(requeue.map_or(d, |r| r.min(d)));
        }
        let groups: std::collections::BTreeSet<usize> = clusters.iter().map(|c| c.group).collect();
        let groups_done = groups
            .iter()
            .filter(|g| {
                clusters
                    .iter()
                    .filter(|c| c.group == **g)
                    .all(|c| matches!(c.state, State::Succeeded(_)))
            })
            .count();
        summaries.push(PlacementSummary {
            name: r.name.clone(),
            available_decision_groups: format!("{groups_done}/{}", groups.len()),
            summary: summary(
                clusters
                    .iter()
                    .filter_map(|c| works.get(&c.name).map(|w| w.as_ref())),
                &hash,
                clusters.len(),
            ),
            clusters: clusters
                .iter()
                .map(|c| ClusterRolloutStatus {
                    applied: works
                        .get(&c.name)
                        .and_then(|w| work_condition(w, CONDITION_APPLIED))
                        .map(|c| c.status.clone())
                        .unwrap_or_default(),
                    available: works
                        .get(&c.name)
                        .and_then(|w| work_condition(w, CONDITION_AVAILABLE))
                        .map(|c| c.status.clone())
                        .unwrap_or_default(),
                    feedback: works
                        .get(&c.name)
                        .map(|w| feedback_of(w))
                        .unwrap_or_default(),
                    cluster_name: c.name.clone(),
                    status: if plan.apply.contains(&c.name) {
                        "Progressing".into()
                    } else {
                        c.state.name().into()
                    },
                    message: match &c.state {
                        State::Failed(w) => w.clone(),
                        State::TimeOut => "not succeeded within progressDeadline".into(),
                        _ => String::new(),
                    },
                    last_transition_time: String::new(),
                })
                .collect(),
        });
    }
    // Clusters no longer decided lose their work.
    for (cluster, w) in &works {
        if !wanted.contains_key(cluster) && w.metadata.deletion_timestamp.is_none() {
            delete_work(&hub, cluster, &wname).await?;
        }
    }
    match verified {
        Ok(()) => set_condition(
            &mut conditions,
            cond("PlacementVerified", true, "AsExpected", String::new()),
        ),
        Err((reason, message)) => set_condition(
            &mut conditions,
            cond("PlacementVerified", false, reason, message),
        ),
    };
    match &rolled {
        Ok(true) => set_condition(
            &mut conditions,
            cond(
                "PlacementRolledOut",
                true,
                "Complete",
                "Rollout is complete".into(),
            ),
        ),
        Ok(false) => set_condition(
            &mut conditions,
            cond(
                "PlacementRolledOut",
                false,
                "Progressing",
                "Rollout in progress".into(),
            ),
        ),
        Err(why) => set_condition(
            &mut conditions,
            cond("PlacementRolledOut", false, "RolloutStopped", why.clone()),
        ),
    };
    let all = summary(works.values().map(|w| w.as_ref()), &hash, wanted.len());
    let applied = all.applied == all.total && all.total > 0;
    set_condition(
        &mut conditions,
        if applied {
            cond("ManifestworkApplied", true, "AsExpected", String::new())
        } else {
            cond(
                "ManifestworkApplied",
                false,
                "NotAsExpected",
                format!("{} of {} works applied", all.applied, all.desired_total),
            )
        },
    );
    let status = ManifestWorkReplicaSetStatus {
        conditions,
        summary: all,
        placement_summary: summaries,
    };
    if rs.status.as_ref() != Some(&status) {
        match rs_api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            Ok(updated) => {
                hub.index
                    .lock()
                    .replicasets
                    .insert(key.clone(), Arc::new(updated));
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(requeue)
}

/// A work's status feedback as `name=value` pairs.
pub fn feedback_of(w: &ManifestWork) -> String {
    let mut out = Vec::new();
    for m in w
        .status
        .iter()
        .flat_map(|s| s.resource_status.manifests.iter())
    {
        for v in &m.status_feedback.values {
            let f = &v.field_value;
            let value = f
                .integer
                .map(|i| i.to_string())
                .or_else(|| f.string.clone())
                .or_else(|| f.boolean.map(|b| b.to_string()))
                .or_else(|| f.json_raw.clone())
                .unwrap_or_default();
            out.push(format!("{}={value}", v.name));
        }
    }
    out.join(" ")
}

fn summary<'a>(
    works: impl Iterator<Item = &'a ManifestWork>,
    hash: &str,
    desired: usize,
) -> ManifestWorkReplicaSetSummary {
    let mut s = ManifestWorkReplicaSetSummary {
        desired_total: desired as i32,
        ..Default::default()
    };
    for w in works {
        s.total += 1;
        let is = |t: &str| work_condition(w, t).is_some_and(|c| c.status == "True");
        s.applied += i32::from(is(CONDITION_APPLIED));
        s.available += i32::from(is(CONDITION_AVAILABLE));
        s.progressing += i32::from(is(CONDITION_PROGRESSING));
        s.degraded += i32::from(is(CONDITION_DEGRADED));
        s.updated += i32::from(
            w.annotations()
                .get(TEMPLATE_HASH_ANNOTATION)
                .map(String::as_str)
                == Some(hash),
        );
    }
    s
}

/// Create or update replica set `rs`'s work in `cluster` from its template.
async fn write_work(
    hub: &Hub,
    rs: &ManifestWorkReplicaSet,
    cluster: &str,
    placement: &str,
    hash: &str,
) -> Result<(), Error> {
    let ns = rs.namespace().unwrap_or_default();
    let name = work_name(&ns, &rs.name_any());
    let api: Api<ManifestWork> = Api::namespaced(hub.client.clone(), &cluster_namespace(cluster));
    let work = json!({
        "apiVersion": "work.atoll.io/v1alpha1", "kind": "ManifestWork",
        "metadata": {
            "name": name, "namespace": cluster_namespace(cluster),
            "labels": {REPLICASET_LABEL: label_value(&ns, &rs.name_any()), PLACEMENT_NAME_LABEL: placement},
            "annotations": {TEMPLATE_HASH_ANNOTATION: hash, APPLIED_AT_ANNOTATION: now_rfc3339()},
        },
        "spec": rs.spec.manifest_work_template,
    });
    match api
        .patch(
            &name,
            &PatchParams::apply("atoll-hub-replicaset").force(),
            &Patch::Apply(&work),
        )
        .await
    {
        Ok(w) => {
            let key = (ns, rs.name_any());
            hub.index
                .lock()
                .replicaset_works
                .entry(key)
                .or_default()
                .insert(cluster.to_string(), Arc::new(w));
            Ok(())
        }
        // The cluster's namespace is not there (not accepted yet, or being removed).
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => {
            tracing::debug!(cluster, error = %e.message, "cannot write the replica set's work");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn delete_work(hub: &Hub, cluster: &str, name: &str) -> Result<(), Error> {
    let api: Api<ManifestWork> = Api::namespaced(hub.client.clone(), &cluster_namespace(cluster));
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(hash: &str, generation: i64, conditions: &[(&str, &str, i64)]) -> ManifestWork {
        let mut w = ManifestWork::new("x", Default::default());
        w.metadata.generation = Some(generation);
        w.metadata.annotations =
            Some([(TEMPLATE_HASH_ANNOTATION.to_string(), hash.to_string())].into());
        w.status = Some(atoll_api::work::ManifestWorkStatus {
            conditions: conditions
                .iter()
                .map(|(t, s, g)| atoll_api::work::ObservedCondition {
                    type_: t.to_string(),
                    status: s.to_string(),
                    reason: String::new(),
                    message: format!("{t} {s}"),
                    last_transition_time: now_rfc3339(),
                    observed_generation: Some(*g),
                })
                .collect(),
            ..Default::default()
        });
        w
    }

    #[test]
    fn a_clusters_state_follows_its_work() {
        assert_eq!(state_of(None, "h", None), State::ToApply);
        assert_eq!(
            state_of(Some(&work("old", 1, &[])), "h", None),
            State::ToApply
        );
        assert_eq!(
            state_of(Some(&work("h", 2, &[("Applied", "True", 1)])), "h", None),
            State::Applying,
            "not seen at this generation"
        );
        assert_eq!(
            state_of(
                Some(&work(
                    "h",
                    1,
                    &[("Applied", "True", 1), ("Progressing", "True", 1)]
                )),
                "h",
                None
            ),
            State::Progressing
        );
        assert!(matches!(
            state_of(
                Some(&work(
                    "h",
                    1,
                    &[("Applied", "True", 1), ("Progressing", "False", 1)]
                )),
                "h",
                None
            ),
            State::Succeeded(_)
        ));
        assert!(matches!(
            state_of(
                Some(&work(
                    "h",
                    1,
                    &[
                        ("Applied", "True", 1),
                        ("Progressing", "False", 1),
                        ("Degraded", "True", 1)
                    ]
                )),
                "h",
                None
            ),
            State::Failed(_)
        ));
        assert!(matches!(
            state_of(Some(&work("h", 1, &[("Applied", "False", 1)])), "h", None),
            State::Failed(m) if m.contains("Applied False")
        ));
        assert_eq!(label_value("ns", "web"), "ns.web");
        assert_eq!(label_value(&"n".repeat(40), &"w".repeat(40)).len(), 16);
    }
}
