//! The cluster's PKI and the HTTPS listener.
//!
//! On first start a CA, a serving certificate and an admin client certificate are generated into
//! the data dir; later starts reuse them (the serving certificate is reissued from the same CA if
//! the listen address is not among its names). Client certificates signed by the CA
//! authenticate as CN = user, O = groups; requests without one are anonymous.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    /// The identity of in-process callers that act as the cluster admin.
    pub fn admin() -> Identity {
        Identity {
            user: "atoll:admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{path} is not a valid PEM file: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("{0}")]
    Invalid(String),
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The CA and the certificates of one cluster.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    ca_key: KeyPair,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

fn read(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io {
            path: path.into(),
            source,
        }),
    }
}

/// Write a file readable only by its owner (keys and kubeconfigs).
pub fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(contents.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(days);
}

impl Pki {
    /// Load the PKI of a data dir, creating what is missing; `hosts` are the names and
    /// addresses the serving certificate must cover.
    pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Pki, TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.into(),
            source,
        })?;
        let (ca_crt, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let (ca_pem, ca_key) = match (read(&ca_crt)?, read(&ca_key_path)?) {
            (Some(cert), Some(key)) => {
                let key = KeyPair::from_pem(&key).map_err(|e| TlsError::Pem {
                    path: ca_key_path.clone(),
                    why: e.to_string(),
                })?;
                (cert, key)
            }
            _ => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(Vec::<String>::new())?;
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, "atoll-ca");
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                validity(&mut params, 3650);
                let cert = params.self_signed(&key)?;
                write_private(&ca_key_path, &key.serialize_pem())?;
                std::fs::write(&ca_crt, cert.pem()).map_err(|source| TlsError::Io {
                    path: ca_crt.clone(),
                    source,
                })?;
                (cert.pem(), key)
            }
        };
        let mut pki = Pki {
            dir: dir.into(),
            ca_pem,
            ca_key,
            server_cert_pem: String::new(),
            server_key_pem: String::new(),
        };
        let (crt, key, names) = (
            dir.join("server.crt"),
            dir.join("server.key"),
            dir.join("server.hosts"),
        );
        let wanted = hosts.join(",");
        match (read(&crt)?, read(&key)?, read(&names)?) {
            (Some(c), Some(k), Some(n)) if n.trim() == wanted => {
                pki.server_cert_pem = c;
                pki.server_key_pem = k;
            }
            _ => {
                let (c, k) = pki.issue(hosts, "atoll-apiserver", &[], true)?;
                write_private(&key, &k)?;
                std::fs::write(&crt, &c).map_err(|source| TlsError::Io {
                    path: crt.clone(),
                    source,
                })?;
                std::fs::write(&names, &wanted).map_err(|source| TlsError::Io {
                    path: names.clone(),
                    source,
                })?;
                pki.server_cert_pem = c;
                pki.server_key_pem = k;
            }
        }
        Ok(pki)
    }

    /// Sign a parsed certificate request with the CA (its parameters as the signer set them).
    pub fn sign_request(
        &self,
        req: &rcgen::CertificateSigningRequestParams,
    ) -> Result<String, TlsError> {
        Ok(req.signed_by(&self.issuer()?)?.pem())
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, TlsError> {
        Ok(Issuer::from_ca_cert_pem(&self.ca_pem, &self.ca_key)?)
    }

    /// Issue a certificate signed by the CA: a serving certificate for `hosts`, or a client
    /// certificate for user `cn` in `groups`. Returns (certificate PEM, key PEM).
    pub fn issue(
        &self,
        hosts: &[String],
        cn: &str,
        groups: &[String],
        server: bool,
    ) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = if server {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            dn
        } else {
            atoll_runtime::client_subject(cn, groups).map_err(TlsError::Invalid)?
        };
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if server {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            for h in hosts {
                params
                    .subject_alt_names
                    .push(match h.parse::<std::net::IpAddr>() {
                        Ok(ip) => SanType::IpAddress(ip),
                        Err(_) => SanType::DnsName(h.clone().try_into()?),
                    });
            }
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        validity(&mut params, 365);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A kubeconfig for `user` (in `groups`) reaching `server_url`, with a fresh client
    /// certificate from the CA.
    pub fn kubeconfig(
        &self,
        server_url: &str,
        cluster: &str,
        user: &str,
        groups: &[String],
    ) -> Result<String, TlsError> {
        use base64::Engine;
        let (cert, key) = self.issue(&[], user, groups, false)?;
        Ok(atoll_runtime::kubeconfig(
            cluster,
            server_url,
            &base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
            &format!("{cluster}-{}", user.replace(':', "-")),
            atoll_runtime::Credentials::ClientCertificate {
                cert_pem: &cert,
                key_pem: &key,
            },
        ))
    }

    /// The rustls configuration: our serving certificate, client certificates optional and,
    /// when present, verified against the CA.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let c = c.map_err(|e| TlsError::Pem {
                path: self.dir.join("ca.crt"),
                why: e.to_string(),
            })?;
            roots.add(c)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Pem {
                    path: self.dir.join("server.crt"),
                    why: e.to_string(),
                })?;
        // The CA goes along with the certificate: a peer holding only its pin (`atoll peer
        // token`) finds the CA in the handshake, checks the pin, and trusts nothing else.
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()).flatten() {
            if !chain.contains(&c) {
                chain.push(c);
            }
        }
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).map_err(|e| {
            TlsError::Pem {
                path: self.dir.join("server.key"),
                why: e.to_string(),
            }
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// CN and O of a verified client certificate.
pub fn identity_from_der(der: &[u8]) -> Option<Identity> {
    let (user, mut groups) = atoll_runtime::certificate_subject(der)?;
    groups.push("system:authenticated".into());
    Some(Identity { user, groups })
}

/// Serve `app` over HTTPS on `listener` until the process ends; each request carries the
/// identity of its connection's client certificate.
pub async fn serve(listener: TcpListener, config: Arc<rustls::ServerConfig>, app: Router) {
    atoll_runtime::https::serve(listener, config, move |tls| {
        let identity = tls
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| identity_from_der(c.as_ref()));
        let app = app.clone();
        move |mut req: hyper::Request<Incoming>| {
            if let Some(id) = &identity {
                req.extensions_mut().insert(id.clone());
            }
            let app = app.clone();
            async move {
                match app.oneshot(req.map(Body::new)).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        }
    })
    .await
}
