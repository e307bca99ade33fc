//! The gateway's whole configuration, built from what the hub holds (no I/O): the route table
//! of every MultiClusterIngress, each route's endpoints across the clusters that export its
//! Service, the TLS certificates by host, and what each ingress's status is to say.
//!
//! A backend Service `web` of an ingress in namespace `demo` is served by every cluster that
//! - belongs to a cluster set bound to `demo` (a `ManagedClusterSetBinding` there), as a
//!   Placement there may pick it, and
//! - exports `demo/web` (its agent's `ExportedService` record, trusted only in the cluster's
//!   own namespace), and
//! - is live: its lease renewed within the grace (as the hub withdraws it from imports).
//!
//! Its endpoints are the ready, non-terminating addresses of that cluster's slices, at the
//! endpoint port of the same name as the Service port the backend names (by number or name).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use atoll_api::cluster::{ManagedCluster, cluster_namespace, is_available, lease_live};
use atoll_api::clusterset::{
    ManagedClusterSet, ManagedClusterSetBinding, builtin_set_spec, set_selects,
};
use atoll_api::ingress::{
    ANNOTATION_LOAD_BALANCE, ANNOTATION_PREFER_CLUSTER, ANNOTATION_UPSTREAM_TIMEOUT, BackendStatus,
    ClusterEndpoints, MultiClusterIngress,
};
use atoll_api::mcs::ExportedService;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{IngressBackend, ServiceBackendPort};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use rustls::sign::CertifiedKey;

use crate::balance::{Endpoint, Policy, Registry};
use crate::routes::{PathType, Table};

/// How long an upstream may take to start answering, unless the ingress says otherwise.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// One place requests of a route go: a backend Service port of one ingress.
#[derive(Debug)]
pub struct Route {
    /// `namespace/name` of the ingress.
    pub ingress: String,
    /// `namespace/name` of the Service.
    pub service: String,
    /// The Service port as the backend names it.
    pub port: String,
    pub policy: Policy,
    pub prefer: Option<String>,
    pub timeout: Duration,
    pub endpoints: Vec<Upstream>,
    /// The route's request counter, for round robin.
    pub turn: AtomicUsize,
}

/// One ready endpoint of a route, in one cluster.
#[derive(Debug)]
pub struct Upstream {
    pub cluster: String,
    pub state: Arc<Endpoint>,
}

/// What an ingress's status is to say (the status writer adds the address and times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    /// Problems with the ingress (routes an older ingress has, missing Secrets, bad
    /// annotations); none means every part of it is in use.
    pub problems: Vec<String>,
    pub backends: Vec<BackendStatus>,
}

/// Certificates by TLS host: exact hosts, wildcards by their suffix, and the default for a
/// `tls` entry without hosts.
#[derive(Debug, Default)]
pub struct Certs {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl Certs {
    /// The certificate for an SNI name (lower case).
    pub fn get(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let by_name = sni.and_then(|name| {
            self.exact.get(name).or_else(|| {
                let dot = name.find('.')?;
                (dot > 0).then(|| self.wildcard.get(&name[dot..])).flatten()
            })
        });
        by_name.or(self.default.as_ref()).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }
}

/// The configuration requests are served with; swapped whole when anything changes.
#[derive(Debug, Default)]
pub struct Config {
    pub table: Table<Route>,
    pub certs: Certs,
    pub reports: Vec<Report>,
}

/// What the hub holds, as the watches last saw it.
pub struct World {
    pub ingresses: Vec<Arc<MultiClusterIngress>>,
    pub exports: Vec<Arc<ExportedService>>,
    pub clusters: Vec<Arc<ManagedCluster>>,
    pub sets: Vec<Arc<ManagedClusterSet>>,
    pub bindings: Vec<Arc<ManagedClusterSetBinding>>,
    /// Each cluster's lease renewal, by cluster name.
    pub leases: HashMap<String, Timestamp>,
    pub secrets: Vec<Arc<Secret>>,
    pub now: Timestamp,
    /// Lease durations without a renewal after which a cluster takes no traffic.
    pub grace_periods: f64,
}

/// A backend's endpoints and what the status says of them.
struct Resolved {
    endpoints: Vec<(String, SocketAddr)>,
    clusters: Vec<ClusterEndpoints>,
}

impl World {
    /// The clusters whose Services an ingress in `namespace` may route to.
    fn clusters_of(&self, namespace: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for b in self
            .bindings
            .iter()
            .filter(|b| b.namespace().as_deref() == Some(namespace))
        {
            let set = &b.spec.cluster_set;
            if b.name_any() != *set {
                continue;
            }
            let spec = self
                .sets
                .iter()
                .find(|s| s.name_any() == *set)
                .map(|s| s.spec.clone())
                .or_else(|| builtin_set_spec(set));
            let Some(spec) = spec else { continue };
            for mc in &self.clusters {
                if set_selects(set, &spec.cluster_selector, mc.labels()) {
                    out.insert(mc.name_any());
                }
            }
        }
        out
    }

    fn live(&self, mc: &ManagedCluster) -> bool {
        lease_live(
            self.leases.get(&mc.name_any()).copied(),
            mc.spec.lease_duration_seconds,
            self.grace_periods,
            is_available(mc),
            self.now,
        )
    }

    /// The endpoints of `namespace/service` at the Service port `port` in `clusters`.
    fn resolve(
        &self,
        namespace: &str,
        service: &str,
        port: &ServiceBackendPort,
        clusters: &BTreeSet<String>,
    ) -> Resolved {
        let mut out = Resolved {
            endpoints: Vec::new(),
            clusters: Vec::new(),
        };
        let mut exports: Vec<&ExportedService> = self
            .exports
            .iter()
            .map(Arc::as_ref)
            .filter(|e| {
                e.spec.namespace == namespace
                    && e.spec.name == service
                    && clusters.contains(&e.spec.cluster)
                    && e.namespace().as_deref() == Some(&cluster_namespace(&e.spec.cluster))
            })
            .collect();
        exports.sort_by(|a, b| a.spec.cluster.cmp(&b.spec.cluster));
        for e in exports {
            let cluster = &e.spec.cluster;
            let live = self
                .clusters
                .iter()
                .find(|mc| mc.name_any() == *cluster)
                .is_some_and(|mc| self.live(mc));
            let mut ready = 0;
            if live {
                for addr in export_endpoints(e, port) {
                    out.endpoints.push((cluster.clone(), addr));
                    ready += 1;
                }
            }
            out.clusters.push(ClusterEndpoints {
                cluster: cluster.clone(),
                ready,
            });
        }
        out
    }
}

/// The ready addresses of one cluster's export at the Service port `port`.
pub fn export_endpoints(e: &ExportedService, port: &ServiceBackendPort) -> Vec<SocketAddr> {
    let tcp = |p: &Option<String>| p.as_deref().is_none_or(|p| p == "TCP");
    let svc_port = e.spec.service.ports.iter().find(|p| {
        tcp(&p.protocol)
            && match (&port.number, &port.name) {
                (Some(n), _) => p.port == *n,
                (None, Some(name)) => p.name == *name,
                (None, None) => false,
            }
    });
    let Some(svc_port) = svc_port else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for slice in &e.spec.slices {
        let Some(target) = slice.ports.iter().find_map(|p| {
            (p.name.as_deref().unwrap_or_default() == svc_port.name && tcp(&p.protocol))
                .then_some(p.port)
                .flatten()
        }) else {
            continue;
        };
        let Ok(target) = u16::try_from(target) else {
            continue;
        };
        for ep in &slice.endpoints {
            let conditions = ep.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    out.push(SocketAddr::new(ip, target));
                }
            }
        }
    }
    out
}

fn port_text(p: &ServiceBackendPort) -> String {
    match (&p.number, &p.name) {
        (Some(n), _) => n.to_string(),
        (None, Some(name)) => name.clone(),
        (None, None) => String::new(),
    }
}

/// A duration as annotations write it: `30s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs > 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
}

/// A `kubernetes.io/tls` Secret's certificate chain and key.
fn certified_key(secret: &Secret) -> Result<CertifiedKey, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let data = secret.data.as_ref();
    let field = |k: &str| {
        data.and_then(|d| d.get(k))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| format!("has no {k}"))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(field("tls.crt")?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(field("tls.key")?)
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| format!("its key and certificate do not go together: {e}"))
}

/// Build the configuration. `registry` keeps the endpoints' state; those no route has any more
/// are forgotten.
pub fn build(world: &World, registry: &Registry) -> Config {
    let mut ingresses: Vec<&MultiClusterIngress> =
        world.ingresses.iter().map(Arc::as_ref).collect();
    // Oldest first: an older ingress keeps a host and path a newer one also names.
    ingresses.sort_by(|a, b| {
        let at = |i: &MultiClusterIngress| i.metadata.creation_timestamp.as_ref().map(|t| t.0);
        at(a)
            .cmp(&at(b))
            .then_with(|| a.namespace().cmp(&b.namespace()))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let mut config = Config::default();
    let mut in_use: HashSet<SocketAddr> = HashSet::new();
    let mut certs_taken: HashSet<String> = HashSet::new();
    for mci in ingresses {
        let namespace = mci.namespace().unwrap_or_default();
        let name = mci.name_any();
        let clusters = world.clusters_of(&namespace);
        let mut problems = Vec::new();
        let annotations = mci.annotations();
        let policy = match annotations.get(ANNOTATION_LOAD_BALANCE) {
            None => Policy::default(),
            Some(v) => Policy::parse(v).unwrap_or_else(|| {
                problems.push(format!(
                    "annotation {ANNOTATION_LOAD_BALANCE}={v:?} is not round-robin or least-request; round-robin is used"
                ));
                Policy::default()
            }),
        };
        let prefer = annotations.get(ANNOTATION_PREFER_CLUSTER).cloned();
        let timeout = match annotations.get(ANNOTATION_UPSTREAM_TIMEOUT) {
            None => DEFAULT_UPSTREAM_TIMEOUT,
            Some(v) => parse_duration(v).unwrap_or_else(|| {
                problems.push(format!(
                    "annotation {ANNOTATION_UPSTREAM_TIMEOUT}={v:?} is not a duration such as 30s or 500ms; {}s is used",
                    DEFAULT_UPSTREAM_TIMEOUT.as_secs()
                ));
                DEFAULT_UPSTREAM_TIMEOUT
            }),
        };
        // One route per backend of this ingress, shared by the paths that name it.
        let mut routes: BTreeMap<(String, String), Arc<Route>> = BTreeMap::new();
        let mut backends: BTreeMap<(String, String), BackendStatus> = BTreeMap::new();
        let mut route_for = |backend: &IngressBackend, problems: &mut Vec<String>| {
            let Some(svc) = backend.service.as_ref() else {
                problems.push(
                    "a backend names a resource, not a Service; only Services are served".into(),
                );
                return None;
            };
            let Some(port) = svc
                .port
                .as_ref()
                .filter(|p| p.number.is_some() || p.name.is_some())
            else {
                problems.push(format!("backend Service {} names no port", svc.name));
                return None;
            };
            let key = (svc.name.clone(), port_text(port));
            if let Some(r) = routes.get(&key) {
                return Some(r.clone());
            }
            let resolved = world.resolve(&namespace, &svc.name, port, &clusters);
            let endpoints = resolved
                .endpoints
                .into_iter()
                .map(|(cluster, addr)| {
                    in_use.insert(addr);
                    Upstream {
                        cluster,
                        state: registry.get(addr),
                    }
                })
                .collect();
            backends.insert(
                key.clone(),
                BackendStatus {
                    service: svc.name.clone(),
                    port: key.1.clone(),
                    clusters: resolved.clusters,
                },
            );
            let route = Arc::new(Route {
                ingress: format!("{namespace}/{name}"),
                service: format!("{namespace}/{}", svc.name),
                port: key.1.clone(),
                policy,
                prefer: prefer.clone(),
                timeout,
                endpoints,
                turn: AtomicUsize::new(0),
            });
            routes.insert(key, route.clone());
            Some(route)
        };
        let mut hosts: Vec<Option<String>> = Vec::new();
        for rule in mci.spec.rules.iter().flatten() {
            let host = rule
                .host
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(str::to_ascii_lowercase);
            hosts.push(host.clone());
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let Some(path_type) = PathType::parse(&p.path_type) else {
                    problems.push(format!(
                        "pathType {:?} is not Exact, Prefix or ImplementationSpecific",
                        p.path_type
                    ));
                    continue;
                };
                let path = p.path.as_deref().unwrap_or("/");
                if !path.starts_with('/') {
                    problems.push(format!("path {path:?} does not start with /"));
                    continue;
                }
                let Some(route) = route_for(&p.backend, &mut problems) else {
                    continue;
                };
                if let Err(shadowed) = config.table.add(host.as_deref(), path, path_type, route) {
                    problems.push(format!(
                        "host {} path {} is routed by an older MultiClusterIngress",
                        shadowed.host, shadowed.path
                    ));
                }
            }
        }
        if let Some(backend) = &mci.spec.default_backend
            && let Some(route) = route_for(backend, &mut problems)
        {
            let hosts: Vec<Option<&str>> = hosts.iter().map(|h| h.as_deref()).collect();
            config.table.add_default(&hosts, route);
        }
        for tls in mci.spec.tls.iter().flatten() {
            let Some(secret_name) = tls.secret_name.as_deref() else {
                problems.push("a tls entry names no secretName".into());
                continue;
            };
            let secret = world.secrets.iter().find(|s| {
                s.namespace().as_deref() == Some(&namespace) && s.name_any() == secret_name
            });
            let key = match secret.map(|s| certified_key(s)) {
                None => {
                    problems.push(format!(
                        "TLS Secret {namespace}/{secret_name} does not exist (or is not of type kubernetes.io/tls)"
                    ));
                    continue;
                }
                Some(Err(why)) => {
                    problems.push(format!("TLS Secret {namespace}/{secret_name} {why}"));
                    continue;
                }
                Some(Ok(k)) => Arc::new(k),
            };
            let tls_hosts = tls.hosts.clone().unwrap_or_default();
            if tls_hosts.is_empty() && config.certs.default.is_none() {
                config.certs.default = Some(key.clone());
            }
            for h in tls_hosts {
                let h = h.to_ascii_lowercase();
                if !certs_taken.insert(h.clone()) {
                    problems.push(format!(
                        "TLS host {h} has a certificate from an older MultiClusterIngress"
                    ));
                    continue;
                }
                match h.strip_prefix('*') {
                    Some(suffix) => config
                        .certs
                        .wildcard
                        .insert(suffix.to_string(), key.clone()),
                    None => config.certs.exact.insert(h, key.clone()),
                };
            }
        }
        config.reports.push(Report {
            namespace: namespace.clone(),
            name: name.clone(),
            generation: mci.metadata.generation,
            problems,
            backends: backends.into_values().collect(),
        });
    }
    registry.retain(&in_use);
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_api::cluster::ManagedClusterSpec;
    use atoll_api::clusterset::{CLUSTERSET_LABEL, ManagedClusterSetBindingSpec};
    use atoll_api::ingress::MultiClusterIngressSpec;
    use atoll_api::mcs::{ExportedServiceSpec, ExportedSlice, v1beta1};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().expect("a time")
    }

    fn cluster(name: &str, set: &str) -> Arc<ManagedCluster> {
        let mut mc = ManagedCluster::new(
            name,
            ManagedClusterSpec {
                lease_duration_seconds: 10,
                ..Default::default()
            },
        );
        mc.metadata.labels = Some([(CLUSTERSET_LABEL.to_string(), set.to_string())].into());
        Arc::new(mc)
    }

    fn binding(namespace: &str, set: &str) -> Arc<ManagedClusterSetBinding> {
        let mut b = ManagedClusterSetBinding::new(
            set,
            ManagedClusterSetBindingSpec {
                cluster_set: set.into(),
            },
        );
        b.metadata.namespace = Some(namespace.into());
        Arc::new(b)
    }

    /// `cluster`'s export of `demo/web` (port `http` 80 -> 8080) with `ready` and one unready
    /// endpoint, recorded in `record_ns`.
    fn export(cluster: &str, record_ns: &str, ready: &[&str]) -> Arc<ExportedService> {
        let mut endpoints: Vec<SliceEndpoint> = ready
            .iter()
            .map(|ip| SliceEndpoint {
                addresses: vec![ip.to_string()],
                ..Default::default()
            })
            .collect();
        endpoints.push(SliceEndpoint {
            addresses: vec!["127.9.9.9".into()],
            conditions: Some(EndpointConditions {
                ready: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut e = ExportedService::new(
            "demo.web",
            ExportedServiceSpec {
                cluster: cluster.into(),
                namespace: "demo".into(),
                name: "web".into(),
                service: v1beta1::ServiceImportSpec {
                    ports: vec![v1beta1::ServicePort {
                        name: "http".into(),
                        port: 80,
                        ..Default::default()
                    }],
                    type_: "ClusterSetIP".into(),
                    ..Default::default()
                },
                slices: vec![ExportedSlice {
                    address_type: "IPv4".into(),
                    endpoints,
                    ports: vec![EndpointPort {
                        name: Some("http".into()),
                        port: Some(8080),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            },
        );
        e.metadata.namespace = Some(record_ns.into());
        Arc::new(e)
    }

    fn ingress(name: &str, age: i64, spec: serde_json::Value) -> Arc<MultiClusterIngress> {
        let mut mci = MultiClusterIngress::new(
            name,
            serde_json::from_value::<MultiClusterIngressSpec>(spec).expect("a spec"),
        );
        mci.metadata.namespace = Some("demo".into());
        mci.metadata.generation = Some(1);
        mci.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                now() - k8s_openapi::jiff::SignedDuration::from_secs(age),
            ));
        Arc::new(mci)
    }

    fn web_rule(host: &str, port: serde_json::Value) -> serde_json::Value {
        json!({"rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": port}}}
        ]}}]})
    }

    fn world(ingresses: Vec<Arc<MultiClusterIngress>>) -> World {
        World {
            ingresses,
            exports: vec![
                export("m1", "atoll-cluster-m1", &["127.1.0.1"]),
                export("m2", "atoll-cluster-m2", &["127.2.0.1", "127.2.0.2"]),
                // Outside the bound set.
                export("m3", "atoll-cluster-m3", &["127.3.0.1"]),
                // A record of m1's written into m2's namespace: not trusted.
                export("m1", "atoll-cluster-m2", &["127.6.6.6"]),
            ],
            clusters: vec![
                cluster("m1", "prod"),
                cluster("m2", "prod"),
                cluster("m3", "other"),
            ],
            sets: vec![Arc::new(ManagedClusterSet::new("prod", Default::default()))],
            bindings: vec![binding("demo", "prod")],
            leases: [
                ("m1".to_string(), now()),
                ("m2".to_string(), now()),
                ("m3".to_string(), now()),
            ]
            .into(),
            secrets: vec![],
            now: now(),
            grace_periods: 2.0,
        }
    }

    fn addrs(route: &Route) -> Vec<String> {
        route
            .endpoints
            .iter()
            .map(|u| format!("{}={}", u.cluster, u.state.addr))
            .collect()
    }

    #[test]
    fn a_backend_has_the_ready_endpoints_of_the_bound_sets_exporting_clusters() {
        let registry = Registry::default();
        for port in [json!({"number": 80}), json!({"name": "http"})] {
            let w = world(vec![ingress("web", 10, web_rule("a.example", port))]);
            let config = build(&w, &registry);
            let route = config.table.lookup("a.example", "/").expect("a route");
            assert_eq!(
                addrs(route),
                [
                    "m1=127.1.0.1:8080",
                    "m2=127.2.0.1:8080",
                    "m2=127.2.0.2:8080"
                ]
            );
            assert_eq!(
                config.reports[0].backends[0].clusters,
                [
                    ClusterEndpoints {
                        cluster: "m1".into(),
                        ready: 1
                    },
                    ClusterEndpoints {
                        cluster: "m2".into(),
                        ready: 2
                    },
                ]
            );
            assert!(config.reports[0].problems.is_empty());
        }
    }

    #[test]
    fn a_cluster_past_its_lease_grace_takes_no_traffic() {
        let registry = Registry::default();
        let mut w = world(vec![ingress(
            "web",
            10,
            web_rule("a.example", json!({"number": 80})),
        )]);
        w.leases.insert(
            "m1".into(),
            now() - k8s_openapi::jiff::SignedDuration::from_secs(21),
        );
        let config = build(&w, &registry);
        let route = config.table.lookup("a.example", "/").expect("a route");
        assert_eq!(addrs(route), ["m2=127.2.0.1:8080", "m2=127.2.0.2:8080"]);
        assert_eq!(config.reports[0].backends[0].clusters[0].ready, 0);
    }

    #[test]
    fn no_binding_no_endpoints_and_an_unknown_port_none_either() {
        let registry = Registry::default();
        let mut w = world(vec![ingress(
            "web",
            10,
            web_rule("a.example", json!({"number": 80})),
        )]);
        w.bindings.clear();
        let config = build(&w, &registry);
        assert!(
            config
                .table
                .lookup("a.example", "/")
                .expect("a route")
                .endpoints
                .is_empty()
        );
        let w = world(vec![ingress(
            "web",
            10,
            web_rule("a.example", json!({"number": 81})),
        )]);
        let config = build(&w, &registry);
        assert!(
            config
                .table
                .lookup("a.example", "/")
                .expect("a route")
                .endpoints
                .is_empty()
        );
    }

    #[test]
    fn the_newer_of_two_ingresses_for_one_host_and_path_is_told() {
        let registry = Registry::default();
        let w = world(vec![
            ingress("newer", 5, web_rule("a.example", json!({"number": 80}))),
            ingress("older", 10, web_rule("a.example", json!({"number": 80}))),
        ]);
        let config = build(&w, &registry);
        let route = config.table.lookup("a.example", "/").expect("a route");
        assert_eq!(route.ingress, "demo/older");
        let newer = config
            .reports
            .iter()
            .find(|r| r.name == "newer")
            .expect("a report");
        assert_eq!(
            newer.problems,
            ["host a.example path / is routed by an older MultiClusterIngress"]
        );
    }

    #[test]
    fn annotations_set_the_policy_and_bad_ones_are_reported() {
        let registry = Registry::default();
        let mut mci = (*ingress("web", 10, web_rule("a.example", json!({"number": 80})))).clone();
        mci.metadata.annotations = Some(
            [
                (
                    ANNOTATION_LOAD_BALANCE.to_string(),
                    "least-request".to_string(),
                ),
                (ANNOTATION_PREFER_CLUSTER.to_string(), "m2".to_string()),
                (ANNOTATION_UPSTREAM_TIMEOUT.to_string(), "soon".to_string()),
            ]
            .into(),
        );
        let config = build(&world(vec![Arc::new(mci)]), &registry);
        let route = config.table.lookup("a.example", "/").expect("a route");
        assert_eq!(route.policy, Policy::LeastRequest);
        assert_eq!(route.prefer.as_deref(), Some("m2"));
        assert_eq!(route.timeout, DEFAULT_UPSTREAM_TIMEOUT);
        assert_eq!(config.reports[0].problems.len(), 1);
        assert!(config.reports[0].problems[0].contains("not a duration"));
    }

    #[test]
    fn a_missing_tls_secret_is_reported() {
        let registry = Registry::default();
        let mut spec = web_rule("a.example", json!({"number": 80}));
        spec["tls"] = json!([{"hosts": ["a.example"], "secretName": "a-tls"}]);
        let config = build(&world(vec![ingress("web", 10, spec)]), &registry);
        assert!(config.certs.is_empty());
        assert!(config.reports[0].problems[0].contains("demo/a-tls does not exist"));
    }

    #[test]
    fn durations_read_as_annotations_write_them() {
        let cases = [
            ("30s", Some(Duration::from_secs(30))),
            ("500ms", Some(Duration::from_millis(500))),
            ("2m", Some(Duration::from_secs(120))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("0s", None),
            ("30", None),
            ("soon", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s), want, "{s:?}");
        }
    }
}
