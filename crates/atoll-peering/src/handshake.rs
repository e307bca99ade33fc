//! The consumer's side of the handshake: trust the provider's CA by its pin, learn who the
//! provider is with the peering token, and turn the token into a peer identity through a CSR.
//! The key is made here and never leaves this cluster; it and the CSR's name are saved in
//! Secret `atoll-peering/<peer>-identity` before the CSR is sent, so a restart resumes the same
//! request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use atoll_api::peering::{
    CA_PIN_ANNOTATION, CSR_PEER_LABEL, PEERING_NAMESPACE, PEERS_GROUP, peer_user,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::json;

use crate::{INFO_CONFIGMAP, PeeringConfig};

/// Why a step of the handshake failed: a condition reason and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// Accepts any server certificate; used only to read the chain a server presents, whose CA is
/// then trusted only if it matches the pin.
#[derive(Debug)]
struct ReadChain(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for ReadChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Host and port of an `https://` URL.
fn host_port(url: &str) -> Result<(String, u16), Failure> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| Failure::new("InvalidURL", format!("{url:?} is not an https:// URL")))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>()
                .map_err(|_| Failure::new("InvalidURL", format!("{url:?} has no valid port")))?,
        ),
        _ => (authority.to_string(), 443),
    };
    if host.is_empty() {
        return Err(Failure::new("InvalidURL", format!("{url:?} names no host")));
    }
    Ok((host, port))
}

/// The CA (PEM) of the server at `url` whose public key hashes to `pin`, from the chain the
/// server presents.
pub async fn fetch_ca(url: &str, pin: &str) -> Result<String, Failure> {
    let pin = crate::pin::normalize(pin).map_err(|m| Failure::new("InvalidPin", m))?;
    let (host, port) = host_port(url)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::new("Unreachable", e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReadChain(provider)))
        .with_no_client_auth();
    let unreachable = |e: String| {
        Failure::new(
            "Unreachable",
            format!("cannot reach the provider's API server at {url}: {e}"),
        )
    };
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| unreachable("timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| unreachable(e.to_string()))?;
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| unreachable("the TLS handshake timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let presented: Vec<String> = chain.iter().filter_map(|c| crate::pin::of_der(c)).collect();
    match chain
        .iter()
        .find(|c| crate::pin::of_der(c).as_deref() == Some(pin.as_str()))
    {
        Some(ca) => Ok(pem(ca)),
        None => Err(Failure::new(
            "CAPinMismatch",
            format!(
                "the API server at {url} presents no CA whose public key hashes to {pin} (it presents {}): the pin is wrong or this is not the cluster the token came from",
                if presented.is_empty() {
                    "no certificate".to_string()
                } else {
                    presented.join(", ")
                }
            ),
        )),
    }
}

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A client for `url` trusting `ca_pem`, with `creds`.
pub(crate) async fn client(
    url: &str,
    ca_pem: &str,
    creds: atoll_runtime::Credentials<'_>,
) -> Result<(Client, String), Failure> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let kubeconfig = atoll_runtime::kubeconfig("provider", url, &ca, "peer", creds);
    Ok((client_of(&kubeconfig).await?, kubeconfig))
}

pub(crate) async fn client_of(kubeconfig: &str) -> Result<Client, Failure> {
    let bad = |e: String| Failure::new("InvalidIdentity", e);
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| bad(e.to_string()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()))?;
    config.connect_timeout = Some(Duration::from_secs(3));
    config.read_timeout = Some(Duration::from_secs(30));
    Client::try_from(config).map_err(|e| bad(e.to_string()))
}

/// What a provider says about itself (`kube-public/atoll-peering`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    pub cluster_id: String,
    pub api_server_url: String,
}

fn api_failure(url: &str, e: kube::Error, what: &str) -> Failure {
    match e {
        kube::Error::Api(s) if s.code == 401 => Failure::new(
            "TokenInvalid",
            format!(
                "the provider at {url} does not accept the peering token: it is wrong, expired or was deleted; ask the provider's admin for a new one (`atoll peer token`)"
            ),
        ),
        kube::Error::Api(s) if s.code == 403 => Failure::new(
            "Forbidden",
            format!("the provider at {url} refuses {what}: {}", s.message),
        ),
        e => Failure::new("Unreachable", format!("cannot {what} at {url}: {e}")),
    }
}

/// Who the provider at `url` is, asked with `token` over a connection trusting `ca_pem`.
pub async fn provider_info(url: &str, ca_pem: &str, token: &str) -> Result<ProviderInfo, Failure> {
    let (client, _) = client(url, ca_pem, atoll_runtime::Credentials::Token(token)).await?;
    info_with(&client, url).await
}

pub(crate) async fn info_with(client: &Client, url: &str) -> Result<ProviderInfo, Failure> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "kube-public")
        .get(INFO_CONFIGMAP)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => Failure::new(
                "NotAPeer",
                format!("the cluster at {url} publishes no peering facts (kube-public/{INFO_CONFIGMAP}): does it run `atoll peer controllers`?"),
            ),
            e => api_failure(url, e, "reading its peering facts"),
        })?;
    let data = cm.data.unwrap_or_default();
    Ok(ProviderInfo {
        cluster_id: data.get("clusterID").cloned().unwrap_or_default(),
        api_server_url: data.get("apiServerURL").cloned().unwrap_or_default(),
    })
}

/// The identity a consumer holds on a provider.
pub(crate) struct PeerIdentity {
    pub(crate) client: Client,
    pub(crate) kubeconfig: String,
    pub(crate) not_after: i64,
    pub(crate) not_before: i64,
}

pub(crate) fn identity_secret(peer: &str) -> String {
    format!("{peer}-identity")
}
pub(crate) fn token_secret(peer: &str) -> String {
    format!("{peer}-token")
}

fn secret_text(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .or_else(|| s.string_data.as_ref()?.get(key).cloned())
}

pub(crate) async fn read_secret(local: &Client, name: &str) -> Result<Option<Secret>, kube::Error> {
    Api::<Secret>::namespaced(local.clone(), PEERING_NAMESPACE)
        .get_opt(name)
        .await
}

pub(crate) async fn save_secret(
    local: &Client,
    name: &str,
    peer: &str,
    data: BTreeMap<String, String>,
) -> Result<(), kube::Error> {
    let api: Api<Secret> = Api::namespaced(local.clone(), PEERING_NAMESPACE);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": PEERING_NAMESPACE,
                     "labels": {atoll_api::peering::REMOTE_CLUSTER_ID_LABEL: peer}},
        "type": "Opaque",
        "data": data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect::<BTreeMap<_, _>>(),
    }))
    .map_err(kube::Error::SerdeError)?;
    match api.get_opt(name).await? {
        Some(old) => {
            let mut s = secret;
            s.metadata.resource_version = old.resource_version();
            api.replace(name, &PostParams::default(), &s).await?;
        }
        None => {
            api.create(&PostParams::default(), &secret).await?;
        }
    }
    Ok(())
}

/// (not before, not after) of a kubeconfig's client certificate, in seconds.
fn validity(kubeconfig: &str) -> Option<(i64, i64)> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).ok()?;
    let data = kc
        .auth_infos
        .iter()
        .find_map(|a| a.auth_info.as_ref()?.client_certificate_data.clone())?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

/// The saved identity for `peer`, if there is a live one.
pub(crate) async fn saved(local: &Client, peer: &str) -> Option<PeerIdentity> {
    let s = read_secret(local, &identity_secret(peer)).await.ok()??;
    let kubeconfig = secret_text(&s, "kubeconfig")?;
    let (not_before, not_after) = validity(&kubeconfig)?;
    if not_after <= k8s_openapi::jiff::Timestamp::now().as_second() {
        return None;
    }
    let client = client_of(&kubeconfig).await.ok()?;
    Some(PeerIdentity {
        client,
        kubeconfig,
        not_after,
        not_before,
    })
}

/// The peering token the consumer was given for `peer`.
pub(crate) async fn token(local: &Client, peer: &str) -> Result<Option<String>, kube::Error> {
    Ok(read_secret(local, &token_secret(peer))
        .await?
        .and_then(|s| secret_text(&s, "token"))
        .map(|t| t.trim().to_string()))
}

/// A key and a CSR for this cluster's peer identity.
fn new_request(consumer_id: &str) -> Result<(String, String), Failure> {
    let bad = |e: String| Failure::new("InvalidIdentity", e);
    let key = rcgen::KeyPair::generate().map_err(|e| bad(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| bad(e.to_string()))?;
    params.distinguished_name =
        atoll_runtime::client_subject(&peer_user(consumer_id), &[PEERS_GROUP.to_string()])
            .map_err(bad)?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| bad(e.to_string()))?;
    Ok((
        key.serialize_pem(),
        csr.pem().map_err(|e| bad(e.to_string()))?,
    ))
}

/// Turn the token (or, to renew, the current identity) into a new identity on the provider.
/// `provider` is a client on the provider with the credential making the request.
pub(crate) async fn request_identity(
    local: &Client,
    provider: &Client,
    peer: &str,
    url: &str,
    ca_pem: &str,
    cfg: &PeeringConfig,
) -> Result<PeerIdentity, Failure> {
    let local_err = |e: kube::Error| {
        Failure::new(
            "LocalError",
            format!("cannot keep the peering state in this cluster: {e}"),
        )
    };
    let secret = read_secret(local, &identity_secret(peer))
        .await
        .map_err(local_err)?;
    let pending = secret.as_ref().and_then(|s| {
        Some((
            secret_text(s, "pending.key")?,
            secret_text(s, "pending.csr")?,
        ))
    });
    let csrs: Api<CertificateSigningRequest> = Api::all(provider.clone());
    let (key, csr_name) = match pending {
        Some(p) => p,
        None => {
            let (key, request) = new_request(&cfg.cluster_id)?;
            let pin = crate::pin::of_pem(ca_pem).unwrap_or_default();
            let mut spec = json!({
                "signerName": "kubernetes.io/kube-apiserver-client",
                "request": ByteString(request.into_bytes()),
                "usages": ["client auth", "digital signature"],
            });
            if let Some(s) = cfg.certificate_seconds {
                spec["expirationSeconds"] = json!(s);
            }
            let csr: CertificateSigningRequest = serde_json::from_value(json!({
                "metadata": {"generateName": format!("atoll-peer-{}-", cfg.cluster_id),
                             "labels": {CSR_PEER_LABEL: cfg.cluster_id},
                             "annotations": {CA_PIN_ANNOTATION: pin}},
                "spec": spec,
            }))
            .map_err(|e| Failure::new("InvalidIdentity", e.to_string()))?;
            let name = csrs
                .create(&PostParams::default(), &csr)
                .await
                .map_err(|e| api_failure(url, e, "a certificate request"))?
                .name_any();
            let mut data = secret
                .as_ref()
                .and_then(|s| secret_text(s, "kubeconfig"))
                .map(|k| BTreeMap::from([("kubeconfig".to_string(), k)]))
                .unwrap_or_default();
            data.insert("pending.key".into(), key.clone());
            data.insert("pending.csr".into(), name.clone());
            save_secret(local, &identity_secret(peer), peer, data)
                .await
                .map_err(local_err)?;
            (key, name)
        }
    };
    let forget_pending = || async {
        let data = secret
            .as_ref()
            .and_then(|s| secret_text(s, "kubeconfig"))
            .map(|k| BTreeMap::from([("kubeconfig".to_string(), k)]))
            .unwrap_or_default();
        let _ = save_secret(local, &identity_secret(peer), peer, data).await;
    };
    // The provider decides within moments of seeing the request; a person never has to.
    let mut poll = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let cert = loop {
        let csr = match csrs.get_opt(&csr_name).await {
            Ok(Some(csr)) => csr,
            Ok(None) => {
                forget_pending().await;
                return Err(Failure::new(
                    "RequestLost",
                    format!(
                        "certificate request {csr_name} is gone from the provider; a new one follows"
                    ),
                ));
            }
            Err(e) => return Err(api_failure(url, e, "reading the certificate request")),
        };
        let status = csr.status.clone().unwrap_or_default();
        if let Some(c) = status.certificate.filter(|c| !c.0.is_empty()) {
            break String::from_utf8(c.0).unwrap_or_default();
        }
        if let Some(d) = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Denied" || c.type_ == "Failed")
        {
            forget_pending().await;
            return Err(Failure::new(
                "Refused",
                format!(
                    "the provider refused the peering: {}",
                    d.message.unwrap_or_else(|| d.reason.unwrap_or_default())
                ),
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Failure::new(
                "Pending",
                format!(
                    "the provider has not answered certificate request {csr_name}: does it run `atoll peer controllers`?"
                ),
            ));
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(Duration::from_millis(250));
    };
    let (client, kubeconfig) = client(
        url,
        ca_pem,
        atoll_runtime::Credentials::ClientCertificate {
            cert_pem: &cert,
            key_pem: &key,
        },
    )
    .await?;
    save_secret(
        local,
        &identity_secret(peer),
        peer,
        BTreeMap::from([
            ("kubeconfig".to_string(), kubeconfig.clone()),
            ("ca.crt".to_string(), ca_pem.to_string()),
        ]),
    )
    .await
    .map_err(local_err)?;
    let (not_before, not_after) = validity(&kubeconfig).unwrap_or((0, i64::MAX));
    Ok(PeerIdentity {
        client,
        kubeconfig,
        not_after,
        not_before,
    })
}

/// The CA a saved identity trusts.
pub(crate) async fn saved_ca(local: &Client, peer: &str) -> Option<String> {
    let s = read_secret(local, &identity_secret(peer)).await.ok()??;
    secret_text(&s, "ca.crt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            host_port("https://127.0.0.1:7001").unwrap(),
            ("127.0.0.1".to_string(), 7001)
        );
        assert_eq!(
            host_port("https://api.example/").unwrap(),
            ("api.example".to_string(), 443)
        );
        assert_eq!(
            host_port("https://[::1]:6443").unwrap(),
            ("::1".to_string(), 6443)
        );
        assert_eq!(host_port("http://x").unwrap_err().reason, "InvalidURL");
        assert_eq!(host_port("https://x:abc").unwrap_err().reason, "InvalidURL");
    }
}
