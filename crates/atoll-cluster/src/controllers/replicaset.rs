//! ReplicaSet and ReplicationController: keep `spec.replicas` pods from the template running;
//! report how many are ready and available. One loop serves both kinds (a
//! ReplicationController is a ReplicaSet with a plain label-map selector).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::update_status;
use super::{BURST, Ctx, Key, create_pods, delete_pods, pod_of, pods_controlled_by};
use crate::Error;
use crate::util::{pod_finished, pod_ready, pod_ready_since};

/// What the loop needs of either kind.
struct Replicas {
    replicas: i32,
    template: Option<PodTemplateSpec>,
    min_ready_seconds: i32,
    /// The status as the object shows it now (same fields for both kinds).
    shown: serde_json::Value,
}

/// The view of a ReplicaSet or ReplicationController: their spec and status fields have the
/// same names (only the selector's type differs, which the loop does not read).
macro_rules! view_of {
    ($obj:expr) => {{
        let spec = $obj.spec.clone().unwrap_or_default();
        Replicas {
            replicas: spec.replicas.unwrap_or(1),
            template: spec.template,
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            shown: $obj
                .status
                .as_ref()
                .map(|s| {
                    status_json(
                        s.replicas,
                        s.fully_labeled_replicas,
                        s.ready_replicas,
                        s.available_replicas,
                        s.observed_generation,
                    )
                })
                .unwrap_or_default(),
        }
    }};
}

pub(crate) async fn reconcile(ctx: Arc<Ctx>, key: Key) -> Result<Option<Duration>, Error> {
    let Some(rs) = ctx
        .caches
        .replicasets
        .get(&ObjectRef::new(&key.1).within(&key.0))
    else {
        return Ok(None);
    };
    let view = view_of!(rs);
    keep(ctx, rs.as_ref(), view, "ReplicaSet", key).await
}

pub(crate) async fn reconcile_rc(ctx: Arc<Ctx>, key: Key) -> Result<Option<Duration>, Error> {
    let Some(rc) = ctx
        .caches
        .replicationcontrollers
        .get(&ObjectRef::new(&key.1).within(&key.0))
    else {
        return Ok(None);
    };
    let view = view_of!(rc);
    keep(ctx, rc.as_ref(), view, "ReplicationController", key).await
}

fn status_json(
    replicas: i32,
    fully_labeled: Option<i32>,
    ready: Option<i32>,
    available: Option<i32>,
    observed_generation: Option<i64>,
) -> serde_json::Value {
    json!({
        "replicas": replicas,
        "fullyLabeledReplicas": fully_labeled.unwrap_or(0),
        "readyReplicas": ready.unwrap_or(0),
        "availableReplicas": available.unwrap_or(0),
        "observedGeneration": observed_generation,
    })
}

/// Keep `owner`'s pods at its replicas and write its status.
async fn keep<K>(
    ctx: Arc<Ctx>,
    owner: &K,
    spec: Replicas,
    kind: &str,
    (namespace, name): Key,
) -> Result<Option<Duration>, Error>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    if owner.meta().deletion_timestamp.is_some() {
        return Ok(None);
    }
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let want = spec.replicas.max(0) as usize;
    let active = |ctx: &Ctx| -> Vec<Arc<Pod>> {
        pods_controlled_by(ctx, &namespace, &uid)
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && !pod_finished(p))
            .collect()
    };
    let pods = active(&ctx);
    let who = format!("{kind} {namespace}/{name}");
    if pods.len() < want {
        let missing = (want - pods.len()).min(BURST);
        let template = pod_of(owner, spec.template.clone());
        let created = create_pods(&ctx, &namespace, vec![template; missing], &who).await;
        if created.len() < missing {
            return Err(Error::Config(format!(
                "created {} of {missing} pods for {who}",
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
        delete_pods(&ctx, &namespace, &victims, &who).await;
    }
    // Status from what the cache now shows.
    let pods = active(&ctx);
    let min_ready = spec.min_ready_seconds.max(0) as f64;
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
        "observedGeneration": owner.meta().generation,
    });
    update_status::<K>(&ctx, &namespace, &name, &status, &spec.shown).await?;
    Ok(wait_for_available.map(|s| Duration::from_secs_f64(s.max(0.0) + 0.05)))
}
