//! Prometheus metrics and `/healthz`, on their own listener.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use crate::{Error, Shared};

/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Debug)]
pub struct Metrics {
    /// By status code (index = code - 100).
    codes: Vec<AtomicU64>,
    buckets: [AtomicU64; BUCKETS.len() + 1],
    micros: AtomicU64,
    pub reloads: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            codes: (100..600).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            micros: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn answered(&self, code: u16, took: Duration) {
        if let Some(c) = usize::from(code)
            .checked_sub(100)
            .and_then(|i| self.codes.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Requests answered so far.
    pub fn total(&self) -> u64 {
        self.codes.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let mut out = String::new();
    out.push_str("# HELP atoll_gateway_requests_total Requests answered, by status code.\n");
    out.push_str("# TYPE atoll_gateway_requests_total counter\n");
    for (i, c) in m.codes.iter().enumerate() {
        let n = c.load(Ordering::Relaxed);
        if n > 0 {
            let _ = writeln!(
                out,
                "atoll_gateway_requests_total{{code=\"{}\"}} {n}",
                i + 100
            );
        }
    }
    out.push_str("# HELP atoll_gateway_request_duration_seconds Time from a request's headers to its answer's headers.\n");
    out.push_str("# TYPE atoll_gateway_request_duration_seconds histogram\n");
    let mut cumulative = 0;
    for (i, b) in m.buckets.iter().enumerate() {
        cumulative += b.load(Ordering::Relaxed);
        let le = BUCKETS
            .get(i)
            .map(|b| b.to_string())
            .unwrap_or_else(|| "+Inf".into());
        let _ = writeln!(
            out,
            "atoll_gateway_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "atoll_gateway_request_duration_seconds_sum {}",
        m.micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "atoll_gateway_request_duration_seconds_count {cumulative}"
    );
    out.push_str(
        "# HELP atoll_gateway_config_reloads_total Configurations built from the hub's objects.\n",
    );
    out.push_str("# TYPE atoll_gateway_config_reloads_total counter\n");
    let _ = writeln!(
        out,
        "atoll_gateway_config_reloads_total {}",
        m.reloads.load(Ordering::Relaxed)
    );
    let now = Instant::now();
    let mut endpoints = shared.registry.all();
    endpoints.sort_by_key(|e| e.addr);
    for (name, help, kind) in [
        (
            "upstream_requests_total",
            "Requests sent to an endpoint.",
            "counter",
        ),
        (
            "upstream_errors_total",
            "Requests an endpoint failed (no connection, gateway errors, timeouts).",
            "counter",
        ),
        (
            "upstream_in_flight",
            "Requests an endpoint is answering now.",
            "gauge",
        ),
        (
            "upstream_usable",
            "Whether an endpoint takes requests (healthy and not ejected).",
            "gauge",
        ),
    ] {
        let _ = writeln!(out, "# HELP atoll_gateway_{name} {help}");
        let _ = writeln!(out, "# TYPE atoll_gateway_{name} {kind}");
        for e in &endpoints {
            let v = match name {
                "upstream_requests_total" => e.requests.load(Ordering::Relaxed),
                "upstream_errors_total" => e.errors.load(Ordering::Relaxed),
                "upstream_in_flight" => e.in_flight.load(Ordering::Relaxed) as u64,
                _ => u64::from(e.usable(now)),
            };
            let _ = writeln!(out, "atoll_gateway_{name}{{endpoint=\"{}\"}} {v}", e.addr);
        }
    }
    out
}

/// Serve `/metrics` and `/healthz`; returns the bound address.
pub(crate) async fn serve(shared: Arc<Shared>, listen: SocketAddr) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Listen(listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Listen(listen, e))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let shared = shared.clone();
                        async move {
                            let (status, body) = match req.uri().path() {
                                "/metrics" => (200, render(&shared)),
                                "/healthz" | "/readyz" | "/livez" => (200, "ok\n".to_string()),
                                _ => (404, "not found: try /metrics or /healthz\n".to_string()),
                            };
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status)
                                .unwrap_or(hyper::StatusCode::OK);
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
