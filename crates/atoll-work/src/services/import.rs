//! Import: for every import the hub delivers to this cluster (`ImportedService` in the
//! cluster's namespace there), where the namespace exists here, a `ServiceImport` of the same
//! name (its `status.clusters` the exporting clusters) and one EndpointSlice per exporting
//! cluster and slice, labelled with the service and the source cluster and managed by Atoll,
//! owned by the ServiceImport. What the hub no longer delivers goes.
//!
//! And a derived Service (Karmada's idea, without its `derived-` prefix): selector-less, named
//! as the exported Service when no local Service has that name (else `<name>-clusterset`, said
//! by an event and the import's `ServiceDerived` condition), with the import's ports; the
//! imported slices carry its `kubernetes.io/service-name`, so `<name>.<ns>.svc.cluster.local`
//! and the cluster's Service proxy reach every exporting cluster with no change to the
//! application. A local Service is never touched.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::cluster::cluster_namespace;
use atoll_api::mcs::v1beta1::ServiceImport;
use atoll_api::mcs::{
    ANNOTATION_SLICE_GATEWAY, CONDITION_READY, ImportedService, LABEL_SERVICE_NAME,
    LABEL_SOURCE_CLUSTER, REASON_READY, SLICE_MANAGER, record_name,
};
use atoll_runtime::queue::WorkQueue;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::MANAGER;
use super::{Cache, cached, gone_ok, watch_hub};
use crate::Error;
use atoll_runtime::reflect::reflect;

type Key = (String, String);

/// Label on a derived Service: the multi-cluster service it carries.
pub(crate) const DERIVED_LABEL: &str = "networking.atoll.io/derived-from";
/// ServiceImport condition: which Service carries the import's endpoints in this cluster.
const CONDITION_DERIVED: &str = "ServiceDerived";
/// How old a namespace must be before a derived Service takes a name in it.
const NAMESPACE_SETTLE_SECONDS: f64 = 3.0;

struct Ctx {
    member: Client,
    namespaces: Store<Namespace>,
    services: Store<Service>,
    exports: Store<atoll_api::mcs::v1beta1::ServiceExport>,
    imports: Store<ServiceImport>,
    slices: Store<EndpointSlice>,
    /// The hub's imports for this cluster, by record name.
    delivered: Cache<ImportedService>,
}

pub(crate) async fn run(
    cluster: String,
    hub: tokio::sync::watch::Receiver<Client>,
    member: Client,
) {
    let queue: WorkQueue<Key> = WorkQueue::new();
    let (namespaces, namespaces_w) = reflector::store();
    let (services, services_w) = reflector::store();
    let (exports, exports_w) = reflector::store();
    let (imports, imports_w) = reflector::store();
    let (slices, slices_w) = reflector::store();
    let delivered: Cache<ImportedService> = Arc::new(Mutex::new(HashMap::new()));
    {
        let q = queue.clone();
        reflect(
            Api::<ServiceImport>::all(member.clone()),
            watcher::Config::default(),
            imports_w,
            move |i: &ServiceImport| q.add((i.namespace().unwrap_or_default(), i.name_any())),
        );
        let q = queue.clone();
        reflect(
            Api::<EndpointSlice>::all(member.clone()),
            watcher::Config::default().labels(&format!(
                "endpointslice.kubernetes.io/managed-by={SLICE_MANAGER}"
            )),
            slices_w,
            move |s: &EndpointSlice| {
                if let Some(svc) = s.labels().get(LABEL_SERVICE_NAME) {
                    q.add((s.namespace().unwrap_or_default(), svc.clone()))
                }
            },
        );
        // A local Service that comes or goes may take or free the derived Service's name.
        let (q, d) = (queue.clone(), delivered.clone());
        reflect(
            Api::<Service>::all(member.clone()),
            watcher::Config::default(),
            services_w,
            move |svc: &Service| {
                let ns = svc.namespace().unwrap_or_default();
                let own = svc.name_any();
                let base =
                    svc.labels().get(DERIVED_LABEL).cloned().unwrap_or_else(|| {
                        own.strip_suffix("-clusterset").unwrap_or(&own).to_string()
                    });
                if cached(&d, &record_name(&ns, &base)).is_some()
                    || svc.labels().contains_key(DERIVED_LABEL)
                {
                    q.add((ns, base));
                }
            },
        );
        let q = queue.clone();
        reflect(
            Api::<atoll_api::mcs::v1beta1::ServiceExport>::all(member.clone()),
            watcher::Config::default(),
            exports_w,
            move |e: &atoll_api::mcs::v1beta1::ServiceExport| {
                q.add((e.namespace().unwrap_or_default(), e.name_any()))
            },
        );
        // A namespace that appears (or goes) changes what may be imported into it.
        let (q, d) = (queue.clone(), delivered.clone());
        reflect(
            Api::<Namespace>::all(member.clone()),
            watcher::Config::default(),
            namespaces_w,
            move |n: &Namespace| {
                let name = n.name_any();
                for i in d.lock().unwrap_or_else(|p| p.into_inner()).values() {
                    if i.spec.namespace == name {
                        q.add((i.spec.namespace.clone(), i.spec.name.clone()));
                    }
                }
            },
        );
        let q = queue.clone();
        watch_hub(
            hub,
            cluster_namespace(&cluster),
            delivered.clone(),
            move |i: &ImportedService| q.add((i.spec.namespace.clone(), i.spec.name.clone())),
        );
    }
    let _ = namespaces.wait_until_ready().await;
    let _ = services.wait_until_ready().await;
    let _ = exports.wait_until_ready().await;
    let _ = imports.wait_until_ready().await;
    let _ = slices.wait_until_ready().await;
    let ctx = Arc::new(Ctx {
        member,
        namespaces,
        services,
        exports,
        imports,
        slices,
        delivered,
    });
    // Imports left from before (their hub record went while the agent was away) go too.
    for i in ctx.imports.state() {
        queue.add((i.namespace().unwrap_or_default(), i.name_any()));
    }
    let c = ctx.clone();
    let workers = queue.run(2, "serviceimport", move |k| reconcile(c.clone(), k));
    for w in workers {
        let _ = w.await;
    }
}

/// An imported slice's name: the service, the source cluster and the slice's place, cut to
/// what a name may hold.
fn slice_name(service: &str, cluster: &str, index: usize) -> String {
    let name = format!("{service}-{cluster}-{index}");
    if name.len() <= 253 {
        return name;
    }
    format!("{}-{}", &name[..200], crate::hub_hash(&name))
}

async fn reconcile(ctx: Arc<Ctx>, (namespace, name): Key) -> Result<Option<Duration>, Error> {
    let record = record_name(&namespace, &name);
    let imports: Api<ServiceImport> = Api::namespaced(ctx.member.clone(), &namespace);
    let slices_api: Api<EndpointSlice> = Api::namespaced(ctx.member.clone(), &namespace);
    let services_api: Api<Service> = Api::namespaced(ctx.member.clone(), &namespace);
    let ours: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(namespace.as_str())
                && s.labels().get(LABEL_SERVICE_NAME) == Some(&name)
        })
        .collect();
    let derived_now: Vec<Arc<Service>> = ctx
        .services
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(namespace.as_str())
                && s.labels().get(DERIVED_LABEL) == Some(&name)
        })
        .collect();
    let namespace_obj = ctx
        .namespaces
        .get(&ObjectRef::new(&namespace))
        .filter(|n| n.metadata.deletion_timestamp.is_none());
    let namespace_here = namespace_obj.is_some();
    // A namespace just made is likely being filled (`kubectl apply` of a namespace and its
    // Service): the derived Service waits a few seconds rather than take the name first.
    let settling = namespace_obj
        .as_ref()
        .and_then(|n| n.metadata.creation_timestamp.as_ref())
        .map(|t| atoll_runtime::age_seconds(&t.0))
        .filter(|age| *age < NAMESPACE_SETTLE_SECONDS)
        .map(|age| Duration::from_secs_f64(NAMESPACE_SETTLE_SECONDS - age + 0.1));
    let delivered = cached(&ctx.delivered, &record).filter(|_| namespace_here);
    let Some(delivered) = delivered else {
        if ctx
            .imports
            .get(&ObjectRef::new(&name).within(&namespace))
            .is_some()
        {
            gone_ok(imports.delete(&name, &DeleteParams::default()).await)?;
        }
        for s in &derived_now {
            gone_ok(services_api.delete(&s.name_any(), &only(s.as_ref())).await)?;
        }
        for s in ours {
            gone_ok(
                slices_api
                    .delete(&s.name_any(), &DeleteParams::default())
                    .await,
            )?;
        }
        return Ok(None);
    };
    let spec = &delivered.spec;
    let mut metadata = json!({"name": name, "namespace": namespace});
    if !spec.labels.is_empty() {
        metadata["labels"] = json!(spec.labels);
    }
    if !spec.annotations.is_empty() {
        metadata["annotations"] = json!(spec.annotations);
    }
    let obj = json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceImport",
        "metadata": metadata,
        "spec": spec.service,
    });
    let applied = imports
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await?;
    let old_condition = |t: &str| {
        applied
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
            .cloned()
    };
    // Which Service carries the import here: a name is taken by a local Service, or by a
    // local ServiceExport (its Service is this cluster's, if not made yet).
    let local = |n: &str| {
        ctx.services
            .get(&ObjectRef::new(n).within(&namespace))
            .filter(|s| !s.labels().contains_key(DERIVED_LABEL))
            .is_some()
            || ctx
                .exports
                .get(&ObjectRef::new(n).within(&namespace))
                .is_some()
    };
    let derived = match settling {
        Some(_) => derived_now.first().map(|s| s.name_any()),
        None => derived_name(&name, local(&name), local(&format!("{name}-clusterset"))),
    };
    let (derived_status, derived_reason, derived_message) = match &derived {
        Some(d) if *d == name => (
            "True",
            "Derived",
            format!("Service {name} carries the endpoints of every exporting cluster"),
        ),
        Some(d) => (
            "True",
            "NameTaken",
            format!("a local Service {name} exists and is left alone; the derived Service is {d}"),
        ),
        None => (
            "False",
            "NameTaken",
            format!("local Services {name} and {name}-clusterset exist; no derived Service"),
        ),
    };
    let previous = old_condition(CONDITION_DERIVED);
    if derived_reason == "NameTaken" && previous.as_ref().is_none_or(|c| c.reason != "NameTaken") {
        atoll_runtime::record_event(
            &ctx.member,
            &applied,
            "Normal",
            "NameTaken",
            &derived_message,
            MANAGER,
        )
        .await;
    }
    let since = |old: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
                 status: &str,
                 reason: &str| {
        old.filter(|c| c.status == status && c.reason == reason)
            .map(|c| c.last_transition_time)
            .unwrap_or_else(atoll_runtime::now)
    };
    let any_slice = spec.clusters.iter().any(|c| !c.slices.is_empty());
    let status = json!({
        "clusters": spec.clusters.iter().map(|c| json!({"cluster": c.cluster})).collect::<Vec<_>>(),
        "endpointSliceObjects": if any_slice { "Present" } else { "Absent" },
        "conditions": [
            {
                "type": CONDITION_READY, "status": "True", "reason": REASON_READY,
                "message": format!("imported from {} cluster(s) of cluster set {}", spec.clusters.len(), spec.cluster_set),
                "lastTransitionTime": since(old_condition(CONDITION_READY), "True", REASON_READY),
            },
            {
                "type": CONDITION_DERIVED, "status": derived_status, "reason": derived_reason,
                "message": derived_message,
                "lastTransitionTime": since(previous, derived_status, derived_reason),
            },
        ],
    });
    let current = applied
        .status
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or_default());
    if current.as_ref() != Some(&status) {
        imports
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    let owner = json!([{
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
        "name": name, "uid": applied.metadata.uid, "controller": true, "blockOwnerDeletion": false,
    }]);
    // The derived Service, with the import's ports; a switch between headless and not is a
    // new Service (a ClusterIP cannot change).
    let headless = spec.service.type_ == atoll_api::mcs::TYPE_HEADLESS;
    for s in &derived_now {
        let was_headless = s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
        if Some(s.name_any()) != derived || was_headless != headless {
            gone_ok(services_api.delete(&s.name_any(), &only(s.as_ref())).await)?;
        }
    }
    if let Some(derived) = &derived {
        let want_spec = derived_spec(&spec.service);
        let existing = derived_now.iter().find(|s| {
            s.name_any() == *derived
                && (s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None"))
                    == headless
        });
        // Never an apply: an apply that finds the name taken (a local Service made since the
        // cache looked) would take that Service over. A create fails instead, and an update
        // carries the resourceVersion the cache saw.
        let written = match existing {
            None => {
                let obj = json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": derived, "namespace": namespace, "labels": {DERIVED_LABEL: name}, "ownerReferences": owner},
                    "spec": want_spec,
                });
                let obj: Service =
                    serde_json::from_value(obj).map_err(|e| Error::Invalid(e.to_string()))?;
                let params = PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..PostParams::default()
                };
                services_api.create(&params, &obj).await.map(|_| ())
            }
            Some(s) => {
                let have = serde_json::to_value(s.as_ref()).unwrap_or_default();
                let owned = s
                    .owner_references()
                    .iter()
                    .any(|o| Some(o.uid.as_str()) == applied.metadata.uid.as_deref());
                match spec_update(&have["spec"], &want_spec) {
                    None if owned => Ok(()),
                    update => {
                        let patch = json!({
                            "metadata": {"resourceVersion": s.resource_version(), "ownerReferences": owner},
                            "spec": update.unwrap_or_else(|| json!({})),
                        });
                        let params = PatchParams {
                            field_manager: Some(MANAGER.into()),
                            ..PatchParams::default()
                        };
                        services_api
                            .patch(derived, &params, &Patch::Merge(&patch))
                            .await
                            .map(|_| ())
                    }
                }
            }
        };
        match written {
            Ok(()) => {}
            // Taken, or changed since the cache saw it: look again when the watch has caught up.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                return Ok(Some(Duration::from_millis(500)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut wanted = BTreeSet::new();
    for part in &spec.clusters {
        for (i, slice) in part.slices.iter().enumerate() {
            let slice_name = slice_name(&name, &part.cluster, i);
            wanted.insert(slice_name.clone());
            let mut labels = json!({
                LABEL_SERVICE_NAME: name,
                LABEL_SOURCE_CLUSTER: part.cluster,
                "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
            });
            // The derived Service's endpoints, for the cluster's DNS and Service proxy.
            if let Some(d) = &derived {
                labels["kubernetes.io/service-name"] = json!(d);
            }
            // Endpoints behind their cluster's east-west gateway: the Service proxy goes
            // through it.
            let annotations = match &part.gateway {
                Some(g) => json!({ ANNOTATION_SLICE_GATEWAY: g }),
                None => json!({}),
            };
            let obj = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name, "namespace": namespace,
                    "labels": labels,
                    "annotations": annotations,
                    "ownerReferences": owner,
                },
                "addressType": slice.address_type,
                "endpoints": slice.endpoints,
                "ports": slice.ports,
            });
            let same = ours
                .iter()
                .find(|s| s.name_any() == slice_name)
                .is_some_and(|s| {
                    s.endpoints == slice.endpoints
                        && s.ports.clone().unwrap_or_default() == slice.ports
                        && s.address_type == slice.address_type
                        && s.labels().get(LABEL_SOURCE_CLUSTER) == Some(&part.cluster)
                        && s.labels().get("kubernetes.io/service-name") == derived.as_ref()
                        && s.annotations().get(ANNOTATION_SLICE_GATEWAY) == part.gateway.as_ref()
                });
            if !same {
                slices_api
                    .patch(
                        &slice_name,
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(&obj),
                    )
                    .await?;
            }
        }
    }
    for s in ours.iter().filter(|s| !wanted.contains(&s.name_any())) {
        gone_ok(
            slices_api
                .delete(&s.name_any(), &DeleteParams::default())
                .await,
        )?;
    }
    Ok(settling)
}

/// Delete exactly this object: the cache may be behind, and a Service of the same name made
/// since (one that took the name from the derived one) must not go with it.
fn only<K: ResourceExt>(o: &K) -> DeleteParams {
    DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: o.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// The derived Service's spec: selector-less, the import's ports (each its own target), its
/// session affinity and traffic distribution; headless for a headless import.
fn derived_spec(import: &atoll_api::mcs::v1beta1::ServiceImportSpec) -> serde_json::Value {
    let ports: Vec<serde_json::Value> = import
        .ports
        .iter()
        .map(|p| {
            let mut port = json!({
                "port": p.port,
                "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                "targetPort": p.port,
            });
            if !p.name.is_empty() {
                port["name"] = json!(p.name);
            }
            if let Some(a) = &p.app_protocol {
                port["appProtocol"] = json!(a);
            }
            port
        })
        .collect();
    let mut spec = json!({"type": "ClusterIP", "ports": ports});
    if import.type_ == atoll_api::mcs::TYPE_HEADLESS {
        spec["clusterIP"] = json!("None");
    }
    if let Some(a) = &import.session_affinity {
        spec["sessionAffinity"] = json!(a);
    }
    if let Some(c) = &import.session_affinity_config {
        spec["sessionAffinityConfig"] = json!(c);
    }
    if let Some(t) = &import.traffic_distribution {
        spec["trafficDistribution"] = json!(t);
    }
    spec
}

/// The merge patch that makes a Service's spec carry `want` (the fields `derived_spec` sets,
/// and those it may leave out, cleared), or `None` when it already does.
fn spec_update(have: &serde_json::Value, want: &serde_json::Value) -> Option<serde_json::Value> {
    let mut patch = serde_json::Map::new();
    for (k, v) in want.as_object().into_iter().flatten() {
        if have.get(k) != Some(v) {
            patch.insert(k.clone(), v.clone());
        }
    }
    for k in ["sessionAffinityConfig", "trafficDistribution"] {
        if want.get(k).is_none() && have.get(k).is_some_and(|v| !v.is_null()) {
            patch.insert(k.into(), serde_json::Value::Null);
        }
    }
    if want.get("sessionAffinity").is_none()
        && have
            .get("sessionAffinity")
            .is_some_and(|a| a != "None" && !a.is_null())
    {
        patch.insert("sessionAffinity".into(), json!("None"));
    }
    (!patch.is_empty()).then_some(serde_json::Value::Object(patch))
}

/// The derived Service's name: the service's own when no local Service has it, else
/// `<name>-clusterset` when that is free, else none.
fn derived_name(name: &str, name_taken: bool, alternative_taken: bool) -> Option<String> {
    match (name_taken, alternative_taken) {
        (false, _) => Some(name.to_string()),
        (true, false) => Some(format!("{name}-clusterset")),
        (true, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_services_never_take_a_local_name() {
        assert_eq!(derived_name("web", false, false).as_deref(), Some("web"));
        assert_eq!(derived_name("web", false, true).as_deref(), Some("web"));
        assert_eq!(
            derived_name("web", true, false).as_deref(),
            Some("web-clusterset")
        );
        assert_eq!(derived_name("web", true, true), None);
    }

    #[test]
    fn a_derived_service_has_the_imports_ports() {
        let import: atoll_api::mcs::v1beta1::ServiceImportSpec = serde_json::from_value(json!({
            "type": "Headless", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "sessionAffinity": "ClientIP",
        }))
        .unwrap();
        assert_eq!(
            derived_spec(&import),
            json!({"type": "ClusterIP", "clusterIP": "None", "sessionAffinity": "ClientIP", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80},
                {"port": 53, "protocol": "UDP", "targetPort": 53},
            ]})
        );
    }

    #[test]
    fn a_derived_service_is_updated_only_where_it_differs() {
        let ports = json!([{"port": 80, "protocol": "TCP", "targetPort": 80}]);
        let defaulted = json!({"type": "ClusterIP", "clusterIP": "10.0.0.9", "sessionAffinity": "None", "ports": ports});
        let cases = [
            (
                "as wanted",
                defaulted.clone(),
                json!({"type": "ClusterIP", "ports": ports}),
                None,
            ),
            (
                "a port more",
                defaulted.clone(),
                json!({"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}, {"port": 81, "protocol": "TCP", "targetPort": 81}]}),
                Some(
                    json!({"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}, {"port": 81, "protocol": "TCP", "targetPort": 81}]}),
                ),
            ),
            (
                "affinity dropped",
                json!({"type": "ClusterIP", "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10}}, "trafficDistribution": "PreferClose", "ports": ports}),
                json!({"type": "ClusterIP", "ports": ports}),
                Some(
                    json!({"sessionAffinity": "None", "sessionAffinityConfig": null, "trafficDistribution": null}),
                ),
            ),
            (
                "affinity added",
                defaulted.clone(),
                json!({"type": "ClusterIP", "sessionAffinity": "ClientIP", "ports": ports}),
                Some(json!({"sessionAffinity": "ClientIP"})),
            ),
        ];
        for (case, have, want, patch) in cases {
            assert_eq!(spec_update(&have, &want), patch, "{case}");
        }
    }

    #[test]
    fn slice_names_fit() {
        assert_eq!(slice_name("web", "member1", 0), "web-member1-0");
        let long = slice_name(&"s".repeat(63), &"c".repeat(250), 3);
        assert!(long.len() <= 253, "{}", long.len());
        assert_ne!(long, slice_name(&"s".repeat(63), &"c".repeat(250), 4));
    }
}
