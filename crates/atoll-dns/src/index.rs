//! What the DNS server answers from: the cluster's Services, their endpoints and its pods'
//! addresses, kept in memory from watches. Nothing here does I/O; the watches call in.
//!
//! Names are kept lowercased: the specification compares query names with Kubernetes names
//! case-insensitively.
//!
//! Multi-cluster services (`clusterset.local`) are kept beside, apart: the `ServiceImport`s of
//! the cluster and the EndpointSlices imported for them (labelled with the service and their
//! source cluster), which are also the derived Services' slices in the cluster's own zone.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Labels and manager of the EndpointSlices imported for multi-cluster services.
const MCS_SERVICE_LABEL: &str = "multicluster.kubernetes.io/service-name";
const MCS_SOURCE_LABEL: &str = "multicluster.kubernetes.io/source-cluster";
const MCS_SLICE_MANAGER: &str = "mcs-controller.atoll.io";

/// (namespace, name), lowercased.
pub type Key = (String, String);

/// The annotation that, before `publishNotReadyAddresses`, made every endpoint ready to DNS.
const TOLERATE_UNREADY: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Service with ClusterIPs (one per family).
    ClusterIp(Vec<IpAddr>),
    /// No ClusterIP: its names answer with its ready endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME to this name.
    ExternalName(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// `tcp`, `udp` or `sctp`, lowercased as SRV names have them.
    pub protocol: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub kind: Kind,
    pub ports: Vec<Port>,
    /// Every endpoint counts as ready (the tolerate-unready annotation).
    pub all_ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    /// Its own name under the Service: `hostname` when set, else its address with dashes.
    pub hostname: String,
    pub ready: bool,
    /// The cluster it is in, for imported endpoints (`<hostname>.<cluster>.<svc>...`); empty
    /// for the cluster's own.
    pub cluster: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Slice {
    service: String,
    endpoints: Vec<Endpoint>,
    ports: Vec<Port>,
}

/// The index. `generation` moves on every change, so a cache of answers knows it is stale.
#[derive(Debug, Default)]
pub struct Index {
    services: HashMap<Key, ServiceEntry>,
    /// Services per namespace: `<ns>.svc.<zone>` exists while there is one.
    namespaces: HashMap<String, usize>,
    slices: HashMap<Key, Slice>,
    /// A Service's slices, by slice name.
    by_service: HashMap<Key, BTreeSet<String>>,
    cluster_ips: HashMap<IpAddr, BTreeSet<Key>>,
    /// Which slices hold an address: (namespace, slice name).
    endpoint_ips: HashMap<IpAddr, BTreeSet<Key>>,
    /// Pods by address: (namespace, name).
    pod_ips: HashMap<IpAddr, BTreeSet<Key>>,
    /// Where each pod was, to take it out when it moves or goes.
    pods: HashMap<Key, IpAddr>,
    /// Multi-cluster services: ServiceImports as entries (their ClusterSetIPs, or headless).
    imports: HashMap<Key, ServiceEntry>,
    import_namespaces: HashMap<String, usize>,
    /// Imported slices by (namespace, slice name), and per import their names.
    mcs_slices: HashMap<Key, Slice>,
    mcs_by_import: HashMap<Key, BTreeSet<String>>,
    /// The clusters the peering domain publishes, sorted by id.
    peers: Vec<crate::peering::Peer>,
    generation: u64,
}

/// What a query found under `<svc>.<ns>.svc`.
pub struct ServiceView<'a> {
    pub entry: &'a ServiceEntry,
    /// Its ready endpoints, with the ports of their slices.
    pub endpoints: Vec<(&'a Endpoint, &'a [Port])>,
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// An address as a DNS label: dots (or colons) as dashes, as CoreDNS names endpoints and
/// pods (`10-1-2-3`).
pub fn dashed(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

impl Index {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn peers(&self) -> &[crate::peering::Peer] {
        &self.peers
    }

    /// Replace the clusters the peering domain publishes (one per id).
    pub fn set_peers(&mut self, mut peers: Vec<crate::peering::Peer>) {
        peers.sort();
        peers.dedup_by(|a, b| a.cluster_id == b.cluster_id);
        if peers != self.peers {
            self.peers = peers;
            self.generation += 1;
        }
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn has_namespace(&self, ns: &str) -> bool {
        self.namespaces.contains_key(ns)
    }

    pub fn has_services(&self) -> bool {
        !self.services.is_empty()
    }

    /// A Service and its ready endpoints; `ns` and `name` lowercased.
    pub fn service(&self, ns: &str, name: &str) -> Option<ServiceView<'_>> {
        let key = (ns.to_string(), name.to_string());
        let entry = self.services.get(&key)?;
        let mut endpoints = Vec::new();
        for slice_name in self.by_service.get(&key).into_iter().flatten() {
            let Some(slice) = self.slices.get(&(ns.to_string(), slice_name.clone())) else {
                continue;
            };
            for e in &slice.endpoints {
                if e.ready || entry.all_ready {
                    endpoints.push((e, slice.ports.as_slice()));
                }
            }
        }
        Some(ServiceView { entry, endpoints })
    }

    pub fn has_import_namespace(&self, ns: &str) -> bool {
        self.import_namespaces.contains_key(ns)
    }

    /// A multi-cluster service (its ServiceImport) and the ready endpoints of every exporting
    /// cluster; `ns` and `name` lowercased.
    pub fn import(&self, ns: &str, name: &str) -> Option<ServiceView<'_>> {
        let key = (ns.to_string(), name.to_string());
        let entry = self.imports.get(&key)?;
        let mut endpoints = Vec::new();
        for slice_name in self.mcs_by_import.get(&key).into_iter().flatten() {
            let Some(slice) = self.mcs_slices.get(&(ns.to_string(), slice_name.clone())) else {
                continue;
            };
            for e in &slice.endpoints {
                if e.ready {
                    endpoints.push((e, slice.ports.as_slice()));
                }
            }
        }
        Some(ServiceView { entry, endpoints })
    }

    pub fn import_keys(&self) -> Vec<Key> {
        self.imports.keys().cloned().collect()
    }

    /// A ServiceImport (`multicluster.x-k8s.io`), read loosely: `spec.type`, `spec.ips`,
    /// `spec.ports`.
    pub fn set_import(&mut self, import: &kube::api::DynamicObject) {
        let (Some(ns), Some(name)) = (&import.metadata.namespace, &import.metadata.name) else {
            return;
        };
        let key = (lower(ns), lower(name));
        let spec = import.data.get("spec").cloned().unwrap_or_default();
        let kind = if spec.get("type").and_then(|t| t.as_str()) == Some("Headless") {
            Kind::Headless
        } else {
            let mut ips: Vec<IpAddr> = spec
                .get("ips")
                .and_then(|i| i.as_array())
                .into_iter()
                .flatten()
                .filter_map(|ip| ip.as_str()?.parse().ok())
                .collect();
            ips.sort();
            ips.dedup();
            Kind::ClusterIp(ips)
        };
        let ports = spec
            .get("ports")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let text = |k: &str| p.get(k).and_then(|v| v.as_str()).map(String::from);
                let number = p
                    .get("port")
                    .and_then(|n| n.as_i64())
                    .and_then(|n| i32::try_from(n).ok());
                port(text("name").as_ref(), text("protocol").as_ref(), number)
            })
            .collect();
        let entry = ServiceEntry {
            kind,
            ports,
            all_ready: false,
        };
        if self.imports.get(&key) == Some(&entry) {
            return;
        }
        if self.imports.insert(key.clone(), entry).is_none() {
            *self.import_namespaces.entry(key.0).or_default() += 1;
        }
        self.generation += 1;
    }

    pub fn remove_import(&mut self, ns: &str, name: &str) {
        let key = (lower(ns), lower(name));
        if self.imports.remove(&key).is_none() {
            return;
        }
        if let Some(n) = self.import_namespaces.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.import_namespaces.remove(&key.0);
            }
        }
        self.generation += 1;
    }

    /// An imported slice, under the multi-cluster service it belongs to.
    fn set_mcs_slice(&mut self, key: &Key, slice: &EndpointSlice) {
        let labels = slice.metadata.labels.clone().unwrap_or_default();
        let imported = labels
            .get("endpointslice.kubernetes.io/managed-by")
            .map(String::as_str)
            == Some(MCS_SLICE_MANAGER);
        let (Some(service), Some(source), true) = (
            labels.get(MCS_SERVICE_LABEL),
            labels.get(MCS_SOURCE_LABEL),
            imported,
        ) else {
            self.remove_mcs_slice(key);
            return;
        };
        let mut entry = slice_entry(slice, lower(service));
        for e in entry.endpoints.iter_mut() {
            e.cluster = lower(source);
        }
        if self.mcs_slices.get(key) == Some(&entry) {
            return;
        }
        self.remove_mcs_slice(key);
        self.mcs_by_import
            .entry((key.0.clone(), entry.service.clone()))
            .or_default()
            .insert(key.1.clone());
        self.mcs_slices.insert(key.clone(), entry);
        self.generation += 1;
    }

    fn remove_mcs_slice(&mut self, key: &Key) {
        let Some(old) = self.mcs_slices.remove(key) else {
            return;
        };
        let import = (key.0.clone(), old.service.clone());
        if let Some(set) = self.mcs_by_import.get_mut(&import) {
            set.remove(&key.1);
            if set.is_empty() {
                self.mcs_by_import.remove(&import);
            }
        }
        self.generation += 1;
    }

    /// The names an address answers to in reverse: the Services it is the ClusterIP of, the
    /// endpoints it is the address of (`<hostname>.<svc>.<ns>`), else a pod's
    /// (`<dashed>.<ns>.pod`); relative to the zone, sorted.
    pub fn reverse(&self, ip: &IpAddr) -> Vec<String> {
        let mut names = BTreeSet::new();
        for (ns, name) in self.cluster_ips.get(ip).into_iter().flatten() {
            names.insert(format!("{name}.{ns}.svc"));
        }
        for (ns, slice_name) in self.endpoint_ips.get(ip).into_iter().flatten() {
            let Some(slice) = self.slices.get(&(ns.clone(), slice_name.clone())) else {
                continue;
            };
            let key = (ns.clone(), slice.service.clone());
            let Some(svc) = self.services.get(&key) else {
                continue;
            };
            for e in &slice.endpoints {
                if (e.ready || svc.all_ready) && e.addresses.contains(ip) {
                    names.insert(format!("{}.{}.{ns}.svc", e.hostname, slice.service));
                }
            }
        }
        if names.is_empty() {
            for (ns, _) in self.pod_ips.get(ip).into_iter().flatten() {
                names.insert(format!("{}.{ns}.pod", dashed(ip)));
            }
        }
        names.into_iter().collect()
    }

    pub fn service_keys(&self) -> Vec<Key> {
        self.services.keys().cloned().collect()
    }

    pub fn slice_keys(&self) -> Vec<Key> {
        let mut keys: BTreeSet<Key> = self.slices.keys().cloned().collect();
        keys.extend(self.mcs_slices.keys().cloned());
        keys.into_iter().collect()
    }

    pub fn pod_keys(&self) -> Vec<Key> {
        self.pods.keys().cloned().collect()
    }

    pub fn set_service(&mut self, svc: &Service) {
        let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
            return;
        };
        let key = (lower(ns), lower(name));
        let entry = service_entry(svc);
        if self.services.get(&key) == Some(&entry) {
            return;
        }
        self.remove_service(&key.0, &key.1);
        if let Kind::ClusterIp(ips) = &entry.kind {
            for ip in ips {
                self.cluster_ips.entry(*ip).or_default().insert(key.clone());
            }
        }
        *self.namespaces.entry(key.0.clone()).or_default() += 1;
        self.services.insert(key, entry);
        self.generation += 1;
    }

    pub fn remove_service(&mut self, ns: &str, name: &str) {
        let key = (lower(ns), lower(name));
        let Some(old) = self.services.remove(&key) else {
            return;
        };
        if let Kind::ClusterIp(ips) = &old.kind {
            for ip in ips {
                remove_from(&mut self.cluster_ips, ip, &key);
            }
        }
        if let Some(n) = self.namespaces.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.namespaces.remove(&key.0);
            }
        }
        self.generation += 1;
    }

    pub fn set_slice(&mut self, slice: &EndpointSlice) {
        let (Some(ns), Some(name)) = (&slice.metadata.namespace, &slice.metadata.name) else {
            return;
        };
        self.set_mcs_slice(&(lower(ns), lower(name)), slice);
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            // A slice of no Service answers no name (in this zone).
            self.remove_own_slice(&(lower(ns), lower(name)));
            return;
        };
        let key = (lower(ns), lower(name));
        let entry = slice_entry(slice, lower(service));
        if self.slices.get(&key) == Some(&entry) {
            return;
        }
        self.remove_own_slice(&key);
        for e in &entry.endpoints {
            for ip in &e.addresses {
                self.endpoint_ips
                    .entry(*ip)
                    .or_default()
                    .insert(key.clone());
            }
        }
        self.by_service
            .entry((key.0.clone(), entry.service.clone()))
            .or_default()
            .insert(key.1.clone());
        self.slices.insert(key, entry);
        self.generation += 1;
    }

    pub fn remove_slice(&mut self, ns: &str, name: &str) {
        let key = (lower(ns), lower(name));
        self.remove_mcs_slice(&key);
        self.remove_own_slice(&key);
    }

    /// A slice as one of a Service of this cluster.
    fn remove_own_slice(&mut self, key: &Key) {
        let key = key.clone();
        let Some(old) = self.slices.remove(&key) else {
            return;
        };
        for e in &old.endpoints {
            for ip in &e.addresses {
                remove_from(&mut self.endpoint_ips, ip, &key);
            }
        }
        let svc = (key.0.clone(), old.service.clone());
        if let Some(set) = self.by_service.get_mut(&svc) {
            set.remove(&key.1);
            if set.is_empty() {
                self.by_service.remove(&svc);
            }
        }
        self.generation += 1;
    }

    pub fn set_pod(&mut self, pod: &Pod) {
        let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            return;
        };
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .filter(|_| !host_network);
        let key = (lower(ns), lower(name));
        if self.pods.get(&key) == ip.as_ref() {
            return;
        }
        self.remove_pod(ns, name);
        if let Some(ip) = ip {
            self.pod_ips.entry(ip).or_default().insert(key.clone());
            self.pods.insert(key, ip);
            self.generation += 1;
        }
    }

    pub fn remove_pod(&mut self, ns: &str, name: &str) {
        let key = (lower(ns), lower(name));
        if let Some(ip) = self.pods.remove(&key) {
            remove_from(&mut self.pod_ips, &ip, &key);
            self.generation += 1;
        }
    }
}

fn remove_from(map: &mut HashMap<IpAddr, BTreeSet<Key>>, ip: &IpAddr, key: &Key) {
    if let Some(set) = map.get_mut(ip) {
        set.remove(key);
        if set.is_empty() {
            map.remove(ip);
        }
    }
}

fn port(name: Option<&String>, protocol: Option<&String>, number: Option<i32>) -> Option<Port> {
    Some(Port {
        name: lower(name.map(String::as_str).unwrap_or_default()),
        protocol: lower(protocol.map(String::as_str).unwrap_or("TCP")),
        port: u16::try_from(number?).ok()?,
    })
}

fn service_entry(svc: &Service) -> ServiceEntry {
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        Kind::ExternalName(
            spec.external_name
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
        )
    } else {
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        if ips.is_empty() {
            Kind::Headless
        } else {
            Kind::ClusterIp(ips)
        }
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| port(p.name.as_ref(), p.protocol.as_ref(), Some(p.port)))
        .collect();
    let all_ready = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TOLERATE_UNREADY))
        .is_some_and(|v| v == "true");
    ServiceEntry {
        kind,
        ports,
        all_ready,
    }
}

fn slice_entry(slice: &EndpointSlice, service: String) -> Slice {
    let endpoints = slice
        .endpoints
        .iter()
        .filter_map(|e| {
            let addresses: Vec<IpAddr> =
                e.addresses.iter().filter_map(|a| a.parse().ok()).collect();
            let first = addresses.first()?;
            let hostname = e
                .hostname
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(lower)
                .unwrap_or_else(|| dashed(first));
            // Absent means ready, as the API says.
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            Some(Endpoint {
                addresses,
                hostname,
                ready,
                cluster: String::new(),
            })
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| port(p.name.as_ref(), p.protocol.as_ref(), p.port))
        .collect();
    Slice {
        service,
        endpoints,
        ports,
    }
}
