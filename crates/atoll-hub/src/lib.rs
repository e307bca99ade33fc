//! The hub's controllers for cluster registration (Open Cluster Management's model):
//!
//! - `csr`: CertificateSigningRequests of agents, validated against the cluster they claim;
//!   renewals by a cluster's own agent approved at once, first requests left to `atoll accept`
//!   (or approved for bootstrap users named in `--auto-accept`); each cluster's requesters may
//!   read exactly their cluster's CSRs;
//! - `clusters`: ManagedClusters: on acceptance the cluster's namespace, its RBAC and its lease;
//!   on denial the bindings go; on deletion everything goes (finalizer); conditions and the
//!   unreachable taint from the lease.
//! - `clustersets`: the built-in sets `default` and `global`, each set's status, each
//!   binding's `Bound` condition;
//! - `placement`: Placements scheduled into PlacementDecisions (the scheduling itself is pure,
//!   in `placement::schedule`);
//! - `profiles`: a ClusterProfile per usable cluster in every namespace with bindings;
//! - `index` and `changes`: the watches feeding all three, and which keys each change touches;
//! - `webhook`: the admission webhooks that enforce acceptance, set membership and binding.
//!
//! Everything goes through the Kubernetes API (kube-rs), so the hub runs against the embedded
//! API server or a real kube-apiserver alike.

pub mod access;
pub mod changes;
pub mod clusters;
pub mod clustersets;
pub mod csr;
pub mod explain;
pub mod index;
pub mod placement;
pub mod profiles;
pub mod push;
pub mod replicaset;
pub mod rollout;
pub mod services;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use atoll_runtime::queue::WorkQueue;

use atoll_api::cluster::{BOOTSTRAP_GROUP, ManagedCluster};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// The field manager the hub writes as.
pub const MANAGER: &str = "atoll-hub";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// What the hub's controllers are told.
#[derive(Clone, Debug, Default)]
pub struct HubConfig {
    /// Bootstrap users (`system:bootstrap:<token-id>`) whose clusters are accepted without
    /// `atoll accept`.
    pub auto_accept: Vec<String>,
    /// The hub's API server address (for Push clusters' AppliedManifestWorks, which name it).
    pub hub_url: String,
    /// Multi-cluster services (the ClusterSetIP range).
    pub services: services::ServicesConfig,
}

/// What the set, placement and profile controllers share: the client, the index the watches
/// keep, and a work queue per controller.
pub struct Hub {
    pub client: Client,
    pub index: index::Shared,
    pub placements: WorkQueue<index::Key>,
    pub sets: WorkQueue<String>,
    pub builtins: WorkQueue<String>,
    pub bindings: WorkQueue<index::Key>,
    /// `(namespace, cluster)`, or `(namespace, "")` for every cluster of the namespace.
    pub profiles: WorkQueue<index::Key>,
    pub replicasets: WorkQueue<index::Key>,
    pub cel: placement::cel::Cache,
}

impl Hub {
    pub fn new(client: Client) -> Arc<Hub> {
        Arc::new(Hub {
            client,
            index: Default::default(),
            placements: WorkQueue::new(),
            sets: WorkQueue::new(),
            builtins: WorkQueue::new(),
            bindings: WorkQueue::new(),
            profiles: WorkQueue::new(),
            replicasets: WorkQueue::new(),
            cel: Default::default(),
        })
    }
}

impl Hub {
    /// Placement `key`'s decisions changed: the replica sets using it follow.
    pub fn decisions_moved(&self, key: &index::Key) {
        let sets = self.index.lock().replicasets_using(key);
        for s in sets {
            self.replicasets.add(s);
        }
    }
}

/// Workers scheduling placements at once (the writes, not the scheduling, take the time).
const PLACEMENT_WORKERS: usize = 8;

/// Start the set, placement and profile controllers: the watches first, the workers once
/// every watch has listed (so a placement is never scheduled on half a picture). Returns the
/// hub's shared state.
pub async fn start_sets_and_placements(client: Client) -> Arc<Hub> {
    let hub = Hub::new(client);
    let gate = changes::start(&hub);
    gate.wait().await;
    let h = hub.clone();
    hub.placements
        .run(PLACEMENT_WORKERS, "placement", move |k| {
            placement::reconcile(h.clone(), k)
        });
    let h = hub.clone();
    hub.sets.run(2, "clusterset", move |k| {
        clustersets::reconcile_set(h.clone(), k)
    });
    let h = hub.clone();
    hub.builtins.run(1, "builtin-clusterset", move |k| {
        clustersets::reconcile_builtin(h.clone(), k)
    });
    let h = hub.clone();
    hub.bindings.run(2, "clustersetbinding", move |k| {
        clustersets::reconcile_binding(h.clone(), k)
    });
    let h = hub.clone();
    hub.profiles.run(4, "clusterprofile", move |k| {
        profiles::reconcile(h.clone(), k)
    });
    let h = hub.clone();
    hub.replicasets.run(4, "manifestworkreplicaset", move |k| {
        replicaset::reconcile(h.clone(), k)
    });
    tokio::spawn(clustersets::resync_builtins(hub.clone()));
    hub
}

/// Run the registration controllers until the process ends (after [`install`] and
/// [`start_sets_and_placements`]).
pub async fn run(client: Client, cfg: HubConfig) -> Result<(), Error> {
    let granted = Arc::new(access::Granted::default());
    let csrs = tokio::spawn(csr::run(client.clone(), cfg.clone(), granted.clone()));
    let pushes = tokio::spawn(push::run(client.clone(), cfg.hub_url.clone()));
    let services = tokio::spawn(services::run(client.clone(), cfg.services.clone()));
    let clusters = clusters::run(client, granted);
    tokio::select! {
        r = services => r.map_err(|e| Error::Invalid(format!("the services controller stopped: {e}")))?,
        r = csrs => r.map_err(|e| Error::Invalid(format!("the CSR controller stopped: {e}")))?,
        r = pushes => r.map_err(|e| Error::Invalid(format!("the push controller stopped: {e}")))?,
        r = clusters => r,
    }
}

/// The CRDs (server-side apply, so a newer hub updates them) and the bootstrap role: a bootstrap
/// identity may create a ManagedCluster and CSRs, and nothing else (reading its own CSRs is
/// granted per cluster by the CSR controller).
pub async fn install(client: &Client) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    for crd in atoll_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &pp, &Patch::Apply(&crd)).await?;
    }
    access::apply_cluster_role(
        client,
        "atoll:bootstrap",
        json!([
            {"apiGroups": ["cluster.atoll.io"], "resources": ["managedclusters"], "verbs": ["create"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["create"]},
        ]),
    )
    .await?;
    access::apply_cluster_role_binding(
        client,
        "atoll:bootstrap",
        "atoll:bootstrap",
        json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": BOOTSTRAP_GROUP}]),
    )
    .await?;
    // What a workspace's users may do in their namespace (`atoll workspace create` binds it):
    // their placements and replica sets, reading decisions, profiles and bindings; never
    // `bind` or `join`, nothing in cluster namespaces (the binding is in the workspace only).
    access::apply_cluster_role(
        client,
        WORKSPACE_USER_ROLE,
        json!([
            {"apiGroups": ["cluster.atoll.io"], "resources": ["placements"],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]},
            {"apiGroups": ["cluster.atoll.io"], "resources": ["placements/status", "placementdecisions", "managedclustersetbindings"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["work.atoll.io"], "resources": ["manifestworkreplicasets"],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]},
            {"apiGroups": ["work.atoll.io"], "resources": ["manifestworkreplicasets/status"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["clusterprofiles"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["networking.atoll.io"], "resources": ["multiclusteringresses"],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]},
            {"apiGroups": ["networking.atoll.io"], "resources": ["multiclusteringresses/status"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        ]),
    )
    .await?;
    // What `atoll gateway` reads and writes on the hub (bind it to the gateway's identity): the
    // ingresses and their status, the exports and where their clusters stand, TLS Secrets.
    access::apply_cluster_role(
        client,
        GATEWAY_ROLE,
        json!([
            {"apiGroups": ["networking.atoll.io"], "resources": ["multiclusteringresses", "exportedservices"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["networking.atoll.io"], "resources": ["multiclusteringresses/status"], "verbs": ["get", "patch", "update"]},
            {"apiGroups": ["cluster.atoll.io"], "resources": ["managedclusters", "managedclustersets", "managedclustersetbindings"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
        ]),
    )
    .await?;
    // The CRDs are served once established; wait for them (a few milliseconds on the embedded
    // server).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for crd in atoll_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        loop {
            let served = crds
                .get_opt(&name)
                .await?
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if served {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Invalid(format!(
                    "the CRD {name} was not established within 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mcs: Api<ManagedCluster> = Api::all(client.clone());
    while let Err(e) = mcs.list(&ListParams::default().limit(1)).await {
        if std::time::Instant::now() > deadline {
            return Err(Error::Invalid(format!(
                "the ManagedCluster CRD was not served within 30 s: {e}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The ClusterRole a workspace's users get in its namespace.
pub const WORKSPACE_USER_ROLE: &str = "atoll:workspace-user";
/// The ClusterRole `atoll gateway` needs on the hub.
pub const GATEWAY_ROLE: &str = "atoll:gateway";

/// Now as RFC 3339 with seconds, as `metav1.Time` is written.
pub(crate) fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
