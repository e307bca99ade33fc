//! How the exports of one Service from several clusters become one import (KEP-1645's
//! constraints and conflict resolution), without I/O.
//!
//! - The oldest export (by its ServiceExport's `creationTimestamp`, then by cluster name) is
//!   the reference: the import takes its type, session affinity, traffic policies, IP families,
//!   exported labels and annotations.
//! - Ports are the union: merged by name first, then by protocol and port; a port whose name
//!   (or whose protocol and number) is already taken with different values is left out. Any
//!   difference in the port sets is a `PortConflict`.
//! - Every other property that differs from the reference's is a conflict of its own reason.
//!   The reference and every export that differs from it get `Conflict=True`, with all their
//!   reasons joined by commas (the conformance suite checks it on both exports).

use std::collections::BTreeMap;

use atoll_api::mcs::ExportedSlice;
use atoll_api::mcs::v1beta1::{ServiceImportSpec, ServicePort};
use atoll_api::mcs::{
    REASON_ANNOTATIONS_CONFLICT, REASON_INTERNAL_TRAFFIC_POLICY_CONFLICT,
    REASON_IP_FAMILY_CONFLICT, REASON_LABELS_CONFLICT, REASON_PORT_CONFLICT,
    REASON_SESSION_AFFINITY_CONFIG_CONFLICT, REASON_SESSION_AFFINITY_CONFLICT,
    REASON_TRAFFIC_DISTRIBUTION_CONFLICT, REASON_TYPE_CONFLICT,
};

/// One cluster's export, as the merge needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Export {
    pub cluster: String,
    /// Seconds since the epoch of the member's ServiceExport (missing: newest).
    pub created: Option<i64>,
    pub service: ServiceImportSpec,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The import the exports make.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    /// Without `ips` (the hub allocates them).
    pub service: ServiceImportSpec,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The reference export's cluster.
    pub oldest: String,
    /// Conflict reasons by cluster; a cluster not here has none.
    pub conflicts: BTreeMap<String, Vec<&'static str>>,
}

fn protocol(p: &ServicePort) -> &str {
    p.protocol.as_deref().unwrap_or("TCP")
}

fn affinity(s: &ServiceImportSpec) -> &str {
    s.session_affinity.as_deref().unwrap_or("None")
}

/// The exports in the order the KEP ranks them: oldest first.
pub fn ranked(mut exports: Vec<Export>) -> Vec<Export> {
    exports.sort_by(|a, b| {
        a.created
            .unwrap_or(i64::MAX)
            .cmp(&b.created.unwrap_or(i64::MAX))
            .then_with(|| a.cluster.cmp(&b.cluster))
    });
    exports
}

/// Merge one Service's exports (none: `None`).
pub fn merge(exports: Vec<Export>) -> Option<Merged> {
    let exports = ranked(exports);
    let reference = exports.first()?.clone();
    let mut service = reference.service.clone();
    service.ips.clear();
    let mut conflicts: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    let mut raise = |cluster: &str, reason: &'static str| {
        for c in [reference.cluster.as_str(), cluster] {
            let list = conflicts.entry(c.to_string()).or_default();
            if !list.contains(&reason) {
                list.push(reason);
            }
        }
    };
    for other in &exports[1..] {
        let (a, b) = (&reference.service, &other.service);
        let c = other.cluster.as_str();
        if a.type_ != b.type_ {
            raise(c, REASON_TYPE_CONFLICT);
        }
        if affinity(a) != affinity(b) {
            raise(c, REASON_SESSION_AFFINITY_CONFLICT);
        }
        if a.session_affinity_config != b.session_affinity_config {
            raise(c, REASON_SESSION_AFFINITY_CONFIG_CONFLICT);
        }
        if a.internal_traffic_policy != b.internal_traffic_policy {
            raise(c, REASON_INTERNAL_TRAFFIC_POLICY_CONFLICT);
        }
        if a.traffic_distribution != b.traffic_distribution {
            raise(c, REASON_TRAFFIC_DISTRIBUTION_CONFLICT);
        }
        if a.ip_families != b.ip_families {
            raise(c, REASON_IP_FAMILY_CONFLICT);
        }
        if reference.labels != other.labels {
            raise(c, REASON_LABELS_CONFLICT);
        }
        if reference.annotations != other.annotations {
            raise(c, REASON_ANNOTATIONS_CONFLICT);
        }
        let mut same: Vec<&ServicePort> = a.ports.iter().collect();
        let mut theirs: Vec<&ServicePort> = b.ports.iter().collect();
        same.sort();
        theirs.sort();
        if same != theirs {
            raise(c, REASON_PORT_CONFLICT);
        }
        for p in &b.ports {
            let by_name = !p.name.is_empty() && service.ports.iter().any(|q| q.name == p.name);
            let by_number = service
                .ports
                .iter()
                .any(|q| q.port == p.port && protocol(q) == protocol(p));
            if !by_name && !by_number {
                service.ports.push(p.clone());
            }
        }
    }
    Some(Merged {
        service,
        labels: reference.labels.clone(),
        annotations: reference.annotations.clone(),
        oldest: reference.cluster.clone(),
        conflicts,
    })
}

/// The reasons of a `Conflict` condition: joined by commas, as the CRD's pattern allows.
pub fn reason(reasons: &[&str]) -> String {
    reasons.join(",")
}

/// What of one cluster's endpoints the import serves: in each slice only the ports of the
/// cluster's Service that the import has as they are (same name, protocol and number), so a
/// port of the import reaches only the clusters that expose it; a cluster that lost a port
/// conflict does not get that port's traffic at its own number.
pub fn served_slices(
    import: &[ServicePort],
    cluster: &[ServicePort],
    slices: &[ExportedSlice],
) -> Vec<ExportedSlice> {
    let served: Vec<&str> = cluster
        .iter()
        .filter(|p| {
            import
                .iter()
                .any(|q| q.name == p.name && q.port == p.port && protocol(q) == protocol(p))
        })
        .map(|p| p.name.as_str())
        .collect();
    slices
        .iter()
        .map(|s| ExportedSlice {
            ports: s
                .ports
                .iter()
                .filter(|e| served.contains(&e.name.as_deref().unwrap_or_default()))
                .cloned()
                .collect(),
            ..s.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::EndpointPort;

    #[test]
    fn a_port_reaches_only_the_clusters_that_expose_it() {
        let slice = |names: &[&str]| ExportedSlice {
            address_type: "IPv4".into(),
            endpoints: Vec::new(),
            ports: names
                .iter()
                .map(|n| EndpointPort {
                    name: (!n.is_empty()).then(|| n.to_string()),
                    port: Some(42),
                    protocol: Some("TCP".into()),
                    app_protocol: None,
                })
                .collect(),
        };
        let ports = |s: &ExportedSlice| -> Vec<String> {
            s.ports
                .iter()
                .map(|p| p.name.clone().unwrap_or_default())
                .collect()
        };
        let import = hello();
        type Case = (
            &'static str,
            Vec<ServicePort>,
            &'static [&'static str],
            &'static [&'static str],
        );
        let cases: [Case; 5] = [
            ("same ports", hello(), &["tcp", "udp"], &["tcp", "udp"]),
            (
                "tcp at another number",
                vec![port("tcp", "TCP", 4242)],
                &["tcp"],
                &[],
            ),
            (
                "a port of its own",
                vec![port("tcp2", "TCP", 4242)],
                &["tcp2"],
                &[],
            ),
            (
                "another protocol",
                vec![port("tcp", "SCTP", 42)],
                &["tcp"],
                &[],
            ),
            (
                "one of two",
                vec![port("tcp", "TCP", 42), port("x", "TCP", 9)],
                &["tcp", "x"],
                &["tcp"],
            ),
        ];
        for (case, cluster, have, want) in cases {
            let served = served_slices(&import, &cluster, &[slice(have)]);
            assert_eq!(ports(&served[0]), want, "{case}");
        }
        let unnamed = [port("", "TCP", 80)];
        let served = served_slices(&unnamed, &unnamed, &[slice(&[""])]);
        assert_eq!(served[0].ports.len(), 1, "an unnamed port");
    }

    fn port(name: &str, protocol: &str, number: i32) -> ServicePort {
        ServicePort {
            name: name.into(),
            protocol: Some(protocol.into()),
            app_protocol: None,
            port: number,
        }
    }

    fn export(cluster: &str, created: i64, ports: Vec<ServicePort>) -> Export {
        Export {
            cluster: cluster.into(),
            created: Some(created),
            service: ServiceImportSpec {
                ports,
                type_: "ClusterSetIP".into(),
                session_affinity: Some("ClientIP".into()),
                internal_traffic_policy: Some("Cluster".into()),
                ip_families: vec!["IPv4".into()],
                ..Default::default()
            },
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    fn hello() -> Vec<ServicePort> {
        vec![port("tcp", "TCP", 42), port("udp", "UDP", 42)]
    }

    type Case = (
        &'static str,
        Vec<Export>,
        Vec<ServicePort>,
        Vec<(&'static str, &'static str)>,
    );

    #[test]
    fn exports_merge_as_the_kep_says() {
        let later_headless = {
            let mut e = export("c1", 20, hello());
            e.service.type_ = "Headless".into();
            e
        };
        let later_labels = {
            let mut e = export("c1", 20, hello());
            e.labels.insert("team".into(), "b".into());
            e
        };
        let later_affinity = {
            let mut e = export("c1", 20, hello());
            e.service.session_affinity = None;
            e.service.traffic_distribution = Some("PreferClose".into());
            e
        };
        let cases: Vec<Case> = vec![
            (
                "one export is its own import",
                vec![export("c0", 10, hello())],
                hello(),
                vec![],
            ),
            (
                "the same export twice: no conflict",
                vec![export("c1", 20, hello()), export("c0", 10, hello())],
                hello(),
                vec![],
            ),
            (
                "a port of another number under a taken name: the oldest's, both in conflict",
                vec![
                    export("c0", 10, hello()),
                    export(
                        "c1",
                        20,
                        vec![port("tcp", "TCP", 43), port("udp", "UDP", 42)],
                    ),
                ],
                hello(),
                vec![("c0", "PortConflict"), ("c1", "PortConflict")],
            ),
            (
                "new ports are the union, and a conflict",
                vec![
                    export("c0", 10, hello()),
                    export(
                        "c1",
                        20,
                        vec![port("tcp", "TCP", 42), port("stcp", "SCTP", 142)],
                    ),
                ],
                vec![
                    port("tcp", "TCP", 42),
                    port("udp", "UDP", 42),
                    port("stcp", "SCTP", 142),
                ],
                vec![("c0", "PortConflict"), ("c1", "PortConflict")],
            ),
            (
                "a taken protocol and number under another name is left out",
                vec![
                    export("c0", 10, hello()),
                    export(
                        "c1",
                        20,
                        vec![port("tcp", "TCP", 42), port("other", "UDP", 42)],
                    ),
                ],
                hello(),
                vec![("c0", "PortConflict"), ("c1", "PortConflict")],
            ),
            (
                "the oldest export's type wins",
                vec![later_headless, export("c0", 10, hello())],
                hello(),
                vec![("c0", "TypeConflict"), ("c1", "TypeConflict")],
            ),
            (
                "labels differ: the oldest's stay",
                vec![export("c0", 10, hello()), later_labels],
                hello(),
                vec![("c0", "LabelsConflict"), ("c1", "LabelsConflict")],
            ),
            (
                "several reasons are joined",
                vec![export("c0", 10, hello()), later_affinity],
                hello(),
                vec![
                    ("c0", "SessionAffinityConflict,TrafficDistributionConflict"),
                    ("c1", "SessionAffinityConflict,TrafficDistributionConflict"),
                ],
            ),
            (
                "with three, only the odd one and the oldest conflict",
                vec![
                    export("c0", 10, hello()),
                    export("c1", 20, hello()),
                    export("c2", 30, vec![port("tcp", "TCP", 44)]),
                ],
                hello(),
                vec![("c0", "PortConflict"), ("c2", "PortConflict")],
            ),
        ];
        for (what, exports, ports, conflicts) in cases {
            let merged = merge(exports).expect("exports merge");
            assert_eq!(merged.service.ports, ports, "{what}: ports");
            let got: Vec<(String, String)> = merged
                .conflicts
                .iter()
                .map(|(c, r)| (c.clone(), reason(r)))
                .collect();
            let want: Vec<(String, String)> = conflicts
                .iter()
                .map(|(c, r)| (c.to_string(), r.to_string()))
                .collect();
            assert_eq!(got, want, "{what}: conflicts");
            assert_eq!(merged.oldest, "c0", "{what}: the oldest is the reference");
        }
    }

    #[test]
    fn the_reference_settles_type_labels_and_ties() {
        let mut old = export("zeta", 10, hello());
        old.labels.insert("team".into(), "a".into());
        let mut young = export("alpha", 10, hello());
        young.service.type_ = "Headless".into();
        // Same second: the cluster name decides.
        let merged = merge(vec![old.clone(), young]).unwrap();
        assert_eq!(merged.oldest, "alpha");
        assert_eq!(merged.service.type_, "Headless");
        assert!(merged.labels.is_empty());
        assert!(merge(vec![]).is_none());
        // No creation time ranks last.
        let mut unknown = export("a", 0, hello());
        unknown.created = None;
        assert_eq!(merge(vec![unknown, old]).unwrap().oldest, "zeta");
    }
}
