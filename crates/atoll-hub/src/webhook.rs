//! The hub's admission webhooks, so the rules hold on a real kube-apiserver as on Atoll's:
//!
//! - **ManagedCluster, mutating**: a cluster without a `cluster.atoll.io/clusterset` label gets
//!   `default` (or, created by a bootstrap identity minted for a set, that set); a new or
//!   changed taint gets `timeAdded` now (a taint kept as it was keeps its time), so
//!   `tolerationSeconds` count from when it appeared.
//! - **ManagedCluster, validating**: setting `hubAcceptsClient` needs `update` on
//!   `managedclusters/accept`; changing the clusterset label needs `create` on
//!   `managedclustersets/join` for the old and the new set; a bootstrap identity may put its
//!   cluster only in `default` or in the set its token names (beyond Open Cluster Management,
//!   whose bootstrap role may join any set).
//! - **ManagedClusterSetBinding**: its name must be its `spec.clusterSet` (400); creating one
//!   needs `create` on `managedclustersets/bind` for that set.
//! - **Bootstrap token Secrets in kube-system**: a token whose extra groups name a set
//!   (`atoll hub token --clusterset SET`) may be minted only by someone who may join SET.
//! - **ManifestWorks and ManifestWorkReplicaSets**: a work has manifests (400 otherwise); one
//!   naming an executor needs `execute-as` on `manifestworks` for that service account
//!   (a replica set's template too: the hub makes its works, not the requester).
//!
//! Checks are SubjectAccessReviews for the requesting user, `failurePolicy: Fail`: with the hub
//! down these writes are refused rather than unchecked. Served over HTTPS with a self-signed
//! certificate whose PEM is each configuration's `caBundle`; the URL must be one the API server
//! reaches (the hub's loopback address next to an embedded server, a Service on a real cluster).

use std::net::SocketAddr;
use std::sync::Arc;

use atoll_api::clusterset::{BOOTSTRAP_SET_GROUP_PREFIX, CLUSTERSET_LABEL, DEFAULT_SET};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

use crate::{Error, MANAGER};

const VALIDATE_CLUSTER: &str = "/validate-managedcluster";
const MUTATE_CLUSTER: &str = "/mutate-managedcluster";
const VALIDATE_BINDING: &str = "/validate-managedclustersetbinding";
const VALIDATE_TOKEN: &str = "/validate-bootstrap-token";
const VALIDATE_WORK: &str = "/validate-manifestwork";
/// The most a review may be. A review of an update carries the object twice (and, for a
/// dry run or a patch, in JSON the API server may have grown), so a ManifestWork as large as
/// the API server accepts (3 MiB on kube-apiserver and ours) must fit twice with room over.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Serve the webhooks on `listen` and register them with the API server; returns the base URL.
/// With `hub`, `explain` is served too, to callers with a client certificate of `client_ca`
/// (PEM) or a bearer token.
pub async fn start(
    client: Client,
    listen: SocketAddr,
    host: Option<String>,
    hub: Option<Arc<crate::Hub>>,
    client_ca: Option<String>,
) -> Result<String, Error> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Invalid(format!("cannot listen on {listen} for the webhook: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let host = host.unwrap_or_else(|| addr.ip().to_string());
    let cert = rcgen::generate_simple_self_signed(vec![host.clone()])
        .map_err(|e| Error::Invalid(format!("webhook certificate: {e}")))?;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(cert.cert.pem());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    // Client certificates are optional (the API server calls the webhooks without one) and,
    // when presented, verified against the cluster's CA: they identify `explain`'s callers.
    let builder = match &client_ca {
        Some(pem) => {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let c = c.map_err(|e| Error::Invalid(format!("the client CA: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| Error::Invalid(format!("the client CA: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::Invalid(format!("the client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(|e| Error::Invalid(format!("webhook certificate: {e}")))?;
    let serving = client.clone();
    let explaining = hub.clone();
    tokio::spawn(atoll_runtime::https::serve(
        listener,
        Arc::new(config),
        move |tls| {
            let serving = serving.clone();
            let explaining = explaining.clone();
            let certified = tls
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| atoll_runtime::certificate_subject(c.as_ref()))
                .map(|(user, mut groups)| {
                    groups.push("system:authenticated".into());
                    crate::explain::Caller { user, groups }
                });
            move |req: hyper::Request<hyper::body::Incoming>| {
                let client = serving.clone();
                let explaining = explaining.clone();
                let certified = certified.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let authorization = req
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from);
                    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
                        .collect()
                        .await
                    {
                        Ok(b) => b.to_bytes(),
                        Err(_) => {
                            // Refused in words, not as an unreadable review.
                            let answer = Answer::deny(
                                413,
                                "RequestEntityTooLarge",
                                format!(
                                    "the admission review is larger than the hub webhook's limit of {MAX_BODY} bytes"
                                ),
                            );
                            return review_response(&Value::Null, answer);
                        }
                    };
                    if path == crate::explain::PATH
                        && let Some(hub) = explaining
                    {
                        let caller = match &authorization {
                            Some(a) => crate::explain::caller_of_token(&client, a).await,
                            None => certified,
                        };
                        let (code, answer) = crate::explain::handle(&hub, caller, &body).await;
                        let mut resp =
                            hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
                        *resp.status_mut() =
                            http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        return resp;
                    }
                    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let answer = match path.as_str() {
                        VALIDATE_CLUSTER => validate_cluster(&client, &request).await,
                        MUTATE_CLUSTER => mutate_cluster(&request),
                        VALIDATE_BINDING => validate_binding(&client, &request).await,
                        VALIDATE_TOKEN => validate_token(&client, &request).await,
                        VALIDATE_WORK => validate_work(&client, &request).await,
                        _ => Answer::deny(404, "NotFound", format!("no webhook at {path}")),
                    };
                    review_response(&request, answer)
                }
            }
        },
    ));
    let base = format!("https://{host}:{}", addr.port());
    register(client.clone(), &base, &ca_bundle).await?;
    if hub.is_some() {
        crate::explain::publish(
            &client,
            &format!("{base}{}", crate::explain::PATH),
            &cert.cert.pem(),
        )
        .await?;
    }
    Ok(base)
}

fn review_response(request: &Value, answer: Answer) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(answer.review(request).to_string())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The webhook configurations, pointing at `base`.
async fn register(client: Client, base: &str, ca_bundle: &str) -> Result<(), Error> {
    let hook = |name: &str, path: &str, rules: Value| {
        json!({
            "name": name,
            "clientConfig": {"url": format!("{base}{path}"), "caBundle": ca_bundle},
            "rules": rules,
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        })
    };
    let clusters = json!([{"operations": ["CREATE", "UPDATE"], "apiGroups": ["cluster.atoll.io"],
                           "apiVersions": ["*"], "resources": ["managedclusters"], "scope": "Cluster"}]);
    let bindings = json!([{"operations": ["CREATE", "UPDATE"], "apiGroups": ["cluster.atoll.io"],
                           "apiVersions": ["*"], "resources": ["managedclustersetbindings"], "scope": "Namespaced"}]);
    let secrets = json!([{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
                          "apiVersions": ["v1"], "resources": ["secrets"], "scope": "Namespaced"}]);
    let works = json!([{"operations": ["CREATE", "UPDATE"], "apiGroups": ["work.atoll.io"],
                        "apiVersions": ["*"], "resources": ["manifestworks", "manifestworkreplicasets"], "scope": "Namespaced"}]);
    let mut token_hook = hook("bootstrap-tokens.cluster.atoll.io", VALIDATE_TOKEN, secrets);
    // Only kube-system, where bootstrap tokens live: the hub is not in the way of other Secrets.
    token_hook["namespaceSelector"] =
        json!({"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}});
    let validating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "atoll-hub"},
        "webhooks": [
            hook("managedclusters.cluster.atoll.io", VALIDATE_CLUSTER, clusters.clone()),
            hook("managedclustersetbindings.cluster.atoll.io", VALIDATE_BINDING, bindings),
            token_hook,
            hook("manifestworks.work.atoll.io", VALIDATE_WORK, works),
        ],
    });
    let mut mutating_hook = hook("managedclusters.cluster.atoll.io", MUTATE_CLUSTER, clusters);
    mutating_hook["reinvocationPolicy"] = json!("Never");
    let mutating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "atoll-hub"},
        "webhooks": [mutating_hook],
    });
    let pp = PatchParams::apply(MANAGER).force();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch("atoll-hub", &pp, &Patch::Apply(&mutating))
        .await?;
    Api::<ValidatingWebhookConfiguration>::all(client)
        .patch("atoll-hub", &pp, &Patch::Apply(&validating))
        .await?;
    Ok(())
}

/// A webhook's verdict.
#[derive(Debug, PartialEq)]
pub struct Answer {
    allowed: bool,
    code: u16,
    reason: &'static str,
    message: String,
    /// A JSON patch (mutating webhooks).
    patch: Option<Value>,
}

impl Answer {
    fn allow() -> Answer {
        Answer {
            allowed: true,
            code: 200,
            reason: "",
            message: String::new(),
            patch: None,
        }
    }

    fn deny(code: u16, reason: &'static str, message: String) -> Answer {
        Answer {
            allowed: false,
            code,
            reason,
            message,
            patch: None,
        }
    }

    fn forbidden(message: String) -> Answer {
        Answer::deny(403, "Forbidden", message)
    }

    fn review(&self, request: &Value) -> Value {
        let mut response = json!({
            "uid": request["request"]["uid"], "allowed": self.allowed,
            "status": {"code": self.code, "reason": self.reason, "message": self.message},
        });
        if let Some(p) = &self.patch {
            response["patchType"] = json!("JSONPatch");
            response["patch"] =
                json!(base64::engine::general_purpose::STANDARD.encode(p.to_string()));
        }
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    }
}

fn username(req: &Value) -> String {
    req["userInfo"]["username"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn groups(req: &Value) -> Vec<String> {
    req["userInfo"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(String::from))
        .collect()
}

/// A bootstrap identity's sets: `default`, and those its token's extra groups name. `None` for
/// any other identity.
pub fn bootstrap_sets(groups: &[String]) -> Option<Vec<String>> {
    if !groups.iter().any(|g| g == "system:bootstrappers") {
        return None;
    }
    let mut sets = vec![DEFAULT_SET.to_string()];
    sets.extend(
        groups
            .iter()
            .filter_map(|g| g.strip_prefix(BOOTSTRAP_SET_GROUP_PREFIX))
            .filter(|s| !s.is_empty())
            .map(String::from),
    );
    Some(sets)
}

/// Ask the API server whether the requester of `req` may do `attributes`.
async fn may(client: &Client, req: &Value, attributes: Value) -> bool {
    let sar: Result<SubjectAccessReview, _> = serde_json::from_value(json!({
        "spec": {
            "user": username(req),
            "groups": req["userInfo"]["groups"],
            "extra": req["userInfo"]["extra"],
            "uid": req["userInfo"]["uid"],
            "resourceAttributes": attributes,
        }
    }));
    match sar {
        Ok(sar) => Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .ok()
            .and_then(|r| r.status)
            .is_some_and(|s| s.allowed),
        Err(_) => false,
    }
}

fn join(set: &str) -> Value {
    json!({"group": "cluster.atoll.io", "resource": "managedclustersets",
           "subresource": "join", "verb": "create", "name": set})
}

fn label_of(obj: &Value) -> Option<&str> {
    obj["metadata"]["labels"][CLUSTERSET_LABEL]
        .as_str()
        .filter(|s| !s.is_empty())
}

/// The mutation of a ManagedCluster create or update: the clusterset label defaulted, taints'
/// `timeAdded` stamped. Pure: the time is given.
pub fn cluster_patch(req: &Value, now: &str) -> Option<Value> {
    let obj = &req["object"];
    let old = &req["oldObject"];
    let mut ops = Vec::new();
    if label_of(obj).is_none() {
        // A bootstrap identity's token may name the set it joins into.
        let set = bootstrap_sets(&groups(req))
            .and_then(|s| s.into_iter().nth(1))
            .unwrap_or_else(|| DEFAULT_SET.to_string());
        if obj["metadata"]["labels"].is_object() {
            ops.push(json!({"op": "add", "path": "/metadata/labels/cluster.atoll.io~1clusterset", "value": set}));
        } else {
            ops.push(
                json!({"op": "add", "path": "/metadata/labels", "value": {CLUSTERSET_LABEL: set}}),
            );
        }
    }
    if let Some(taints) = obj["spec"]["taints"].as_array() {
        let before: Vec<&Value> = old["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let same = |a: &Value, b: &Value| {
            a["key"] == b["key"]
                && a["effect"] == b["effect"]
                && a["value"].as_str().unwrap_or_default()
                    == b["value"].as_str().unwrap_or_default()
        };
        let stamped: Vec<Value> = taints
            .iter()
            .map(|t| {
                let mut t = t.clone();
                let kept = before
                    .iter()
                    .find(|b| same(b, &t))
                    .and_then(|b| b.get("timeAdded").cloned())
                    .filter(|v| v.is_string());
                t["timeAdded"] = kept.unwrap_or_else(|| json!(now));
                t
            })
            .collect();
        if stamped.as_slice() != taints.as_slice() {
            ops.push(json!({"op": "replace", "path": "/spec/taints", "value": stamped}));
        }
    }
    (!ops.is_empty()).then_some(Value::Array(ops))
}

fn mutate_cluster(request: &Value) -> Answer {
    let req = &request["request"];
    if !req.is_object() {
        return Answer::deny(400, "BadRequest", "not an AdmissionReview request".into());
    }
    let mut a = Answer::allow();
    a.patch = cluster_patch(req, &crate::now_rfc3339());
    a
}

async fn validate_cluster(client: &Client, request: &Value) -> Answer {
    let req = &request["request"];
    if !req.is_object() {
        return Answer::deny(400, "BadRequest", "not an AdmissionReview request".into());
    }
    let user = username(req);
    let name = req["name"]
        .as_str()
        .or_else(|| req["object"]["metadata"]["name"].as_str())
        .unwrap_or_default()
        .to_string();
    // Acceptance.
    let turns_on = req["object"]["spec"]["hubAcceptsClient"] == true
        && req["oldObject"]["spec"]["hubAcceptsClient"] != true;
    if turns_on {
        let accept = json!({"group": "cluster.atoll.io", "resource": "managedclusters",
                            "subresource": "accept", "verb": "update", "name": name});
        if !may(client, req, accept).await {
            return Answer::forbidden(format!(
                "{user} may not accept cluster {name}: setting spec.hubAcceptsClient needs `update` on `managedclusters/accept` (cluster.atoll.io)"
            ));
        }
    }
    // Set membership.
    let new = label_of(&req["object"]);
    let old = label_of(&req["oldObject"]);
    if let Some(sets) = bootstrap_sets(&groups(req)) {
        let set = new.unwrap_or(DEFAULT_SET);
        if !sets.iter().any(|s| s == set) {
            return Answer::forbidden(format!(
                "{user} is a bootstrap identity: it may put cluster {name} only in cluster set {} (the set `atoll hub token --clusterset SET` minted it for), not in {set}; needs `create` on `managedclustersets/join` for {set} otherwise",
                sets.join(" or ")
            ));
        }
        return Answer::allow();
    }
    if new != old {
        for set in [old, new].into_iter().flatten() {
            if !may(client, req, join(set)).await {
                return Answer::forbidden(format!(
                    "{user} may not move cluster {name} {}: that needs `create` on `managedclustersets/join` (cluster.atoll.io) for cluster set {set}",
                    match (old, new) {
                        (Some(o), Some(n)) => format!("from cluster set {o} to {n}"),
                        (None, Some(n)) => format!("into cluster set {n}"),
                        (Some(o), None) => format!("out of cluster set {o}"),
                        (None, None) => String::new(),
                    }
                ));
            }
        }
    }
    Answer::allow()
}

/// A binding's name must be its set's (400 otherwise): pure.
pub fn binding_name_matches(req: &Value) -> Result<(), String> {
    let name = req["object"]["metadata"]["name"]
        .as_str()
        .or_else(|| req["name"].as_str())
        .unwrap_or_default();
    let set = req["object"]["spec"]["clusterSet"]
        .as_str()
        .unwrap_or_default();
    if name != set {
        return Err(format!(
            "ManagedClusterSetBinding {name:?}: metadata.name must equal spec.clusterSet ({set:?}); name the binding after the set it binds"
        ));
    }
    Ok(())
}

async fn validate_binding(client: &Client, request: &Value) -> Answer {
    let req = &request["request"];
    if !req.is_object() {
        return Answer::deny(400, "BadRequest", "not an AdmissionReview request".into());
    }
    if let Err(why) = binding_name_matches(req) {
        return Answer::deny(400, "BadRequest", why);
    }
    if req["operation"] != "CREATE" {
        return Answer::allow();
    }
    let set = req["object"]["spec"]["clusterSet"]
        .as_str()
        .unwrap_or_default();
    let ns = req["namespace"].as_str().unwrap_or_default();
    let bind = json!({"group": "cluster.atoll.io", "resource": "managedclustersets",
                      "subresource": "bind", "verb": "create", "name": set});
    if may(client, req, bind).await {
        Answer::allow()
    } else {
        Answer::forbidden(format!(
            "{} may not bind cluster set {set} to namespace {ns}: that needs `create` on `managedclustersets/bind` (cluster.atoll.io) for cluster set {set}",
            username(req)
        ))
    }
}

/// The sets a bootstrap token Secret's extra groups name (pure; `data` base64 or `stringData`).
pub fn token_sets(secret: &Value) -> Vec<String> {
    if secret["type"] != "bootstrap.kubernetes.io/token" {
        return Vec::new();
    }
    let groups = secret["stringData"]["auth-extra-groups"]
        .as_str()
        .map(String::from)
        .or_else(|| {
            secret["data"]["auth-extra-groups"].as_str().and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .ok()
                    .and_then(|v| String::from_utf8(v).ok())
            })
        })
        .unwrap_or_default();
    groups
        .split(',')
        .filter_map(|g| g.trim().strip_prefix(BOOTSTRAP_SET_GROUP_PREFIX))
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

async fn validate_token(client: &Client, request: &Value) -> Answer {
    let req = &request["request"];
    if !req.is_object() {
        return Answer::deny(400, "BadRequest", "not an AdmissionReview request".into());
    }
    for set in token_sets(&req["object"]) {
        if !may(client, req, join(&set)).await {
            return Answer::forbidden(format!(
                "{} may not mint a bootstrap token that joins clusters into cluster set {set}: that needs `create` on `managedclustersets/join` (cluster.atoll.io) for {set}",
                username(req)
            ));
        }
    }
    Answer::allow()
}

/// What a ManifestWork (or a replica set's template) asks for that needs checking: the
/// executor it runs as, if it names one anew, and whether it has manifests. Pure.
pub fn work_checks(req: &Value) -> Result<Option<String>, String> {
    let replica_set = req["kind"]["kind"] == "ManifestWorkReplicaSet";
    let spec = |o: &Value| {
        if replica_set {
            o["spec"]["manifestWorkTemplate"].clone()
        } else {
            o["spec"].clone()
        }
    };
    let new = spec(&req["object"]);
    let old = spec(&req["oldObject"]);
    let manifests = new["workload"]["manifests"].as_array().map_or(0, Vec::len);
    if manifests == 0 && !replica_set {
        return Err(
            "spec.workload.manifests is empty: a ManifestWork needs at least one manifest".into(),
        );
    }
    let executor = |s: &Value| {
        let sa = &s["executor"]["subject"]["serviceAccount"];
        match (sa["namespace"].as_str(), sa["name"].as_str()) {
            (Some(ns), Some(n)) => Some(format!("system:serviceaccount:{ns}:{n}")),
            _ => None,
        }
    };
    let wanted = executor(&new);
    Ok(wanted.filter(|w| Some(w) != executor(&old).as_ref() || req["operation"] == "CREATE"))
}

async fn validate_work(client: &Client, request: &Value) -> Answer {
    let req = &request["request"];
    if !req.is_object() {
        return Answer::deny(400, "BadRequest", "not an AdmissionReview request".into());
    }
    let executor = match work_checks(req) {
        Ok(e) => e,
        Err(why) => return Answer::deny(400, "BadRequest", why),
    };
    let Some(executor) = executor else {
        return Answer::allow();
    };
    let ns = req["namespace"].as_str().unwrap_or_default();
    let attrs = json!({"group": "work.atoll.io", "resource": "manifestworks", "verb": "execute-as",
                       "namespace": ns, "name": executor});
    if may(client, req, attrs).await {
        Answer::allow()
    } else {
        Answer::forbidden(format!(
            "{} may not have works run as {executor}: that needs `execute-as` on `manifestworks` (work.atoll.io) named {executor} in namespace {ns}",
            username(req)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        // Nothing listens there: a check that needs the API server is refused.
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("a URL"));
        Client::try_from(config).expect("a client")
    }

    #[tokio::test]
    async fn only_turning_acceptance_on_is_checked_and_garbage_is_refused() {
        let client = client();
        let r = validate_cluster(&client, &Value::Null).await;
        assert!(!r.allowed);
        let unchanged = json!({"request": {"uid": "u1", "name": "c", "object": {"spec": {"hubAcceptsClient": true}, "metadata": {"labels": {CLUSTERSET_LABEL: "default"}}}, "oldObject": {"spec": {"hubAcceptsClient": true}, "metadata": {"labels": {CLUSTERSET_LABEL: "default"}}}}});
        let r = validate_cluster(&client, &unchanged).await;
        assert!(r.allowed, "{r:?}");
        assert_eq!(r.review(&unchanged)["response"]["uid"], "u1");
        let turns_on = json!({"request": {"uid": "u2", "name": "c", "userInfo": {"username": "mallory"}, "object": {"spec": {"hubAcceptsClient": true}}, "oldObject": {"spec": {"hubAcceptsClient": false}}}});
        let r = validate_cluster(&client, &turns_on).await;
        assert!(!r.allowed, "no SubjectAccessReview answer: refused");
        assert_eq!(r.code, 403);
        // Moving a cluster between sets without an answer: refused, naming the permission.
        let moves = json!({"request": {"uid": "u3", "name": "c", "userInfo": {"username": "bob"},
            "object": {"metadata": {"labels": {CLUSTERSET_LABEL: "prod"}}},
            "oldObject": {"metadata": {"labels": {CLUSTERSET_LABEL: "default"}}}}});
        let r = validate_cluster(&client, &moves).await;
        assert!(!r.allowed);
        assert!(
            r.message.contains("managedclustersets/join"),
            "{}",
            r.message
        );
    }

    #[tokio::test]
    async fn a_bootstrap_identity_joins_only_default_or_its_tokens_set() {
        let client = client();
        let create = |groups: Value, set: &str| {
            json!({"request": {"uid": "u", "name": "m1", "operation": "CREATE",
                "userInfo": {"username": "system:bootstrap:abcdef", "groups": groups},
                "object": {"metadata": {"name": "m1", "labels": {CLUSTERSET_LABEL: set}}}}})
        };
        let plain = json!(["system:bootstrappers", "system:bootstrappers:atoll"]);
        let for_prod = json!([
            "system:bootstrappers",
            "system:bootstrappers:atoll",
            "system:bootstrappers:atoll:clusterset:prod"
        ]);
        assert!(
            validate_cluster(&client, &create(plain.clone(), "default"))
                .await
                .allowed
        );
        let r = validate_cluster(&client, &create(plain, "prod")).await;
        assert!(!r.allowed, "OCM would let it in; Atoll does not");
        assert!(
            r.message.contains("only in cluster set default"),
            "{}",
            r.message
        );
        assert!(
            validate_cluster(&client, &create(for_prod.clone(), "prod"))
                .await
                .allowed
        );
        assert!(
            !validate_cluster(&client, &create(for_prod, "dev"))
                .await
                .allowed
        );
    }

    #[test]
    fn clusters_get_their_set_label_and_taint_times() {
        let now = "2026-12-01T00:00:00Z";
        // No labels at all: the default set.
        let req = json!({"userInfo": {"groups": ["system:masters"]}, "object": {"metadata": {"name": "m"}}});
        assert_eq!(
            cluster_patch(&req, now).unwrap(),
            json!([{"op": "add", "path": "/metadata/labels", "value": {CLUSTERSET_LABEL: "default"}}])
        );
        // A bootstrap identity minted for prod lands in prod.
        let req = json!({"userInfo": {"groups": ["system:bootstrappers", "system:bootstrappers:atoll:clusterset:prod"]},
                         "object": {"metadata": {"name": "m", "labels": {"a": "b"}}}});
        assert_eq!(cluster_patch(&req, now).unwrap()[0]["value"], "prod");
        // Labelled, no taints: nothing to do.
        let req = json!({"object": {"metadata": {"labels": {CLUSTERSET_LABEL: "x"}}}});
        assert_eq!(cluster_patch(&req, now), None);
        // A kept taint keeps its time (whatever the client sent), a new one is stamped now.
        let req = json!({
            "object": {"metadata": {"labels": {CLUSTERSET_LABEL: "x"}}, "spec": {"taints": [
                {"key": "old", "effect": "NoSelect", "timeAdded": "1999-01-01T00:00:00Z"},
                {"key": "new", "effect": "NoSelect"}]}},
            "oldObject": {"spec": {"taints": [{"key": "old", "effect": "NoSelect", "timeAdded": "2026-11-30T00:00:00Z"}]}},
        });
        let p = cluster_patch(&req, now).unwrap();
        assert_eq!(p[0]["value"][0]["timeAdded"], "2026-11-30T00:00:00Z");
        assert_eq!(p[0]["value"][1]["timeAdded"], now);
    }

    #[test]
    fn works_need_manifests_and_new_executors_are_checked() {
        let work = |exec: Option<&str>, manifests: usize| {
            let mut spec =
                json!({"workload": {"manifests": vec![json!({"kind": "ConfigMap"}); manifests]}});
            if let Some(e) = exec {
                spec["executor"] = json!({"subject": {"type": "ServiceAccount", "serviceAccount": {"namespace": "apps", "name": e}}});
            }
            json!({"spec": spec})
        };
        let create = |o: Value| json!({"operation": "CREATE", "kind": {"kind": "ManifestWork"}, "object": o});
        assert!(
            work_checks(&create(work(None, 0)))
                .unwrap_err()
                .contains("at least one manifest")
        );
        assert_eq!(work_checks(&create(work(None, 1))), Ok(None));
        assert_eq!(
            work_checks(&create(work(Some("deployer"), 1))),
            Ok(Some("system:serviceaccount:apps:deployer".into()))
        );
        let update = json!({"operation": "UPDATE", "kind": {"kind": "ManifestWork"},
            "object": work(Some("deployer"), 2), "oldObject": work(Some("deployer"), 1)});
        assert_eq!(
            work_checks(&update),
            Ok(None),
            "the same executor is not checked again"
        );
        let mwrs = json!({"operation": "CREATE", "kind": {"kind": "ManifestWorkReplicaSet"},
            "object": {"spec": {"manifestWorkTemplate": work(Some("x"), 1)["spec"]}}});
        assert_eq!(
            work_checks(&mwrs),
            Ok(Some("system:serviceaccount:apps:x".into()))
        );
    }

    #[test]
    fn bindings_are_named_after_their_set_and_tokens_name_sets() {
        let ok = json!({"object": {"metadata": {"name": "prod"}, "spec": {"clusterSet": "prod"}}});
        assert!(binding_name_matches(&ok).is_ok());
        let bad = json!({"object": {"metadata": {"name": "mine"}, "spec": {"clusterSet": "prod"}}});
        assert!(
            binding_name_matches(&bad)
                .unwrap_err()
                .contains("must equal spec.clusterSet")
        );

        let token = json!({"type": "bootstrap.kubernetes.io/token", "data": {
            "auth-extra-groups": base64::engine::general_purpose::STANDARD
                .encode("system:bootstrappers:atoll,system:bootstrappers:atoll:clusterset:prod")}});
        assert_eq!(token_sets(&token), vec!["prod".to_string()]);
        let other = json!({"type": "Opaque", "stringData": {"auth-extra-groups": "system:bootstrappers:atoll:clusterset:prod"}});
        assert!(token_sets(&other).is_empty());
    }
}
