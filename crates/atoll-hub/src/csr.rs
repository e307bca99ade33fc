//! Agents' CertificateSigningRequests.
//!
//! A CSR is considered only if it is labelled with the cluster it claims, is for the
//! `kubernetes.io/kube-apiserver-client` signer with client-auth usages, its subject is exactly
//! that cluster's agent (CN `system:atoll:cluster:<name>:agent`, O `system:atoll:cluster:<name>`
//! and `system:atoll:clusters`), and its requester is a bootstrap identity or that cluster's own
//! agent. Renewals by the agent of an accepted cluster are approved here; first requests wait
//! for `atoll accept` unless their bootstrap user is in `--auto-accept`. Anything else is left
//! alone and reported once as an event on the CSR.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use atoll_api::cluster::{
    CLUSTERS_GROUP, CSR_CLUSTER_LABEL, ManagedCluster, agent_user, cluster_group,
};
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::{Error, HubConfig, MANAGER};

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// How many of a cluster's most recent CSRs its requesters may read.
const READABLE_CSRS: usize = 10;

/// Who asks for a cluster's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester {
    /// A bootstrap identity: a first join (or a re-join after the agent lost its identity).
    Bootstrap,
    /// The cluster's current agent: a renewal.
    Agent,
}

/// The cluster a CSR asks for and who asks, or why it is not a valid request of an agent.
pub fn check(csr: &CertificateSigningRequest) -> Result<(String, Requester), String> {
    let name = csr
        .labels()
        .get(CSR_CLUSTER_LABEL)
        .cloned()
        .ok_or_else(|| format!("no {CSR_CLUSTER_LABEL} label"))?;
    let spec = &csr.spec;
    let (cn, orgs) = atoll_runtime::client_csr_subject(spec)?;
    let want_orgs: BTreeSet<String> = [cluster_group(&name), CLUSTERS_GROUP.to_string()].into();
    if cn != agent_user(&name) || orgs != want_orgs {
        return Err(format!(
            "subject CN={cn:?} O={orgs:?} does not match cluster {name:?}: want CN={:?} O={want_orgs:?}",
            agent_user(&name)
        ));
    }
    let username = spec.username.clone().unwrap_or_default();
    let groups = spec.groups.clone().unwrap_or_default();
    if username == agent_user(&name) {
        Ok((name, Requester::Agent))
    } else if groups.iter().any(|g| g == "system:bootstrappers") {
        Ok((name, Requester::Bootstrap))
    } else {
        Err(format!(
            "requested by {username:?}, which is neither a bootstrap identity nor cluster {name:?}'s agent"
        ))
    }
}

/// Whether the CSR already has an `Approved` or `Denied` condition.
pub fn decided(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Approved" || c.type_ == "Denied")
        })
}

/// Approve (or deny) through the `approval` subresource, as `kubectl certificate approve`.
pub async fn decide(
    client: &Client,
    csr: &CertificateSigningRequest,
    approve: bool,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut csr = csr.clone();
    let status = csr.status.get_or_insert_with(Default::default);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: if approve { "Approved" } else { "Denied" }.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        });
    api.replace_subresource("approval", &csr.name_any(), &PostParams::default(), &csr)
        .await?;
    Ok(())
}

/// A cluster's CSRs: name -> (creation time, requester).
type ClusterCsrs = BTreeMap<String, (String, String)>;
/// What a cluster's requesters may read: (CSR names, users).
type Grant = (Vec<String>, Vec<String>);

/// What the CSR controller's workers share.
#[derive(Default)]
struct Shared {
    by_cluster: Mutex<BTreeMap<String, ClusterCsrs>>,
    /// Per cluster: what was last granted.
    granted: Mutex<BTreeMap<String, Grant>>,
    /// One worker at a time per cluster, so that grants are written in order.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    reported: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Workers at once: CSRs arrive in bursts when many clusters join.
const WORKERS: usize = 32;

/// Run the CSR controller until the process ends.
pub async fn run(
    client: Client,
    cfg: HubConfig,
    granted: Arc<crate::access::Granted>,
) -> Result<(), Error> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut events = watcher(api, watcher::Config::default().labels(CSR_CLUSTER_LABEL)).boxed();
    let shared = Arc::new(Shared::default());
    let cfg = Arc::new(cfg);
    let workers = Arc::new(tokio::sync::Semaphore::new(WORKERS));
    while let Some(event) = events.next().await {
        let csr = match event {
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
            Ok(watcher::Event::Delete(c)) => {
                if let Some(name) = c.labels().get(CSR_CLUSTER_LABEL)
                    && let Some(m) = lock(&shared.by_cluster).get_mut(name)
                {
                    m.remove(&c.name_any());
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "CSR watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(permit) = workers.clone().acquire_owned().await else {
            break;
        };
        let (client, shared, cfg, granted) =
            (client.clone(), shared.clone(), cfg.clone(), granted.clone());
        tokio::spawn(async move {
            handle(&client, &shared, &cfg, &granted, csr).await;
            drop(permit);
        });
    }
    Ok(())
}

async fn handle(
    client: &Client,
    shared: &Shared,
    cfg: &HubConfig,
    granted: &crate::access::Granted,
    csr: CertificateSigningRequest,
) {
    let (cluster, requester) = match check(&csr) {
        Ok(ok) => ok,
        Err(why) => {
            if !decided(&csr) && lock(&shared.reported).insert(csr.uid().unwrap_or_default()) {
                tracing::warn!(csr = %csr.name_any(), %why, "ignoring a CSR");
                atoll_runtime::record_event(
                    client,
                    &csr,
                    "Warning",
                    "InvalidClusterCSR",
                    &format!("not approved by the hub: {why}"),
                    MANAGER,
                )
                .await;
            }
            return;
        }
    };
    let cluster_lock = lock(&shared.locks)
        .entry(cluster.clone())
        .or_default()
        .clone();
    let _one_at_a_time = cluster_lock.lock().await;
    // Its requesters may read the cluster's recent CSRs (the agent waits on its own).
    let (names, users) = {
        let mut by_cluster = lock(&shared.by_cluster);
        let entry = by_cluster.entry(cluster.clone()).or_default();
        let created = csr
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        entry.insert(
            csr.name_any(),
            (created, csr.spec.username.clone().unwrap_or_default()),
        );
        let mut recent: Vec<(&String, &(String, String))> = entry.iter().collect();
        recent.sort_by(|a, b| b.1.0.cmp(&a.1.0));
        recent.truncate(READABLE_CSRS);
        let mut names: Vec<String> = recent.iter().map(|(n, _)| (*n).clone()).collect();
        let mut users: Vec<String> = recent.iter().map(|(_, (_, u))| u.clone()).collect();
        names.sort();
        users.sort();
        users.dedup();
        (names, users)
    };
    if lock(&shared.granted).get(&cluster) != Some(&(names.clone(), users.clone())) {
        match crate::access::grant_csr_reads(client, &cluster, &names, &users).await {
            Ok(()) => {
                tracing::debug!(%cluster, csr = %csr.name_any(), "granted CSR reads");
                lock(&shared.granted).insert(cluster.clone(), (names, users));
            }
            Err(e) => tracing::warn!(%cluster, error = %e, "cannot grant CSR reads"),
        }
    }
    if decided(&csr) {
        return;
    }
    let mcs: Api<ManagedCluster> = Api::all(client.clone());
    let username = csr.spec.username.clone().unwrap_or_default();
    let outcome = match requester {
        Requester::Agent => {
            let accepted = mcs
                .get_opt(&cluster)
                .await
                .ok()
                .flatten()
                .is_some_and(|mc| mc.spec.hub_accepts_client);
            if !accepted {
                return;
            }
            decide(
                client,
                &csr,
                true,
                "AutoApprovedRenewal",
                &format!("renewal of cluster {cluster}'s agent certificate"),
            )
            .await
        }
        Requester::Bootstrap if cfg.auto_accept.contains(&username) => {
            // Accepted first, then granted, then approved: the agent's first request with its
            // new certificate is allowed. Until the acceptance is written nothing is approved
            // (and no later event brings this CSR back), so it is retried.
            let accept = json!({"spec": {"hubAcceptsClient": true}});
            let mut backoff = std::time::Duration::from_millis(100);
            let mc = loop {
                match mcs
                    .patch(&cluster, &PatchParams::default(), &Patch::Merge(&accept))
                    .await
                {
                    Ok(mc) => break mc,
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        tracing::warn!(%cluster, csr = %csr.name_any(), "no ManagedCluster for this CSR; not approved");
                        return;
                    }
                    // Refused (not allowed, invalid): retrying would not change that.
                    Err(kube::Error::Api(e))
                        if (400..500).contains(&e.code) && e.code != 409 && e.code != 429 =>
                    {
                        tracing::warn!(%cluster, csr = %csr.name_any(), error = %e.message, "cannot set hubAcceptsClient; not approved");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%cluster, error = %e, "cannot set hubAcceptsClient; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                    }
                }
            };
            // On failure the ManagedCluster controller grants (and retries) when it sees the
            // acceptance; the agent retries until then.
            if let Err(e) = granted
                .ensure(client, &cluster, mc.spec.lease_duration_seconds)
                .await
            {
                tracing::warn!(%cluster, error = %e, "cannot grant the cluster's access yet");
            }
            let r = decide(
                client,
                &csr,
                true,
                "AutoApprovedByHub",
                &format!("{username} is in the hub's --auto-accept"),
            )
            .await;
            if r.is_ok() {
                tracing::debug!(%cluster, csr = %csr.name_any(), "approved");
            }
            r
        }
        // Waits for `atoll accept`.
        Requester::Bootstrap => Ok(()),
    };
    if let Err(e) = outcome {
        tracing::warn!(csr = %csr.name_any(), error = %e, "cannot approve");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn request(cn: &str, orgs: &[&str]) -> ByteString {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        let orgs: Vec<String> = orgs.iter().map(|o| o.to_string()).collect();
        params.distinguished_name = atoll_runtime::client_subject(cn, &orgs).expect("subject");
        ByteString(
            params
                .serialize_request(&key)
                .expect("csr")
                .pem()
                .expect("pem")
                .into_bytes(),
        )
    }

    fn csr(
        label: &str,
        cn: &str,
        orgs: &[&str],
        user: &str,
        groups: &[&str],
    ) -> CertificateSigningRequest {
        let mut c = CertificateSigningRequest::default();
        c.metadata.labels = Some([(CSR_CLUSTER_LABEL.to_string(), label.to_string())].into());
        c.spec.signer_name = CLIENT_SIGNER.into();
        c.spec.usages = Some(vec!["client auth".into(), "digital signature".into()]);
        c.spec.request = request(cn, orgs);
        c.spec.username = Some(user.into());
        c.spec.groups = Some(groups.iter().map(|g| g.to_string()).collect());
        c
    }

    const ORGS_A: [&str; 2] = ["system:atoll:cluster:a", "system:atoll:clusters"];

    #[test]
    fn only_a_clusters_own_subject_from_a_bootstrap_identity_or_its_agent_passes() {
        let boot = [
            "system:bootstrappers",
            "system:bootstrappers:atoll",
            "system:authenticated",
        ];
        let ok = csr(
            "a",
            "system:atoll:cluster:a:agent",
            &ORGS_A,
            "system:bootstrap:abc123",
            &boot,
        );
        assert_eq!(check(&ok), Ok(("a".into(), Requester::Bootstrap)));
        let renewal = csr(
            "a",
            "system:atoll:cluster:a:agent",
            &ORGS_A,
            "system:atoll:cluster:a:agent",
            &ORGS_A,
        );
        assert_eq!(check(&renewal), Ok(("a".into(), Requester::Agent)));
        // Another cluster's name in the label, the CN or the groups.
        let cases = [
            csr(
                "b",
                "system:atoll:cluster:a:agent",
                &ORGS_A,
                "system:bootstrap:abc123",
                &boot,
            ),
            csr(
                "a",
                "system:atoll:cluster:b:agent",
                &ORGS_A,
                "system:bootstrap:abc123",
                &boot,
            ),
            csr(
                "a",
                "system:atoll:cluster:a:agent",
                &["system:atoll:cluster:b", "system:atoll:clusters"],
                "system:bootstrap:abc123",
                &boot,
            ),
            csr(
                "a",
                "system:atoll:cluster:a:agent",
                &["system:masters"],
                "system:bootstrap:abc123",
                &boot,
            ),
            // Cluster b's agent asking for a's identity; an ordinary user asking.
            csr(
                "a",
                "system:atoll:cluster:a:agent",
                &ORGS_A,
                "system:atoll:cluster:b:agent",
                &["system:atoll:cluster:b"],
            ),
            csr(
                "a",
                "system:atoll:cluster:a:agent",
                &ORGS_A,
                "alice",
                &["system:authenticated"],
            ),
        ];
        for c in &cases {
            assert!(check(c).is_err(), "{:?} passed", c.spec.username);
        }
        let mut other_signer = ok.clone();
        other_signer.spec.signer_name = "kubernetes.io/kubelet-serving".into();
        assert!(check(&other_signer).unwrap_err().contains("signer"));
        let mut server_usage = ok.clone();
        server_usage.spec.usages = Some(vec!["server auth".into()]);
        assert!(check(&server_usage).is_err());
        let mut unlabelled = ok;
        unlabelled.metadata.labels = None;
        assert!(check(&unlabelled).is_err());
    }
}
