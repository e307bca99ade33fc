//! Deployment: one ReplicaSet per pod template (named by the template's hash), rolled from
//! the old to the new within `maxSurge`/`maxUnavailable` (or all at once with `Recreate`), and
//! a status `kubectl rollout status` can follow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::{Ctx, Key, wait_for_cache};
use crate::Error;

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

pub(crate) async fn reconcile(
    ctx: Arc<Ctx>,
    (namespace, name): Key,
) -> Result<Option<Duration>, Error> {
    let Some(d) = ctx
        .caches
        .deployments
        .get(&ObjectRef::new(&name).within(&namespace))
    else {
        return Ok(None);
    };
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let uid = d.uid().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned = |ctx: &Ctx| -> Vec<Arc<ReplicaSet>> {
        let mut v: Vec<Arc<ReplicaSet>> = ctx
            .caches
            .replicasets
            .state()
            .into_iter()
            .filter(|rs| {
                rs.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && rs.metadata.deletion_timestamp.is_none()
                    && rs
                        .owner_references()
                        .iter()
                        .any(|r| r.controller == Some(true) && r.uid == uid)
            })
            .collect();
        v.sort_by_key(|rs| {
            rs.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0)
        });
        v
    };
    let hash = template_hash(&spec.template);
    let mut all = owned(&ctx);
    let max_revision = all.iter().filter_map(|rs| revision(rs)).max().unwrap_or(0);
    let new_rs = match all
        .iter()
        .find(|rs| rs.labels().get(HASH_LABEL) == Some(&hash))
        .cloned()
    {
        Some(rs) => {
            // A rollback to an older template makes that ReplicaSet the newest revision.
            if revision(&rs).unwrap_or(0) < max_revision {
                let patch = json!({"metadata": {"annotations": {REVISION: (max_revision + 1).to_string()}}});
                rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
            }
            rs
        }
        None => {
            let rs = new_replica_set(&d, &hash, max_revision + 1);
            let created = match rs_api.create(&PostParams::default(), &rs).await {
                Ok(c) => c,
                Err(kube::Error::Api(e)) if e.code == 409 => rs_api.get(&rs.name_any()).await?,
                Err(e) => return Err(e.into()),
            };
            let n = created.name_any();
            wait_for_cache(|| {
                ctx.caches
                    .replicasets
                    .get(&ObjectRef::new(&n).within(&namespace))
                    .is_some()
            })
            .await;
            all = owned(&ctx);
            Arc::new(created)
        }
    };
    let new_name = new_rs.name_any();
    let olds: Vec<Arc<ReplicaSet>> = all
        .iter()
        .filter(|rs| rs.name_any() != new_name)
        .cloned()
        .collect();
    let spec_of = |rs: &ReplicaSet| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let available_of = |rs: &ReplicaSet| {
        rs.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
    };
    let paused = spec.paused.unwrap_or(false);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let (surge, unavailable) = if recreate {
        (0, replicas)
    } else {
        let ru = spec
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.clone())
            .unwrap_or_default();
        let surge = resolve(ru.max_surge.as_ref(), replicas, true);
        let mut unavailable = resolve(ru.max_unavailable.as_ref(), replicas, false);
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        (surge, unavailable)
    };
    let mut scales: Vec<(String, i32)> = Vec::new();
    if !paused {
        if recreate {
            let old_running: i32 = olds
                .iter()
                .map(|rs| spec_of(rs) + rs.status.as_ref().map_or(0, |s| s.replicas))
                .sum();
            for rs in &olds {
                if spec_of(rs) > 0 {
                    scales.push((rs.name_any(), 0));
                }
            }
            if old_running == 0 && spec_of(&new_rs) != replicas {
                scales.push((new_name.clone(), replicas));
            }
        } else {
            let total: i32 = all.iter().map(|rs| spec_of(rs)).sum();
            let new_spec = spec_of(&new_rs);
            let target = if new_spec > replicas {
                replicas
            } else {
                let room = (replicas + surge - total).max(0);
                (new_spec + room).min(replicas)
            };
            if target != new_spec {
                scales.push((new_name.clone(), target));
            }
            // Scale old ReplicaSets down as far as availability allows.
            let all_pods: i32 = total - new_spec + target;
            let min_available = replicas - unavailable;
            let new_unavailable = (target - available_of(&new_rs)).max(0);
            let mut budget = all_pods - min_available - new_unavailable;
            // Unhealthy old replicas go first; they count for nothing.
            let mut old_targets: BTreeMap<String, i32> =
                olds.iter().map(|rs| (rs.name_any(), spec_of(rs))).collect();
            for rs in &olds {
                if budget <= 0 {
                    break;
                }
                let unhealthy = (spec_of(rs) - available_of(rs)).max(0).min(budget);
                if unhealthy > 0 {
                    *old_targets.entry(rs.name_any()).or_default() -= unhealthy;
                    budget -= unhealthy;
                }
            }
            let available_total: i32 = all.iter().map(|rs| available_of(rs)).sum();
            let mut healthy_budget = (available_total - min_available).min(budget.max(0));
            for rs in &olds {
                if healthy_budget <= 0 {
                    break;
                }
                let t = old_targets.entry(rs.name_any()).or_default();
                let cut = (*t).min(healthy_budget);
                *t -= cut;
                healthy_budget -= cut;
            }
            for rs in &olds {
                let t = old_targets.get(&rs.name_any()).copied().unwrap_or(0).max(0);
                if t != spec_of(rs) {
                    scales.push((rs.name_any(), t));
                }
            }
        }
    }
    for (rs_name, n) in &scales {
        let patch = json!({
            "metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                                          "deployment.kubernetes.io/max-replicas": (replicas + surge).to_string()}},
            "spec": {"replicas": n}
        });
        rs_api
            .patch(rs_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    // Old ReplicaSets beyond the history limit, once empty, go.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let empty_olds: Vec<&Arc<ReplicaSet>> = olds
        .iter()
        .filter(|rs| spec_of(rs) == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0))
        .filter(|rs| !scales.iter().any(|(n, v)| *n == rs.name_any() && *v > 0))
        .collect();
    if empty_olds.len() > limit {
        for rs in empty_olds.iter().take(empty_olds.len() - limit) {
            let _ = rs_api
                .delete(&rs.name_any(), &DeleteParams::background())
                .await;
        }
    }
    // Status.
    let all = owned(&ctx);
    let status_of = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
    let total_replicas: i32 = all.iter().map(|rs| status_of(rs).replicas).sum();
    let ready: i32 = all
        .iter()
        .map(|rs| status_of(rs).ready_replicas.unwrap_or(0))
        .sum();
    let available: i32 = all
        .iter()
        .map(|rs| status_of(rs).available_replicas.unwrap_or(0))
        .sum();
    let new_now = all
        .iter()
        .find(|rs| rs.name_any() == new_name)
        .cloned()
        .unwrap_or(new_rs.clone());
    let updated = status_of(&new_now).replicas;
    let old_left: i32 = all
        .iter()
        .filter(|rs| rs.name_any() != new_name)
        .map(|rs| status_of(rs).replicas + spec_of(rs))
        .sum();
    let complete = updated == replicas
        && status_of(&new_now).available_replicas.unwrap_or(0) >= replicas
        && old_left == 0
        && spec_of(&new_now) == replicas;
    let min_available = replicas - unavailable;
    let prev: Vec<Value> = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        let old = prev.iter().find(|c| c["type"] == type_);
        let same = old.is_some_and(|c| c["status"] == status && c["reason"] == reason);
        let transition = match old {
            Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
            _ => json!(crate::util::now()),
        };
        let update = match old {
            Some(c) if same => c["lastUpdateTime"].clone(),
            _ => json!(crate::util::now()),
        };
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": transition, "lastUpdateTime": update})
    };
    let available_cond = if available >= min_available {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let progressing = if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    };
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": total_replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (replicas - available).max(0),
        "conditions": [available_cond, progressing],
    });
    let current = d
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(json!({}));
    let differs = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ]
    .iter()
    .any(|f| {
        current.get(f).cloned().unwrap_or(json!(0)) != status.get(f).cloned().unwrap_or(json!(0))
    }) || current.get("conditions") != status.get("conditions");
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    if differs {
        d_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await?;
    }
    let rev = revision(&new_now).unwrap_or(max_revision + 1).to_string();
    if d.annotations().get(REVISION) != Some(&rev) {
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        d_api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(None)
}

fn revision(rs: &ReplicaSet) -> Option<i64> {
    rs.annotations().get(REVISION).and_then(|r| r.parse().ok())
}

/// A percentage of `replicas` (rounded up for surge, down for unavailable) or a number.
fn resolve(v: Option<&IntOrString>, replicas: i32, round_up: bool) -> i32 {
    match v {
        None => resolve(Some(&IntOrString::String("25%".into())), replicas, round_up),
        Some(IntOrString::Int(n)) => (*n).max(0),
        Some(IntOrString::String(s)) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(25.0);
            let x = pct * f64::from(replicas) / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i32
        }
    }
}

/// A short, stable name for a pod template, in Kubernetes' alphabet for generated names.
pub(crate) fn template_hash(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    digest.as_ref()[..10]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn new_replica_set(d: &Deployment, hash: &str, revision: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let mut tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    tmeta.labels = Some(labels.clone());
    template.metadata = Some(tmeta);
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut annotations = BTreeMap::new();
    annotations.insert(REVISION.to_string(), revision.to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: Deployment::api_version(&()).into(),
                kind: Deployment::kind(&()).into(),
                name: d.name_any(),
                uid: d.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}
