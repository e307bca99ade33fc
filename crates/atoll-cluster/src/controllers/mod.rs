//! The workload controllers (kube-controller-manager's part of a cluster): ReplicaSet,
//! Deployment, StatefulSet, DaemonSet, Job, CronJob, volume binding, EndpointSlice, the Service proxy, the default ServiceAccount, and node lifecycle.
//!
//! One set of caches (kube-rs reflectors) feeds all of them. Each cache's events are mapped to
//! the keys of the objects to reconcile and put on that controller's work queue *after* the
//! cache has applied them, so a reconcile always sees at least the state that triggered it. A
//! key is never reconciled twice at once; a change during a reconcile runs it again after.

mod cronjob;
mod daemonset;
mod deployment;
mod endpointslice;
mod job;
mod nodelifecycle;
mod replicaset;
mod serviceaccount;
mod serviceproxy;
mod statefulset;
mod volume;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolumeClaim, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::Error;

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The range node pod CIDRs (/24 each) are carved from, in 127.0.0.0/8.
    pub cluster_cidr: String,
    /// How long a pod stays on an unreachable or not-ready node when it has no toleration of
    /// its own (what kube-apiserver's DefaultTolerationSeconds admission adds: 300 s).
    pub default_toleration_seconds: i64,
    /// Concurrent reconciles per controller.
    pub workers: usize,
    /// The cluster CA (PEM) published in every namespace as ConfigMap `kube-root-ca.crt`,
    /// as kube-controller-manager's root CA publisher does; none publishes nothing.
    pub root_ca: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            cluster_cidr: "127.16.0.0/16".into(),
            default_toleration_seconds: 300,
            workers: 8,
            root_ca: None,
        }
    }
}

/// Most pods a controller creates or deletes in one pass (the rest in the next), as
/// Kubernetes' burst.
pub(crate) const BURST: usize = 500;

/// A namespaced (or cluster-scoped, empty namespace) object key.
pub(crate) type Key = (String, String);

/// The caches every controller reads.
pub(crate) struct Caches {
    pub pods: Store<Pod>,
    pub replicasets: Store<ReplicaSet>,
    pub replicationcontrollers: Store<ReplicationController>,
    pub deployments: Store<Deployment>,
    pub jobs: Store<Job>,
    pub cronjobs: Store<CronJob>,
    pub daemonsets: Store<DaemonSet>,
    pub statefulsets: Store<StatefulSet>,
    pub claims: Store<PersistentVolumeClaim>,
    pub services: Store<Service>,
    /// EndpointSlices that no controller here derives from a selector (the `kubernetes`
    /// Service's, a selector-less Service's own): the service proxy's endpoints for those.
    pub foreign_slices: Store<EndpointSlice>,
    /// Multi-cluster services imported here (the MCS CRDs may not be installed: never waited
    /// for).
    pub service_imports: Store<atoll_api::mcs::v1beta1::ServiceImport>,
    /// This cluster's id in its cluster set (ClusterProperty `cluster.clusterset.k8s.io`), if
    /// it has one; refreshed every few seconds.
    pub cluster_id: std::sync::Mutex<Option<String>>,
    pub nodes: Store<Node>,
    pub leases: Store<Lease>,
    pub namespaces: Store<Namespace>,
}

pub(crate) struct Ctx {
    pub client: Client,
    pub cfg: ControllerConfig,
    pub caches: Caches,
}

/// Run every controller until the process ends.
pub async fn run(client: Client, cfg: ControllerConfig) -> Result<(), Error> {
    let rs_queue = WorkQueue::new();
    let rc_queue = WorkQueue::new();
    let deploy_queue = WorkQueue::new();
    let job_queue = WorkQueue::new();
    let ds_queue = WorkQueue::new();
    let cj_queue = WorkQueue::new();
    let sts_queue = WorkQueue::new();
    let claim_queue = WorkQueue::new();
    let svc_queue = WorkQueue::new();
    let ns_queue = WorkQueue::new();

    let (pods, pods_w) = reflector::store();
    let (replicasets, rs_w) = reflector::store();
    let (replicationcontrollers, rc_w) = reflector::store();
    let (deployments, deploy_w) = reflector::store();
    let (jobs, jobs_w) = reflector::store();
    let (daemonsets, ds_w) = reflector::store();
    let (cronjobs, cj_w) = reflector::store();
    let (statefulsets, sts_w) = reflector::store();
    let (claims, claims_w) = reflector::store();
    let (services, svc_w) = reflector::store();
    let (foreign_slices, foreign_slices_w) = reflector::store();
    let (service_imports, service_imports_w) = reflector::store();
    let (nodes, nodes_w) = reflector::store();
    let (leases, leases_w) = reflector::store();
    let (namespaces, ns_w) = reflector::store();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cfg: cfg.clone(),
        caches: Caches {
            pods,
            replicasets,
            replicationcontrollers,
            deployments,
            jobs,
            cronjobs,
            daemonsets,
            statefulsets,
            claims,
            services,
            foreign_slices,
            service_imports,
            cluster_id: std::sync::Mutex::new(None),
            nodes,
            leases,
            namespaces,
        },
    });

    {
        let (rs_q, rc_q, job_q, ds_q, sts_q, svc_q, ctx2) = (
            rs_queue.clone(),
            rc_queue.clone(),
            job_queue.clone(),
            ds_queue.clone(),
            sts_queue.clone(),
            svc_queue.clone(),
            ctx.clone(),
        );
        drive(Api::<Pod>::all(client.clone()), pods_w, move |pod: &Pod| {
            if let Some(owner) = controller_of(pod, "ReplicaSet") {
                rs_q.add((pod.namespace().unwrap_or_default(), owner));
            }
            if let Some(owner) = controller_of(pod, "ReplicationController") {
                rc_q.add((pod.namespace().unwrap_or_default(), owner));
            }
            if let Some(owner) = controller_of(pod, "Job") {
                job_q.add((pod.namespace().unwrap_or_default(), owner));
            }
            if let Some(owner) = controller_of(pod, "DaemonSet") {
                ds_q.add((pod.namespace().unwrap_or_default(), owner));
            }
            if let Some(owner) = controller_of(pod, "StatefulSet") {
                sts_q.add((pod.namespace().unwrap_or_default(), owner));
            }
            for svc in endpointslice::services_selecting(&ctx2, pod) {
                svc_q.add(svc);
            }
        });
    }
    {
        let rc_q = rc_queue.clone();
        drive(
            Api::<ReplicationController>::all(client.clone()),
            rc_w,
            move |rc: &ReplicationController| rc_q.add(key_of(rc)),
        );
    }
    {
        let (rs_q, d_q) = (rs_queue.clone(), deploy_queue.clone());
        drive(
            Api::<ReplicaSet>::all(client.clone()),
            rs_w,
            move |rs: &ReplicaSet| {
                rs_q.add(key_of(rs));
                if let Some(owner) = controller_of(rs, "Deployment") {
                    d_q.add((rs.namespace().unwrap_or_default(), owner));
                }
            },
        );
    }
    {
        let d_q = deploy_queue.clone();
        drive(
            Api::<Deployment>::all(client.clone()),
            deploy_w,
            move |d: &Deployment| d_q.add(key_of(d)),
        );
    }
    {
        let q = claim_queue.clone();
        drive(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            claims_w,
            move |c: &PersistentVolumeClaim| q.add(key_of(c)),
        );
    }
    {
        let q = sts_queue.clone();
        drive(
            Api::<StatefulSet>::all(client.clone()),
            sts_w,
            move |s: &StatefulSet| q.add(key_of(s)),
        );
    }
    {
        let d_q = ds_queue.clone();
        drive(
            Api::<DaemonSet>::all(client.clone()),
            ds_w,
            move |d: &DaemonSet| d_q.add(key_of(d)),
        );
    }
    {
        let (j_q, c_q) = (job_queue.clone(), cj_queue.clone());
        drive(Api::<Job>::all(client.clone()), jobs_w, move |j: &Job| {
            j_q.add(key_of(j));
            if let Some(owner) = controller_of(j, "CronJob") {
                c_q.add((j.namespace().unwrap_or_default(), owner));
            }
        });
    }
    {
        let c_q = cj_queue.clone();
        drive(
            Api::<CronJob>::all(client.clone()),
            cj_w,
            move |c: &CronJob| c_q.add(key_of(c)),
        );
    }
    {
        let s_q = svc_queue.clone();
        drive(
            Api::<Service>::all(client.clone()),
            svc_w,
            move |s: &Service| s_q.add(key_of(s)),
        );
    }
    {
        let n_q = ns_queue.clone();
        drive(
            Api::<Namespace>::all(client.clone()),
            ns_w,
            move |n: &Namespace| n_q.add(key_of(n)),
        );
    }
    {
        // A node that comes, goes or changes may want a daemon pod, or no longer.
        let (d_q, ctx2) = (ds_queue.clone(), ctx.clone());
        drive(
            Api::<Node>::all(client.clone()),
            nodes_w,
            move |_: &Node| {
                for ds in ctx2.caches.daemonsets.state() {
                    d_q.add(key_of(ds.as_ref()));
                }
            },
        );
    }
    drive(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        leases_w,
        |_: &Lease| {},
    );
    atoll_runtime::reflect::reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!(
            "endpointslice.kubernetes.io/managed-by!={}",
            endpointslice::MANAGED_BY
        )),
        foreign_slices_w,
        |_: &EndpointSlice| {},
    );
    {
        let c = ctx.clone();
        tokio::spawn(async move {
            let props: Api<atoll_api::cluster::ClusterProperty> = Api::all(c.client.clone());
            loop {
                if let Ok(Some(p)) = props.get_opt(atoll_api::cluster::CLUSTER_ID_PROPERTY).await {
                    *c.caches
                        .cluster_id
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(p.spec.value);
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    drive(
        Api::<atoll_api::mcs::v1beta1::ServiceImport>::all(client.clone()),
        service_imports_w,
        |_: &atoll_api::mcs::v1beta1::ServiceImport| {},
    );
    // The slices derived here and service accounts are not cached; their changes only trigger
    // their owners.
    {
        let s_q = svc_queue.clone();
        trigger(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(endpointslice::MANAGED_BY_SELECTOR),
            move |s: &EndpointSlice| {
                if let Some(svc) = s.labels().get("kubernetes.io/service-name") {
                    s_q.add((s.namespace().unwrap_or_default(), svc.clone()));
                }
            },
        );
    }
    {
        let n_q = ns_queue.clone();
        trigger(
            Api::<ServiceAccount>::all(client.clone()),
            watcher::Config::default().fields("metadata.name=default"),
            move |sa: &ServiceAccount| n_q.add((String::new(), sa.namespace().unwrap_or_default())),
        );
    }
    if cfg.root_ca.is_some() {
        // A changed or deleted `kube-root-ca.crt` is put back.
        let n_q = ns_queue.clone();
        trigger(
            Api::<k8s_openapi::api::core::v1::ConfigMap>::all(client.clone()),
            watcher::Config::default().fields(&format!(
                "metadata.name={}",
                serviceaccount::ROOT_CA_CONFIGMAP
            )),
            move |cm: &k8s_openapi::api::core::v1::ConfigMap| {
                n_q.add((String::new(), cm.namespace().unwrap_or_default()))
            },
        );
    }

    for store in [&ctx.caches.pods.clone()] {
        let _ = store.wait_until_ready().await;
    }
    let _ = ctx.caches.replicasets.wait_until_ready().await;
    let _ = ctx.caches.replicationcontrollers.wait_until_ready().await;
    let _ = ctx.caches.deployments.wait_until_ready().await;
    let _ = ctx.caches.jobs.wait_until_ready().await;
    let _ = ctx.caches.daemonsets.wait_until_ready().await;
    let _ = ctx.caches.cronjobs.wait_until_ready().await;
    let _ = ctx.caches.statefulsets.wait_until_ready().await;
    let _ = ctx.caches.claims.wait_until_ready().await;
    let _ = ctx.caches.services.wait_until_ready().await;
    let _ = ctx.caches.foreign_slices.wait_until_ready().await;
    let _ = ctx.caches.nodes.wait_until_ready().await;
    let _ = ctx.caches.namespaces.wait_until_ready().await;
    tracing::info!("cluster controllers ready");

    let workers = cfg.workers.max(1);
    let c = ctx.clone();
    rs_queue.run(workers, "replicaset", move |k| {
        replicaset::reconcile(c.clone(), k)
    });
    let c = ctx.clone();
    rc_queue.run(workers, "replicationcontroller", move |k| {
        replicaset::reconcile_rc(c.clone(), k)
    });
    let c = ctx.clone();
    deploy_queue.run(workers, "deployment", move |k| {
        deployment::reconcile(c.clone(), k)
    });
    let c = ctx.clone();
    job_queue.run(workers, "job", move |k| job::reconcile(c.clone(), k));
    let c = ctx.clone();
    cj_queue.run(2, "cronjob", move |k| cronjob::reconcile(c.clone(), k));
    let c = ctx.clone();
    claim_queue.run(2, "volume", move |k| volume::reconcile(c.clone(), k));
    let c = ctx.clone();
    sts_queue.run(workers, "statefulset", move |k| {
        statefulset::reconcile(c.clone(), k)
    });
    let c = ctx.clone();
    ds_queue.run(workers, "daemonset", move |k| {
        daemonset::reconcile(c.clone(), k)
    });
    let c = ctx.clone();
    svc_queue.run(workers, "endpointslice", move |k| {
        endpointslice::reconcile(c.clone(), k)
    });
    let c = ctx.clone();
    ns_queue.run(2, "serviceaccount", move |k| {
        serviceaccount::reconcile(c.clone(), k)
    });
    // A periodic pass catches what no event announced (a lapsed lease, a pod that stopped
    // matching a Service's selector).
    let resync = {
        let (rs_q, rc_q, d_q, j_q, ds_q, c_q, st_q, s_q, ctx) = (
            rs_queue.clone(),
            rc_queue.clone(),
            deploy_queue.clone(),
            job_queue.clone(),
            ds_queue.clone(),
            cj_queue.clone(),
            sts_queue.clone(),
            svc_queue.clone(),
            ctx.clone(),
        );
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                ctx.caches
                    .replicasets
                    .state()
                    .iter()
                    .for_each(|o| rs_q.add(key_of(o.as_ref())));
                ctx.caches
                    .replicationcontrollers
                    .state()
                    .iter()
                    .for_each(|o| rc_q.add(key_of(o.as_ref())));
                ctx.caches
                    .deployments
                    .state()
                    .iter()
                    .for_each(|o| d_q.add(key_of(o.as_ref())));
                ctx.caches
                    .jobs
                    .state()
                    .iter()
                    .for_each(|o| j_q.add(key_of(o.as_ref())));
                ctx.caches
                    .daemonsets
                    .state()
                    .iter()
                    .for_each(|o| ds_q.add(key_of(o.as_ref())));
                ctx.caches
                    .cronjobs
                    .state()
                    .iter()
                    .for_each(|o| c_q.add(key_of(o.as_ref())));
                ctx.caches
                    .statefulsets
                    .state()
                    .iter()
                    .for_each(|o| st_q.add(key_of(o.as_ref())));
                ctx.caches
                    .services
                    .state()
                    .iter()
                    .for_each(|o| s_q.add(key_of(o.as_ref())));
            }
        }
    };
    tokio::join!(
        nodelifecycle::run(ctx.clone()),
        serviceproxy::run(ctx.clone()),
        resync
    );
    Ok(())
}

pub(crate) fn key_of<K: Resource>(o: &K) -> Key {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

/// The name of `o`'s controlling owner of `kind`.
pub(crate) fn controller_of<K: Resource>(o: &K, kind: &str) -> Option<String> {
    o.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == kind)
        .map(|r| r.name.clone())
}

/// Keep a cache in sync and call `on_change` for every object it applies, deletes or lists
/// again (`atoll_runtime::reflect`, as the hub's and the agent's caches).
fn drive<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    on_change: impl Fn(&K) + Send + 'static,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    atoll_runtime::reflect::reflect(api, watcher::Config::default(), writer, on_change);
}

/// Watch without caching, calling `on_change` for every change.
fn trigger<K>(api: Api<K>, wc: watcher::Config, on_change: impl Fn(&K) + Send + 'static)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = watcher(api, wc).default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => on_change(&o),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "trigger watch error"),
            }
        }
    });
}

pub(crate) type WorkQueue = atoll_runtime::queue::WorkQueue<Key>;

/// Wait (briefly) until the cache shows what we just did, so the next reconcile does not act
/// on a state from before it.
pub(crate) async fn wait_for_cache(check: impl Fn() -> bool) {
    for _ in 0..250 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The cached object `namespace/name`, unless it is gone or going (nothing to reconcile then).
pub(crate) fn live<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .get(&ObjectRef::new(name).within(namespace))
        .filter(|o| o.meta().deletion_timestamp.is_none())
}

/// Write `status` to `K` `namespace/name` (a merge patch of its status subresource) when it
/// differs from what the object shows; false if the object is gone.
pub(crate) async fn update_status<K>(
    ctx: &Ctx,
    namespace: &str,
    name: &str,
    status: &serde_json::Value,
    shown: &serde_json::Value,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if status == shown {
        return Ok(true);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({ "status": status });
    match api
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A short, stable hash of a pod template (FNV-1a of its JSON), naming its revision.
pub(crate) fn template_hash<T: serde::Serialize>(template: &T) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:x}", h & 0xff_ffff_ffff)
}

/// A reference to `owner` as the controller of what it makes.
pub(crate) fn controller_ref<K>(owner: &K) -> OwnerReference
where
    K: Resource<DynamicType = ()>,
{
    OwnerReference {
        api_version: K::api_version(&()).into(),
        kind: K::kind(&()).into(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod from `owner`'s template, controlled by `owner` (named after it, with a suffix).
pub(crate) fn pod_of<K>(owner: &K, template: Option<PodTemplateSpec>) -> Pod
where
    K: Resource<DynamicType = ()>,
{
    let template = template.unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let name = owner.meta().name.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: owner.meta().namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Create `pods` in `namespace` (32 at a time) and wait until the cache has them; the names
/// of those created. `owner` names who wants them, for the log.
pub(crate) async fn create_pods(
    ctx: &Ctx,
    namespace: &str,
    pods: Vec<Pod>,
    owner: &str,
) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let created: Vec<String> = futures::stream::iter(pods)
        .map(|pod| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &pod).await }
        })
        .buffer_unordered(32)
        .filter_map(|r| async move {
            match r {
                Ok(p) => Some(p.name_any()),
                Err(e) => {
                    tracing::warn!(owner, error = %e, "cannot create a pod");
                    None
                }
            }
        })
        .collect()
        .await;
    wait_for_cache(|| {
        created.iter().all(|n| {
            ctx.caches
                .pods
                .get(&ObjectRef::new(n).within(namespace))
                .is_some()
        })
    })
    .await;
    created
}

/// Delete the pods `names` in `namespace` (32 at a time) and wait until the cache shows them
/// going.
pub(crate) async fn delete_pods(ctx: &Ctx, namespace: &str, names: &[String], owner: &str) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    futures::stream::iter(names.iter().cloned())
        .map(|n| {
            let api = api.clone();
            async move {
                match api.delete(&n, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => tracing::warn!(owner, pod = %n, error = %e, "cannot delete a pod"),
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    wait_for_cache(|| {
        names.iter().all(|n| {
            ctx.caches
                .pods
                .get(&ObjectRef::new(n).within(namespace))
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
        })
    })
    .await;
}

/// Pods in `namespace` controlled by the object with `uid`.
pub(crate) fn pods_controlled_by(ctx: &Ctx, namespace: &str, uid: &str) -> Vec<Arc<Pod>> {
    ctx.caches
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.controller == Some(true) && r.uid == uid)
        })
        .collect()
}
