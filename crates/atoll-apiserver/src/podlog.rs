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

pub(crate) async fn serve(ctx: &Ctx) -> ApiResult<Response> {
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
        .unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled yet"
        )));
    }
    let snapshot = ctx.server.registry.snapshot();
    let node = snapshot
        .get("", "v1", "nodes")
        .and_then(|rt| {
            let e = ctx.server.store.get(&rt.key(None, node_name))?;
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
            "node {node_name} publishes no log endpoint (InternalIP, kubelet port and serving certificate)"
        )));
    };
    let mut path = format!("/containerLogs/{namespace}/{name}/{container}");
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
    let unreachable = |e: String| ApiError::ServiceUnavailable {
        message: format!("cannot reach node {node_name} at {address}:{port} for logs: {e}"),
    };
    let config = client_config(&ctx.server, pin).map_err(unreachable)?;
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect((address, port)),
    )
    .await
    .map_err(|_| unreachable("timed out connecting".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(address.into()), tcp)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, format!("{address}:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !answer.status().is_success() {
        use http_body_util::BodyExt;
        let status = answer.status();
        let text = answer
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
            .unwrap_or_default();
        return Err(if status == StatusCode::NOT_FOUND {
            ApiError::bad_request(text)
        } else {
            unreachable(format!("{status}: {text}"))
        });
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Body::new(answer.into_body()))
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
