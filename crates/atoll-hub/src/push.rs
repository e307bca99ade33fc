//! Push mode (Karmada's): for each accepted ManagedCluster with `spec.syncMode: Push` the hub
//! itself applies the cluster's works (the one applier, `atoll-work`) with the credential in
//! Secret `push-credential` of its namespace, reads its status (capacity, version, claims),
//! and stands in for the agent's lease by probing the cluster's `/readyz` every lease period:
//! a cluster that does not answer goes Unknown, tainted unreachable, as one whose agent
//! stopped.
//!
//! The credential is a token of ServiceAccount `atoll-agent/atoll-push` in the member, bound
//! to the member's ClusterRole `atoll:work-applier` (never `*/*/*`, Karmada's known weakness),
//! renewed by the hub at 80% of its life. Only the hub's own identity reads that Secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::cluster::{CLUSTER_LEASE, ManagedCluster, SyncMode, cluster_namespace};
use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::{Error, MANAGER};

/// The Secret holding a Push cluster's credential, in its hub namespace.
pub const PUSH_SECRET: &str = "push-credential";
/// The lease holder the hub writes for Push clusters.
pub const PUSH_HOLDER: &str = "system:atoll:hub:push";
/// The member's service account the hub pushes as.
pub const PUSH_SERVICE_ACCOUNT: &str = "atoll-push";
/// Its namespace in the member.
pub const PUSH_NAMESPACE: &str = atoll_api::cluster::AGENT_NAMESPACE;
/// The member's ClusterRole of what the applier may do.
pub const WORK_APPLIER_ROLE: &str = "atoll:work-applier";

/// A Push cluster's credential, read from its Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct Credential {
    pub server: String,
    pub ca_pem: String,
    pub token: String,
}

impl Credential {
    pub fn from_secret(s: &Secret) -> Option<Credential> {
        let get = |k: &str| {
            s.data
                .as_ref()?
                .get(k)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        Some(Credential {
            server: get("server")?,
            ca_pem: get("ca.crt").unwrap_or_default(),
            token: get("token")?,
        })
    }

    /// A client (and its config) for the member.
    pub fn client(&self) -> Result<(Client, kube::Config), String> {
        let mut config = kube::Config::new(
            self.server
                .parse()
                .map_err(|e| format!("push credential server {:?}: {e}", self.server))?,
        );
        if !self.ca_pem.is_empty() {
            config.root_cert = Some(pem_certificates(&self.ca_pem));
        }
        config.auth_info.token = Some(self.token.clone().into());
        let client = Client::try_from(config.clone()).map_err(|e| e.to_string())?;
        Ok((client, config))
    }

    /// When the token expires (seconds since the epoch), from its JWT payload.
    pub fn expires(&self) -> Option<i64> {
        let payload = self.token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        claims["exp"].as_i64()
    }
}

fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines() {
        match line.trim() {
            "-----BEGIN CERTIFICATE-----" => {
                inside = true;
                body.clear();
            }
            "-----END CERTIFICATE-----" => {
                inside = false;
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()) {
                    out.push(der);
                }
            }
            l if inside => body.push_str(l),
            _ => {}
        }
    }
    out
}

/// A running push of one cluster: what it was started with, and its task.
struct Pushing {
    credential: Credential,
    task: tokio::task::JoinHandle<()>,
}

/// Run push mode for every Push cluster until the process ends.
pub async fn run(hub: Client, hub_url: String) -> Result<(), Error> {
    let running: Arc<Mutex<HashMap<String, Pushing>>> = Arc::default();
    let mcs: Api<ManagedCluster> = Api::all(hub.clone());
    let stream = watcher(mcs, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut clusters: HashMap<String, ManagedCluster> = HashMap::new();
    loop {
        tokio::select! {
            event = stream.next() => {
                match event {
                    Some(Ok(watcher::Event::Apply(mc) | watcher::Event::InitApply(mc))) => {
                        clusters.insert(mc.name_any(), mc);
                    }
                    Some(Ok(watcher::Event::Delete(mc))) => {
                        clusters.remove(&mc.name_any());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::debug!(error = %e, "push: cluster watch"),
                    None => return Ok(()),
                }
            }
            _ = tick.tick() => {}
        }
        converge(&hub, &hub_url, &clusters, &running).await;
    }
}

/// Start, restart or stop each cluster's push as its object and credential say.
async fn converge(
    hub: &Client,
    hub_url: &str,
    clusters: &HashMap<String, ManagedCluster>,
    running: &Arc<Mutex<HashMap<String, Pushing>>>,
) {
    let wanted: Vec<&ManagedCluster> = clusters
        .values()
        .filter(|mc| {
            mc.spec.sync_mode == SyncMode::Push
                && mc.spec.hub_accepts_client
                && mc.metadata.deletion_timestamp.is_none()
        })
        .collect();
    {
        let mut map = running.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|name, p| {
            let keep = wanted.iter().any(|mc| mc.name_any() == *name) && !p.task.is_finished();
            if !keep {
                p.task.abort();
            }
            keep
        });
    }
    for mc in wanted {
        let name = mc.name_any();
        let secrets: Api<Secret> = Api::namespaced(hub.clone(), &cluster_namespace(&name));
        let credential = match secrets.get_opt(PUSH_SECRET).await {
            Ok(Some(s)) => Credential::from_secret(&s),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(cluster = %name, error = %e, "push: cannot read the credential");
                continue;
            }
        };
        let Some(credential) = credential else {
            tracing::warn!(cluster = %name, "push: no usable Secret {PUSH_SECRET} in {}; `atoll join --sync-mode Push` makes it", cluster_namespace(&name));
            continue;
        };
        let mut map = running.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&name).is_some_and(|p| p.credential == credential) {
            continue;
        }
        if let Some(old) = map.remove(&name) {
            old.task.abort();
        }
        let task = tokio::spawn(push(
            hub.clone(),
            hub_url.to_string(),
            name.clone(),
            mc.spec.lease_duration_seconds,
            credential.clone(),
        ));
        map.insert(name, Pushing { credential, task });
        drop(map);
    }
}

/// Push one cluster: the works, the lease, the status, the credential's renewal.
async fn push(
    hub: Client,
    hub_url: String,
    name: String,
    lease_seconds: i32,
    credential: Credential,
) {
    let (member, config) = match credential.client() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(cluster = %name, error = %e, "push: the credential is not usable");
            return;
        }
    };
    // Health is probed without the credential (`/readyz` is open to anyone, and a refused
    // token would be refused there too): whether the cluster answers and whether it takes the
    // credential are two questions.
    let mut anonymous = config.clone();
    anonymous.auth_info = Default::default();
    let Ok(prober) = Client::try_from(anonymous) else {
        return;
    };
    tracing::info!(cluster = %name, server = %credential.server, "push: applying the cluster's works from the hub");
    let (_keep, rx) = tokio::sync::watch::channel(hub.clone());
    let resync = Arc::new(tokio::sync::Notify::new());
    let mut cfg = atoll_work::WorkConfig::new(
        cluster_namespace(&name),
        atoll_work::applier_hash(&hub_url, &cluster_namespace(&name)),
        PUSH_HOLDER.into(),
    );
    cfg.workers = 2;
    cfg.resync = Some(resync.clone());
    // The cluster's multi-cluster services, as an agent does them for a Pull cluster.
    let _services = atoll_runtime::AbortOnDrop(atoll_work::services::start(
        &name,
        rx.clone(),
        member.clone(),
    ));
    let works = atoll_work::run(
        rx,
        atoll_work::Member {
            client: member.clone(),
            config,
        },
        cfg,
    );
    let health = async {
        let leases: Api<Lease> = Api::namespaced(hub.clone(), &cluster_namespace(&name));
        let mcs: Api<ManagedCluster> = Api::all(hub.clone());
        let mut last_status: Option<serde_json::Value> = None;
        let mut reported: Option<std::time::Instant> = None;
        let mut credential_ok = true;
        loop {
            // The lease is the hub's to make on acceptance: until it is there, try again soon.
            let mut again = Duration::from_secs(lease_seconds.max(1) as u64);
            let ready = prober
                .request_text(
                    http::Request::get("/readyz")
                        .body(Vec::new())
                        .unwrap_or_default(),
                )
                .await
                .is_ok_and(|t| t.trim() == "ok");
            if ready {
                let renewed = leases
                    .patch(
                        CLUSTER_LEASE,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {
                            "holderIdentity": PUSH_HOLDER,
                            "leaseDurationSeconds": lease_seconds,
                            "renewTime": atoll_runtime::now_micro(),
                        }})),
                    )
                    .await;
                if let Err(e) = renewed {
                    tracing::debug!(cluster = %name, error = %e, "push: cannot renew the lease");
                    again = again.min(Duration::from_millis(200));
                }
                if reported.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    let status = atoll_work::member::cluster_status(&member).await;
                    if last_status.as_ref() != Some(&status)
                        && mcs
                            .patch_status(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(json!({"status": status})),
                            )
                            .await
                            .is_ok()
                    {
                        last_status = Some(status);
                    }
                    reported = Some(std::time::Instant::now());
                }
                renew_credential(&hub, &member, &name, &credential).await;
                // Does the credential still work? If the member stopped taking it, apply
                // every work again now, so each says why it is not applied.
                let api: Api<atoll_api::work::AppliedManifestWork> = Api::all(member.clone());
                match api.list(&kube::api::ListParams::default().limit(1)).await {
                    Err(kube::Error::Api(e)) if e.code == 401 || e.code == 403 => {
                        if credential_ok {
                            tracing::warn!(cluster = %name, reason = %e.message, "push: the member refuses the push credential");
                            resync.notify_one();
                        }
                        credential_ok = false;
                    }
                    Ok(_) => {
                        if !credential_ok {
                            resync.notify_one();
                        }
                        credential_ok = true;
                    }
                    Err(_) => {}
                }
            } else {
                tracing::debug!(cluster = %name, "push: the cluster's /readyz does not answer");
            }
            tokio::time::sleep(again).await;
        }
    };
    tokio::select! {
        r = works => {
            if let Err(e) = r {
                tracing::warn!(cluster = %name, error = %e, "push: the work applier stopped");
            }
        }
        () = health => {}
    }
}

/// At 80% of its life, the credential's account asks for a new token for itself and the
/// Secret gets it (the old one keeps working until it expires).
async fn renew_credential(hub: &Client, member: &Client, name: &str, credential: &Credential) {
    let Some(exp) = credential.expires() else {
        return;
    };
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    // Tokens are asked for a day; renew with a fifth of that left.
    if exp - now > 86_400 / 5 {
        return;
    }
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 86_400}});
    let url =
        format!("/api/v1/namespaces/{PUSH_NAMESPACE}/serviceaccounts/{PUSH_SERVICE_ACCOUNT}/token");
    let Ok(req) = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(request.to_string().into_bytes())
    else {
        return;
    };
    let token = match member.request::<serde_json::Value>(req).await {
        Ok(v) => v["status"]["token"].as_str().map(String::from),
        Err(e) => {
            tracing::warn!(cluster = %name, error = %e, "push: cannot renew the credential");
            return;
        }
    };
    let Some(token) = token else { return };
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), &cluster_namespace(name));
    let patch = json!({"data": {"token": base64::engine::general_purpose::STANDARD.encode(token)}});
    if let Err(e) = secrets
        .patch(PUSH_SECRET, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::warn!(cluster = %name, error = %e, "push: cannot store the renewed credential");
    } else {
        tracing::info!(cluster = %name, "push: renewed the credential");
    }
}

/// The rules of the member's `atoll:work-applier` ClusterRole: what a work may create, by
/// kind, and never `*/*/*`; more by ClusterRoles labelled
/// `work.atoll.io/aggregate-to-work-applier: "true"`.
pub fn work_applier_rules() -> serde_json::Value {
    let rw = json!([
        "get", "list", "watch", "create", "update", "patch", "delete"
    ]);
    json!([
        {"apiGroups": [""], "resources": ["namespaces", "configmaps", "secrets", "services", "serviceaccounts",
            "persistentvolumeclaims", "resourcequotas", "limitranges", "endpoints"], "verbs": rw},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"], "verbs": rw},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": rw},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": rw},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "networkpolicies"], "verbs": rw},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": rw},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": rw},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": rw},
        {"apiGroups": ["work.atoll.io"], "resources": ["appliedmanifestworks", "appliedmanifestworks/status"], "verbs": rw},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["about.k8s.io"], "resources": ["clusterproperties"], "verbs": ["get", "list", "watch"]},
        // Multi-cluster services: the cluster's exports read (their status written), its
        // imports made, and events about them.
        {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceexports"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceexports/status", "serviceimports", "serviceimports/status"], "verbs": rw},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        // Works with an executor run as it: the applier may take on service accounts.
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
    ])
}

/// Install what a member needs to be pushed to: the AppliedManifestWork and MCS CRDs, the
/// `atoll:work-applier` ClusterRole, ServiceAccount `atoll-push` bound to it (and allowed to
/// renew its own token); returns a token for it.
pub async fn prepare_member(member: &Client) -> Result<String, Error> {
    atoll_work::install(member)
        .await
        .map_err(|e| Error::Invalid(e.to_string()))?;
    // The MCS CRDs too: the push credential may not write CRDs.
    atoll_work::services::install(member)
        .await
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let pp = PatchParams::apply(MANAGER).force();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PUSH_NAMESPACE}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(member.clone())
        .patch(PUSH_NAMESPACE, &pp, &Patch::Apply(&ns))
        .await?;
    let aggregated = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": WORK_APPLIER_ROLE, "labels": {"app.kubernetes.io/managed-by": MANAGER}},
        "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"work.atoll.io/aggregate-to-work-applier": "true"}}]},
        "rules": []});
    let base = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": format!("{WORK_APPLIER_ROLE}:base"),
                     "labels": {"work.atoll.io/aggregate-to-work-applier": "true", "app.kubernetes.io/managed-by": MANAGER}},
        "rules": work_applier_rules()});
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(member.clone());
    roles
        .patch(
            &format!("{WORK_APPLIER_ROLE}:base"),
            &pp,
            &Patch::Apply(&base),
        )
        .await?;
    roles
        .patch(WORK_APPLIER_ROLE, &pp, &Patch::Apply(&aggregated))
        .await?;
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": PUSH_SERVICE_ACCOUNT, "namespace": PUSH_NAMESPACE}});
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(member.clone(), PUSH_NAMESPACE)
        .patch(PUSH_SERVICE_ACCOUNT, &pp, &Patch::Apply(&sa))
        .await?;
    let subject = json!([{"kind": "ServiceAccount", "name": PUSH_SERVICE_ACCOUNT, "namespace": PUSH_NAMESPACE}]);
    let crb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{WORK_APPLIER_ROLE}:{PUSH_SERVICE_ACCOUNT}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": WORK_APPLIER_ROLE},
        "subjects": subject});
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(member.clone())
        .patch(
            &format!("{WORK_APPLIER_ROLE}:{PUSH_SERVICE_ACCOUNT}"),
            &pp,
            &Patch::Apply(&crb),
        )
        .await?;
    let renew = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "atoll:push-token", "namespace": PUSH_NAMESPACE},
        "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": [PUSH_SERVICE_ACCOUNT], "verbs": ["create"]}]});
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(member.clone(), PUSH_NAMESPACE)
        .patch("atoll:push-token", &pp, &Patch::Apply(&renew))
        .await?;
    let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "atoll:push-token", "namespace": PUSH_NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "atoll:push-token"},
        "subjects": subject});
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(member.clone(), PUSH_NAMESPACE)
        .patch("atoll:push-token", &pp, &Patch::Apply(&rb))
        .await?;
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 86_400}});
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{PUSH_NAMESPACE}/serviceaccounts/{PUSH_SERVICE_ACCOUNT}/token"
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(request.to_string().into_bytes())
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let answer: serde_json::Value = member.request(req).await?;
    answer["status"]["token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| Error::Invalid("the member gave no token for atoll-push".into()))
}

/// Store a Push cluster's credential in its hub namespace (made here if the hub has not yet).
pub async fn store_credential(hub: &Client, name: &str, c: &Credential) -> Result<(), Error> {
    let ns = cluster_namespace(name);
    let pp = PatchParams::apply("atoll-join").force();
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(hub.clone())
        .patch(&ns, &pp, &Patch::Apply(&namespace))
        .await?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": PUSH_SECRET, "namespace": ns},
        "data": {"server": b64(&c.server), "ca.crt": b64(&c.ca_pem), "token": b64(&c.token)}});
    Api::<Secret>::namespaced(hub.clone(), &ns)
        .patch(PUSH_SECRET, &pp, &Patch::Apply(&secret))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_reads_its_expiry_and_the_role_is_not_a_wildcard() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"exp": 1700000000, "sub": "x"}"#);
        let c = Credential {
            server: "https://127.0.0.1:1".into(),
            ca_pem: String::new(),
            token: format!("h.{payload}.s"),
        };
        assert_eq!(c.expires(), Some(1_700_000_000));
        let rules = work_applier_rules();
        for r in rules.as_array().unwrap() {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    !r[field].as_array().unwrap().iter().any(|v| v == "*"),
                    "no wildcards: {r}"
                );
            }
        }
    }
}
