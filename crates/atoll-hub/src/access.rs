//! What a cluster may do on the hub, as RBAC objects the hub owns (server-side apply, so each
//! write states the whole object and is idempotent).
//!
//! For an accepted cluster `<name>` (its agent's certificate carries group
//! `system:atoll:cluster:<name>`):
//! - ClusterRole + ClusterRoleBinding `atoll:cluster:<name>`: get its own ManagedCluster, get and
//!   update its status, create CSRs (renewals);
//! - namespace `atoll-cluster-<name>` with Role + RoleBinding `atoll:cluster`: its own lease,
//!   events, and the works of that namespace (read; their finalizer and status written; deleted
//!   when their time to live after completion is up);
//! - ClusterRole + ClusterRoleBinding `atoll:csr:<name>`: the requesters of the cluster's CSRs
//!   (its bootstrap identity, then its agent) may read those CSRs by name, and no others.
//!
//! Denial deletes the two bindings of the cluster's identity at once; deletion removes all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use atoll_api::cluster::{CLUSTER_LEASE, cluster_group, cluster_namespace};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{Error, MANAGER};

fn apply() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Treat "not there" as done.
fn gone_ok<T>(r: Result<T, kube::Error>) -> Result<(), Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn apply_cluster_role(client: &Client, name: &str, rules: Value) -> Result<(), Error> {
    let api: Api<ClusterRole> = Api::all(client.clone());
    let obj = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": MANAGER}}, "rules": rules});
    api.patch(name, &apply(), &Patch::Apply(&obj)).await?;
    Ok(())
}

pub async fn apply_cluster_role_binding(
    client: &Client,
    name: &str,
    role: &str,
    subjects: Value,
) -> Result<(), Error> {
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    let obj = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": MANAGER}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects});
    api.patch(name, &apply(), &Patch::Apply(&obj)).await?;
    Ok(())
}

fn group(name: &str) -> Value {
    json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": cluster_group(name)}])
}

/// The clusters whose access this process has granted, shared by the controllers: granted once
/// per process (not on every lease renewal), and by whichever controller needs it first (the
/// CSR controller grants an auto-accepted cluster before approving its certificate, so that
/// the agent's first request with it is allowed).
#[derive(Default)]
pub struct Granted(Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>);

impl Granted {
    /// Grant cluster `name` its access unless this process already has; a caller arriving
    /// while another grants waits for it.
    pub async fn ensure(
        &self,
        client: &Client,
        name: &str,
        lease_seconds: i32,
    ) -> Result<(), Error> {
        let cell = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        let mut done = cell.lock().await;
        if !*done {
            grant_cluster(client, name, lease_seconds).await?;
            tracing::debug!(cluster = %name, "granted the cluster's namespace, roles and lease");
            *done = true;
        }
        Ok(())
    }

    /// After a revocation or removal: the next acceptance grants again.
    pub fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// Everything an accepted cluster gets: its namespace, roles, bindings and lease.
pub async fn grant_cluster(client: &Client, name: &str, lease_seconds: i32) -> Result<(), Error> {
    let ns = cluster_namespace(name);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"cluster.atoll.io/cluster-name": name, "app.kubernetes.io/managed-by": MANAGER}}});
    namespaces
        .patch(&ns, &apply(), &Patch::Apply(&namespace))
        .await?;
    // The lease and the roles (at once, they do not depend on each other), then the bindings:
    // once the identity may renew the lease, it is there. The lease is never overwritten here.
    let create_lease = async {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": CLUSTER_LEASE, "namespace": ns},
            "spec": {"leaseDurationSeconds": lease_seconds},
        }))
        .map_err(|e| Error::Invalid(e.to_string()))?;
        match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(Error::from(e)),
        }
    };
    let role = format!("atoll:cluster:{name}");
    let cluster_role = apply_cluster_role(
        client,
        &role,
        json!([
            {"apiGroups": ["cluster.atoll.io"], "resources": ["managedclusters"], "resourceNames": [name], "verbs": ["get"]},
            {"apiGroups": ["cluster.atoll.io"], "resources": ["managedclusters/status"], "resourceNames": [name], "verbs": ["get", "update", "patch"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["create"]},
        ]),
    );
    let ns_role = async {
        let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
        let ns_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "atoll:cluster", "namespace": ns},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [CLUSTER_LEASE], "verbs": ["get", "update", "patch"]},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
            {"apiGroups": ["work.atoll.io"], "resources": ["manifestworks"], "verbs": ["get", "list", "watch", "patch", "update", "delete"]},
            {"apiGroups": ["work.atoll.io"], "resources": ["manifestworks/status"], "verbs": ["get", "update", "patch"]},
            // Its exports (the hub writes their status), and the imports the hub makes for it.
            {"apiGroups": ["networking.atoll.io"], "resources": ["exportedservices"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"apiGroups": ["networking.atoll.io"], "resources": ["exportedservices/status"], "verbs": ["get"]},
            {"apiGroups": ["networking.atoll.io"], "resources": ["importedservices"], "verbs": ["get", "list", "watch"]},
        ]});
        roles
            .patch("atoll:cluster", &apply(), &Patch::Apply(&ns_role))
            .await
            .map(|_| ())
            .map_err(Error::from)
    };
    futures::try_join!(create_lease, cluster_role, ns_role)?;
    let ns_binding = async {
        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "atoll:cluster", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "atoll:cluster"},
            "subjects": group(name)});
        bindings
            .patch("atoll:cluster", &apply(), &Patch::Apply(&binding))
            .await
            .map(|_| ())
            .map_err(Error::from)
    };
    futures::try_join!(
        apply_cluster_role_binding(client, &role, &role, group(name)),
        ns_binding
    )?;
    Ok(())
}

/// Take away what the cluster's identity may do, at once: its two bindings.
pub async fn revoke_cluster(client: &Client, name: &str) -> Result<(), Error> {
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    gone_ok(
        crbs.delete(&format!("atoll:cluster:{name}"), &DeleteParams::default())
            .await,
    )?;
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), &cluster_namespace(name));
    gone_ok(rbs.delete("atoll:cluster", &DeleteParams::default()).await)?;
    Ok(())
}

/// Remove everything the hub made for the cluster.
pub async fn remove_cluster(client: &Client, name: &str) -> Result<(), Error> {
    revoke_cluster(client, name).await?;
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    let crs: Api<ClusterRole> = Api::all(client.clone());
    for n in [format!("atoll:cluster:{name}"), format!("atoll:csr:{name}")] {
        gone_ok(crbs.delete(&n, &DeleteParams::default()).await)?;
        gone_ok(crs.delete(&n, &DeleteParams::default()).await)?;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    gone_ok(
        namespaces
            .delete(&cluster_namespace(name), &DeleteParams::default())
            .await,
    )?;
    Ok(())
}

/// Let `users` read and watch the CSRs `csr_names` of cluster `name` (by name only).
pub async fn grant_csr_reads(
    client: &Client,
    name: &str,
    csr_names: &[String],
    users: &[String],
) -> Result<(), Error> {
    let role = format!("atoll:csr:{name}");
    let subjects: Vec<Value> = users
        .iter()
        .map(|u| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": u}))
        .collect();
    // Both at once: a binding to a role not there yet grants nothing until it is.
    futures::try_join!(
        apply_cluster_role(
            client,
            &role,
            json!([{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                    "resourceNames": csr_names, "verbs": ["get", "list", "watch"]}]),
        ),
        apply_cluster_role_binding(client, &role, &role, Value::Array(subjects))
    )?;
    Ok(())
}
