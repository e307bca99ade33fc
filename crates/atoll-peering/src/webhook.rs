//! The pod mutating webhook of offloaded namespaces: a NamespaceOffloading's
//! `podOffloadingStrategy` becomes each new pod's toleration of the virtual-node taint and its
//! node affinity, as Liqo's webhook does, so ordinary manifests need no change:
//! - `LocalAndRemote`: the toleration (the scheduler then picks any node);
//! - `Remote`: the toleration and a required affinity for virtual nodes (of the
//!   `clusterSelector`, when there is one);
//! - `Local`: a required affinity against virtual nodes.
//!
//! The consumer's controllers label each namespace that has a NamespaceOffloading with
//! [`STRATEGY_LABEL`]; the webhook is called for those namespaces only.

use std::sync::Arc;

use atoll_api::peering::{NODE_TYPE_LABEL, NODE_TYPE_VIRTUAL, PodOffloading, VIRTUAL_NODE_TAINT};
use base64::Engine;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::NodeSelector;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

use crate::Error;

/// Label on a consumer namespace with a NamespaceOffloading: its pod offloading strategy.
pub const STRATEGY_LABEL: &str = "peering.atoll.io/pod-offloading";
const PATH: &str = "/mutate-pods";
const NAME: &str = "atoll-peering";

/// The JSON patch that makes `pod` follow `strategy`, or `None` when it already does.
pub fn mutate(
    pod: &Value,
    strategy: PodOffloading,
    selector: Option<&NodeSelector>,
) -> Option<Value> {
    let spec = &pod["spec"];
    let mut ops = Vec::new();
    if strategy != PodOffloading::Local {
        let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
        let tolerated = tolerations.iter().any(|t| {
            (t["key"] == VIRTUAL_NODE_TAINT || (t["key"].is_null() && t["operator"] == "Exists"))
                && (t["effect"].is_null() || t["effect"] == "NoExecute")
        });
        if !tolerated {
            tolerations.push(
                json!({"key": VIRTUAL_NODE_TAINT, "operator": "Exists", "effect": "NoExecute"}),
            );
            ops.push(json!({"op": "add", "path": "/spec/tolerations", "value": tolerations}));
        }
    }
    let requirement = match strategy {
        PodOffloading::LocalAndRemote => None,
        PodOffloading::Remote => {
            Some(json!({"key": NODE_TYPE_LABEL, "operator": "In", "values": [NODE_TYPE_VIRTUAL]}))
        }
        PodOffloading::Local => Some(
            json!({"key": NODE_TYPE_LABEL, "operator": "NotIn", "values": [NODE_TYPE_VIRTUAL]}),
        ),
    };
    if let Some(req) = requirement {
        let mut affinity = spec["affinity"].clone();
        if !affinity.is_object() {
            affinity = json!({});
        }
        let required =
            &mut affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        let mut terms = required["nodeSelectorTerms"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if terms.is_empty() {
            terms.push(json!({}));
        }
        // The cluster selector's terms, for Remote: each pod term with each selector term.
        let selector_terms: Vec<Value> = match (strategy, selector) {
            (PodOffloading::Remote, Some(s)) if !s.node_selector_terms.is_empty() => s
                .node_selector_terms
                .iter()
                .map(|t| serde_json::to_value(t).unwrap_or_default())
                .collect(),
            _ => vec![json!({})],
        };
        let mut out = Vec::new();
        for term in &terms {
            for extra in &selector_terms {
                let mut t = term.clone();
                let mut exprs = t["matchExpressions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if exprs.iter().any(|e| e == &req)
                    && selector_terms.len() == 1
                    && extra == &json!({})
                {
                    out.push(t);
                    continue;
                }
                exprs.push(req.clone());
                exprs.extend(
                    extra["matchExpressions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
                t["matchExpressions"] = json!(exprs);
                out.push(t);
            }
        }
        if out != terms {
            *required = json!({"nodeSelectorTerms": out});
            ops.push(json!({"op": "add", "path": "/spec/affinity", "value": affinity}));
        }
    }
    (!ops.is_empty()).then_some(Value::Array(ops))
}

/// What the webhook needs to know of a namespace: its strategy and cluster selector.
pub(crate) type Lookup =
    dyn Fn(&str) -> Option<(PodOffloading, Option<NodeSelector>)> + Send + Sync;

/// Serve the webhook on loopback and register it with the API server of `client`.
pub(crate) async fn start(client: &Client, lookup: Arc<Lookup>) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(Error::config)?;
    let port = listener.local_addr().map_err(Error::config)?.port();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).map_err(Error::config)?;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(cert.cert.pem());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::config)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(Error::config)?;
    tokio::spawn(atoll_runtime::https::serve(
        listener,
        Arc::new(config),
        move |_| {
            let lookup = lookup.clone();
            move |req: hyper::Request<hyper::body::Incoming>| {
                let lookup = lookup.clone();
                async move {
                    let body = match req.into_body().collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(_) => Bytes::new(),
                    };
                    let answer = review(&body, &*lookup);
                    let mut r = Response::new(Full::new(Bytes::from(answer.to_string())));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    if answer.get("response").is_none() {
                        *r.status_mut() = StatusCode::BAD_REQUEST;
                    }
                    r
                }
            }
        },
    ));
    let hook = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [{
            "name": "pods.peering.atoll.io",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}{PATH}"), "caBundle": ca_bundle},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [{"key": STRATEGY_LABEL, "operator": "Exists"}]},
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5, "reinvocationPolicy": "Never",
        }],
    });
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(
            NAME,
            &PatchParams::apply(atoll_api::peering::MANAGER).force(),
            &Patch::Apply(&hook),
        )
        .await?;
    Ok(())
}

/// The AdmissionReview answer to `body`.
fn review(body: &[u8], lookup: &Lookup) -> Value {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return json!({"error": "not an AdmissionReview"});
    };
    let uid = request["request"]["uid"].clone();
    let ns = request["request"]["namespace"].as_str().unwrap_or_default();
    let mut response = json!({"uid": uid, "allowed": true});
    if let Some((strategy, selector)) = lookup(ns)
        && let Some(patch) = mutate(&request["request"]["object"], strategy, selector.as_ref())
    {
        response["patchType"] = json!("JSONPatch");
        response["patch"] =
            json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(pod: &Value, patch: Option<Value>) -> Value {
        let mut pod = pod.clone();
        for op in patch
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = op["path"].as_str().unwrap_or_default();
            let key = path.trim_start_matches("/spec/");
            pod["spec"][key] = op["value"].clone();
        }
        pod
    }

    #[test]
    fn strategies_become_tolerations_and_affinity() {
        let pod = json!({"spec": {"containers": [{"name": "c"}]}});
        let both = apply(&pod, mutate(&pod, PodOffloading::LocalAndRemote, None));
        assert_eq!(both["spec"]["tolerations"][0]["key"], VIRTUAL_NODE_TAINT);
        assert!(both["spec"]["affinity"].is_null());
        // Already right: nothing to do.
        assert_eq!(mutate(&both, PodOffloading::LocalAndRemote, None), None);

        let remote = apply(&pod, mutate(&pod, PodOffloading::Remote, None));
        let terms = &remote["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        assert_eq!(terms[0]["matchExpressions"][0]["operator"], "In");
        assert_eq!(remote["spec"]["tolerations"][0]["key"], VIRTUAL_NODE_TAINT);
        assert_eq!(mutate(&remote, PodOffloading::Remote, None), None);

        let local = apply(&pod, mutate(&pod, PodOffloading::Local, None));
        let terms = &local["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        assert_eq!(terms[0]["matchExpressions"][0]["operator"], "NotIn");
        assert!(local["spec"]["tolerations"].is_null());

        // A selector narrows Remote to the virtual nodes it matches; the pod's own terms stay.
        let selector: NodeSelector = serde_json::from_value(json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}))
        .unwrap();
        let own = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}]}}}}});
        let narrowed = apply(&own, mutate(&own, PodOffloading::Remote, Some(&selector)));
        let exprs = &narrowed["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"];
        let keys: Vec<&str> = exprs
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["disk", NODE_TYPE_LABEL, "zone"]);
    }

    #[test]
    fn reviews_answer_with_a_patch_or_plainly() {
        let lookup: Box<Lookup> =
            Box::new(|ns: &str| (ns == "shop").then_some((PodOffloading::LocalAndRemote, None)));
        let req = |ns: &str| {
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1", "namespace": ns, "object": {"spec": {"containers": []}}}})
            .to_string()
        };
        let a = review(req("shop").as_bytes(), &*lookup);
        assert_eq!(a["response"]["uid"], "u1");
        assert_eq!(a["response"]["patchType"], "JSONPatch");
        let b = review(req("other").as_bytes(), &*lookup);
        assert_eq!(b["response"]["allowed"], true);
        assert!(b["response"].get("patch").is_none());
        assert!(review(b"nonsense", &*lookup).get("response").is_none());
    }
}
