//! Services across a peering, as pure functions: the provider's copy of a Service of an
//! offloaded namespace, and the provider's copy of its EndpointSlices holding the endpoints
//! that are not in the provider already.
//!
//! The copy of a Service keeps its selector, so the provider's own EndpointSlice controller
//! lists the offloaded pods' copies (they carry the pods' labels); the consumer's pods that run
//! elsewhere (locally, or offloaded to another provider) come as reflected EndpointSlices, so
//! the Service in the provider reaches every pod the consumer's does. What is specific to the
//! consumer's cluster (its ClusterIPs, node ports, load balancer status) stays there.

use atoll_api::peering::{ORIGIN_ANNOTATION, TENANT_LABEL};
use serde_json::{Map, Value, json};

/// The manager of reflected EndpointSlices (the provider's controller leaves them alone).
pub const SLICE_MANAGER: &str = "peering.atoll.io";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// Service spec fields that travel as they are.
const KEPT_SPEC: [&str; 7] = [
    "selector",
    "sessionAffinity",
    "sessionAffinityConfig",
    "publishNotReadyAddresses",
    "internalTrafficPolicy",
    "trafficDistribution",
    "externalName",
];

fn origin(meta: &Value) -> String {
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default()
    )
}

/// The provider's copy of consumer Service `local` in `remote_ns`.
pub fn remote_service(local: &Value, remote_ns: &str, consumer_id: &str) -> Value {
    let meta = &local["metadata"];
    let mut labels = meta["labels"].as_object().cloned().unwrap_or_default();
    labels.insert(TENANT_LABEL.into(), json!(consumer_id));
    let spec = &local["spec"];
    let mut out = Map::new();
    for k in KEPT_SPEC {
        if let Some(v) = spec.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    let external = spec["type"].as_str() == Some("ExternalName");
    out.insert(
        "type".into(),
        json!(if external {
            "ExternalName"
        } else {
            "ClusterIP"
        }),
    );
    if spec["clusterIP"].as_str() == Some("None") {
        out.insert("clusterIP".into(), json!("None"));
    }
    if let Some(ports) = spec["ports"].as_array() {
        let ports: Vec<Value> = ports
            .iter()
            .map(|p| {
                let mut p = p.as_object().cloned().unwrap_or_default();
                p.remove("nodePort");
                Value::Object(p)
            })
            .collect();
        out.insert("ports".into(), Value::Array(ports));
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": meta["name"], "namespace": remote_ns, "labels": labels,
            "annotations": {ORIGIN_ANNOTATION: origin(meta)},
        },
        "spec": out,
    })
}

/// The name of the provider's copy of slice `name`: a dot keeps it apart from the names the
/// provider's controller generates (`<service>-<random>`).
pub fn slice_name(name: &str, consumer_id: &str) -> String {
    let mut n = format!("{name}.{consumer_id}");
    n.truncate(253);
    n
}

/// The provider's copy of consumer EndpointSlice `local` (of a Service), without the
/// endpoints on `virtual_node` (the provider lists their copies itself); `None` when the slice
/// belongs to no Service or nothing is left of it.
pub fn remote_slice(
    local: &Value,
    remote_ns: &str,
    consumer_id: &str,
    virtual_node: &str,
) -> Option<Value> {
    let meta = &local["metadata"];
    let service = meta["labels"][SERVICE_NAME_LABEL].as_str()?;
    let endpoints: Vec<Value> = local["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["nodeName"].as_str() != Some(virtual_node))
        .map(|e| {
            let mut e = e.as_object().cloned().unwrap_or_default();
            // The pod and node they name are the consumer's.
            e.remove("targetRef");
            e.remove("nodeName");
            Value::Object(e)
        })
        .collect();
    if endpoints.is_empty() {
        return None;
    }
    let name = slice_name(meta["name"].as_str().unwrap_or_default(), consumer_id);
    Some(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": name, "namespace": remote_ns,
            "labels": {SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: SLICE_MANAGER, TENANT_LABEL: consumer_id},
            "annotations": {ORIGIN_ANNOTATION: origin(meta)},
        },
        "addressType": local["addressType"],
        "endpoints": endpoints,
        "ports": local["ports"].as_array().cloned().unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_travels_without_what_is_the_consumers() {
        let local = json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "uid": "u"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
                     "selector": {"app": "web"}, "sessionAffinity": "ClientIP",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
            "status": {"loadBalancer": {}},
        });
        let copy = remote_service(&local, "shop-member1", "member1");
        assert_eq!(
            copy,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "shop-member1",
                             "labels": {"app": "web", TENANT_LABEL: "member1"},
                             "annotations": {ORIGIN_ANNOTATION: "shop/web"}},
                "spec": {"type": "ClusterIP", "selector": {"app": "web"}, "sessionAffinity": "ClientIP",
                         "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            })
        );
        let headless = json!({"metadata": {"name": "db", "namespace": "shop"},
                              "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}});
        assert_eq!(
            remote_service(&headless, "x", "member1")["spec"]["clusterIP"],
            "None"
        );
    }

    #[test]
    fn slices_carry_the_endpoints_the_provider_does_not_have() {
        let local = json!({
            "metadata": {"name": "web-abcde", "namespace": "shop",
                         "labels": {SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: "endpointslice-controller.atoll.io"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["127.1.0.5"], "conditions": {"ready": true}, "nodeName": "member1",
                 "targetRef": {"kind": "Pod", "name": "web-1"}},
                {"addresses": ["127.2.0.9"], "conditions": {"ready": true}, "nodeName": "atoll-member2"},
            ],
        });
        let copy = remote_slice(&local, "shop-member1", "member1", "atoll-member2").unwrap();
        assert_eq!(copy["metadata"]["name"], "web-abcde.member1");
        assert_eq!(copy["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(copy["metadata"]["labels"][MANAGED_BY_LABEL], SLICE_MANAGER);
        assert_eq!(
            copy["endpoints"],
            json!([{"addresses": ["127.1.0.5"], "conditions": {"ready": true}}])
        );
        assert_eq!(copy["ports"], local["ports"]);
        let only_there = json!({"metadata": {"name": "s", "labels": {SERVICE_NAME_LABEL: "web"}},
            "endpoints": [{"addresses": ["127.2.0.9"], "nodeName": "atoll-member2"}]});
        assert_eq!(
            remote_slice(&only_there, "x", "member1", "atoll-member2"),
            None
        );
        let no_service =
            json!({"metadata": {"name": "s"}, "endpoints": [{"addresses": ["1.2.3.4"]}]});
        assert_eq!(
            remote_slice(&no_service, "x", "member1", "atoll-member2"),
            None
        );
    }
}
