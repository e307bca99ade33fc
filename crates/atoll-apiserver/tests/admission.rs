//! Admission webhooks against a real HTTPS webhook server: denial with its message, mutation,
//! the caller's identity, and `failurePolicy` when the webhook is down.

#![allow(clippy::unwrap_used)]

mod common;

use axum::routing::post;
use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};

/// A webhook that denies objects labelled `deny=true` (naming the caller) and annotates
/// everything it mutates.
async fn start_webhook(dir: &std::path::Path) -> (u16, String) {
    let hosts = ["127.0.0.1".to_string(), "svc-hook.default.svc".to_string()];
    let pki = atoll_apiserver::Pki::load_or_create(&dir.join("webhook-pki"), &hosts).unwrap();
    let app = axum::Router::new()
        .route(
            "/validate",
            post(|body: axum::body::Bytes| async move {
                let review: Value = serde_json::from_slice(&body).unwrap();
                let req = &review["request"];
                let denied = req.pointer("/object/metadata/labels/deny") == Some(&json!("true"));
                let user = req.pointer("/userInfo/username").and_then(Value::as_str).unwrap_or_default();
                let mut response = json!({"uid": req["uid"], "allowed": !denied});
                if denied {
                    response["status"] = json!({"message": format!("labelled deny (by {user})"), "code": 403});
                }
                reply(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
            }),
        )
        .route(
            "/mutate",
            post(|body: axum::body::Bytes| async move {
                let review: Value = serde_json::from_slice(&body).unwrap();
                let patch = json!([{"op": "add", "path": "/metadata/annotations", "value": {"mutated": "yes"}}]);
                let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
                reply(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "response": {"uid": review["request"]["uid"], "allowed": true, "patchType": "JSONPatch", "patch": patch}}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(atoll_apiserver::tls::serve(
        listener,
        pki.server_config().unwrap(),
        app,
    ));
    (
        port,
        base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem),
    )
}

fn reply(v: Value) -> impl axum::response::IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
}

fn webhook_config(
    kind: &str,
    name: &str,
    url: &str,
    ca: &str,
    policy: &str,
    selector: Value,
) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name},
        "webhooks": [{
            "name": format!("{name}.test.atoll.io"),
            "clientConfig": {"url": url, "caBundle": ca},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "scope": "Namespaced"}],
            "failurePolicy": policy, "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 2,
            "objectSelector": selector,
        }]
    }))
    .unwrap()
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deny_mutate_and_follow_failure_policy() {
    let h = common::in_process(Default::default()).await;
    let (port, ca) = start_webhook(h.dir.path()).await;
    let gvk = |kind: &str, plural: &str| {
        kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
            plural,
        )
    };
    let validating: Api<DynamicObject> = Api::all_with(
        h.client.clone(),
        &gvk(
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
        ),
    );
    let mutating: Api<DynamicObject> = Api::all_with(
        h.client.clone(),
        &gvk(
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
        ),
    );
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    validating
        .create(
            &PostParams::default(),
            &webhook_config(
                "ValidatingWebhookConfiguration",
                "deny",
                &url("/validate"),
                &ca,
                "Fail",
                json!({}),
            ),
        )
        .await
        .unwrap();
    mutating
        .create(
            &PostParams::default(),
            &webhook_config(
                "MutatingWebhookConfiguration",
                "annotate",
                &url("/mutate"),
                &ca,
                "Fail",
                json!({}),
            ),
        )
        .await
        .unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    let err = cms
        .create(
            &PostParams::default(),
            &cm("denied", json!({"deny": "true"})),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains("labelled deny (by atoll:admin)"),
                "the webhook's message and the caller: {}",
                s.message
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    let ok = cms
        .create(&PostParams::default(), &cm("allowed", json!({})))
        .await
        .unwrap();
    assert_eq!(
        ok.metadata.annotations.unwrap()["mutated"],
        "yes",
        "the mutating webhook's patch was applied"
    );

    // A webhook that is down: Fail refuses, Ignore lets the request through.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = format!("https://127.0.0.1:{closed}/validate");
    validating
        .create(
            &PostParams::default(),
            &webhook_config(
                "ValidatingWebhookConfiguration",
                "down-fail",
                &down,
                &ca,
                "Fail",
                json!({"matchLabels": {"down": "fail"}}),
            ),
        )
        .await
        .unwrap();
    validating
        .create(
            &PostParams::default(),
            &webhook_config(
                "ValidatingWebhookConfiguration",
                "down-ignore",
                &down,
                &ca,
                "Ignore",
                json!({"matchLabels": {"down": "ignore"}}),
            ),
        )
        .await
        .unwrap();
    let err = cms
        .create(
            &PostParams::default(),
            &cm("fails", json!({"down": "fail"})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.message.contains("failed calling webhook")),
        "{err:?}"
    );
    cms.create(
        &PostParams::default(),
        &cm("ignored", json!({"down": "ignore"})),
    )
    .await
    .unwrap();

    // A webhook reached through a Service (its Endpoints), as in-cluster webhooks are.
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc-hook"},
        "spec": {"ports": [{"port": 443, "targetPort": port}]}}))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(h.client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let eps: k8s_openapi::api::core::v1::Endpoints = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "svc-hook"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": port}]}]}))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Endpoints>::namespaced(h.client.clone(), "default")
        .create(&PostParams::default(), &eps)
        .await
        .unwrap();
    let mut by_service = webhook_config(
        "ValidatingWebhookConfiguration",
        "by-service",
        "https://unused",
        &ca,
        "Fail",
        json!({"matchLabels": {"via": "service"}}),
    );
    by_service.data["webhooks"][0]["clientConfig"] = json!({"service": {"namespace": "default", "name": "svc-hook", "path": "/validate", "port": 443}, "caBundle": ca});
    validating
        .create(&PostParams::default(), &by_service)
        .await
        .unwrap();
    let err = cms
        .create(
            &PostParams::default(),
            &cm("via-service", json!({"via": "service", "deny": "true"})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403 && s.message.contains("by-service.test.atoll.io")),
        "{err:?}"
    );
    cms.create(
        &PostParams::default(),
        &cm("via-service-ok", json!({"via": "service"})),
    )
    .await
    .unwrap();
}
