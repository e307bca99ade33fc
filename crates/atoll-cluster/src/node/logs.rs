//! The node's endpoint (the kubelet's `/containerLogs`, and `/exec` in `exec.rs`), which the
//! API server calls for `pods/log` and `pods/exec`. HTTPS with a self-signed certificate whose SHA-256 the node publishes on its
//! `Node`; callers must present a client certificate from the cluster CA.

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::NodeCtx;
use crate::Error;

pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(crate) struct LogServer {
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    pub port: u16,
    pub cert_sha256: String,
}

impl LogServer {
    /// Bind on loopback (an ephemeral port) and make the TLS identity; `client`'s CA is the
    /// one callers must be signed by.
    pub(crate) async fn start(cluster_ca: &[Vec<u8>]) -> Result<LogServer, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("cannot bind the node's log endpoint"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("log endpoint address"))?
            .port();
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .map_err(|e| Error::Config(format!("cannot make the node's serving certificate: {e}")))?;
        let der = cert.cert.der().clone();
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        let cert_sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let mut roots = rustls::RootCertStore::empty();
        for der in cluster_ca {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| Error::Config(format!("cluster CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Config(
                "the node agent needs the cluster CA (from its kubeconfig) to check who asks for logs".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| Error::Config(format!("client verifier: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![der], key)
            .map_err(|e| Error::Config(format!("serving certificate: {e}")))?;
        Ok(LogServer {
            listener,
            config: Arc::new(config),
            port,
            cert_sha256,
        })
    }

    pub(crate) fn serve(self, ctx: Arc<NodeCtx>) {
        tokio::spawn(atoll_runtime::https::serve(
            self.listener,
            self.config,
            move |_| {
                let ctx = ctx.clone();
                move |req: hyper::Request<hyper::body::Incoming>| {
                    let ctx = ctx.clone();
                    async move {
                        if req.uri().path().starts_with("/exec/") {
                            super::exec::serve(&ctx, req).await
                        } else if req.uri().path().starts_with("/attach/") {
                            super::exec::serve_attach(&ctx, req).await
                        } else if req.uri().path().starts_with("/portForward/") {
                            super::portforward::serve(&ctx, req).await
                        } else {
                            handle(&ctx, req.uri()).await
                        }
                    }
                }
            },
        ));
    }
}

pub(crate) fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg)).boxed());
    *r.status_mut() = status;
    r
}

async fn handle(ctx: &NodeCtx, uri: &http::Uri) -> Response<Body> {
    let parts: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let [_, namespace, pod, container] = parts.as_slice() else {
        return text(StatusCode::NOT_FOUND, "not found".into());
    };
    if parts[0] != "containerLogs" {
        return text(StatusCode::NOT_FOUND, "not found".into());
    }
    let query: Vec<(String, String)> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let follow = q("follow") == Some("true");
    let previous = q("previous") == Some("true");
    let tail: Option<usize> = q("tailLines").and_then(|v| v.parse().ok());
    let limit: Option<usize> = q("limitBytes").and_then(|v| v.parse().ok());
    let handle = ctx.running_pod(namespace, pod);
    let Some(handle) = handle else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} is not running on this node"),
        );
    };
    let file: PathBuf = handle.dir.join("logs").join(if previous {
        format!("{container}.previous.log")
    } else {
        format!("{container}.log")
    });
    let content = match std::fs::read(&file) {
        Ok(c) => c,
        Err(_) if previous => {
            return text(
                StatusCode::NOT_FOUND,
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
            );
        }
        Err(_) => Vec::new(),
    };
    let start = match tail {
        None => 0,
        Some(0) => content.len(),
        Some(n) => {
            // The last n lines (a final newline does not start a line).
            let body = content.strip_suffix(b"\n").unwrap_or(&content);
            body.iter()
                .enumerate()
                .rev()
                .filter(|(_, b)| **b == b'\n')
                .nth(n - 1)
                .map_or(0, |(i, _)| i + 1)
        }
    };
    let mut first = content[start..].to_vec();
    if let Some(l) = limit {
        first.truncate(l);
    }
    if !follow || previous {
        return Response::new(Full::new(Bytes::from(first)).boxed());
    }
    // Follow: what is there, then what is appended, until the container stops.
    let offset = content.len() as u64;
    let container = container.to_string();
    let state = (Some(first), file, offset, handle, container, 0u32);
    let stream = futures::stream::unfold(
        state,
        |(first, file, offset, handle, container, idle)| async move {
            if let Some(f) = first {
                return Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(f))),
                    (None, file, offset, handle, container, idle),
                ));
            }
            let mut idle = idle;
            loop {
                let grown = std::fs::File::open(&file).ok().and_then(|mut f| {
                    let len = f.metadata().ok()?.len();
                    if len <= offset {
                        return None;
                    }
                    f.seek(SeekFrom::Start(offset)).ok()?;
                    let mut buf = Vec::new();
                    f.take(len - offset).read_to_end(&mut buf).ok()?;
                    Some(buf)
                });
                if let Some(buf) = grown {
                    let next = offset + buf.len() as u64;
                    return Some((
                        Ok(Frame::data(Bytes::from(buf))),
                        (None, file, next, handle, container, 0),
                    ));
                }
                if !handle.container_running(&container) {
                    idle += 1;
                    // A restart renames the log; stop following after a quiet second.
                    if idle > 4 {
                        return None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    );
    Response::new(BodyExt::boxed(StreamBody::new(stream)))
}
