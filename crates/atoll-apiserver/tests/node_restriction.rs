//! A node's identity reaches its own Node, its own lease, the pods bound to it and what they
//! use, and nothing else (Kubernetes' Node authorizer and NodeRestriction), with real kube-rs
//! clients acting as two nodes.

#![allow(clippy::unwrap_used)]

mod common;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) {
    match r {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_only_its_own_objects() {
    let h = common::in_process(Default::default()).await;
    let admin = h.client.clone();
    let n1 = common::client_as(&h, "system:node:n1", &["system:nodes"]);
    let pp = PostParams::default();

    // Its own Node: created and updated; another's: refused.
    let nodes: Api<Node> = Api::all(n1.clone());
    let node =
        |name: &str| serde_json::from_value::<Node>(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&pp, &node("n1")).await.unwrap();
    forbidden(
        nodes.create(&pp, &node("n2")).await,
        "creating another Node",
    );
    Api::<Node>::all(admin.clone())
        .create(&pp, &node("n2"))
        .await
        .unwrap();
    let label = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
    nodes
        .patch("n1", &PatchParams::default(), &label)
        .await
        .unwrap();
    forbidden(
        nodes.patch("n2", &PatchParams::default(), &label).await,
        "patching another Node",
    );
    forbidden(
        nodes
            .patch_status(
                "n2",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {}})),
            )
            .await,
        "patching another Node's status",
    );
    forbidden(
        nodes.delete("n2", &DeleteParams::default()).await,
        "deleting another Node",
    );
    assert_eq!(
        nodes.get("n2").await.unwrap().metadata.name.as_deref(),
        Some("n2")
    );

    // Its own lease only.
    let leases: Api<Lease> = Api::namespaced(n1.clone(), "kube-node-lease");
    let lease = |name: &str| {
        serde_json::from_value::<Lease>(
            json!({"metadata": {"name": name, "namespace": "kube-node-lease"}}),
        )
        .unwrap()
    };
    leases.create(&pp, &lease("n1")).await.unwrap();
    forbidden(
        leases.create(&pp, &lease("n2")).await,
        "creating another's lease",
    );
    Api::<Lease>::namespaced(admin.clone(), "kube-node-lease")
        .create(&pp, &lease("n2"))
        .await
        .unwrap();
    let renew = Patch::Merge(json!({"spec": {"holderIdentity": "n1"}}));
    leases
        .patch("n1", &PatchParams::default(), &renew)
        .await
        .unwrap();
    forbidden(
        leases.patch("n2", &PatchParams::default(), &renew).await,
        "renewing another's lease",
    );

    // Pods: status and deletion of its own; the Secret and ConfigMap its pod uses, by name.
    let admin_pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let pod = |name: &str, node: &str, secret: &str, cm: &str| {
        serde_json::from_value::<Pod>(
            json!({"metadata": {"name": name}, "spec": {"nodeName": node,
            "containers": [{"name": "c", "image": "i",
                "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": cm}}]}]}}),
        )
        .unwrap()
    };
    admin_pods
        .create(&pp, &pod("mine", "n1", "s1", "c1"))
        .await
        .unwrap();
    admin_pods
        .create(&pp, &pod("theirs", "n2", "s2", "c2"))
        .await
        .unwrap();
    for (s, c) in [("s1", "c1"), ("s2", "c2"), ("unused", "unused-cm")] {
        Api::<Secret>::namespaced(admin.clone(), "default")
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": s}, "stringData": {"k": "v"}}))
                    .unwrap(),
            )
            .await
            .unwrap();
        Api::<ConfigMap>::namespaced(admin.clone(), "default")
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": c}, "data": {"k": "v"}}))
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(n1.clone(), "default");
    let running = Patch::Merge(json!({"status": {"phase": "Running"}}));
    pods.patch_status("mine", &PatchParams::default(), &running)
        .await
        .unwrap();
    forbidden(
        pods.patch_status("theirs", &PatchParams::default(), &running)
            .await,
        "the status of another node's pod",
    );
    forbidden(
        pods.delete("theirs", &DeleteParams::default()).await,
        "deleting another node's pod",
    );
    assert!(pods.get("theirs").await.is_ok(), "pods may be read");
    let secrets: Api<Secret> = Api::namespaced(n1.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(n1.clone(), "default");
    secrets.get("s1").await.unwrap();
    cms.get("c1").await.unwrap();
    for s in ["s2", "unused"] {
        forbidden(secrets.get(s).await, "a Secret no pod of the node uses");
    }
    forbidden(cms.get("c2").await, "a ConfigMap no pod of the node uses");
    forbidden(secrets.list(&Default::default()).await, "listing Secrets");
    let err = secrets.get("s2").await.unwrap_err().to_string();
    assert!(
        err.contains("no relationship found between node 'n1'"),
        "{err}"
    );
    // As a node agent does once the pod's processes have stopped.
    pods.delete("mine", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();

    // Once its pod is gone, so is its access to what the pod used.
    let gone = async {
        for _ in 0..100 {
            if admin_pods.get_opt("mine").await.unwrap().is_none() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the pod was not deleted");
    };
    gone.await;
    forbidden(secrets.get("s1").await, "a Secret its deleted pod used");
}
