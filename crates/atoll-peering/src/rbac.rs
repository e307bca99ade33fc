//! What peering identities may do on a provider, and nothing more:
//!
//! - a peering token (group `system:bootstrappers:atoll:peering`): create a CSR and read it
//!   back, and read this cluster's public peering facts (`kube-public/atoll-peering`);
//! - a peer (`system:atoll:peer:<id>`, group `system:atoll:peers`): the same, to renew, plus
//!   in its tenant namespace its ResourceRequests and NamespaceOffloadings (read-only offers),
//!   and in each namespace offloaded for it pods (with log, exec and attach), ConfigMaps,
//!   Secrets, ServiceAccounts, Services and EndpointSlices (`atoll:peer-workloads`, bound per
//!   namespace by `provider::namespaces`).

use atoll_api::peering::{MANAGER, PEERING_BOOTSTRAP_GROUP, PEERS_GROUP, peer_user};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{Error, INFO_CONFIGMAP};

pub(crate) const BOOTSTRAP_ROLE: &str = "atoll:peering-bootstrap";
pub(crate) const TENANT_ROLE: &str = "atoll:peer-tenant";
pub(crate) const WORKLOADS_ROLE: &str = "atoll:peer-workloads";

const ALL: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];

async fn apply<K>(api: &Api<K>, name: &str, obj: Value) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await?;
    Ok(())
}

pub(crate) async fn install(client: &Client) -> Result<(), Error> {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    apply(&roles, BOOTSTRAP_ROLE, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": BOOTSTRAP_ROLE},
        "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["create", "get"]}],
    })).await?;
    apply(&bindings, BOOTSTRAP_ROLE, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": BOOTSTRAP_ROLE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": BOOTSTRAP_ROLE},
        "subjects": [
            {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": PEERING_BOOTSTRAP_GROUP},
            {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": PEERS_GROUP},
        ],
    })).await?;
    apply(&roles, TENANT_ROLE, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": TENANT_ROLE},
        "rules": [
            {"apiGroups": ["peering.atoll.io"], "resources": ["resourcerequests", "namespaceoffloadings"], "verbs": ALL},
            {"apiGroups": ["peering.atoll.io"], "resources": ["resourceoffers"], "verbs": ["get", "list", "watch"]},
        ],
    })).await?;
    apply(&roles, WORKLOADS_ROLE, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": WORKLOADS_ROLE},
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "configmaps", "secrets", "serviceaccounts", "services"], "verbs": ALL},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods/exec", "pods/attach"], "verbs": ["get", "create"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ALL},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        ],
    })).await?;
    let info_roles: Api<Role> = Api::namespaced(client.clone(), "kube-public");
    let info_bindings: Api<RoleBinding> = Api::namespaced(client.clone(), "kube-public");
    apply(&info_roles, "atoll:peering-info", json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "atoll:peering-info", "namespace": "kube-public"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [INFO_CONFIGMAP], "verbs": ["get"]}],
    })).await?;
    apply(&info_bindings, "atoll:peering-info", json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "atoll:peering-info", "namespace": "kube-public"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "atoll:peering-info"},
        "subjects": [
            {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": PEERING_BOOTSTRAP_GROUP},
            {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": PEERS_GROUP},
        ],
    })).await?;
    Ok(())
}

/// Bind consumer `consumer`'s identity to `role` in `namespace`.
pub(crate) async fn bind(
    client: &Client,
    namespace: &str,
    role: &str,
    consumer: &str,
) -> Result<(), Error> {
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    apply(&bindings, role, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": role, "namespace": namespace,
                     "labels": {atoll_api::peering::TENANT_LABEL: consumer}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": peer_user(consumer)}],
    })).await
}

/// The one cluster-scoped right of a peer: to delete its own tenant namespace on the provider,
/// which ends the peering there (`atoll peer remove` on the consumer); named per consumer.
pub(crate) fn leave_role(consumer: &str) -> String {
    format!("atoll:peer:{consumer}")
}

pub(crate) async fn bind_leave(client: &Client, consumer: &str) -> Result<(), Error> {
    let name = leave_role(consumer);
    let labels = json!({atoll_api::peering::TENANT_LABEL: consumer});
    let roles: Api<ClusterRole> = Api::all(client.clone());
    apply(&roles, &name, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"],
                   "resourceNames": [atoll_api::peering::tenant_namespace(consumer)], "verbs": ["get", "delete"]}],
    })).await?;
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    apply(&bindings, &name, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": peer_user(consumer)}],
    })).await
}

/// Remove consumer `consumer`'s cluster-scoped right.
pub(crate) async fn unbind_leave(client: &Client, consumer: &str) -> Result<(), Error> {
    let name = leave_role(consumer);
    for r in [
        Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&name, &Default::default())
            .await
            .map(|_| ()),
        Api::<ClusterRole>::all(client.clone())
            .delete(&name, &Default::default())
            .await
            .map(|_| ()),
    ] {
        match r {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
