//! What the hub shows of a member cluster in its ManagedCluster's status: capacity and
//! allocatable summed over its Nodes, its version, its `ClusterProperty` objects as claims.
//! Read by the agent of a Pull cluster, and by the hub itself for a Push cluster.

use std::collections::BTreeMap;

use std::time::Duration;

use atoll_api::cluster::{CLUSTER_ID_PROPERTY, ClusterClaim, ClusterProperty, ClusterVersion};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Capacity and allocatable summed over the member's Nodes, its version, its claims.
pub async fn cluster_status(member: &Client) -> serde_json::Value {
    use atoll_runtime::quantity::{cpu_millis, units};
    let nodes: Api<Node> = Api::all(member.clone());
    let mut capacity: BTreeMap<&str, i64> = BTreeMap::new();
    let mut allocatable: BTreeMap<&str, i64> = BTreeMap::new();
    for n in nodes
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let Some(s) = n.status else { continue };
        for (sum, q) in [
            (&mut capacity, s.capacity),
            (&mut allocatable, s.allocatable),
        ] {
            for (k, v) in q.unwrap_or_default() {
                let (key, value) = match k.as_str() {
                    "cpu" => ("cpu", cpu_millis(&v.0)),
                    "memory" => ("memory", units(&v.0)),
                    "pods" => ("pods", units(&v.0)),
                    _ => continue,
                };
                *sum.entry(key).or_default() += value.unwrap_or(0);
            }
        }
    }
    let render = |m: &BTreeMap<&str, i64>| -> BTreeMap<String, String> {
        m.iter()
            .map(|(k, v)| {
                let s = match *k {
                    "cpu" if v % 1000 == 0 => (v / 1000).to_string(),
                    "cpu" => format!("{v}m"),
                    "memory" if v % 1024 == 0 => format!("{}Ki", v / 1024),
                    _ => v.to_string(),
                };
                (k.to_string(), s)
            })
            .collect()
    };
    let version = member
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_default();
    let props: Api<ClusterProperty> = Api::all(member.clone());
    let claims: Vec<ClusterClaim> = props
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|p| ClusterClaim {
                    name: p.name_any(),
                    value: p.spec.value,
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "capacity": render(&capacity),
        "allocatable": render(&allocatable),
        "version": ClusterVersion { kubernetes: version },
        "clusterClaims": claims,
    })
}

/// The ClusterProperty CRD and the cluster's id property, unless the admin set one.
pub async fn ensure_cluster_id(member: &Client, name: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(member.clone());
    let crd = <ClusterProperty as kube::CustomResourceExt>::crd();
    if let Err(e) = crds
        .patch(
            &crd.name_any(),
            &PatchParams::apply(atoll_api::work::APPLIER_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
    {
        tracing::warn!(error = %e, "cannot install the ClusterProperty CRD; no cluster claims");
        return;
    }
    let props: Api<ClusterProperty> = Api::all(member.clone());
    // A CRD is served once established, which a busy API server may take seconds to do; the
    // claim is worth the wait (30 s at most).
    for _ in 0..600 {
        match props.get_opt(CLUSTER_ID_PROPERTY).await {
            Ok(Some(_)) => return,
            Ok(None) => {
                let p = ClusterProperty::new(
                    CLUSTER_ID_PROPERTY,
                    atoll_api::cluster::ClusterPropertySpec { value: name.into() },
                );
                let _ = props.create(&PostParams::default(), &p).await;
                return;
            }
            // Not served yet.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
