#![allow(clippy::unwrap_used)]

//! kube-rs against the real server, in-process and over TCP: CRUD, every patch type, watcher +
//! reflector through updates, deletes and a forced 410, and a Controller reconciling a CRD.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{reflector, watcher};
use kube::{Client, CustomResource, CustomResourceExt, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use atoll_store::Options;
use common::Harness;

/// Run a test body against both transports.
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_process() {
                super::$body(super::common::in_process(super::options()).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_tcp() {
                super::$body(super::common::over_tcp(super::options()).await).await;
            }
        }
    };
}

fn options() -> Options {
    Options {
        max_log_events: 200,
        ..Options::default()
    }
}

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

async fn temp_ns(client: &Client, name: &str) -> Api<ConfigMap> {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .expect("namespace created");
    Api::namespaced(client.clone(), name)
}

both!(crud, crud_body);
async fn crud_body(h: Harness) {
    let cms = temp_ns(&h.client, "crud").await;
    let created = cms
        .create(&PostParams::default(), &cm("a", &[("k", "v")]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv = created.resource_version().unwrap();

    let err = cms
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );

    let mut got = cms.get("a").await.unwrap();
    assert_eq!(got.data.as_ref().unwrap()["k"], "v");
    got.data = Some(BTreeMap::from([("k".into(), "v2".into())]));
    let replaced = cms
        .replace("a", &PostParams::default(), &got)
        .await
        .unwrap();
    assert_ne!(replaced.resource_version().unwrap(), rv);
    // A replace with the old resourceVersion is a conflict.
    let err = cms
        .replace("a", &PostParams::default(), &got)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("p{i}"), &[]))
            .await
            .unwrap();
    }
    let page = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("a continue token");
    let rest = cms
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 4);
    assert!(rest.metadata.continue_.is_none());

    let dry = cms
        .delete(
            "a",
            &DeleteParams {
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(dry.is_left());
    assert!(cms.get("a").await.is_ok(), "dry run deleted nothing");
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let err = cms.get("a").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
}

both!(patches, patches_body);
async fn patches_body(h: Harness) {
    let cms = temp_ns(&h.client, "patches").await;
    cms.create(&PostParams::default(), &cm("p", &[("a", "1"), ("b", "2")]))
        .await
        .unwrap();
    let pp = PatchParams::default();
    let merged = cms
        .patch(
            "p",
            &pp,
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap(),
        BTreeMap::from([("b".into(), "2".into()), ("c".into(), "3".into())])
    );

    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/b", "value": "20"}]))
            .unwrap();
    let jp = cms.patch("p", &pp, &Patch::<()>::Json(ops)).await.unwrap();
    assert_eq!(jp.data.unwrap()["b"], "20");

    let sm = cms
        .patch(
            "p",
            &pp,
            &Patch::Strategic(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(sm.labels()["x"], "y");

    let apply = PatchParams::apply("tester");
    let applied = cms
        .patch("p", &apply, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p"}, "data": {"owned": "yes"}})))
        .await
        .unwrap();
    assert_eq!(applied.data.as_ref().unwrap()["owned"], "yes");
    assert!(
        applied
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("tester")
                && m.operation.as_deref() == Some("Apply"))
    );

    // Another manager changing an owned field conflicts, unless forced.
    let other = PatchParams::apply("intruder");
    let err = cms
        .patch("p", &other, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p"}, "data": {"owned": "no"}})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.message.contains("tester")),
        "{err:?}"
    );
    let forced = cms
        .patch("p", &other.force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p"}, "data": {"owned": "no"}})))
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["owned"], "no");

    // Apply creates when the object is missing; dropping a field from the config removes it.
    cms.patch("fresh", &apply, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fresh"}, "data": {"a": "1", "b": "2"}})))
        .await
        .unwrap();
    let shrunk = cms
        .patch("fresh", &apply, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fresh"}, "data": {"a": "1"}})))
        .await
        .unwrap();
    assert_eq!(
        shrunk.data.unwrap(),
        BTreeMap::from([("a".into(), "1".into())])
    );
}

both!(reflector_sync, reflector_body);
async fn reflector_body(h: Harness) {
    let cms = temp_ns(&h.client, "reflect").await;
    let (reader, writer) = reflector::store::<ConfigMap>();
    let lists = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = lists.clone();
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().timeout(1)),
    )
    .for_each(move |e| {
        if matches!(e, Ok(watcher::Event::InitDone)) {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        async {}
    });
    let task = tokio::spawn(stream);
    reader.wait_until_ready().await.unwrap();

    for i in 0..10 {
        cms.create(
            &PostParams::default(),
            &cm(&format!("r{i}"), &[("i", &i.to_string())]),
        )
        .await
        .unwrap();
    }
    for i in 0..10 {
        cms.patch(
            &format!("r{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": "updated"}})),
        )
        .await
        .unwrap();
    }
    for i in 0..5 {
        cms.delete(&format!("r{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_in_sync(&cms, &reader, 5).await;

    // Force a 410: many writes elsewhere push the log past this watch's last revision while its
    // watch times out and restarts; the watcher must re-list and stay in sync.
    let other = temp_ns(&h.client, "noise").await;
    for i in 0..300 {
        other
            .create(&PostParams::default(), &cm(&format!("n{i}"), &[]))
            .await
            .unwrap();
    }
    // Let the open watch time out (1 s) and restart from its now-compacted revision.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cms.create(&PostParams::default(), &cm("after-410", &[]))
        .await
        .unwrap();
    cms.delete("r5", &DeleteParams::default()).await.unwrap();
    wait_in_sync(&cms, &reader, 5).await;
    assert!(
        lists.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the watcher re-listed after 410 Gone"
    );
    task.abort();
}

async fn wait_in_sync(api: &Api<ConfigMap>, reader: &reflector::Store<ConfigMap>, expect: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let live: BTreeMap<String, String> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|c| (c.name_any(), c.resource_version().unwrap_or_default()))
            .collect();
        let cached: BTreeMap<String, String> = reader
            .state()
            .iter()
            .map(|c| (c.name_any(), c.resource_version().unwrap_or_default()))
            .collect();
        if live == cached && live.len() == expect {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector never caught up: live {live:?}, cached {cached:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, schemars::JsonSchema)]
#[kube(
    group = "test.atoll.io",
    version = "v1",
    kind = "Gadget",
    namespaced,
    status = "GadgetStatus"
)]
pub struct GadgetSpec {
    pub size: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, schemars::JsonSchema)]
pub struct GadgetStatus {
    pub doubled: i64,
}

both!(controller, controller_body);
async fn controller_body(h: Harness) {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(h.client.clone());
    crds.create(&PostParams::default(), &Gadget::crd())
        .await
        .unwrap();
    // The kind is served once the CRD is established.
    let gadgets: Api<Gadget> = Api::namespaced(h.client.clone(), "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gadgets.list(&ListParams::default()).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "CRD kind never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    async fn reconcile(g: Arc<Gadget>, api: Arc<Api<Gadget>>) -> Result<Action, kube::Error> {
        let want = g.spec.size * 2;
        if g.status.as_ref().map(|s| s.doubled) != Some(want) {
            api.patch_status(
                &g.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"doubled": want}})),
            )
            .await?;
        }
        Ok(Action::await_change())
    }
    fn on_error(_: Arc<Gadget>, _: &kube::Error, _: Arc<Api<Gadget>>) -> Action {
        Action::requeue(Duration::from_millis(100))
    }
    let ctx = Arc::new(gadgets.clone());
    let controller = Controller::new(gadgets.clone(), watcher::Config::default())
        .run(reconcile, on_error, ctx)
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    gadgets
        .create(
            &PostParams::default(),
            &Gadget::new("g1", GadgetSpec { size: 21 }),
        )
        .await
        .unwrap();
    wait_for(|| async {
        gadgets
            .get("g1")
            .await
            .ok()
            .and_then(|g| g.status)
            .map(|s| s.doubled)
            == Some(42)
    })
    .await;
    gadgets
        .patch(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}})),
        )
        .await
        .unwrap();
    wait_for(|| async {
        gadgets
            .get("g1")
            .await
            .ok()
            .and_then(|g| g.status)
            .map(|s| s.doubled)
            == Some(10)
    })
    .await;
    let g = gadgets.get("g1").await.unwrap();
    assert_eq!(
        g.metadata.generation,
        Some(2),
        "spec changes bump generation, status writes do not"
    );
    task.abort();

    // Deleting the CRD deletes its objects.
    crds.delete(Gadget::crd_name(), &DeleteParams::default())
        .await
        .unwrap();
    wait_for(|| async { crds.get_opt(Gadget::crd_name()).await.unwrap().is_none() }).await;
    assert!(
        h.server
            .store
            .list("/test.atoll.io/gadgets/", None, 0, None)
            .unwrap()
            .items
            .is_empty()
    );
}

async fn wait_for<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never became true"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn watch_events_in_order_with_410_for_old_versions() {
    let h = common::in_process(Options {
        max_log_events: 20,
        ..Options::default()
    })
    .await;
    let cms = temp_ns(&h.client, "w").await;
    let start = cms
        .create(&PostParams::default(), &cm("w0", &[]))
        .await
        .unwrap()
        .resource_version()
        .unwrap();
    let mut stream = cms
        .watch(&kube::api::WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("w1", &[]))
        .await
        .unwrap();
    cms.delete("w0", &DeleteParams::default()).await.unwrap();
    let first = stream.try_next().await.unwrap().unwrap();
    assert!(
        matches!(first, kube::core::WatchEvent::Added(ref c) if c.name_any() == "w1"),
        "{first:?}"
    );
    let second = stream.try_next().await.unwrap().unwrap();
    assert!(
        matches!(second, kube::core::WatchEvent::Deleted(ref c) if c.name_any() == "w0"),
        "{second:?}"
    );
    for i in 0..40 {
        cms.create(&PostParams::default(), &cm(&format!("x{i}"), &[]))
            .await
            .unwrap();
    }
    let mut old = cms
        .watch(&kube::api::WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    match old.try_next().await {
        Ok(Some(kube::core::WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watch_sends_initial_events_and_bookmarks() {
    let h = common::in_process_with(
        Options::default(),
        atoll_apiserver::Config {
            bookmark_interval: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await;
    let (server, client) = (h.server.clone(), h.client.clone());
    let cms = temp_ns(&client, "stream").await;
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("s{i}"), &[]))
            .await
            .unwrap();
    }
    // sendInitialEvents=true: ADDED for each object, then the initial-events-end bookmark.
    let (reader, writer) = reflector::store::<ConfigMap>();
    let task = tokio::spawn(
        reflector(
            writer,
            watcher(cms.clone(), watcher::Config::default().streaming_lists()),
        )
        .for_each(|_| async {}),
    );
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 3);
    cms.create(&PostParams::default(), &cm("s3", &[]))
        .await
        .unwrap();
    wait_in_sync(&cms, &reader, 4).await;
    task.abort();

    // A quiet watch gets bookmarks carrying the latest revision.
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&kube::api::WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let other = temp_ns(&client, "elsewhere").await;
    other
        .create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap();
    let head = server.store.revision();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("a bookmark in time")
            .unwrap()
        {
            Some(kube::core::WatchEvent::Bookmark(b)) => {
                if b.metadata.resource_version.parse::<u64>().unwrap() >= head {
                    break;
                }
            }
            other => panic!("only bookmarks expected, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn crd_versions_dry_run_and_generate_name() {
    let h = common::in_process(Options::default()).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(h.client.clone());
    let schema = json!({"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"n": {"type": "integer"}}}}}});
    let crd = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.test.atoll.io"},
        "spec": {"group": "test.atoll.io", "scope": "Cluster", "names": {"plural": "things", "kind": "Thing", "categories": ["all"]},
                 "versions": [
                     {"name": "v1beta1", "served": true, "storage": false, "schema": schema},
                     {"name": "v1", "served": true, "storage": true, "schema": schema}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let gvk = |v: &str| {
        kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("test.atoll.io", v, "Thing"),
            "things",
        )
    };
    let v1: Api<kube::api::DynamicObject> = Api::all_with(h.client.clone(), &gvk("v1"));
    let beta: Api<kube::api::DynamicObject> = Api::all_with(h.client.clone(), &gvk("v1beta1"));
    let obj: kube::api::DynamicObject = serde_json::from_value(json!({"apiVersion": "test.atoll.io/v1beta1", "kind": "Thing", "metadata": {"generateName": "t-"}, "spec": {"n": 1}})).unwrap();
    // Dry run: validated and answered, not stored.
    let dry = beta
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &obj,
        )
        .await
        .unwrap();
    assert!(dry.metadata.name.as_deref().unwrap().starts_with("t-"));
    assert!(
        v1.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Written through one version, read through the other (conversion None).
    let created = beta.create(&PostParams::default(), &obj).await.unwrap();
    let name = created.metadata.name.clone().unwrap();
    assert_eq!(name.len(), "t-".len() + 5);
    let through_v1 = v1.get(&name).await.unwrap();
    assert_eq!(through_v1.types.unwrap().api_version, "test.atoll.io/v1");
    assert_eq!(through_v1.data["spec"]["n"], 1);
    // The preferred version in discovery is the GA one.
    let discovery = kube::discovery::Discovery::new(h.client.clone())
        .run()
        .await
        .unwrap();
    let group = discovery.get("test.atoll.io").unwrap();
    assert_eq!(group.preferred_version(), Some("v1"));
}

#[tokio::test]
async fn services_get_cluster_ips_from_the_range_and_release_them() {
    use k8s_openapi::api::core::v1::Service;
    let h = common::in_process(Options::default()).await;
    let svcs: Api<Service> = Api::namespaced(h.client.clone(), "default");
    let svc = |name: &str, ip: Option<&str>| -> Service {
        let mut spec = json!({"ports": [{"port": 80}]});
        if let Some(ip) = ip {
            spec["clusterIP"] = json!(ip);
        }
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})).unwrap()
    };
    let a = svcs
        .create(&PostParams::default(), &svc("a", None))
        .await
        .unwrap();
    let ip = a.spec.unwrap().cluster_ip.unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");
    let fixed = svcs
        .create(&PostParams::default(), &svc("b", Some("10.96.0.50")))
        .await
        .unwrap();
    assert_eq!(
        fixed.spec.unwrap().cluster_ip.as_deref(),
        Some("10.96.0.50")
    );
    let err = svcs
        .create(&PostParams::default(), &svc("c", Some("10.96.0.50")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("already allocated")),
        "{err:?}"
    );
    let err = svcs
        .create(&PostParams::default(), &svc("d", Some("192.168.1.1")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("not in the valid range")),
        "{err:?}"
    );
    // An update that leaves the IP out keeps it; changing it is refused.
    let mut b = svcs.get("b").await.unwrap();
    b.spec.as_mut().unwrap().cluster_ip = None;
    b.spec.as_mut().unwrap().cluster_ips = None;
    let kept = svcs.replace("b", &PostParams::default(), &b).await.unwrap();
    assert_eq!(kept.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.50"));
    // Deleting releases the address.
    svcs.delete("b", &DeleteParams::default()).await.unwrap();
    svcs.create(&PostParams::default(), &svc("c", Some("10.96.0.50")))
        .await
        .unwrap();
    // Headless services get none.
    let headless = svcs
        .create(&PostParams::default(), &svc("h", Some("None")))
        .await
        .unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
}

#[tokio::test]
async fn server_side_apply_merges_crd_list_maps_by_key() {
    let h = common::in_process(Options::default()).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(h.client.clone());
    let crd = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "boards.test.atoll.io"},
        "spec": {"group": "test.atoll.io", "scope": "Namespaced", "names": {"plural": "boards", "kind": "Board"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {"type": "object", "properties": {
                         "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                                   "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}}},
                         "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}}}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("test.atoll.io", "v1", "Board"),
        "boards",
    );
    let boards: Api<kube::api::DynamicObject> =
        Api::namespaced_with(h.client.clone(), "default", &ar);
    let apply = |items: Value, tags: Value| json!({"apiVersion": "test.atoll.io/v1", "kind": "Board", "metadata": {"name": "b"}, "spec": {"items": items, "tags": tags}});
    boards
        .patch(
            "b",
            &PatchParams::apply("alice"),
            &Patch::Apply(apply(json!([{"name": "a", "v": 1}]), json!(["x"]))),
        )
        .await
        .unwrap();
    let merged = boards
        .patch(
            "b",
            &PatchParams::apply("bob"),
            &Patch::Apply(apply(json!([{"name": "b", "v": 2}]), json!(["y"]))),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data["spec"]["items"],
        json!([{"name": "a", "v": 1}, {"name": "b", "v": 2}]),
        "list-map items merge by key"
    );
    assert_eq!(
        merged.data["spec"]["tags"],
        json!(["x", "y"]),
        "sets take the union"
    );
    let err = boards
        .patch(
            "b",
            &PatchParams::apply("bob"),
            &Patch::Apply(apply(json!([{"name": "a", "v": 9}]), json!([]))),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.message.contains("alice")),
        "{err:?}"
    );
    // Alice dropping her item removes it; Bob's stays.
    let shrunk = boards
        .patch(
            "b",
            &PatchParams::apply("alice"),
            &Patch::Apply(apply(json!([]), json!(["x"]))),
        )
        .await
        .unwrap();
    assert_eq!(shrunk.data["spec"]["items"], json!([{"name": "b", "v": 2}]));
}
