//! Pull mode: the agent applies its cluster's ManifestWorks from the hub into its own cluster
//! (the one applier, `atoll-work`), with whichever hub identity it holds now.

use atoll_api::cluster::{agent_user, cluster_namespace};
use kube::Client;

use crate::Error;

/// Start applying the works of cluster `name`; `hub` follows the agent's identity.
pub(crate) fn start(
    name: &str,
    hub_url: &str,
    hub: tokio::sync::watch::Receiver<Client>,
    member: atoll_work::Member,
) -> tokio::task::JoinHandle<()> {
    let namespace = cluster_namespace(name);
    let cfg = atoll_work::WorkConfig::new(
        namespace.clone(),
        atoll_work::applier_hash(hub_url, &namespace),
        agent_user(name),
    );
    let name = name.to_string();
    tokio::spawn(async move {
        // The applier stops only on bad configuration; say so, the lease goes on.
        let mut backoff = std::time::Duration::from_millis(200);
        while let Err(e) = atoll_work::install(&member.client).await {
            tracing::warn!(cluster = %name, error = %e, "cannot install the AppliedManifestWork CRD; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
        }
        if let Err(e) = atoll_work::run(hub, member, cfg).await {
            tracing::error!(cluster = %name, error = %Error::Config(e.to_string()), "the work applier stopped");
        }
    })
}
