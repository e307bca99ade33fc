//! ReplicaSet: keep `spec.replicas` pods from the template running; report how many are
//! ready and available.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::update_status;
use super::{BURST, Ctx, Key, create_pods, delete_pods, pod_of, pods_controlled_by};
use crate::Error;
use crate::util::{pod_finished, pod_ready, pod_ready_since};

pub(crate) async fn reconcile(
    ctx: Arc<Ctx>,
    (namespace, name): Key,
) -> Result<Option<Duration>, Error> {
    let Some(rs) = ctx
        .caches
        .replicasets
        .get(&ObjectRef::new(&name).within(&namespace))
    else {
        return Ok(None);
    };
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let uid = rs.uid().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    let active = |ctx: &Ctx| -> Vec<Arc<Pod>> {
        pods_controlled_by(ctx, &namespace, &uid)
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && !pod_finished(p))
            .collect()
    };
    let pods = active(&ctx);
    let owner = format!("ReplicaSet {namespace}/{name}");
    if pods.len() < want {
        let missing = (want - pods.len()).min(BURST);
        let template = pod_of(rs.as_ref(), spec.template.clone());
        let created = create_pods(&ctx, &namespace, vec![template; missing], &owner).await;
        if created.len() < missing {
            return Err(Error::Config(format!(
                "created {} of {missing} pods for {owner}",
                created.len()
            )));
        }
    } else if pods.len() > want {
        let mut victims = pods.clone();
        // Delete the least useful first: unscheduled, then not ready, then the newest.
        victims.sort_by_key(|p| {
            let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
            let created = p
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0);
            (scheduled, pod_ready(p), std::cmp::Reverse(created))
        });
        let victims: Vec<String> = victims
            .iter()
            .take(pods.len() - want)
            .map(|p| p.name_any())
            .collect();
        delete_pods(&ctx, &namespace, &victims, &owner).await;
    }
    // Status from what the cache now shows.
    let pods = active(&ctx);
    let min_ready = spec.min_ready_seconds.unwrap_or(0).max(0) as f64;
    let ready = pods.iter().filter(|p| pod_ready(p)).count() as i32;
    let mut wait_for_available: Option<f64> = None;
    let available = pods
        .iter()
        .filter(|p| pod_ready(p))
        .filter(|p| {
            let since = pod_ready_since(p)
                .map(|t| crate::util::age_seconds(&t))
                .unwrap_or(0.0);
            let ok = since >= min_ready;
            if !ok {
                let left = min_ready - since;
                wait_for_available = Some(wait_for_available.map_or(left, |w: f64| w.min(left)));
            }
            ok
        })
        .count() as i32;
    let labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = pods
        .iter()
        .filter(|p| {
            let l = p.labels();
            labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .count() as i32;
    let status = json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation,
    });
    let current = rs.status.as_ref().map(|s| {
        json!({
            "replicas": s.replicas,
            "fullyLabeledReplicas": s.fully_labeled_replicas.unwrap_or(0),
            "readyReplicas": s.ready_replicas.unwrap_or(0),
            "availableReplicas": s.available_replicas.unwrap_or(0),
            "observedGeneration": s.observed_generation,
        })
    });
    let shown = current.unwrap_or_default();
    update_status::<ReplicaSet>(&ctx, &namespace, &name, &status, &shown).await?;
    Ok(wait_for_available.map(|s| Duration::from_secs_f64(s.max(0.0) + 0.05)))
}
