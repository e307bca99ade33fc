//! The data plane: accepting connections, routing each request, passing it to an endpoint and
//! its answer back. Errors the gateway makes itself are short `text/plain` bodies that say why.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use crate::balance::{Candidate, Endpoint, pick};
use crate::config::Route;
use crate::routes::{NoRoute, request_host};
use crate::{Body, BoxError, Error, Shared};

/// Tries of one request at most (a connection that could not be made, or an idle connection
/// the upstream had closed, is tried again).
const MAX_TRIES: usize = 4;

/// Start `threads` data-plane threads, each a single-threaded runtime accepting on both
/// listeners.
pub(crate) fn spawn_data_plane(
    shared: Arc<Shared>,
    plain: Option<std::net::TcpListener>,
    secure: Option<std::net::TcpListener>,
    threads: usize,
) -> Result<(), Error> {
    let acceptor = secure
        .as_ref()
        .map(|_| crate::tls::acceptor(shared.clone()))
        .transpose()?;
    for i in 0..threads {
        let plain = plain
            .as_ref()
            .map(std::net::TcpListener::try_clone)
            .transpose()
            .map_err(Error::Runtime)?;
        let secure = secure
            .as_ref()
            .map(std::net::TcpListener::try_clone)
            .transpose()
            .map_err(Error::Runtime)?;
        let (shared, acceptor) = (shared.clone(), acceptor.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        std::thread::Builder::new()
            .name(format!("gateway-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    if let Some(l) = plain {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                tasks.spawn(accept(l, shared.clone(), None));
                            }
                            Err(e) => tracing::error!(error = %e, "cannot accept plain HTTP"),
                        }
                    }
                    if let (Some(l), Some(acceptor)) = (secure, acceptor) {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                tasks.spawn(accept(l, shared.clone(), Some(acceptor)));
                            }
                            Err(e) => tracing::error!(error = %e, "cannot accept HTTPS"),
                        }
                    }
                    while tasks.join_next().await.is_some() {}
                })
            })
            .map_err(Error::Runtime)?;
    }
    Ok(())
}

async fn accept(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        match &tls {
            None => {
                tokio::spawn(serve(TokioIo::new(stream), peer, shared, "http"));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let timeout = shared.limits.header_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve(TokioIo::new(s), peer, shared, "https").await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

async fn serve<I>(io: TokioIo<I>, peer: SocketAddr, shared: Arc<Shared>, scheme: &'static str)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_timeout)
        // hyper's default of 100 headers at most; setting another count makes it allocate
        // the parse's index on every request.
        .max_buf_size(shared.limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(shared.limits.max_header_bytes).unwrap_or(u32::MAX));
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, req, peer, scheme).await) }
    });
    if let Err(e) = builder.serve_connection_with_upgrades(io, svc).await {
        tracing::debug!(%peer, error = %e, "client connection ended");
    }
}

/// A short answer of the gateway's own.
fn reply(status: StatusCode, why: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(why + "\n"))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Who answered a request, for the access log.
struct Served {
    cluster: String,
    addr: SocketAddr,
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    scheme: &'static str,
) -> Response<Body> {
    let started = Instant::now();
    // What the access log says of the request, taken only when there is one.
    let logged = shared.access_log.as_ref().map(|_| {
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        (req.method().clone(), req.version(), target)
    });
    let host_header = authority(&req);
    let (resp, served) = forward(&shared, req, peer, scheme, host_header.as_deref()).await;
    let took = started.elapsed();
    shared.metrics.answered(resp.status().as_u16(), took);
    if let (Some(log), Some((method, version, target))) = (&shared.access_log, logged) {
        let upstream = served
            .map(|s| format!("{}/{}", s.cluster, s.addr))
            .unwrap_or_else(|| "-".into());
        let line = format!(
            "{} {} \"{} {}{} {:?}\" {} {:.3}ms upstream={}\n",
            k8s_openapi::jiff::Timestamp::now(),
            peer.ip(),
            method,
            host_header.as_deref().unwrap_or("-"),
            target,
            version,
            resp.status().as_u16(),
            took.as_secs_f64() * 1000.0,
            upstream,
        );
        if let Ok(mut w) = log.lock() {
            let _ = w.write_all(line.as_bytes());
        }
    }
    resp
}

use std::io::Write as _;

/// The host the request is for: HTTP/2's `:authority` or HTTP/1.1's absolute URI, else `Host`.
fn authority(req: &Request<Incoming>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(String::from)
        })
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether the client asks to switch protocols (a WebSocket).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Headers that belong to one connection, not to the message (RFC 9110 7.6.1), and those the
/// `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages have none of them: one pass over the few headers there are instead of a
    // lookup of each name.
    let hop_by_hop = |h: &HeaderName| {
        *h == header::CONNECTION
            || *h == header::TE
            || *h == header::TRAILER
            || *h == header::TRANSFER_ENCODING
            || *h == header::PROXY_AUTHORIZATION
            || *h == header::UPGRADE
            || h.as_str() == "keep-alive"
            || h.as_str() == "proxy-connection"
    };
    if !keep_upgrade && !headers.keys().any(hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in named {
        if !(keep_upgrade && h == header::UPGRADE) {
            headers.remove(h);
        }
    }
    for h in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// Why the endpoints of a route take no request, for the 503.
fn no_endpoint(route: &Route) -> String {
    let mut by_cluster: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    let now = Instant::now();
    for u in &route.endpoints {
        let e = by_cluster.entry(u.cluster.as_str()).or_default();
        e.0 += 1;
        if !u.state.usable(now) {
            e.1 += 1;
        }
    }
    if by_cluster.is_empty() {
        format!(
            "no ready endpoint for Service {} port {}: no cluster of the namespace's cluster sets exports it with a ready endpoint",
            route.service, route.port
        )
    } else {
        let detail: Vec<String> = by_cluster
            .iter()
            .map(|(c, (n, bad))| format!("{c}: {bad} of {n} failing"))
            .collect();
        format!(
            "no ready endpoint for Service {} port {}: every endpoint is failing health checks or ejected ({})",
            route.service,
            route.port,
            detail.join(", ")
        )
    }
}

/// Counts a request in flight at an endpoint until dropped (with the answer's body).
struct InFlight(Arc<Endpoint>);

impl InFlight {
    fn new(e: &Arc<Endpoint>) -> InFlight {
        e.in_flight.fetch_add(1, Ordering::Relaxed);
        e.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(e.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream answer's body, holding its endpoint's in-flight count until it ends.
struct Tracked {
    inner: Incoming,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Route the request and pass it on; the answer, and who gave it.
async fn forward(
    shared: &Shared,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    scheme: &'static str,
    host_header: Option<&str>,
) -> (Response<Body>, Option<Served>) {
    let Some(host) = host_header.and_then(request_host) else {
        let why = match host_header {
            None => "the request has no Host header".to_string(),
            Some(h) => format!("the Host header {h:?} is not a host name"),
        };
        return (reply(StatusCode::BAD_REQUEST, why), None);
    };
    let config = shared.config();
    let path = req.uri().path();
    let route = match config.table.lookup(&host, path) {
        Ok(r) => r.clone(),
        Err(NoRoute::UnknownHost) => {
            return (
                reply(
                    StatusCode::NOT_FOUND,
                    format!("no MultiClusterIngress routes host {host}"),
                ),
                None,
            );
        }
        Err(NoRoute::NoPath) => {
            return (
                reply(
                    StatusCode::NOT_FOUND,
                    format!("no path of host {host} matches {path}"),
                ),
                None,
            );
        }
    };
    drop(config);
    let limit = shared.limits.max_body_bytes;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > limit) {
        return (
            reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than the gateway's limit of {limit} bytes"),
            ),
            None,
        );
    }
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, incoming) = req.into_parts();
    let client_version = parts.version;
    let empty_body = incoming.is_end_stream();
    let retry_after_send = idempotent(&parts.method) && empty_body && !upgrade;
    let mut body: Option<Body> = Some(if empty_body {
        Empty::new().map_err(|e| match e {}).boxed_unsync()
    } else {
        Limited::new(incoming, usize::try_from(limit).unwrap_or(usize::MAX)).boxed_unsync()
    });

    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers, upgrade);
    let host_value = host_header.and_then(|h| HeaderValue::from_str(h).ok());
    if !headers.contains_key(header::HOST)
        && let Some(h) = host_value.clone()
    {
        headers.insert(header::HOST, h);
    }
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(scheme));
    if let Some(v) = host_value {
        headers.insert("x-forwarded-host", v);
    }
    let uri: Uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));

    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut candidates: Vec<Candidate<'_>> = Vec::with_capacity(route.endpoints.len());
    let mut last_error = String::new();
    for _ in 0..MAX_TRIES {
        let now = Instant::now();
        candidates.clear();
        candidates.extend(route.endpoints.iter().map(|u| Candidate {
            cluster: &u.cluster,
            usable: u.state.usable(now) && !tried.contains(&u.state.addr),
            in_flight: u.state.in_flight.load(Ordering::Relaxed),
        }));
        let turn = route.turn.fetch_add(1, Ordering::Relaxed);
        let Some(i) = pick(&candidates, route.policy, route.prefer.as_deref(), turn) else {
            break;
        };
        let upstream = &route.endpoints[i];
        let endpoint = &upstream.state;
        let in_flight = InFlight::new(endpoint);
        // An upgrade takes its connection for good: a new one, not an idle one.
        let idle = if upgrade { None } else { endpoint.idle.take() };
        let (mut sender, pooled) = match idle {
            Some(s) => (s, true),
            None => {
                match crate::pool::connect(endpoint.addr, shared.limits.connect_timeout).await {
                    Ok(s) => (s, false),
                    Err(e) => {
                        if endpoint.failed(true, Instant::now()) {
                            tracing::info!(endpoint = %endpoint.addr, cluster = %upstream.cluster, error = %e, "endpoint ejected");
                        }
                        last_error = e.to_string();
                        tried.push(endpoint.addr);
                        continue;
                    }
                }
            }
        };
        let Some(this_body) = body.take() else { break };
        let mut up = Request::new(this_body);
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri.clone();
        *up.version_mut() = Version::HTTP_11;
        *up.headers_mut() = headers.clone();
        let sent = tokio::time::timeout(route.timeout, sender.try_send_request(up)).await;
        let mut resp = match sent {
            Err(_) => {
                endpoint.failed(false, Instant::now());
                return (
                    reply(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "the endpoint {} in cluster {} of Service {} did not answer within {:?}",
                            endpoint.addr, upstream.cluster, route.service, route.timeout
                        ),
                    ),
                    None,
                );
            }
            Ok(Err(mut e)) => {
                if let Some(unsent) = e.take_message() {
                    // Not sent: an idle connection the upstream had closed, or one that broke
                    // before the request went out. The body is ours again.
                    body = Some(unsent.into_body());
                    if !pooled {
                        endpoint.failed(true, Instant::now());
                        tried.push(endpoint.addr);
                    }
                    last_error = e.error().to_string();
                    continue;
                }
                let err = e.into_error();
                // An idle connection the upstream closed as the request went out says nothing
                // of the endpoint; anything else is its failure.
                let stale = pooled && err.is_incomplete_message();
                if !stale {
                    endpoint.failed(false, Instant::now());
                }
                if retry_after_send {
                    // Sent, but no answer came: an idempotent request without a body may go
                    // again (as nginx's proxy_next_upstream error), to another endpoint unless
                    // the connection was only stale.
                    if !stale {
                        tried.push(endpoint.addr);
                    }
                    body = Some(Empty::new().map_err(|e| match e {}).boxed_unsync());
                    last_error = err.to_string();
                    continue;
                }
                let status = if is_too_large(&err) {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_GATEWAY
                };
                return (
                    reply(
                        status,
                        format!(
                            "the endpoint {} in cluster {} of Service {} failed: {err}",
                            endpoint.addr, upstream.cluster, route.service
                        ),
                    ),
                    None,
                );
            }
            Ok(Ok(resp)) => resp,
        };
        let served = Some(Served {
            cluster: upstream.cluster.clone(),
            addr: endpoint.addr,
        });
        if matches!(resp.status().as_u16(), 502..=504) {
            endpoint.failed(false, Instant::now());
        } else {
            endpoint.succeeded();
        }
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return (
                    reply(
                        StatusCode::BAD_GATEWAY,
                        "the endpoint switched protocols without being asked".into(),
                    ),
                    served,
                );
            };
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let _in_flight = in_flight;
                match futures::future::try_join(client_upgrade, upstream_upgrade).await {
                    Ok((c, u)) => {
                        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            let (parts, _) = resp.into_parts();
            return (
                Response::from_parts(parts, Empty::new().map_err(|e| match e {}).boxed_unsync()),
                served,
            );
        }
        endpoint.idle.give_back(sender);
        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        // The client's connection keeps its own version (an HTTP/1.0 upstream, as Python's
        // http.server, would otherwise close every client connection after one answer).
        parts.version = client_version;
        let body = Tracked {
            inner: incoming,
            _in_flight: in_flight,
        }
        .map_err(BoxError::from)
        .boxed_unsync();
        return (Response::from_parts(parts, body), served);
    }
    if tried.is_empty() {
        (
            reply(StatusCode::SERVICE_UNAVAILABLE, no_endpoint(&route)),
            None,
        )
    } else {
        (
            reply(
                StatusCode::BAD_GATEWAY,
                format!(
                    "no endpoint of Service {} port {} could be reached ({} tried; last: {last_error})",
                    route.service,
                    route.port,
                    tried.len()
                ),
            ),
            None,
        )
    }
}

/// Whether the request body went past the limit on its way out.
fn is_too_large(err: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_stay_on_their_connection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-trace"),
        );
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn only_requests_that_can_go_twice_are_idempotent() {
        for (m, want) in [
            (Method::GET, true),
            (Method::HEAD, true),
            (Method::PUT, true),
            (Method::DELETE, true),
            (Method::POST, false),
            (Method::PATCH, false),
        ] {
            assert_eq!(idempotent(&m), want, "{m}");
        }
    }
}
