//! Volume binding: every PersistentVolumeClaim is bound at once to a PersistentVolume made for
//! it (`pvc-<claim uid>`, driver `node-directory.atoll.io`): a directory on the node where the
//! pod using the claim runs (`claims/<namespace>/<claim>` under the node's data directory),
//! kept across the pod's replacements. When the claim goes, so does its volume (reclaim policy
//! Delete), as with a dynamic provisioner. A claim that names its volume waits for that one.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::{Ctx, Key};
use crate::Error;

/// The CSI driver name the volumes carry: node directories, this runtime's storage.
pub(crate) const DRIVER: &str = "node-directory.atoll.io";
const CLAIM_NAMESPACE: &str = "volume.atoll.io/claim-namespace";
const CLAIM_NAME: &str = "volume.atoll.io/claim-name";

pub(crate) async fn reconcile(
    ctx: Arc<Ctx>,
    (namespace, name): Key,
) -> Result<Option<Duration>, Error> {
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let claim = ctx
        .caches
        .claims
        .get(&ObjectRef::new(&name).within(&namespace))
        .filter(|c| c.metadata.deletion_timestamp.is_none());
    let Some(claim) = claim else {
        // The claim is gone: its volume goes with it.
        let selector = format!("{CLAIM_NAMESPACE}={namespace},{CLAIM_NAME}={name}");
        for pv in pvs.list(&ListParams::default().labels(&selector)).await? {
            match pvs.delete(&pv.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(None);
    };
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase == Some("Bound") {
        return Ok(None);
    }
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let generated = format!("pvc-{}", claim.uid().unwrap_or_default());
    let named = spec
        .volume_name
        .clone()
        .filter(|v| !v.is_empty() && *v != generated);
    if let Some(volume) = named {
        // A claim naming its volume binds to that one (static provisioning), once it exists
        // and is free or already its own; until then it waits, Pending.
        let Some(pv) = pvs.get_opt(&volume).await? else {
            return Ok(Some(Duration::from_secs(5)));
        };
        let owner = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let free = owner.is_none_or(|r| {
            r.namespace.as_deref() == Some(namespace.as_str())
                && r.name.as_deref() == Some(name.as_str())
        });
        if !free {
            return Ok(Some(Duration::from_secs(5)));
        }
        let claim_ref = json!({"spec": {"claimRef": {"kind": "PersistentVolumeClaim",
            "apiVersion": "v1", "namespace": namespace, "name": name, "uid": claim.uid()}}});
        pvs.patch(&volume, &PatchParams::default(), &Patch::Merge(&claim_ref))
            .await?;
        let capacity = pv
            .spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .map_or(size, |q| q.0.clone());
        return bind(&ctx, &pvs, &namespace, &name, &volume, &spec, &capacity).await;
    }
    let volume = generated;
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": volume, "labels": {CLAIM_NAMESPACE: namespace, CLAIM_NAME: name}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes.clone().unwrap_or_default(),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.storage_class_name.clone().unwrap_or_default(),
            "volumeMode": "Filesystem",
            "csi": {"driver": DRIVER, "volumeHandle": format!("{namespace}/{name}")},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                         "namespace": namespace, "name": name, "uid": claim.uid()},
        },
    }))
    .map_err(|e| Error::Config(e.to_string()))?;
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    bind(&ctx, &pvs, &namespace, &name, &volume, &spec, &size).await
}

/// Mark the volume and the claim bound to each other.
async fn bind(
    ctx: &Ctx,
    pvs: &Api<PersistentVolume>,
    namespace: &str,
    name: &str,
    volume: &str,
    spec: &k8s_openapi::api::core::v1::PersistentVolumeClaimSpec,
    size: &str,
) -> Result<Option<Duration>, Error> {
    pvs.patch_status(
        volume,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Bound"}})),
    )
    .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    if spec.volume_name.as_deref().unwrap_or_default() != volume {
        claims
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"volumeName": volume}})),
            )
            .await?;
    }
    claims
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {
                "phase": "Bound",
                "accessModes": spec.access_modes.clone().unwrap_or_default(),
                "capacity": {"storage": size},
            }})),
        )
        .await?;
    Ok(None)
}
