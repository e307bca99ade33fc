//! TLS termination: the certificate of the SNI name, from the configuration in force, so a TLS
//! host added to an ingress is served from its next handshake on.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{Error, Shared};

struct BySni(Arc<Shared>);

impl std::fmt::Debug for BySni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BySni")
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        let cert = self.0.config().certs.get(name.as_deref());
        if cert.is_none() {
            tracing::debug!(sni = ?name, "no certificate for this TLS host");
        }
        cert
    }
}

/// The acceptor of the TLS listener: HTTP/2 or HTTP/1.1 by ALPN.
pub(crate) fn acceptor(shared: Arc<Shared>) -> Result<tokio_rustls::TlsAcceptor, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(shared)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
