//! The virtual node's kubelet: pods the consumer's scheduler binds to the virtual node run in
//! the provider, in the namespace offloaded for theirs, as copies made by `reflect`; their
//! status comes back. Deleting either side is reconciled: a consumer pod being deleted deletes
//! its copy and is then removed (at once, by UID, when the copy is gone; after a deadline, logged,
//! when the provider does not answer), and a copy deleted out of band is made again.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_api::peering::{
    ForeignCluster, MANAGER, OFFLOADING_NAME, ORIGIN_UID_LABEL, TENANT_LABEL, virtual_node_name,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::consumer::Shared;
use crate::reflect;

/// How long a consumer pod being deleted waits for an unreachable provider before it is
/// removed anyway (its copy is then collected when the provider is back).
const DELETE_DEADLINE: Duration = Duration::from_secs(30);

struct Remote {
    store: Store<Pod>,
    _task: atoll_runtime::AbortOnDrop,
}

/// Pods whose object (consumer namespace, name) or copy (provider namespace, name) changed
/// since the last pass.
#[derive(Default)]
struct Dirty {
    local: std::collections::HashSet<(String, String)>,
    remote: std::collections::HashSet<(String, String)>,
}

/// How often every pod is looked at, changed or not (deadlines, missed events).
const FULL_PASS: Duration = Duration::from_secs(5);

pub(crate) async fn run(
    shared: Arc<Shared>,
    fc: ForeignCluster,
    provider: Client,
    reachable: Arc<AtomicBool>,
) {
    let node = virtual_node_name(&fc.name_any());
    let pid = fc.spec.cluster_id.clone();
    let me = shared.cfg.cluster_id.clone();
    let kick = Arc::new(Notify::new());
    let dirty: Arc<Mutex<Dirty>> = Arc::default();
    let (pods, writer) = reflector::store::<Pod>();
    let _local_watch = {
        let dirty = dirty.clone();
        watch_into(
            Api::<Pod>::all(shared.local.clone()),
            watcher::Config::default().fields(&format!("spec.nodeName={node}")),
            writer,
            kick.clone(),
            move |p: &Pod| {
                crate::consumer::lock(&dirty)
                    .local
                    .insert((p.namespace().unwrap_or_default(), p.name_any()));
            },
        )
    };
    let mut last_full: Option<(Instant, bool, HashMap<String, String>)> = None;
    let mut remotes: HashMap<String, Remote> = HashMap::new();
    let recreations: Mutex<HashMap<String, i64>> = Mutex::default();
    let seen: Mutex<BTreeSet<String>> = Mutex::default();
    let deleting: Mutex<HashMap<String, Instant>> = Mutex::default();
    loop {
        let up = reachable.load(Ordering::Relaxed);
        let mapping = shared.mapping(&pid);
        for remote_ns in mapping.values() {
            remotes.entry(remote_ns.clone()).or_insert_with(|| {
                let (store, writer) = reflector::store::<Pod>();
                let api = Api::<Pod>::namespaced(provider.clone(), remote_ns);
                let wc = watcher::Config::default().labels(&format!("{TENANT_LABEL}={me}"));
                let dirty = dirty.clone();
                Remote {
                    store,
                    _task: watch_into(api, wc, writer, kick.clone(), move |p: &Pod| {
                        crate::consumer::lock(&dirty)
                            .remote
                            .insert((p.namespace().unwrap_or_default(), p.name_any()));
                    }),
                }
            });
        }
        let locals = pods.state();
        // Only the pods whose object or copy changed, but all of them every few seconds
        // and whenever reachability or the offloaded namespaces change: a pass over a
        // thousand pods for each change of one would hold every reflection back.
        let full = last_full.as_ref().is_none_or(|(at, was_up, was_mapping)| {
            at.elapsed() >= FULL_PASS || *was_up != up || *was_mapping != mapping
        });
        let changed = std::mem::take(&mut *crate::consumer::lock(&dirty));
        if full {
            last_full = Some((Instant::now(), up, mapping.clone()));
        }
        let mut todo: Vec<&Arc<Pod>> = if full {
            locals.iter().collect()
        } else {
            locals
                .iter()
                .filter(|p| {
                    let ns = p.namespace().unwrap_or_default();
                    let name = p.name_any();
                    changed.local.contains(&(ns.clone(), name.clone()))
                        || mapping
                            .get(&ns)
                            .is_some_and(|r| changed.remote.contains(&(r.clone(), name)))
                        || p.metadata.deletion_timestamp.is_some()
                })
                .collect()
        };
        let live_uids: BTreeSet<String> =
            locals.iter().map(|p| p.uid().unwrap_or_default()).collect();
        // Pods whose copy exists first: their status is one write each, and should not
        // wait behind the copies being made.
        todo.sort_by_key(|p| {
            let copy = mapping
                .get(&p.namespace().unwrap_or_default())
                .is_some_and(|r| {
                    remotes
                        .get(r)
                        .and_then(|rm| rm.store.get(&ObjectRef::new(&p.name_any()).within(r)))
                        .is_some()
                });
            !copy
        });
        // The pods are handled side by side: a thousand status writes one after another
        // would hold each reflection back by all the others.
        {
            let cx = PodCx {
                shared: &shared,
                provider: &provider,
                pid: &pid,
                me: &me,
                node: &node,
                up,
                mapping: &mapping,
                remotes: &remotes,
                deleting: &deleting,
                recreations: &recreations,
                seen: &seen,
            };
            use futures::StreamExt;
            futures::stream::iter(todo)
                .for_each_concurrent(32, |pod| one_pod(&cx, pod))
                .await;
        }
        crate::consumer::lock(&deleting).retain(|uid, _| live_uids.contains(uid));
        {
            let here: BTreeSet<(String, String)> = locals
                .iter()
                .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
                .collect();
            crate::consumer::lock(&shared.homes).retain(|k, (n, _)| *n != node || here.contains(k));
        }
        crate::consumer::lock(&recreations).retain(|uid, _| live_uids.contains(uid));
        crate::consumer::lock(&seen).retain(|uid| live_uids.contains(uid));
        // Copies of pods that are gone here go there.
        if up && pods.wait_until_ready().await.is_ok() {
            for r in remotes.values() {
                for copy in r.store.state() {
                    let origin = copy
                        .labels()
                        .get(ORIGIN_UID_LABEL)
                        .cloned()
                        .unwrap_or_default();
                    if !live_uids.contains(&origin) && copy.metadata.deletion_timestamp.is_none() {
                        let api: Api<Pod> = Api::namespaced(
                            provider.clone(),
                            &copy.namespace().unwrap_or_default(),
                        );
                        let _ = api.delete(&copy.name_any(), &DeleteParams::default()).await;
                    }
                }
            }
        }
        remotes.retain(|ns, _| mapping.values().any(|m| m == ns));
        let _ = tokio::time::timeout(Duration::from_secs(1), kick.notified()).await;
    }
}

/// What handling one pod needs.
struct PodCx<'a> {
    shared: &'a Arc<Shared>,
    provider: &'a Client,
    pid: &'a str,
    me: &'a str,
    node: &'a str,
    up: bool,
    mapping: &'a HashMap<String, String>,
    remotes: &'a HashMap<String, Remote>,
    deleting: &'a Mutex<HashMap<String, Instant>>,
    recreations: &'a Mutex<HashMap<String, i64>>,
    seen: &'a Mutex<BTreeSet<String>>,
}

/// One consumer pod on the virtual node: its copy made, kept, or removed, and its status.
async fn one_pod(cx: &PodCx<'_>, pod: &Arc<Pod>) {
    let PodCx {
        shared,
        provider,
        pid,
        me,
        node,
        up,
        mapping,
        remotes,
        deleting,
        recreations,
        seen,
    } = *cx;
    let uid = pod.uid().unwrap_or_default();
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let local_api: Api<Pod> = Api::namespaced(shared.local.clone(), &ns);
    let Some(remote_ns) = mapping.get(&ns) else {
        if pod.metadata.deletion_timestamp.is_some() {
            force_delete(&local_api, pod).await;
        } else {
            pending(&local_api, pod, "OffloadingBackOff", &format!(
                    "namespace {ns} is not offloaded to provider {pid}: create NamespaceOffloading {OFFLOADING_NAME} in it (`atoll peer offload {ns}`) and wait for its phase Ready"
                )).await;
        }
        return;
    };
    crate::consumer::lock(&shared.homes).insert(
        (ns.clone(), name.clone()),
        (node.to_string(), remote_ns.clone()),
    );
    let remote = remotes
        .get(remote_ns)
        .and_then(|r| r.store.get(&ObjectRef::new(&name).within(remote_ns)));
    let remote_api: Api<Pod> = Api::namespaced(provider.clone(), remote_ns);
    let local_json = serde_json::to_value(pod.as_ref()).unwrap_or_default();
    let remote_json = remote
        .as_ref()
        .map(|r| serde_json::to_value(r.as_ref()).unwrap_or_default());
    let ours = remote_json
        .as_ref()
        .is_some_and(|r| reflect::is_copy_of(r, &uid));
    if !up {
        let have = serde_json::to_value(&pod.status).unwrap_or_default();
        let want = reflect::unreachable_status(&have, pid, &crate::now_rfc3339());
        let differs = want
            .as_object()
            .is_some_and(|w| w.iter().any(|(k, v)| have.get(k) != Some(v)));
        if differs {
            let _ = local_api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": want})),
                )
                .await;
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        let since = *crate::consumer::lock(deleting)
            .entry(uid.clone())
            .or_insert_with(Instant::now);
        if ours && up {
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
            let dp = DeleteParams {
                grace_period_seconds: Some(grace.max(0) as u32),
                ..Default::default()
            };
            if remote
                .as_ref()
                .is_some_and(|r| r.metadata.deletion_timestamp.is_none())
            {
                let _ = remote_api.delete(&name, &dp).await;
            }
        } else if !ours && up {
            force_delete(&local_api, pod).await;
        } else if since.elapsed() > DELETE_DEADLINE {
            tracing::warn!(pod = %format!("{ns}/{name}"), provider = %pid, "the provider does not answer: removing the pod here without its copy, which goes when the provider is back");
            force_delete(&local_api, pod).await;
        }
        return;
    }
    if !up {
        return;
    }
    match (&remote_json, ours) {
        (None, _) => {
            // Made again only if the copy was there and went (a copy just made may
            // not be in the watch yet).
            if crate::consumer::lock(seen).remove(&uid) {
                *crate::consumer::lock(recreations)
                    .entry(uid.clone())
                    .or_default() += 1;
                tracing::info!(pod = %format!("{ns}/{name}"), "its copy in the provider went: making it again");
            }
            if let Err(e) =
                reflect_dependencies(&shared.local, provider, &local_json, &ns, remote_ns, me).await
            {
                tracing::debug!(pod = %name, error = %e, "cannot reflect what the pod uses");
            }
            let copy = reflect::remote_pod(&local_json, remote_ns, me);
            match serde_json::from_value::<Pod>(copy) {
                Ok(copy) => match remote_api.create(&PostParams::default(), &copy).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 || e.code == 400 => {
                        pending(
                            &local_api,
                            pod,
                            "OffloadingRefused",
                            &format!("provider {pid} refuses the pod: {}", e.message),
                        )
                        .await;
                    }
                    Err(e) => {
                        tracing::debug!(pod = %name, error = %e, "cannot create the pod's copy")
                    }
                },
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "cannot make the pod's copy")
                }
            }
        }
        (Some(r), false) => {
            if r["metadata"]["labels"][TENANT_LABEL].as_str() == Some(me) {
                // A copy of an earlier pod of that name: it goes, this one's follows.
                let _ = remote_api.delete(&name, &DeleteParams::default()).await;
            } else {
                pending(
                    &local_api,
                    pod,
                    "NameConflict",
                    &format!(
                        "provider {pid} has a pod {remote_ns}/{name} that is not a copy of this one"
                    ),
                )
                .await;
            }
        }
        (Some(r), true) => {
            crate::consumer::lock(seen).insert(uid.clone());
            let want = reflect::local_status(
                &r["status"],
                crate::consumer::lock(recreations)
                    .get(&uid)
                    .copied()
                    .unwrap_or(0),
            );
            let have = serde_json::to_value(&pod.status).unwrap_or_default();
            let differs = want
                .as_object()
                .is_some_and(|w| w.iter().any(|(k, v)| have.get(k) != Some(v)));
            if differs
                && reflect::worth_reflecting(&r["status"])
                && let Err(e) = local_api
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": want})),
                    )
                    .await
            {
                tracing::debug!(pod = %name, error = %e, "cannot reflect the pod's status");
            }
        }
    }
}

/// A store of what `api` and `wc` watch, `kick` told of every change; the watch ends when
/// the returned guard is dropped.
pub(crate) fn watched<K>(
    api: Api<K>,
    wc: watcher::Config,
    kick: &Arc<Notify>,
) -> (Store<K>, atoll_runtime::AbortOnDrop)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let task = watch_into(api, wc, writer, kick.clone(), |_| {});
    (store, task)
}

/// Keep `writer` current, calling `on_object` for each change and then waking `kick`.
fn watch_into<K>(
    api: Api<K>,
    wc: watcher::Config,
    writer: reflector::store::Writer<K>,
    kick: Arc<Notify>,
    on_object: impl Fn(&K) + Send + 'static,
) -> atoll_runtime::AbortOnDrop
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    atoll_runtime::reflect::reflect_while_held(api, wc, writer, move |o| {
        on_object(o);
        kick.notify_one();
    })
}

async fn force_delete(api: &Api<Pod>, pod: &Pod) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::debug!(pod = %pod.name_any(), error = %e, "cannot remove the pod"),
    }
}

/// Say why a pod waits, once per reason.
async fn pending(api: &Api<Pod>, pod: &Pod, reason: &str, message: &str) {
    let status = pod.status.clone().unwrap_or_default();
    let cond = status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled").cloned());
    if status.reason.as_deref() == Some(reason) && status.message.as_deref() == Some(message) {
        return;
    }
    let _ = cond;
    let patch = json!({"status": {"phase": "Pending", "reason": reason, "message": message}});
    if let Err(e) = api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(pod = %pod.name_any(), error = %e, "cannot say why the pod waits");
    }
}

/// The ConfigMaps, Secrets and ServiceAccount a pod uses, copied to the provider.
async fn reflect_dependencies(
    local: &Client,
    provider: &Client,
    pod: &Value,
    ns: &str,
    remote_ns: &str,
    me: &str,
) -> Result<(), kube::Error> {
    let (configmaps, secrets) = references(pod);
    let pp = PatchParams::apply(MANAGER).force();
    for name in configmaps {
        // The provider publishes its own CA under this name.
        if name == "kube-root-ca.crt" {
            continue;
        }
        if let Some(cm) = Api::<ConfigMap>::namespaced(local.clone(), ns)
            .get_opt(&name)
            .await?
        {
            let copy = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": remote_ns, "labels": {TENANT_LABEL: me}},
                "data": cm.data, "binaryData": cm.binary_data});
            Api::<ConfigMap>::namespaced(provider.clone(), remote_ns)
                .patch(&name, &pp, &Patch::Apply(&copy))
                .await?;
        }
    }
    for name in secrets {
        if let Some(s) = Api::<Secret>::namespaced(local.clone(), ns)
            .get_opt(&name)
            .await?
        {
            if s.type_.as_deref() == Some("kubernetes.io/service-account-token") {
                continue;
            }
            let copy = json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": remote_ns, "labels": {TENANT_LABEL: me}},
                "type": s.type_, "data": s.data});
            Api::<Secret>::namespaced(provider.clone(), remote_ns)
                .patch(&name, &pp, &Patch::Apply(&copy))
                .await?;
        }
    }
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    if sa != "default" {
        let copy = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": remote_ns, "labels": {TENANT_LABEL: me}}});
        Api::<ServiceAccount>::namespaced(provider.clone(), remote_ns)
            .patch(sa, &pp, &Patch::Apply(&copy))
            .await?;
    }
    Ok(())
}

/// The ConfigMaps and Secrets a pod names (volumes, projected sources, env, envFrom).
fn references(pod: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let spec = &pod["spec"];
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if let Some(n) = v["configMap"]["name"].as_str() {
            cms.insert(n.to_string());
        }
        if let Some(n) = v["secret"]["secretName"].as_str() {
            secrets.insert(n.to_string());
        }
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            if let Some(n) = s["configMap"]["name"].as_str() {
                cms.insert(n.to_string());
            }
            if let Some(n) = s["secret"]["name"].as_str() {
                secrets.insert(n.to_string());
            }
        }
    }
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(n) = e["valueFrom"]["configMapKeyRef"]["name"].as_str() {
                    cms.insert(n.to_string());
                }
                if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    secrets.insert(n.to_string());
                }
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                if let Some(n) = e["configMapRef"]["name"].as_str() {
                    cms.insert(n.to_string());
                }
                if let Some(n) = e["secretRef"]["name"].as_str() {
                    secrets.insert(n.to_string());
                }
            }
        }
    }
    (cms, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_references_are_found_everywhere_it_names_them() {
        let pod = json!({"spec": {
            "volumes": [{"name": "a", "configMap": {"name": "cm1"}}, {"name": "b", "secret": {"secretName": "s1"}},
                        {"name": "c", "projected": {"sources": [{"configMap": {"name": "cm2"}}, {"secret": {"name": "s2"}}]}}],
            "containers": [{"name": "x", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "k"}}}],
                            "envFrom": [{"configMapRef": {"name": "cm3"}}]}],
        }});
        let (cms, secrets) = references(&pod);
        assert_eq!(cms, ["cm1", "cm2", "cm3"].map(String::from).into());
        assert_eq!(secrets, ["s1", "s2", "s3"].map(String::from).into());
    }
}
