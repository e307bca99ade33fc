//! The sockets: UDP read by OS threads, TCP (two-byte length framing, several queries per
//! connection) and the metrics listener on the async runtime.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wire::{self, Handled, Transport};
use crate::{Dns, Error};

/// How long a TCP connection may sit idle between queries (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
const MAX_TCP_CONNECTIONS: usize = 512;
const UDP_BUFFER: usize = 4 << 20;

pub(crate) struct Sockets {
    pub udp: UdpSocket,
    tcp: std::net::TcpListener,
}

/// How many ports to try when the kernel picks one (port 0) and its TCP twin is taken.
const PICK_ATTEMPTS: usize = 16;

/// Bind UDP first, then TCP on the port UDP got (port 0 picks one for both). A port the
/// kernel picked for UDP may be in use for TCP by someone else: then another is picked, so a
/// `--listen 127.0.0.1:0` never fails for that.
pub(crate) fn bind(listen: SocketAddr) -> Result<Sockets, Error> {
    let mut attempt = 1;
    loop {
        match bind_once(listen) {
            Err(Error::Listen {
                proto: "TCP",
                source,
                ..
            }) if listen.port() == 0
                && source.kind() == std::io::ErrorKind::AddrInUse
                && attempt < PICK_ATTEMPTS =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn bind_once(listen: SocketAddr) -> Result<Sockets, Error> {
    let udp = UdpSocket::bind(listen).map_err(|e| Error::Listen {
        addr: listen,
        proto: "UDP",
        source: e,
    })?;
    let addr = udp.local_addr().map_err(|e| Error::Listen {
        addr: listen,
        proto: "UDP",
        source: e,
    })?;
    let tcp = std::net::TcpListener::bind(addr).map_err(|e| Error::Listen {
        addr,
        proto: "TCP",
        source: e,
    })?;
    tcp.set_nonblocking(true).map_err(|e| Error::Listen {
        addr,
        proto: "TCP",
        source: e,
    })?;
    Ok(Sockets { udp, tcp })
}

pub(crate) fn serve(dns: Arc<Dns>, sockets: Sockets, threads: usize) {
    let runtime = tokio::runtime::Handle::current();
    // A read timeout, so the threads notice a stop.
    let _ = sockets
        .udp
        .set_read_timeout(Some(Duration::from_millis(500)));
    // Room for bursts: the default buffer drops queries a busy thread has not read yet.
    // The kernel caps these at net.core.[rw]mem_max; what it grants is fine.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&sockets.udp, UDP_BUFFER);
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&sockets.udp, UDP_BUFFER);
    let udp = Arc::new(sockets.udp);
    for i in 0..threads {
        let (dns, udp, runtime) = (dns.clone(), udp.clone(), runtime.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || udp_loop(&dns, &udp, &runtime));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a DNS thread");
        }
    }
    match tokio::net::TcpListener::from_std(sockets.tcp) {
        Ok(tcp) => {
            tokio::spawn(tcp_loop(dns, tcp));
        }
        Err(e) => tracing::error!(error = %e, "cannot serve DNS over TCP"),
    }
}

fn udp_loop(dns: &Arc<Dns>, udp: &Arc<UdpSocket>, runtime: &tokio::runtime::Handle) {
    let mut buf = vec![0u8; 65_535];
    let mut cache = wire::AnswerCache::default();
    while !dns.stopping.load(Ordering::Relaxed) {
        let (n, peer) = match udp.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            // An ICMP error from an earlier reply's peer, reported on this read.
            Err(_) => continue,
        };
        let started = Instant::now();
        let packet = &buf[..n];
        let handled = {
            let index = dns.index();
            let generation = index.generation();
            match cache.get(packet, Transport::Udp, generation) {
                Some(r) => Handled::Reply(r),
                None => {
                    let h = wire::handle(packet, Transport::Udp, &dns.zone, &index);
                    if let Handled::Reply(r) = &h {
                        cache.put(packet, Transport::Udp, generation, &r.bytes);
                    }
                    h
                }
            }
        };
        match handled {
            Handled::Reply(r) => {
                let _ = udp.send_to(&r.bytes, peer);
                dns.metrics.answered(r.qtype, r.rcode, started.elapsed());
            }
            Handled::Forward(f) => {
                let (dns, udp) = (dns.clone(), udp.clone());
                runtime.spawn(async move {
                    let r = forward(&dns, &f, Transport::Udp).await;
                    let _ = udp.send_to(&r.bytes, peer);
                    dns.metrics.answered(r.qtype, r.rcode, started.elapsed());
                });
            }
            Handled::Drop => {
                dns.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn forward(dns: &Dns, f: &wire::Forward, transport: Transport) -> wire::Reply {
    dns.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
    let (answer, cached) = dns.forwarder.resolve(&f.query).await;
    if cached {
        dns.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
    }
    wire::forwarded(f, answer.as_ref(), transport)
}

async fn tcp_loop(dns: Arc<Dns>, listener: tokio::net::TcpListener) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        if dns.stopping.load(Ordering::Relaxed) {
            return;
        }
        let Ok(Ok((stream, _))) =
            tokio::time::timeout(Duration::from_millis(500), listener.accept()).await
        else {
            continue;
        };
        // Over the limit, a new connection waits for one to end.
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let dns = dns.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp_connection(&dns, stream).await;
        });
    }
}

async fn tcp_connection(dns: &Dns, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut body = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        body.resize(usize::from(u16::from_be_bytes(len)), 0);
        // The rest of a message must follow promptly.
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut body)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let started = Instant::now();
        let handled = {
            let index = dns.index();
            wire::handle(&body, Transport::Tcp, &dns.zone, &index)
        };
        let reply = match handled {
            Handled::Reply(r) => r,
            Handled::Forward(f) => forward(dns, &f, Transport::Tcp).await,
            Handled::Drop => {
                dns.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        let Ok(n) = u16::try_from(reply.bytes.len()) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(reply.bytes.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&reply.bytes);
        stream.write_all(&out).await?;
        dns.metrics
            .answered(reply.qtype, reply.rcode, started.elapsed());
    }
}

/// `/metrics`, `/healthz` and `/readyz` over plain HTTP; returns the bound address.
pub(crate) async fn serve_metrics(dns: Arc<Dns>, listen: SocketAddr) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Listen {
            addr: listen,
            proto: "HTTP",
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| Error::Listen {
        addr: listen,
        proto: "HTTP",
        source: e,
    })?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let dns = dns.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let dns = dns.clone();
                        async move {
                            let (code, body) = match req.uri().path() {
                                "/metrics" => {
                                    (200, dns.metrics.render(dns.index().service_count()))
                                }
                                "/healthz" | "/readyz" | "/livez" if dns.synced() => {
                                    (200, "ok".to_string())
                                }
                                "/healthz" | "/readyz" | "/livez" => {
                                    (503, "the index has not synced yet".to_string())
                                }
                                _ => (404, "not found: try /metrics or /healthz".to_string()),
                            };
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() =
                                hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::OK);
                            resp.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static(
                                    "text/plain; version=0.0.4",
                                ),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_port_whose_tcp_twin_is_taken_is_an_error_that_says_tcp() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        match bind(addr) {
            Err(Error::Listen { proto, source, .. }) => {
                assert_eq!(proto, "TCP");
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("bound a port whose TCP side is taken"),
        }
    }

    #[test]
    fn port_zero_gets_one_port_for_both() {
        let sockets = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let udp = sockets.udp.local_addr().unwrap();
        assert_ne!(udp.port(), 0);
        assert_eq!(sockets.tcp.local_addr().unwrap(), udp);
    }
}
