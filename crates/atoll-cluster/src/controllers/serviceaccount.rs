//! Every namespace has a ServiceAccount `default` (re-created if deleted).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
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
