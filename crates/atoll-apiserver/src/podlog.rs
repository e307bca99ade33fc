//! `pods/log`: the server asks the pod's node agent for the container's log and streams the
//! answer back, as kube-apiserver does with the kubelet.
//!
//! The node is found from the pod's `spec.nodeName`: its `InternalIP` address and
//! `status.daemonEndpoints.kubeletEndpoint.Port`. The server authenticates to the node with a
//! client certificate from the cluster CA. The node's serving certificate is self-signed; the
//! server accepts it only if its SHA-256 matches the one the node published on its `Node`
//! (annotation [`SERVING_CERT_ANNOTATION`]), which only nodes and admins may write.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::object::decode_stored;
use crate::rest::Ctx;

pub use atoll_api::KUBELET_SERVING_CERT_ANNOTATION as SERVING_CERT_ANNOTATION;

/// The identity the server shows node agents.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// Where a pod's container runs: its node's endpoint, and the node's pinned certificate.
struct Target {
    /// The container's spec, from the pod.
    spec: Value,
    namespace: String,
    name: String,
    container: String,
    node_name: String,
    address: IpAddr,
    port: u16,
    pin: String,
}

/// The pod, container and node a `log` or `exec` request is for. `what` names the request in
/// errors.
fn target(ctx: &Ctx, what: &str) -> ApiResult<Target> {
    let name = ctx.name().to_string();
    let namespace = ctx.rr.namespace.clone().unwrap_or_default();
    let entry = ctx
        .server
        .store
        .get(&ctx.rt.key(Some(&namespace), &name))
        .ok_or_else(|| ApiError::not_found("", "pods", &name))?;
    let pod = decode_stored(&ctx.rt, &entry)?;
    let names = |list: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    let container = match ctx.query.get("container") {
        // A port-forward is to the pod, whichever container listens.
        _ if what == "portforward" => String::new(),
        Some(c) if containers.iter().chain(&init).any(|x| x == c) => c.to_string(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            // As kube-apiserver words it, init containers named apart.
            let init = if init.is_empty() {
                String::new()
            } else {
                format!(" or one of the init containers: [{}]", init.join(" "))
            };
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]{init}",
                containers.join(" ")
            )));
        }
    };
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled yet"
        )));
    }
    let snapshot = ctx.server.registry.snapshot();
    let node = snapshot
        .get("", "v1", "nodes")
        .and_then(|rt| {
            let e = ctx.server.store.get(&rt.key(None, &node_name))?;
            decode_stored(rt, &e).ok()
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {name} is on node {node_name}, which does not exist"
            ))
        })?;
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
        })
        .and_then(|x| x.get("address").and_then(Value::as_str))
        .and_then(|a| a.parse::<IpAddr>().ok());
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0);
    let pin = node
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SERVING_CERT_ANNOTATION))
        .and_then(Value::as_str)
        .map(String::from);
    let (Some(address), Some(port), Some(pin)) = (address, port, pin) else {
        return Err(ApiError::bad_request(format!(
            "node {node_name} publishes no endpoint for {what} (InternalIP, kubelet port and serving certificate): its runtime may run no processes"
        )));
    };
    let spec = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| pod.pointer(&format!("/spec/{l}")).and_then(Value::as_array))
        .flatten()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(container.as_str()))
        .cloned()
        .unwrap_or_default();
    Ok(Target {
        spec,
        namespace,
        name,
        container,
        node_name,
        address,
        port,
        pin,
    })
}

impl Target {
    fn unreachable(&self, what: &str) -> impl Fn(String) -> ApiError + '_ {
        let what = what.to_string();
        move |e| ApiError::ServiceUnavailable {
            message: format!(
                "cannot reach node {} at {}:{} for {what}: {e}",
                self.node_name, self.address, self.port
            ),
        }
    }

    /// An HTTP/1.1 connection to the node (TLS, our client certificate, its pinned one).
    async fn connect(
        &self,
        ctx: &Ctx,
        what: &str,
    ) -> ApiResult<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
        let unreachable = self.unreachable(what);
        let config = client_config(&ctx.server, self.pin.clone()).map_err(&unreachable)?;
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect((self.address, self.port)),
        )
        .await
        .map_err(|_| unreachable("timed out connecting".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::IpAddress(self.address.into()), tcp)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        // Upgrades allowed: `exec` turns this connection into the stream of a WebSocket.
        tokio::spawn(conn.with_upgrades());
        Ok(sender)
    }

    /// The node's error answer as the API's.
    async fn refused(&self, what: &str, answer: http::Response<hyper::body::Incoming>) -> ApiError {
        use http_body_util::BodyExt;
        let status = answer.status();
        let text = answer
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
            .unwrap_or_default();
        match status {
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => ApiError::bad_request(text),
            _ => (self.unreachable(what))(format!("{status}: {text}")),
        }
    }
}

pub(crate) async fn serve(ctx: &Ctx) -> ApiResult<Response> {
    let t = target(ctx, "logs")?;
    let mut path = format!("/containerLogs/{}/{}/{}", t.namespace, t.name, t.container);
    let forwarded: Vec<String> = [
        "follow",
        "tailLines",
        "previous",
        "limitBytes",
        "sinceSeconds",
    ]
    .iter()
    .filter_map(|k| ctx.query.get(k).map(|v| format!("{k}={}", urlencode(v))))
    .collect();
    if !forwarded.is_empty() {
        path.push('?');
        path.push_str(&forwarded.join("&"));
    }
    let mut sender = t.connect(ctx, "logs").await?;
    let request = http::Request::get(path)
        .header(http::header::HOST, format!("{}:{}", t.address, t.port))
        .body(Empty::<Bytes>::new())
        .map_err(|e| (t.unreachable("logs"))(e.to_string()))?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| (t.unreachable("logs"))(e.to_string()))?;
    if !answer.status().is_success() {
        return Err(t.refused("logs", answer).await);
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Body::new(answer.into_body()))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `pods/exec` over a WebSocket (the `v5.channel.k8s.io` and `v4.channel.k8s.io` protocols,
/// which kubectl speaks since 1.30): the request is checked here, then the upgrade is passed
/// to the pod's node, which runs the command, and the two connections are joined byte for byte,
/// as kube-apiserver proxies to the kubelet.
pub(crate) async fn exec(ctx: &Ctx, req: axum::extract::Request) -> ApiResult<Response> {
    stream(ctx, req, "exec").await
}

/// `pods/portforward` over a WebSocket (`v4.channel.k8s.io`, as the Python client and
/// kube-apiserver since 1.31 speak it), passed to the node as `exec` is; the node connects
/// to the pod's ports.
pub(crate) async fn portforward(ctx: &Ctx, req: axum::extract::Request) -> ApiResult<Response> {
    stream(ctx, req, "portforward").await
}

/// `pods/attach`, passed to the node as `exec` is.
pub(crate) async fn attach(ctx: &Ctx, req: axum::extract::Request) -> ApiResult<Response> {
    stream(ctx, req, "attach").await
}

async fn stream(ctx: &Ctx, mut req: axum::extract::Request, what: &str) -> ApiResult<Response> {
    let t = target(ctx, what)?;
    let interactive = ["stdin", "tty"]
        .iter()
        .any(|f| t.spec.get(f) == Some(&Value::Bool(true)));
    if what == "attach" && !interactive {
        // (Checked here, not only on the node: a client falling back to SPDY is then told
        // the real reason.)
        return Err(ApiError::bad_request(format!(
            "container {} in pod {}/{} was started without stdin or tty: there is nothing to attach to (kubectl logs -f shows its output)",
            t.container, t.namespace, t.name
        )));
    }
    if what == "exec" && ctx.query.all("command").is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade != "websocket" && what == "portforward" {
        return Err(ApiError::bad_request(if upgrade.starts_with("spdy") {
            "this server speaks port-forward over WebSockets only (v4.channel.k8s.io), not SPDY"
        } else {
            "Upgrade request required"
        }));
    }
    if upgrade != "websocket" {
        return Err(ApiError::bad_request(if upgrade.starts_with("spdy") {
            "this server speaks exec and attach over WebSockets only (v5.channel.k8s.io), not SPDY: use kubectl 1.30 or later (and do not set KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false)"
        } else {
            "Upgrade request required"
        }));
    }
    let mut path = if what == "portforward" {
        format!("/portForward/{}/{}?", t.namespace, t.name)
    } else {
        format!("/{what}/{}/{}/{}?", t.namespace, t.name, t.container)
    };
    let mut params: Vec<String> = ctx
        .query
        .all("command")
        .iter()
        .map(|c| format!("command={}", urlencode(c)))
        .collect();
    for k in ["stdin", "stdout", "stderr", "tty", "ports"] {
        if let Some(v) = ctx.query.get(k) {
            params.push(format!("{k}={}", urlencode(v)));
        }
    }
    path.push_str(&params.join("&"));
    let mut sender = t.connect(ctx, what).await?;
    let mut forward = http::Request::get(path)
        .header(http::header::HOST, format!("{}:{}", t.address, t.port))
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket");
    for h in [
        http::header::SEC_WEBSOCKET_KEY,
        http::header::SEC_WEBSOCKET_VERSION,
        http::header::SEC_WEBSOCKET_PROTOCOL,
    ] {
        for v in req.headers().get_all(&h) {
            forward = forward.header(&h, v);
        }
    }
    let forward = forward
        .body(Empty::<Bytes>::new())
        .map_err(|e| (t.unreachable(what))(e.to_string()))?;
    let mut answer = sender
        .send_request(forward)
        .await
        .map_err(|e| (t.unreachable(what))(e.to_string()))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(t.refused(what, answer).await);
    }
    let mut switched = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in answer.headers() {
        switched = switched.header(k, v);
    }
    let client_side = hyper::upgrade::on(&mut req);
    let node_side = hyper::upgrade::on(&mut answer);
    let who = format!("{}/{}", t.namespace, t.name);
    tokio::spawn(async move {
        let (Ok(client), Ok(node)) = (client_side.await, node_side.await) else {
            tracing::debug!(pod = %who, "exec/attach: an upgrade did not complete");
            return;
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut node = hyper_util::rt::TokioIo::new(node);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut node).await {
            tracing::debug!(pod = %who, error = %e, "exec/attach stream ended");
        }
    });
    switched
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// TLS to one node: our kubelet-client certificate, and the node's certificate pinned.
fn client_config(
    server: &crate::ApiServer,
    pin: String,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let identity = server
        .kubelet_client
        .as_ref()
        .ok_or("this server has no cluster CA to authenticate to nodes with")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCert {
        sha256: pin.to_ascii_lowercase(),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.0.clone(), identity.1.clone_key())
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

/// The certificate chain and key the server presents to node agents.
pub(crate) type KubeletClient = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

pub(crate) fn kubelet_client_identity(pki: &crate::Pki) -> Option<KubeletClient> {
    let (cert, key) = pki
        .issue(
            &[],
            KUBELET_CLIENT_USER,
            &["system:masters".to_string()],
            false,
        )
        .ok()?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .filter_map(Result::ok)
        .collect();
    use rustls::pki_types::pem::PemObject;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).ok()?;
    Some((certs, key))
}

#[derive(Debug)]
struct PinnedCert {
    sha256: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        if hex == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the node's serving certificate is not the one its Node object names".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
