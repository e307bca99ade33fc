//! Restart durability: what was acknowledged survives SIGKILL, with the same resourceVersions,
//! and a watch from before the restart resumes.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchParams};
use kube::core::WatchEvent;

use crate::harness::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_survive_sigkill_and_watches_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(tmp.path());
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    const N: usize = 200;
    // Write concurrently so commits are shared, then remember every acknowledged version.
    let mut tasks = Vec::new();
    for i in 0..N {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(format!("d{i:03}")),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([("i".to_string(), i.to_string())])),
                ..Default::default()
            };
            cms.create(&PostParams::default(), &cm).await.unwrap()
        }));
    }
    let mut acked = BTreeMap::new();
    for t in tasks {
        let cm = t.await.unwrap();
        acked.insert(cm.name_any(), cm.resource_version().unwrap());
    }
    let before_rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    let ca_before = std::fs::read(tmp.path().join("pki/ca.crt")).unwrap();
    server.kill();
    let server = Server::start_in(tmp.path());
    assert_eq!(
        std::fs::read(tmp.path().join("pki/ca.crt")).unwrap(),
        ca_before,
        "the CA is reused"
    );
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let after: BTreeMap<String, String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| (c.name_any(), c.resource_version().unwrap()))
        .collect();
    assert_eq!(
        after, acked,
        "every acknowledged object is back with its resourceVersion"
    );

    // A watch from the revision listed before the kill resumes and sees new changes only.
    let mut stream = cms
        .watch(&WatchParams::default(), &before_rv)
        .await
        .unwrap()
        .boxed();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("after-restart".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(c)) => assert_eq!(c.name_any(), "after-restart"),
        other => panic!("expected the new object, got {other:?}"),
    }
}
