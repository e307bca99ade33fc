//! Multi-cluster services on the hub: each member's agent publishes its exports
//! (`ExportedService`, in the member's namespace); this controller merges the exports of each
//! `<namespace>/<name>` among the clusters of one cluster set (see [`merge`]), keeps a
//! ClusterSetIP for each non-headless import, writes `Conflict` on every export the merge
//! finds in conflict, and delivers the import (`ImportedService`, with every exporting
//! cluster's endpoints) to every member of the set, exporters too. The members' agents turn
//! those into `ServiceImport`s and EndpointSlices.
//!
//! A cluster whose lease has not been renewed for `grace_periods` lease durations (2 by
//! default, well before the cluster is marked unavailable) keeps its place in the import but
//! its endpoints are withdrawn from every member until it renews again, so nobody is sent to
//! a dead cluster for minutes.
//!
//! # Guarantees
//! - An import exists for a member exactly while some cluster of the member's set exports the
//!   service; it goes when the last export goes or the member leaves the set.
//! - The ClusterSetIP of an import stays the same for as long as the import exists (also across
//!   hub restarts: it is read back from the imports).
//! - A record is trusted only in its own cluster's namespace (`spec.cluster` must match).

pub mod merge;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::cluster::{
    CLUSTER_LEASE, ManagedCluster, cluster_namespace, is_available, lease_live,
};
use atoll_api::clusterset::CLUSTERSET_LABEL;
use atoll_api::mcs::{
    ANNOTATION_EAST_WEST_ADDRESS, ANNOTATION_ENDPOINT_REACHABILITY, CONDITION_CONFLICT,
    ExportedService, ImportedCluster, ImportedService, ImportedServiceSpec, REACHABILITY_GATEWAY,
    REASON_NO_CONFLICTS, TYPE_CLUSTER_SET_IP, record_name,
};
use atoll_runtime::queue::WorkQueue;
use atoll_runtime::reflect::reflect;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::{Error, MANAGER};

/// A service's key: `(namespace, name)`.
type Key = (String, String);

/// Where ClusterSetIPs come from.
#[derive(Clone, Debug)]
pub struct ServicesConfig {
    /// An IPv4 range (`127.0.64.0/18` by default: loopback, so embedded clusters' Service
    /// proxies can listen on them, and clear of the environments' Service and pod ranges).
    pub clusterset_ip_range: String,
    /// Lease durations without a renewal after which a cluster's endpoints are withdrawn.
    pub grace_periods: f64,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            clusterset_ip_range: "127.0.64.0/18".into(),
            grace_periods: 2.0,
        }
    }
}

/// ClusterSetIPs in use and the range they come from.
struct Allocator {
    base: u32,
    size: u32,
    /// By `(set, namespace, name)`.
    held: HashMap<(String, String, String), Ipv4Addr>,
}

impl Allocator {
    fn new(range: &str) -> Result<Allocator, Error> {
        let bad = || {
            Error::Invalid(format!(
                "ClusterSetIP range {range:?}: not an IPv4 CIDR of /8 to /30"
            ))
        };
        let (ip, bits) = range.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let bits: u32 = bits.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&bits) {
            return Err(bad());
        }
        let size = 1u32 << (32 - bits);
        Ok(Allocator {
            base: u32::from(ip) & !(size - 1),
            size,
            held: HashMap::new(),
        })
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n > self.base && n < self.base + self.size - 1
    }

    /// The IP for a key: the one it holds, else the one it had (if still free), else the
    /// first free address (not the network's first or last).
    fn ip_for(
        &mut self,
        key: &(String, String, String),
        had: Option<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = self.held.get(key) {
            return Some(*ip);
        }
        let taken: BTreeSet<Ipv4Addr> = self.held.values().copied().collect();
        let pick = had
            .filter(|ip| self.contains(*ip) && !taken.contains(ip))
            .or_else(|| {
                (1..self.size - 1)
                    .map(|i| Ipv4Addr::from(self.base + i))
                    .find(|ip| !taken.contains(ip))
            })?;
        self.held.insert(key.clone(), pick);
        Some(pick)
    }

    fn release(&mut self, key: &(String, String, String)) {
        self.held.remove(key);
    }
}

struct Ctx {
    client: Client,
    exports: Store<ExportedService>,
    imports: Store<ImportedService>,
    clusters: Store<ManagedCluster>,
    leases: Store<Lease>,
    ips: Mutex<Allocator>,
    grace_periods: f64,
    /// Each cluster's liveness as last found (transitions requeue its services).
    live: Mutex<HashMap<String, bool>>,
}

impl Ctx {
    fn is_live(&self, mc: &ManagedCluster) -> bool {
        let lease = self
            .leases
            .get(&ObjectRef::new(CLUSTER_LEASE).within(&cluster_namespace(&mc.name_any())));
        let renewed = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        lease_live(
            renewed,
            mc.spec.lease_duration_seconds,
            self.grace_periods,
            is_available(mc),
            k8s_openapi::jiff::Timestamp::now(),
        )
    }
}

/// Run the controller until the process ends.
pub async fn run(client: Client, cfg: ServicesConfig) -> Result<(), Error> {
    let allocator = Allocator::new(&cfg.clusterset_ip_range)?;
    let (exports, exports_w) = reflector::store();
    let (imports, imports_w) = reflector::store();
    let (clusters, clusters_w) = reflector::store();
    let (leases, leases_w) = reflector::store();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        exports,
        imports,
        clusters,
        leases,
        ips: Mutex::new(allocator),
        grace_periods: cfg.grace_periods,
        live: Mutex::new(HashMap::new()),
    });
    let queue: WorkQueue<Key> = WorkQueue::new();
    {
        let q = queue.clone();
        reflect(
            Api::<ExportedService>::all(client.clone()),
            watcher::Config::default(),
            exports_w,
            move |e| q.add((e.spec.namespace.clone(), e.spec.name.clone())),
        );
    }
    {
        let q = queue.clone();
        reflect(
            Api::<ImportedService>::all(client.clone()),
            watcher::Config::default(),
            imports_w,
            move |i| q.add((i.spec.namespace.clone(), i.spec.name.clone())),
        );
    }
    {
        // A cluster that joins or leaves a set, or whose availability changes, touches every
        // service.
        let (q, c) = (queue.clone(), ctx.clone());
        reflect(
            Api::<ManagedCluster>::all(client.clone()),
            watcher::Config::default(),
            clusters_w,
            move |_| {
                for k in all_keys(&c) {
                    q.add(k);
                }
            },
        );
    }
    reflect(
        Api::<Lease>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={CLUSTER_LEASE}")),
        leases_w,
        |_: &Lease| {},
    );
    let _ = ctx.leases.wait_until_ready().await;
    let _ = ctx.exports.wait_until_ready().await;
    let _ = ctx.imports.wait_until_ready().await;
    let _ = ctx.clusters.wait_until_ready().await;
    // ClusterSetIPs as the imports hold them, before anything is allocated.
    {
        let mut ips = ctx.ips.lock().unwrap_or_else(|p| p.into_inner());
        for i in ctx.imports.state() {
            if let Some(ip) = i.spec.service.ips.first().and_then(|ip| ip.parse().ok()) {
                let key = (
                    i.spec.cluster_set.clone(),
                    i.spec.namespace.clone(),
                    i.spec.name.clone(),
                );
                ips.ip_for(&key, Some(ip));
            }
        }
    }
    for k in all_keys(&ctx) {
        queue.add(k);
    }
    // Liveness from the leases, checked twice a second: a cluster that stops renewing has its
    // endpoints withdrawn within the grace and half a second, and restored at its renewal.
    {
        let (c, q) = (ctx.clone(), queue.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut changed = Vec::new();
                for mc in c.clusters.state() {
                    let now_live = c.is_live(&mc);
                    let mut live = c.live.lock().unwrap_or_else(|p| p.into_inner());
                    if live.insert(mc.name_any(), now_live) != Some(now_live) {
                        changed.push(mc.name_any());
                    }
                }
                for e in c.exports.state() {
                    if changed.contains(&e.spec.cluster) {
                        q.add((e.spec.namespace.clone(), e.spec.name.clone()));
                    }
                }
            }
        });
    }
    let c = ctx.clone();
    let workers = queue.run(4, "multicluster-service", move |k| reconcile(c.clone(), k));
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}

fn all_keys(ctx: &Ctx) -> BTreeSet<Key> {
    let mut keys: BTreeSet<Key> = ctx
        .exports
        .state()
        .iter()
        .map(|e| (e.spec.namespace.clone(), e.spec.name.clone()))
        .collect();
    keys.extend(
        ctx.imports
            .state()
            .iter()
            .map(|i| (i.spec.namespace.clone(), i.spec.name.clone())),
    );
    keys
}

/// A cluster's set for services (its `ExclusiveClusterSetLabel` set), if it is accepted.
fn set_of(mc: &ManagedCluster) -> Option<String> {
    if !mc.spec.hub_accepts_client || mc.metadata.deletion_timestamp.is_some() {
        return None;
    }
    mc.labels().get(CLUSTERSET_LABEL).cloned()
}

async fn reconcile(ctx: Arc<Ctx>, (namespace, name): Key) -> Result<Option<Duration>, Error> {
    let clusters: HashMap<String, Arc<ManagedCluster>> = ctx
        .clusters
        .state()
        .into_iter()
        .map(|c| (c.name_any(), c))
        .collect();
    // The exports of this service, by the set of the cluster that made them.
    let mut by_set: BTreeMap<String, Vec<Arc<ExportedService>>> = BTreeMap::new();
    for e in ctx.exports.state() {
        if e.spec.namespace != namespace
            || e.spec.name != name
            || e.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if e.namespace().as_deref() != Some(cluster_namespace(&e.spec.cluster).as_str()) {
            continue;
        }
        if let Some(set) = clusters.get(&e.spec.cluster).and_then(|c| set_of(c)) {
            by_set.entry(set).or_default().push(e);
        }
    }
    let record = record_name(&namespace, &name);
    let mut desired: BTreeMap<String, ImportedServiceSpec> = BTreeMap::new();
    for (set, exports) in &by_set {
        let merged = merge::merge(exports.iter().map(|e| to_export(e)).collect())
            .ok_or_else(|| Error::Invalid("no exports to merge".into()))?;
        let mut service = merged.service.clone();
        let key = (set.clone(), namespace.clone(), name.clone());
        if service.type_ == TYPE_CLUSTER_SET_IP {
            let had = ctx
                .imports
                .state()
                .iter()
                .filter(|i| {
                    i.spec.cluster_set == *set
                        && i.spec.namespace == namespace
                        && i.spec.name == name
                })
                .find_map(|i| i.spec.service.ips.first().and_then(|ip| ip.parse().ok()));
            let ip = ctx
                .ips
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ip_for(&key, had)
                .ok_or_else(|| Error::Invalid("the ClusterSetIP range is exhausted".into()))?;
            // Atoll's data path is IPv4 (loopback) alone.
            service.ips = vec![ip.to_string()];
            service.ip_families = vec!["IPv4".into()];
        } else {
            ctx.ips
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .release(&key);
            service.ips.clear();
        }
        let mut parts: Vec<ImportedCluster> =
            merge::ranked(exports.iter().map(|e| to_export(e)).collect())
                .into_iter()
                .filter_map(|x| exports.iter().find(|e| e.spec.cluster == x.cluster))
                .map(|e| {
                    let mc = clusters.get(&e.spec.cluster);
                    let reach = mc.map(|c| reachability(c)).unwrap_or(Reach::Direct);
                    ImportedCluster {
                        cluster: e.spec.cluster.clone(),
                        ports: e.spec.service.ports.clone(),
                        gateway: match &reach {
                            Reach::Gateway(address) => Some(address.clone()),
                            _ => None,
                        },
                        // A cluster that is not available is sent no traffic, nor one that
                        // can be reached only through a gateway it has not named.
                        slices: if mc.is_some_and(|c| ctx.is_live(c)) && reach != Reach::Unreachable
                        {
                            merge::served_slices(
                                &merged.service.ports,
                                &e.spec.service.ports,
                                &e.spec.slices,
                            )
                        } else {
                            Vec::new()
                        },
                    }
                })
                .collect();
        parts.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        let spec = ImportedServiceSpec {
            namespace: namespace.clone(),
            name: name.clone(),
            cluster_set: set.clone(),
            service,
            labels: merged.labels.clone(),
            annotations: merged.annotations.clone(),
            clusters: parts,
        };
        let mut importers = Vec::new();
        for (member, mc) in &clusters {
            if set_of(mc).as_deref() == Some(set.as_str()) {
                desired.insert(cluster_namespace(member), spec.clone());
                importers.push(member.clone());
            }
        }
        importers.sort();
        for e in exports {
            let reasons = merged
                .conflicts
                .get(&e.spec.cluster)
                .cloned()
                .unwrap_or_default();
            write_status(&ctx.client, e, &reasons, &importers).await?;
        }
    }
    // Sets with no exports left give back their ClusterSetIPs.
    {
        let mut ips = ctx.ips.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<_> = ips
            .held
            .keys()
            .filter(|(set, ns, n)| *ns == namespace && *n == name && !by_set.contains_key(set))
            .cloned()
            .collect();
        for k in gone {
            ips.release(&k);
        }
    }
    let existing: Vec<Arc<ImportedService>> = ctx
        .imports
        .state()
        .into_iter()
        .filter(|i| i.spec.namespace == namespace && i.spec.name == name)
        .collect();
    for i in &existing {
        let ns = i.namespace().unwrap_or_default();
        if !desired.contains_key(&ns) || i.name_any() != record {
            let api: Api<ImportedService> = Api::namespaced(ctx.client.clone(), &ns);
            match api.delete(&i.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for (ns, spec) in desired {
        let current = existing
            .iter()
            .find(|i| i.namespace().as_deref() == Some(ns.as_str()) && i.name_any() == record);
        if current.is_some_and(|c| c.spec == spec) {
            continue;
        }
        let api: Api<ImportedService> = Api::namespaced(ctx.client.clone(), &ns);
        let obj = json!({
            "apiVersion": "networking.atoll.io/v1alpha1",
            "kind": "ImportedService",
            "metadata": {"name": record, "namespace": ns},
            "spec": spec,
        });
        match api
            .patch(
                &record,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
        {
            Ok(_) => {}
            // The cluster's namespace is going (the cluster is being removed).
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

fn to_export(e: &ExportedService) -> merge::Export {
    merge::Export {
        cluster: e.spec.cluster.clone(),
        created: e.spec.export_created.as_ref().map(|t| t.0.as_second()),
        service: e.spec.service.clone(),
        labels: e.spec.exported_labels.clone(),
        annotations: e.spec.exported_annotations.clone(),
    }
}

/// How the other members reach a cluster's endpoints, as its ManagedCluster's annotations say.
#[derive(Debug, PartialEq, Eq)]
enum Reach {
    Direct,
    Gateway(String),
    /// Through a gateway, but none is named.
    Unreachable,
}

fn reachability(mc: &ManagedCluster) -> Reach {
    let annotations = mc.annotations();
    if annotations
        .get(ANNOTATION_ENDPOINT_REACHABILITY)
        .map(String::as_str)
        != Some(REACHABILITY_GATEWAY)
    {
        return Reach::Direct;
    }
    match annotations
        .get(ANNOTATION_EAST_WEST_ADDRESS)
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
    {
        Some(a) => Reach::Gateway(a.to_string()),
        None => Reach::Unreachable,
    }
}

/// `Conflict` on an export's record as the merge found it, and the clusters that import it
/// (written only when either changes).
async fn write_status(
    client: &Client,
    e: &ExportedService,
    reasons: &[&str],
    importers: &[String],
) -> Result<(), Error> {
    let (status, reason, message) = if reasons.is_empty() {
        (
            "False",
            REASON_NO_CONFLICTS.to_string(),
            "no conflicts with the other clusters' exports".to_string(),
        )
    } else {
        (
            "True",
            merge::reason(reasons),
            format!(
                "this export disagrees with others of the cluster set ({}); the oldest export's values are used",
                reasons.join(", ")
            ),
        )
    };
    let current = e
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_CONFLICT));
    let unchanged = current
        .filter(|c| c.status == status && c.reason == reason && c.message == message)
        .map(|c| c.last_transition_time.clone());
    let same_importers = e
        .status
        .as_ref()
        .is_some_and(|s| s.importers.as_slice() == importers);
    if same_importers && unchanged.is_some() {
        return Ok(());
    }
    let condition = Condition {
        type_: CONDITION_CONFLICT.into(),
        status: status.into(),
        reason,
        message,
        // The condition's transition is when it last changed, not when the importers did.
        last_transition_time: unchanged.unwrap_or_else(atoll_runtime::now),
        observed_generation: e.metadata.generation,
    };
    let api: Api<ExportedService> =
        Api::namespaced(client.clone(), &e.namespace().unwrap_or_default());
    match api
        .patch_status(
            &e.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [condition], "importers": importers}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(err)) if err.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_follows_the_clusters_annotations() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Reach);
        let cases: &[Case] = &[
            ("no annotations: direct", &[], Reach::Direct),
            (
                "an address alone changes nothing",
                &[(ANNOTATION_EAST_WEST_ADDRESS, "127.0.0.1:1")],
                Reach::Direct,
            ),
            (
                "Direct said outright",
                &[
                    (ANNOTATION_ENDPOINT_REACHABILITY, "Direct"),
                    (ANNOTATION_EAST_WEST_ADDRESS, "127.0.0.1:1"),
                ],
                Reach::Direct,
            ),
            (
                "Gateway with an address",
                &[
                    (ANNOTATION_ENDPOINT_REACHABILITY, "Gateway"),
                    (ANNOTATION_EAST_WEST_ADDRESS, " 127.0.0.1:7443 "),
                ],
                Reach::Gateway("127.0.0.1:7443".into()),
            ),
            (
                "Gateway without an address: unreachable",
                &[(ANNOTATION_ENDPOINT_REACHABILITY, "Gateway")],
                Reach::Unreachable,
            ),
        ];
        for (what, annotations, want) in cases {
            let mc: ManagedCluster = serde_json::from_value(json!({
                "apiVersion": "cluster.atoll.io/v1alpha1",
                "kind": "ManagedCluster",
                "metadata": {
                    "name": "member1",
                    "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
                },
                "spec": {"hubAcceptsClient": true},
            }))
            .expect("a ManagedCluster");
            assert_eq!(&reachability(&mc), want, "{what}");
        }
    }

    #[test]
    fn clusterset_ips_are_stable_and_reused_only_when_free() {
        let mut a = Allocator::new("127.0.64.0/30").unwrap();
        let k = |n: &str| ("s".to_string(), "ns".to_string(), n.to_string());
        // A /30 has two usable addresses.
        assert_eq!(a.ip_for(&k("a"), None), Some(Ipv4Addr::new(127, 0, 64, 1)));
        assert_eq!(
            a.ip_for(&k("a"), None),
            Some(Ipv4Addr::new(127, 0, 64, 1)),
            "stable"
        );
        // What an import had is kept when free; else the next free one.
        assert_eq!(
            a.ip_for(&k("b"), Some(Ipv4Addr::new(127, 0, 64, 1))),
            Some(Ipv4Addr::new(127, 0, 64, 2))
        );
        assert_eq!(a.ip_for(&k("c"), None), None, "exhausted");
        a.release(&k("a"));
        assert_eq!(
            a.ip_for(&k("c"), Some(Ipv4Addr::new(10, 0, 0, 1))),
            Some(Ipv4Addr::new(127, 0, 64, 1)),
            "outside the range is not kept"
        );
        assert!(Allocator::new("127.0.0.0/31").is_err());
        assert!(Allocator::new("nonsense").is_err());
    }
}
