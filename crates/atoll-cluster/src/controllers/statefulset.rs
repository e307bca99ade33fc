//! StatefulSet: pods with stable names (`NAME-0` .. `NAME-(n-1)`), hostnames and claims.
//! `OrderedReady` creates them one after another, each once the ones before it are Running and
//! Ready, and removes them from the highest ordinal down; `Parallel` does both at once. A
//! template change rolls out from the highest ordinal down to the `partition`, one pod at a
//! time. Each claim template gives each pod a PersistentVolumeClaim `TEMPLATE-NAME-ORDINAL`
//! (made before the pod, kept after it) mounted as a `persistentVolumeClaim` volume.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::update_status;
use super::{
    BURST, Ctx, Key, create_pods, delete_pods, live, pod_of, pods_controlled_by, template_hash,
};
use crate::Error;
use crate::util::pod_ready;

const REVISION_LABEL: &str = "controller-revision-hash";

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn running_and_ready(p: &Pod) -> bool {
    phase(p) == "Running" && pod_ready(p) && p.metadata.deletion_timestamp.is_none()
}

pub(crate) async fn reconcile(
    ctx: Arc<Ctx>,
    (namespace, name): Key,
) -> Result<Option<Duration>, Error> {
    let Some(sts) = live(&ctx.caches.statefulsets, &namespace, &name) else {
        return Ok(None);
    };
    let spec = sts.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let update_revision = format!("{name}-{}", template_hash(&spec.template));
    let uid = sts.uid().unwrap_or_default();
    let owner = format!("StatefulSet {namespace}/{name}");
    let prefix = format!("{name}-");
    let pods: BTreeMap<usize, Arc<Pod>> = pods_controlled_by(&ctx, &namespace, &uid)
        .into_iter()
        .filter_map(|p| {
            let ordinal = p.name_any().strip_prefix(&prefix)?.parse::<usize>().ok()?;
            Some((ordinal, p))
        })
        .collect();
    let revision = |p: &Pod| p.labels().get(REVISION_LABEL).cloned().unwrap_or_default();
    let terminating = pods
        .values()
        .any(|p| p.metadata.deletion_timestamp.is_some());

    let mut create: Vec<usize> = Vec::new();
    let mut delete: Vec<String> = Vec::new();
    // Pods that ended are replaced (under the same name, once gone).
    for p in pods.values() {
        if matches!(phase(p), "Failed" | "Succeeded") && p.metadata.deletion_timestamp.is_none() {
            delete.push(p.name_any());
        }
    }
    // The missing ordinals: all at once, or the lowest once those before it are up.
    let mut missing = (0..replicas).filter(|i| !pods.contains_key(i));
    if parallel {
        create.extend(missing.take(BURST));
    } else if let Some(i) = missing.next() {
        let before_ready = (0..i).all(|j| pods.get(&j).is_some_and(|p| running_and_ready(p)));
        if before_ready && !terminating {
            create.push(i);
        }
    }
    // Ordinals past `replicas` go: all at once, or the highest once the rest are up.
    let condemned: Vec<&Arc<Pod>> = pods
        .range(replicas..)
        .rev()
        .map(|(_, p)| p)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    if parallel {
        delete.extend(condemned.iter().map(|p| p.name_any()));
    } else if let Some(highest) = condemned.first() {
        let rest_ready = (0..replicas).all(|j| pods.get(&j).is_some_and(|p| running_and_ready(p)));
        if rest_ready && !terminating {
            delete.push(highest.name_any());
        }
    }
    // Rolling update, once every replica is up: the highest out-of-date pod at or above the
    // partition goes; it comes back at the new revision.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0) as usize;
    let all_up = (0..replicas).all(|j| pods.get(&j).is_some_and(|p| running_and_ready(p)));
    if rolling
        && all_up
        && create.is_empty()
        && delete.is_empty()
        && !terminating
        && let Some((_, stale)) = pods
            .range(partition.min(replicas)..replicas)
            .rev()
            .find(|(_, p)| revision(p) != update_revision)
    {
        delete.push(stale.name_any());
    }
    // Each new pod's claims first (kept when the pod or the StatefulSet goes, as Kubernetes'
    // default retention does).
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    for i in &create {
        for claim in claims_for(&sts, *i) {
            match claims.create(&PostParams::default(), &claim).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let new_pods = create
        .iter()
        .map(|i| pod_for(&sts, *i, &update_revision))
        .collect();
    create_pods(&ctx, &namespace, new_pods, &owner).await;
    delete_pods(&ctx, &namespace, &delete, &owner).await;

    // Status from what the cache now shows.
    let pods: Vec<Arc<Pod>> = pods_controlled_by(&ctx, &namespace, &uid)
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let status = sts.status.clone().unwrap_or_default();
    let ready = pods.iter().filter(|p| running_and_ready(p)).count();
    let updated = pods
        .iter()
        .filter(|p| revision(p) == update_revision)
        .count();
    let mut current_revision = status
        .current_revision
        .clone()
        .unwrap_or_else(|| update_revision.clone());
    // The rollout is complete when every replica runs the new revision.
    if updated == replicas && pods.len() == replicas {
        current_revision = update_revision.clone();
    }
    let current = pods
        .iter()
        .filter(|p| revision(p) == current_revision)
        .count();
    let new_status = json!({
        "replicas": pods.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "observedGeneration": sts.metadata.generation,
        "collisionCount": 0,
    });
    let old_status = json!({
        "replicas": status.replicas,
        "readyReplicas": status.ready_replicas.unwrap_or(0),
        "availableReplicas": status.available_replicas.unwrap_or(0),
        "currentReplicas": status.current_replicas.unwrap_or(0),
        "updatedReplicas": status.updated_replicas.unwrap_or(0),
        "currentRevision": status.current_revision,
        "updateRevision": status.update_revision,
        "observedGeneration": status.observed_generation,
        "collisionCount": status.collision_count.unwrap_or(0),
    });
    if !update_status::<StatefulSet>(&ctx, &namespace, &name, &new_status, &old_status).await? {
        return Ok(None);
    }
    // Work left (pods coming up, going, rolling): pod events bring us back; a pass a little
    // later catches the rest.
    let settled = pods.len() == replicas
        && ready == replicas
        && updated >= replicas - partition.min(replicas);
    Ok((!settled).then_some(Duration::from_secs(1)))
}

/// The claims of the pod with ordinal `i`, from the claim templates: `TEMPLATE-NAME-i`,
/// labelled as the pods are selected.
fn claims_for(sts: &StatefulSet, i: usize) -> Vec<PersistentVolumeClaim> {
    let spec = sts.spec.clone().unwrap_or_default();
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .unwrap_or_default()
        .into_iter()
        .map(|mut claim| {
            let template = claim.metadata.name.clone().unwrap_or_default();
            claim.metadata.name = Some(format!("{template}-{}-{i}", sts.name_any()));
            claim.metadata.namespace = sts.namespace();
            let labels = claim.metadata.labels.get_or_insert_with(Default::default);
            labels.extend(selector.clone());
            claim.status = None;
            claim
        })
        .collect()
}

/// The pod with ordinal `i`: its stable name and hostname, its revision, its claims.
fn pod_for(sts: &StatefulSet, i: usize, revision: &str) -> Pod {
    let spec = sts.spec.clone().unwrap_or_default();
    let mut pod = pod_of(sts, Some(spec.template.clone()));
    let name = format!("{}-{i}", sts.name_any());
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
    labels.insert("apps.kubernetes.io/pod-index".into(), i.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_string());
    let pod_spec = pod.spec.get_or_insert_with(Default::default);
    pod_spec.hostname = Some(name);
    if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
        pod_spec.subdomain = spec.service_name.clone();
    }
    let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
    for claim in spec.volume_claim_templates.iter().flatten() {
        let template = claim.metadata.name.clone().unwrap_or_default();
        if volumes.iter().any(|v| v.name == template) {
            continue;
        }
        volumes.push(Volume {
            name: template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{template}-{}-{i}", sts.name_any()),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    pod
}
