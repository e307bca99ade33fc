//! The peering domain (`atoll dns --peering-domain D`): the clusters this server knows (its own
//! cluster, from `kube-public/atoll-peering`, and the ForeignClusters it has) published for
//! discovery over DNS, with the records `atoll peer zone` writes for other DNS servers:
//!
//! ```text
//! D.                               PTR  <id>._atoll-peering._tcp.D.
//! <id>._atoll-peering._tcp.D.      SRV  0 0 <port> <id>.D.
//! <id>._atoll-peering._tcp.D.      TXT  "clusterID=<id>" "caSHA256=sha256:<hex>"
//! <id>.D.                          A    <API server address>   (or CNAME to its host name)
//! ```
//!
//! The answers are pure functions of the peers and the question; the watches in `watch.rs`
//! keep the peers current.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::answer::{Answer, TTL};

/// The service label of peering endpoints.
pub const SERVICE: &str = "_atoll-peering._tcp";

/// A cluster as the peering domain publishes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// Its cluster id, lowercased: a DNS label.
    pub cluster_id: String,
    /// The host of its API server URL: an address or a host name.
    pub host: String,
    pub port: u16,
    pub ca_sha256: String,
}

impl Peer {
    /// A peer from its id, API server URL (`https://HOST[:PORT]`) and CA pin; `None` when the
    /// URL is not https or the id is not a DNS label.
    pub fn new(cluster_id: &str, api_server_url: &str, ca_sha256: &str) -> Option<Peer> {
        let id = cluster_id.to_ascii_lowercase();
        if id.is_empty()
            || id.len() > 63
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || ca_sha256.is_empty()
        {
            return None;
        }
        let authority = api_server_url.strip_prefix("https://")?.split('/').next()?;
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (h, p) = rest.split_once(']')?;
            let port = match p.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None => 443,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), 443),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(Peer {
            cluster_id: id,
            host,
            port,
            ca_sha256: ca_sha256.to_string(),
        })
    }
}

/// The answer for `qname` (lowercased, under `domain`) from `peers`. `ns` are the server's
/// own addresses (`ns.D`), `serial` the SOA serial.
pub fn answer(
    domain: &Name,
    ns: &[IpAddr],
    peers: &[Peer],
    serial: u64,
    qname: &Name,
    qtype: RecordType,
) -> Answer {
    let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    let under = |rel: &str| Name::from_ascii(format!("{rel}.{domain}")).ok();
    let rec = |data: RData| Record::from_rdata(qname.clone(), TTL, data);
    let soa = || {
        let (Some(mname), Some(rname)) = (under("ns"), under("hostmaster")) else {
            return None;
        };
        Some(Record::from_rdata(
            domain.clone(),
            TTL,
            RData::SOA(SOA::new(
                mname,
                rname,
                serial as u32,
                7200,
                1800,
                86400,
                TTL,
            )),
        ))
    };
    let n = usize::from(qname.num_labels()).saturating_sub(usize::from(domain.num_labels()));
    let labels: Vec<String> = qname
        .iter()
        .take(n)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let service: Vec<&str> = SERVICE.split('.').collect();
    let peer = |id: &str| peers.iter().find(|p| p.cluster_id == id);
    let address = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => (RecordType::A, RData::A(A(v4))),
        IpAddr::V6(v6) => (RecordType::AAAA, RData::AAAA(AAAA(v6))),
    };
    let mut out = Answer::default();
    let found = match labels.as_slice() {
        [] => {
            if wants(RecordType::SOA) {
                out.answers.extend(soa());
            }
            if wants(RecordType::NS)
                && let Some(name) = under("ns")
            {
                out.answers.push(rec(RData::NS(NS(name.clone()))));
                for ip in ns {
                    out.additional
                        .push(Record::from_rdata(name.clone(), TTL, address(*ip).1));
                }
            }
            if wants(RecordType::PTR) {
                for p in peers {
                    if let Some(instance) = under(&format!("{}.{SERVICE}", p.cluster_id)) {
                        out.answers.push(rec(RData::PTR(PTR(instance))));
                    }
                }
            }
            true
        }
        ["ns"] => {
            for ip in ns {
                let (t, data) = address(*ip);
                if wants(t) {
                    out.answers.push(rec(data));
                }
            }
            true
        }
        // The empty non-terminals above the instances exist (RFC 8020).
        [tcp] if *tcp == service[1] => true,
        [s, tcp] if *s == service[0] && *tcp == service[1] => true,
        [id, s, tcp] if *s == service[0] && *tcp == service[1] => match peer(id) {
            Some(p) => {
                if wants(RecordType::SRV)
                    && let Some(target) = under(&p.cluster_id)
                {
                    out.answers
                        .push(rec(RData::SRV(SRV::new(0, 0, p.port, target.clone()))));
                    if let Ok(ip) = p.host.parse::<IpAddr>() {
                        out.additional
                            .push(Record::from_rdata(target, TTL, address(ip).1));
                    }
                }
                if wants(RecordType::TXT) {
                    out.answers.push(rec(RData::TXT(TXT::new(vec![
                        format!("clusterID={}", p.cluster_id),
                        format!("caSHA256={}", p.ca_sha256),
                    ]))));
                }
                true
            }
            None => false,
        },
        [id] => match peer(id) {
            Some(p) => {
                match p.host.parse::<IpAddr>() {
                    Ok(ip) => {
                        let (t, data) = address(ip);
                        if wants(t) {
                            out.answers.push(rec(data));
                        }
                    }
                    Err(_) => {
                        if let Ok(target) = Name::from_ascii(format!("{}.", p.host)) {
                            out.answers.push(rec(RData::CNAME(CNAME(target.clone()))));
                            // Resolved upstream, as an ExternalName's target is.
                            if qtype != RecordType::CNAME {
                                out.chase = Some(target);
                            }
                        }
                    }
                }
                true
            }
            None => false,
        },
        _ => false,
    };
    if !found {
        out.rcode = ResponseCode::NXDomain;
    }
    if out.answers.is_empty() {
        out.authority.extend(soa());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> Vec<Peer> {
        vec![
            Peer::new("member2", "https://127.0.0.1:6443", "sha256:ab").unwrap(),
            Peer::new("Edge", "https://api.edge.example:443/", "sha256:cd").unwrap(),
        ]
    }

    fn ask(q: &str, t: RecordType) -> Answer {
        let domain = Name::from_ascii("peers.test.").unwrap();
        let ns = ["127.0.0.53".parse().unwrap()];
        answer(&domain, &ns, &peers(), 7, &Name::from_ascii(q).unwrap(), t)
    }

    fn texts(a: &Answer) -> Vec<String> {
        a.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn urls_become_hosts_and_ports() {
        for (url, host, port) in [
            ("https://127.0.0.1:6443", "127.0.0.1", 6443),
            ("https://api.example", "api.example", 443),
            ("https://[::1]:8443/", "::1", 8443),
        ] {
            let p = Peer::new("a", url, "sha256:00").unwrap();
            assert_eq!((p.host.as_str(), p.port), (host, port), "{url}");
        }
        assert_eq!(Peer::new("a", "http://x:1", "sha256:00"), None);
        assert_eq!(Peer::new("not a label", "https://x", "sha256:00"), None);
        assert_eq!(Peer::new("a", "https://x", ""), None);
    }

    #[test]
    fn the_domain_answers_what_discovery_browses() {
        let cases: Vec<(&str, RecordType, ResponseCode, Vec<&str>)> = vec![
            (
                "peers.test.",
                RecordType::PTR,
                ResponseCode::NoError,
                vec![
                    "member2._atoll-peering._tcp.peers.test.",
                    "edge._atoll-peering._tcp.peers.test.",
                ],
            ),
            (
                "member2._atoll-peering._tcp.peers.test.",
                RecordType::SRV,
                ResponseCode::NoError,
                vec!["0 0 6443 member2.peers.test."],
            ),
            (
                "MEMBER2._atoll-peering._tcp.peers.test.",
                RecordType::TXT,
                ResponseCode::NoError,
                vec!["clusterID=member2caSHA256=sha256:ab"],
            ),
            (
                "member2.peers.test.",
                RecordType::A,
                ResponseCode::NoError,
                vec!["127.0.0.1"],
            ),
            (
                "edge.peers.test.",
                RecordType::A,
                ResponseCode::NoError,
                vec!["api.edge.example."],
            ),
            (
                "member2.peers.test.",
                RecordType::AAAA,
                ResponseCode::NoError,
                vec![],
            ),
            (
                "_tcp.peers.test.",
                RecordType::A,
                ResponseCode::NoError,
                vec![],
            ),
            (
                "ns.peers.test.",
                RecordType::A,
                ResponseCode::NoError,
                vec!["127.0.0.53"],
            ),
            (
                "gone._atoll-peering._tcp.peers.test.",
                RecordType::SRV,
                ResponseCode::NXDomain,
                vec![],
            ),
            (
                "other.peers.test.",
                RecordType::A,
                ResponseCode::NXDomain,
                vec![],
            ),
        ];
        for (q, t, rcode, want) in cases {
            let a = ask(q, t);
            assert_eq!(a.rcode, rcode, "{q} {t}");
            let got = texts(&a);
            let got: Vec<&str> = got.iter().map(String::as_str).collect();
            assert_eq!(got, want, "{q} {t}");
            if want.is_empty() {
                assert_eq!(a.authority.len(), 1, "{q}: the SOA for negative caching");
            }
        }
        let srv = ask("member2._atoll-peering._tcp.peers.test.", RecordType::SRV);
        assert_eq!(srv.additional.len(), 1, "the target's address comes along");
        let edge = ask("edge.peers.test.", RecordType::A);
        assert_eq!(
            edge.chase,
            Some(Name::from_ascii("api.edge.example.").unwrap())
        );
    }
}
