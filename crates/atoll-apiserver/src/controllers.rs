//! The loops the API itself owns, as kube-apiserver and kube-controller-manager run them:
//! CRD establishment and cleanup, namespace deletion, and garbage collection by owner
//! references. They act through the same generic REST code as requests (never by writing
//! storage around it), as the cluster admin.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use atoll_store::{Event, EventKind};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::error::{ApiError, ApiResult};
use crate::object::{decode_stored, finalizers_of, meta_str};
use crate::registry::ResourceType;
use crate::request::{Query, ResourceRequest, Verb};
use crate::rest::{Ctx, DeleteOptions};

const CRD_PREFIX: &str = "/apiextensions.k8s.io/customresourcedefinitions/";
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// A context acting on one object (or collection) as the server itself.
pub fn internal_ctx(
    server: &Arc<ApiServer>,
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<&str>,
) -> Ctx {
    Ctx {
        server: server.clone(),
        rr: ResourceRequest {
            group: rt.group.clone(),
            version: rt.version.clone(),
            namespace,
            resource: rt.resource.clone(),
            name,
            subresource: subresource.map(String::from),
            verb: Verb::Update,
        },
        rt,
        query: Query::default(),
        accept: String::new(),
        manager: "atoll-apiserver".into(),
        apply: false,
        warnings: Default::default(),
        identity: crate::tls::Identity::admin(),
    }
}

/// Serve the kinds of every CRD in the store.
pub fn load_crds(server: &ApiServer) -> ApiResult<()> {
    let page = server.store.list(CRD_PREFIX, None, 0, None)?;
    let mut kinds = Vec::new();
    for (_, entry) in &page.items {
        let crd: Value =
            serde_json::from_slice(&entry.value).map_err(|e| ApiError::Internal(e.to_string()))?;
        kinds.extend(crate::crd::kinds_of(&crd));
    }
    server.registry.set_crd_kinds(kinds);
    Ok(())
}

pub async fn ensure_default_namespaces(server: &Arc<ApiServer>) -> ApiResult<()> {
    let snap = server.registry.snapshot();
    let Some(rt) = snap.get("", "v1", "namespaces").cloned() else {
        return Ok(());
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if server.store.get(&rt.key(None, ns)).is_some() {
            continue;
        }
        let ctx = internal_ctx(server, rt.clone(), None, None, None);
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match ctx.create_object(&mut obj).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Create the bootstrap roles and bindings that are missing (existing ones are left as the
/// cluster admin changed them).
pub async fn ensure_bootstrap_policy(server: &Arc<ApiServer>) -> ApiResult<()> {
    let snap = server.registry.snapshot();
    for (resource, mut obj) in crate::authz::bootstrap_policy() {
        let Some(rt) = snap.get(crate::authz::RBAC_GROUP, "v1", resource).cloned() else {
            continue;
        };
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if server.store.get(&rt.key(None, &name)).is_some() {
            continue;
        }
        let ctx = internal_ctx(server, rt, None, None, None);
        match ctx.create_object(&mut obj).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Rebuild the authorizer's index from every stored RBAC object.
pub fn reload_rbac(server: &ApiServer) -> ApiResult<()> {
    let page = server
        .store
        .list(&format!("/{}/", crate::authz::RBAC_GROUP), None, 0, None)?;
    let objects = page.items.iter().filter_map(|(key, entry)| {
        let resource = key.split('/').nth(2)?.to_string();
        let obj = serde_json::from_slice(&entry.value).ok()?;
        Some((resource, obj))
    });
    server.authorizer.rebuild(objects);
    Ok(())
}

async fn rbac_loop(server: Arc<ApiServer>) {
    let s = server.clone();
    let prefix = format!("/{}/", crate::authz::RBAC_GROUP);
    watch_forever(&server, &prefix, async move |_events| {
        if let Err(e) = reload_rbac(&s) {
            tracing::error!(error = %e, "reloading RBAC failed");
        }
        aggregate_cluster_roles(&s).await;
    })
    .await;
}

/// Fill the rules of every ClusterRole with an `aggregationRule` from the ClusterRoles its
/// selectors match. Chains (view -> edit -> admin) settle over successive passes, each
/// triggered by the previous pass's write.
pub async fn aggregate_cluster_roles(server: &Arc<ApiServer>) {
    let snap = server.registry.snapshot();
    let Some(rt) = snap
        .get(crate::authz::RBAC_GROUP, "v1", "clusterroles")
        .cloned()
    else {
        return;
    };
    let Ok(page) = server.store.list(&rt.key_prefix(), None, 0, None) else {
        return;
    };
    let all: Vec<Value> = page
        .items
        .iter()
        .filter_map(|(_, e)| serde_json::from_slice(&e.value).ok())
        .collect();
    for role in &all {
        let Some(rules) = crate::authz::aggregate(role, &all) else {
            continue;
        };
        if role
            .get("rules")
            .and_then(Value::as_array)
            .is_some_and(|r| *r == rules)
        {
            continue;
        }
        let name = meta_str(role, "name").unwrap_or_default().to_string();
        let ctx = internal_ctx(server, rt.clone(), None, Some(name.clone()), None);
        let result = ctx
            .guaranteed_update(&name, None, |cur| {
                let mut n = cur.clone();
                n["rules"] = json!(rules);
                Ok(n)
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(role = %name, error = %e, "aggregating ClusterRole failed");
        }
    }
}

const CSR_PREFIX: &str = "/certificates.k8s.io/certificatesigningrequests/";

/// The built-in signer: issue certificates for approved CSRs of `kubernetes.io/kube-apiserver-client`.
async fn csr_signer_loop(server: Arc<ApiServer>) {
    if server.config.ca.is_none() {
        return;
    }
    sign_pending(&server).await;
    let s = server.clone();
    watch_forever(&server, CSR_PREFIX, async move |_events| {
        sign_pending(&s).await
    })
    .await;
}

async fn sign_pending(server: &Arc<ApiServer>) {
    let Some(pki) = server.config.ca.clone() else {
        return;
    };
    let snap = server.registry.snapshot();
    let Some(rt) = snap
        .get("certificates.k8s.io", "v1", "certificatesigningrequests")
        .cloned()
    else {
        return;
    };
    let Ok(page) = server.store.list(CSR_PREFIX, None, 0, None) else {
        return;
    };
    for (_, entry) in &page.items {
        let Ok(csr) = decode_stored(&rt, entry) else {
            continue;
        };
        let crate::csr::Outcome::Status(status) =
            crate::csr::sign(&pki, &csr, server.config.max_certificate_seconds)
        else {
            continue;
        };
        let name = meta_str(&csr, "name").unwrap_or_default().to_string();
        let ctx = internal_ctx(server, rt.clone(), None, Some(name.clone()), Some("status"));
        let rv = entry.mod_revision;
        // Written against the version signed, so a concurrent change is not overwritten.
        let result = ctx
            .guaranteed_update(&name, Some(rv), |cur| {
                let mut n = cur.clone();
                n["status"] = status.clone();
                Ok(n)
            })
            .await;
        match result {
            Ok(_) | Err(ApiError::Conflict { .. }) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(csr = %name, error = %e, "writing the signed certificate failed")
            }
        }
    }
}

pub fn spawn(server: Arc<ApiServer>) {
    tokio::spawn(csr_signer_loop(server.clone()));
    tokio::spawn(rbac_loop(server.clone()));
    tokio::spawn(crd_loop(server.clone()));
    tokio::spawn(namespace_loop(server.clone()));
    tokio::spawn(gc_loop(server));
}

/// The resource type a storage key belongs to (its storage version).
fn rt_of_key(server: &ApiServer, key: &str) -> Option<Arc<ResourceType>> {
    let mut parts = key.trim_start_matches('/').splitn(3, '/');
    let group = match parts.next()? {
        "core" => "",
        g => g,
    };
    let resource = parts.next()?;
    let snap = server.registry.snapshot();
    let all = snap.by_group_resource(group, resource);
    all.iter()
        .find(|r| r.version == r.storage_version)
        .or(all.first())
        .map(|r| (*r).clone())
}

/// Watch everything under `prefix`, calling `on_event` per event; re-lists after a 410.
async fn watch_forever<F>(server: &Arc<ApiServer>, prefix: &str, mut on_batch: F)
where
    F: AsyncFnMut(Vec<Event>),
{
    let mut from = server.store.revision();
    loop {
        let mut watch = match server.store.watch(prefix, from) {
            Ok(w) => w,
            Err(_) => {
                from = server.store.revision();
                on_batch(Vec::new()).await;
                continue;
            }
        };
        loop {
            match watch.next_batch().await {
                Ok(events) => {
                    from = events.last().map_or(from, |e| e.revision);
                    on_batch(events).await;
                }
                Err(atoll_store::StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, prefix, "watch lost; resyncing");
                    from = server.store.revision();
                    on_batch(Vec::new()).await;
                    break;
                }
            }
        }
    }
}

async fn crd_loop(server: Arc<ApiServer>) {
    // Establish CRDs that were stored before this start but never established.
    reconcile_crds(&server).await;
    let s = server.clone();
    watch_forever(&server, CRD_PREFIX, async move |_events| {
        if let Err(e) = load_crds(&s) {
            tracing::error!(error = %e, "reloading CRDs failed");
        }
        reconcile_crds(&s).await;
    })
    .await;
}

async fn reconcile_crds(server: &Arc<ApiServer>) {
    let snap = server.registry.snapshot();
    let Some(rt) = snap
        .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .cloned()
    else {
        return;
    };
    let Ok(page) = server.store.list(CRD_PREFIX, None, 0, None) else {
        return;
    };
    for (_, entry) in &page.items {
        let Ok(crd) = decode_stored(&rt, entry) else {
            continue;
        };
        let name = meta_str(&crd, "name").unwrap_or_default().to_string();
        let result = if crd.pointer("/metadata/deletionTimestamp").is_some() {
            cleanup_crd(server, &rt, &crd, &name).await
        } else if !established(&crd)
            || !finalizers_of(&crd)
                .iter()
                .any(|f| f == CRD_CLEANUP_FINALIZER)
        {
            establish_crd(server, &rt, &name).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(crd = %name, error = %e, "CRD reconcile failed");
        }
    }
}

fn established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })
}

async fn establish_crd(
    server: &Arc<ApiServer>,
    rt: &Arc<ResourceType>,
    name: &str,
) -> ApiResult<()> {
    let main = internal_ctx(server, rt.clone(), None, Some(name.into()), None);
    main.guaranteed_update(name, None, |cur| {
        let mut n = cur.clone();
        let mut fins = finalizers_of(cur);
        if !fins.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
            fins.push(CRD_CLEANUP_FINALIZER.into());
        }
        n["metadata"]["finalizers"] = json!(fins);
        Ok(n)
    })
    .await?;
    let status = internal_ctx(server, rt.clone(), None, Some(name.into()), Some("status"));
    status
        .guaranteed_update(name, None, |cur| {
            let mut n = cur.clone();
            if !established(cur) {
                n["status"] = crate::crd::established_status(cur, &crate::object::now());
            }
            Ok(n)
        })
        .await?;
    Ok(())
}

/// Delete every object of a CRD that is being deleted, then let the CRD go.
async fn cleanup_crd(
    server: &Arc<ApiServer>,
    rt: &Arc<ResourceType>,
    crd: &Value,
    name: &str,
) -> ApiResult<()> {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let prefix = format!("/{group}/{plural}/");
    let page = server.store.list(&prefix, None, 0, None)?;
    for (key, _) in &page.items {
        // Objects of a deleted CRD go regardless of their finalizers: nothing could serve them.
        let _ = server
            .store
            .delete(key, atoll_store::Precondition::None)
            .await;
    }
    let main = internal_ctx(server, rt.clone(), None, Some(name.into()), None);
    main.guaranteed_update(name, None, |cur| {
        let mut n = cur.clone();
        let fins: Vec<String> = finalizers_of(cur)
            .into_iter()
            .filter(|f| f != CRD_CLEANUP_FINALIZER)
            .collect();
        n["metadata"]["finalizers"] = json!(fins);
        Ok(n)
    })
    .await?;
    Ok(())
}

async fn namespace_loop(server: Arc<ApiServer>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if let Err(e) = reconcile_namespaces(&server).await {
            tracing::warn!(error = %e, "namespace reconcile failed");
        }
    }
}

async fn reconcile_namespaces(server: &Arc<ApiServer>) -> ApiResult<()> {
    let snap = server.registry.snapshot();
    let Some(ns_rt) = snap.get("", "v1", "namespaces").cloned() else {
        return Ok(());
    };
    let page = server.store.list(&ns_rt.key_prefix(), None, 0, None)?;
    for (_, entry) in &page.items {
        let ns = decode_stored(&ns_rt, entry)?;
        if ns.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let name = meta_str(&ns, "name").unwrap_or_default().to_string();
        let mut remaining = 0;
        let mut seen = HashSet::new();
        for rt in snap.resources.values().filter(|r| r.namespaced) {
            if !seen.insert((rt.group.clone(), rt.resource.clone())) {
                continue;
            }
            let prefix = format!("{}{name}/", rt.key_prefix());
            let objs = server.store.list(&prefix, None, 0, None)?;
            for (_, e) in &objs.items {
                remaining += 1;
                let obj = decode_stored(rt, e)?;
                if obj.pointer("/metadata/deletionTimestamp").is_some() {
                    continue;
                }
                let oname = meta_str(&obj, "name").unwrap_or_default().to_string();
                let ctx = internal_ctx(
                    server,
                    rt.clone(),
                    Some(name.clone()),
                    Some(oname.clone()),
                    None,
                );
                match ctx
                    .delete_object(
                        &oname,
                        &DeleteOptions {
                            propagation: Some("Background".into()),
                            ..Default::default()
                        },
                    )
                    .await
                {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {}
                    Err(e) => {
                        tracing::warn!(namespace = %name, object = %oname, error = %e, "namespace cleanup delete failed")
                    }
                }
            }
        }
        if remaining == 0 {
            let ctx = internal_ctx(
                server,
                ns_rt.clone(),
                None,
                Some(name.clone()),
                Some("finalize"),
            );
            match ctx
                .guaranteed_update(&name, None, |cur| {
                    let mut n = cur.clone();
                    n["spec"]["finalizers"] = json!(
                        cur.pointer("/spec/finalizers")
                            .and_then(Value::as_array)
                            .map(|a| a
                                .iter()
                                .filter(|f| *f != "kubernetes")
                                .cloned()
                                .collect::<Vec<_>>())
                            .unwrap_or_default()
                    );
                    Ok(n)
                })
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// An owner reference, as the collector needs it to find the owner.
#[derive(Clone, serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct OwnerRef {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
}

/// What the garbage collector knows of an object that has owners or is being deleted; other
/// objects are not tracked (an owner's existence is checked in storage when it matters).
#[derive(Clone)]
struct Node {
    key: String,
    owners: Vec<OwnerRef>,
    /// Marked for deletion (owners in foreground or orphan deletion wait on the collector).
    terminating: bool,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    /// Owner uid -> uids of tracked dependents.
    dependents: HashMap<String, HashSet<String>>,
    uid_of_key: HashMap<String, String>,
}

impl Graph {
    fn upsert(&mut self, uid: String, node: Node) {
        self.remove(&uid);
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.uid_of_key.insert(node.key.clone(), uid.clone());
        self.nodes.insert(uid, node);
    }

    fn remove(&mut self, uid: &str) {
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                    if d.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
            }
            self.uid_of_key.remove(&old.key);
        }
    }
}

/// The part of an object the collector reads; decoding only this skips the rest cheaply.
#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct GcMeta {
    uid: Option<String>,
    owner_references: Vec<OwnerRef>,
    deletion_timestamp: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct GcObject {
    metadata: GcMeta,
}

fn gc_meta(bytes: &[u8]) -> Option<(String, Vec<OwnerRef>, bool)> {
    let o: GcObject = serde_json::from_slice(bytes).ok()?;
    let uid = o.metadata.uid?;
    Some((
        uid,
        o.metadata.owner_references,
        o.metadata.deletion_timestamp.is_some(),
    ))
}

/// Whether the stored JSON may have owners or a deletion mark: a byte search, so that the
/// collector parses only the objects it has to.
fn may_concern_gc(bytes: &[u8]) -> bool {
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    has(b"\"ownerReferences\"") || has(b"\"deletionTimestamp\"")
}

/// What a sweep looks at: everything, or the objects an event batch may have affected.
enum Sweep {
    All,
    /// Possible orphans (dependents of deleted objects, new dependents) and owners that may
    /// be done waiting (marked for deletion, or one of their dependents went away).
    Some {
        dependents: HashSet<String>,
        owners: HashSet<String>,
    },
}

fn track(g: &mut Graph, key: &str, bytes: &[u8]) -> Option<(String, bool, bool)> {
    if !may_concern_gc(bytes) {
        if let Some(uid) = g.uid_of_key.get(key).cloned() {
            g.remove(&uid);
        }
        return None;
    }
    let (uid, owners, terminating) = gc_meta(bytes)?;
    let has_owners = !owners.is_empty();
    if has_owners || terminating {
        g.upsert(
            uid.clone(),
            Node {
                key: key.to_string(),
                owners,
                terminating,
            },
        );
    } else {
        g.remove(&uid);
    }
    Some((uid, has_owners, terminating))
}

async fn gc_loop(server: Arc<ApiServer>) {
    let graph = Arc::new(tokio::sync::Mutex::new(Graph::default()));
    loop {
        // (Re)build the graph from a consistent list, then follow the log from there.
        let from = server.store.revision();
        {
            let mut g = graph.lock().await;
            *g = Graph::default();
            if let Ok(page) = server.store.list("/", None, 0, Some(from)) {
                for (key, entry) in &page.items {
                    track(&mut g, key, &entry.value);
                }
            }
        }
        gc_sweep(&server, &graph, Sweep::All).await;
        let Ok(mut watch) = server.store.watch("/", from) else {
            continue;
        };
        loop {
            match watch.next_batch().await {
                Ok(events) => {
                    let (mut dependents, mut owners) = (HashSet::new(), HashSet::new());
                    {
                        let mut g = graph.lock().await;
                        for e in &events {
                            if e.kind == EventKind::Deleted {
                                // Only a deletion that leaves dependents or was tracked matters.
                                if g.dependents.is_empty() && !g.uid_of_key.contains_key(&*e.key) {
                                    continue;
                                }
                                let Some((uid, refs, _)) = gc_meta(&e.value) else {
                                    continue;
                                };
                                if let Some(d) = g.dependents.get(&uid) {
                                    dependents.extend(d.iter().cloned());
                                }
                                owners.extend(refs.into_iter().map(|r| r.uid));
                                g.remove(&uid);
                            } else if let Some((uid, has_owners, terminating)) =
                                track(&mut g, &e.key, &e.value)
                            {
                                if has_owners {
                                    dependents.insert(uid.clone());
                                }
                                if terminating {
                                    owners.insert(uid);
                                }
                            }
                        }
                    }
                    if !dependents.is_empty() || !owners.is_empty() {
                        gc_sweep(&server, &graph, Sweep::Some { dependents, owners }).await;
                    }
                }
                Err(atoll_store::StoreError::Closed) => return,
                Err(_) => break,
            }
        }
    }
}

/// Whether the object an owner reference names exists (with that uid). Owners of a kind the
/// server does not serve count as existing: deleting on a guess would lose data.
fn owner_exists(server: &ApiServer, owner: &OwnerRef, namespace: Option<&str>) -> bool {
    let snap = server.registry.snapshot();
    let Some(rt) = snap
        .resources
        .values()
        .find(|r| r.api_version() == owner.api_version && r.kind == owner.kind)
    else {
        return true;
    };
    let key = rt.key(if rt.namespaced { namespace } else { None }, &owner.name);
    server
        .store
        .get(&key)
        .and_then(|e| gc_meta(&e.value))
        .is_some_and(|(uid, _, _)| uid == owner.uid)
}

fn namespace_of_key(server: &ApiServer, key: &str) -> Option<String> {
    let rt = rt_of_key(server, key)?;
    split_key(key, &rt).0
}

/// Delete dependents whose owners are all gone, cascade foreground deletions, orphan the
/// dependents of owners deleted with `Orphan`.
async fn gc_sweep(server: &Arc<ApiServer>, graph: &Arc<tokio::sync::Mutex<Graph>>, sweep: Sweep) {
    let (candidates, deleting): (Vec<Node>, Vec<String>) = {
        let g = graph.lock().await;
        match &sweep {
            Sweep::All => (
                g.nodes
                    .values()
                    .filter(|n| !n.owners.is_empty())
                    .cloned()
                    .collect(),
                g.nodes
                    .values()
                    .filter(|n| n.terminating)
                    .map(|n| n.key.clone())
                    .collect(),
            ),
            Sweep::Some { dependents, owners } => (
                dependents
                    .iter()
                    .filter_map(|u| g.nodes.get(u))
                    .filter(|n| !n.owners.is_empty())
                    .cloned()
                    .collect(),
                owners
                    .iter()
                    .filter_map(|u| g.nodes.get(u))
                    .filter(|n| n.terminating)
                    .map(|n| n.key.clone())
                    .collect(),
            ),
        }
    };
    for node in candidates {
        let ns = namespace_of_key(server, &node.key);
        if node
            .owners
            .iter()
            .all(|o| !owner_exists(server, o, ns.as_deref()))
        {
            delete_by_key(server, &node.key, "Background").await;
        }
    }
    for key in deleting {
        let Some(rt) = rt_of_key(server, &key) else {
            continue;
        };
        let Some(entry) = server.store.get(&key) else {
            continue;
        };
        let Ok(obj) = decode_stored(&rt, &entry) else {
            continue;
        };
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let fins = finalizers_of(&obj);
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
        let dependents: Vec<String> = {
            let g = graph.lock().await;
            g.dependents
                .get(&uid)
                .map(|d| {
                    d.iter()
                        .filter_map(|u| g.nodes.get(u).map(|n| n.key.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        if fins.iter().any(|f| f == "orphan") {
            for dkey in &dependents {
                drop_owner_ref(server, dkey, &uid).await;
            }
            remove_finalizer(server, &rt, &obj, "orphan").await;
        } else if fins.iter().any(|f| f == "foregroundDeletion") {
            if dependents.is_empty() {
                remove_finalizer(server, &rt, &obj, "foregroundDeletion").await;
            } else {
                for dkey in &dependents {
                    delete_by_key(server, dkey, "Foreground").await;
                }
            }
        }
    }
}

fn split_key(key: &str, rt: &ResourceType) -> (Option<String>, String) {
    let rest = key.strip_prefix(&rt.key_prefix()).unwrap_or_default();
    match (rt.namespaced, rest.split_once('/')) {
        (true, Some((ns, name))) => (Some(ns.into()), name.into()),
        _ => (None, rest.into()),
    }
}

async fn delete_by_key(server: &Arc<ApiServer>, key: &str, policy: &str) {
    let Some(rt) = rt_of_key(server, key) else {
        return;
    };
    let (ns, name) = split_key(key, &rt);
    if let Some(e) = server.store.get(key)
        && let Ok(obj) = decode_stored(&rt, &e)
        && obj.pointer("/metadata/deletionTimestamp").is_some()
    {
        return;
    }
    let ctx = internal_ctx(server, rt, ns, Some(name.clone()), None);
    let opts = DeleteOptions {
        propagation: Some(policy.into()),
        ..Default::default()
    };
    match ctx.delete_object(&name, &opts).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => {}
        Err(e) => tracing::warn!(key, error = %e, "garbage collection delete failed"),
    }
}

async fn drop_owner_ref(server: &Arc<ApiServer>, key: &str, owner_uid: &str) {
    let Some(rt) = rt_of_key(server, key) else {
        return;
    };
    let (ns, name) = split_key(key, &rt);
    let ctx = internal_ctx(server, rt, ns, Some(name.clone()), None);
    let res = ctx
        .guaranteed_update(&name, None, |cur| {
            let mut n = cur.clone();
            let refs: Vec<Value> = cur
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter(|o| o.get("uid").and_then(Value::as_str) != Some(owner_uid))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if refs.is_empty() {
                if let Some(m) = n["metadata"].as_object_mut() {
                    m.remove("ownerReferences");
                }
            } else {
                n["metadata"]["ownerReferences"] = json!(refs);
            }
            Ok(n)
        })
        .await;
    if let Err(e) = res
        && !matches!(e, ApiError::NotFound { .. })
    {
        tracing::warn!(key, error = %e, "orphaning a dependent failed");
    }
}

async fn remove_finalizer(
    server: &Arc<ApiServer>,
    rt: &Arc<ResourceType>,
    obj: &Value,
    finalizer: &str,
) {
    let name = meta_str(obj, "name").unwrap_or_default().to_string();
    let ns = meta_str(obj, "namespace").map(String::from);
    let ctx = internal_ctx(server, rt.clone(), ns, Some(name.clone()), None);
    let res = ctx
        .guaranteed_update(&name, None, |cur| {
            let mut n = cur.clone();
            let fins: Vec<String> = finalizers_of(cur)
                .into_iter()
                .filter(|f| f != finalizer)
                .collect();
            n["metadata"]["finalizers"] = json!(fins);
            Ok(n)
        })
        .await;
    if let Err(e) = res
        && !matches!(e, ApiError::NotFound { .. })
    {
        tracing::warn!(object = %name, error = %e, "removing finalizer {finalizer} failed");
    }
}
