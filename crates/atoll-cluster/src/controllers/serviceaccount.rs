//! Every namespace has a ServiceAccount `default` (re-created if deleted) and, when the
//! controllers know the cluster CA, the ConfigMap `kube-root-ca.crt` with it in `ca.crt`
//! (kube-controller-manager's root CA publisher: in-cluster clients trust the API server
//! with it).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;

use super::{Ctx, Key};
use crate::Error;

pub(crate) async fn reconcile(
    ctx: Arc<Ctx>,
    (_, namespace): Key,
) -> Result<Option<Duration>, Error> {
    let Some(ns) = ctx.caches.namespaces.get(&ObjectRef::new(&namespace)) else {
        return Ok(None);
    };
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    if let Some(ca) = &ctx.cfg.root_ca {
        publish_root_ca(&ctx, &namespace, ca).await?;
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    if api.get_opt("default").await?.is_some() {
        return Ok(None);
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(None),
        // Already there, or the namespace is going away.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 || e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The ConfigMap every namespace gets with the cluster CA.
pub(crate) const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// Create or correct `kube-root-ca.crt` in `namespace`.
async fn publish_root_ca(ctx: &Ctx, namespace: &str, ca: &str) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let data: std::collections::BTreeMap<String, String> =
        [("ca.crt".to_string(), ca.to_string())].into();
    let current = api.get_opt(ROOT_CA_CONFIGMAP).await?;
    let result = match current {
        Some(cm) if cm.data.as_ref() == Some(&data) => return Ok(()),
        Some(_) => {
            let patch = serde_json::json!({"data": data});
            api.patch(
                ROOT_CA_CONFIGMAP,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA_CONFIGMAP.into()),
                    namespace: Some(namespace.into()),
                    annotations: Some(
                        [(
                            "kubernetes.io/description".to_string(),
                            "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(()),
        // Made meanwhile, or the namespace is going away.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 || e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
