//! The provider's side: approving peer identities, negotiating requests into offers, and
//! keeping the namespaces offloaded for each consumer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use atoll_api::peering::{
    CA_PIN_ANNOTATION, CSR_PEER_LABEL, DiscoveredBy, ForeignCluster, ForeignClusterSpec, MANAGER,
    NODE_TYPE_LABEL, NODE_TYPE_VIRTUAL, NamespaceOffloading, ORIGIN_ANNOTATION,
    PEERING_BOOTSTRAP_GROUP, PEERS_GROUP, PHASE_ACCEPTED, PHASE_MANUAL, PHASE_REFUSED,
    PeeringEnabled, ResourceOffer, ResourceRequest, TENANT_LABEL, TOKEN_CONSUMER_ANNOTATION,
    peer_user, tenant_namespace,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::{Namespace, Node, ResourceQuota, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::grant::{self, Amounts, Decision};
use crate::{Error, PeeringConfig, Policy, condition, rbac};

const TOKEN_ID_ANNOTATION: &str = "peering.atoll.io/token-id";
const QUOTA_NAME: &str = "atoll-peering-grant";

struct Caches {
    requests: Store<ResourceRequest>,
    offers: Store<ResourceOffer>,
    offloadings: Store<NamespaceOffloading>,
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    /// The grant quotas of offloaded namespaces, for their use (read on the loop's tick: a
    /// change of use is not worth a pass of its own).
    quotas: Store<ResourceQuota>,
}

fn watch<K>(client: &Client, wc: watcher::Config, kick: &Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    atoll_runtime::reflect::notifying_store(Api::<K>::all(client.clone()), wc, kick)
}

pub(crate) async fn run(client: Client, cfg: Arc<PeeringConfig>) -> Result<(), Error> {
    tokio::spawn(csrs(client.clone(), cfg.clone()));
    let kick = Arc::new(Notify::new());
    let caches = Caches {
        requests: watch(&client, watcher::Config::default(), &kick),
        offers: watch(&client, watcher::Config::default(), &kick),
        offloadings: watch(&client, watcher::Config::default(), &kick),
        nodes: watch(&client, watcher::Config::default(), &kick),
        namespaces: watch(
            &client,
            watcher::Config::default().labels(TENANT_LABEL),
            &kick,
        ),
        quotas: watch(
            &client,
            watcher::Config::default().labels(TENANT_LABEL),
            &Arc::new(Notify::new()),
        ),
    };
    let _ = caches.namespaces.wait_until_ready().await;
    let _ = caches.nodes.wait_until_ready().await;
    let mut last_gc = std::time::Instant::now();
    loop {
        if let Err(e) = negotiate_all(&client, &cfg, &caches).await {
            tracing::warn!(error = %e, "negotiating peering requests");
        }
        if let Err(e) = namespaces_all(&client, &cfg, &caches).await {
            tracing::warn!(error = %e, "keeping offloaded namespaces");
        }
        if last_gc.elapsed() >= Duration::from_secs(5) {
            last_gc = std::time::Instant::now();
            if let Err(e) = collect_gone_consumers(&client, &caches).await {
                tracing::warn!(error = %e, "collecting gone consumers");
            }
        }
        // Renewals and the odd missed event: at least once a second.
        let _ = tokio::time::timeout(Duration::from_secs(1), kick.notified()).await;
    }
}

/// The consumer a tenant namespace belongs to.
fn tenant_of(caches: &Caches, namespace: &str) -> Option<String> {
    let ns = caches
        .namespaces
        .get(&reflector::ObjectRef::new(namespace))?;
    ns.annotations()
        .get(ORIGIN_ANNOTATION)
        .is_none()
        .then_some(())?;
    // A tenant being removed has no more requests or namespaces.
    ns.metadata.deletion_timestamp.is_none().then_some(())?;
    let consumer = ns.labels().get(TENANT_LABEL)?.clone();
    (tenant_namespace(&consumer) == namespace).then_some(consumer)
}

/// What this cluster's real nodes can allocate.
fn allocatable(caches: &Caches) -> Amounts {
    let mut total = Amounts::new();
    for n in caches.nodes.state() {
        if n.labels().get(NODE_TYPE_LABEL).map(String::as_str) == Some(NODE_TYPE_VIRTUAL) {
            continue;
        }
        if let Some(a) = n.status.as_ref().and_then(|s| s.allocatable.as_ref())
            && let Ok(a) = grant::amounts(a)
        {
            grant::add(&mut total, &a);
        }
    }
    total
}

async fn negotiate_all(client: &Client, cfg: &PeeringConfig, caches: &Caches) -> Result<(), Error> {
    let alloc = allocatable(caches);
    let offers = caches.offers.state();
    let requests = caches.requests.state();
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    for rr in &requests {
        let ns = rr.namespace().unwrap_or_default();
        let Some(consumer) = tenant_of(caches, &ns) else {
            continue;
        };
        if rr.metadata.deletion_timestamp.is_some() {
            continue;
        }
        wanted.insert((ns.clone(), rr.name_any()));
        let name = rr.name_any();
        let status = rr.status.clone().unwrap_or_default();
        let offer = offers
            .iter()
            .find(|o| o.namespace().as_deref() == Some(&ns) && o.name_any() == name);
        let generation = rr.metadata.generation.unwrap_or(0);
        let settled = offer.is_some_and(|o| {
            o.annotations().get("peering.atoll.io/request-generation")
                == Some(&generation.to_string())
        });
        if cfg.policy == Policy::Manual && status.decision.is_empty() {
            set_request_status(
                client,
                rr,
                PHASE_MANUAL,
                "AwaitingApproval",
                &format!(
                    "this provider grants requests by hand: run `atoll peer approve {consumer}` (or `refuse`) against it"
                ),
            )
            .await?;
            continue;
        }
        if status.decision == "Refused" {
            set_request_status(
                client,
                rr,
                PHASE_REFUSED,
                "RefusedByAdmin",
                "the provider's admin refused this request",
            )
            .await?;
            if offer.is_some() {
                delete_offer(client, &ns, &name).await?;
            }
            continue;
        }
        if settled {
            if let Some(o) = offer {
                renew(client, cfg, o).await?;
            }
            continue;
        }
        let held = held_by_others(&offers, &ns);
        let requested = match grant::amounts(&rr.spec.resources) {
            Ok(r) => r,
            Err(why) => {
                set_request_status(client, rr, PHASE_REFUSED, "InvalidRequest", &why).await?;
                continue;
            }
        };
        let share = match cfg.policy {
            Policy::Auto { share } => share,
            // Approved by hand: whatever is free.
            Policy::Manual => 100,
        };
        match grant::negotiate(&requested, &alloc, &held, share) {
            Decision::Grant { resources, partial } => {
                let offer = json!({
                    "apiVersion": "peering.atoll.io/v1alpha1", "kind": "ResourceOffer",
                    "metadata": {"name": name, "namespace": ns,
                                 "labels": {TENANT_LABEL: consumer},
                                 "annotations": {"peering.atoll.io/request-generation": generation.to_string()}},
                    "spec": {"providerClusterID": cfg.cluster_id, "consumerClusterID": consumer,
                             "resourceQuota": {"hard": grant::resource_list(&resources)},
                             "timeToLiveSeconds": cfg.offer_ttl.as_secs()},
                });
                let api: Api<ResourceOffer> = Api::namespaced(client.clone(), &ns);
                api.patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&offer),
                )
                .await?;
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        &json!({"status": {"expirationTime": crate::rfc3339_after(cfg.offer_ttl)}}),
                    ),
                )
                .await?;
                let (reason, message) = match &partial {
                    Some(m) => ("PartiallyGranted", m.clone()),
                    None => ("Granted", "granted as asked".to_string()),
                };
                set_request_status(client, rr, PHASE_ACCEPTED, reason, &message).await?;
                tracing::info!(consumer = %consumer, resources = ?resources, "offered resources");
            }
            Decision::Refuse { reason, message } => {
                set_request_status(client, rr, PHASE_REFUSED, reason, &message).await?;
                if offer.is_some() {
                    delete_offer(client, &ns, &name).await?;
                }
            }
        }
    }
    // Offers whose request is gone are withdrawn.
    for o in &offers {
        let key = (o.namespace().unwrap_or_default(), o.name_any());
        if tenant_of(caches, &key.0).is_some() && !wanted.contains(&key) {
            delete_offer(client, &key.0, &key.1).await?;
        }
    }
    Ok(())
}

fn held_by_others(offers: &[Arc<ResourceOffer>], ns: &str) -> Amounts {
    let mut held = Amounts::new();
    for o in offers {
        if o.namespace().as_deref() == Some(ns)
            || !o
                .namespace()
                .is_some_and(|n| n.starts_with("atoll-tenant-"))
        {
            continue;
        }
        if let Ok(a) = grant::amounts(&o.spec.resource_quota.hard) {
            grant::add(&mut held, &a);
        }
    }
    held
}

async fn renew(client: &Client, cfg: &PeeringConfig, offer: &ResourceOffer) -> Result<(), Error> {
    let expires = offer
        .status
        .as_ref()
        .map(|s| s.expiration_time.clone())
        .unwrap_or_default();
    let left = expires
        .parse::<k8s_openapi::jiff::Timestamp>()
        .map(|t| t.as_second() - k8s_openapi::jiff::Timestamp::now().as_second())
        .unwrap_or(0);
    // Renewed when a third of its life is gone.
    if left > (cfg.offer_ttl.as_secs() as i64) * 2 / 3 {
        return Ok(());
    }
    let api: Api<ResourceOffer> =
        Api::namespaced(client.clone(), &offer.namespace().unwrap_or_default());
    api.patch_status(
        &offer.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"expirationTime": crate::rfc3339_after(cfg.offer_ttl)}})),
    )
    .await?;
    Ok(())
}

async fn delete_offer(client: &Client, ns: &str, name: &str) -> Result<(), Error> {
    let api: Api<ResourceOffer> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn set_request_status(
    client: &Client,
    rr: &ResourceRequest,
    phase: &str,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let s = rr.status.clone().unwrap_or_default();
    if s.phase == phase && s.reason == reason && s.message == message {
        return Ok(());
    }
    let api: Api<ResourceRequest> =
        Api::namespaced(client.clone(), &rr.namespace().unwrap_or_default());
    api.patch_status(
        &rr.name_any(),
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"status": {"phase": phase, "reason": reason, "message": message,
                                         "observedGeneration": rr.metadata.generation}}),
        ),
    )
    .await?;
    Ok(())
}

/// Keep the namespaces offloaded for each consumer, and remove those no longer asked for.
async fn namespaces_all(
    client: &Client,
    cfg: &PeeringConfig,
    caches: &Caches,
) -> Result<(), Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    // What each consumer's offloaded namespaces use of its grant.
    let mut used: BTreeMap<String, BTreeMap<String, Amounts>> = BTreeMap::new();
    for q in caches.quotas.state() {
        if q.name_any() != QUOTA_NAME {
            continue;
        }
        let (Some(consumer), Some(u)) = (
            q.labels().get(TENANT_LABEL),
            q.status.as_ref().and_then(|s| s.used.as_ref()),
        ) else {
            continue;
        };
        used.entry(consumer.clone())
            .or_default()
            .insert(q.namespace().unwrap_or_default(), grant::quota_used(u));
    }
    for nso in caches.offloadings.state() {
        let tenant_ns = nso.namespace().unwrap_or_default();
        let Some(consumer) = tenant_of(caches, &tenant_ns) else {
            continue;
        };
        let origin = nso
            .annotations()
            .get(ORIGIN_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| nso.name_any());
        let grant = consumer_grant(caches, &tenant_ns);
        let result = match crate::naming::remote_namespace(
            nso.spec.namespace_mapping_strategy,
            &origin,
            &consumer,
            &nso.spec.remote_namespace_name,
        ) {
            Err(why) => Err(("InvalidName", why, String::new())),
            Ok(remote) => {
                let existing = caches.namespaces.get(&reflector::ObjectRef::new(&remote));
                let taken = match &existing {
                    Some(ns) => {
                        ns.labels().get(TENANT_LABEL) != Some(&consumer)
                            || ns.annotations().get(ORIGIN_ANNOTATION)
                                != Some(&format!("{consumer}/{origin}"))
                    }
                    // Not ours (no label, so not in the cache) if it exists at all.
                    None => namespaces.get_opt(&remote).await?.is_some(),
                };
                if taken {
                    Err((
                        "NamespaceConflict",
                        format!(
                            "namespace {remote} already exists in provider {} and is not offloaded from {consumer}/{origin}: choose another name (namespaceMappingStrategy SelectedName, remoteNamespaceName)",
                            cfg.cluster_id
                        ),
                        remote,
                    ))
                } else {
                    wanted.insert(remote.clone());
                    let theirs = used.get(&consumer);
                    let here = theirs
                        .and_then(|u| u.get(&remote))
                        .cloned()
                        .unwrap_or_default();
                    let mut elsewhere = Amounts::new();
                    for (ns, u) in theirs.into_iter().flatten() {
                        if *ns != remote {
                            grant::add(&mut elsewhere, u);
                        }
                    }
                    let share = grant::namespace_share(&grant, &here, &elsewhere);
                    let quota = caches
                        .quotas
                        .get(&reflector::ObjectRef::new(QUOTA_NAME).within(&remote));
                    ensure_offloaded(
                        client,
                        &remote,
                        &consumer,
                        &origin,
                        &share,
                        quota.as_deref(),
                    )
                    .await?;
                    Ok(remote)
                }
            }
        };
        let (ready, reason, message, remote) = match result {
            Ok(remote) => (
                true,
                "NamespaceReady".to_string(),
                format!(
                    "pods of {origin} run in namespace {remote} of {}",
                    cfg.cluster_id
                ),
                remote,
            ),
            Err((reason, message, remote)) => (false, reason.to_string(), message, remote),
        };
        let mut conditions = nso
            .status
            .as_ref()
            .and_then(|s| s.clusters.first())
            .map(|c| c.conditions.clone())
            .unwrap_or_default();
        let changed = atoll_api::peering::set_condition(
            &mut conditions,
            condition("Ready", ready, &reason, message),
        );
        let same_ns = nso
            .status
            .as_ref()
            .and_then(|s| s.clusters.first())
            .is_some_and(|c| c.remote_namespace == remote);
        if changed || !same_ns {
            let api: Api<NamespaceOffloading> = Api::namespaced(client.clone(), &tenant_ns);
            api.patch_status(
                &nso.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {
                    "offloadingPhase": if ready { "Ready" } else { "AllFailed" },
                    "observedGeneration": nso.metadata.generation,
                    "clusters": [{"clusterID": cfg.cluster_id, "remoteNamespace": remote, "conditions": conditions}],
                }})),
            )
            .await?;
        }
    }
    // Offloaded namespaces nobody asks for any more go, with what runs in them.
    for ns in caches.namespaces.state() {
        if ns.annotations().get(ORIGIN_ANNOTATION).is_some()
            && !wanted.contains(&ns.name_any())
            && ns.metadata.deletion_timestamp.is_none()
        {
            tracing::info!(namespace = %ns.name_any(), "removing a namespace no longer offloaded");
            match namespaces
                .delete(&ns.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Consumers whose tenant namespace is gone are peers no more: their cluster-wide right and
/// the ForeignCluster made when they came go. (Every few seconds, not on every change: it
/// lists the ForeignClusters.)
async fn collect_gone_consumers(client: &Client, caches: &Caches) -> Result<(), Error> {
    let tenants: BTreeSet<String> = caches
        .namespaces
        .state()
        .iter()
        .filter(|ns| ns.annotations().get(ORIGIN_ANNOTATION).is_none())
        .filter_map(|ns| ns.labels().get(TENANT_LABEL).cloned())
        .collect();
    let fcs: Api<ForeignCluster> = Api::all(client.clone());
    for fc in fcs.list(&Default::default()).await?.items {
        let id = fc.spec.cluster_id.clone();
        // Not while it is being admitted (its namespace is made first, but the cache may lag).
        let settled = fc
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| atoll_runtime::age_seconds(&t.0) > 10.0);
        if fc.spec.discovered_by == DiscoveredBy::IncomingPeering
            && !tenants.contains(&id)
            && fc.metadata.deletion_timestamp.is_none()
            && settled
        {
            tracing::info!(consumer = %id, "the consumer is no longer a peer: removing its ForeignCluster and rights");
            rbac::unbind_leave(client, &id).await?;
            match fcs.delete(&fc.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// What a consumer's offers grant in total.
fn consumer_grant(caches: &Caches, tenant_ns: &str) -> Amounts {
    let mut total = Amounts::new();
    for o in caches.offers.state() {
        if o.namespace().as_deref() == Some(tenant_ns)
            && let Ok(a) = grant::amounts(&o.spec.resource_quota.hard)
        {
            grant::add(&mut total, &a);
        }
    }
    total
}

async fn ensure_offloaded(
    client: &Client,
    remote: &str,
    consumer: &str,
    origin: &str,
    grant: &Amounts,
    quota: Option<&ResourceQuota>,
) -> Result<(), Error> {
    let pp = PatchParams::apply(MANAGER).force();
    let ns = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": remote,
                     "labels": {TENANT_LABEL: consumer,
                                // No privileged pods from a peer, on a real cluster as here.
                                "pod-security.kubernetes.io/enforce": "baseline",
                                "pod-security.kubernetes.io/enforce-version": "latest"},
                     "annotations": {ORIGIN_ANNOTATION: format!("{consumer}/{origin}")}},
    });
    Api::<Namespace>::all(client.clone())
        .patch(remote, &pp, &Patch::Apply(&ns))
        .await?;
    rbac::bind(client, remote, rbac::WORKLOADS_ROLE, consumer).await?;
    // The grant holds in every namespace of the consumer (ResourceQuota keys for requests).
    let hard: BTreeMap<String, String> = grant
        .iter()
        .map(|(k, v)| (grant::quota_key(k), grant::quantity(k, *v).0))
        .collect();
    let current: Option<BTreeMap<String, String>> = quota
        .and_then(|q| q.spec.as_ref())
        .and_then(|s| s.hard.as_ref())
        .map(|h| h.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect());
    if !hard.is_empty() && current.as_ref() != Some(&hard) {
        let quota = json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": QUOTA_NAME, "namespace": remote, "labels": {TENANT_LABEL: consumer}},
            "spec": {"hard": hard},
        });
        let api: Api<k8s_openapi::api::core::v1::ResourceQuota> =
            Api::namespaced(client.clone(), remote);
        match api.patch(QUOTA_NAME, &pp, &Patch::Apply(&quota)).await {
            Ok(_) => {}
            // A server without ResourceQuota: the consumer's scheduler still holds it to the
            // virtual node's capacity.
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::debug!(
                    namespace = remote,
                    "this API server serves no ResourceQuota"
                )
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Decide the peering CSRs as they come.
async fn csrs(client: Client, cfg: Arc<PeeringConfig>) {
    use futures::StreamExt;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default().labels(CSR_PEER_LABEL));
    let stream = kube::runtime::WatchStreamExt::default_backoff(stream);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let csr = match event {
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "watching CSRs");
                continue;
            }
        };
        if decided(&csr) {
            continue;
        }
        let verdict = judge(&client, &cfg, &csr).await;
        let result = match verdict {
            Ok(consumer) => match admit(&client, &cfg, &csr, &consumer).await {
                Ok(()) => {
                    decide(
                        &client,
                        &csr,
                        true,
                        "PeerApproved",
                        &format!("peer identity of cluster {consumer}"),
                    )
                    .await
                }
                Err(e) => Err(e),
            },
            Err(why) => {
                tracing::warn!(csr = %csr.name_any(), reason = %why, "refusing a peering request");
                decide(&client, &csr, false, "PeeringRefused", &why).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(csr = %csr.name_any(), error = %e, "cannot decide a peering request");
        }
    }
}

fn decided(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Approved" || c.type_ == "Denied")
        })
}

async fn decide(
    client: &Client,
    csr: &CertificateSigningRequest,
    approve: bool,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut csr = csr.clone();
    csr.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: if approve { "Approved" } else { "Denied" }.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_update_time: Some(atoll_runtime::now()),
            ..Default::default()
        });
    api.replace_subresource("approval", &csr.name_any(), &PostParams::default(), &csr)
        .await?;
    Ok(())
}

/// Whether the request's form is a peer identity's: the consumer it claims, or why not.
pub(crate) fn check_form(csr: &CertificateSigningRequest) -> Result<String, String> {
    let consumer = csr
        .labels()
        .get(CSR_PEER_LABEL)
        .cloned()
        .ok_or_else(|| format!("no {CSR_PEER_LABEL} label"))?;
    atoll_api::cluster::check_cluster_name(&consumer)?;
    if tenant_namespace(&consumer).len() > 63 {
        return Err(format!(
            "cluster id {consumer:?} is too long for a tenant namespace"
        ));
    }
    let (cn, orgs) = atoll_runtime::client_csr_subject(&csr.spec)?;
    let want: BTreeSet<String> = [PEERS_GROUP.to_string()].into();
    if cn != peer_user(&consumer) || orgs != want {
        return Err(format!(
            "subject CN={cn:?} O={orgs:?} is not cluster {consumer}'s peer identity (CN={:?} O={want:?})",
            peer_user(&consumer)
        ));
    }
    Ok(consumer)
}

/// The consumer a CSR may be approved for, or why it may not.
async fn judge(
    client: &Client,
    cfg: &PeeringConfig,
    csr: &CertificateSigningRequest,
) -> Result<String, String> {
    let consumer = check_form(csr)?;
    let username = csr.spec.username.clone().unwrap_or_default();
    let groups = csr.spec.groups.clone().unwrap_or_default();
    let tenant = Api::<Namespace>::all(client.clone())
        .get_opt(&tenant_namespace(&consumer))
        .await
        .map_err(|e| e.to_string())?;
    if username == peer_user(&consumer) {
        // A renewal by the peer itself.
        return match tenant {
            Some(_) => Ok(consumer),
            None => Err(format!(
                "cluster {consumer} is no longer a peer of this cluster"
            )),
        };
    }
    let Some(token_id) = username
        .strip_prefix("system:bootstrap:")
        .filter(|_| groups.iter().any(|g| g == PEERING_BOOTSTRAP_GROUP))
    else {
        return Err(format!(
            "requested by {username:?}, which holds no peering token (group {PEERING_BOOTSTRAP_GROUP})"
        ));
    };
    let own_pin = crate::pin::of_pem(&cfg.ca_pem).unwrap_or_default();
    let their_pin = csr
        .annotations()
        .get(CA_PIN_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    if their_pin != own_pin {
        return Err(format!(
            "the consumer pinned CA {their_pin:?}, not this cluster's {own_pin}: it checked another cluster's certificate"
        ));
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let token = secrets
        .get_opt(&format!("bootstrap-token-{token_id}"))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("peering token {token_id} no longer exists"))?;
    let field = |k: &str| {
        token
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .unwrap_or_default()
    };
    if !field("auth-extra-groups")
        .split(',')
        .any(|g| g.trim() == PEERING_BOOTSTRAP_GROUP)
    {
        return Err(format!("token {token_id} is not a peering token"));
    }
    let expiration = field("expiration");
    if !expiration.is_empty() && crate::passed(&expiration) {
        return Err(format!("peering token {token_id} expired at {expiration}"));
    }
    if let Some(used_by) = token.annotations().get(TOKEN_CONSUMER_ANNOTATION)
        && *used_by != consumer
    {
        return Err(format!(
            "peering token {token_id} was used by cluster {used_by}: a token makes one peering"
        ));
    }
    if let Some(ns) = &tenant
        && ns
            .annotations()
            .get(TOKEN_ID_ANNOTATION)
            .map(String::as_str)
            != Some(token_id)
    {
        return Err(format!(
            "cluster {consumer} is already a peer (under another token): remove it first (`atoll peer remove {consumer}` against this cluster)"
        ));
    }
    if token.annotations().get(TOKEN_CONSUMER_ANNOTATION).is_none() {
        secrets
            .patch(
                &token.name_any(),
                &PatchParams::default(),
                &Patch::Merge(
                    &json!({"metadata": {"annotations": {TOKEN_CONSUMER_ANNOTATION: consumer}}}),
                ),
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    let _ = token_id;
    Ok(consumer)
}

/// Make `consumer` a tenant: its namespace, its rights there, and its ForeignCluster here.
async fn admit(
    client: &Client,
    cfg: &PeeringConfig,
    csr: &CertificateSigningRequest,
    consumer: &str,
) -> Result<(), Error> {
    let pp = PatchParams::apply(MANAGER).force();
    let tenant = tenant_namespace(consumer);
    let mut annotations = serde_json::Map::new();
    if let Some(id) = csr
        .spec
        .username
        .as_deref()
        .and_then(|u| u.strip_prefix("system:bootstrap:"))
    {
        annotations.insert(TOKEN_ID_ANNOTATION.into(), json!(id));
    }
    let ns = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": tenant, "labels": {TENANT_LABEL: consumer}, "annotations": annotations},
    });
    Api::<Namespace>::all(client.clone())
        .patch(&tenant, &pp, &Patch::Apply(&ns))
        .await?;
    rbac::bind(client, &tenant, rbac::TENANT_ROLE, consumer).await?;
    rbac::bind_leave(client, consumer).await?;
    let fcs: Api<ForeignCluster> = Api::all(client.clone());
    if fcs.get_opt(consumer).await?.is_none() {
        let fc = ForeignCluster::new(
            consumer,
            ForeignClusterSpec {
                cluster_id: consumer.into(),
                incoming_peering: PeeringEnabled::Yes,
                outgoing_peering: PeeringEnabled::Auto,
                discovered_by: DiscoveredBy::IncomingPeering,
                ..Default::default()
            },
        );
        match fcs.create(&PostParams::default(), &fc).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(consumer, provider = %cfg.cluster_id, "admitted a peer");
    Ok(())
}
