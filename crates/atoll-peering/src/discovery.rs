//! Discovery over DNS (Liqo's WAN discovery, with the cluster id and CA pin in a TXT record):
//! a cluster is published under a domain D as
//!
//! ```text
//! D.                             PTR  <cluster>._atoll-peering._tcp.D.
//! <cluster>._atoll-peering._tcp.D. SRV  0 0 <port> <cluster>.D.
//! <cluster>._atoll-peering._tcp.D. TXT  "clusterID=<id>" "caSHA256=sha256:<hex>"
//! <cluster>.D.                   A    <API server address>
//! ```
//!
//! `zone` writes these records (a zone file any DNS server loads); `browse` reads them back
//! from a DNS server: PTR, then SRV and TXT of each instance, then the SRV target's address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// The service label of peering endpoints.
pub const SERVICE: &str = "_atoll-peering._tcp";

/// A cluster as DNS publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub cluster_id: String,
    /// `https://HOST:PORT` of its API server.
    pub api_server_url: String,
    pub ca_sha256: String,
}

/// Host and port of an https URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let authority = url.strip_prefix("https://")?.split('/').next()?;
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((
            h.trim_matches(|c| c == '[' || c == ']').to_string(),
            p.parse().ok()?,
        )),
        None => Some((authority.to_string(), 443)),
    }
}

/// The zone file for `domain` publishing `clusters` (with an SOA and NS, so it loads as is).
pub fn zone(domain: &str, clusters: &[Published]) -> Result<String, String> {
    let d = domain.trim_end_matches('.');
    if d.is_empty() || Name::from_ascii(d).is_err() {
        return Err(format!("{domain:?} is not a DNS domain"));
    }
    let mut z = format!(
        "$ORIGIN {d}.\n$TTL 30\n@ IN SOA ns.{d}. hostmaster.{d}. 1 3600 600 86400 30\n@ IN NS ns.{d}.\nns IN A 127.0.0.1\n"
    );
    for c in clusters {
        let (host, port) = host_port(&c.api_server_url).ok_or_else(|| {
            format!(
                "{:?} of cluster {} is not an https URL",
                c.api_server_url, c.cluster_id
            )
        })?;
        let instance = format!("{}.{SERVICE}.{d}.", c.cluster_id);
        z.push_str(&format!("@ IN PTR {instance}\n"));
        z.push_str(&format!(
            "{instance} IN SRV 0 0 {port} {}.{d}.\n",
            c.cluster_id
        ));
        z.push_str(&format!(
            "{instance} IN TXT \"clusterID={}\" \"caSHA256={}\"\n",
            c.cluster_id, c.ca_sha256
        ));
        match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => z.push_str(&format!("{}.{d}. IN A {ip}\n", c.cluster_id)),
            Ok(IpAddr::V6(ip)) => z.push_str(&format!("{}.{d}. IN AAAA {ip}\n", c.cluster_id)),
            Err(_) => z.push_str(&format!("{}.{d}. IN CNAME {host}.\n", c.cluster_id)),
        }
    }
    Ok(z)
}

/// `clusterID` and `caSHA256` from a TXT record's strings.
pub fn parse_txt(strings: &[String]) -> (Option<String>, Option<String>) {
    let get = |k: &str| {
        strings
            .iter()
            .find_map(|s| s.strip_prefix(&format!("{k}=")).map(String::from))
    };
    (get("clusterID"), get("caSHA256"))
}

/// Ask `server` one question; the answer's records.
async fn ask(server: SocketAddr, name: &Name, qtype: RecordType) -> Result<Vec<RData>, String> {
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), qtype));
    let bytes = m.to_vec().map_err(|e| e.to_string())?;
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|e: std::net::AddrParseError| e.to_string())?;
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    for _ in 0..3 {
        socket.send(&bytes).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let got = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
                if let Ok(answer) = Message::from_vec(&buf[..n])
                    && answer.metadata.id == m.metadata.id
                {
                    return Ok::<_, String>(answer);
                }
            }
        })
        .await;
        if let Ok(answer) = got {
            let answer = answer?;
            return Ok(answer.answers.into_iter().map(|r| r.data).collect());
        }
    }
    Err(format!("no answer from {server} for {name} {qtype}"))
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u16::from_be_bytes(b)
}

/// The first nameserver of `/etc/resolv.conf` (port 53).
pub fn system_resolver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let ip: IpAddr = l.strip_prefix("nameserver")?.trim().parse().ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

/// The clusters published under `domain`, asked of `server`. A broken instance is skipped and
/// said in the second list.
pub async fn browse(
    domain: &str,
    server: SocketAddr,
) -> Result<(Vec<Published>, Vec<String>), String> {
    let d = Name::from_ascii(format!("{}.", domain.trim_end_matches('.')))
        .map_err(|e| format!("{domain:?} is not a DNS domain: {e}"))?;
    let instances: Vec<Name> = ask(server, &d, RecordType::PTR)
        .await?
        .into_iter()
        .filter_map(|r| match r {
            RData::PTR(p) => Some(p.0),
            _ => None,
        })
        .collect();
    let mut found = Vec::new();
    let mut broken = Vec::new();
    for instance in instances {
        let one = async {
            let srv = ask(server, &instance, RecordType::SRV)
                .await?
                .into_iter()
                .find_map(|r| match r {
                    RData::SRV(s) => Some((s.port, s.target)),
                    _ => None,
                })
                .ok_or("no SRV record")?;
            let txt: Vec<String> = ask(server, &instance, RecordType::TXT)
                .await?
                .into_iter()
                .filter_map(|r| match r {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                })
                .flatten()
                .collect();
            let (id, pin) = parse_txt(&txt);
            let (id, pin) = (
                id.ok_or("no clusterID in its TXT record")?,
                pin.ok_or("no caSHA256 in its TXT record")?,
            );
            let address = ask(server, &srv.1, RecordType::A)
                .await?
                .into_iter()
                .find_map(|r| match r {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .ok_or("its SRV target has no address")?;
            Ok::<_, String>(Published {
                cluster_id: id,
                api_server_url: format!("https://{address}:{}", srv.0),
                ca_sha256: pin,
            })
        };
        match one.await {
            Ok(p) => found.push(p),
            Err(e) => broken.push(format!("{instance}: {e}")),
        }
    }
    Ok((found, broken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_publishes_each_cluster_as_the_browse_reads_it() {
        let c = Published {
            cluster_id: "member2".into(),
            api_server_url: "https://127.0.0.1:7002".into(),
            ca_sha256: "sha256:ab".into(),
        };
        let z = zone("peers.test.", std::slice::from_ref(&c)).unwrap();
        assert!(z.contains("$ORIGIN peers.test.\n"), "{z}");
        assert!(
            z.contains("@ IN PTR member2._atoll-peering._tcp.peers.test.\n"),
            "{z}"
        );
        assert!(
            z.contains(
                "member2._atoll-peering._tcp.peers.test. IN SRV 0 0 7002 member2.peers.test.\n"
            ),
            "{z}"
        );
        assert!(
            z.contains("IN TXT \"clusterID=member2\" \"caSHA256=sha256:ab\"\n"),
            "{z}"
        );
        assert!(z.contains("member2.peers.test. IN A 127.0.0.1\n"), "{z}");
        assert!(zone("", &[]).is_err());
        let bad = Published {
            api_server_url: "http://x".into(),
            ..c
        };
        assert!(zone("d", &[bad]).is_err());
        assert_eq!(
            parse_txt(&[
                "x=1".into(),
                "clusterID=a".into(),
                "caSHA256=sha256:00".into()
            ]),
            (Some("a".into()), Some("sha256:00".into()))
        );
    }
}
