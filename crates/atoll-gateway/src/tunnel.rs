//! The east-west tunnel, both ends of its protocol: mutual TLS in which each side presents its
//! cluster's hub identity (the agent's client certificate, issued by the hub's CA for
//! `system:atoll:cluster:<name>:agent`) and checks the other's, then one HTTP/1.1
//! `CONNECT <endpoint>` naming the endpoint to reach (as Istio's HBONE names its target). After
//! a `200` the stream is the endpoint's; any other answer says why not.
//!
//! Hub identities are client certificates (the hub's CSR signer issues nothing else), so the
//! dialling side checks the gateway's certificate as a client certificate of the hub's CA, and
//! that it names the cluster it meant to reach: a gateway cannot pass for another cluster's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request head a tunnel starts with may not be longer than this.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time for the TCP connection, the handshake and the answer to `CONNECT`.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the cluster identity is unusable: {0}")]
    Identity(String),
    #[error("cannot reach the east-west gateway {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("the TLS handshake with the east-west gateway {0} failed: {1}")]
    Handshake(String, std::io::Error),
    #[error("the east-west gateway {0} refused the tunnel: {1}")]
    Refused(String, String),
    #[error("the east-west gateway {0} did not answer within {DIAL_TIMEOUT:?}")]
    Timeout(String),
}

/// The cluster named by a hub identity's user (`system:atoll:cluster:<name>:agent`).
pub fn cluster_of_user(user: &str) -> Option<&str> {
    let agent = atoll_api::cluster::agent_user("");
    let (prefix, suffix) = agent.split_once("::")?;
    user.strip_prefix(prefix)?
        .strip_prefix(':')?
        .strip_suffix(&format!(":{suffix}"))
        .filter(|n| !n.is_empty() && !n.contains(':'))
}

/// The cluster a (verified) certificate is the hub identity of.
pub fn cluster_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (user, _) = atoll_runtime::certificate_subject(cert)?;
    cluster_of_user(&user).map(String::from)
}

/// The hub kubeconfig the agent keeps in Secret `name` (of `secrets`' namespace), once it
/// holds a signed identity; else why not.
pub async fn agent_kubeconfig(
    secrets: &kube::Api<k8s_openapi::api::core::v1::Secret>,
    name: &str,
) -> Result<String, String> {
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| format!("cannot read the agent's Secret: {e}"))?
        .ok_or_else(|| "the agent has not saved a hub identity yet".to_string())?;
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .ok_or_else(|| "the agent's Secret holds no kubeconfig yet (still joining)".to_string())
}

/// A cluster's hub identity, ready for both ends of a tunnel.
pub struct Identity {
    pub cluster: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Checks a peer's certificate as a client certificate of the hub's CA.
    peers: Arc<dyn ClientCertVerifier>,
    /// Client configurations by the cluster dialled, kept so TLS sessions are resumed.
    dialling: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Identity {
    /// From PEM: the certificate (chain), its key and the hub's CA.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Identity, Error> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Identity(format!("the certificate is not PEM: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| Error::Identity("no certificate".into()))?;
        let cluster = cluster_of(leaf).ok_or_else(|| {
            Error::Identity("the certificate is not a cluster's hub identity".into())
        })?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| Error::Identity(format!("the key is not PEM: {e}")))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca) {
            let ca = ca.map_err(|e| Error::Identity(format!("the hub's CA is not PEM: {e}")))?;
            roots
                .add(ca)
                .map_err(|e| Error::Identity(format!("the hub's CA: {e}")))?;
        }
        let peers = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| Error::Identity(format!("the hub's CA: {e}")))?;
        Ok(Identity {
            cluster,
            chain,
            key,
            peers,
            dialling: Mutex::new(HashMap::new()),
        })
    }

    /// From a hub kubeconfig with a client certificate (the agent's, as it keeps it in its
    /// Secret).
    pub fn from_kubeconfig(yaml: &str) -> Result<Identity, Error> {
        use base64::Engine;
        let kc = kube::config::Kubeconfig::from_yaml(yaml)
            .map_err(|e| Error::Identity(format!("not a kubeconfig: {e}")))?;
        let decode = |field: &str, b64: Option<String>| -> Result<Vec<u8>, Error> {
            let b64 =
                b64.ok_or_else(|| Error::Identity(format!("the kubeconfig has no {field}")))?;
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| Error::Identity(format!("{field}: {e}")))
        };
        let user = kc
            .auth_infos
            .iter()
            .find_map(|a| a.auth_info.as_ref())
            .ok_or_else(|| Error::Identity("the kubeconfig has no user".into()))?;
        let cert = decode(
            "client-certificate-data",
            user.client_certificate_data.clone(),
        )?;
        let key = decode(
            "client-key-data",
            user.client_key_data.as_ref().map(|k| {
                use secrecy::ExposeSecret;
                k.expose_secret().to_string()
            }),
        )?;
        let (_, ca) = atoll_runtime::kubeconfig_cluster(yaml).map_err(Error::Identity)?;
        let ca = decode(
            "certificate-authority-data",
            Some(ca).filter(|c| !c.is_empty()),
        )?;
        Identity::from_pem(&cert, &key, &ca)
    }

    /// The gateway's TLS configuration: this identity, and a client certificate required of
    /// every peer, from the hub's CA and of a cluster `admit` lets in (the handshake fails
    /// for any other).
    pub fn server_config(
        &self,
        admit: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Result<rustls::ServerConfig, Error> {
        let verifier = Arc::new(PeerVerifier {
            peers: self.peers.clone(),
            admit,
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Identity(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| Error::Identity(format!("the key and certificate: {e}")))?;
        config.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| Error::Identity(e.to_string()))?;
        Ok(config)
    }

    /// The TLS configuration for dialling cluster `cluster`'s gateway (one per cluster, kept,
    /// so later tunnels resume the TLS session).
    fn client_config(&self, cluster: &str) -> Result<Arc<rustls::ClientConfig>, Error> {
        let mut dialling = self.dialling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = dialling.get(cluster) {
            return Ok(c.clone());
        }
        let verifier = Arc::new(GatewayVerifier {
            peers: self.peers.clone(),
            cluster: cluster.to_string(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Identity(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| Error::Identity(format!("the key and certificate: {e}")))?;
        let config = Arc::new(config);
        dialling.insert(cluster.to_string(), config.clone());
        Ok(config)
    }
}

/// The gateway's check of a peer: a client certificate of the hub's CA, of an admitted
/// cluster.
struct PeerVerifier {
    peers: Arc<dyn ClientCertVerifier>,
    admit: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl std::fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerVerifier")
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.peers.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .peers
            .verify_client_cert(end_entity, intermediates, now)?;
        match cluster_of(end_entity) {
            Some(cluster) if (self.admit)(&cluster) => Ok(verified),
            Some(cluster) => {
                tracing::info!(%cluster, "east-west: refused at the handshake: the cluster imports no service of this cluster");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.peers.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.peers.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.peers.supported_verify_schemes()
    }
}

/// The dialler's check of a gateway: the hub identity of the cluster dialled.
struct GatewayVerifier {
    peers: Arc<dyn ClientCertVerifier>,
    cluster: String,
}

impl std::fmt::Debug for GatewayVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayVerifier")
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl ServerCertVerifier for GatewayVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.peers
            .verify_client_cert(end_entity, intermediates, now)?;
        if cluster_of(end_entity).as_deref() != Some(self.cluster.as_str()) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.peers.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.peers.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.peers.supported_verify_schemes()
    }
}

pub type Tunnel = tokio_rustls::client::TlsStream<TcpStream>;

/// Open a tunnel through cluster `cluster`'s east-west gateway at `gateway` to `target`, an
/// endpoint of a Service `service` (`<namespace>/<name>`, for the gateway's log) that cluster
/// exports.
pub async fn dial(
    identity: &Identity,
    gateway: &str,
    cluster: &str,
    target: SocketAddr,
    service: &str,
) -> Result<Tunnel, Error> {
    tokio::time::timeout(
        DIAL_TIMEOUT,
        dial_now(identity, gateway, cluster, target, service),
    )
    .await
    .map_err(|_| Error::Timeout(gateway.to_string()))?
}

async fn dial_now(
    identity: &Identity,
    gateway: &str,
    cluster: &str,
    target: SocketAddr,
    service: &str,
) -> Result<Tunnel, Error> {
    let config = identity.client_config(cluster)?;
    let tcp = TcpStream::connect(gateway)
        .await
        .map_err(|e| Error::Connect(gateway.to_string(), e))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(format!("{cluster}.east-west.atoll.io"))
        .map_err(|e| Error::Identity(format!("cluster name {cluster:?}: {e}")))?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Handshake(gateway.to_string(), e))?;
    let request =
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nAtoll-Service: {service}\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| Error::Handshake(gateway.to_string(), e))?;
    let head = read_head(&mut tls)
        .await
        .map_err(|e| Error::Refused(gateway.to_string(), e))?;
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        // The body says why; it is short and the connection closes after it.
        let mut why = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            (&mut tls).take(1024).read_to_end(&mut why),
        )
        .await;
        let why = String::from_utf8_lossy(&why).trim().to_string();
        return Err(Error::Refused(
            gateway.to_string(),
            format!("{status_line}: {why}"),
        ));
    }
    Ok(tls)
}

/// A throwaway hub CA (PEM) and the hub identities (certificate and key, PEM) it issues for
/// `clusters`, made as the hub's signer makes them (client-auth usage, the agent's user and
/// the cluster's group): for the benchmark and the tests of the tunnel without a hub.
pub fn throwaway_fleet(clusters: &[&str]) -> Result<(String, Vec<(String, String)>), String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name
        .push(DnType::CommonName, "throwaway-hub-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut out = Vec::new();
    for name in clusters {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name = atoll_runtime::client_subject(
            &atoll_api::cluster::agent_user(name),
            &[
                atoll_api::cluster::cluster_group(name),
                atoll_api::cluster::CLUSTERS_GROUP.to_string(),
            ],
        )?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        out.push((cert.pem(), key.serialize_pem()));
    }
    Ok((ca_cert.pem(), out))
}

/// Read an HTTP head (to the blank line, not a byte beyond: what follows is the tunnel's).
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, String> {
    let mut head = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(format!("the head is longer than {MAX_HEAD} bytes"));
        }
        match stream.read(&mut byte).await {
            Ok(0) => return Err("the connection closed before the head ended".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    String::from_utf8(head).map_err(|_| "the head is not UTF-8".into())
}

/// A `CONNECT` request head's target and the service it names; else the status and why.
pub fn parse_connect(head: &str) -> Result<(SocketAddr, String), (u16, String)> {
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, format!("malformed request line {request:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err((400, format!("unsupported version {version:?}")));
    }
    if method != "CONNECT" {
        return Err((
            405,
            format!("{method} is not served here: the east-west gateway takes CONNECT only"),
        ));
    }
    let target: SocketAddr = target.parse().map_err(|_| {
        (
            400,
            format!("the target {target:?} is not an endpoint address such as 10.0.0.1:80"),
        )
    })?;
    let service = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("atoll-service"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    Ok((target, service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_come_from_agent_users_only() {
        let cases = [
            ("system:atoll:cluster:member1:agent", Some("member1")),
            ("system:atoll:cluster:a-b.c:agent", Some("a-b.c")),
            ("system:atoll:cluster::agent", None),
            ("system:atoll:cluster:member1", None),
            ("system:atoll:cluster:x:y:agent", None),
            ("system:atoll:peer:member1", None),
            ("admin", None),
        ];
        for (user, want) in cases {
            assert_eq!(cluster_of_user(user), want, "{user}");
        }
    }

    #[test]
    fn connect_heads_are_read_strictly() {
        let ok = "CONNECT 127.0.0.5:8080 HTTP/1.1\r\nHost: 127.0.0.5:8080\r\nAtoll-Service: demo/web\r\n\r\n";
        assert_eq!(
            parse_connect(ok),
            Ok(("127.0.0.5:8080".parse().unwrap(), "demo/web".to_string()))
        );
        let cases: [(&str, u16); 5] = [
            ("GET / HTTP/1.1\r\n\r\n", 405),
            ("CONNECT web.demo:80 HTTP/1.1\r\n\r\n", 400),
            ("CONNECT 127.0.0.1:80\r\n\r\n", 400),
            ("CONNECT 127.0.0.1:80 SPDY/3\r\n\r\n", 400),
            ("CONNECT  127.0.0.1:80 HTTP/1.1\r\n\r\n", 400),
        ];
        for (head, code) in cases {
            assert_eq!(parse_connect(head).map_err(|e| e.0), Err(code), "{head:?}");
        }
    }

    #[tokio::test]
    async fn a_head_is_read_to_its_end_and_no_further() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"HTTP/1.1 200 OK\r\n\r\nfirst bytes of the tunnel")
            .await
            .unwrap();
        drop(a);
        assert_eq!(read_head(&mut b).await.unwrap(), "HTTP/1.1 200 OK\r\n\r\n");
        let mut rest = String::new();
        b.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "first bytes of the tunnel");
    }
}
