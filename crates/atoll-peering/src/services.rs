//! Services of offloaded namespaces, reflected to one provider (consumer side, one task per
//! peering): each Service is copied to its namespace's remote namespace with the
//! EndpointSlices of the pods the provider does not run (`reflect_services`), kept current,
//! and removed there when it goes here. Only what changed is written: each copy is written
//! again only when what it should be differs from what was last written, or the provider's
//! object changed since.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use atoll_api::peering::{ForeignCluster, MANAGER, TENANT_LABEL, virtual_node_name};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;
use tokio::sync::Notify;

use crate::consumer::Shared;
use crate::reflect_services::{SLICE_MANAGER, remote_service, remote_slice};

/// A provider namespace's copies, as its watches see them.
struct Remote {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    _tasks: [atoll_runtime::AbortOnDrop; 2],
}

/// What was last written to one object: the desired object and the provider's
/// resourceVersion after the write.
type Written = HashMap<(String, String, String), (Value, String)>;

pub(crate) async fn run(
    shared: Arc<Shared>,
    fc: ForeignCluster,
    provider: Client,
    reachable: Arc<AtomicBool>,
) {
    let node = virtual_node_name(&fc.name_any());
    let pid = fc.spec.cluster_id.clone();
    let me = shared.cfg.cluster_id.clone();
    let kick = Arc::new(Notify::new());
    let services = crate::offload::watched(
        Api::<Service>::all(shared.local.clone()),
        watcher::Config::default(),
        &kick,
    );
    let slices = crate::offload::watched(
        Api::<EndpointSlice>::all(shared.local.clone()),
        watcher::Config::default().labels("kubernetes.io/service-name"),
        &kick,
    );
    let mut remotes: HashMap<String, Remote> = HashMap::new();
    let mut written = Written::new();
    loop {
        let mapping = shared.mapping(&pid);
        for remote_ns in mapping.values() {
            remotes.entry(remote_ns.clone()).or_insert_with(|| {
                let mine = watcher::Config::default().labels(&format!("{TENANT_LABEL}={me}"));
                let (services, a) = crate::offload::watched(
                    Api::<Service>::namespaced(provider.clone(), remote_ns),
                    mine.clone(),
                    &kick,
                );
                let (slices, b) = crate::offload::watched(
                    Api::<EndpointSlice>::namespaced(provider.clone(), remote_ns),
                    mine,
                    &kick,
                );
                Remote {
                    services,
                    slices,
                    _tasks: [a, b],
                }
            });
        }
        remotes.retain(|ns, _| mapping.values().any(|m| m == ns));
        let ready = services.0.wait_until_ready().await.is_ok()
            && slices.0.wait_until_ready().await.is_ok();
        if reachable.load(Ordering::Relaxed) && ready {
            let desired = desired(&services.0, &slices.0, &mapping, &me, &node);
            reconcile(&provider, &remotes, &desired, &mut written).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), kick.notified()).await;
    }
}

/// Every copy the provider should hold, by (kind, namespace, name).
fn desired(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    mapping: &HashMap<String, String>,
    me: &str,
    node: &str,
) -> BTreeMap<(String, String, String), Value> {
    let mut out = BTreeMap::new();
    let mut present = std::collections::HashSet::new();
    for svc in services.state() {
        let ns = svc.namespace().unwrap_or_default();
        let Some(remote_ns) = mapping.get(&ns) else {
            continue;
        };
        let Ok(local) = serde_json::to_value(svc.as_ref()) else {
            continue;
        };
        present.insert((ns.clone(), svc.name_any()));
        out.insert(
            ("services".into(), remote_ns.clone(), svc.name_any()),
            remote_service(&local, remote_ns, me),
        );
    }
    for slice in slices.state() {
        let ns = slice.namespace().unwrap_or_default();
        let Some(remote_ns) = mapping.get(&ns) else {
            continue;
        };
        let service = slice
            .labels()
            .get("kubernetes.io/service-name")
            .cloned()
            .unwrap_or_default();
        if !present.contains(&(ns.clone(), service)) {
            continue;
        }
        let Ok(local) = serde_json::to_value(slice.as_ref()) else {
            continue;
        };
        if let Some(copy) = remote_slice(&local, remote_ns, me, node) {
            let name = copy["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            out.insert(("endpointslices".into(), remote_ns.clone(), name), copy);
        }
    }
    out
}

async fn reconcile(
    provider: &Client,
    remotes: &HashMap<String, Remote>,
    desired: &BTreeMap<(String, String, String), Value>,
    written: &mut Written,
) {
    let pp = PatchParams::apply(MANAGER).force();
    // What the provider holds of ours: (kind, namespace, name) -> resourceVersion.
    let mut held: HashMap<(String, String, String), String> = HashMap::new();
    for (ns, r) in remotes {
        for s in r.services.state() {
            held.insert(
                ("services".into(), ns.clone(), s.name_any()),
                s.resource_version().unwrap_or_default(),
            );
        }
        for s in r.slices.state() {
            // Only the slices this reflection made: the provider's controller makes others.
            if s.labels()
                .get("endpointslice.kubernetes.io/managed-by")
                .map(String::as_str)
                == Some(SLICE_MANAGER)
            {
                held.insert(
                    ("endpointslices".into(), ns.clone(), s.name_any()),
                    s.resource_version().unwrap_or_default(),
                );
            }
        }
    }
    // Services before their slices (the BTreeMap's order puts endpointslices first).
    let order = desired
        .iter()
        .filter(|(k, _)| k.0 == "services")
        .chain(desired.iter().filter(|(k, _)| k.0 == "endpointslices"));
    for (key, want) in order {
        let current = held.get(key);
        if let (Some(rv), Some((last, last_rv))) = (current, written.get(key))
            && last == want
            && rv == last_rv
        {
            continue;
        }
        let (_, ns, name) = key;
        let result = if key.0 == "services" {
            apply::<Service>(provider, ns, name, want, &pp).await
        } else {
            apply::<EndpointSlice>(provider, ns, name, want, &pp).await
        };
        match result {
            Ok(rv) => {
                written.insert(key.clone(), (want.clone(), rv));
            }
            Err(e) => {
                tracing::debug!(kind = %key.0, namespace = %ns, name = %name, error = %e, "cannot reflect to the provider")
            }
        }
    }
    for key in held.keys() {
        if desired.contains_key(key) {
            continue;
        }
        let (kind, ns, name) = key;
        let dp = DeleteParams::default();
        let result = if kind == "services" {
            Api::<Service>::namespaced(provider.clone(), ns)
                .delete(name, &dp)
                .await
                .map(|_| ())
        } else {
            Api::<EndpointSlice>::namespaced(provider.clone(), ns)
                .delete(name, &dp)
                .await
                .map(|_| ())
        };
        match result {
            Ok(()) | Err(kube::Error::Api(_)) => {
                written.remove(key);
            }
            Err(e) => {
                tracing::debug!(namespace = %ns, name = %name, error = %e, "cannot remove a reflected copy")
            }
        }
    }
    written.retain(|k, _| desired.contains_key(k));
}

async fn apply<K>(
    provider: &Client,
    ns: &str,
    name: &str,
    want: &Value,
    pp: &PatchParams,
) -> Result<String, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(provider.clone(), ns);
    let o = api.patch(name, pp, &Patch::Apply(want)).await?;
    Ok(o.resource_version().unwrap_or_default())
}
