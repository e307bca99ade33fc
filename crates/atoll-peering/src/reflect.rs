//! Pods across a peering, as pure functions: the provider's copy of a consumer pod bound to a
//! virtual node, and the consumer pod's status from the copy's.
//!
//! The copy keeps what the pod runs (containers, volumes, security context, restart policy)
//! and drops what only made sense in the consumer: its node, scheduling constraints aimed at
//! the virtual node, the consumer's service-account token volume (the provider mounts its own),
//! and host namespaces (never granted to a peer). It is labelled with the origin pod's UID, so
//! a stale copy of an earlier pod of the same name is never taken for it.

use atoll_api::peering::{ORIGIN_ANNOTATION, ORIGIN_UID_LABEL, TENANT_LABEL};
use serde_json::{Map, Value, json};

/// Fields of a pod spec that do not travel.
const DROPPED_SPEC: [&str; 11] = [
    "nodeName",
    "nodeSelector",
    "affinity",
    "tolerations",
    "schedulerName",
    "priority",
    "priorityClassName",
    "preemptionPolicy",
    "serviceAccount",
    "topologySpreadConstraints",
    "overhead",
];

/// Whether a volume is the service-account token volume the consumer's API server added.
fn is_token_volume(name: &str) -> bool {
    name.starts_with("kube-api-access-")
}

/// The provider's pod for consumer pod `local` (a JSON Pod) in namespace `remote_ns`.
pub fn remote_pod(local: &Value, remote_ns: &str, consumer_id: &str) -> Value {
    let meta = &local["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let mut labels = meta["labels"].as_object().cloned().unwrap_or_default();
    labels.insert(
        ORIGIN_UID_LABEL.into(),
        json!(meta["uid"].as_str().unwrap_or_default()),
    );
    labels.insert(TENANT_LABEL.into(), json!(consumer_id));
    let mut annotations: Map<String, Value> = meta["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != "kubectl.kubernetes.io/last-applied-configuration")
        .collect();
    annotations.insert(
        ORIGIN_ANNOTATION.into(),
        json!(format!(
            "{}/{name}",
            meta["namespace"].as_str().unwrap_or_default()
        )),
    );
    let mut spec = local["spec"].as_object().cloned().unwrap_or_default();
    for k in DROPPED_SPEC {
        spec.remove(k);
    }
    for k in ["hostNetwork", "hostPID", "hostIPC"] {
        spec.remove(k);
    }
    if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
        volumes.retain(|v| !is_token_volume(v["name"].as_str().unwrap_or_default()));
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs {
                if let Some(Value::Array(mounts)) = c.get_mut("volumeMounts") {
                    mounts.retain(|m| !is_token_volume(m["name"].as_str().unwrap_or_default()));
                }
                if list != "ephemeralContainers" {
                    declare_requests(c);
                }
            }
        }
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": remote_ns, "labels": labels, "annotations": annotations},
        "spec": spec,
    })
}

/// Give a container explicit requests of 0 for the CPU and memory it declares nothing of.
/// The provider's ResourceQuota holds the peer to its grant in requests, and refuses
/// containers that leave them out (Kubernetes' rule); the consumer's scheduler counted such a
/// container as asking for nothing on the virtual node, and the provider now counts it the
/// same, so the two sides agree on what the grant holds.
fn declare_requests(c: &mut Value) {
    let limits = c.pointer("/resources/limits").cloned();
    for k in ["cpu", "memory"] {
        if limits.as_ref().and_then(|l| l.get(k)).is_some()
            || c.pointer(&format!("/resources/requests/{k}")).is_some()
        {
            continue;
        }
        if !c["resources"].is_object() {
            c["resources"] = json!({});
        }
        if !c["resources"]["requests"].is_object() {
            c["resources"]["requests"] = json!({});
        }
        c["resources"]["requests"][k] = json!("0");
    }
}

/// The consumer pod's status from its copy's: phase, conditions, IPs, container states, with
/// each container's restart count raised by how often the copy had to be created again.
pub fn local_status(remote_status: &Value, recreations: i64) -> Value {
    let mut out = Map::new();
    for k in [
        "phase",
        "conditions",
        "message",
        "reason",
        "podIP",
        "podIPs",
        "hostIP",
        "hostIPs",
        "startTime",
        "containerStatuses",
        "initContainerStatuses",
        "qosClass",
    ] {
        if let Some(v) = remote_status.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if recreations > 0 {
        for list in ["containerStatuses", "initContainerStatuses"] {
            if let Some(Value::Array(cs)) = out.get_mut(list) {
                for c in cs {
                    let n = c["restartCount"].as_i64().unwrap_or(0);
                    c["restartCount"] = json!(n + recreations);
                }
            }
        }
    }
    Value::Object(out)
}

/// Whether the copy's status is worth writing to the consumer pod: not while the copy is
/// merely scheduled and not started (the consumer's scheduler already says the pod is
/// placed, and a write for that step would double the writes of a thousand pods starting);
/// an unschedulable copy, or a container waiting for a reason, is worth saying.
pub fn worth_reflecting(remote_status: &Value) -> bool {
    if remote_status["phase"].as_str() != Some("Pending") {
        return true;
    }
    let scheduled = remote_status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "True");
    let containers = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .any(|k| remote_status[*k].as_array().is_some_and(|a| !a.is_empty()));
    !scheduled || containers || remote_status.get("reason").is_some()
}

/// The status of a consumer pod whose provider does not answer: not Ready, nor its
/// containers (so its endpoints leave the consumer's Services), the rest kept.
pub fn unreachable_status(local_status: &Value, provider: &str, now: &str) -> Value {
    let mut conditions = local_status["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for type_ in ["Ready", "ContainersReady"] {
        let c = json!({
            "type": type_, "status": "False", "reason": "ProviderUnreachable",
            "message": format!("provider {provider} of this pod's virtual node does not answer"),
            "lastTransitionTime": now,
        });
        match conditions.iter_mut().find(|x| x["type"] == type_) {
            Some(x) if x["status"] == "False" && x["reason"] == "ProviderUnreachable" => {}
            Some(x) => *x = c,
            None => conditions.push(c),
        }
    }
    let mut out = json!({"conditions": conditions});
    if let Some(cs) = local_status["containerStatuses"].as_array() {
        let cs: Vec<Value> = cs
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c["ready"] = json!(false);
                c
            })
            .collect();
        out["containerStatuses"] = json!(cs);
    }
    out
}

/// Whether a provider pod is the copy of consumer pod `uid`.
pub fn is_copy_of(remote: &Value, uid: &str) -> bool {
    remote["metadata"]["labels"][ORIGIN_UID_LABEL].as_str() == Some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "web"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "a"}},
            "spec": {
                "nodeName": "atoll-member2", "nodeSelector": {"atoll.io/type": "virtual-node"},
                "tolerations": [{"key": "virtual-node.atoll.io/not-allowed", "operator": "Exists"}],
                "hostNetwork": true, "serviceAccountName": "default", "restartPolicy": "Always",
                "containers": [{"name": "c", "image": "busybox", "command": ["httpd"],
                                "volumeMounts": [{"name": "kube-api-access-abc", "mountPath": "/var/run/secrets"},
                                                 {"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "kube-api-access-abc", "projected": {}}, {"name": "data", "emptyDir": {}}],
            },
        })
    }

    #[test]
    fn the_copy_keeps_what_runs_and_drops_what_was_local() {
        let copy = remote_pod(&local(), "shop-member1", "member1");
        assert_eq!(copy["metadata"]["namespace"], "shop-member1");
        assert_eq!(copy["metadata"]["name"], "web-1");
        assert_eq!(copy["metadata"]["labels"]["app"], "web");
        assert_eq!(copy["metadata"]["labels"][ORIGIN_UID_LABEL], "u-1");
        assert_eq!(copy["metadata"]["labels"][TENANT_LABEL], "member1");
        assert_eq!(
            copy["metadata"]["annotations"][ORIGIN_ANNOTATION],
            "shop/web-1"
        );
        assert_eq!(copy["metadata"]["annotations"]["team"], "a");
        assert!(
            copy["metadata"]["annotations"]
                .get("kubectl.kubernetes.io/last-applied-configuration")
                .is_none()
        );
        let spec = &copy["spec"];
        for gone in ["nodeName", "nodeSelector", "tolerations", "hostNetwork"] {
            assert!(spec.get(gone).is_none(), "{gone}");
        }
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["volumes"], json!([{"name": "data", "emptyDir": {}}]));
        assert_eq!(
            spec["containers"][0]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/data"}])
        );
        assert!(is_copy_of(&copy, "u-1"));
        assert!(!is_copy_of(&copy, "u-2"));
        assert_eq!(
            spec["containers"][0]["resources"],
            json!({"requests": {"cpu": "0", "memory": "0"}}),
            "what the consumer's scheduler counted as nothing is declared as nothing"
        );
    }

    #[test]
    fn a_copy_only_scheduled_is_not_worth_a_write() {
        for (status, worth) in [
            (json!({"phase": "Running"}), true),
            (
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}),
                false,
            ),
            (
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}),
                true,
            ),
            (
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "ErrImagePull"}}}]}),
                true,
            ),
            (json!({"phase": "Pending"}), true),
            (json!({"phase": "Failed"}), true),
        ] {
            assert_eq!(worth_reflecting(&status), worth, "{status}");
        }
    }

    #[test]
    fn declared_requests_and_limits_are_kept() {
        let mut pod = local();
        pod["spec"]["containers"][0]["resources"] =
            json!({"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}});
        let copy = remote_pod(&pod, "shop-member1", "member1");
        assert_eq!(
            copy["spec"]["containers"][0]["resources"],
            json!({"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}})
        );
    }

    #[test]
    fn status_comes_back_with_restarts_of_recreated_copies() {
        let remote = json!({
            "phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "c", "ready": true, "restartCount": 1}],
            "nominatedNodeName": "x",
        });
        let s = local_status(&remote, 2);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.1.0.5");
        assert_eq!(s["containerStatuses"][0]["restartCount"], 3);
        assert!(s.get("nominatedNodeName").is_none());
        let u = unreachable_status(&s, "member2", "2026-12-01T00:00:00Z");
        let c = u["conditions"].as_array().expect("conditions");
        let ready = c.iter().find(|x| x["type"] == "Ready").expect("Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "ProviderUnreachable");
        assert_eq!(c.len(), 2);
        assert_eq!(u["containerStatuses"][0]["ready"], false);
        // Once not ready, the same answer: nothing to write again.
        let mut again = s.clone();
        again["conditions"] = u["conditions"].clone();
        assert_eq!(
            unreachable_status(&again, "member2", "later")["conditions"],
            u["conditions"]
        );
    }
}
