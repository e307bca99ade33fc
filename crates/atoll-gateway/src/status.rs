//! Each ingress's status as the gateway found it: where it listens, whether its routes are in
//! use (and what is wrong with those that are not), each backend's ready endpoints per
//! cluster. Written only when it differs from what the ingress already says.

use std::net::SocketAddr;

use atoll_api::ingress::{
    CONDITION_BACKENDS_READY, CONDITION_PROGRAMMED, MultiClusterIngress, MultiClusterIngressStatus,
};
use k8s_openapi::api::networking::v1::{
    IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressPortStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::config::Report;

pub(crate) struct Writer {
    client: Client,
    addresses: Vec<SocketAddr>,
}

/// The status `report` asks for, keeping the transition times of `current`'s conditions
/// whose status stays.
pub(crate) fn status_of(
    report: &Report,
    addresses: &[SocketAddr],
    current: Option<&MultiClusterIngressStatus>,
    now: Time,
) -> MultiClusterIngressStatus {
    let mut ingress: Vec<IngressLoadBalancerIngress> = Vec::new();
    for a in addresses {
        let port = IngressPortStatus {
            port: i32::from(a.port()),
            protocol: "TCP".into(),
            error: None,
        };
        match ingress
            .iter_mut()
            .find(|i| i.ip.as_deref() == Some(&a.ip().to_string()))
        {
            Some(i) => i.ports.get_or_insert_with(Vec::new).push(port),
            None => ingress.push(IngressLoadBalancerIngress {
                ip: Some(a.ip().to_string()),
                ports: Some(vec![port]),
                ..Default::default()
            }),
        }
    }
    let programmed = if report.problems.is_empty() {
        ("True", "Programmed", "every route is in use".to_string())
    } else {
        ("True", "PartiallyProgrammed", report.problems.join("; "))
    };
    let unready: Vec<String> = report
        .backends
        .iter()
        .filter(|b| b.clusters.iter().all(|c| c.ready == 0))
        .map(|b| {
            let clusters: Vec<String> = b
                .clusters
                .iter()
                .map(|c| format!("{}: 0", c.cluster))
                .collect();
            if clusters.is_empty() {
                format!(
                    "{}:{} (no cluster of this namespace's cluster sets exports it)",
                    b.service, b.port
                )
            } else {
                format!("{}:{} ({})", b.service, b.port, clusters.join(", "))
            }
        })
        .collect();
    let backends_ready = if unready.is_empty() {
        (
            "True",
            "AllBackendsReady",
            "every backend has a ready endpoint".to_string(),
        )
    } else {
        (
            "False",
            "NoReadyEndpoints",
            format!("no ready endpoint for {}", unready.join("; ")),
        )
    };
    let condition = |type_: &str, (status, reason, message): (&str, &str, String)| {
        let kept = current
            .and_then(|c| c.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: report.generation,
            last_transition_time: kept.unwrap_or_else(|| now.clone()),
        }
    };
    MultiClusterIngressStatus {
        load_balancer: Some(IngressLoadBalancerStatus {
            ingress: (!ingress.is_empty()).then_some(ingress),
        }),
        observed_generation: report.generation,
        conditions: vec![
            condition(CONDITION_PROGRAMMED, programmed),
            condition(CONDITION_BACKENDS_READY, backends_ready),
        ],
        backends: report.backends.clone(),
    }
}

impl Writer {
    pub(crate) fn new(client: Client, addresses: Vec<SocketAddr>) -> Writer {
        Writer { client, addresses }
    }

    pub(crate) async fn write(
        &mut self,
        reports: &[Report],
        ingresses: &Store<MultiClusterIngress>,
    ) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        for report in reports {
            let Some(current) =
                ingresses.get(&ObjectRef::new(&report.name).within(&report.namespace))
            else {
                continue;
            };
            let status = status_of(
                report,
                &self.addresses,
                current.status.as_ref(),
                now.clone(),
            );
            if current.status.as_ref() == Some(&status) {
                continue;
            }
            let api: Api<MultiClusterIngress> =
                Api::namespaced(self.client.clone(), &report.namespace);
            let patch = json!({"status": status});
            if let Err(e) = api
                .patch_status(
                    &current.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::warn!(ingress = %format!("{}/{}", report.namespace, report.name), error = %e, "cannot write the status");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_api::ingress::{BackendStatus, ClusterEndpoints};

    fn report(ready: &[(&str, i32)], problems: &[&str]) -> Report {
        Report {
            namespace: "demo".into(),
            name: "web".into(),
            generation: Some(2),
            problems: problems.iter().map(|p| p.to_string()).collect(),
            backends: vec![BackendStatus {
                service: "web".into(),
                port: "80".into(),
                clusters: ready
                    .iter()
                    .map(|(c, n)| ClusterEndpoints {
                        cluster: c.to_string(),
                        ready: *n,
                    })
                    .collect(),
            }],
        }
    }

    fn at(s: &str) -> Time {
        Time(s.parse().expect("a time"))
    }

    #[test]
    fn the_status_says_where_and_what_is_ready() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:8443".parse().unwrap(),
        ];
        let s = status_of(
            &report(&[("m1", 1), ("m2", 0)], &[]),
            &addrs,
            None,
            at("2026-12-01T12:00:00Z"),
        );
        let lb = s.load_balancer.and_then(|l| l.ingress).expect("an address");
        assert_eq!(lb.len(), 1);
        assert_eq!(lb[0].ports.as_ref().map(Vec::len), Some(2));
        assert_eq!(s.conditions[0].reason, "Programmed");
        assert_eq!(s.conditions[1].status, "True");
        assert_eq!(s.observed_generation, Some(2));

        let s = status_of(
            &report(&[("m1", 0)], &["bad"]),
            &addrs,
            None,
            at("2026-12-01T12:00:00Z"),
        );
        assert_eq!(s.conditions[0].reason, "PartiallyProgrammed");
        assert_eq!(s.conditions[0].message, "bad");
        assert_eq!(
            (
                s.conditions[1].status.as_str(),
                s.conditions[1].message.as_str()
            ),
            ("False", "no ready endpoint for web:80 (m1: 0)")
        );
    }

    #[test]
    fn transition_times_stay_while_a_condition_keeps_its_status() {
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:8080".parse().unwrap()];
        let first = status_of(
            &report(&[("m1", 1)], &[]),
            &addrs,
            None,
            at("2026-12-01T12:00:00Z"),
        );
        let same = status_of(
            &report(&[("m1", 2)], &[]),
            &addrs,
            Some(&first),
            at("2026-12-01T12:05:00Z"),
        );
        assert_eq!(
            same.conditions[1].last_transition_time,
            at("2026-12-01T12:00:00Z")
        );
        let flipped = status_of(
            &report(&[("m1", 0)], &[]),
            &addrs,
            Some(&first),
            at("2026-12-01T12:05:00Z"),
        );
        assert_eq!(
            flipped.conditions[1].last_transition_time,
            at("2026-12-01T12:05:00Z")
        );
    }
}
