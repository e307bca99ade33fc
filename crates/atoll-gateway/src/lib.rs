//! `atoll gateway`: outside traffic to the Services a cluster set exports, routed by
//! `MultiClusterIngress` objects on the hub.
//!
//! The control plane (watches of the hub, health checks, status) runs on the caller's runtime
//! and builds a [`config::Config`] from what it sees, swapped whole into the data plane, so a
//! route change touches no connection. The data plane runs on its own threads (one by
//! default, as an nginx worker), each a single-threaded runtime accepting on the same
//! listeners: HTTP/1.1 and HTTP/2 (cleartext by prior knowledge, over TLS by ALPN), TLS with
//! the certificate of the SNI name, WebSocket and other upgrades passed through.
//!
//! Only ready endpoints of live clusters take requests; an endpoint that cannot be reached is
//! ejected at once (and one whose answers are gateway errors after a few in a row), health
//! checks take endpoints that stop accepting out and bring them back; a request whose
//! connection could not be made is tried on another endpoint.

pub mod balance;
pub mod config;
pub mod eastwest;
mod health;
pub mod metrics;
mod pool;
mod proxy;
pub mod routes;
mod status;
mod tls;
pub mod tunnel;
mod watch;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;

/// Bodies of requests and answers as the gateway passes them on.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot start the data plane: {0}")]
    Runtime(std::io::Error),
    #[error(
        "the hub's objects were not all listed within {0:?}; is the hub's API server up and are the CRDs installed?"
    )]
    NotSynced(Duration),
}

/// Limits on what clients may send.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The request line and headers together (431 beyond).
    pub max_header_bytes: usize,
    /// A request body (413 beyond).
    pub max_body_bytes: u64,
    /// Time a client has to send its request's headers (the connection is closed after).
    pub header_timeout: Duration,
    /// Time to make an upstream connection.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// Where the access log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(std::path::PathBuf),
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Plain HTTP (HTTP/1.1, and HTTP/2 by prior knowledge).
    pub listen: Option<SocketAddr>,
    /// HTTPS, with the certificates of the ingresses' `tls` entries.
    pub tls_listen: Option<SocketAddr>,
    /// `/metrics` and `/healthz`.
    pub metrics_listen: Option<SocketAddr>,
    /// Data-plane threads.
    pub threads: usize,
    pub limits: Limits,
    pub access_log: AccessLog,
    /// Lease durations without a renewal after which a cluster takes no traffic.
    pub grace_periods: f64,
    /// How often each endpoint is health-checked (a TCP connection).
    pub health_interval: Duration,
    /// The address written into the ingresses' status (default: the listening address).
    pub advertise: Option<std::net::IpAddr>,
    /// Write the ingresses' status.
    pub write_status: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            tls_listen: None,
            metrics_listen: None,
            threads: 1,
            limits: Limits::default(),
            access_log: AccessLog::Stdout,
            grace_periods: 2.0,
            health_interval: Duration::from_secs(2),
            advertise: None,
            write_status: true,
        }
    }
}

/// What the data plane and the control plane share.
pub(crate) struct Shared {
    config: RwLock<Arc<config::Config>>,
    registry: balance::Registry,
    metrics: metrics::Metrics,
    limits: Limits,
    access_log: Option<Mutex<Box<dyn std::io::Write + Send>>>,
}

impl Shared {
    /// The configuration now in force.
    pub(crate) fn config(&self) -> Arc<config::Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn swap(&self, config: config::Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }
}

/// A running gateway.
pub struct Running {
    pub addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
}

/// The access log's writer, if there is one.
pub(crate) fn open_access_log(
    log: &AccessLog,
) -> Result<Option<Box<dyn std::io::Write + Send>>, Error> {
    Ok(match log {
        AccessLog::Off => None,
        AccessLog::Stdout => Some(Box::new(std::io::LineWriter::new(std::io::stdout()))),
        AccessLog::File(path) => Some(Box::new(std::io::LineWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(Error::Runtime)?,
        ))),
    })
}

/// Start the gateway: watch the hub, wait until everything is listed, then serve.
pub async fn start(client: kube::Client, opts: Options) -> Result<Running, Error> {
    let access_log = open_access_log(&opts.access_log)?;
    let shared = Arc::new(Shared {
        config: RwLock::new(Arc::new(config::Config::default())),
        registry: balance::Registry::default(),
        metrics: metrics::Metrics::default(),
        limits: opts.limits.clone(),
        access_log: access_log.map(Mutex::new),
    });
    let bind = |addr: SocketAddr| -> Result<std::net::TcpListener, Error> {
        let l = std::net::TcpListener::bind(addr).map_err(|e| Error::Listen(addr, e))?;
        l.set_nonblocking(true)
            .map_err(|e| Error::Listen(addr, e))?;
        Ok(l)
    };
    let plain = opts.listen.map(bind).transpose()?;
    let secure = opts.tls_listen.map(bind).transpose()?;
    let addr = plain.as_ref().and_then(|l| l.local_addr().ok());
    let tls_addr = secure.as_ref().and_then(|l| l.local_addr().ok());

    let sync = Duration::from_secs(60);
    let world = watch::start(client.clone(), shared.clone(), opts.grace_periods);
    tokio::time::timeout(sync, world.synced())
        .await
        .map_err(|_| Error::NotSynced(sync))?;
    world.rebuild_now();

    let mut addresses = Vec::new();
    for a in [addr, tls_addr].into_iter().flatten() {
        addresses.push(SocketAddr::new(opts.advertise.unwrap_or(a.ip()), a.port()));
    }
    tokio::spawn(world.run(if opts.write_status {
        Some(status::Writer::new(client, addresses))
    } else {
        None
    }));
    tokio::spawn(health::run(shared.clone(), opts.health_interval));
    let metrics_addr = match opts.metrics_listen {
        Some(a) => Some(metrics::serve(shared.clone(), a).await?),
        None => None,
    };
    proxy::spawn_data_plane(shared, plain, secure, opts.threads.max(1))?;
    Ok(Running {
        addr,
        tls_addr,
        metrics_addr,
    })
}
