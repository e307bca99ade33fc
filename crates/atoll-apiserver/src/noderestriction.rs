//! What a node may touch, as Kubernetes' Node authorizer and `NodeRestriction` admission plugin
//! decide it: a node's identity (`system:node:<name>` in group `system:nodes`) may write only its
//! own Node and its own lease, change the status of and delete only the pods bound to it, and
//! read only the Secrets and ConfigMaps that pods bound to it use.
//!
//! This only narrows: RBAC (ClusterRole `system:node`) must still allow the request. A node
//! agent's credential stolen from one machine then reaches that machine's pods, not the cluster.
//!
//! # Caveats
//! - Which Secrets and ConfigMaps a node may read is worked out per read, from the pods of that
//!   namespace bound to the node (kube-apiserver keeps a graph instead); nodes read them once per
//!   pod start.

use serde_json::Value;

use crate::ApiServer;
use crate::authz::Attributes;
use crate::object::meta_str;
use crate::tls::Identity;

pub const NODES_GROUP: &str = "system:nodes";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node an identity is, if it is one.
pub fn node_of(who: &Identity) -> Option<&str> {
    let name = who.user.strip_prefix("system:node:")?;
    (!name.is_empty() && who.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// Why node `node` may not make this request; `None` if nothing here is against it.
pub fn check_request(server: &ApiServer, node: &str, a: &Attributes) -> Option<String> {
    let writes = matches!(
        a.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    match (a.group.as_str(), a.resource.as_str()) {
        ("", "nodes") if writes => {
            // A create names its object in the body (checked on admission).
            (a.verb != "create" && a.name != node)
                .then(|| format!("node \"{node}\" may only change its own Node object"))
        }
        ("coordination.k8s.io", "leases") if a.namespace == NODE_LEASE_NAMESPACE => {
            (a.verb != "create" && a.name != node && (writes || !a.name.is_empty()))
                .then(|| format!("node \"{node}\" may only use its own lease"))
        }
        ("", "pods") if a.subresource == "status" || a.verb == "delete" => {
            if a.verb == "get" || a.verb == "list" || a.verb == "watch" {
                return None;
            }
            match stored(server, "pods", &a.namespace, &a.name) {
                // Not there: the request will say so itself.
                None => None,
                Some(pod) => (pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node))
                    .then(|| format!("node \"{node}\" may only change pods bound to it")),
            }
        }
        ("", "pods") if a.verb == "deletecollection" => Some(format!(
            "node \"{node}\" may only delete pods bound to it, one by one"
        )),
        // Tokens: the TokenRequest handler holds a node to tokens bound to its own pods.
        ("", "serviceaccounts") if a.subresource == "token" => None,
        ("", kind @ ("secrets" | "configmaps" | "persistentvolumeclaims" | "serviceaccounts")) => {
            if a.name.is_empty() || a.verb != "get" {
                return Some(format!(
                    "node \"{node}\" may only get the {kind} of pods bound to it, by name"
                ));
            }
            (!used_by_pod_of(server, node, &a.namespace, kind, &a.name))
                .then(|| format!("no relationship found between node '{node}' and this object"))
        }
        _ => None,
    }
}

/// Why node `node` may not create `obj` (of `resource` in `group`); `None` if nothing here is
/// against it. Creates carry the object's name in the body, not the request's path.
pub fn check_create(node: &str, group: &str, resource: &str, obj: &Value) -> Option<String> {
    let name = meta_str(obj, "name").unwrap_or_default();
    let namespace = meta_str(obj, "namespace").unwrap_or_default();
    match (group, resource) {
        ("", "nodes") if name != node => {
            Some(format!("node \"{node}\" may not create Node \"{name}\""))
        }
        ("coordination.k8s.io", "leases") if namespace == NODE_LEASE_NAMESPACE && name != node => {
            Some(format!("node \"{node}\" may not create lease \"{name}\""))
        }
        _ => None,
    }
}

/// A stored core object, parsed.
fn stored(server: &ApiServer, resource: &str, namespace: &str, name: &str) -> Option<Value> {
    let rt = server
        .registry
        .snapshot()
        .get("", "v1", resource)
        .cloned()?;
    let entry = server.store.get(&rt.key(Some(namespace), name))?;
    serde_json::from_slice(&entry.value).ok()
}

/// Whether a pod bound to `node` in `namespace` uses the Secret or ConfigMap `name`.
fn used_by_pod_of(server: &ApiServer, node: &str, namespace: &str, kind: &str, name: &str) -> bool {
    let Some(rt) = server.registry.snapshot().get("", "v1", "pods").cloned() else {
        return false;
    };
    let prefix = format!("{}{namespace}/", rt.key_prefix());
    let Ok(page) = server.store.list(&prefix, None, 0, None) else {
        return false;
    };
    let contains = |hay: &[u8], needle: &str| {
        !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    };
    page.items.iter().any(|(_, e)| {
        // Most pods are on other nodes or use other objects: look at the bytes before parsing.
        contains(&e.value, node)
            // (A pod runs as `default` without naming it.)
            && (contains(&e.value, name) || kind == "serviceaccounts")
            && serde_json::from_slice::<Value>(&e.value).is_ok_and(|pod| {
                pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                    && references(&pod, kind, name)
            })
    })
}

/// Whether a pod refers to the Secret (`kind` "secrets"), ConfigMap ("configmaps"), claim
/// ("persistentvolumeclaims") or service account ("serviceaccounts") `name`: in its volumes
/// (projected ones too), its containers' `env` and `envFrom`, (Secrets) its
/// `imagePullSecrets`, or (service accounts) the one it runs as.
pub fn references(pod: &Value, kind: &str, name: &str) -> bool {
    let spec = &pod["spec"];
    let is = |v: &Value| v.as_str() == Some(name);
    let each = |v: &Value| v.as_array().cloned().unwrap_or_default();
    if kind == "serviceaccounts" {
        let account = spec["serviceAccountName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        return account == name;
    }
    if kind == "persistentvolumeclaims" {
        return each(&spec["volumes"])
            .iter()
            .any(|v| is(&v["persistentVolumeClaim"]["claimName"]));
    }
    let secret = kind == "secrets";
    let volumes = each(&spec["volumes"]).into_iter().any(|v| {
        let direct = if secret {
            is(&v["secret"]["secretName"])
        } else {
            is(&v["configMap"]["name"])
        };
        direct
            || each(&v["projected"]["sources"])
                .iter()
                .any(|s| is(&s[if secret { "secret" } else { "configMap" }]["name"]))
    });
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| each(&spec[*k]))
        .any(|c| {
            let (key_ref, from_ref) = if secret {
                ("secretKeyRef", "secretRef")
            } else {
                ("configMapKeyRef", "configMapRef")
            };
            each(&c["env"])
                .iter()
                .any(|e| is(&e["valueFrom"][key_ref]["name"]))
                || each(&c["envFrom"]).iter().any(|e| is(&e[from_ref]["name"]))
        });
    let pull = secret
        && each(&spec["imagePullSecrets"])
            .iter()
            .any(|s| is(&s["name"]));
    volumes || containers || pull
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_is_a_user_in_the_nodes_group() {
        let who = |user: &str, groups: &[&str]| Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert_eq!(node_of(&who("system:node:n1", &[NODES_GROUP])), Some("n1"));
        assert_eq!(node_of(&who("system:node:n1", &[])), None);
        assert_eq!(node_of(&who("alice", &[NODES_GROUP])), None);
    }

    #[test]
    fn references_are_found_wherever_a_pod_names_them() {
        let pod = json!({"spec": {
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol-secret"}},
                {"name": "b", "configMap": {"name": "vol-cm"}},
                {"name": "c", "projected": {"sources": [{"secret": {"name": "proj-secret"}}, {"configMap": {"name": "proj-cm"}}]}},
            ],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-secret"}}]}],
            "containers": [{"name": "c", "env": [
                {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
            ], "envFrom": [{"configMapRef": {"name": "from-cm"}}]}],
            "imagePullSecrets": [{"name": "pull"}],
        }});
        for s in [
            "vol-secret",
            "proj-secret",
            "init-secret",
            "env-secret",
            "pull",
        ] {
            assert!(references(&pod, "secrets", s), "{s}");
            assert!(!references(&pod, "configmaps", s), "{s} is not a ConfigMap");
        }
        for c in ["vol-cm", "proj-cm", "env-cm", "from-cm"] {
            assert!(references(&pod, "configmaps", c), "{c}");
            assert!(!references(&pod, "secrets", c), "{c} is not a Secret");
        }
        assert!(!references(&pod, "secrets", "other"));
        assert!(
            references(&pod, "serviceaccounts", "default"),
            "the implicit account"
        );
        assert!(!references(&pod, "serviceaccounts", "other"));
        let named = json!({"spec": {"serviceAccountName": "bot", "containers": []}});
        assert!(references(&named, "serviceaccounts", "bot"));
        assert!(!references(&named, "serviceaccounts", "default"));
    }

    #[test]
    fn creates_name_the_node_itself() {
        let node = |name: &str| json!({"metadata": {"name": name}});
        assert!(check_create("n1", "", "nodes", &node("n1")).is_none());
        assert!(check_create("n1", "", "nodes", &node("n2")).is_some());
        let lease = |name: &str, ns: &str| json!({"metadata": {"name": name, "namespace": ns}});
        assert!(
            check_create(
                "n1",
                "coordination.k8s.io",
                "leases",
                &lease("n1", "kube-node-lease")
            )
            .is_none()
        );
        assert!(
            check_create(
                "n1",
                "coordination.k8s.io",
                "leases",
                &lease("n2", "kube-node-lease")
            )
            .is_some()
        );
        assert!(
            check_create("n1", "coordination.k8s.io", "leases", &lease("x", "other")).is_none()
        );
    }
}
