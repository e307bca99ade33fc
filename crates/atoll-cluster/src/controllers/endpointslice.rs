//! EndpointSlice: for every Service with a selector, one slice listing the selected pods'
//! addresses with `ready`/`serving`/`terminating` conditions, so clients (and later the
//! multi-cluster service controllers) know which endpoints to use.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::{Ctx, Key};
use crate::Error;
use crate::util::{map_selector_matches, pod_finished, pod_ready};

pub(crate) const MANAGED_BY: &str = "endpointslice-controller.atoll.io";
pub(crate) const MANAGED_BY_SELECTOR: &str =
    "endpointslice.kubernetes.io/managed-by=endpointslice-controller.atoll.io";

/// The Services in a pod's namespace whose selector matches it.
pub(crate) fn services_selecting(ctx: &Ctx, pod: &Pod) -> Vec<Key> {
    let ns = pod.namespace().unwrap_or_default();
    let labels = pod.labels();
    ctx.caches
        .services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|sp| sp.selector.as_ref())
                .is_some_and(|sel| map_selector_matches(sel, labels))
        })
        .map(|s| (ns.clone(), s.name_any()))
        .collect()
}

pub(crate) async fn reconcile(
    ctx: Arc<Ctx>,
    (namespace, name): Key,
) -> Result<Option<Duration>, Error> {
    let Some(svc) = ctx
        .caches
        .services
        .get(&ObjectRef::new(&name).within(&namespace))
    else {
        return Ok(None);
    };
    let Some(spec) = svc.spec.clone() else {
        return Ok(None);
    };
    let Some(selector) = spec.selector.clone().filter(|s| !s.is_empty()) else {
        // Without a selector the endpoints are the user's to manage.
        return Ok(None);
    };
    if svc.metadata.deletion_timestamp.is_some() || spec.type_.as_deref() == Some("ExternalName") {
        return Ok(None);
    }
    let mut pods: Vec<Arc<Pod>> = ctx
        .caches
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|p| map_selector_matches(&selector, p.labels()))
        .filter(|p| !pod_finished(p))
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_some_and(|ip| !ip.is_empty())
        })
        .collect();
    pods.sort_by_key(|p| p.name_any());
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let endpoints: Vec<_> = pods
        .iter()
        .map(|p| {
            let terminating = p.metadata.deletion_timestamp.is_some();
            let serving = pod_ready(p) || publish_not_ready;
            // As Kubernetes' controller: a pod's hostname is its endpoint's when the pod's
            // subdomain names this Service (StatefulSet pods), so DNS has a name per pod.
            let hostname = p
                .spec
                .as_ref()
                .filter(|s| s.subdomain.as_deref() == Some(name.as_str()))
                .and_then(|s| s.hostname.clone())
                .filter(|h| !h.is_empty());
            let mut endpoint = json!({
                "addresses": [p.status.as_ref().and_then(|s| s.pod_ip.clone())],
                "conditions": {"ready": serving && !terminating, "serving": serving, "terminating": terminating},
                "nodeName": p.spec.as_ref().and_then(|s| s.node_name.clone()),
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": p.name_any(), "uid": p.uid()},
            });
            if let Some(h) = hostname {
                endpoint["hostname"] = json!(h);
            }
            endpoint
        })
        .collect();
    let ports: Vec<_> = spec
        .ports
        .iter()
        .flatten()
        .map(|sp| {
            let target = match &sp.target_port {
                None => Some(sp.port),
                Some(IntOrString::Int(n)) => Some(*n),
                Some(IntOrString::String(named)) => pods.iter().find_map(|p| {
                    p.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find(|cp| cp.name.as_deref() == Some(named)).map(|cp| cp.container_port)
                }),
            };
            json!({"name": sp.name.clone().unwrap_or_default(), "port": target, "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())})
        })
        .collect();
    let slice_name = format!(
        "{name}-{}",
        &svc.uid()
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(5)
            .collect::<String>()
    );
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc.uid(), "controller": true, "blockOwnerDeletion": true}],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    });
    let api: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(ctx.client.clone(), &namespace);
    let pp = PatchParams::apply(MANAGED_BY).force();
    match api.patch(&slice_name, &pp, &Patch::Apply(&slice)).await {
        Ok(_) => Ok(None),
        // The Service went away meanwhile.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
