//! What each change touches: the watches that feed the index, and the keys each change puts
//! on the controllers' queues (Open Cluster Management's `enqueue.go`, plus profiles).
//!
//! - A cluster: the sets it was or is in (their status), the placements that may pick from
//!   those sets (only when a fact scheduling reads changed: labels, claims, taints,
//!   allocatable, deletion; any change for placements with CEL predicates), and its profiles
//!   in the namespaces binding those sets.
//! - A set: its status, its bindings, the placements that may pick from it, the profiles of
//!   the namespaces binding it; the built-in sets when it is one of them.
//! - A binding: its status, the placements and profiles of its namespace.
//! - A placement: itself, when its spec, annotations or deletion changed (not its status,
//!   which the hub writes).
//! - A PlacementDecision or ClusterProfile not as the hub last wrote it: its placement, or its
//!   profile, again.

use std::collections::BTreeSet;
use std::sync::Arc;

use atoll_api::cluster::ManagedCluster;
use atoll_api::clusterset::{DEFAULT_SET, GLOBAL_SET, ManagedClusterSet, ManagedClusterSetBinding};
use atoll_api::placement::{Placement, PlacementDecision};
use atoll_api::profile::{CLUSTER_MANAGER, CLUSTER_MANAGER_LABEL, ClusterProfile};
use atoll_api::work::{ManifestWork, ManifestWorkReplicaSet, REPLICASET_LABEL};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::Hub;
use crate::index::{Change, Index, SyncGate, key_of, watch};
use crate::placement::schedule::Cluster;

/// Whether `new` is not older than `old` by resourceVersion. Resource versions are opaque to
/// clients, but both kube-apiserver (etcd revisions) and Atoll's server give integers; when
/// either does not parse, the watch's order is trusted.
pub fn not_older(old: &ObjectMeta, new: &ObjectMeta) -> bool {
    match (
        old.resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok()),
        new.resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(o), Some(n)) => n >= o,
        _ => true,
    }
}

/// Start the watches; the gate opens once each has listed.
pub fn start(hub: &Arc<Hub>) -> SyncGate {
    let gate = SyncGate::new(8);
    let client = hub.client.clone();

    let (h, g) = (hub.clone(), gate.clone());
    watch(
        Api::<ManagedCluster>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Upserted { obj, .. } => cluster_changed(&h, Some(obj.name_any()), Some(obj)),
            Change::Removed(obj) => cluster_changed(&h, Some(obj.name_any()), None),
            Change::Synced => g.synced_one(),
        },
    );
    let (h, g) = (hub.clone(), gate.clone());
    watch(
        Api::<ManagedClusterSet>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Upserted { obj, .. } => set_changed(&h, obj.name_any(), Some(obj)),
            Change::Removed(obj) => set_changed(&h, obj.name_any(), None),
            Change::Synced => g.synced_one(),
        },
    );
    let (h, g) = (hub.clone(), gate.clone());
    watch(
        Api::<ManagedClusterSetBinding>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Upserted { obj, .. } => binding_changed(&h, key_of(&obj), Some(obj)),
            Change::Removed(obj) => binding_changed(&h, key_of(&obj), None),
            Change::Synced => g.synced_one(),
        },
    );
    let (h, g) = (hub.clone(), gate.clone());
    watch(
        Api::<Placement>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Upserted { obj, .. } => placement_changed(&h, Some(obj)),
            Change::Removed(obj) => {
                let key = key_of(&obj);
                h.index.lock().remove_placement(&key);
            }
            Change::Synced => g.synced_one(),
        },
    );
    let (h, g) = (hub.clone(), gate.clone());
    watch(
        Api::<PlacementDecision>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Upserted { obj, initial } => decision_changed(&h, obj, initial),
            Change::Removed(obj) => {
                let owner = Index::owner_of(&obj);
                h.index.lock().remove_decision(&key_of(&obj));
                if let Some(owner) = owner {
                    h.decisions_moved(&owner);
                    h.placements.add(owner);
                }
            }
            Change::Synced => g.synced_one(),
        },
    );
    let (h, g) = (hub.clone(), gate.clone());
    watch(
        Api::<ManifestWorkReplicaSet>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Upserted { obj, .. } => {
                let key = key_of(&obj);
                let mut ix = h.index.lock();
                let act = ix.replicasets.get(&key).is_none_or(|old| {
                    not_older(&old.metadata, &obj.metadata)
                        && (old.metadata.generation != obj.metadata.generation
                            || old.spec != obj.spec
                            || old.metadata.deletion_timestamp != obj.metadata.deletion_timestamp
                            || old.finalizers() != obj.finalizers())
                });
                let stale = ix
                    .replicasets
                    .get(&key)
                    .is_some_and(|old| !not_older(&old.metadata, &obj.metadata));
                if !stale {
                    ix.replicasets.insert(key.clone(), Arc::new(obj));
                }
                drop(ix);
                if act {
                    h.replicasets.add(key);
                }
            }
            Change::Removed(obj) => {
                let key = key_of(&obj);
                h.index.lock().replicasets.remove(&key);
            }
            Change::Synced => g.synced_one(),
        },
    );
    let (h, g) = (hub.clone(), gate.clone());
    watch(
        Api::<ManifestWork>::all(client.clone()),
        watcher::Config::default().labels(REPLICASET_LABEL),
        move |c| {
            let (obj, gone) = match c {
                Change::Upserted { obj, .. } => (obj, false),
                Change::Removed(obj) => (obj, true),
                Change::Synced => return g.synced_one(),
            };
            // `<namespace>.<name>` of the replica set, and the cluster of the namespace.
            let name = obj.name_any();
            let Some((rs_ns, rs_name)) = name.split_once('.') else {
                return;
            };
            let Some(cluster) = obj
                .namespace()
                .and_then(|n| n.strip_prefix("atoll-cluster-").map(String::from))
            else {
                return;
            };
            let key = (rs_ns.to_string(), rs_name.to_string());
            let mut ix = h.index.lock();
            let works = ix.replicaset_works.entry(key.clone()).or_default();
            if gone {
                works.remove(&cluster);
            } else {
                let stale = works
                    .get(&cluster)
                    .is_some_and(|old| !not_older(&old.metadata, &obj.metadata));
                if !stale {
                    works.insert(cluster, Arc::new(obj));
                }
            }
            drop(ix);
            h.replicasets.add(key);
        },
    );
    let (h, g) = (hub.clone(), gate.clone());
    watch(
        Api::<ClusterProfile>::all(client),
        watcher::Config::default().labels(&format!("{CLUSTER_MANAGER_LABEL}={CLUSTER_MANAGER}")),
        move |c| match c {
            Change::Upserted { obj, .. } => {
                let key = key_of(&obj);
                let mut ix = h.index.lock();
                let same = ix.profiles.get(&key).is_some_and(|old| {
                    !not_older(&old.metadata, &obj.metadata)
                        || (old.spec == obj.spec
                            && old.status == obj.status
                            && old.labels() == obj.labels())
                });
                if !same {
                    ix.profiles.insert(key.clone(), Arc::new(obj));
                    drop(ix);
                    h.profiles.add(key);
                }
            }
            Change::Removed(obj) => {
                let key = key_of(&obj);
                h.index.lock().profiles.remove(&key);
                h.profiles.add(key);
            }
            Change::Synced => g.synced_one(),
        },
    );
    gate
}

fn cluster_changed(hub: &Hub, name: Option<String>, obj: Option<ManagedCluster>) {
    let Some(name) = name else { return };
    let mut ix = hub.index.lock();
    let new = obj.as_ref().map(|mc| Arc::new(Cluster::from_managed(mc)));
    let old = match (&new, &obj) {
        (Some(c), Some(mc)) => {
            ix.managed.insert(name.clone(), Arc::new(mc.clone()));
            ix.clusters.insert(name.clone(), c.clone())
        }
        _ => {
            ix.managed.remove(&name);
            ix.clusters.remove(&name)
        }
    };
    let facts_changed = match (&old, &new) {
        (Some(o), Some(n)) => o.scheduling_facts() != n.scheduling_facts(),
        _ => true,
    };
    let mut sets: BTreeSet<String> = BTreeSet::new();
    for c in old.iter().chain(new.iter()) {
        sets.extend(ix.sets_of(&c.labels));
    }
    // The placements this change may move: those that may pick from the sets involved (when a
    // fact scheduling reads changed) and those whose CEL predicates read anything; of those,
    // the ones it can touch (`touched_by`), the ones holding the cluster first.
    let mut maybe: Vec<crate::index::Key> = Vec::new();
    if facts_changed {
        for s in &sets {
            maybe.extend(ix.placements_using(s));
        }
    }
    maybe.extend(ix.placements_with_cel());
    maybe.sort();
    maybe.dedup();
    let mut bound: std::collections::HashMap<String, BTreeSet<String>> = Default::default();
    let mut placements: Vec<(bool, crate::index::Key)> = Vec::new();
    for key in maybe {
        let b = bound
            .entry(key.0.clone())
            .or_insert_with(|| ix.bound_sets(&key.0))
            .clone();
        if crate::placement::touched_by(&ix, &key, &b, old.as_deref(), new.as_deref(), &hub.cel) {
            let holds = ix.decided.get(&key).is_some_and(|d| d.contains(&name));
            placements.push((!holds, key));
        }
    }
    placements.sort_by_key(|(later, _)| *later);
    let placements: Vec<crate::index::Key> = placements.into_iter().map(|(_, k)| k).collect();
    let mut profiles = Vec::new();
    for s in &sets {
        for ns in ix.binding_namespaces.get(s).into_iter().flatten() {
            profiles.push((ns.clone(), name.clone()));
        }
    }
    drop(ix);
    if facts_changed {
        for s in sets {
            hub.sets.add(s);
        }
    }
    for p in placements {
        hub.placements.add(p);
    }
    for p in profiles {
        hub.profiles.add(p);
    }
}

fn set_changed(hub: &Hub, name: String, obj: Option<ManagedClusterSet>) {
    let mut ix = hub.index.lock();
    let changed = match (&obj, ix.sets.get(&name)) {
        (Some(new), Some(old)) => not_older(&old.metadata, &new.metadata) && old.spec != new.spec,
        _ => true,
    };
    match obj {
        Some(s) => {
            let stale = ix
                .sets
                .get(&name)
                .is_some_and(|old| !not_older(&old.metadata, &s.metadata));
            if !stale {
                ix.sets.insert(name.clone(), Arc::new(s));
            }
        }
        None => {
            ix.sets.remove(&name);
        }
    }
    let (placements, namespaces) = if changed {
        (
            ix.placements_using(&name),
            ix.binding_namespaces
                .get(&name)
                .cloned()
                .unwrap_or_default(),
        )
    } else {
        Default::default()
    };
    drop(ix);
    hub.sets.add(name.clone());
    if changed && (name == DEFAULT_SET || name == GLOBAL_SET) {
        hub.builtins.add(name.clone());
    }
    for p in placements {
        hub.placements.add(p);
    }
    for ns in namespaces {
        hub.bindings.add((ns.clone(), name.clone()));
        hub.profiles.add((ns, String::new()));
    }
}

fn binding_changed(hub: &Hub, key: crate::index::Key, obj: Option<ManagedClusterSetBinding>) {
    let mut ix = hub.index.lock();
    match obj {
        Some(b) => {
            let stale = ix
                .bindings
                .get(&key)
                .is_some_and(|old| !not_older(&old.metadata, &b.metadata));
            if !stale {
                ix.upsert_binding(Arc::new(b));
            }
        }
        None => ix.remove_binding(&key),
    }
    let placements = ix.placements_in(&key.0);
    drop(ix);
    hub.bindings.add(key.clone());
    for p in placements {
        hub.placements.add(p);
    }
    hub.profiles.add((key.0, String::new()));
}

fn placement_changed(hub: &Hub, obj: Option<Placement>) {
    let Some(p) = obj else { return };
    let key = key_of(&p);
    let mut ix = hub.index.lock();
    let schedule = match ix.placements.get(&key) {
        None => true,
        Some(old) => {
            not_older(&old.metadata, &p.metadata)
                && (old.metadata.generation != p.metadata.generation
                    || old.spec != p.spec
                    || old.annotations() != p.annotations()
                    || old.metadata.deletion_timestamp != p.metadata.deletion_timestamp
                    || old.metadata.uid != p.metadata.uid)
        }
    };
    let stale = ix
        .placements
        .get(&key)
        .is_some_and(|old| !not_older(&old.metadata, &p.metadata));
    if !stale {
        ix.upsert_placement(Arc::new(p));
    }
    drop(ix);
    if schedule {
        hub.placements.add(key);
    }
}

fn decision_changed(hub: &Hub, pd: PlacementDecision, initial: bool) {
    let key = key_of(&pd);
    let owner = Index::owner_of(&pd);
    let mut ix = hub.index.lock();
    let as_written = ix.decision_objects.get(&key).is_some_and(|old| {
        !not_older(&old.metadata, &pd.metadata)
            || (old.status == pd.status && old.labels() == pd.labels())
    });
    if as_written {
        return;
    }
    // Before the hub's first write for a placement, its decisions are what the objects say
    // (so `Steady` holds across a restart of the hub).
    if initial && let Some(owner) = &owner {
        let mut decided = ix.decided.get(owner).cloned().unwrap_or_default();
        decided.extend(
            pd.status
                .iter()
                .flat_map(|s| s.decisions.iter().map(|d| d.cluster_name.clone())),
        );
        ix.set_decided(owner, decided);
    }
    ix.upsert_decision(Arc::new(pd));
    drop(ix);
    if let Some(owner) = owner {
        hub.decisions_moved(&owner);
        hub.placements.add(owner);
    }
}

/// Whether `obj` was made by this hub's kind of writer (for objects the hub owns by label).
pub fn managed_by_atoll<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(CLUSTER_MANAGER_LABEL))
        .is_some_and(|v| v == CLUSTER_MANAGER)
}
