//! Multi-cluster services on a member, for the agent (Pull clusters) and the hub (Push
//! clusters) alike: the cluster's `ServiceExport`s published to its namespace on the hub
//! ([`export`]), and the hub's imports for the cluster made its `ServiceImport`s, derived
//! Services and EndpointSlices ([`import`]).

pub(crate) mod export;
pub(crate) mod import;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::Error;

/// The field manager of what this writes, in the member and on the hub, in either mode (so a
/// cluster that changes mode keeps its objects' owner).
pub const MANAGER: &str = "atoll-services";

/// Start both directions for cluster `name`; `hub` follows the identity that writes the
/// cluster's records on the hub (the agent's, renewed; or the hub's own for a Push cluster).
pub fn start(
    name: &str,
    hub: tokio::sync::watch::Receiver<Client>,
    member: Client,
) -> tokio::task::JoinHandle<()> {
    let name = name.to_string();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        while let Err(e) = install(&member).await {
            tracing::warn!(cluster = %name, error = %e, "cannot install the ServiceExport and ServiceImport CRDs; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        let exports = tokio::spawn(export::run(name.clone(), hub.clone(), member.clone()));
        let imports = tokio::spawn(import::run(name.clone(), hub, member));
        let _ = tokio::join!(exports, imports);
    })
}

/// The MCS CRDs in the member (server-side apply: a newer agent updates them), once served.
pub async fn install(member: &Client) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(member.clone());
    for crd in [
        atoll_api::mcs::service_export_crd(),
        atoll_api::mcs::service_import_crd(),
    ] {
        match crds
            .patch(
                &crd.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
        {
            Ok(_) => {}
            // A Push cluster's credential may not write CRDs: `atoll join` installed them.
            Err(kube::Error::Api(e)) if e.code == 403 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let exports: Api<atoll_api::mcs::v1beta1::ServiceExport> = Api::all(member.clone());
    let imports: Api<atoll_api::mcs::v1beta1::ServiceImport> = Api::all(member.clone());
    for _ in 0..600 {
        if exports.list(&ListParams::default().limit(1)).await.is_ok()
            && imports.list(&ListParams::default().limit(1)).await.is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Invalid(
        "the MCS CRDs were not served within 30 s".into(),
    ))
}

/// Objects by name, as a watch last listed and changed them.
pub(crate) type Cache<K> = Arc<Mutex<HashMap<String, Arc<K>>>>;

pub(crate) fn cached<K>(cache: &Cache<K>, name: &str) -> Option<Arc<K>> {
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .cloned()
}

/// Watch the objects of kind `K` in `namespace` of the hub into `cache`, calling `on_change`
/// for every object applied or deleted (and every one of a relist); restarted with the
/// current client whenever the agent's identity changes.
pub(crate) fn watch_hub<K>(
    mut hub: tokio::sync::watch::Receiver<Client>,
    namespace: String,
    cache: Cache<K>,
    on_change: impl Fn(&K) + Send + Sync + 'static,
) where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    tokio::spawn(async move {
        loop {
            let client = hub.borrow_and_update().clone();
            let api: Api<K> = Api::namespaced(client, &namespace);
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            let mut relist: Option<HashMap<String, Arc<K>>> = None;
            loop {
                tokio::select! {
                    changed = hub.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                    event = stream.next() => {
                        let Some(event) = event else { break };
                        let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
                        match event {
                            Ok(watcher::Event::Init) => relist = Some(HashMap::new()),
                            Ok(watcher::Event::InitApply(o)) => {
                                if let Some(r) = relist.as_mut() {
                                    r.insert(o.name_any(), Arc::new(o.clone()));
                                }
                                on_change(&o);
                            }
                            Ok(watcher::Event::InitDone) => {
                                if let Some(r) = relist.take() {
                                    let old = std::mem::replace(&mut *lock(), r);
                                    // What went while the watch was down goes now.
                                    for (name, o) in old {
                                        if !lock().contains_key(&name) {
                                            on_change(&o);
                                        }
                                    }
                                }
                            }
                            Ok(watcher::Event::Apply(o)) => {
                                lock().insert(o.name_any(), Arc::new(o.clone()));
                                on_change(&o);
                            }
                            Ok(watcher::Event::Delete(o)) => {
                                lock().remove(&o.name_any());
                                on_change(&o);
                            }
                            Err(e) => tracing::debug!(error = %e, "hub watch"),
                        }
                    }
                }
            }
        }
    });
}

/// Treat "not there" (or no longer that object) as done.
pub(crate) fn gone_ok<T>(r: Result<T, kube::Error>) -> Result<(), Error> {
    match r {
        Ok(_) => Ok(()),
        // 409: a delete's precondition failed, the object is another one now.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
