//! The answer to one question, from the index: the Kubernetes DNS specification (schema
//! 1.0.1) for the cluster's zone, PTR for the addresses the index knows, and the
//! Multi-Cluster Services DNS specification (schema 1.0.0) for `clusterset.local`. No I/O.
//!
//! What `clusterset.local` answers differently: the ServiceImports and their imported
//! endpoints instead of Services; per-endpoint names are `<hostname>.<clusterid>.<svc>.<ns>.
//! svc` (and `<clusterid>.<svc>...` does not exist); SRV records for the bare name are
//! collapsed (ports of several protocols with one number are one record); no pod names and no
//! PTR records (the specification requires none).
//!
//! Existence follows RFC 8020: a name that has records, or names below it, exists; a
//! question for a type it lacks is NODATA (NOERROR, no answers), a name that does not exist
//! is NXDOMAIN; both carry the zone's SOA so resolvers cache the negative answer briefly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::index::{Index, Kind, Port, ServiceView, dashed};

/// The TTL of every record, and of negative answers: short, as endpoints move.
pub const TTL: u32 = 5;
/// The schema of the Kubernetes DNS specification followed.
pub const SCHEMA_VERSION: &str = "1.0.1";
/// The schema of the Multi-Cluster Services DNS specification followed.
pub const CLUSTERSET_SCHEMA_VERSION: &str = "1.0.0";

/// Which specification a zone follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The cluster's own zone (`cluster.local`).
    Cluster,
    /// Multi-cluster services (`clusterset.local`).
    ClusterSet,
}
/// How many CNAMEs inside the zone are followed.
const MAX_CHAIN: usize = 8;

/// The zone served and the server's own addresses (the apex's NS, `ns.dns.<zone>`).
#[derive(Clone, Debug)]
pub struct Zone {
    origin: Name,
    /// The origin as text, lowercase, with its final dot: `cluster.local.`.
    origin_text: String,
    pub ns_addresses: Vec<IpAddr>,
    pub flavor: Flavor,
    /// The clusterset zone served beside this one.
    clusterset: Option<Box<Zone>>,
    /// The peering domain served beside this one (`peering.rs`).
    peering: Option<Name>,
}

impl Zone {
    pub fn new(zone: &str, ns_addresses: Vec<IpAddr>) -> Result<Zone, String> {
        let text = format!("{}.", zone.trim_matches('.').to_ascii_lowercase());
        if text == "." {
            return Err("the zone must not be the root".into());
        }
        let origin = Name::from_ascii(&text).map_err(|e| format!("zone {zone:?}: {e}"))?;
        Ok(Zone {
            origin,
            origin_text: text,
            ns_addresses,
            flavor: Flavor::Cluster,
            clusterset: None,
            peering: None,
        })
    }

    /// This zone with a multi-cluster services zone (`clusterset.local`) beside it.
    pub fn with_clusterset(mut self, zone: &str) -> Result<Zone, String> {
        let mut clusterset = Zone::new(zone, self.ns_addresses.clone())?;
        if clusterset.origin == self.origin {
            return Err(format!("the clusterset zone {zone:?} is the cluster's own"));
        }
        clusterset.flavor = Flavor::ClusterSet;
        self.clusterset = Some(Box::new(clusterset));
        Ok(self)
    }

    /// This zone with a peering domain beside it, publishing the clusters the server knows.
    pub fn with_peering(mut self, domain: &str) -> Result<Zone, String> {
        let text = format!("{}.", domain.trim_matches('.').to_ascii_lowercase());
        if text == "." {
            return Err("the peering domain must not be the root".into());
        }
        let name =
            Name::from_ascii(&text).map_err(|e| format!("peering domain {domain:?}: {e}"))?;
        let taken =
            std::iter::once(&self.origin).chain(self.clusterset.as_ref().map(|c| &c.origin));
        for zone in taken {
            if zone.zone_of(&name) || name.zone_of(zone) {
                return Err(format!(
                    "the peering domain {domain:?} overlaps the zone {zone}"
                ));
            }
        }
        self.peering = Some(name);
        Ok(self)
    }

    /// The peering domain served beside this zone, if any.
    pub fn peering(&self) -> Option<&Name> {
        self.peering.as_ref()
    }

    /// The clusterset zone served beside this one, if any.
    pub fn clusterset(&self) -> Option<&Zone> {
        self.clusterset.as_deref()
    }

    /// A service of this zone's kind: a Service, or (clusterset) a ServiceImport.
    fn view<'a>(&self, index: &'a Index, ns: &str, svc: &str) -> Option<ServiceView<'a>> {
        match self.flavor {
            Flavor::Cluster => index.service(ns, svc),
            Flavor::ClusterSet => index.import(ns, svc),
        }
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// `rel` (lowercase labels, dot-separated) under the zone.
    fn name(&self, rel: &str) -> Option<Name> {
        if rel.is_empty() {
            return Some(self.origin.clone());
        }
        Name::from_ascii(format!("{rel}.{}", self.origin_text)).ok()
    }

    fn soa(&self, serial: u64) -> Option<Record> {
        let soa = SOA::new(
            self.name("ns.dns")?,
            self.name("hostmaster")?,
            // Serials are 32 bits and may wrap (RFC 1982).
            serial as u32,
            7200,
            1800,
            86400,
            TTL,
        );
        Some(Record::from_rdata(
            self.origin.clone(),
            TTL,
            RData::SOA(soa),
        ))
    }
}

/// What a question comes to.
#[derive(Debug, PartialEq)]
pub enum Resolution {
    /// Not a name of ours: for the upstream resolvers.
    Elsewhere,
    Answer(Answer),
}

#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// The answer ends in a CNAME to a name outside the zone, which the server resolves
    /// upstream and appends (as CoreDNS does for ExternalName Services).
    pub chase: Option<Name>,
}

/// What a name under the zone came to before records are made.
enum Found {
    /// The name exists with these records (maybe none of the asked type: NODATA).
    Records(Vec<Record>, Vec<Record>),
    /// A CNAME at the name, to `target`.
    Alias(Name),
    NoName,
}

pub fn resolve(zone: &Zone, index: &Index, qname: &Name, qtype: RecordType) -> Resolution {
    let lname = qname.to_lowercase();
    if zone.origin.zone_of(&lname) {
        return Resolution::Answer(in_zone(zone, index, qname, &lname, qtype));
    }
    if let Some(clusterset) = zone.clusterset()
        && clusterset.origin.zone_of(&lname)
    {
        return Resolution::Answer(in_zone(clusterset, index, qname, &lname, qtype));
    }
    if let Some(domain) = &zone.peering
        && domain.zone_of(&lname)
    {
        return Resolution::Answer(crate::peering::answer(
            domain,
            &zone.ns_addresses,
            index.peers(),
            index.generation(),
            &lname,
            qtype,
        ));
    }
    if let Some(ip) = reverse_address(&lname) {
        let names = index.reverse(&ip);
        if names.is_empty() {
            // Not an address of this cluster's: the upstream resolvers' (CoreDNS's
            // `fallthrough in-addr.arpa ip6.arpa`).
            return Resolution::Elsewhere;
        }
        let mut answer = Answer::default();
        if matches!(qtype, RecordType::PTR | RecordType::ANY) {
            for n in names {
                if let Some(target) = zone.name(&n) {
                    answer.answers.push(Record::from_rdata(
                        qname.clone(),
                        TTL,
                        RData::PTR(PTR(target)),
                    ));
                }
            }
        }
        return Resolution::Answer(answer);
    }
    Resolution::Elsewhere
}

fn in_zone(zone: &Zone, index: &Index, qname: &Name, lname: &Name, qtype: RecordType) -> Answer {
    let mut answer = Answer::default();
    let mut owner = qname.clone();
    let mut current = lname.clone();
    for _ in 0..MAX_CHAIN {
        let rel = relative(zone, &current);
        match lookup(zone, index, &owner, &rel, qtype) {
            Found::Records(records, additional) => {
                let nodata = records.is_empty();
                answer.answers.extend(records);
                answer.additional.extend(additional);
                if nodata && answer.answers.is_empty() {
                    answer.authority.extend(zone.soa(index.generation()));
                }
                return answer;
            }
            Found::Alias(target) => {
                answer.answers.push(Record::from_rdata(
                    owner.clone(),
                    TTL,
                    RData::CNAME(CNAME(target.clone())),
                ));
                if qtype == RecordType::CNAME {
                    return answer;
                }
                let lower_target = target.to_lowercase();
                if !zone.origin.zone_of(&lower_target) {
                    answer.chase = Some(target);
                    return answer;
                }
                owner = target;
                current = lower_target;
            }
            Found::NoName => {
                // After a CNAME the answer is the CNAME's, NOERROR (RFC 6604 allows
                // NXDOMAIN; resolvers take either); for the name asked, NXDOMAIN.
                if answer.answers.is_empty() {
                    answer.rcode = ResponseCode::NXDomain;
                }
                answer.authority.extend(zone.soa(index.generation()));
                return answer;
            }
        }
    }
    // A loop of ExternalNames inside the zone.
    answer.rcode = ResponseCode::ServFail;
    answer
}

/// The labels of `name` below the zone, from the left, lowercase.
fn relative(zone: &Zone, name: &Name) -> Vec<String> {
    let n = usize::from(name.num_labels()).saturating_sub(usize::from(zone.origin.num_labels()));
    name.iter()
        .take(n)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect()
}

fn lookup(zone: &Zone, index: &Index, owner: &Name, rel: &[String], qtype: RecordType) -> Found {
    let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    let rec = |data: RData| Record::from_rdata(owner.clone(), TTL, data);
    let address_records = |ips: &mut dyn Iterator<Item = IpAddr>| -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        let mut seen = Vec::new();
        for ip in ips {
            if seen.contains(&ip) {
                continue;
            }
            seen.push(ip);
            match ip {
                IpAddr::V4(v4) if wants(RecordType::A) => out.push(rec(RData::A(A(v4)))),
                IpAddr::V6(v6) if wants(RecordType::AAAA) => out.push(rec(RData::AAAA(AAAA(v6)))),
                _ => {}
            }
        }
        out
    };
    let labels: Vec<&str> = rel.iter().map(String::as_str).collect();
    match labels.as_slice() {
        [] => {
            let mut records = Vec::new();
            let mut additional = Vec::new();
            if wants(RecordType::SOA) {
                records.extend(zone.soa(index.generation()));
            }
            if wants(RecordType::NS)
                && let Some(ns) = zone.name("ns.dns")
            {
                records.push(rec(RData::NS(NS(ns.clone()))));
                for ip in &zone.ns_addresses {
                    additional.push(Record::from_rdata(ns.clone(), TTL, address(*ip)));
                }
            }
            Found::Records(records, additional)
        }
        ["dns-version"] => {
            let mut records = Vec::new();
            if wants(RecordType::TXT) {
                let version = match zone.flavor {
                    Flavor::Cluster => SCHEMA_VERSION,
                    Flavor::ClusterSet => CLUSTERSET_SCHEMA_VERSION,
                };
                records.push(rec(RData::TXT(TXT::new(vec![version.into()]))));
            }
            Found::Records(records, vec![])
        }
        ["dns"] | ["svc"] => Found::Records(vec![], vec![]),
        ["pod"] | [_, "pod"] | [_, _, "pod"] if zone.flavor == Flavor::ClusterSet => Found::NoName,
        ["pod"] | [_, "pod"] => Found::Records(vec![], vec![]),
        ["ns", "dns"] => Found::Records(
            address_records(&mut zone.ns_addresses.iter().copied()),
            vec![],
        ),
        [ns, "svc"] if zone.flavor == Flavor::Cluster && index.has_namespace(ns) => {
            Found::Records(vec![], vec![])
        }
        [ns, "svc"] if zone.flavor == Flavor::ClusterSet && index.has_import_namespace(ns) => {
            Found::Records(vec![], vec![])
        }
        [host, _ns, "pod"] => match undashed(host) {
            Some(ip) => Found::Records(address_records(&mut std::iter::once(ip)), vec![]),
            None => Found::NoName,
        },
        [svc, ns, "svc"] => service(zone, index, owner, ns, svc, qtype),
        [proto, svc, ns, "svc"] if proto.starts_with('_') => {
            let Some(view) = zone.view(index, ns, svc) else {
                return Found::NoName;
            };
            let proto = &proto[1..];
            let has = view.entry.ports.iter().any(|p| p.protocol == proto)
                || view
                    .endpoints
                    .iter()
                    .any(|(_, ports)| ports.iter().any(|p| p.protocol == proto));
            if has {
                Found::Records(vec![], vec![])
            } else {
                Found::NoName
            }
        }
        // `<clusterid>.<svc>` must not exist (MCS DNS 2.3.4, 2.4.4).
        [_, _, _, "svc"] if zone.flavor == Flavor::ClusterSet => Found::NoName,
        [host, cluster, svc, ns, "svc"]
            if zone.flavor == Flavor::ClusterSet && !host.starts_with('_') =>
        {
            let Some(view) = index.import(ns, svc) else {
                return Found::NoName;
            };
            let mut ips = view
                .endpoints
                .iter()
                .filter(|(e, _)| e.hostname == *host && e.cluster == *cluster)
                .flat_map(|(e, _)| e.addresses.iter().copied())
                .peekable();
            if ips.peek().is_none() {
                return Found::NoName;
            }
            Found::Records(address_records(&mut ips), vec![])
        }
        [host, svc, ns, "svc"] => {
            let Some(view) = index.service(ns, svc) else {
                return Found::NoName;
            };
            let mut ips = view
                .endpoints
                .iter()
                .filter(|(e, _)| e.hostname == *host)
                .flat_map(|(e, _)| e.addresses.iter().copied())
                .peekable();
            if ips.peek().is_none() {
                return Found::NoName;
            }
            Found::Records(address_records(&mut ips), vec![])
        }
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            srv(zone, index, owner, ns, svc, &port[1..], &proto[1..], qtype)
        }
        _ => Found::NoName,
    }
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// `<svc>.<ns>.svc.<zone>`.
fn service(
    zone: &Zone,
    index: &Index,
    owner: &Name,
    ns: &str,
    svc: &str,
    qtype: RecordType,
) -> Found {
    let Some(view) = zone.view(index, ns, svc) else {
        return Found::NoName;
    };
    let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    let rec = |data: RData| Record::from_rdata(owner.clone(), TTL, data);
    let mut records = Vec::new();
    let mut additional = Vec::new();
    match &view.entry.kind {
        Kind::ExternalName(target) => {
            return match Name::from_ascii(format!("{target}.")) {
                Ok(t) => Found::Alias(t),
                Err(_) => Found::Records(vec![], vec![]),
            };
        }
        Kind::ClusterIp(ips) => {
            for ip in ips {
                let data = address(*ip);
                if wants(data.record_type()) {
                    records.push(rec(data));
                }
            }
            if wants(RecordType::SRV) {
                let target = zone.name(&format!("{svc}.{ns}.svc"));
                let mut numbers: Vec<u16> = view.entry.ports.iter().map(|p| p.port).collect();
                // One record per port number for the bare name in clusterset.local (TCP and
                // UDP on one port are one target and port; the conformance suite counts).
                if zone.flavor == Flavor::ClusterSet {
                    numbers.sort_unstable();
                    numbers.dedup();
                }
                let n = numbers.len();
                for port in numbers {
                    if let Some(t) = &target {
                        records.push(rec(RData::SRV(SRV::new(0, weight(n), port, t.clone()))));
                    }
                }
                if let Some(t) = target.filter(|_| n > 0) {
                    for ip in ips {
                        additional.push(Record::from_rdata(t.clone(), TTL, address(*ip)));
                    }
                }
            }
        }
        Kind::Headless => {
            // No ready endpoint: the name is not there (the specification, 2.4.1).
            if view.endpoints.is_empty() {
                return Found::NoName;
            }
            let mut seen = Vec::new();
            for (e, _) in &view.endpoints {
                for ip in &e.addresses {
                    let data = address(*ip);
                    if wants(data.record_type()) && !seen.contains(ip) {
                        seen.push(*ip);
                        records.push(rec(data));
                    }
                }
            }
            if wants(RecordType::SRV) {
                let all: Vec<_> = view
                    .endpoints
                    .iter()
                    .flat_map(|(e, ports)| ports.iter().map(move |p| (*e, p)))
                    .collect();
                endpoint_srv(zone, owner, ns, svc, &all, &mut records, &mut additional);
            }
        }
    }
    Found::Records(records, additional)
}

/// `_<port>._<proto>.<svc>.<ns>.svc.<zone>`.
#[allow(clippy::too_many_arguments)]
fn srv(
    zone: &Zone,
    index: &Index,
    owner: &Name,
    ns: &str,
    svc: &str,
    port: &str,
    proto: &str,
    qtype: RecordType,
) -> Found {
    let Some(view) = zone.view(index, ns, svc) else {
        return Found::NoName;
    };
    // Unnamed ports have no SRV record.
    let matches = |p: &&Port| !p.name.is_empty() && p.name == port && p.protocol == proto;
    let wants = qtype == RecordType::SRV || qtype == RecordType::ANY;
    let mut records = Vec::new();
    let mut additional = Vec::new();
    match &view.entry.kind {
        Kind::ClusterIp(ips) => {
            let ports: Vec<&Port> = view.entry.ports.iter().filter(matches).collect();
            if ports.is_empty() {
                return Found::NoName;
            }
            if wants && let Some(t) = zone.name(&format!("{svc}.{ns}.svc")) {
                for p in &ports {
                    records.push(Record::from_rdata(
                        owner.clone(),
                        TTL,
                        RData::SRV(SRV::new(0, weight(ports.len()), p.port, t.clone())),
                    ));
                }
                for ip in ips {
                    additional.push(Record::from_rdata(t.clone(), TTL, address(*ip)));
                }
            }
        }
        Kind::Headless => {
            let all: Vec<_> = view
                .endpoints
                .iter()
                .flat_map(|(e, ports)| ports.iter().filter(matches).map(move |p| (*e, p)))
                .collect();
            if all.is_empty() {
                return Found::NoName;
            }
            if wants {
                endpoint_srv(zone, owner, ns, svc, &all, &mut records, &mut additional);
            }
        }
        Kind::ExternalName(_) => return Found::NoName,
    }
    Found::Records(records, additional)
}

/// SRV records to each endpoint's own name, and its addresses as additional records.
fn endpoint_srv(
    zone: &Zone,
    owner: &Name,
    ns: &str,
    svc: &str,
    all: &[(&crate::index::Endpoint, &Port)],
    records: &mut Vec<Record>,
    additional: &mut Vec<Record>,
) {
    let mut named = Vec::new();
    let mut seen: Vec<(String, u16)> = Vec::new();
    for (e, p) in all {
        let own = match zone.flavor {
            Flavor::Cluster => format!("{}.{svc}.{ns}.svc", e.hostname),
            Flavor::ClusterSet => format!("{}.{}.{svc}.{ns}.svc", e.hostname, e.cluster),
        };
        // One record per endpoint and port number (TCP and UDP alike).
        if seen.contains(&(own.clone(), p.port)) {
            continue;
        }
        seen.push((own.clone(), p.port));
        let Some(target) = zone.name(&own) else {
            continue;
        };
        records.push(Record::from_rdata(
            owner.clone(),
            TTL,
            RData::SRV(SRV::new(0, weight(all.len()), p.port, target.clone())),
        ));
        if !named.contains(&e.hostname) {
            named.push(e.hostname.clone());
            for ip in &e.addresses {
                additional.push(Record::from_rdata(target.clone(), TTL, address(*ip)));
            }
        }
    }
}

/// Equal weights that add up to about 100 (CoreDNS's choice; RFC 2782 leaves it open).
fn weight(n: usize) -> u16 {
    u16::try_from(100 / n.max(1)).unwrap_or(1).max(1)
}

/// A pod's address from its dashed label: `10-1-2-3`, or an IPv6 address with dashes for
/// colons (`fd00--1`).
fn undashed(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3
        && let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>()
    {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
        .filter(|ip| dashed(ip) == label)
}

/// The address of a reverse name: `d.c.b.a.in-addr.arpa.`, or 32 nibbles under `ip6.arpa.`.
fn reverse_address(lname: &Name) -> Option<IpAddr> {
    let labels: Vec<String> = lname
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_string())
        .collect();
    match labels.as_slice() {
        [d, c, b, a, in_addr, arpa] if in_addr == "in-addr" && arpa == "arpa" => {
            let octet = |s: &str| -> Option<u8> {
                // No leading zeros: `01` is not a label of a reverse name.
                (s == "0" || !s.starts_with('0')).then(|| s.parse().ok())?
            };
            Some(IpAddr::V4(Ipv4Addr::new(
                octet(a)?,
                octet(b)?,
                octet(c)?,
                octet(d)?,
            )))
        }
        [nibbles @ .., ip6, arpa] if ip6 == "ip6" && arpa == "arpa" && nibbles.len() == 32 => {
            let mut bits: u128 = 0;
            for n in nibbles.iter().rev() {
                let v = u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1)?;
                bits = (bits << 4) | u128::from(v);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bits)))
        }
        _ => None,
    }
}
