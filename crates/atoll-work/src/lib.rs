//! The one applier of ManifestWorks, shared by the member agent (Pull mode) and the hub (Push
//! mode): it watches the works of one cluster's namespace on the hub, applies each into the
//! cluster, and reports their status back; the same member state whichever mode delivered it.
//!
//! # Guarantees
//! - Manifests are applied in kind order ([`order`]), each by its update strategy (`Update`
//!   and `ServerSideApply` by server-side apply as `atoll-work`, `CreateOnly`, `ReadOnly`), as
//!   the work's executor if it names one (impersonation).
//! - What a work applied is recorded by uid in its `AppliedManifestWork` in the cluster; a
//!   manifest dropped from the work is deleted if this work applied it (and no other work
//!   holds it); deleting the work deletes what it applied first, unless orphaned (the hub's
//!   finalizer `work.atoll.io/cleanup` waits for that).
//! - Drift is corrected from watches of what was applied, not on a timer: an object edited or
//!   deleted by hand is put back at once. The same watches bring status feedback back.
//! - After an outage the applier lists again: works the hub deleted meanwhile (their
//!   finalizer removed by force, or the namespace gone) have their resources removed by the
//!   delete option they last had.
//!
//! # Caveats
//! - One bad manifest fails the work (`Applied=False`, naming it) while the others apply.
//! - Nothing here knows of hubs beyond their namespace and hash: the caller gives the clients.

pub mod apply;
pub mod drift;
pub mod feedback;
pub mod member;
pub mod order;
pub mod services;
pub mod status;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::work::{
    APPLIED_BY_LABEL, AppliedManifestWork, AppliedManifestWorkSpec, AppliedManifestWorkStatus,
    AppliedResource, DeleteOption, ManifestWork, OrphaningRule, WORK_FINALIZER,
};
use atoll_runtime::queue::WorkQueue;
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

use crate::apply::{Identity, Served};
use crate::feedback::Health;
use crate::status::ManifestResult;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Annotation on an AppliedManifestWork: the work's delete option when last applied, so its
/// resources are removed as it said even if the hub lost the work meanwhile.
pub const DELETE_OPTION_ANNOTATION: &str = "work.atoll.io/delete-option";

/// The cluster works are applied to.
#[derive(Clone)]
pub struct Member {
    pub client: Client,
    /// What the client was made from: executors are impersonated with it.
    pub config: kube::Config,
}

/// Who applies.
#[derive(Clone, Debug)]
pub struct WorkConfig {
    /// The hub namespace of the cluster's works (`atoll-cluster-<name>`).
    pub namespace: String,
    /// What marks this applier's objects ([`applier_hash`]).
    pub hub_hash: String,
    /// Who applies: the agent's user, or the hub for Push clusters.
    pub agent_id: String,
    /// Workers applying works at once.
    pub workers: usize,
    /// Every this often, every work is applied again in full (drift is corrected from watches
    /// at once; this catches what a watch may have missed, as OCM's resync does).
    pub resync_every: Duration,
    /// Notified, every work is applied again in full now (the hub does so for a Push cluster
    /// whose credential stops working, so its works say why).
    pub resync: Option<Arc<tokio::sync::Notify>>,
}

impl WorkConfig {
    pub fn new(namespace: String, hub_hash: String, agent_id: String) -> WorkConfig {
        WorkConfig {
            namespace,
            hub_hash,
            agent_id,
            workers: 4,
            resync_every: Duration::from_secs(300),
            resync: None,
        }
    }
}

/// A short, stable name for a hub: the first 8 bytes of the SHA-256 of its address, as hex.
pub fn hub_hash(hub_url: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        hub_url.trim_end_matches('/').as_bytes(),
    );
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What marks this applier's objects in a cluster: the hub and the cluster's namespace
/// there (so a member registered twice, or several clusters sharing one API server as the
/// benchmarks do, keep apart).
pub fn applier_hash(hub_url: &str, namespace: &str) -> String {
    hub_hash(&format!("{}/{namespace}", hub_url.trim_end_matches('/')))
}

/// The AppliedManifestWork of work `work` of hub `hash`: `<hash>-<work>`.
pub fn applied_name(hash: &str, work: &str) -> String {
    let name = format!("{hash}-{work}");
    if name.len() <= 253 {
        name
    } else {
        format!("{hash}-{}", hub_hash(work))
    }
}

/// Install the AppliedManifestWork CRD into the cluster.
pub async fn install(member: &Client) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(member.clone());
    let crd = AppliedManifestWork::crd();
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply(atoll_api::work::APPLIER_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await?;
    let api: Api<AppliedManifestWork> = Api::all(member.clone());
    for _ in 0..600 {
        if api.list(&ListParams::default().limit(1)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Invalid(
        "the AppliedManifestWork CRD was not served within 30 s".into(),
    ))
}

/// An applied object: group, plural, namespace, name.
type ObjKey = (String, String, String, String);

#[derive(Default)]
struct State {
    works: HashMap<String, Arc<ManifestWork>>,
    applied: HashMap<String, Arc<AppliedManifestWork>>,
    /// Which work applied each object.
    owners: HashMap<ObjKey, String>,
    /// Objects as the drift watches last saw them.
    live: HashMap<ObjKey, Value>,
    /// Objects as the cluster returned them when last applied.
    last_applied: HashMap<ObjKey, Value>,
    /// The generation of each work last applied in full.
    generations: HashMap<String, i64>,
    /// Kinds with a drift watch.
    watched: HashSet<(String, String, String)>,
}

struct Agent {
    hub: tokio::sync::watch::Receiver<Client>,
    member: Member,
    cfg: WorkConfig,
    kinds: apply::Kinds,
    state: Mutex<State>,
    queue: WorkQueue<String>,
    executors: Mutex<HashMap<String, Client>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Agent {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hub(&self) -> Client {
        self.hub.borrow().clone()
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tokio::spawn(f));
    }
}

/// Stops what [`run`] started when its future is dropped.
struct Tasks(Arc<Agent>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in self
            .0
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// Apply the works of `cfg.namespace` on the hub into `member` until the future is dropped.
/// `hub` gives the client to the hub (a new one when the caller's identity rotates).
pub async fn run(
    hub: tokio::sync::watch::Receiver<Client>,
    member: Member,
    cfg: WorkConfig,
) -> Result<(), Error> {
    // The CRD is installed by whoever may ([`install`]: the agent; `atoll join --sync-mode
    // Push` for a Push cluster, whose credential may not); wait until it is served.
    let applied_api: Api<AppliedManifestWork> = Api::all(member.client.clone());
    let mut waited = 0;
    while let Err(e) = applied_api.list(&ListParams::default().limit(1)).await {
        if waited % 60 == 0 {
            tracing::warn!(error = %e, "the cluster does not serve AppliedManifestWorks (yet); waiting");
        }
        waited += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let agent = Arc::new(Agent {
        hub,
        member,
        cfg,
        kinds: Default::default(),
        state: Default::default(),
        queue: WorkQueue::new(),
        executors: Default::default(),
        tasks: Default::default(),
    });
    let _stop = Tasks(agent.clone());
    let (works_synced, applied_synced) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let (w, a) = (works_synced.clone(), applied_synced.clone());
    let a1 = agent.clone();
    agent.spawn(async move { watch_works(a1, w).await });
    let a2 = agent.clone();
    agent.spawn(async move { watch_applied(a2, a).await });
    works_synced.notified().await;
    applied_synced.notified().await;
    // Everything known, works and the AppliedManifestWorks of works the hub no longer has.
    let names: BTreeSet<String> = {
        let s = agent.state();
        s.works.keys().chain(s.applied.keys()).cloned().collect()
    };
    for n in names {
        agent.queue.add(n);
    }
    let a3 = agent.clone();
    let handles = agent
        .queue
        .run(agent.cfg.workers.max(1), "manifestwork", move |name| {
            reconcile(a3.clone(), name)
        });
    agent
        .tasks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(handles);
    let every = agent.cfg.resync_every.max(Duration::from_secs(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        match &agent.cfg.resync {
            Some(n) => tokio::select! {
                _ = tick.tick() => {}
                () = n.notified() => {}
            },
            None => {
                tick.tick().await;
            }
        }
        resync(&agent);
    }
}

/// Apply every work again in full.
fn resync(agent: &Agent) {
    let names: Vec<String> = {
        let mut s = agent.state();
        s.generations.clear();
        s.works.keys().chain(s.applied.keys()).cloned().collect()
    };
    for n in names {
        agent.queue.add(n);
    }
}

/// The hub's works of the namespace, watched with whatever client the caller holds now.
async fn watch_works(agent: Arc<Agent>, synced: Arc<tokio::sync::Notify>) {
    let mut hub = agent.hub.clone();
    let mut told = false;
    loop {
        let api: Api<ManifestWork> = Api::namespaced(agent.hub(), &agent.cfg.namespace);
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut listing: Option<HashSet<String>> = None;
        loop {
            tokio::select! {
                changed = hub.changed() => {
                    if changed.is_err() { return; }
                    break;
                }
                event = stream.next() => {
                    let Some(event) = event else { break };
                    match event {
                        Ok(watcher::Event::Init) => listing = Some(HashSet::new()),
                        Ok(watcher::Event::InitApply(w)) => {
                            if let Some(l) = listing.as_mut() { l.insert(w.name_any()); }
                            work_changed(&agent, w);
                        }
                        Ok(watcher::Event::InitDone) => {
                            let listed = listing.take().unwrap_or_default();
                            let gone: Vec<String> = agent.state().works.keys().filter(|n| !listed.contains(*n)).cloned().collect();
                            for n in gone {
                                agent.state().works.remove(&n);
                                agent.queue.add(n);
                            }
                            if !told { told = true; synced.notify_one(); }
                        }
                        Ok(watcher::Event::Apply(w)) => work_changed(&agent, w),
                        Ok(watcher::Event::Delete(w)) => {
                            let n = w.name_any();
                            agent.state().works.remove(&n);
                            agent.queue.add(n);
                        }
                        Err(e) => tracing::debug!(error = %e, "works watch"),
                    }
                }
            }
        }
    }
}

fn work_changed(agent: &Agent, mut w: ManifestWork) {
    let name = w.name_any();
    w.metadata.managed_fields = None;
    let mut s = agent.state();
    // Only what the applier acts on: a new work, its spec (generation), its deletion, its
    // finalizers; not the status it wrote itself.
    let act = match s.works.get(&name) {
        None => true,
        Some(old) => {
            old.metadata.generation != w.metadata.generation
                || old.metadata.deletion_timestamp != w.metadata.deletion_timestamp
                || old.finalizers() != w.finalizers()
                || old.metadata.uid != w.metadata.uid
        }
    };
    s.works.insert(name.clone(), Arc::new(w));
    drop(s);
    if act {
        agent.queue.add(name);
    }
}

/// This hub's AppliedManifestWorks in the cluster.
async fn watch_applied(agent: Arc<Agent>, synced: Arc<tokio::sync::Notify>) {
    let api: Api<AppliedManifestWork> = Api::all(agent.member.client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let prefix = format!("{}-", agent.cfg.hub_hash);
    let mut told = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitApply(a) | watcher::Event::Apply(a)) => {
                if a.spec.hub_hash != agent.cfg.hub_hash || !a.name_any().starts_with(&prefix) {
                    continue;
                }
                let work = a.spec.manifest_work_name.clone();
                let mut a = a;
                a.metadata.managed_fields = None;
                agent.state().applied.insert(work, Arc::new(a));
            }
            Ok(watcher::Event::Delete(a)) => {
                if a.spec.hub_hash == agent.cfg.hub_hash {
                    agent.state().applied.remove(&a.spec.manifest_work_name);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if !told {
                    told = true;
                    synced.notify_one();
                }
            }
            Ok(watcher::Event::Init) => {}
            Err(e) => tracing::debug!(error = %e, "applied works watch"),
        }
    }
}

/// Watch the objects of kind `served` this hub's works applied (by their label): drift and
/// status changes reconcile the work that applied them.
fn watch_kind(agent: &Arc<Agent>, served: &Served) {
    let key = (
        served.resource.group.clone(),
        served.resource.version.clone(),
        served.resource.plural.clone(),
    );
    if !agent.state().watched.insert(key) {
        return;
    }
    let api: Api<DynamicObject> = Api::all_with(agent.member.client.clone(), &served.resource);
    let selector = format!("{APPLIED_BY_LABEL}={}", agent.cfg.hub_hash);
    let a = agent.clone();
    let resource: ApiResource = served.resource.clone();
    agent.spawn(async move {
        let stream = watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let (obj, gone) = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
                Ok(watcher::Event::Delete(o)) => (o, true),
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, kind = %resource.kind, "drift watch");
                    continue;
                }
            };
            let key: ObjKey = (
                resource.group.clone(),
                resource.plural.clone(),
                obj.namespace().unwrap_or_default(),
                obj.name_any(),
            );
            let owner = {
                let mut s = a.state();
                if gone {
                    s.live.remove(&key);
                } else if let Ok(v) = serde_json::to_value(&obj).map(kept) {
                    let newer = s
                        .live
                        .get(&key)
                        .is_none_or(|old| rv(old).zip(rv(&v)).is_none_or(|(o, n)| n >= o));
                    if newer {
                        s.live.insert(key.clone(), v);
                    }
                }
                s.owners.get(&key).cloned()
            };
            if let Some(work) = owner {
                a.queue.add(work);
            }
        }
    });
}

/// An object as the applier keeps it: without its managed fields, which neither drift nor
/// feedback reads and which are most of a small object (the agent holds two copies of each).
fn kept(mut v: Value) -> Value {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    v
}

fn rv(v: &Value) -> Option<u64> {
    v["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The client to apply a work with: the cluster's, or its executor's by impersonation.
fn client_for(agent: &Agent, work: &ManifestWork) -> Result<Client, String> {
    let Some(sa) = work
        .spec
        .executor
        .as_ref()
        .and_then(|e| e.subject.service_account.as_ref())
    else {
        return Ok(agent.member.client.clone());
    };
    let user = format!("system:serviceaccount:{}:{}", sa.namespace, sa.name);
    let mut cache = agent.executors.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = cache.get(&user) {
        return Ok(c.clone());
    }
    let mut config = agent.member.config.clone();
    config.auth_info.impersonate = Some(user.clone());
    config.auth_info.impersonate_groups = None;
    let client = Client::try_from(config).map_err(|e| format!("executor {user}: {e}"))?;
    cache.insert(user, client.clone());
    Ok(client)
}

fn orphaned(option: Option<&DeleteOption>, r: &AppliedResource) -> bool {
    match option.map(|o| o.propagation_policy.as_str()) {
        Some("Orphan") => true,
        Some("SelectivelyOrphan") => option
            .and_then(|o| o.selectively_orphans.as_ref())
            .is_some_and(|s| {
                s.orphaning_rules.iter().any(|rule: &OrphaningRule| {
                    rule.group == r.group
                        && rule.resource == r.resource
                        && rule.name == r.name
                        && rule.namespace == r.namespace
                })
            }),
        _ => false,
    }
}

fn served_of(r: &AppliedResource) -> Served {
    let api_version = if r.group.is_empty() {
        r.version.clone()
    } else {
        format!("{}/{}", r.group, r.version)
    };
    Served {
        resource: ApiResource {
            group: r.group.clone(),
            version: r.version.clone(),
            api_version,
            kind: String::new(),
            plural: r.resource.clone(),
        },
        namespaced: !r.namespace.is_empty(),
    }
}

/// Delete `resources` unless orphaned (in reverse order: workloads before their namespace);
/// `Ok(true)` once all are gone.
async fn delete_all(
    client: &Client,
    resources: &[AppliedResource],
    option: Option<&DeleteOption>,
) -> Result<bool, String> {
    let mut done = true;
    for r in resources.iter().rev() {
        if orphaned(option, r) {
            continue;
        }
        let served = served_of(r);
        let ns = (!r.namespace.is_empty()).then_some(r.namespace.as_str());
        done &= apply::delete(&apply::api(client, &served, ns), r).await?;
    }
    Ok(done)
}

/// Make the cluster hold what work `name` says, or remove what it applied.
async fn reconcile(agent: Arc<Agent>, name: String) -> Result<Option<Duration>, Error> {
    let (work, applied) = {
        let s = agent.state();
        (s.works.get(&name).cloned(), s.applied.get(&name).cloned())
    };
    let member = agent.member.client.clone();
    match work {
        None => {
            // Gone from the hub without its finalizer being honoured: remove what it
            // applied, as its delete option last said.
            if let Some(a) = applied {
                let option: Option<DeleteOption> = a
                    .annotations()
                    .get(DELETE_OPTION_ANNOTATION)
                    .and_then(|v| serde_json::from_str(v).ok());
                if !remove_applied(&agent, &a, option.as_ref()).await? {
                    return Ok(Some(Duration::from_secs(1)));
                }
                tracing::info!(work = %name, "the hub no longer has this work; removed what it applied");
            }
            Ok(None)
        }
        Some(w) if w.metadata.deletion_timestamp.is_some() => {
            if let Some(a) = &applied
                && !remove_applied(&agent, a, w.spec.delete_option.as_ref()).await?
            {
                return Ok(Some(Duration::from_secs(1)));
            }
            if w.finalizers().iter().any(|f| f == WORK_FINALIZER) {
                let rest: Vec<&String> = w
                    .finalizers()
                    .iter()
                    .filter(|f| *f != WORK_FINALIZER)
                    .collect();
                let api: Api<ManifestWork> = Api::namespaced(agent.hub(), &agent.cfg.namespace);
                match api
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"finalizers": rest, "resourceVersion": w.resource_version()}})),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let _ = member;
            Ok(None)
        }
        Some(w) => apply_work(&agent, &w, applied).await,
    }
}

/// Delete what an AppliedManifestWork recorded (unless orphaned), then it; `Ok(true)` when
/// done.
async fn remove_applied(
    agent: &Arc<Agent>,
    a: &AppliedManifestWork,
    option: Option<&DeleteOption>,
) -> Result<bool, Error> {
    let resources = a
        .status
        .as_ref()
        .map(|s| s.applied_resources.clone())
        .unwrap_or_default();
    let done = delete_all(&agent.member.client, &resources, option)
        .await
        .map_err(Error::Invalid)?;
    if !done {
        return Ok(false);
    }
    let api: Api<AppliedManifestWork> = Api::all(agent.member.client.clone());
    match api.delete(&a.name_any(), &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let mut s = agent.state();
    s.applied.remove(&a.spec.manifest_work_name);
    s.generations.remove(&a.spec.manifest_work_name);
    s.owners.retain(|_, w| *w != a.spec.manifest_work_name);
    Ok(true)
}

async fn apply_work(
    agent: &Arc<Agent>,
    w: &ManifestWork,
    applied: Option<Arc<AppliedManifestWork>>,
) -> Result<Option<Duration>, Error> {
    let name = w.name_any();
    let generation = w.metadata.generation.unwrap_or(0);
    let hub_works: Api<ManifestWork> = Api::namespaced(agent.hub(), &agent.cfg.namespace);
    // The hub waits for this applier before the work goes.
    if !w.finalizers().iter().any(|f| f == WORK_FINALIZER) {
        let mut all = w.finalizers().to_vec();
        all.push(WORK_FINALIZER.into());
        hub_works
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": all, "resourceVersion": w.resource_version()}})),
            )
            .await?;
        // The watch brings the work back with its finalizer; continue from there.
        return Ok(None);
    }
    // Its record in the cluster, with the delete option to honour later.
    let option_text = serde_json::to_string(&w.spec.delete_option).unwrap_or_default();
    let applied_api: Api<AppliedManifestWork> = Api::all(agent.member.client.clone());
    let amw_name = applied_name(&agent.cfg.hub_hash, &name);
    let applied = match applied {
        Some(a) if a.annotations().get(DELETE_OPTION_ANNOTATION) == Some(&option_text) => a,
        Some(_) => Arc::new(
            applied_api
                .patch(
                    &amw_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {DELETE_OPTION_ANNOTATION: option_text}}})),
                )
                .await?,
        ),
        None => {
            let mut a = AppliedManifestWork::new(
                &amw_name,
                AppliedManifestWorkSpec {
                    hub_hash: agent.cfg.hub_hash.clone(),
                    agent_id: agent.cfg.agent_id.clone(),
                    manifest_work_name: name.clone(),
                },
            );
            a.metadata.annotations = Some([(DELETE_OPTION_ANNOTATION.to_string(), option_text)].into());
            let created = match applied_api.create(&PostParams::default(), &a).await {
                Ok(c) => c,
                Err(kube::Error::Api(e)) if e.code == 409 => applied_api.get(&amw_name).await?,
                Err(e) => return Err(e.into()),
            };
            Arc::new(created)
        }
    };
    agent.state().applied.insert(name.clone(), applied.clone());

    let client = client_for(agent, w);
    let manifests = &w.spec.workload.manifests;
    let ids: Vec<Result<Identity, String>> =
        manifests.iter().map(|m| apply::identify(&m.0)).collect();
    let kinds: Vec<(String, String)> = ids
        .iter()
        .map(|i| {
            i.as_ref().map_or((String::new(), "~".into()), |i| {
                (i.group.clone(), i.kind.clone())
            })
        })
        .collect();
    let spec_changed = agent.state().generations.get(&name) != Some(&generation);
    let mut results: Vec<Option<ManifestResult>> = vec![None; manifests.len()];
    let mut records: Vec<AppliedResource> = Vec::new();
    let mut retry = false;
    let mut read_only = false;
    for i in order::apply_order(&kinds) {
        let fail = |meta, why: String| ManifestResult {
            meta,
            applied: Err(why),
            exists: false,
            feedback: Ok(Vec::new()),
            health: None,
            finished: false,
        };
        let id = match &ids[i] {
            Ok(id) => id.clone(),
            Err(why) => {
                results[i] = Some(fail(apply::meta(i, None, None, None), why.clone()));
                continue;
            }
        };
        let served = match agent.kinds.resolve(&agent.member.client, &id).await {
            Ok(s) => s,
            Err(why) => {
                // A kind a CRD of this very work defines is served a moment later.
                retry = true;
                results[i] = Some(fail(apply::meta(i, Some(&id), None, None), why));
                continue;
            }
        };
        let ns = apply::namespace_of(&id, &served);
        let meta = apply::meta(i, Some(&id), Some(&served), ns.as_deref());
        let key: ObjKey = (
            served.resource.group.clone(),
            served.resource.plural.clone(),
            ns.clone().unwrap_or_default(),
            id.name.clone(),
        );
        let config = w.spec.manifest_configs.iter().find(|c| {
            c.resource_identifier.group == id.group
                && c.resource_identifier.resource == served.resource.plural
                && c.resource_identifier.name == id.name
                && c.resource_identifier.namespace == ns.clone().unwrap_or_default()
        });
        let strategy = config.and_then(|c| c.update_strategy.as_ref());
        let desired = apply::prepared(&manifests[i].0, ns.as_deref(), &agent.cfg.hub_hash);
        let is_read_only = strategy.is_some_and(|s| s.type_ == "ReadOnly");
        read_only |= is_read_only;
        let client = match &client {
            Ok(c) => c.clone(),
            Err(why) => {
                results[i] = Some(fail(meta, why.clone()));
                continue;
            }
        };
        let api = apply::api(&client, &served, ns.as_deref());
        let (needs_apply, live_now) = {
            let s = agent.state();
            let live = s.live.get(&key).cloned();
            let last = s.last_applied.get(&key);
            let needs = is_read_only
                || spec_changed
                || match (live.as_ref(), last) {
                    (Some(l), Some(a)) => drift::drifted(&desired, a, l),
                    _ => true,
                };
            (needs, live)
        };
        let outcome = if needs_apply {
            apply::apply(&api, &id.name, &desired, strategy).await
        } else {
            Ok(live_now)
        };
        let live = match outcome {
            Ok(Some(obj)) => kept(obj),
            Ok(None) => {
                results[i] = Some(ManifestResult {
                    meta,
                    applied: Ok(()),
                    exists: false,
                    feedback: Ok(Vec::new()),
                    health: None,
                    finished: false,
                });
                continue;
            }
            Err(why) => {
                retry = true;
                results[i] = Some(fail(meta, why));
                continue;
            }
        };
        if !is_read_only {
            watch_kind(agent, &served);
            let mut s = agent.state();
            if needs_apply {
                s.last_applied.insert(key.clone(), live.clone());
            }
            let newer = s
                .live
                .get(&key)
                .is_none_or(|old| rv(old).zip(rv(&live)).is_none_or(|(o, n)| n >= o));
            if newer {
                s.live.insert(key.clone(), live.clone());
            }
            s.owners.insert(key.clone(), name.clone());
            if let Some(uid) = live["metadata"]["uid"].as_str() {
                records.push(AppliedResource {
                    group: id.group.clone(),
                    version: id.version.clone(),
                    resource: served.resource.plural.clone(),
                    namespace: ns.clone().unwrap_or_default(),
                    name: id.name.clone(),
                    uid: uid.to_string(),
                });
            }
        }
        let rules = config
            .map(|c| c.feedback_rules.as_slice())
            .unwrap_or_default();
        let health = feedback::health(&id.group, &id.kind, &live);
        results[i] = Some(ManifestResult {
            meta,
            applied: Ok(()),
            exists: true,
            feedback: feedback::values(&id.group, &id.kind, &live, rules),
            health: Some(health),
            finished: feedback::finished(&id.group, &id.kind, &live),
        });
    }

    // Manifests dropped from the work: delete what this work applied, unless another work
    // holds it or the delete option orphans it.
    let before = applied
        .status
        .as_ref()
        .map(|s| s.applied_resources.clone())
        .unwrap_or_default();
    let keep: HashSet<(String, String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r.group.clone(),
                r.resource.clone(),
                r.namespace.clone(),
                r.name.clone(),
            )
        })
        .collect();
    let held_elsewhere = |r: &AppliedResource| {
        let s = agent.state();
        s.applied.iter().any(|(work, a)| {
            *work != name
                && a.status
                    .as_ref()
                    .is_some_and(|st| st.applied_resources.iter().any(|x| x.uid == r.uid))
        })
    };
    let dropped: Vec<AppliedResource> = before
        .iter()
        .filter(|r| {
            !keep.contains(&(
                r.group.clone(),
                r.resource.clone(),
                r.namespace.clone(),
                r.name.clone(),
            ))
        })
        .filter(|r| !held_elsewhere(r))
        .cloned()
        .collect();
    // Failed manifests keep their earlier records (they are not dropped, just not applied now).
    let failed_keys: HashSet<(String, String)> = results
        .iter()
        .flatten()
        .filter(|r| r.applied.is_err())
        .map(|r| (r.meta.name.clone(), r.meta.namespace.clone()))
        .collect();
    let mut new_records = records.clone();
    let mut really_dropped = Vec::new();
    for r in dropped {
        if failed_keys.contains(&(r.name.clone(), r.namespace.clone())) {
            new_records.push(r);
        } else {
            really_dropped.push(r);
        }
    }
    if !really_dropped.is_empty() {
        match delete_all(
            &agent.member.client,
            &really_dropped,
            w.spec.delete_option.as_ref(),
        )
        .await
        {
            Ok(true) => {
                let mut s = agent.state();
                for r in &really_dropped {
                    s.owners.remove(&(
                        r.group.clone(),
                        r.resource.clone(),
                        r.namespace.clone(),
                        r.name.clone(),
                    ));
                }
            }
            Ok(false) => {
                // Still going: keep them on record until they are gone.
                new_records.extend(really_dropped.iter().cloned());
                retry = true;
            }
            Err(why) => {
                tracing::warn!(work = %name, error = %why, "cannot delete resources dropped from the work");
                new_records.extend(really_dropped.iter().cloned());
                retry = true;
            }
        }
    }
    new_records.sort();
    new_records.dedup();
    let mut recorded = before.clone();
    recorded.sort();
    if new_records != recorded {
        let updated = applied_api
            .patch_status(
                &amw_name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": AppliedManifestWorkStatus { applied_resources: new_records }}),
                ),
            )
            .await?;
        agent
            .state()
            .applied
            .insert(name.clone(), Arc::new(updated));
    }

    let results: Vec<ManifestResult> = results.into_iter().flatten().collect();
    let all_applied = results.iter().all(|r| r.applied.is_ok());
    if all_applied {
        agent.state().generations.insert(name.clone(), generation);
    }
    let status = status::work_status(&results, generation, w.status.as_ref(), &now());
    if w.status.as_ref() != Some(&status) {
        match hub_works
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            Ok(updated) => {
                agent.state().works.insert(name.clone(), Arc::new(updated));
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    // Complete and past its time to live: the work goes.
    let ttl = w
        .spec
        .delete_option
        .as_ref()
        .and_then(|o| o.ttl_seconds_after_finished);
    let complete = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete" && c.status == "True");
    if let (Some(ttl), Some(c)) = (ttl, complete) {
        let since = c
            .last_transition_time
            .parse::<k8s_openapi::jiff::Timestamp>()
            .map(|t| k8s_openapi::jiff::Timestamp::now().as_second() - t.as_second())
            .unwrap_or(0);
        if since >= ttl {
            match hub_works.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(None);
        }
        return Ok(Some(Duration::from_secs((ttl - since).max(1) as u64)));
    }
    let progressing = results
        .iter()
        .any(|r| matches!(r.health, Some(Health::Progressing(_))));
    Ok(if retry {
        Some(Duration::from_secs(2))
    } else if read_only {
        // Objects it does not apply are not watched: read them again now and then.
        Some(Duration::from_secs(10))
    } else if progressing {
        // The watches bring the changes; this is only a safety net.
        Some(Duration::from_secs(30))
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_orphaning() {
        assert_eq!(
            hub_hash("https://127.0.0.1:6443"),
            hub_hash("https://127.0.0.1:6443/")
        );
        assert_eq!(hub_hash("https://a").len(), 16);
        assert_ne!(hub_hash("https://a"), hub_hash("https://b"));
        assert_eq!(applied_name("abc", "web"), "abc-web");
        assert!(applied_name("abc", &"w".repeat(300)).len() <= 253);
        let r = AppliedResource {
            group: "apps".into(),
            version: "v1".into(),
            resource: "deployments".into(),
            namespace: "demo".into(),
            name: "web".into(),
            uid: "u".into(),
        };
        assert!(!orphaned(None, &r));
        let orphan = DeleteOption {
            propagation_policy: "Orphan".into(),
            ..Default::default()
        };
        assert!(orphaned(Some(&orphan), &r));
        let selective = |name: &str| DeleteOption {
            propagation_policy: "SelectivelyOrphan".into(),
            selectively_orphans: Some(atoll_api::work::SelectivelyOrphan {
                orphaning_rules: vec![OrphaningRule {
                    group: "apps".into(),
                    resource: "deployments".into(),
                    namespace: "demo".into(),
                    name: name.into(),
                }],
            }),
            ttl_seconds_after_finished: None,
        };
        assert!(orphaned(Some(&selective("web")), &r));
        assert!(!orphaned(Some(&selective("other")), &r));
    }
}
