//! The garbage collector: deletes dependents whose owners are gone (background), cascades
//! foreground deletions, and orphans dependents of owners deleted with `Orphan`, acting through
//! the REST code like any controller.
//!
//! # Guarantees
//! - Only objects with owner references or a deletion mark are tracked; an owner's existence is
//!   checked in storage (by kind, name and uid) when one of its dependents may be orphaned.
//! - A dependent is deleted only when every owner it names is gone; owners of a kind the server
//!   does not serve count as present.

use super::*;

/// An owner reference, as the collector needs it to find the owner.
#[derive(Clone, serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct OwnerRef {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
}

/// What the garbage collector knows of an object that has owners or is being deleted; other
/// objects are not tracked (an owner's existence is checked in storage when it matters).
#[derive(Clone)]
pub(super) struct Node {
    key: String,
    owners: Vec<OwnerRef>,
    /// Marked for deletion (owners in foreground or orphan deletion wait on the collector).
    terminating: bool,
}

#[derive(Default)]
pub(super) struct Graph {
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
pub(super) struct GcMeta {
    uid: Option<String>,
    owner_references: Vec<OwnerRef>,
    deletion_timestamp: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub(super) struct GcObject {
    metadata: GcMeta,
}

pub(super) fn gc_meta(bytes: &[u8]) -> Option<(String, Vec<OwnerRef>, bool)> {
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
pub(super) fn may_concern_gc(bytes: &[u8]) -> bool {
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    has(b"\"ownerReferences\"") || has(b"\"deletionTimestamp\"")
}

/// What a sweep looks at: everything, or the objects an event batch may have affected.
pub(super) enum Sweep {
    All,
    /// Possible orphans (dependents of deleted objects, new dependents) and owners that may
    /// be done waiting (marked for deletion, or one of their dependents went away).
    Some {
        dependents: HashSet<String>,
        owners: HashSet<String>,
    },
}

pub(super) fn track(g: &mut Graph, key: &str, bytes: &[u8]) -> Option<(String, bool, bool)> {
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

pub(super) async fn gc_loop(server: Arc<ApiServer>) {
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
pub(super) fn owner_exists(server: &ApiServer, owner: &OwnerRef, namespace: Option<&str>) -> bool {
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

pub(super) fn namespace_of_key(server: &ApiServer, key: &str) -> Option<String> {
    let rt = rt_of_key(server, key)?;
    split_key(key, &rt).0
}

/// Delete dependents whose owners are all gone, cascade foreground deletions, orphan the
/// dependents of owners deleted with `Orphan`.
pub(super) async fn gc_sweep(
    server: &Arc<ApiServer>,
    graph: &Arc<tokio::sync::Mutex<Graph>>,
    sweep: Sweep,
) {
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

pub(super) fn split_key(key: &str, rt: &ResourceType) -> (Option<String>, String) {
    let rest = key.strip_prefix(&rt.key_prefix()).unwrap_or_default();
    match (rt.namespaced, rest.split_once('/')) {
        (true, Some((ns, name))) => (Some(ns.into()), name.into()),
        _ => (None, rest.into()),
    }
}

pub(super) async fn delete_by_key(server: &Arc<ApiServer>, key: &str, policy: &str) {
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

pub(super) async fn drop_owner_ref(server: &Arc<ApiServer>, key: &str, owner_uid: &str) {
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

pub(super) async fn remove_finalizer(
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
