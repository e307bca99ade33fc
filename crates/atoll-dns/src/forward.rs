//! Names outside the cluster's zone go to the host's resolvers (CoreDNS's `forward .
//! /etc/resolv.conf`), with a cache: positive answers for their TTL (at most 30 s), negative
//! ones for 5 s, failures not at all.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wire::EDNS_PAYLOAD;

const MAX_TTL: u32 = 30;
const NEGATIVE_TTL: u32 = 5;
const MAX_ENTRIES: usize = 10_000;
const TIMEOUT: Duration = Duration::from_secs(2);

/// The nameservers of a resolv.conf, less `not` (this server: never forward to ourselves).
pub fn nameservers(resolv_conf: &str, not: &[SocketAddr]) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        // A scoped IPv6 address (fe80::1%eth0) is not for us.
        .filter_map(|w| w.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|a| !not.contains(a))
        .collect()
}

struct Cached {
    stored: Instant,
    ttl: u32,
    message: Message,
}

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<HashMap<(Name, RecordType), Cached>>,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder {
            upstreams,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The upstreams' answer to `query`; `None` when none answered.
    pub async fn resolve(&self, query: &Query) -> (Option<Message>, bool) {
        let key = (query.name().to_lowercase(), query.query_type());
        if let Some(m) = self.cached(&key) {
            return (Some(m), true);
        }
        for upstream in &self.upstreams {
            let Ok(Some(answer)) = tokio::time::timeout(TIMEOUT, exchange(*upstream, query)).await
            else {
                continue;
            };
            if answer.metadata.response_code == ResponseCode::ServFail {
                continue;
            }
            self.store(key, &answer);
            return (Some(answer), false);
        }
        (None, false)
    }

    fn cached(&self, key: &(Name, RecordType)) -> Option<Message> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get(key)?;
        let age = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        if age >= entry.ttl {
            cache.remove(key);
            return None;
        }
        let mut m = entry.message.clone();
        for r in m
            .answers
            .iter_mut()
            .chain(m.authorities.iter_mut())
            .chain(m.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(m)
    }

    fn store(&self, key: (Name, RecordType), answer: &Message) {
        let ttl = match answer.metadata.response_code {
            ResponseCode::NoError if !answer.answers.is_empty() => answer
                .answers
                .iter()
                .map(|r| r.ttl)
                .min()
                .unwrap_or(0)
                .min(MAX_TTL),
            ResponseCode::NoError | ResponseCode::NXDomain => NEGATIVE_TTL,
            _ => return,
        };
        if ttl == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_ENTRIES {
            // Full: drop what has expired, and if that is not enough, everything (the
            // cache is a convenience; the upstream is the truth).
            cache.retain(|_, c| c.stored.elapsed().as_secs() < u64::from(c.ttl));
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                stored: Instant::now(),
                ttl,
                message: answer.clone(),
            },
        );
    }
}

fn request(query: &Query) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    m.set_edns(edns);
    m
}

/// One question to one upstream: UDP, then TCP if the answer was truncated.
async fn exchange(upstream: SocketAddr, query: &Query) -> Option<Message> {
    let req = request(query);
    let bytes = req.to_vec().ok()?;
    let local: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = tokio::net::UdpSocket::bind(local).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(&bytes).await.ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).await.ok()?;
        let Ok(answer) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        // Not ours (a late answer, or spoofed): keep waiting for ours.
        if answer.metadata.id != req.metadata.id || answer.queries != req.queries {
            continue;
        }
        if !answer.metadata.truncation {
            return Some(answer);
        }
        break;
    }
    let mut stream = tokio::net::TcpStream::connect(upstream).await.ok()?;
    let len = u16::try_from(bytes.len()).ok()?;
    stream.write_all(&len.to_be_bytes()).await.ok()?;
    stream.write_all(&bytes).await.ok()?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body).await.ok()?;
    let answer = Message::from_vec(&body).ok()?;
    (answer.metadata.id == req.metadata.id).then_some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_come_from_resolv_conf_without_ourselves() {
        let conf = "# comment\nsearch example.org\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver ::1\noptions ndots:5\nnameserver 127.1.0.10\n";
        let us: SocketAddr = "127.1.0.10:53".parse().expect("an address");
        assert_eq!(
            nameservers(conf, &[us]),
            vec![
                "127.0.0.53:53".parse::<SocketAddr>().expect("an address"),
                "[::1]:53".parse().expect("an address"),
            ]
        );
    }
}
