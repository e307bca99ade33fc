//! The acceptance webhook: only someone allowed to `update` `managedclusters/accept` may set a
//! ManagedCluster's `hubAcceptsClient` to true (as Open Cluster Management's webhook checks).
//!
//! A validating admission webhook on ManagedCluster creates and updates, served over HTTPS with
//! a self-signed certificate whose PEM is the webhook configuration's `caBundle`. For a request
//! that turns acceptance on it asks the API server (SubjectAccessReview) whether the requester
//! may `update` `managedclusters/accept` for that cluster; `failurePolicy: Fail`, so with the
//! hub down nobody can accept. The URL must be one the API server reaches: the hub's address
//! on loopback for the embedded server, or a Service in front of the hub on a real cluster.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

use crate::{Error, MANAGER};

const PATH: &str = "/validate-managedcluster";

/// Serve the webhook on `listen` and register it with the API server; returns the URL.
pub async fn start(
    client: Client,
    listen: SocketAddr,
    host: Option<String>,
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
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .map_err(|e| Error::Invalid(format!("webhook certificate: {e}")))?;
    let serving = client.clone();
    tokio::spawn(atoll_runtime::https::serve(
        listener,
        Arc::new(config),
        move |_| {
            let serving = serving.clone();
            move |req: hyper::Request<hyper::body::Incoming>| {
                let client = serving.clone();
                async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let review = review(&client, &body).await;
                    let mut resp = hyper::Response::new(Full::new(Bytes::from(review.to_string())));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    resp
                }
            }
        },
    ));
    let url = format!("https://{host}:{}{PATH}", addr.port());
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "atoll-hub"},
        "webhooks": [{
            "name": "managedclusters.cluster.atoll.io",
            "clientConfig": {"url": url, "caBundle": ca_bundle},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["cluster.atoll.io"],
                       "apiVersions": ["*"], "resources": ["managedclusters"], "scope": "Cluster"}],
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }],
    });
    configs
        .patch(
            "atoll-hub",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&config),
        )
        .await?;
    Ok(url)
}

/// The AdmissionReview response for a request body.
async fn review(client: &Client, body: &[u8]) -> Value {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let req = &request["request"];
    let uid = req["uid"].clone();
    let respond = |allowed: bool, message: String| {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "response": {"uid": uid, "allowed": allowed,
                            "status": {"code": if allowed { 200 } else { 403 }, "reason": if allowed { "" } else { "Forbidden" }, "message": message}}})
    };
    if !req.is_object() {
        return respond(false, "not an AdmissionReview request".into());
    }
    let turns_on = req["object"]["spec"]["hubAcceptsClient"] == true
        && req["oldObject"]["spec"]["hubAcceptsClient"] != true;
    if !turns_on {
        return respond(true, String::new());
    }
    let name = req["name"]
        .as_str()
        .or_else(|| req["object"]["metadata"]["name"].as_str())
        .unwrap_or_default()
        .to_string();
    let user = req["userInfo"]["username"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let sar: Result<SubjectAccessReview, _> = serde_json::from_value(json!({
        "spec": {
            "user": user,
            "groups": req["userInfo"]["groups"],
            "extra": req["userInfo"]["extra"],
            "uid": req["userInfo"]["uid"],
            "resourceAttributes": {"group": "cluster.atoll.io", "resource": "managedclusters",
                                   "subresource": "accept", "verb": "update", "name": name},
        }
    }));
    let allowed = match sar {
        Ok(sar) => Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .ok()
            .and_then(|r| r.status)
            .is_some_and(|s| s.allowed),
        Err(_) => false,
    };
    if allowed {
        respond(true, String::new())
    } else {
        respond(
            false,
            format!(
                "{user} may not accept cluster {name}: setting spec.hubAcceptsClient needs `update` on `managedclusters/accept` (cluster.atoll.io)"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_turning_acceptance_on_is_checked_and_garbage_is_refused() {
        // Nothing listens there: a review that needed the API server would be refused.
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("a URL"));
        let client = Client::try_from(config).expect("a client");
        let r = review(&client, b"not json").await;
        assert_eq!(r["response"]["allowed"], false);
        let unchanged = br#"{"request": {"uid": "u1", "name": "c", "object": {"spec": {"hubAcceptsClient": true}}, "oldObject": {"spec": {"hubAcceptsClient": true}}}}"#;
        let r = review(&client, unchanged).await;
        assert_eq!(r["response"]["allowed"], true);
        assert_eq!(r["response"]["uid"], "u1");
        let turns_on = br#"{"request": {"uid": "u2", "name": "c", "userInfo": {"username": "mallory"}, "object": {"spec": {"hubAcceptsClient": true}}, "oldObject": {"spec": {"hubAcceptsClient": false}}}}"#;
        let r = review(&client, turns_on).await;
        assert_eq!(
            r["response"]["allowed"], false,
            "no SubjectAccessReview answer: refused"
        );
        assert_eq!(r["response"]["status"]["code"], 403);
    }
}
