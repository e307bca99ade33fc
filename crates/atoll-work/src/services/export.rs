//! Export: every `ServiceExport` of the member is checked (`Valid`), and a valid one is
//! published to the hub as an `ExportedService` in the cluster's namespace there, with the
//! Service's shape and its EndpointSlices, kept current as they change. The hub's verdict on
//! conflicts comes back as the export's `Conflict` condition; `Ready` says it is published.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::cluster::cluster_namespace;
use atoll_api::mcs::v1beta1::{ServiceExport, ServiceImportSpec, ServicePort};
use atoll_api::mcs::{
    CONDITION_CONFLICT, CONDITION_READY, CONDITION_VALID, ExportedService, ExportedServiceSpec,
    ExportedSlice, REASON_INVALID_SERVICE_TYPE, REASON_NO_CONFLICTS, REASON_NO_SERVICE,
    REASON_PENDING, REASON_READY, REASON_VALID, SLICE_MANAGER, TYPE_CLUSTER_SET_IP, TYPE_HEADLESS,
    record_name,
};
use atoll_runtime::queue::WorkQueue;
use atoll_runtime::reflect::reflect;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::MANAGER;
use super::{Cache, cached, gone_ok, watch_hub};
use crate::Error;

type Key = (String, String);

struct Ctx {
    cluster: String,
    hub: tokio::sync::watch::Receiver<Client>,
    member: Client,
    exports: Store<ServiceExport>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    /// The cluster's records on the hub, by record name.
    published: Cache<ExportedService>,
}

pub(crate) async fn run(
    cluster: String,
    hub: tokio::sync::watch::Receiver<Client>,
    member: Client,
) {
    let queue: WorkQueue<Key> = WorkQueue::new();
    let (exports, exports_w) = reflector::store();
    let (services, services_w) = reflector::store();
    let (slices, slices_w) = reflector::store();
    let published: Cache<ExportedService> = Arc::new(Mutex::new(HashMap::new()));
    {
        let q = queue.clone();
        reflect(
            Api::<ServiceExport>::all(member.clone()),
            watcher::Config::default(),
            exports_w,
            move |e: &ServiceExport| q.add((e.namespace().unwrap_or_default(), e.name_any())),
        );
        let q = queue.clone();
        reflect(
            Api::<Service>::all(member.clone()),
            watcher::Config::default(),
            services_w,
            move |s: &Service| q.add((s.namespace().unwrap_or_default(), s.name_any())),
        );
        // The cluster's own slices, not those it imports.
        let q = queue.clone();
        reflect(
            Api::<EndpointSlice>::all(member.clone()),
            watcher::Config::default().labels(&format!(
                "endpointslice.kubernetes.io/managed-by!={SLICE_MANAGER}"
            )),
            slices_w,
            move |s: &EndpointSlice| {
                if let Some(svc) = s.labels().get("kubernetes.io/service-name") {
                    q.add((s.namespace().unwrap_or_default(), svc.clone()))
                }
            },
        );
        let q = queue.clone();
        watch_hub(
            hub.clone(),
            cluster_namespace(&cluster),
            published.clone(),
            move |e: &ExportedService| q.add((e.spec.namespace.clone(), e.spec.name.clone())),
        );
    }
    let _ = exports.wait_until_ready().await;
    let _ = services.wait_until_ready().await;
    let _ = slices.wait_until_ready().await;
    let ctx = Arc::new(Ctx {
        cluster,
        hub,
        member,
        exports,
        services,
        slices,
        published,
    });
    // Records of exports that went while the agent was away go too.
    {
        let q = queue.clone();
        let c = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let names: Vec<Arc<ExportedService>> = c
                    .published
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned()
                    .collect();
                for e in names {
                    q.add((e.spec.namespace.clone(), e.spec.name.clone()));
                }
            }
        });
    }
    let c = ctx.clone();
    let workers = queue.run(2, "serviceexport", move |k| reconcile(c.clone(), k));
    for w in workers {
        let _ = w.await;
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: atoll_runtime::now(),
        observed_generation: None,
    }
}

/// The import this cluster's Service alone would make (no `ips`).
pub(crate) fn service_shape(svc: &Service) -> Option<ServiceImportSpec> {
    let spec = svc.spec.as_ref()?;
    let headless = spec.cluster_ip.as_deref() == Some("None");
    Some(ServiceImportSpec {
        ports: spec
            .ports
            .iter()
            .flatten()
            .map(|p| ServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
                port: p.port,
            })
            .collect(),
        ips: Vec::new(),
        type_: if headless {
            TYPE_HEADLESS
        } else {
            TYPE_CLUSTER_SET_IP
        }
        .into(),
        session_affinity: Some(
            spec.session_affinity
                .clone()
                .unwrap_or_else(|| "None".into()),
        ),
        session_affinity_config: spec.session_affinity_config.clone(),
        ip_families: spec.ip_families.clone().unwrap_or_default(),
        internal_traffic_policy: spec.internal_traffic_policy.clone(),
        traffic_distribution: spec.traffic_distribution.clone(),
    })
}

async fn reconcile(ctx: Arc<Ctx>, (namespace, name): Key) -> Result<Option<Duration>, Error> {
    let record = record_name(&namespace, &name);
    let hub_ns = cluster_namespace(&ctx.cluster);
    let hub = ctx.hub.borrow().clone();
    let records: Api<ExportedService> = Api::namespaced(hub, &hub_ns);
    let export = ctx
        .exports
        .get(&ObjectRef::new(&name).within(&namespace))
        .filter(|e| e.metadata.deletion_timestamp.is_none());
    let Some(export) = export else {
        if cached(&ctx.published, &record).is_some() {
            gone_ok(records.delete(&record, &DeleteParams::default()).await)?;
        }
        return Ok(None);
    };
    let service = ctx.services.get(&ObjectRef::new(&name).within(&namespace));
    let invalid = match service.as_deref() {
        None => Some((
            REASON_NO_SERVICE,
            format!("Service {namespace}/{name} does not exist"),
        )),
        Some(s) if s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName") => {
            Some((
                REASON_INVALID_SERVICE_TYPE,
                format!(
                    "Service {namespace}/{name} is of type ExternalName, which cannot be exported"
                ),
            ))
        }
        Some(_) => None,
    };
    let mut conditions = Vec::new();
    if let Some((reason, message)) = invalid {
        if cached(&ctx.published, &record).is_some() {
            gone_ok(records.delete(&record, &DeleteParams::default()).await)?;
        }
        conditions.push(condition(CONDITION_VALID, "False", reason, &message));
        conditions.push(condition(
            CONDITION_READY,
            "False",
            REASON_PENDING,
            "the export is not valid",
        ));
        return write_status(&ctx, &export, conditions).await;
    }
    let Some(shape) = service.as_deref().and_then(service_shape) else {
        return Ok(None);
    };
    let slices: Vec<ExportedSlice> = ctx
        .slices
        .state()
        .iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(namespace.as_str())
                && s.labels().get("kubernetes.io/service-name") == Some(&name)
        })
        .map(|s| ExportedSlice {
            address_type: s.address_type.clone(),
            // Nodes and pods are this cluster's own: other clusters get addresses, conditions,
            // hostnames and zones.
            endpoints: s
                .endpoints
                .iter()
                .map(|e| k8s_openapi::api::discovery::v1::Endpoint {
                    node_name: None,
                    target_ref: None,
                    ..e.clone()
                })
                .collect(),
            ports: s.ports.clone().unwrap_or_default(),
        })
        .collect();
    let spec = ExportedServiceSpec {
        cluster: ctx.cluster.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        export_created: export.metadata.creation_timestamp.clone(),
        service: shape,
        exported_labels: export.spec.exported_labels.clone().unwrap_or_default(),
        exported_annotations: export.spec.exported_annotations.clone().unwrap_or_default(),
        slices,
    };
    let current = cached(&ctx.published, &record);
    if current.as_ref().is_none_or(|c| c.spec != spec) {
        let obj = json!({
            "apiVersion": "networking.atoll.io/v1alpha1",
            "kind": "ExportedService",
            "metadata": {"name": record, "namespace": hub_ns},
            "spec": spec,
        });
        records
            .patch(
                &record,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await?;
    }
    conditions.push(condition(
        CONDITION_VALID,
        "True",
        REASON_VALID,
        "the Service can be exported",
    ));
    match current
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_CONFLICT))
    {
        Some(c) => {
            conditions.push(condition(
                CONDITION_READY,
                "True",
                REASON_READY,
                "exported to the cluster set",
            ));
            conditions.push(condition(
                CONDITION_CONFLICT,
                &c.status,
                &c.reason,
                &c.message,
            ));
        }
        // The hub has not merged it yet.
        None => {
            conditions.push(condition(
                CONDITION_READY,
                "Unknown",
                REASON_PENDING,
                "published to the hub, waiting for it to merge",
            ));
            conditions.push(condition(
                CONDITION_CONFLICT,
                "False",
                REASON_NO_CONFLICTS,
                "no conflicts known yet",
            ));
        }
    }
    write_status(&ctx, &export, conditions).await
}

/// The export's conditions, written when one changes (a transition keeps its time otherwise).
async fn write_status(
    ctx: &Ctx,
    export: &ServiceExport,
    mut conditions: Vec<Condition>,
) -> Result<Option<Duration>, Error> {
    let old: BTreeMap<String, &Condition> = export
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .map(|c| (c.type_.clone(), c))
        .collect();
    let mut changed = old.len() != conditions.len();
    for c in conditions.iter_mut() {
        match old.get(&c.type_) {
            Some(o) if o.status == c.status && o.reason == c.reason && o.message == c.message => {
                c.last_transition_time = o.last_transition_time.clone();
            }
            Some(o) if o.status == c.status => {
                c.last_transition_time = o.last_transition_time.clone();
                changed = true;
            }
            _ => changed = true,
        }
    }
    if !changed {
        return Ok(None);
    }
    let api: Api<ServiceExport> =
        Api::namespaced(ctx.member.clone(), &export.namespace().unwrap_or_default());
    gone_ok(
        api.patch_status(
            &export.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": conditions}})),
        )
        .await,
    )?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_exports_its_shape() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "demo", "labels": {"not": "exported"}},
            "spec": {"clusterIP": "127.1.0.20", "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                     "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10}},
                     "internalTrafficPolicy": "Cluster", "trafficDistribution": "PreferClose", "ipFamilies": ["IPv4"]},
        }))
        .unwrap();
        let shape = service_shape(&svc).unwrap();
        assert_eq!(shape.type_, "ClusterSetIP");
        assert_eq!(
            shape.ports,
            vec![ServicePort {
                name: "http".into(),
                protocol: Some("TCP".into()),
                app_protocol: None,
                port: 80
            }]
        );
        assert_eq!(shape.session_affinity.as_deref(), Some("ClientIP"));
        assert_eq!(
            shape
                .session_affinity_config
                .and_then(|c| c.client_ip)
                .and_then(|c| c.timeout_seconds),
            Some(10)
        );
        assert_eq!(shape.traffic_distribution.as_deref(), Some("PreferClose"));
        assert!(shape.ips.is_empty());
        let headless: Service =
            serde_json::from_value(json!({"spec": {"clusterIP": "None"}})).unwrap();
        let shape = service_shape(&headless).unwrap();
        assert_eq!(
            (shape.type_.as_str(), shape.session_affinity.as_deref()),
            ("Headless", Some("None"))
        );
    }
}
