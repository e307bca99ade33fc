//! Atoll's embedded Kubernetes-compatible API server.
//!
//! It serves the Kubernetes REST API over a [`atoll_store::Store`]: one generic machinery for
//! every resource (built-in kinds from `kinds.rs`, CRD kinds from `crd.rs`), discovery, watch,
//! Table output, and the server-side loops the API itself owns (CRD establishment, namespace
//! deletion, garbage collection, ClusterIP allocation). [`ApiServer::router`] is an axum
//! `Router`, so tests can drive it in-process with a real `kube::Client`; [`tls`] serves it
//! over HTTPS.
//!
//! It must never be reached around: controllers talk to it only through the Kubernetes API.

pub mod admission;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod crd;
pub mod csr;
pub mod discovery;
pub mod error;
pub mod impersonation;
pub use atoll_runtime::jsonpath;
pub mod kinds;
pub mod limitrange;
mod managed;
pub mod noderestriction;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod podlog;
pub mod podsecurity;
pub mod protobuf;
pub mod quota;
pub mod registry;
pub mod request;
pub mod rest;
pub mod reviews;
pub mod selector;
pub mod services;
pub mod table;
pub mod tls;
pub mod validation;
pub mod watch;

mod controllers;

use std::sync::Arc;

use atoll_store::Store;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;

pub use error::{ApiError, ApiResult};
pub use registry::Registry;
pub use tls::{Identity, Pki};

/// Settings of one API server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Name of the cluster this server is, for its logs.
    pub name: String,
    /// CIDR ClusterIPs are allocated from.
    pub service_cidr: String,
    /// Largest request body accepted, in bytes (kube-apiserver: 3 MiB).
    pub max_body_bytes: usize,
    /// How often watches without traffic get a bookmark.
    pub bookmark_interval: std::time::Duration,
    /// The address clients reach the server at (discovery's serverAddressByClientCIDRs).
    pub advertise_address: String,
    /// Bearer tokens from `--token-auth-file`.
    pub static_tokens: authn::StaticTokens,
    /// Signs service-account tokens; without it, TokenRequest is refused.
    pub token_signer: Option<Arc<authn::TokenSigner>>,
    /// The cluster CA, for the built-in CSR signer; without it, CSRs are never signed.
    pub ca: Option<Arc<Pki>>,
    /// The longest lifetime the CSR signer issues, in seconds.
    pub max_certificate_seconds: i64,
    /// Where to append one JSON line per request.
    pub audit_log: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "atoll".into(),
            service_cidr: "10.96.0.0/16".into(),
            max_body_bytes: 3 * 1024 * 1024,
            bookmark_interval: std::time::Duration::from_secs(30),
            advertise_address: "127.0.0.1:6443".into(),
            static_tokens: authn::StaticTokens::default(),
            token_signer: None,
            ca: None,
            max_certificate_seconds: 365 * 86_400,
            audit_log: None,
        }
    }
}

/// The server: storage, what is served, and the state of the API's own loops.
pub struct ApiServer {
    pub store: Store,
    pub registry: Registry,
    pub config: Config,
    pub cluster_ips: services::ClusterIpAllocator,
    pub authorizer: authz::Authorizer,
    /// One JSON line per request, when `--audit-log` is set.
    pub audit: Option<audit::AuditLog>,
    /// The client certificate shown to node agents for `pods/log`.
    kubelet_client: Option<podlog::KubeletClient>,
    /// Recent events' objects, decoded once for every selective watch.
    pub(crate) watch_decoded: watch::DecodeCache,
    /// Creates waiting for their ResourceQuota charge, committed in batches.
    pub(crate) quota_charges: rest::QuotaCharges,
    /// Open connections to admission webhooks.
    pub(crate) webhook_connections: admission::WebhookConnections,
}

impl ApiServer {
    /// Build the server over a store, load what the store holds (CRDs, allocated IPs), create
    /// the default namespaces, and start the API's own loops on the current tokio runtime.
    pub async fn start(store: Store, config: Config) -> Result<Arc<ApiServer>, ApiError> {
        let cluster_ips = services::ClusterIpAllocator::new(&config.service_cidr)
            .map_err(|e| ApiError::bad_request(format!("--service-cidr: {e}")))?;
        let audit = match &config.audit_log {
            Some(path) => Some(
                audit::AuditLog::open(path)
                    .map_err(|e| ApiError::bad_request(format!("--audit-log: {e}")))?,
            ),
            None => None,
        };
        let kubelet_client = config
            .ca
            .as_deref()
            .and_then(podlog::kubelet_client_identity);
        let server = Arc::new(ApiServer {
            registry: Registry::new(kinds::builtin()),
            store,
            config,
            cluster_ips,
            authorizer: authz::Authorizer::default(),
            kubelet_client,
            watch_decoded: Default::default(),
            quota_charges: Default::default(),
            webhook_connections: Default::default(),
            audit,
        });
        controllers::load_crds(&server)?;
        server.cluster_ips.load(&server)?;
        controllers::ensure_default_namespaces(&server).await?;
        controllers::ensure_bootstrap_policy(&server).await?;
        // A Service range whose first address an older server handed out: say so, serve on.
        if let Err(e) = controllers::ensure_kubernetes_service(&server).await {
            tracing::warn!(error = %e, "cannot keep Service default/kubernetes");
        }
        // Settle the aggregated roles (view feeds edit feeds admin) before serving.
        for _ in 0..3 {
            controllers::aggregate_cluster_roles(&server).await;
        }
        let rbac = controllers::reload_rbac(&server)?;
        controllers::spawn(server.clone(), rbac);
        tracing::info!(cluster = %server.config.name, revision = server.store.revision(), "API server started");
        Ok(server)
    }

    /// The HTTP application. Requests must carry an [`Identity`] extension (the TLS layer adds
    /// it from the client certificate); requests without one are anonymous.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone())
    }
}

async fn dispatch(State(server): State<Arc<ApiServer>>, req: Request) -> Response {
    rest::handle(server, req).await
}
