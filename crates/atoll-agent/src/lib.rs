//! The member agent: joins its cluster to the hub and keeps it there.
//!
//! 1. With the bootstrap kubeconfig it creates its `ManagedCluster` and a CSR for the identity
//!    `system:atoll:cluster:<name>:agent` (groups `system:atoll:cluster:<name>`,
//!    `system:atoll:clusters`) with a key it makes itself and never sends anywhere. The key and
//!    the CSR's name are saved first in Secret `atoll-agent/hub-kubeconfig` of its own cluster,
//!    so an agent restarted while waiting resumes the same request instead of making another.
//! 2. Once the CSR is approved and signed, the kubeconfig for that identity replaces them in the
//!    Secret; from then on the agent uses only it (restarts resume from the Secret).
//! 3. It renews Lease `cluster-lease` in `atoll-cluster-<name>` every `leaseDurationSeconds`
//!    (with jitter), reports status (capacity and allocatable summed over Nodes, the Kubernetes
//!    version, the cluster's `ClusterProperty` objects as claims), and at 80% of its
//!    certificate's life asks for a new one with its current identity, which the hub approves.
//!
//! Hub outages and denials are retried with back-off; nothing is lost.

mod heartbeat;
mod identity;

mod work;

use std::collections::BTreeMap;
use std::time::Duration;

use atoll_api::cluster::{HUB_KUBECONFIG_SECRET, SyncMode, agent_user};
use kube::Client;

use crate::heartbeat::{Beat, beat};
use crate::identity::{Identity, acquire, registered_again, rotate, save_secret};

pub(crate) const MANAGER: &str = "atoll-agent";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Config(String),
    #[error("the hub denied cluster {0}'s certificate request")]
    Denied(String),
}

impl Error {
    fn config(e: impl std::fmt::Display) -> Error {
        Error::Config(e.to_string())
    }
}

/// What the agent is told.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub cluster_name: String,
    /// The bootstrap kubeconfig (YAML), needed only until the cluster has its own identity.
    pub bootstrap_kubeconfig: Option<String>,
    /// `spec.leaseDurationSeconds` of the ManagedCluster it creates.
    pub lease_seconds: i32,
    pub sync_mode: SyncMode,
    /// Lifetime to ask for the certificate (`expirationSeconds`); the hub's signer may cap it.
    pub certificate_seconds: Option<i32>,
    /// The Secret in `atoll-agent` holding the hub identity (`hub-kubeconfig`; benchmarks run
    /// many agents against one member and give each its own).
    pub secret_name: String,
    /// Apply the cluster's ManifestWorks (Pull mode), with the member client made from this
    /// configuration (executors are impersonated with it); `None`: no work delivery (the
    /// registration benchmark's thousands of agents on one member).
    pub pull_work: Option<kube::Config>,
}

impl AgentConfig {
    /// An agent for cluster `name` with the defaults.
    pub fn new(name: &str) -> AgentConfig {
        AgentConfig {
            cluster_name: name.into(),
            bootstrap_kubeconfig: None,
            lease_seconds: 60,
            sync_mode: SyncMode::Pull,
            certificate_seconds: None,
            secret_name: HUB_KUBECONFIG_SECRET.into(),
            pull_work: None,
        }
    }
}

/// Run the agent until the process ends.
pub async fn run(member: Client, cfg: AgentConfig) -> Result<(), Error> {
    atoll_api::cluster::check_cluster_name(&cfg.cluster_name).map_err(Error::Config)?;
    let name = cfg.cluster_name.clone();
    let mut identity = acquire(&member, &cfg).await?;
    tracing::info!(cluster = %name, "joined the hub with identity {}", agent_user(&name));
    // Pull work follows whichever identity the agent holds.
    let (hub_tx, hub_rx) = tokio::sync::watch::channel(identity.client.clone());
    let _work = match (&cfg.pull_work, cfg.sync_mode) {
        (Some(config), SyncMode::Pull) => {
            let url = atoll_runtime::kubeconfig_cluster(&identity.kubeconfig)
                .map(|(server, _)| server)
                .map_err(Error::Config)?;
            let member = atoll_work::Member {
                client: member.clone(),
                config: config.clone(),
            };
            Some(atoll_runtime::AbortOnDrop(work::start(
                &name,
                &url,
                hub_rx.clone(),
                member,
            )))
        }
        _ => None,
    };
    // Multi-cluster services go with pull work (a Push cluster's are the hub's to handle).
    let _services =
        match (&cfg.pull_work, cfg.sync_mode) {
            (Some(_), SyncMode::Pull) => Some(atoll_runtime::AbortOnDrop(
                atoll_work::services::start(&name, hub_rx.clone(), member.clone()),
            )),
            _ => None,
        };
    let follow = |identity: &Identity| {
        let _ = hub_tx.send(identity.client.clone());
    };
    // Just after joining, the hub may not have granted the new identity yet (it does so when
    // it sees the acceptance): retry fast until the first heartbeat goes through.
    let mut backoff = Duration::from_millis(100);
    let mut ever_beat = false;
    let mut state = Beat {
        lease_seconds: cfg.lease_seconds,
        last_status: None,
        reported_at: None,
    };
    loop {
        // An identity that expired (the hub was unreachable through the whole renewal window)
        // is refused by the hub: join again with the bootstrap kubeconfig, as after a restart.
        if k8s_openapi::jiff::Timestamp::now().as_second() >= identity.not_after {
            tracing::warn!(cluster = %name, "the hub identity has expired; joining again with the bootstrap kubeconfig");
            identity = acquire(&member, &cfg).await?;
            follow(&identity);
            tracing::info!(cluster = %name, "joined the hub again with identity {}", agent_user(&name));
            backoff = Duration::from_millis(100);
            ever_beat = false;
        }
        let lease_seconds = match beat(&member, &identity.client, &name, &mut state).await {
            Ok(()) => {
                if !ever_beat {
                    tracing::debug!(cluster = %name, "first heartbeat");
                }
                backoff = Duration::from_secs(1);
                ever_beat = true;
                state.lease_seconds
            }
            Err(Error::Kube(kube::Error::Api(e)))
                if e.code == 401 || e.code == 403 || (!ever_beat && e.code == 404) =>
            {
                if ever_beat && registered_again(&cfg).await {
                    tracing::warn!(cluster = %name, "ManagedCluster {name} was removed from the hub; registered it again, joining with the bootstrap kubeconfig");
                    // The old identity is worthless now: forget it, so that joining makes a
                    // new request (which waits for acceptance, like the first).
                    // (Retried here: the hub will not say again that the cluster was removed.)
                    while let Err(e) = save_secret(&member, &cfg, BTreeMap::new()).await {
                        tracing::warn!(cluster = %name, error = %e, "cannot clear the hub identity; retrying");
                        tokio::time::sleep(jitter(Duration::from_secs(1))).await;
                    }
                    identity = acquire(&member, &cfg).await?;
                    follow(&identity);
                    tracing::info!(cluster = %name, "joined the hub again with identity {}", agent_user(&name));
                    backoff = Duration::from_millis(100);
                    ever_beat = false;
                    continue;
                }
                if ever_beat || backoff >= Duration::from_secs(2) {
                    tracing::warn!(cluster = %name, reason = %e.message, "the hub refuses this cluster's identity (denied, or not yet granted); retrying");
                }
                tokio::time::sleep(jitter(backoff)).await;
                let cap = if ever_beat { 30 } else { 2 };
                backoff = (backoff * 2).min(Duration::from_secs(cap));
                continue;
            }
            Err(e) => {
                tracing::warn!(cluster = %name, error = %e, "cannot reach the hub; retrying");
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        // Rotation at 80% of the certificate's life, with the current identity.
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let renew_at = identity.not_before + (identity.not_after - identity.not_before) * 8 / 10;
        if now >= renew_at {
            match rotate(&member, &identity, &cfg).await {
                Ok(next) => {
                    tracing::info!(cluster = %name, "rotated the agent certificate");
                    identity = next;
                    follow(&identity);
                }
                Err(e) => {
                    tracing::warn!(cluster = %name, error = %e, "certificate rotation failed; retrying")
                }
            }
        }
        let until_renewal = Duration::from_secs((renew_at - now).max(1) as u64);
        let period = Duration::from_secs(lease_seconds.max(1) as u64);
        tokio::time::sleep(jitter(period).min(until_renewal)).await;
    }
}

/// Up to 10% less than `d`, so that many agents do not renew in step.
pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(1.0 - f64::from(nanos % 1000) / 10_000.0)
}
