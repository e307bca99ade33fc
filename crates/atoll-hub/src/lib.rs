//! The hub's controllers for cluster registration (Open Cluster Management's model):
//!
//! - `csr`: CertificateSigningRequests of agents, validated against the cluster they claim;
//!   renewals by a cluster's own agent approved at once, first requests left to `atoll accept`
//!   (or approved for bootstrap users named in `--auto-accept`); each cluster's requesters may
//!   read exactly their cluster's CSRs;
//! - `clusters`: ManagedClusters: on acceptance the cluster's namespace, its RBAC and its lease;
//!   on denial the bindings go; on deletion everything goes (finalizer); conditions and the
//!   unreachable taint from the lease.
//!
//! Everything goes through the Kubernetes API (kube-rs), so the hub runs against the embedded
//! API server or a real kube-apiserver alike.

pub mod access;
pub mod clusters;
pub mod csr;
pub mod webhook;

use std::time::Duration;

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
}

/// Run the hub's controllers until the process ends (after [`install`]).
pub async fn run(client: Client, cfg: HubConfig) -> Result<(), Error> {
    let granted = std::sync::Arc::new(access::Granted::default());
    let csrs = tokio::spawn(csr::run(client.clone(), cfg.clone(), granted.clone()));
    let clusters = clusters::run(client, granted);
    tokio::select! {
        r = csrs => r.map_err(|e| Error::Invalid(format!("the CSR controller stopped: {e}")))?,
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
    // The CRD is served once established; wait for it (a few milliseconds on the embedded server).
    let mcs: Api<ManagedCluster> = Api::all(client.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
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

/// Now as RFC 3339 with seconds, as `metav1.Time` is written.
pub(crate) fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
