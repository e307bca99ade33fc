//! ManagedClusters: acceptance, denial, clean-up, and health from the cluster's lease.
//!
//! Conditions (as Open Cluster Management sets them):
//! - `HubAcceptedManagedCluster`: `spec.hubAcceptsClient`; set to False with
//!   `HubDeniedManagedCluster=True` when a cluster once accepted is turned away;
//! - `ManagedClusterJoined`: the agent has renewed its lease with its accepted identity;
//! - `ManagedClusterConditionAvailable`: True while the lease is renewed; Unknown, with the
//!   taint `cluster.atoll.io/unreachable`, after 5 lease durations without a renewal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::cluster::{
    CLUSTER_FINALIZER, CLUSTER_LEASE, CONDITION_AVAILABLE, CONDITION_HUB_ACCEPTED,
    CONDITION_HUB_DENIED, CONDITION_JOINED, ClusterTaint, Condition, ManagedCluster,
    TAINT_UNREACHABLE, agent_user, cluster_namespace, set_condition,
};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::{Error, now_rfc3339};

/// Missed lease periods before a cluster is Unknown.
const GRACE_PERIODS: i64 = 5;

/// A cluster's lease as last seen: who renewed it, and when.
#[derive(Clone)]
struct Renewal {
    holder: Option<String>,
    renewed: Option<k8s_openapi::jiff::Timestamp>,
    /// When the lease was created: one older than the ManagedCluster belongs to an earlier
    /// cluster of the same name (the watch may deliver its deletion late) and is not used.
    created: Option<k8s_openapi::jiff::Timestamp>,
}

struct Ctx {
    client: Client,
    granted: Arc<crate::access::Granted>,
    /// Leases as the lease watch delivers them, by cluster: a renewal is read from here rather
    /// than fetched (thousands of clusters renew every few seconds).
    leases: Arc<Mutex<HashMap<String, Renewal>>>,
    /// Failed reconciles in a row, by cluster: a cluster that keeps failing (its namespace
    /// cannot be made, say) is retried ever less often, not every 2 s forever.
    failures: Mutex<HashMap<String, u32>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run the ManagedCluster controller until the process ends.
pub async fn run(client: Client, granted: Arc<crate::access::Granted>) -> Result<(), Error> {
    let mcs: Api<ManagedCluster> = Api::all(client.clone());
    let lease_api: Api<Lease> = Api::all(client.clone());
    let leases: Arc<Mutex<HashMap<String, Renewal>>> = Arc::default();
    let ctx = Arc::new(Ctx {
        client,
        granted,
        leases: leases.clone(),
        failures: Mutex::default(),
    });
    Controller::new(mcs, watcher::Config::default())
        .watches(
            lease_api,
            watcher::Config::default().fields(&format!("metadata.name={CLUSTER_LEASE}")),
            move |lease: Lease| {
                let ns = lease.namespace()?;
                let name = ns.strip_prefix("atoll-cluster-")?.to_string();
                let created = lease.metadata.creation_timestamp.map(|t| t.0);
                let spec = lease.spec.unwrap_or_default();
                lock(&leases).insert(
                    name.clone(),
                    Renewal {
                        holder: spec.holder_identity,
                        renewed: spec.renew_time.map(|t| t.0),
                        created,
                    },
                );
                Some(ObjectRef::<ManagedCluster>::new(&name))
            },
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cluster reconcile");
            }
        })
        .await;
    Ok(())
}

fn error_policy(mc: Arc<ManagedCluster>, e: &Error, ctx: Arc<Ctx>) -> Action {
    let name = mc.name_any();
    let failures = {
        let mut all = lock(&ctx.failures);
        let n = all.entry(name.clone()).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let delay = retry_delay(failures);
    tracing::warn!(cluster = %name, error = %e, failures, "cluster reconcile failed; retrying in {delay:?}");
    Action::requeue(delay)
}

/// 2 s after the first failure, doubling, at most a minute (health is judged on retries too).
fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(
        2u64.saturating_mul(1 << failures.saturating_sub(1).min(8))
            .min(60),
    )
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: now_rfc3339(),
    }
}

async fn reconcile(mc: Arc<ManagedCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = mc.name_any();
    let done = reconcile_cluster(mc, &ctx).await;
    if done.is_ok() {
        lock(&ctx.failures).remove(&name);
    }
    done
}

async fn reconcile_cluster(mc: Arc<ManagedCluster>, ctx: &Ctx) -> Result<Action, Error> {
    let name = mc.name_any();
    let api: Api<ManagedCluster> = Api::all(ctx.client.clone());
    let finalizers = mc.finalizers().to_vec();
    if mc.metadata.deletion_timestamp.is_some() {
        crate::access::remove_cluster(&ctx.client, &name).await?;
        ctx.granted.forget(&name);
        // Its lease goes with its namespace; a cluster of the same name joins afresh.
        lock(&ctx.leases).remove(&name);
        if finalizers.iter().any(|f| f == CLUSTER_FINALIZER) {
            let rest: Vec<&String> = finalizers
                .iter()
                .filter(|f| *f != CLUSTER_FINALIZER)
                .collect();
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": rest, "resourceVersion": mc.resource_version()}})),
            )
            .await?;
        }
        return Ok(Action::await_change());
    }
    if !finalizers.iter().any(|f| f == CLUSTER_FINALIZER) {
        let mut all = finalizers.clone();
        all.push(CLUSTER_FINALIZER.into());
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": all, "resourceVersion": mc.resource_version()}}),
            ),
        )
        .await?;
        return Ok(Action::await_change());
    }
    let mut conditions = mc
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let lease_seconds = i64::from(mc.spec.lease_duration_seconds.max(1));
    let mut requeue = None;
    let mut unreachable = false;
    if mc.spec.hub_accepts_client {
        ctx.granted
            .ensure(&ctx.client, &name, mc.spec.lease_duration_seconds)
            .await?;
        set_condition(
            &mut conditions,
            cond(
                CONDITION_HUB_ACCEPTED,
                "True",
                "HubClusterAdminAccepted",
                "Accepted by hub cluster admin",
            ),
        );
        set_condition(
            &mut conditions,
            cond(
                CONDITION_HUB_DENIED,
                "False",
                "HubClusterAdminAccepted",
                "Accepted by hub cluster admin",
            ),
        );
        // Health from the lease the agent renews.
        let mc_created = mc.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let seen = lock(&ctx.leases)
            .get(&name)
            .filter(|r| r.created >= mc_created)
            .cloned();
        let (holder, renew_time) = match seen {
            Some(r) => (r.holder, r.renewed),
            // Not delivered by the watch yet.
            None => {
                let leases: Api<Lease> =
                    Api::namespaced(ctx.client.clone(), &cluster_namespace(&name));
                let spec = leases
                    .get_opt(CLUSTER_LEASE)
                    .await?
                    .and_then(|l| l.spec)
                    .unwrap_or_default();
                (spec.holder_identity, spec.renew_time.map(|t| t.0))
            }
        };
        // The agent renews its lease; for a Push cluster, the hub does when the cluster answers.
        let expected = match mc.spec.sync_mode {
            atoll_api::cluster::SyncMode::Pull => agent_user(&name),
            atoll_api::cluster::SyncMode::Push => crate::push::PUSH_HOLDER.to_string(),
        };
        let renewed = renew_time.filter(|_| holder.as_deref() == Some(expected.as_str()));
        match renewed {
            Some(at) => {
                set_condition(
                    &mut conditions,
                    cond(
                        CONDITION_JOINED,
                        "True",
                        "ManagedClusterJoined",
                        "Managed cluster joined",
                    ),
                );
                let age = k8s_openapi::jiff::Timestamp::now()
                    .duration_since(at)
                    .as_secs();
                let limit = GRACE_PERIODS * lease_seconds;
                if age <= limit {
                    set_condition(
                        &mut conditions,
                        cond(
                            CONDITION_AVAILABLE,
                            "True",
                            "ManagedClusterAvailable",
                            "Managed cluster is available",
                        ),
                    );
                    requeue = Some(Duration::from_secs((limit - age.max(0)) as u64 + 1));
                } else {
                    unreachable = true;
                    set_condition(
                        &mut conditions,
                        cond(
                            CONDITION_AVAILABLE,
                            "Unknown",
                            "ManagedClusterLeaseUpdateStopped",
                            &format!(
                                "Registration agent stopped updating its lease (none for more than {limit} s)."
                            ),
                        ),
                    );
                }
            }
            None if !mc.is(CONDITION_JOINED) => {
                set_condition(
                    &mut conditions,
                    cond(
                        CONDITION_AVAILABLE,
                        "Unknown",
                        "ManagedClusterWaitForJoin",
                        "Waiting for the agent to join",
                    ),
                );
            }
            None => {}
        }
    } else if mc.is(CONDITION_HUB_ACCEPTED) || mc.is(CONDITION_HUB_DENIED) {
        // Turned away: the cluster's identity loses everything at once.
        crate::access::revoke_cluster(&ctx.client, &name).await?;
        ctx.granted.forget(&name);
        for (type_, status) in [
            (CONDITION_HUB_ACCEPTED, "False"),
            (CONDITION_HUB_DENIED, "True"),
            (CONDITION_JOINED, "False"),
            (CONDITION_AVAILABLE, "Unknown"),
        ] {
            set_condition(
                &mut conditions,
                cond(
                    type_,
                    status,
                    "HubClusterAdminDenied",
                    "Denied by hub cluster admin",
                ),
            );
        }
    }
    let current = mc
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if conditions != current {
        tracing::debug!(cluster = %name, available = ?conditions.iter().find(|c| c.type_ == CONDITION_AVAILABLE).map(|c| &c.status), "updating conditions");
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": conditions}})),
        )
        .await?;
    }
    // The unreachable taint follows the Available condition.
    let tainted = mc.spec.taints.iter().any(|t| t.key == TAINT_UNREACHABLE);
    if unreachable != tainted {
        let mut taints: Vec<ClusterTaint> = mc
            .spec
            .taints
            .iter()
            .filter(|t| t.key != TAINT_UNREACHABLE)
            .cloned()
            .collect();
        if unreachable {
            taints.push(ClusterTaint {
                key: TAINT_UNREACHABLE.into(),
                value: None,
                effect: "NoSelect".into(),
                time_added: Some(now_rfc3339()),
            });
        }
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": taints}})),
        )
        .await?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_cluster_is_retried_ever_less_often() {
        let secs: Vec<u64> = [1, 2, 3, 6, 9, 1000, u32::MAX]
            .iter()
            .map(|n| retry_delay(*n).as_secs())
            .collect();
        assert_eq!(secs, [2, 4, 8, 60, 60, 60, 60]);
    }
}
