//! Atoll's embedded cluster runtime: what turns an API server into a small but real cluster.
//!
//! - [`node`]: the node agent (a kubelet): registers a `Node`, keeps its lease, and runs the
//!   pods bound to it as local processes (or simulates them, like kwok, for scale tests).
//! - [`scheduler`]: binds pending pods to nodes through `pods/binding`.
//! - [`controllers`]: ReplicaSet, Deployment, EndpointSlice, the default ServiceAccount, and
//!   node lifecycle (pod CIDRs, lease monitoring, taints, eviction).
//!
//! Everything here talks to the cluster only through the Kubernetes API with kube-rs, so it
//! runs the same against the embedded server and a real kube-apiserver.

pub mod controllers;
pub mod node;
pub use atoll_runtime::quantity;
pub mod scheduler;

mod util;

/// Why a component of the cluster runtime stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
