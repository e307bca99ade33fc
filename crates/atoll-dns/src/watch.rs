//! Watches of Services, EndpointSlices and Pods into the index. A relist (after a watch
//! expired or the API server restarted) replaces everything of its kind, so objects deleted
//! meanwhile leave the index too.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::Dns;
use crate::index::{Index, Key};

/// What the index does with one kind.
struct Kind<K> {
    name: &'static str,
    set: fn(&mut Index, &K),
    remove: fn(&mut Index, &str, &str),
    keys: fn(&Index) -> Vec<Key>,
}

/// Start the three watches; the future resolves once each has listed what exists.
pub(crate) fn start(
    client: kube::Client,
    dns: Arc<Dns>,
) -> impl Future<Output = Result<(), String>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(3);
    spawn(
        Api::<Service>::all(client.clone()),
        dns.clone(),
        tx.clone(),
        Kind {
            name: "services",
            set: Index::set_service,
            remove: Index::remove_service,
            keys: Index::service_keys,
        },
    );
    spawn(
        Api::<EndpointSlice>::all(client.clone()),
        dns.clone(),
        tx.clone(),
        Kind {
            name: "endpointslices",
            set: Index::set_slice,
            remove: Index::remove_slice,
            keys: Index::slice_keys,
        },
    );
    imports(client.clone(), dns.clone());
    spawn(
        Api::<Pod>::all(client),
        dns,
        tx,
        Kind {
            name: "pods",
            set: Index::set_pod,
            remove: Index::remove_pod,
            keys: Index::pod_keys,
        },
    );
    async move {
        let mut synced = HashSet::new();
        while synced.len() < 3 {
            match rx.recv().await {
                Some(kind) => {
                    synced.insert(kind);
                }
                None => return Err("a watch ended".to_string()),
            }
        }
        Ok(())
    }
}

/// ServiceImports (`multicluster.x-k8s.io/v1beta1`), for `clusterset.local`. A cluster without
/// the MCS CRDs has none: this watch retries quietly and the server does not wait for it.
fn imports(client: kube::Client, dns: Arc<Dns>) {
    let resource = kube::api::ApiResource {
        group: "multicluster.x-k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "multicluster.x-k8s.io/v1beta1".into(),
        kind: "ServiceImport".into(),
        plural: "serviceimports".into(),
    };
    let api: Api<kube::api::DynamicObject> = Api::all_with(client, &resource);
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listing: Option<Vec<kube::api::DynamicObject>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listing = Some(Vec::new()),
                Ok(watcher::Event::InitApply(o)) => {
                    if let Some(l) = listing.as_mut() {
                        l.push(o);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    let objects = listing.take().unwrap_or_default();
                    let present: HashSet<Key> = objects
                        .iter()
                        .map(|o| {
                            (
                                o.namespace().unwrap_or_default().to_ascii_lowercase(),
                                o.name_any().to_ascii_lowercase(),
                            )
                        })
                        .collect();
                    let mut index = dns.index_mut();
                    for (ns, name) in index.import_keys() {
                        if !present.contains(&(ns.clone(), name.clone())) {
                            index.remove_import(&ns, &name);
                        }
                    }
                    for o in &objects {
                        index.set_import(o);
                    }
                }
                Ok(watcher::Event::Apply(o)) => dns.index_mut().set_import(&o),
                Ok(watcher::Event::Delete(o)) => dns
                    .index_mut()
                    .remove_import(&o.namespace().unwrap_or_default(), &o.name_any()),
                Err(e) => {
                    tracing::debug!(error = %e, "ServiceImport watch (no MCS CRDs yet?); retrying")
                }
            }
        }
    });
}

fn spawn<K>(
    api: Api<K>,
    dns: Arc<Dns>,
    synced: tokio::sync::mpsc::Sender<&'static str>,
    kind: Kind<K>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listing: Option<Vec<K>> = None;
        let mut told = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listing = Some(Vec::new()),
                Ok(watcher::Event::InitApply(o)) => {
                    if let Some(l) = listing.as_mut() {
                        l.push(o);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    let objects = listing.take().unwrap_or_default();
                    let present: HashSet<Key> = objects
                        .iter()
                        .map(|o| {
                            (
                                o.namespace().unwrap_or_default().to_ascii_lowercase(),
                                o.name_any().to_ascii_lowercase(),
                            )
                        })
                        .collect();
                    {
                        let mut index = dns.index_mut();
                        for (ns, name) in (kind.keys)(&index) {
                            if !present.contains(&(ns.clone(), name.clone())) {
                                (kind.remove)(&mut index, &ns, &name);
                            }
                        }
                        for o in &objects {
                            (kind.set)(&mut index, o);
                        }
                    }
                    if !told {
                        told = true;
                        let _ = synced.send(kind.name).await;
                    }
                }
                Ok(watcher::Event::Apply(o)) => (kind.set)(&mut dns.index_mut(), &o),
                Ok(watcher::Event::Delete(o)) => (kind.remove)(
                    &mut dns.index_mut(),
                    &o.namespace().unwrap_or_default(),
                    &o.name_any(),
                ),
                Err(e) => {
                    tracing::warn!(kind = kind.name, error = %e, "DNS watch failed; retrying")
                }
            }
        }
    });
}

/// The clusters of the peering domain: this cluster, as `kube-public/atoll-peering` (which
/// the peering controllers write) describes it, and every ForeignCluster with an API server
/// URL and CA pin. Both watches retry quietly while the cluster has no peering (no such
/// ConfigMap, no ForeignCluster CRD); the server does not wait for them.
pub(crate) fn peers(client: kube::Client, dns: Arc<Dns>) {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ConfigMap;

    use crate::peering::Peer;

    const INFO_CONFIGMAP: &str = "atoll-peering";
    let resource = kube::api::ApiResource {
        group: "peering.atoll.io".into(),
        version: "v1alpha1".into(),
        api_version: "peering.atoll.io/v1alpha1".into(),
        kind: "ForeignCluster".into(),
        plural: "foreignclusters".into(),
    };
    let foreign: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &resource);
    let info: Api<ConfigMap> = Api::namespaced(client, "kube-public");
    tokio::spawn(async move {
        let own = watcher(
            info,
            watcher::Config::default().fields(&format!("metadata.name={INFO_CONFIGMAP}")),
        )
        .default_backoff()
        .map(|e| e.map(Either::Own));
        let known = watcher(foreign, watcher::Config::default())
            .default_backoff()
            .map(|e| e.map(Either::Foreign));
        let mut events = futures::stream::select(own.boxed(), known.boxed());
        let mut this: Option<Peer> = None;
        let mut others: BTreeMap<String, Peer> = BTreeMap::new();
        let mut listing: Option<BTreeMap<String, Peer>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Either::Own(e)) => match e {
                    watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) => {
                        let data = cm.data.unwrap_or_default();
                        let get = |k: &str| data.get(k).map(String::as_str).unwrap_or_default();
                        this = Peer::new(get("clusterID"), get("apiServerURL"), get("caSHA256"));
                    }
                    watcher::Event::Delete(_) => this = None,
                    watcher::Event::Init | watcher::Event::InitDone => {}
                },
                Ok(Either::Foreign(e)) => {
                    let peer_of = |o: &kube::api::DynamicObject| {
                        let spec = &o.data["spec"];
                        let field = |k: &str| spec[k].as_str().unwrap_or_default().to_string();
                        Peer::new(
                            &field("clusterID"),
                            &field("apiServerURL"),
                            &field("caSHA256"),
                        )
                        .map(|p| (o.name_any(), p))
                    };
                    match e {
                        watcher::Event::Init => listing = Some(BTreeMap::new()),
                        watcher::Event::InitApply(o) => {
                            if let (Some(l), Some((name, p))) = (listing.as_mut(), peer_of(&o)) {
                                l.insert(name, p);
                            }
                        }
                        watcher::Event::InitDone => others = listing.take().unwrap_or_default(),
                        watcher::Event::Apply(o) => match peer_of(&o) {
                            Some((name, p)) => {
                                others.insert(name, p);
                            }
                            None => {
                                others.remove(&o.name_any());
                            }
                        },
                        watcher::Event::Delete(o) => {
                            others.remove(&o.name_any());
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "peering watch (no peering here yet?); retrying");
                    continue;
                }
            }
            let mut all: Vec<Peer> = others.values().cloned().collect();
            // The cluster's own record first: a ForeignCluster never stands in for it.
            if let Some(p) = &this {
                all.retain(|o| o.cluster_id != p.cluster_id);
                all.push(p.clone());
            }
            dns.index_mut().set_peers(all);
        }
    });
}

enum Either<A, B> {
    Own(A),
    Foreign(B),
}
