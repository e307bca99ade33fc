//! The consumer's side: one task per ForeignCluster takes the peering as far as it can go and
//! says on the ForeignCluster how far it got and why not further: identity (handshake),
//! reachability, requests replicated to the provider and their answers mirrored back, offers
//! mirrored, the virtual node and its lease, the namespaces offloaded there, and the pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::peering::{
    CONDITION_AUTHENTICATED, CONDITION_NEGOTIATED, CONDITION_REACHABLE,
    CONDITION_VIRTUAL_NODE_READY, ForeignCluster, MANAGER, NamespaceOffloading, OFFLOADING_NAME,
    ORIGIN_ANNOTATION, PHASE_ACCEPTED, PeeringEnabled, REMOTE_CLUSTER_ID_LABEL, ResourceOffer,
    ResourceRequest, TENANT_LABEL, peer_namespace, tenant_namespace, virtual_node_name,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::grant::{self, Amounts};
use crate::handshake::{self, Failure, PeerIdentity};
use crate::{Error, PeeringConfig, condition, vnode};

/// What every peer task reads.
pub(crate) struct Shared {
    pub(crate) local: Client,
    pub(crate) cfg: Arc<PeeringConfig>,
    pub(crate) offloadings: Store<NamespaceOffloading>,
    pub(crate) requests: Store<ResourceRequest>,
    pub(crate) kick: Arc<Notify>,
    /// Where each offloaded pod's copy is: (namespace, pod) -> (virtual node, remote namespace).
    pub(crate) homes: Mutex<HashMap<(String, String), (String, String)>>,
    /// How to reach each virtual node's provider.
    pub(crate) upstreams: Mutex<HashMap<String, crate::vkubelet::Upstream>>,
    /// The virtual kubelet endpoint (port, certificate SHA-256).
    pub(crate) kubelet: Option<(u16, String)>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Consumer namespace -> provider namespace, for the namespaces provider `pid` has ready.
    pub(crate) fn mapping(&self, pid: &str) -> HashMap<String, String> {
        self.offloadings
            .state()
            .iter()
            .filter(|n| n.name_any() == OFFLOADING_NAME)
            .filter_map(|n| {
                let c = n
                    .status
                    .as_ref()?
                    .clusters
                    .iter()
                    .find(|c| c.cluster_id == pid)?;
                c.conditions
                    .iter()
                    .any(|x| x.type_ == "Ready" && x.status == "True")
                    .then(|| {
                        (
                            n.namespace().unwrap_or_default(),
                            c.remote_namespace.clone(),
                        )
                    })
            })
            .collect()
    }

    /// Where the copy of consumer pod `ns/pod` is.
    pub(crate) fn locate(
        &self,
        ns: &str,
        pod: &str,
    ) -> Option<(crate::vkubelet::Upstream, String)> {
        let (node, remote_ns) = lock(&self.homes)
            .get(&(ns.to_string(), pod.to_string()))?
            .clone();
        let up = lock(&self.upstreams).get(&node)?.clone();
        Some((up, remote_ns))
    }
}

pub(crate) async fn run(local: Client, cfg: Arc<PeeringConfig>) -> Result<(), Error> {
    let kick = Arc::new(Notify::new());
    let (fcs, fcs_writer) = reflector::store::<ForeignCluster>();
    let fc_kick = Arc::new(Notify::new());
    {
        let k = fc_kick.clone();
        let k2 = kick.clone();
        atoll_runtime::reflect::reflect(
            Api::<ForeignCluster>::all(local.clone()),
            watcher::Config::default(),
            fcs_writer,
            move |_| {
                k.notify_one();
                k2.notify_waiters();
            },
        );
    }
    let (offloadings, w) = reflector::store::<NamespaceOffloading>();
    let k = kick.clone();
    atoll_runtime::reflect::reflect(
        Api::all(local.clone()),
        watcher::Config::default(),
        w,
        move |_| k.notify_waiters(),
    );
    let (requests, w) = reflector::store::<ResourceRequest>();
    let k = kick.clone();
    atoll_runtime::reflect::reflect(
        Api::all(local.clone()),
        watcher::Config::default(),
        w,
        move |_| k.notify_waiters(),
    );
    // The virtual kubelet endpoint, found through the pods' homes filled in below.
    let slot: Arc<std::sync::OnceLock<std::sync::Weak<Shared>>> =
        Arc::new(std::sync::OnceLock::new());
    let finder = slot.clone();
    let locate: Arc<crate::vkubelet::Locator> =
        Arc::new(move |ns: &str, pod: &str| finder.get()?.upgrade()?.locate(ns, pod));
    let kubelet = match crate::vkubelet::start(&cfg.ca_pem, locate).await {
        Ok(e) => Some((e.port, e.cert_sha256)),
        Err(e) => {
            tracing::warn!(error = %e, "no virtual kubelet endpoint: logs and exec of offloaded pods will fail");
            None
        }
    };
    let shared = Arc::new(Shared {
        local: local.clone(),
        cfg,
        offloadings,
        requests,
        kick,
        homes: Mutex::new(HashMap::new()),
        upstreams: Mutex::new(HashMap::new()),
        kubelet,
    });
    let _ = slot.set(Arc::downgrade(&shared));
    // The pod webhook of offloaded namespaces, and the labels that call it.
    let store = shared.offloadings.clone();
    let lookup: Arc<crate::webhook::Lookup> = Arc::new(move |ns: &str| {
        let nso = store
            .get(&reflector::ObjectRef::new(atoll_api::peering::OFFLOADING_NAME).within(ns))?;
        Some((
            nso.spec.pod_offloading_strategy,
            nso.spec.cluster_selector.clone(),
        ))
    });
    if let Err(e) = crate::webhook::start(&local, lookup).await {
        tracing::warn!(error = %e, "no pod webhook: pods of offloaded namespaces need the virtual-node toleration themselves");
    }
    tokio::spawn(label_namespaces(shared.clone()));
    tokio::spawn(crate::search::run(
        local.clone(),
        shared.cfg.cluster_id.clone(),
        Duration::from_secs(10),
    ));
    let _ = fcs.wait_until_ready().await;
    let mut tasks: HashMap<String, atoll_runtime::AbortOnDrop> = HashMap::new();
    loop {
        let names: Vec<String> = fcs.state().iter().map(|f| f.name_any()).collect();
        tasks.retain(|name, _| names.contains(name));
        for name in names {
            tasks.entry(name.clone()).or_insert_with(|| {
                atoll_runtime::AbortOnDrop(tokio::spawn(peer(shared.clone(), name)))
            });
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), fc_kick.notified()).await;
    }
}

/// One peering, for as long as its ForeignCluster exists.
async fn peer(shared: Arc<Shared>, name: String) {
    let local = shared.local.clone();
    let fcs: Api<ForeignCluster> = Api::all(local.clone());
    let mut identity: Option<PeerIdentity> = None;
    let mut backoff = Duration::from_millis(200);
    let reachable = Arc::new(AtomicBool::new(false));
    let mut offload: Option<[atoll_runtime::AbortOnDrop; 2]> = None;
    loop {
        let fc = match fcs.get_opt(&name).await {
            Ok(Some(fc)) => fc,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(peer = %name, error = %e, "cannot read the ForeignCluster");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let provider_part = Api::<Namespace>::all(local.clone())
            .get_opt(&tenant_namespace(&fc.spec.cluster_id))
            .await
            .ok()
            .flatten()
            .is_some_and(|ns| ns.labels().get(TENANT_LABEL) == Some(&fc.spec.cluster_id));
        let mut status = Status::new(&fc, provider_part);
        let token = handshake::token(&local, &name).await.ok().flatten();
        let outgoing = fc.spec.outgoing_peering != PeeringEnabled::No
            && (token.is_some() || identity.is_some());
        if !outgoing {
            identity = None;
            offload = None;
            status.incoming_only(&fc, provider_part);
            status.write(&fcs, &fc).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), shared.kick.notified()).await;
            continue;
        }
        if identity.is_none() {
            identity = handshake::saved(&local, &name).await;
        }
        if identity.is_none() {
            match join(&shared, &fc, token.as_deref().unwrap_or_default()).await {
                Ok(id) => {
                    tracing::info!(peer = %name, "holds a peer identity on the provider");
                    identity = Some(id);
                    backoff = Duration::from_millis(200);
                }
                Err(f) => {
                    tracing::warn!(peer = %name, reason = f.reason, message = %f.message, "peering is not authenticated");
                    status.set(condition(
                        CONDITION_AUTHENTICATED,
                        false,
                        f.reason,
                        f.message,
                    ));
                    status.write(&fcs, &fc).await;
                    // A new token or URL (`atoll peer add` again) cuts the wait short.
                    let _ = tokio::time::timeout(backoff, shared.kick.notified()).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        }
        let Some(id) = identity.as_ref() else {
            continue;
        };
        match crate::vkubelet::Upstream::from_kubeconfig(&id.kubeconfig) {
            Ok(up) => {
                lock(&shared.upstreams).insert(virtual_node_name(&name), up);
            }
            Err(e) => {
                tracing::warn!(peer = %name, error = %e, "cannot reach its pods' logs and exec")
            }
        }
        status.consumer = true;
        status.set(condition(
            CONDITION_AUTHENTICATED,
            true,
            "PeerIdentity",
            format!(
                "this cluster holds identity {} on {}",
                atoll_api::peering::peer_user(&shared.cfg.cluster_id),
                fc.spec.cluster_id
            ),
        ));
        // Reachability.
        let probe = probe(&id.client).await;
        reachable.store(probe.is_ok(), Ordering::Relaxed);
        status.set(match &probe {
            Ok(()) => condition(
                CONDITION_REACHABLE,
                true,
                "ProviderAnswers",
                "the provider's API server answers",
            ),
            Err(why) => condition(
                CONDITION_REACHABLE,
                false,
                "ProviderUnreachable",
                why.clone(),
            ),
        });
        let synced = if probe.is_ok() {
            sync(&shared, &fc, id, &mut status).await
        } else {
            Ok(())
        };
        if let Err(e) = synced {
            tracing::debug!(peer = %name, error = %e, "syncing the peering");
        }
        let node = keep_node(&shared, &fc, probe.clone(), &mut status).await;
        if let Err(e) = node {
            tracing::warn!(peer = %name, error = %e, "cannot keep the virtual node");
        }
        if offload.is_none() {
            offload = Some([
                atoll_runtime::AbortOnDrop(tokio::spawn(crate::offload::run(
                    shared.clone(),
                    fc.clone(),
                    id.client.clone(),
                    reachable.clone(),
                ))),
                atoll_runtime::AbortOnDrop(tokio::spawn(crate::services::run(
                    shared.clone(),
                    fc.clone(),
                    id.client.clone(),
                    reachable.clone(),
                ))),
            ]);
        }
        status.write(&fcs, &fc).await;
        // While a request is on its way (asked, not yet a Ready node), look again soon: the
        // provider answers within moments, and its offer is read, not watched.
        let on_its_way = status.pending();
        // Renew the certificate at 80% of its life.
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        if now > id.not_before + (id.not_after - id.not_before) * 4 / 5 {
            let url = fc.spec.api_server_url.clone();
            if let Some(ca) = handshake::saved_ca(&local, &name).await {
                match handshake::request_identity(&local, &id.client, &name, &url, &ca, &shared.cfg)
                    .await
                {
                    Ok(new) => {
                        tracing::info!(peer = %name, "renewed the peer certificate");
                        identity = Some(new);
                        offload = None;
                    }
                    Err(f) => {
                        tracing::warn!(peer = %name, error = %f, "cannot renew the peer certificate")
                    }
                }
            }
        }
        let wait = if on_its_way {
            Duration::from_millis(50)
        } else {
            shared.cfg.probe_period
        };
        let _ = tokio::time::timeout(wait, shared.kick.notified()).await;
    }
}

/// The handshake: pin, token, CSR.
async fn join(shared: &Shared, fc: &ForeignCluster, token: &str) -> Result<PeerIdentity, Failure> {
    let url = &fc.spec.api_server_url;
    if url.is_empty() {
        return Err(Failure {
            reason: "NoURL",
            message: "spec.apiServerURL is empty: give the provider's API server URL (`atoll peer add --url`)".into(),
        });
    }
    let ca = handshake::fetch_ca(url, &fc.spec.ca_sha256).await?;
    let info = handshake::provider_info(url, &ca, token).await?;
    if info.cluster_id != fc.spec.cluster_id {
        return Err(Failure {
            reason: "ClusterIDMismatch",
            message: format!(
                "the cluster at {url} is {:?}, not {:?} as spec.clusterID says",
                info.cluster_id, fc.spec.cluster_id
            ),
        });
    }
    let (client, _) = handshake::client(url, &ca, atoll_runtime::Credentials::Token(token)).await?;
    handshake::request_identity(
        &shared.local,
        &client,
        &fc.name_any(),
        url,
        &ca,
        &shared.cfg,
    )
    .await
}

async fn probe(client: &Client) -> Result<(), String> {
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(1), client.request_text(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 1 s".into()),
    }
}

/// Requests out, answers and offers back, namespaces out and their state back.
async fn sync(
    shared: &Shared,
    fc: &ForeignCluster,
    id: &PeerIdentity,
    status: &mut Status,
) -> Result<(), Error> {
    let me = &shared.cfg.cluster_id;
    let pid = &fc.spec.cluster_id;
    let local_ns = peer_namespace(pid);
    let remote_ns = tenant_namespace(me);
    let pp = PatchParams::apply(MANAGER).force();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": local_ns, "labels": {REMOTE_CLUSTER_ID_LABEL: pid}}});
    Api::<Namespace>::all(shared.local.clone())
        .patch(&local_ns, &pp, &Patch::Apply(&ns))
        .await?;
    status.tenant = Some((local_ns.clone(), remote_ns.clone()));
    // Requests.
    let remote_requests: Api<ResourceRequest> = Api::namespaced(id.client.clone(), &remote_ns);
    let local_requests: Api<ResourceRequest> = Api::namespaced(shared.local.clone(), &local_ns);
    let mine: Vec<Arc<ResourceRequest>> = shared
        .requests
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(local_ns.as_str()))
        .collect();
    let remote_list = remote_requests.list(&ListParams::default()).await?;
    let mut negotiated: Option<(bool, String, String)> = None;
    for rr in &mine {
        let name = rr.name_any();
        let copy = json!({
            "apiVersion": "peering.atoll.io/v1alpha1", "kind": "ResourceRequest",
            "metadata": {"name": name},
            "spec": {"consumerClusterID": me, "providerClusterID": pid, "resources": rr.spec.resources},
        });
        remote_requests
            .patch(&name, &pp, &Patch::Apply(&copy))
            .await?;
        if let Some(remote) = remote_list.items.iter().find(|r| r.name_any() == name) {
            let mut answer = remote.status.clone().unwrap_or_default();
            // The answer is to the spec the provider saw; a newer local spec is pending again.
            if remote.spec.resources != rr.spec.resources {
                answer.phase = atoll_api::peering::PHASE_PENDING.into();
                answer.reason = "Replicated".into();
                answer.message = "the new request is with the provider".into();
            }
            let local_status = rr.status.clone().unwrap_or_default();
            if local_status.phase != answer.phase
                || local_status.reason != answer.reason
                || local_status.message != answer.message
            {
                local_requests
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": {
                        "phase": answer.phase, "reason": answer.reason, "message": answer.message}})))
                    .await?;
            }
            negotiated = Some((
                answer.phase == PHASE_ACCEPTED,
                answer.reason.clone(),
                answer.message.clone(),
            ));
        }
    }
    for remote in &remote_list.items {
        if !mine.iter().any(|r| r.name_any() == remote.name_any()) {
            let _ = remote_requests
                .delete(&remote.name_any(), &DeleteParams::default())
                .await;
        }
    }
    match (negotiated, mine.is_empty()) {
        (_, true) => status.set(condition(
            CONDITION_NEGOTIATED,
            false,
            "NoRequest",
            format!(
                "no resources requested yet: `atoll peer request {} --cpu N --memory M`",
                fc.name_any()
            ),
        )),
        (None, false) => status.set(condition(
            CONDITION_NEGOTIATED,
            false,
            "Replicated",
            "the request is with the provider",
        )),
        (Some((ok, reason, message)), false) => {
            let reason = if reason.is_empty() {
                "Pending".to_string()
            } else {
                reason
            };
            status.set(condition(CONDITION_NEGOTIATED, ok, &reason, message))
        }
    }
    // Offers, mirrored.
    let remote_offers: Api<ResourceOffer> = Api::namespaced(id.client.clone(), &remote_ns);
    let local_offers: Api<ResourceOffer> = Api::namespaced(shared.local.clone(), &local_ns);
    let offers = remote_offers.list(&ListParams::default()).await?;
    for o in &offers.items {
        let name = o.name_any();
        let copy = json!({
            "apiVersion": "peering.atoll.io/v1alpha1", "kind": "ResourceOffer",
            "metadata": {"name": name, "labels": {REMOTE_CLUSTER_ID_LABEL: pid}},
            "spec": o.spec,
        });
        local_offers.patch(&name, &pp, &Patch::Apply(&copy)).await?;
        let expires = o
            .status
            .as_ref()
            .map(|s| s.expiration_time.clone())
            .unwrap_or_default();
        local_offers
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {
                "phase": PHASE_ACCEPTED, "expirationTime": expires}})),
            )
            .await?;
    }
    for o in local_offers.list(&ListParams::default()).await?.items {
        if !offers.items.iter().any(|x| x.name_any() == o.name_any()) {
            let _ = local_offers
                .delete(&o.name_any(), &DeleteParams::default())
                .await;
        }
    }
    // Namespaces offloaded here go to the provider; their state comes back.
    let remote_nso: Api<NamespaceOffloading> = Api::namespaced(id.client.clone(), &remote_ns);
    let remote_list = remote_nso.list(&ListParams::default()).await?;
    let locals: Vec<Arc<NamespaceOffloading>> = shared
        .offloadings
        .state()
        .into_iter()
        .filter(|n| {
            n.name_any() == atoll_api::peering::OFFLOADING_NAME
                && n.metadata.deletion_timestamp.is_none()
        })
        .collect();
    for nso in &locals {
        let origin = nso.namespace().unwrap_or_default();
        if !selected(nso, fc) {
            continue;
        }
        let copy = json!({
            "apiVersion": "peering.atoll.io/v1alpha1", "kind": "NamespaceOffloading",
            "metadata": {"name": origin, "annotations": {ORIGIN_ANNOTATION: origin}},
            "spec": nso.spec,
        });
        remote_nso.patch(&origin, &pp, &Patch::Apply(&copy)).await?;
        let theirs = remote_list
            .items
            .iter()
            .find(|r| r.name_any() == origin)
            .and_then(|r| r.status.as_ref())
            .and_then(|s| s.clusters.first().cloned());
        let mut clusters = nso
            .status
            .as_ref()
            .map(|s| s.clusters.clone())
            .unwrap_or_default();
        let entry = theirs.unwrap_or_else(|| atoll_api::peering::RemoteNamespaceStatus {
            cluster_id: pid.clone(),
            remote_namespace: String::new(),
            conditions: vec![condition(
                "Ready",
                false,
                "InProgress",
                "the provider has not made the namespace yet",
            )],
        });
        let before = clusters.clone();
        match clusters.iter_mut().find(|c| c.cluster_id == *pid) {
            Some(c) => *c = entry,
            None => clusters.push(entry),
        }
        if clusters != before {
            let ready = clusters
                .iter()
                .filter(|c| {
                    c.conditions
                        .iter()
                        .any(|x| x.type_ == "Ready" && x.status == "True")
                })
                .count();
            let phase = if ready == clusters.len() {
                "Ready"
            } else if ready == 0 {
                "AllFailed"
            } else {
                "SomeFailed"
            };
            Api::<NamespaceOffloading>::namespaced(shared.local.clone(), &origin)
                .patch_status(
                    atoll_api::peering::OFFLOADING_NAME,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": {"offloadingPhase": phase, "clusters": clusters,
                                                     "observedGeneration": nso.metadata.generation}})),
                )
                .await?;
        }
    }
    for r in &remote_list.items {
        if !locals
            .iter()
            .any(|n| n.namespace().as_deref() == Some(&r.name_any()) && selected(n, fc))
        {
            let _ = remote_nso
                .delete(&r.name_any(), &DeleteParams::default())
                .await;
        }
    }
    Ok(())
}

/// Whether a namespace's offloading selects this peer's virtual node (by its labels).
fn selected(nso: &NamespaceOffloading, fc: &ForeignCluster) -> bool {
    let Some(sel) = &nso.spec.cluster_selector else {
        return true;
    };
    let labels = vnode::labels(&vnode::Inputs {
        node_name: &virtual_node_name(&fc.name_any()),
        provider_id: &fc.spec.cluster_id,
        granted: &Amounts::new(),
        labels: &BTreeMap::new(),
        taints: &[],
        not_ready: None,
        kubelet: None,
    });
    if sel.node_selector_terms.is_empty() {
        return true;
    }
    sel.node_selector_terms.iter().any(|term| {
        term.match_expressions.iter().flatten().all(|e| {
            let v = labels.get(&e.key);
            let values = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => v.is_some_and(|v| values.contains(v)),
                "NotIn" => !v.is_some_and(|v| values.contains(v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
    })
}

/// The virtual node, from the mirrored offers; removed when there is no offer at all.
async fn keep_node(
    shared: &Shared,
    fc: &ForeignCluster,
    reachable: Result<(), String>,
    status: &mut Status,
) -> Result<(), Error> {
    let pid = &fc.spec.cluster_id;
    let node_name = virtual_node_name(&fc.name_any());
    let offers: Api<ResourceOffer> = Api::namespaced(shared.local.clone(), &peer_namespace(pid));
    let offers = match offers.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let nodes: Api<Node> = Api::all(shared.local.clone());
    if offers.is_empty() {
        if nodes.get_opt(&node_name).await?.is_some() {
            tracing::info!(node = %node_name, "no offer left: removing the virtual node");
            let _ = nodes.delete(&node_name, &DeleteParams::default()).await;
        }
        status.set(condition(
            CONDITION_VIRTUAL_NODE_READY,
            false,
            "NoOffer",
            format!("provider {pid} offers nothing yet"),
        ));
        return Ok(());
    }
    let mut granted = Amounts::new();
    let mut labels = BTreeMap::new();
    let mut taints = Vec::new();
    let mut live = 0;
    for o in &offers {
        let expires = o
            .status
            .as_ref()
            .map(|s| s.expiration_time.as_str())
            .unwrap_or_default();
        if crate::passed(expires) {
            continue;
        }
        live += 1;
        if let Ok(a) = grant::amounts(&o.spec.resource_quota.hard) {
            grant::add(&mut granted, &a);
        }
        labels.extend(o.spec.labels.clone());
        taints.extend(o.spec.taints.clone());
    }
    let not_ready = vnode::not_ready_reason(pid, reachable, &granted, live);
    let inputs = vnode::Inputs {
        node_name: &node_name,
        provider_id: pid,
        granted: &granted,
        labels: &labels,
        taints: &taints,
        not_ready: not_ready.as_ref().map(|(r, m)| (*r, m.clone())),
        kubelet: shared.kubelet.as_ref().map(|(p, sha)| (*p, sha.as_str())),
    };
    let existing = nodes.get_opt(&node_name).await?;
    let mut desired = vnode::node(&inputs);
    if let Some(n) = &existing {
        // The node lifecycle controller's taints stay; ours are set.
        let mut t: Vec<serde_json::Value> = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.key.starts_with("node.kubernetes.io/"))
            .map(|t| serde_json::to_value(t).unwrap_or_default())
            .collect();
        t.extend(
            desired["spec"]["taints"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        desired["spec"]["taints"] = json!(t);
        let mut meta = json!({"labels": desired["metadata"]["labels"]});
        if !desired["metadata"]["annotations"].is_null() {
            meta["annotations"] = desired["metadata"]["annotations"].clone();
        }
        let patch = json!({"metadata": meta, "spec": desired["spec"]});
        nodes
            .patch(&node_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    } else {
        let node: Node = serde_json::from_value(desired).map_err(crate::Error::config)?;
        nodes.create(&Default::default(), &node).await?;
        tracing::info!(node = %node_name, "created the virtual node");
    }
    let now = atoll_runtime::now();
    let mut ready = vnode::ready_condition(&inputs, &now);
    if let Some(old) = existing
        .as_ref()
        .and_then(|n| n.status.as_ref()?.conditions.clone())
        .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Ready"))
        && old.status == ready.status
    {
        ready.last_transition_time = old.last_transition_time;
    }
    let node_status = vnode::status(&inputs, ready);
    nodes
        .patch_status(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": node_status})),
        )
        .await?;
    // The lease says the node's agent (this controller) lives, whatever the provider does.
    let leases: Api<Lease> = Api::namespaced(shared.local.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node_name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node_name, "leaseDurationSeconds": 40, "renewTime": atoll_runtime::now_micro()},
    });
    leases
        .patch(
            &node_name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await?;
    let local_offers: Api<ResourceOffer> =
        Api::namespaced(shared.local.clone(), &peer_namespace(pid));
    for o in &offers {
        if o.status.as_ref().map(|s| s.virtual_node_status.as_str()) != Some("Created") {
            let _ = local_offers
                .patch_status(
                    &o.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": {"virtualNodeStatus": "Created"}})),
                )
                .await;
        }
    }
    status.set(match &not_ready {
        None => condition(
            CONDITION_VIRTUAL_NODE_READY,
            true,
            "NodeReady",
            format!("node {node_name} offers {}", describe(&granted)),
        ),
        Some((reason, message)) => {
            condition(CONDITION_VIRTUAL_NODE_READY, false, reason, message.clone())
        }
    });
    Ok(())
}

fn describe(a: &Amounts) -> String {
    a.iter()
        .map(|(k, v)| format!("{k}={}", grant::quantity(k, *v).0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ForeignCluster's status being built.
struct Status {
    conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    consumer: bool,
    provider: bool,
    tenant: Option<(String, String)>,
}

impl Status {
    fn new(fc: &ForeignCluster, provider: bool) -> Status {
        Status {
            conditions: fc
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default(),
            consumer: false,
            provider,
            tenant: None,
        }
    }

    /// Whether resources were asked for and the virtual node is not Ready yet (and nothing
    /// says why it will not be).
    fn pending(&self) -> bool {
        let get = |t: &str| self.conditions.iter().find(|c| c.type_ == t);
        let negotiated = get(CONDITION_NEGOTIATED);
        let asked = negotiated.is_some_and(|c| {
            c.reason != "NoRequest"
                && c.reason != "NothingLeft"
                && c.reason != "RefusedByAdmin"
                && c.reason != "AwaitingApproval"
        });
        let node_ready = get(CONDITION_VIRTUAL_NODE_READY).is_some_and(|c| c.status == "True");
        let reachable = get(CONDITION_REACHABLE).is_some_and(|c| c.status == "True");
        asked && reachable && !node_ready
    }

    fn set(&mut self, c: k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) {
        atoll_api::peering::set_condition(&mut self.conditions, c);
    }

    fn incoming_only(&mut self, fc: &ForeignCluster, provider: bool) {
        self.conditions
            .retain(|c| c.type_ == atoll_api::peering::CONDITION_DISCOVERED);
        if provider {
            self.set(condition(
                CONDITION_AUTHENTICATED,
                true,
                "PeerAdmitted",
                format!(
                    "cluster {} holds a peer identity on this cluster",
                    fc.spec.cluster_id
                ),
            ));
            self.tenant = Some((tenant_namespace(&fc.spec.cluster_id), String::new()));
        } else if fc.spec.outgoing_peering != PeeringEnabled::No {
            self.set(condition(
                CONDITION_AUTHENTICATED,
                false,
                "NoToken",
                format!("no peering token for {}: `atoll peer add {} --token T` with a token from `atoll peer token` on it", fc.name_any(), fc.name_any()),
            ));
        }
    }

    async fn write(&self, api: &Api<ForeignCluster>, fc: &ForeignCluster) {
        let role = match (self.consumer, self.provider) {
            (true, true) => "ConsumerAndProvider",
            (true, false) => "Consumer",
            (false, true) => "Provider",
            (false, false) => "None",
        };
        let tenant = self.tenant.clone().map(|(l, r)| {
            if self.provider && !self.consumer {
                json!({"local": l})
            } else {
                json!({"local": l, "remote": r})
            }
        });
        // `Discovered` is the browser's (search.rs): as it is now, not as it was read.
        let latest = api.get_opt(&fc.name_any()).await.ok().flatten();
        let fc = latest.as_ref().unwrap_or(fc);
        let mut conditions = self.conditions.clone();
        conditions.retain(|c| c.type_ != atoll_api::peering::CONDITION_DISCOVERED);
        if let Some(d) = fc.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == atoll_api::peering::CONDITION_DISCOVERED)
        }) {
            conditions.insert(0, d.clone());
        }
        let new = json!({"role": role, "tenantNamespace": tenant, "conditions": conditions});
        let old = serde_json::to_value(&fc.status).unwrap_or_default();
        let mut want = new.clone();
        if want["tenantNamespace"].is_null() {
            want.as_object_mut().map(|o| o.remove("tenantNamespace"));
        }
        if old == want {
            return;
        }
        if let Err(e) = api
            .patch_status(
                &fc.name_any(),
                &PatchParams::default(),
                // Only over what was just read: the browser's writes in between are kept.
                &Patch::Merge(
                    &json!({"metadata": {"resourceVersion": fc.resource_version()}, "status": new}),
                ),
            )
            .await
        {
            tracing::debug!(peer = %fc.name_any(), error = %e, "cannot write the ForeignCluster status");
        }
    }
}

/// Keep [`crate::webhook::STRATEGY_LABEL`] on exactly the namespaces with a NamespaceOffloading.
async fn label_namespaces(shared: Arc<Shared>) {
    use crate::webhook::STRATEGY_LABEL;
    let namespaces: Api<Namespace> = Api::all(shared.local.clone());
    loop {
        let _ = shared.offloadings.wait_until_ready().await;
        let want: HashMap<String, String> = shared
            .offloadings
            .state()
            .iter()
            .filter(|n| {
                n.name_any() == atoll_api::peering::OFFLOADING_NAME
                    && n.metadata.deletion_timestamp.is_none()
            })
            .map(|n| {
                let strategy = serde_json::to_value(n.spec.pod_offloading_strategy)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                (n.namespace().unwrap_or_default(), strategy)
            })
            .collect();
        let labelled = namespaces
            .list(&ListParams::default().labels(STRATEGY_LABEL))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for ns in &labelled {
            if !want.contains_key(&ns.name_any()) {
                let patch = json!({"metadata": {"labels": {STRATEGY_LABEL: null}}});
                let _ = namespaces
                    .patch(
                        &ns.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await;
            }
        }
        for (ns, strategy) in &want {
            let has = labelled
                .iter()
                .find(|n| n.name_any() == *ns)
                .and_then(|n| n.labels().get(STRATEGY_LABEL).cloned());
            if has.as_deref() != Some(strategy.as_str()) {
                let patch = json!({"metadata": {"labels": {STRATEGY_LABEL: strategy}}});
                if let Err(e) = namespaces
                    .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::debug!(namespace = %ns, error = %e, "cannot label an offloaded namespace");
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), shared.kick.notified()).await;
    }
}
