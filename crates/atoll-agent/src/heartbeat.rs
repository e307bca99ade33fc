//! The heartbeat: the lease renewed every lease period, and the cluster's status (capacity,
//! allocatable, version, claims) reported when it changed, at most every 60 s.

use std::time::Duration;

use atoll_api::cluster::{CLUSTER_LEASE, ManagedCluster, agent_user, cluster_namespace};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::Error;

/// How often the agent reports status (and re-reads its lease duration); the lease itself is
/// renewed every lease period.
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// What the heartbeat remembers between beats.
pub(crate) struct Beat {
    pub(crate) lease_seconds: i32,
    pub(crate) last_status: Option<serde_json::Value>,
    pub(crate) reported_at: Option<std::time::Instant>,
}

/// One heartbeat: renew the lease (one merge patch); every `STATUS_EVERY`, re-read the
/// lease duration and report status if it changed.
pub(crate) async fn beat(
    member: &Client,
    hub: &Client,
    name: &str,
    state: &mut Beat,
) -> Result<(), Error> {
    let leases: Api<Lease> = Api::namespaced(hub.clone(), &cluster_namespace(name));
    leases
        .patch(
            CLUSTER_LEASE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "holderIdentity": agent_user(name),
                "leaseDurationSeconds": state.lease_seconds,
                "renewTime": atoll_runtime::now_micro(),
            }})),
        )
        .await?;
    if state
        .reported_at
        .is_some_and(|t| t.elapsed() < STATUS_EVERY)
    {
        return Ok(());
    }
    let mcs: Api<ManagedCluster> = Api::all(hub.clone());
    state.lease_seconds = mcs.get(name).await?.spec.lease_duration_seconds;
    let status = status_of(member).await;
    if state.last_status.as_ref() != Some(&status) {
        mcs.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
        state.last_status = Some(status);
    }
    state.reported_at = Some(std::time::Instant::now());
    Ok(())
}

/// What the hub shows of the member (shared with the hub, which reads Push clusters' itself).
async fn status_of(member: &Client) -> serde_json::Value {
    atoll_work::member::cluster_status(member).await
}
