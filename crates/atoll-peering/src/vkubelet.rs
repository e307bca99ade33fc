//! The virtual nodes' kubelet endpoint: the consumer's API server calls it for `pods/log`,
//! `pods/exec` and `pods/attach` of pods on a virtual node, as it calls any node agent (HTTPS,
//! a client certificate from the cluster CA, this endpoint's certificate pinned by the SHA-256
//! published on the Node). Each call is passed to the provider's API server as the pod's copy
//! there, with the peer identity, and the answer (a log stream, or a WebSocket after the
//! upgrade) relayed byte for byte.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::Error;

type Body = BoxBody<Bytes, hyper::Error>;

/// How to reach one provider as the peer.
#[derive(Clone)]
pub(crate) struct Upstream {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: Arc<rustls::ClientConfig>,
}

impl Upstream {
    /// From the peer identity's kubeconfig (server, CA, client certificate and key).
    pub(crate) fn from_kubeconfig(kubeconfig: &str) -> Result<Upstream, String> {
        use base64::Engine;
        let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| e.to_string())?;
        let cluster = kc
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .ok_or("no cluster")?;
        let user = kc
            .auth_infos
            .first()
            .and_then(|a| a.auth_info.clone())
            .ok_or("no user")?;
        let b64 = |s: Option<String>| -> Result<Vec<u8>, String> {
            base64::engine::general_purpose::STANDARD
                .decode(s.ok_or("missing data")?)
                .map_err(|e| e.to_string())
        };
        let ca = b64(cluster.certificate_authority_data)?;
        let cert = b64(user.client_certificate_data)?;
        let key = b64(user
            .client_key_data
            .map(|k| secrecy::ExposeSecret::expose_secret(&k).to_string())
            .filter(|k| !k.is_empty()))?;
        let server = cluster.server.ok_or("no server")?;
        let authority = server
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_matches(|c| c == '[' || c == ']').to_string(),
                p.parse().map_err(|_| "bad port")?,
            ),
            None => (authority, 443),
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?;
        Ok(Upstream {
            host,
            port,
            tls: Arc::new(tls),
        })
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| "timed out connecting".to_string())?
        .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn.with_upgrades());
        Ok(sender)
    }
}

/// Where a consumer pod's copy is: its provider and namespace there.
pub(crate) type Locator = dyn Fn(&str, &str) -> Option<(Upstream, String)> + Send + Sync;

/// The endpoint, listening on loopback.
pub(crate) struct Endpoint {
    pub(crate) port: u16,
    pub(crate) cert_sha256: String,
}

/// Start the endpoint; callers must hold a certificate from `cluster_ca_pem`.
pub(crate) async fn start(cluster_ca_pem: &str, locate: Arc<Locator>) -> Result<Endpoint, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(Error::config)?;
    let port = listener.local_addr().map_err(Error::config)?.port();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(Error::config)?;
    let der = cert.cert.der().clone();
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    let cert_sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cluster_ca_pem.as_bytes()) {
        roots
            .add(c.map_err(Error::config)?)
            .map_err(Error::config)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(Error::config)?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![der], key)
        .map_err(Error::config)?;
    tokio::spawn(atoll_runtime::https::serve(
        listener,
        Arc::new(config),
        move |_| {
            let locate = locate.clone();
            move |req: hyper::Request<hyper::body::Incoming>| {
                let locate = locate.clone();
                async move { handle(&*locate, req).await }
            }
        },
    ));
    Ok(Endpoint { port, cert_sha256 })
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.into()))
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

/// The provider's API path for a node path (`/containerLogs/NS/POD/C`, `/exec/NS/POD/C`,
/// `/attach/NS/POD/C`) with its query, the pod's copy being in `remote_ns`. Pure.
pub(crate) fn api_path(path: &str, query: &str, remote_ns: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [kind, _ns, pod, container] = parts.as_slice() else {
        return None;
    };
    let sub = match *kind {
        "containerLogs" => "log",
        "exec" => "exec",
        "attach" => "attach",
        _ => return None,
    };
    let mut q = format!("container={container}");
    if !query.is_empty() {
        q.push('&');
        q.push_str(query);
    }
    Some(format!(
        "/api/v1/namespaces/{remote_ns}/pods/{pod}/{sub}?{q}"
    ))
}

async fn handle(
    locate: &Locator,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (Some(ns), Some(pod)) = (parts.get(1), parts.get(2)) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let Some((upstream, remote_ns)) = locate(ns, pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} has no copy in a provider this cluster reaches"),
        );
    };
    let Some(api) = api_path(&path, &query, &remote_ns) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let mut sender = match upstream.connect().await {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach the provider of pod {ns}/{pod}: {e}"),
            );
        }
    };
    let upgrade = req.headers().contains_key(http::header::UPGRADE);
    let mut forward = http::Request::get(&api).header(
        http::header::HOST,
        format!("{}:{}", upstream.host, upstream.port),
    );
    if upgrade {
        forward = forward
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
    }
    let Ok(forward) = forward.body(Empty::<Bytes>::new()) else {
        return text(StatusCode::BAD_REQUEST, "bad request");
    };
    let mut answer = match sender.send_request(forward).await {
        Ok(a) => a,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("the provider did not answer: {e}"),
            );
        }
    };
    if !upgrade || answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The provider's answer as it is (a log stream, or its error).
        let status = answer.status();
        let mut r = Response::new(answer.into_body().boxed());
        *r.status_mut() = status;
        return r;
    }
    let mut switched = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in answer.headers() {
        switched = switched.header(k, v);
    }
    let caller = hyper::upgrade::on(&mut req);
    let provider = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (Ok(a), Ok(b)) = (caller.await, provider.await) else {
            return;
        };
        let mut a = hyper_util::rt::TokioIo::new(a);
        let mut b = hyper_util::rt::TokioIo::new(b);
        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    });
    switched
        .body(Empty::new().map_err(|e: Infallible| match e {}).boxed())
        .unwrap_or_else(|_| text(StatusCode::BAD_GATEWAY, "bad upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_become_the_providers_api_paths() {
        assert_eq!(
            api_path(
                "/containerLogs/shop/web-1/web",
                "follow=true&tailLines=5",
                "shop-member1"
            )
            .as_deref(),
            Some(
                "/api/v1/namespaces/shop-member1/pods/web-1/log?container=web&follow=true&tailLines=5"
            )
        );
        assert_eq!(
            api_path(
                "/exec/shop/web-1/web",
                "command=ls&stdout=1",
                "shop-member1"
            )
            .as_deref(),
            Some(
                "/api/v1/namespaces/shop-member1/pods/web-1/exec?container=web&command=ls&stdout=1"
            )
        );
        assert_eq!(api_path("/portForward/shop/web-1", "", "x"), None);
        assert_eq!(api_path("/metrics", "", "x"), None);
    }
}
