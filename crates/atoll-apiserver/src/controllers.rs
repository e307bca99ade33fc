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
use crate::authz::RbacChange;

mod gc;
mod quota;
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
        if let Some(entry) = server.store.get(&rt.key(None, ns)) {
            // Written by a server from before namespaces carried their name as a label: the
            // next write adds it (webhooks select kube-system by it).
            let labelled = serde_json::from_slice::<Value>(&entry.value)
                .ok()
                .and_then(|o| {
                    o.pointer("/metadata/labels/kubernetes.io~1metadata.name")
                        .cloned()
                })
                .is_some();
            if !labelled {
                let ctx = internal_ctx(server, rt.clone(), None, None, None);
                ctx.guaranteed_update(ns, None, |cur| Ok(cur.clone()))
                    .await?;
            }
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

/// The `kubernetes` Service in `default`, as kube-apiserver keeps it: the first address of the
/// Service range, port 443 (`https`), and an EndpointSlice naming this server's address, which
/// is rewritten at every start (a server on port 0 moves).
pub async fn ensure_kubernetes_service(server: &Arc<ApiServer>) -> ApiResult<()> {
    let snap = server.registry.snapshot();
    let (Some(svc_rt), Some(slice_rt)) = (
        snap.get("", "v1", "services").cloned(),
        snap.get("discovery.k8s.io", "v1", "endpointslices")
            .cloned(),
    ) else {
        return Ok(());
    };
    let advertise = &server.config.advertise_address;
    let Some((host, port)) = advertise.rsplit_once(':') else {
        return Ok(());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(port) = port.parse::<u16>() else {
        return Ok(());
    };
    let Some(ip) = server.cluster_ips.first() else {
        return Ok(());
    };
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let svc_ctx = internal_ctx(server, svc_rt.clone(), Some("default".into()), None, None);
    if server
        .store
        .get(&svc_rt.key(Some("default"), "kubernetes"))
        .is_none()
    {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
            "spec": {"clusterIP": ip.to_string(), "type": "ClusterIP", "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}});
        match svc_ctx.create_object(&mut svc).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    } else {
        svc_ctx
            .guaranteed_update("kubernetes", None, |cur| {
                let mut next = cur.clone();
                next["spec"]["ports"] =
                    json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]);
                Ok(next)
            })
            .await?;
    }
    let family = if host.contains(':') { "IPv6" } else { "IPv4" };
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes",
                                "endpointslice.kubernetes.io/managed-by": "kube-apiserver.atoll.io"}},
        "addressType": family,
        "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    let slice_ctx = internal_ctx(server, slice_rt.clone(), Some("default".into()), None, None);
    if server
        .store
        .get(&slice_rt.key(Some("default"), "kubernetes"))
        .is_none()
    {
        let mut slice = slice;
        match slice_ctx.create_object(&mut slice).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    } else {
        slice_ctx
            .guaranteed_update("kubernetes", None, |cur| {
                let mut next = cur.clone();
                next["endpoints"] = slice["endpoints"].clone();
                next["ports"] = slice["ports"].clone();
                next["addressType"] = slice["addressType"].clone();
                Ok(next)
            })
            .await?;
    }
    Ok(())
}

/// Create the bootstrap roles and bindings that are missing, and reconcile those that exist as
/// kube-apiserver does: the rules (or subjects) a newer server's policy has that the stored
/// object lacks are added, what an admin added stays, and an object annotated
/// `rbac.authorization.kubernetes.io/autoupdate: "false"` is left alone. (A server upgraded in
/// place would otherwise keep an older, narrower policy: its controllers could not watch the
/// kinds it now serves.)
pub async fn ensure_bootstrap_policy(server: &Arc<ApiServer>) -> ApiResult<()> {
    let snap = server.registry.snapshot();
    for (resource, mut obj) in crate::authz::bootstrap_policy() {
        let Some(rt) = snap.get(crate::authz::RBAC_GROUP, "v1", resource).cloned() else {
            continue;
        };
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let ctx = internal_ctx(server, rt.clone(), None, None, None);
        let Some(entry) = server.store.get(&rt.key(None, &name)) else {
            match ctx.create_object(&mut obj).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            continue;
        };
        let current = decode_stored(&rt, &entry)?;
        let field = if resource.ends_with("bindings") {
            "subjects"
        } else {
            "rules"
        };
        if missing_items(&current, &obj, field).is_empty() || !auto_updated(&current) {
            continue;
        }
        ctx.guaranteed_update(&name, None, |cur| {
            let mut next = cur.clone();
            let missing = missing_items(cur, &obj, field);
            match next.get_mut(field).and_then(Value::as_array_mut) {
                Some(items) => items.extend(missing),
                None => next[field] = Value::Array(missing),
            }
            Ok(next)
        })
        .await?;
    }
    Ok(())
}

/// The items of `wanted`'s list `field` that `current`'s lacks.
fn missing_items(current: &Value, wanted: &Value, field: &str) -> Vec<Value> {
    let have = current
        .get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    wanted
        .get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|item| !have.contains(item))
        .cloned()
        .collect()
}

/// Whether a bootstrap object may be reconciled (unless an admin annotated it not to be).
fn auto_updated(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
        .and_then(Value::as_str)
        != Some("false")
}

/// Build the authorizer's index from every stored RBAC object; what the RBAC loop needs to
/// keep it current is handed to the loop.
pub fn reload_rbac(server: &ApiServer) -> ApiResult<RbacCache> {
    let mut cache = RbacCache::default();
    let page = server
        .store
        .list(&format!("/{}/", crate::authz::RBAC_GROUP), None, 0, None)?;
    let mut objects = Vec::with_capacity(page.items.len());
    for (key, entry) in &page.items {
        if let (Some(RbacChange::Put(o)), _) = cache.apply(EventKind::Added, key, &entry.value) {
            objects.push(o);
        }
    }
    server.authorizer.rebuild(objects);
    Ok(cache)
}

/// What the RBAC loop remembers between changes: the selectors of the ClusterRoles that
/// aggregate others, by key (the index itself is the authorizer's).
#[derive(Default)]
pub struct RbacCache {
    aggregators: HashMap<String, Vec<crate::selector::LabelSelector>>,
}

impl RbacCache {
    /// Take in one stored change: the change to hand to the authorizer, and for a ClusterRole,
    /// the role (as written, or as deleted).
    fn apply(
        &mut self,
        kind: EventKind,
        key: &str,
        value: &[u8],
    ) -> (Option<RbacChange>, Option<Value>) {
        let Some(resource) = key.split('/').nth(2) else {
            return (None, None);
        };
        let is_cluster_role = resource == "clusterroles";
        let obj: Option<Value> = serde_json::from_slice(value).ok();
        let change = if kind == EventKind::Deleted {
            self.aggregators.remove(key);
            RbacChange::deleted(key)
        } else {
            match obj
                .as_ref()
                .and_then(crate::authz::aggregation_selectors)
                .filter(|_| is_cluster_role)
            {
                Some(sel) => {
                    self.aggregators.insert(key.to_string(), sel);
                }
                None => {
                    self.aggregators.remove(key);
                }
            }
            obj.as_ref()
                .and_then(|o| crate::authz::RbacObject::parse(resource, o))
                .map(RbacChange::Put)
        };
        (change, obj.filter(|_| is_cluster_role))
    }

    /// Whether a change to this ClusterRole can change an aggregated one: it aggregates, or
    /// an aggregating role selects it.
    fn affects_aggregation(&self, role: &Value) -> bool {
        if role.get("aggregationRule").is_some() {
            return true;
        }
        let labels = crate::object::labels_of(role);
        self.aggregators
            .values()
            .flatten()
            .any(|s| !s.0.is_empty() && s.matches(&labels))
    }
}

async fn rbac_loop(server: Arc<ApiServer>, mut cache: RbacCache) {
    let s = server.clone();
    let prefix = format!("/{}/", crate::authz::RBAC_GROUP);
    watch_forever(&server, &prefix, async move |events| {
        let mut aggregation = false;
        if events.is_empty() {
            // The watch was lost: start again from what is stored.
            match reload_rbac(&s) {
                Ok(c) => cache = c,
                Err(e) => tracing::error!(error = %e, "reloading RBAC failed"),
            }
            aggregation = true;
        }
        let mut changes = Vec::with_capacity(events.len());
        for e in &events {
            let (change, role) = cache.apply(e.kind, &e.key, &e.value);
            changes.extend(change);
            let before = e
                .prev
                .as_ref()
                .and_then(|p| serde_json::from_slice::<Value>(&p.value).ok())
                .filter(|_| role.is_some());
            aggregation |= role
                .iter()
                .chain(before.iter())
                .any(|r| cache.affects_aggregation(r));
        }
        s.authorizer.update(changes);
        if aggregation {
            aggregate_cluster_roles(&s).await;
        }
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
    sign_pending(&server, None).await;
    let s = server.clone();
    watch_forever(&server, CSR_PREFIX, async move |events| {
        // Only the CSRs just written can have become signable (approved); after a lost
        // watch, all of them are looked at again.
        if events.is_empty() {
            sign_pending(&s, None).await
        } else {
            let mut written: Vec<&str> = events
                .iter()
                .filter(|e| e.kind != EventKind::Deleted)
                .map(|e| &*e.key)
                .collect();
            written.sort_unstable();
            written.dedup();
            sign_pending(&s, Some(&written)).await
        }
    })
    .await;
}

/// Sign the approved CSRs among `keys` (all stored CSRs with `None`).
async fn sign_pending(server: &Arc<ApiServer>, keys: Option<&[&str]>) {
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
    let entries: Vec<atoll_store::Entry> = match keys {
        None => match server.store.list(CSR_PREFIX, None, 0, None) {
            Ok(page) => page.items.into_iter().map(|(_, e)| e).collect(),
            Err(_) => return,
        },
        // The stored version now, not the event's: it may have been signed meanwhile.
        Some(keys) => keys.iter().filter_map(|k| server.store.get(k)).collect(),
    };
    for entry in &entries {
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

/// Remove CSRs that have served their purpose (`csr::due_for_cleanup`), every few minutes.
async fn csr_cleaner_loop(server: Arc<ApiServer>) {
    let mut every = tokio::time::interval(Duration::from_secs(300));
    loop {
        every.tick().await;
        let snap = server.registry.snapshot();
        let Some(rt) = snap
            .get("certificates.k8s.io", "v1", "certificatesigningrequests")
            .cloned()
        else {
            continue;
        };
        let Ok(page) = server.store.list(CSR_PREFIX, None, 0, None) else {
            continue;
        };
        let now = jiff::Timestamp::now();
        for (_, entry) in &page.items {
            let Ok(csr) = decode_stored(&rt, entry) else {
                continue;
            };
            if !crate::csr::due_for_cleanup(&csr, now) {
                continue;
            }
            let name = meta_str(&csr, "name").unwrap_or_default().to_string();
            let ctx = internal_ctx(&server, rt.clone(), None, Some(name.clone()), None);
            let opts = DeleteOptions {
                // Only the version judged: a CSR changed meanwhile is looked at next time.
                resource_version: Some(entry.mod_revision.to_string()),
                ..Default::default()
            };
            match ctx.delete_object(&name, &opts).await {
                Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {}
                Err(e) => tracing::warn!(csr = %name, error = %e, "removing an old CSR failed"),
            }
        }
    }
}

pub fn spawn(server: Arc<ApiServer>, rbac: RbacCache) {
    tokio::spawn(csr_signer_loop(server.clone()));
    tokio::spawn(csr_cleaner_loop(server.clone()));
    tokio::spawn(rbac_loop(server.clone(), rbac));
    tokio::spawn(crd_loop(server.clone()));
    tokio::spawn(namespace_loop(server.clone()));
    tokio::spawn(quota::quota_loop(server.clone()));
    tokio::spawn(gc::gc_loop(server));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored ClusterRole `name`.
    fn stored_role(server: &ApiServer, name: &str) -> Value {
        let snap = server.registry.snapshot();
        let rt = snap
            .get(crate::authz::RBAC_GROUP, "v1", "clusterroles")
            .expect("clusterroles are served");
        let entry = server.store.get(&rt.key(None, name)).expect("the role");
        decode_stored(rt, &entry).expect("a role")
    }

    /// Change the stored ClusterRole `name` as an older server, or an admin, left it.
    async fn change_role(server: &Arc<ApiServer>, name: &str, change: impl Fn(&mut Value)) {
        let snap = server.registry.snapshot();
        let rt = snap
            .get(crate::authz::RBAC_GROUP, "v1", "clusterroles")
            .cloned()
            .expect("clusterroles are served");
        internal_ctx(server, rt, None, None, None)
            .guaranteed_update(name, None, |cur| {
                let mut next = cur.clone();
                change(&mut next);
                Ok(next)
            })
            .await
            .expect("the role changes");
    }

    fn has_batch(role: &Value) -> bool {
        role["rules"]
            .as_array()
            .is_some_and(|rules| rules.iter().any(|r| r["apiGroups"] == json!(["batch"])))
    }

    #[tokio::test]
    async fn a_newer_policy_adds_what_stored_roles_lack_and_keeps_what_admins_did() {
        let store = atoll_store::Store::open(
            atoll_store::BackendKind::Memory,
            atoll_store::Options::default(),
        )
        .expect("a store");
        let server = ApiServer::start(store, crate::Config::default())
            .await
            .expect("a server");
        let custom =
            json!({"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]});
        let narrow = |role: &mut Value| {
            if let Some(rules) = role["rules"].as_array_mut() {
                rules.retain(|r| r["apiGroups"] != json!(["batch"]));
            }
        };
        // As a server from before Jobs left the controllers' role, plus a rule of the admin's.
        change_role(&server, "system:kube-controller-manager", |role| {
            narrow(role);
            role["rules"]
                .as_array_mut()
                .expect("rules")
                .push(custom.clone());
        })
        .await;
        // And a role the admin told the server to leave alone.
        change_role(&server, "system:aggregate-to-view", |role| {
            narrow(role);
            role["metadata"]["annotations"] =
                json!({"rbac.authorization.kubernetes.io/autoupdate": "false"});
        })
        .await;
        assert!(!has_batch(&stored_role(
            &server,
            "system:kube-controller-manager"
        )));

        ensure_bootstrap_policy(&server).await.expect("reconciled");
        let kcm = stored_role(&server, "system:kube-controller-manager");
        assert!(has_batch(&kcm), "{kcm}");
        assert!(
            kcm["rules"].as_array().is_some_and(|r| r.contains(&custom)),
            "{kcm}"
        );
        assert!(!has_batch(&stored_role(
            &server,
            "system:aggregate-to-view"
        )));
        // Nothing missing: nothing written.
        let before = stored_role(&server, "system:kube-controller-manager");
        ensure_bootstrap_policy(&server).await.expect("reconciled");
        assert_eq!(
            before["metadata"]["resourceVersion"],
            stored_role(&server, "system:kube-controller-manager")["metadata"]["resourceVersion"]
        );
    }
}
