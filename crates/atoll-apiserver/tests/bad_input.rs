//! Bad input gets the right 4xx `Status`, never a 5xx, a panic or a hang.

#![allow(clippy::unwrap_used)]

mod common;

use atoll_apiserver::Identity;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(
    h: &common::Harness,
    method: Method,
    uri: &str,
    content_type: &str,
    body: impl Into<Body>,
    anonymous: bool,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if !content_type.is_empty() {
        req = req.header("content-type", content_type);
    }
    let mut req = req.body(body.into()).unwrap();
    if !anonymous {
        req.extensions_mut().insert(Identity::admin());
    }
    let resp = h.server.router().oneshot(req).await.unwrap();
    let code = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (code, v)
}

fn assert_status(got: &(StatusCode, Value), code: u16, reason: &str) {
    assert_eq!(got.0.as_u16(), code, "{:?}", got.1);
    assert_eq!(got.1["kind"], "Status", "{:?}", got.1);
    assert_eq!(got.1["code"], code, "{:?}", got.1);
    assert_eq!(got.1["reason"], reason, "{:?}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a message: {:?}",
        got.1
    );
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn malformed_and_mismatched_bodies() {
    let h = common::in_process(Default::default()).await;
    let json = "application/json";
    assert_status(
        &call(&h, Method::POST, CMS, json, "{not json", false).await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(
            &h,
            Method::POST,
            CMS,
            "application/yaml",
            "a: [unclosed",
            false,
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(&h, Method::POST, CMS, json, "[1,2]", false).await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(&h, Method::POST, CMS, json, "", false).await,
        400,
        "BadRequest",
    );
    let wrong_kind =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}).to_string();
    assert_status(
        &call(&h, Method::POST, CMS, json, wrong_kind, false).await,
        400,
        "BadRequest",
    );
    let wrong_version =
        json!({"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "x"}}).to_string();
    assert_status(
        &call(&h, Method::POST, CMS, json, wrong_version, false).await,
        400,
        "BadRequest",
    );
    let bad_type = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": 1}}).to_string();
    assert_status(
        &call(&h, Method::POST, CMS, json, bad_type, false).await,
        400,
        "BadRequest",
    );
    let other_ns = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}}).to_string();
    assert_status(
        &call(&h, Method::POST, CMS, json, other_ns, false).await,
        400,
        "BadRequest",
    );
    // YAML bodies are accepted.
    let created = call(
        &h,
        Method::POST,
        CMS,
        "application/yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-yaml}\n",
        false,
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED, "{:?}", created.1);
}

#[tokio::test]
async fn invalid_objects_name_their_fields() {
    let h = common::in_process(Default::default()).await;
    let bad_name =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_Valid"}})
            .to_string();
    let got = call(&h, Method::POST, CMS, "application/json", bad_name, false).await;
    assert_status(&got, 422, "Invalid");
    assert_eq!(got.1["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(got.1["details"]["kind"], "ConfigMap");

    let no_name = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}).to_string();
    assert_status(
        &call(&h, Method::POST, CMS, "application/json", no_name, false).await,
        422,
        "Invalid",
    );

    let bad_labels = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok", "labels": {"bad key!": "v", "k": "bad value!"}}}).to_string();
    let got = call(&h, Method::POST, CMS, "application/json", bad_labels, false).await;
    assert_status(&got, 422, "Invalid");
    assert_eq!(got.1["details"]["causes"].as_array().unwrap().len(), 2);

    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}).to_string();
    let got = call(
        &h,
        Method::POST,
        "/api/v1/namespaces/default/pods",
        "application/json",
        pod,
        false,
    )
    .await;
    assert_status(&got, 422, "Invalid");
    assert_eq!(
        got.1["details"]["causes"][0]["field"],
        "spec.containers[0].image"
    );

    let no_ns =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}).to_string();
    assert_status(
        &call(
            &h,
            Method::POST,
            "/api/v1/namespaces/missing/configmaps",
            "application/json",
            no_ns,
            false,
        )
        .await,
        404,
        "NotFound",
    );
}

#[tokio::test]
async fn unsupported_requests() {
    let h = common::in_process(Default::default()).await;
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}).to_string();
    assert_status(
        &call(&h, Method::POST, CMS, "text/plain", cm.clone(), false).await,
        415,
        "UnsupportedMediaType",
    );
    assert_eq!(
        call(&h, Method::POST, CMS, "application/json", cm, false)
            .await
            .0,
        StatusCode::CREATED
    );
    assert_status(
        &call(
            &h,
            Method::PATCH,
            &format!("{CMS}/x"),
            "application/x-unknown-patch",
            "{}",
            false,
        )
        .await,
        415,
        "UnsupportedMediaType",
    );
    assert_status(
        &call(
            &h,
            Method::PATCH,
            &format!("{CMS}/x"),
            "application/json-patch+json",
            "{\"op\":1}",
            false,
        )
        .await,
        400,
        "BadRequest",
    );
    let failing_test = json!([{"op": "test", "path": "/data/a", "value": "b"}]).to_string();
    assert_status(
        &call(
            &h,
            Method::PATCH,
            &format!("{CMS}/x"),
            "application/json-patch+json",
            failing_test,
            false,
        )
        .await,
        422,
        "UnprocessableEntity",
    );
    assert_status(
        &call(
            &h,
            Method::GET,
            "/api/v1/namespaces/default/nonsense",
            "",
            Body::empty(),
            false,
        )
        .await,
        404,
        "NotFound",
    );
    assert_status(
        &call(
            &h,
            Method::GET,
            "/apis/nope.example.com/v1/things",
            "",
            Body::empty(),
            false,
        )
        .await,
        404,
        "NotFound",
    );
    assert_status(
        &call(
            &h,
            Method::POST,
            &format!("{CMS}/x"),
            "application/json",
            "{}",
            false,
        )
        .await,
        405,
        "MethodNotAllowed",
    );
    assert_status(
        &call(
            &h,
            Method::GET,
            &format!("{CMS}/x/status"),
            "",
            Body::empty(),
            false,
        )
        .await,
        404,
        "NotFound",
    );
    assert_status(
        &call(
            &h,
            Method::GET,
            &format!("{CMS}?labelSelector=a%20in%20b"),
            "",
            Body::empty(),
            false,
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(
            &h,
            Method::GET,
            &format!("{CMS}?fieldSelector=spec.nope%3Dx"),
            "",
            Body::empty(),
            false,
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(
            &h,
            Method::GET,
            &format!("{CMS}?continue=garbage"),
            "",
            Body::empty(),
            false,
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(
            &h,
            Method::GET,
            &format!("{CMS}?limit=ten"),
            "",
            Body::empty(),
            false,
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(
            &h,
            Method::GET,
            &format!("{CMS}?watch=1&resourceVersion=abc"),
            "",
            Body::empty(),
            false,
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(
            &h,
            Method::GET,
            &format!("{CMS}?resourceVersion=1&resourceVersionMatch=Sometimes"),
            "",
            Body::empty(),
            false,
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(
            &h,
            Method::DELETE,
            &format!("{CMS}/x"),
            "application/json",
            "{\"propagationPolicy\":\"Sideways\"}",
            false,
        )
        .await,
        422,
        "Invalid",
    );
    assert_status(
        &call(&h, Method::GET, CMS, "", Body::empty(), true).await,
        401,
        "Unauthorized",
    );
    // Health needs no identity.
    assert_eq!(
        call(&h, Method::GET, "/readyz", "", Body::empty(), true)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let h = common::in_process(Default::default()).await;
    let big = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"a\":\"{}\"}}}}",
        "x".repeat(4 * 1024 * 1024)
    );
    assert_status(
        &call(&h, Method::POST, CMS, "application/json", big, false).await,
        413,
        "RequestEntityTooLarge",
    );
}

#[tokio::test]
async fn stale_updates_conflict_and_past_windows_are_gone() {
    let h = common::in_process(atoll_store::Options {
        max_log_events: 10,
        ..Default::default()
    })
    .await;
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}).to_string();
    let created = call(&h, Method::POST, CMS, "application/json", cm, false)
        .await
        .1;
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let update = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "resourceVersion": rv}, "data": {"a": "1"}}).to_string();
    assert_eq!(
        call(
            &h,
            Method::PUT,
            &format!("{CMS}/x"),
            "application/json",
            update.clone(),
            false
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_status(
        &call(
            &h,
            Method::PUT,
            &format!("{CMS}/x"),
            "application/json",
            update,
            false,
        )
        .await,
        409,
        "Conflict",
    );
    for i in 0..20 {
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("n{i}")}})
                .to_string();
        call(&h, Method::POST, CMS, "application/json", cm, false).await;
    }
    assert_status(
        &call(
            &h,
            Method::GET,
            &format!("{CMS}?resourceVersion={rv}&resourceVersionMatch=Exact"),
            "",
            Body::empty(),
            false,
        )
        .await,
        410,
        "Expired",
    );
    let page = call(
        &h,
        Method::GET,
        &format!("{CMS}?limit=2"),
        "",
        Body::empty(),
        false,
    )
    .await
    .1;
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    for i in 0..20 {
        call(
            &h,
            Method::DELETE,
            &format!("{CMS}/n{i}"),
            "",
            Body::empty(),
            false,
        )
        .await;
    }
    assert_status(
        &call(
            &h,
            Method::GET,
            &format!("{CMS}?limit=2&continue={token}"),
            "",
            Body::empty(),
            false,
        )
        .await,
        410,
        "Expired",
    );
}

/// Odd requests of every shape: whatever they get, it is not a 5xx.
#[tokio::test]
async fn nothing_odd_is_a_server_error() {
    let h = common::in_process(Default::default()).await;
    let bodies = [
        "",
        "null",
        "{}",
        "[]",
        "\"s\"",
        "{\"metadata\":null}",
        "{\"metadata\":[]}",
        "{\"metadata\":{\"name\":5}}",
        "{\"metadata\":{\"labels\":{\"a\":[]}}}",
        "{\"kind\":\"ConfigMap\"}",
        "\u{0}\u{1}",
    ];
    let uris = [
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/x/approval",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        CMS,
        "/api/v1/namespaces/default/configmaps/x",
        "/api/v1/namespaces/default/configmaps/x/status",
        "/api/v1/namespaces",
        "/api/v1/namespaces/x/finalize",
        "/apis/apps/v1/namespaces/default/deployments/d/scale",
        "/api/v1/namespaces/%2F/configmaps",
        "/api/v1//",
        "/apis",
        "/openapi/v3/apis/x/y",
    ];
    let types = [
        "application/json",
        "application/yaml",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];
    for uri in uris {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            for body in bodies {
                for ct in types {
                    let (code, v) =
                        call(&h, method.clone(), uri, ct, body.to_string(), false).await;
                    assert!(
                        code.as_u16() < 500,
                        "{method} {uri} {ct} {body:?} -> {code} {v}"
                    );
                }
            }
        }
    }
}
