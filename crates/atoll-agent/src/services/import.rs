//! Import: for every import the hub delivers to this cluster (`ImportedService` in the
//! cluster's namespace there), where the namespace exists here, a `ServiceImport` of the same
//! name (its `status.clusters` the exporting clusters) and one EndpointSlice per exporting
//! cluster and slice, labelled with the service and the source cluster and managed by Atoll,
//! owned by the ServiceImport. What the hub no longer delivers goes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::cluster::cluster_namespace;
use atoll_api::mcs::v1beta1::ServiceImport;
use atoll_api::mcs::{
    CONDITION_READY, ImportedService, LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER, REASON_READY,
    SLICE_MANAGER, record_name,
};
use atoll_runtime::queue::WorkQueue;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::export::reflect;
use super::{Cache, cached, gone_ok, watch_hub};
use crate::{Error, MANAGER};

type Key = (String, String);

struct Ctx {
    cluster: String,
    member: Client,
    namespaces: Store<Namespace>,
    imports: Store<ServiceImport>,
    slices: Store<EndpointSlice>,
    /// The hub's imports for this cluster, by record name.
    delivered: Cache<ImportedService>,
}

pub(crate) async fn run(
    cluster: String,
    hub: tokio::sync::watch::Receiver<Client>,
    member: Client,
) {
    let queue: WorkQueue<Key> = WorkQueue::new();
    let (namespaces, namespaces_w) = reflector::store();
    let (imports, imports_w) = reflector::store();
    let (slices, slices_w) = reflector::store();
    let delivered: Cache<ImportedService> = Arc::new(Mutex::new(HashMap::new()));
    {
        let q = queue.clone();
        reflect(
            Api::<ServiceImport>::all(member.clone()),
            watcher::Config::default(),
            imports_w,
            move |i: &ServiceImport| q.add((i.namespace().unwrap_or_default(), i.name_any())),
        );
        let q = queue.clone();
        reflect(
            Api::<EndpointSlice>::all(member.clone()),
            watcher::Config::default().labels(&format!(
                "endpointslice.kubernetes.io/managed-by={SLICE_MANAGER}"
            )),
            slices_w,
            move |s: &EndpointSlice| {
                if let Some(svc) = s.labels().get(LABEL_SERVICE_NAME) {
                    q.add((s.namespace().unwrap_or_default(), svc.clone()))
                }
            },
        );
        // A namespace that appears (or goes) changes what may be imported into it.
        let (q, d) = (queue.clone(), delivered.clone());
        reflect(
            Api::<Namespace>::all(member.clone()),
            watcher::Config::default(),
            namespaces_w,
            move |n: &Namespace| {
                let name = n.name_any();
                for i in d.lock().unwrap_or_else(|p| p.into_inner()).values() {
                    if i.spec.namespace == name {
                        q.add((i.spec.namespace.clone(), i.spec.name.clone()));
                    }
                }
            },
        );
        let q = queue.clone();
        watch_hub(
            hub,
            cluster_namespace(&cluster),
            delivered.clone(),
            move |i: &ImportedService| q.add((i.spec.namespace.clone(), i.spec.name.clone())),
        );
    }
    let _ = namespaces.wait_until_ready().await;
    let _ = imports.wait_until_ready().await;
    let _ = slices.wait_until_ready().await;
    let ctx = Arc::new(Ctx {
        cluster,
        member,
        namespaces,
        imports,
        slices,
        delivered,
    });
    // Imports left from before (their hub record went while the agent was away) go too.
    for i in ctx.imports.state() {
        queue.add((i.namespace().unwrap_or_default(), i.name_any()));
    }
    let c = ctx.clone();
    let workers = queue.run(2, "serviceimport", move |k| reconcile(c.clone(), k));
    for w in workers {
        let _ = w.await;
    }
}

/// An imported slice's name: the service, the source cluster and the slice's place, cut to
/// what a name may hold.
fn slice_name(service: &str, cluster: &str, index: usize) -> String {
    let name = format!("{service}-{cluster}-{index}");
    if name.len() <= 253 {
        return name;
    }
    format!("{}-{}", &name[..200], atoll_work::hub_hash(&name))
}

async fn reconcile(ctx: Arc<Ctx>, (namespace, name): Key) -> Result<Option<Duration>, Error> {
    let record = record_name(&namespace, &name);
    let imports: Api<ServiceImport> = Api::namespaced(ctx.member.clone(), &namespace);
    let slices_api: Api<EndpointSlice> = Api::namespaced(ctx.member.clone(), &namespace);
    let ours: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(namespace.as_str())
                && s.labels().get(LABEL_SERVICE_NAME) == Some(&name)
        })
        .collect();
    let namespace_here = ctx
        .namespaces
        .get(&ObjectRef::new(&namespace))
        .is_some_and(|n| n.metadata.deletion_timestamp.is_none());
    let delivered = cached(&ctx.delivered, &record).filter(|_| namespace_here);
    let Some(delivered) = delivered else {
        if ctx
            .imports
            .get(&ObjectRef::new(&name).within(&namespace))
            .is_some()
        {
            gone_ok(imports.delete(&name, &DeleteParams::default()).await)?;
        }
        for s in ours {
            gone_ok(
                slices_api
                    .delete(&s.name_any(), &DeleteParams::default())
                    .await,
            )?;
        }
        return Ok(None);
    };
    let spec = &delivered.spec;
    let mut metadata = json!({"name": name, "namespace": namespace});
    if !spec.labels.is_empty() {
        metadata["labels"] = json!(spec.labels);
    }
    if !spec.annotations.is_empty() {
        metadata["annotations"] = json!(spec.annotations);
    }
    let obj = json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceImport",
        "metadata": metadata,
        "spec": spec.service,
    });
    let applied = imports
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await?;
    let any_slice = spec.clusters.iter().any(|c| !c.slices.is_empty());
    let status = json!({
        "clusters": spec.clusters.iter().map(|c| json!({"cluster": c.cluster})).collect::<Vec<_>>(),
        "endpointSliceObjects": if any_slice { "Present" } else { "Absent" },
        "conditions": [{
            "type": CONDITION_READY, "status": "True", "reason": REASON_READY,
            "message": format!("imported from {} cluster(s) of cluster set {}", spec.clusters.len(), spec.cluster_set),
            "lastTransitionTime": applied.status.as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY))
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(atoll_runtime::now),
        }],
    });
    let current = applied
        .status
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or_default());
    if current.as_ref() != Some(&status) {
        imports
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    let owner = json!([{
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
        "name": name, "uid": applied.metadata.uid, "controller": true, "blockOwnerDeletion": false,
    }]);
    let mut wanted = BTreeSet::new();
    for part in &spec.clusters {
        for (i, slice) in part.slices.iter().enumerate() {
            let slice_name = slice_name(&name, &part.cluster, i);
            wanted.insert(slice_name.clone());
            let obj = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name, "namespace": namespace,
                    "labels": {
                        LABEL_SERVICE_NAME: name,
                        LABEL_SOURCE_CLUSTER: part.cluster,
                        "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
                    },
                    "ownerReferences": owner,
                },
                "addressType": slice.address_type,
                "endpoints": slice.endpoints,
                "ports": slice.ports,
            });
            let same = ours
                .iter()
                .find(|s| s.name_any() == slice_name)
                .is_some_and(|s| {
                    s.endpoints == slice.endpoints
                        && s.ports.clone().unwrap_or_default() == slice.ports
                        && s.address_type == slice.address_type
                        && s.labels().get(LABEL_SOURCE_CLUSTER) == Some(&part.cluster)
                });
            if !same {
                slices_api
                    .patch(
                        &slice_name,
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(&obj),
                    )
                    .await?;
            }
        }
    }
    for s in ours.iter().filter(|s| !wanted.contains(&s.name_any())) {
        gone_ok(
            slices_api
                .delete(&s.name_any(), &DeleteParams::default())
                .await,
        )?;
    }
    let _ = &ctx.cluster;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_names_fit() {
        assert_eq!(slice_name("web", "member1", 0), "web-member1-0");
        let long = slice_name(&"s".repeat(63), &"c".repeat(250), 3);
        assert!(long.len() <= 253, "{}", long.len());
        assert_ne!(long, slice_name(&"s".repeat(63), &"c".repeat(250), 4));
    }
}
