//! Peering (Liqo's model, no hub): one cluster (the consumer) runs pods on another's resources
//! (the provider's). Every cluster runs these controllers and may be both.
//!
//! 1. **Handshake** (`handshake`): the provider's admin mints a peering token (a bootstrap
//!    token whose only right is to ask for a peer identity). The consumer trusts the provider's
//!    CA only if its public key hashes to the pin given with the token, then submits a CSR for
//!    `system:atoll:peer:<consumer-id>` (group `system:atoll:peers`) with it. The provider
//!    (`provider::csrs`) approves only a request made with a live peering token, whose pin is
//!    its own CA's and whose consumer is not already peered under another token; it creates
//!    the tenant namespace `atoll-tenant-<consumer-id>` and binds the identity there.
//! 2. **Negotiation** (`provider::requests`): the consumer's `ResourceRequest`, replicated to
//!    its tenant namespace, is granted by policy (`Auto`: a share of allocatable minus other
//!    offers; `Manual`: `atoll peer approve`) as a `ResourceOffer`, renewed while it lives.
//! 3. **Virtual node** (`consumer`): the consumer mirrors the offer and keeps Node
//!    `atoll-<provider>` with the granted capacity, Ready while the provider answers.
//! 4. **Offloading** (`offload`, `provider::namespaces`): a consumer namespace with a
//!    `NamespaceOffloading` gets a namespace in the provider (named by its strategy, checked
//!    before it is created, held to the grant by a ResourceQuota and to Pod Security
//!    `baseline`); pods bound to the virtual node run there, their status reflected back.
//!
//! Everything goes through the Kubernetes API of each cluster (kube-rs), with the consumer's
//! peer identity on the provider: what works between embedded clusters works between real ones.

mod consumer;
pub mod discovery;
pub mod grant;
mod handshake;
pub mod naming;
mod offload;
pub mod pin;
mod provider;
mod rbac;
pub mod reflect;
pub mod reflect_services;
pub mod search;
mod services;
mod vkubelet;
pub mod vnode;
pub mod webhook;

use std::time::Duration;

use atoll_api::peering::{MANAGER, PEERING_NAMESPACE};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

pub use handshake::{fetch_ca, provider_info};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Config(String),
}

impl Error {
    fn config(e: impl std::fmt::Display) -> Error {
        Error::Config(e.to_string())
    }
}

/// How the provider answers requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Grant up to `share` percent of allocatable, less what other offers hold.
    Auto { share: u32 },
    /// Wait for `atoll peer approve|refuse`.
    Manual,
}

/// What the controllers of one cluster are told.
#[derive(Clone, Debug)]
pub struct PeeringConfig {
    /// This cluster's id (a DNS label): its tenant namespaces on providers are named after it.
    pub cluster_id: String,
    /// Where peers reach this cluster's API server.
    pub api_server_url: String,
    /// This cluster's CA (PEM), whose pin peering tokens come with.
    pub ca_pem: String,
    pub policy: Policy,
    /// How long an offer holds without renewal.
    pub offer_ttl: Duration,
    /// How often the provider's reachability is checked.
    pub probe_period: Duration,
    /// Lifetime asked for peer certificates (`expirationSeconds`).
    pub certificate_seconds: Option<i32>,
}

/// The ConfigMap in `kube-public` where a cluster says who it is to peers.
pub const INFO_CONFIGMAP: &str = "atoll-peering";

/// Run the peering controllers of one cluster until an error that retrying cannot fix.
/// `ready` is called once the CRDs, roles and public facts are in place.
pub async fn run(client: Client, cfg: PeeringConfig, ready: impl FnOnce()) -> Result<(), Error> {
    atoll_api::cluster::check_cluster_name(&cfg.cluster_id).map_err(Error::Config)?;
    let mut backoff = Duration::from_millis(200);
    loop {
        match install(&client, &cfg).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot install peering yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    tracing::info!(cluster = %cfg.cluster_id, "peering controllers running");
    ready();
    let cfg = std::sync::Arc::new(cfg);
    tokio::select! {
        r = provider::run(client.clone(), cfg.clone()) => r,
        r = consumer::run(client.clone(), cfg.clone()) => r,
    }
}

/// The CRDs, the namespace, the roles and this cluster's public peering facts.
async fn install(client: &Client, cfg: &PeeringConfig) -> Result<(), Error> {
    let pp = PatchParams::apply(MANAGER).force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in atoll_api::peering::crds() {
        crds.patch(&crd.name_any(), &pp, &Patch::Apply(&crd))
            .await?;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PEERING_NAMESPACE}});
    namespaces
        .patch(PEERING_NAMESPACE, &pp, &Patch::Apply(&ns))
        .await?;
    rbac::install(client).await?;
    let pin = pin::of_pem(&cfg.ca_pem)
        .ok_or_else(|| Error::Config("this cluster's CA does not parse".into()))?;
    let info = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": INFO_CONFIGMAP, "namespace": "kube-public"},
        "data": {"clusterID": cfg.cluster_id, "apiServerURL": cfg.api_server_url, "caSHA256": pin},
    });
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "kube-public")
        .patch(INFO_CONFIGMAP, &pp, &Patch::Apply(&info))
        .await?;
    // Wait until the CRDs are served: the controllers' watches start right after.
    let offers: Api<atoll_api::peering::ResourceOffer> = Api::all(client.clone());
    for _ in 0..100 {
        if offers
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Config("the peering CRDs are not served".into()))
}

/// `now + d` as RFC 3339.
fn rfc3339_after(d: Duration) -> String {
    let at = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
            d.as_secs() as i64
        ))
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Whether RFC 3339 `at` is in the past (unparsable counts as past).
fn passed(at: &str) -> bool {
    at.parse::<k8s_openapi::jiff::Timestamp>()
        .map_or(true, |t| t <= k8s_openapi::jiff::Timestamp::now())
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A metav1 condition.
fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: atoll_runtime::now(),
        observed_generation: None,
    }
}
