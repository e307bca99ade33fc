//! Volume binding: every PersistentVolumeClaim is bound at once to a PersistentVolume made for
//! it (`pvc-<claim uid>`, driver `node-directory.atoll.io`): a directory on the node where the
//! pod using the claim runs (`claims/<namespace>/<claim>` under the node's data directory),
//! kept across the pod's replacements. When the claim goes, so does its volume (reclaim policy
//! Delete), as with a dynamic provisioner.

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
    let volume = format!("pvc-{}", claim.uid().unwrap_or_default());
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
    pvs.patch_status(
        &volume,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Bound"}})),
    )
    .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    if spec.volume_name.as_deref().unwrap_or_default() != volume {
        claims
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"volumeName": volume}})),
            )
            .await?;
    }
    claims
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {
                "phase": "Bound",
                "accessModes": spec.access_modes.unwrap_or_default(),
                "capacity": {"storage": size},
            }})),
        )
        .await?;
    Ok(None)
}
