//! The consumer's virtual node for a provider, as a pure function of the provider's offers and
//! whether it answers: capacity = allocatable = what the offers grant (extended resources
//! included), the virtual-node labels and taint, and `Ready` only while the provider is
//! reachable, an offer is live and it grants some CPU and memory (as Liqo's node is Ready only
//! with both).

use std::collections::BTreeMap;

use atoll_api::peering::{
    NODE_TYPE_LABEL, NODE_TYPE_VIRTUAL, REMOTE_CLUSTER_ID_LABEL, VIRTUAL_NODE_TAINT,
};
use k8s_openapi::api::core::v1::{NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};

use crate::grant::{self, Amounts};

/// What the node is made from.
pub struct Inputs<'a> {
    pub node_name: &'a str,
    pub provider_id: &'a str,
    /// The sum of the provider's live offers.
    pub granted: &'a Amounts,
    /// Labels and taints the offers ask for.
    pub labels: &'a BTreeMap<String, String>,
    pub taints: &'a [Taint],
    /// Why the node may not be Ready, if it may not: `(reason, message)`.
    pub not_ready: Option<(&'a str, String)>,
    /// The virtual kubelet's endpoint (port, SHA-256 of its certificate), where the API server
    /// asks for logs and exec.
    pub kubelet: Option<(u16, &'a str)>,
}

/// Why a node with these inputs is not Ready, given what is known about the provider.
pub fn not_ready_reason(
    provider: &str,
    reachable: Result<(), String>,
    granted: &Amounts,
    live_offers: usize,
) -> Option<(&'static str, String)> {
    if let Err(why) = reachable {
        return Some((
            "ProviderUnreachable",
            format!("provider {provider} does not answer: {why}"),
        ));
    }
    if live_offers == 0 {
        return Some((
            "NoLiveOffer",
            format!(
                "provider {provider} has no live offer (expired or withdrawn): run `atoll peer request {provider}` again"
            ),
        ));
    }
    let none = |k: &str| granted.get(k).copied().unwrap_or(0) == 0;
    if none("cpu") || none("memory") {
        return Some((
            "NoResources",
            format!("provider {provider} grants no CPU or no memory"),
        ));
    }
    None
}

/// The Node's labels.
pub fn labels(inputs: &Inputs) -> BTreeMap<String, String> {
    let mut l = inputs.labels.clone();
    for (k, v) in [
        (NODE_TYPE_LABEL, NODE_TYPE_VIRTUAL),
        (REMOTE_CLUSTER_ID_LABEL, inputs.provider_id),
        ("type", "virtual-kubelet"),
        ("kubernetes.io/role", "agent"),
        ("kubernetes.io/hostname", inputs.node_name),
        ("kubernetes.io/os", "linux"),
        (
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "true",
        ),
    ] {
        l.insert(k.into(), v.into());
    }
    l
}

/// The Node's taints: the virtual-node one, then the offers'.
pub fn taints(inputs: &Inputs) -> Vec<Taint> {
    let mut t = vec![Taint {
        key: VIRTUAL_NODE_TAINT.into(),
        value: Some("true".into()),
        effect: "NoExecute".into(),
        time_added: None,
    }];
    for x in inputs.taints {
        if !t.iter().any(|y| y.key == x.key && y.effect == x.effect) {
            t.push(Taint {
                time_added: None,
                ..x.clone()
            });
        }
    }
    t
}

/// The node's capacity (= allocatable).
pub fn resources(granted: &Amounts) -> BTreeMap<String, Quantity> {
    grant::resource_list(granted)
}

/// The `Ready` condition (`lastTransitionTime` kept by the caller when the status holds).
pub fn ready_condition(
    inputs: &Inputs,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> NodeCondition {
    let (status, reason, message) = match &inputs.not_ready {
        None => (
            "True",
            "ProviderReady".to_string(),
            format!(
                "the resources of provider {} are offered",
                inputs.provider_id
            ),
        ),
        Some((reason, message)) => ("False", reason.to_string(), message.clone()),
    };
    NodeCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(reason),
        message: Some(message),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The Node object to create (spec and metadata; status is posted separately).
pub fn node(inputs: &Inputs) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": inputs.node_name, "labels": labels(inputs),
                     "annotations": inputs.kubelet.map(|(_, sha)| json!({atoll_api::KUBELET_SERVING_CERT_ANNOTATION: sha}))},
        "spec": {"taints": taints(inputs)},
    })
}

/// The Node's status.
pub fn status(inputs: &Inputs, ready: NodeCondition) -> Value {
    let res = resources(inputs.granted);
    json!({
        "capacity": res,
        "allocatable": res,
        "conditions": [ready],
        "addresses": match inputs.kubelet {
            Some(_) => json!([{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": inputs.node_name}]),
            None => json!([{"type": "Hostname", "address": inputs.node_name}]),
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": inputs.kubelet.map_or(0, |(p, _)| p)}},
        "nodeInfo": {
            "architecture": std::env::consts::ARCH, "operatingSystem": "linux",
            "osImage": format!("Atoll virtual node (provider {})", inputs.provider_id),
            "kernelVersion": "", "kubeletVersion": "v1.33.0-atoll", "kubeProxyVersion": "",
            "containerRuntimeVersion": format!("atoll-peering://{}", atoll_api::ATOLL_VERSION),
            "machineID": "", "systemUUID": "", "bootID": "",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(cpu: i64, mem: i64) -> Amounts {
        Amounts::from([
            ("cpu".into(), cpu),
            ("memory".into(), mem),
            ("nvidia.com/gpu".into(), 1),
        ])
    }

    #[test]
    fn the_node_offers_exactly_the_grant() {
        let granted = amounts(2000, 4 << 30);
        let labels = BTreeMap::from([("zone".to_string(), "b".to_string())]);
        let extra = [Taint {
            key: "dedicated".into(),
            value: Some("peers".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }];
        let inputs = Inputs {
            node_name: "atoll-member2",
            provider_id: "member2",
            granted: &granted,
            labels: &labels,
            taints: &extra,
            not_ready: None,
            kubelet: Some((10250, "ab")),
        };
        let node = node(&inputs);
        assert_eq!(
            node["metadata"]["annotations"][atoll_api::KUBELET_SERVING_CERT_ANNOTATION],
            "ab"
        );
        assert_eq!(node["metadata"]["labels"]["atoll.io/type"], "virtual-node");
        assert_eq!(
            node["metadata"]["labels"]["atoll.io/remote-cluster-id"],
            "member2"
        );
        assert_eq!(node["metadata"]["labels"]["zone"], "b");
        assert_eq!(node["spec"]["taints"][0]["key"], VIRTUAL_NODE_TAINT);
        assert_eq!(node["spec"]["taints"][0]["effect"], "NoExecute");
        assert_eq!(node["spec"]["taints"][1]["key"], "dedicated");
        let now = atoll_runtime::now();
        let status = status(&inputs, ready_condition(&inputs, &now));
        assert_eq!(
            status["capacity"],
            json!({"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"})
        );
        assert_eq!(status["allocatable"], status["capacity"]);
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        assert_eq!(status["addresses"][0]["address"], "127.0.0.1");
    }

    #[test]
    fn not_ready_says_why() {
        let some = amounts(1000, 1 << 30);
        let cases = [
            (
                Err("connection refused".to_string()),
                some.clone(),
                1,
                Some("ProviderUnreachable"),
            ),
            (Ok(()), some.clone(), 0, Some("NoLiveOffer")),
            (Ok(()), amounts(0, 1 << 30), 1, Some("NoResources")),
            (Ok(()), some, 1, None),
        ];
        for (reach, granted, live, want) in cases {
            let got = not_ready_reason("member2", reach, &granted, live);
            assert_eq!(got.as_ref().map(|(r, _)| *r), want);
            if let Some((_, message)) = got {
                assert!(message.contains("member2"), "{message}");
            }
        }
    }
}
