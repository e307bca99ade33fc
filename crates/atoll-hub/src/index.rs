//! The hub's in-memory view of clusters, sets, bindings, placements, decisions and profiles,
//! fed by watches ("index, don't reconcile"), with the reverse maps that tell which
//! placements, sets, bindings and profiles a change touches.
//!
//! # Guarantees
//! - Every watched object is in the index once its watch has listed it; an object deleted
//!   while a watch was down is removed when the watch lists again.
//! - A change is applied to the index before the keys it touches are queued, so a reconcile
//!   sees at least the state that triggered it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use atoll_api::cluster::ManagedCluster;
use atoll_api::clusterset::{ManagedClusterSet, ManagedClusterSetBinding};
use atoll_api::placement::{PLACEMENT_LABEL, Placement, PlacementDecision};
use atoll_api::profile::ClusterProfile;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::placement::schedule::Cluster;

/// `(namespace, name)`.
pub type Key = (String, String);

pub fn key_of<K: Resource>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

#[derive(Default)]
pub struct Index {
    pub managed: HashMap<String, Arc<ManagedCluster>>,
    pub clusters: HashMap<String, Arc<Cluster>>,
    pub sets: HashMap<String, Arc<ManagedClusterSet>>,
    pub bindings: HashMap<Key, Arc<ManagedClusterSetBinding>>,
    /// Set -> namespaces with a binding named after it.
    pub binding_namespaces: HashMap<String, BTreeSet<String>>,
    pub placements: HashMap<Key, Arc<Placement>>,
    /// Namespace -> placement names.
    pub namespace_placements: HashMap<String, BTreeSet<String>>,
    pub decision_objects: HashMap<Key, Arc<PlacementDecision>>,
    /// Placement -> its PlacementDecision names.
    pub placement_decisions: HashMap<Key, BTreeSet<String>>,
    /// What each placement decided, as the hub wrote it (or, before the hub's first write
    /// since it started, as its PlacementDecisions say).
    pub decided: HashMap<Key, BTreeSet<String>>,
    /// Cluster -> how many placements decided it (for `Balance`).
    pub counts: HashMap<String, u32>,
    pub profiles: HashMap<Key, Arc<ClusterProfile>>,
    /// Per placement, where its feasible clusters' resources lay when it was last scheduled.
    pub bounds: HashMap<Key, crate::placement::schedule::ResourceBounds>,
    pub replicasets: HashMap<Key, Arc<atoll_api::work::ManifestWorkReplicaSet>>,
    /// Per replica set, its works by cluster.
    pub replicaset_works:
        HashMap<Key, std::collections::BTreeMap<String, Arc<atoll_api::work::ManifestWork>>>,
}

impl Index {
    /// The sets bound to `namespace` that exist.
    pub fn bound_sets(&self, namespace: &str) -> BTreeSet<String> {
        self.bindings
            .keys()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, name)| name.clone())
            .filter(|set| self.sets.contains_key(set))
            .collect()
    }

    /// The clusters of the sets `names`, each once, sorted by name.
    pub fn members(&self, names: &[String]) -> Vec<Arc<Cluster>> {
        let sets: Vec<&Arc<ManagedClusterSet>> =
            names.iter().filter_map(|n| self.sets.get(n)).collect();
        let mut out: Vec<Arc<Cluster>> = self
            .clusters
            .values()
            .filter(|c| sets.iter().any(|s| s.selects(&c.labels)))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The sets a cluster with `labels` is a member of.
    pub fn sets_of(&self, labels: &std::collections::BTreeMap<String, String>) -> Vec<String> {
        let mut v: Vec<String> = self
            .sets
            .values()
            .filter(|s| s.selects(labels))
            .map(|s| s.name_any())
            .collect();
        v.sort();
        v
    }

    /// The placements that may pick from set `set`: those in namespaces binding it that name
    /// it or name no sets.
    pub fn placements_using(&self, set: &str) -> Vec<Key> {
        let mut out = Vec::new();
        for ns in self.binding_namespaces.get(set).into_iter().flatten() {
            for name in self.namespace_placements.get(ns).into_iter().flatten() {
                let key = (ns.clone(), name.clone());
                if let Some(p) = self.placements.get(&key)
                    && (p.spec.cluster_sets.is_empty()
                        || p.spec.cluster_sets.iter().any(|s| s == set))
                {
                    out.push(key);
                }
            }
        }
        out
    }

    /// The replica sets that use placement `key`.
    pub fn replicasets_using(&self, key: &Key) -> Vec<Key> {
        self.replicasets
            .iter()
            .filter(|((ns, _), rs)| {
                *ns == key.0 && rs.spec.placement_refs.iter().any(|r| r.name == key.1)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The placements of `namespace`.
    pub fn placements_in(&self, namespace: &str) -> Vec<Key> {
        self.namespace_placements
            .get(namespace)
            .into_iter()
            .flatten()
            .map(|n| (namespace.to_string(), n.clone()))
            .collect()
    }

    /// Placements with CEL predicates, which may read any field of a cluster.
    pub fn placements_with_cel(&self) -> Vec<Key> {
        self.placements
            .iter()
            .filter(|(_, p)| {
                p.spec
                    .predicates
                    .iter()
                    .any(|pr| !pr.required_cluster_selector.cel_selector.is_empty())
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Record what placement `key` decided now, keeping `counts` in step.
    pub fn set_decided(&mut self, key: &Key, decided: BTreeSet<String>) {
        let old = self.decided.remove(key).unwrap_or_default();
        for c in old.difference(&decided) {
            if let Some(n) = self.counts.get_mut(c) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.counts.remove(c);
                }
            }
        }
        for c in decided.difference(&old) {
            *self.counts.entry(c.clone()).or_default() += 1;
        }
        if !decided.is_empty() {
            self.decided.insert(key.clone(), decided);
        }
    }

    pub fn upsert_binding(&mut self, b: Arc<ManagedClusterSetBinding>) {
        let key = key_of(b.as_ref());
        self.binding_namespaces
            .entry(key.1.clone())
            .or_default()
            .insert(key.0.clone());
        self.bindings.insert(key, b);
    }

    pub fn remove_binding(&mut self, key: &Key) {
        self.bindings.remove(key);
        if let Some(ns) = self.binding_namespaces.get_mut(&key.1) {
            ns.remove(&key.0);
        }
    }

    pub fn upsert_placement(&mut self, p: Arc<Placement>) {
        let key = key_of(p.as_ref());
        self.namespace_placements
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone());
        self.placements.insert(key, p);
    }

    pub fn remove_placement(&mut self, key: &Key) {
        self.placements.remove(key);
        if let Some(names) = self.namespace_placements.get_mut(&key.0) {
            names.remove(&key.1);
        }
        self.set_decided(key, BTreeSet::new());
        self.bounds.remove(key);
    }

    /// The placement a PlacementDecision belongs to (by its label).
    pub fn owner_of(pd: &PlacementDecision) -> Option<Key> {
        let name = pd.labels().get(PLACEMENT_LABEL)?;
        Some((pd.namespace().unwrap_or_default(), name.clone()))
    }

    pub fn upsert_decision(&mut self, pd: Arc<PlacementDecision>) {
        let key = key_of(pd.as_ref());
        if let Some(owner) = Index::owner_of(&pd) {
            self.placement_decisions
                .entry(owner)
                .or_default()
                .insert(key.1.clone());
        }
        self.decision_objects.insert(key, pd);
    }

    pub fn remove_decision(&mut self, key: &Key) {
        if let Some(pd) = self.decision_objects.remove(key)
            && let Some(owner) = Index::owner_of(&pd)
            && let Some(names) = self.placement_decisions.get_mut(&owner)
        {
            names.remove(&key.1);
        }
    }

    /// The PlacementDecisions of placement `key`.
    pub fn decisions_of(&self, key: &Key) -> Vec<Arc<PlacementDecision>> {
        self.placement_decisions
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|n| {
                self.decision_objects
                    .get(&(key.0.clone(), n.clone()))
                    .cloned()
            })
            .collect()
    }
}

/// The index behind a lock, shared by the hub's controllers.
#[derive(Default)]
pub struct Shared(Mutex<Index>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Index> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a watch reports, with deletions made explicit: an object gone while the watch was
/// down is `Removed` when it lists again.
pub enum Change<K> {
    /// Listed (`initial`) or changed.
    Upserted {
        obj: K,
        initial: bool,
    },
    Removed(K),
    /// The first full list is in.
    Synced,
}

/// Watch `api` and pass every change to `on_change`, until the process ends.
pub fn watch<K, F>(api: Api<K>, config: watcher::Config, mut on_change: F)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    F: FnMut(Change<K>) + Send + 'static,
{
    tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        let mut known: HashMap<Key, K> = HashMap::new();
        let mut listing: Option<HashMap<Key, K>> = None;
        let mut synced = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listing = Some(HashMap::new()),
                Ok(watcher::Event::InitApply(o)) => {
                    let key = key_of(&o);
                    if let Some(l) = listing.as_mut() {
                        l.insert(key, o.clone());
                    }
                    on_change(Change::Upserted {
                        obj: o,
                        initial: true,
                    });
                }
                Ok(watcher::Event::InitDone) => {
                    let listed = listing.take().unwrap_or_default();
                    for (key, old) in known.drain() {
                        if !listed.contains_key(&key) {
                            on_change(Change::Removed(old));
                        }
                    }
                    known = listed;
                    if !synced {
                        synced = true;
                        on_change(Change::Synced);
                    }
                }
                Ok(watcher::Event::Apply(o)) => {
                    known.insert(key_of(&o), o.clone());
                    on_change(Change::Upserted {
                        obj: o,
                        initial: false,
                    });
                }
                Ok(watcher::Event::Delete(o)) => {
                    known.remove(&key_of(&o));
                    on_change(Change::Removed(o));
                }
                Err(e) => tracing::debug!(error = %e, "hub watch error"),
            }
        }
    });
}

/// Waits until every watch it counted has listed once.
#[derive(Clone)]
pub struct SyncGate {
    left: Arc<(Mutex<usize>, tokio::sync::Notify)>,
}

impl SyncGate {
    pub fn new(watches: usize) -> SyncGate {
        SyncGate {
            left: Arc::new((Mutex::new(watches), tokio::sync::Notify::new())),
        }
    }

    pub fn synced_one(&self) {
        let mut n = self.left.0.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.left.1.notify_waiters();
        }
    }

    pub async fn wait(&self) {
        loop {
            let notified = self.left.1.notified();
            if *self.left.0.lock().unwrap_or_else(|p| p.into_inner()) == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_what_each_placement_decided() {
        let mut ix = Index::default();
        let p1 = ("ns".to_string(), "p1".to_string());
        let p2 = ("ns".to_string(), "p2".to_string());
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        ix.set_decided(&p1, set(&["a", "b"]));
        ix.set_decided(&p2, set(&["b", "c"]));
        assert_eq!(ix.counts["b"], 2);
        ix.set_decided(&p1, set(&["c"]));
        assert_eq!(ix.counts.get("a"), None);
        assert_eq!(ix.counts["c"], 2);
        ix.remove_placement(&p2);
        assert_eq!(ix.counts.get("b"), None);
        assert_eq!(ix.counts["c"], 1);
    }
}
