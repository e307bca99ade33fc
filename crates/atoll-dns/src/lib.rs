//! The cluster DNS (the part CoreDNS plays): an authoritative server for the cluster's zone,
//! over UDP and TCP, answering from an in-memory index that watches of Services,
//! EndpointSlices and Pods keep current (never an API call per query); other names are
//! forwarded to the host's resolvers with a cache. `/metrics` and `/healthz` on a plain HTTP
//! listener.
//!
//! The query path: a few OS threads each read the UDP socket, answer from the index under a
//! read lock and reply; only forwarded questions go through the async runtime.

pub mod answer;
pub mod forward;
pub mod index;
pub mod metrics;
pub mod peering;
mod server;
mod watch;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use answer::Zone;
pub use index::Index;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Listen {
        addr: SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("the watches of Services, EndpointSlices and Pods did not sync within {0:?}: {1}")]
    Sync(Duration, String),
}

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// UDP and TCP, the same address.
    pub listen: SocketAddr,
    /// `cluster.local` by default.
    pub zone: String,
    /// Multi-cluster services' zone, `clusterset.local` by default; `None`: not served.
    pub clusterset_zone: Option<String>,
    /// Where other names go; `None`: the host's /etc/resolv.conf.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// The server's own addresses (`ns.dns.<zone>`): the kube-dns ClusterIP; the listen
    /// address when empty.
    pub ns_addresses: Vec<IpAddr>,
    /// `/metrics` and `/healthz`.
    pub metrics_listen: Option<SocketAddr>,
    /// Threads reading the UDP socket.
    pub udp_threads: usize,
    /// The peering domain to publish the cluster and its ForeignClusters under; `None`:
    /// not served.
    pub peering_domain: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 53)),
            zone: "cluster.local".into(),
            clusterset_zone: Some("clusterset.local".into()),
            upstreams: None,
            ns_addresses: vec![],
            metrics_listen: None,
            udp_threads: 1,
            peering_domain: None,
        }
    }
}

/// The running server's state, shared by its threads and tasks.
pub struct Dns {
    pub index: RwLock<Index>,
    pub zone: Zone,
    pub forwarder: forward::Forwarder,
    pub metrics: metrics::Metrics,
    synced: AtomicBool,
    stopping: AtomicBool,
}

impl Dns {
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }
}

/// A running server: where it listens. Dropping it stops the query threads.
pub struct Running {
    pub dns: Arc<Dns>,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.dns.stopping.store(true, Ordering::Relaxed);
    }
}

/// Start: bind, sync the index from the API (within `sync_timeout`), then serve. `client`
/// needs only list and watch on Services, EndpointSlices and Pods.
pub async fn start(
    client: kube::Client,
    opts: Options,
    sync_timeout: Duration,
) -> Result<Running, Error> {
    let sockets = server::bind(opts.listen)?;
    let addr = sockets.udp.local_addr().map_err(|e| Error::Listen {
        addr: opts.listen,
        proto: "UDP",
        source: e,
    })?;
    let ns_addresses = if opts.ns_addresses.is_empty() {
        vec![addr.ip()]
    } else {
        opts.ns_addresses.clone()
    };
    let mut zone = Zone::new(&opts.zone, ns_addresses).map_err(Error::Config)?;
    if let Some(clusterset) = &opts.clusterset_zone {
        zone = zone.with_clusterset(clusterset).map_err(Error::Config)?;
    }
    if let Some(domain) = &opts.peering_domain {
        zone = zone.with_peering(domain).map_err(Error::Config)?;
    }
    let upstreams = match &opts.upstreams {
        Some(u) => u.clone(),
        None => {
            let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            forward::nameservers(&conf, &[addr])
        }
    };
    let dns = Arc::new(Dns {
        index: RwLock::new(Index::default()),
        zone,
        forwarder: forward::Forwarder::new(upstreams),
        metrics: metrics::Metrics::default(),
        synced: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
    });
    let metrics_addr = match opts.metrics_listen {
        Some(a) => Some(server::serve_metrics(dns.clone(), a).await?),
        None => None,
    };
    if dns.zone.peering().is_some() {
        watch::peers(client.clone(), dns.clone());
    }
    let ready = watch::start(client, dns.clone());
    match tokio::time::timeout(sync_timeout, ready).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::Sync(sync_timeout, e)),
        Err(_) => return Err(Error::Sync(sync_timeout, "timed out".into())),
    }
    dns.synced.store(true, Ordering::Relaxed);
    server::serve(dns.clone(), sockets, opts.udp_threads.max(1));
    tracing::info!(%addr, zone = %dns.zone.origin(), upstreams = ?dns.forwarder.upstreams(), "cluster DNS serving");
    Ok(Running {
        dns,
        addr,
        metrics_addr,
    })
}

#[cfg(test)]
mod tests;
