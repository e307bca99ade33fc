//! Applying one manifest to the cluster: what it is (discovery, cached), how (the update
//! strategy), and as whom (the cluster's own client, or the work's executor by
//! impersonation).

use std::collections::HashMap;
use std::sync::Mutex;

use atoll_api::work::{
    APPLIED_BY_LABEL, APPLIER_MANAGER, AppliedResource, ManifestResourceMeta, UpdateStrategy,
};
use kube::Client;
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::Scope;
use serde_json::Value;

/// A manifest's identity, read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// What a manifest says it is, or why it cannot be applied.
pub fn identify(manifest: &Value) -> Result<Identity, String> {
    let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
    let kind = manifest["kind"].as_str().unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(format!(
            "the manifest has no {}: every manifest needs apiVersion, kind and metadata.name",
            if kind.is_empty() {
                "kind"
            } else {
                "apiVersion"
            }
        ));
    }
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(format!("the {kind} manifest has no metadata.name"));
    }
    Ok(Identity {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        name: name.into(),
        namespace: manifest["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .into(),
    })
}

/// A kind as the cluster serves it.
#[derive(Clone, Debug)]
pub struct Served {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// Kinds resolved through the cluster's discovery, remembered (a kind not served yet, say of a
/// CRD the same work creates, is asked again next time).
#[derive(Default)]
pub struct Kinds(Mutex<HashMap<(String, String, String), Served>>);

impl Kinds {
    pub async fn resolve(&self, client: &Client, id: &Identity) -> Result<Served, String> {
        let key = (id.group.clone(), id.version.clone(), id.kind.clone());
        if let Some(s) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(s.clone());
        }
        let gvk = GroupVersionKind::gvk(&id.group, &id.version, &id.kind);
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| {
                let api_version = if id.group.is_empty() {
                    id.version.clone()
                } else {
                    format!("{}/{}", id.group, id.version)
                };
                match e {
                    kube::Error::Api(ref s) if s.code == 401 => format!(
                        "the cluster refused the applier's credential ({}); for a Push cluster, `atoll join --sync-mode Push` again renews it",
                        s.message
                    ),
                    kube::Error::Api(ref s) if s.code == 404 => format!(
                        "the cluster does not serve kind {} in {api_version}",
                        id.kind
                    ),
                    kube::Error::Discovery(_) => format!(
                        "the cluster does not serve kind {} in {api_version}",
                        id.kind
                    ),
                    other => format!("cannot look up kind {} in {api_version}: {other}", id.kind),
                }
            })?;
        let served = Served {
            resource,
            namespaced: caps.scope == Scope::Namespaced,
        };
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, served.clone());
        Ok(served)
    }

    /// Forget what is known (a CRD changed).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The namespace a manifest lands in: its own, or (namespaced kinds only) `default`.
pub fn namespace_of(id: &Identity, served: &Served) -> Option<String> {
    if !served.namespaced {
        return None;
    }
    Some(if id.namespace.is_empty() {
        "default".to_string()
    } else {
        id.namespace.clone()
    })
}

pub fn api(client: &Client, served: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &served.resource),
        None => Api::all_with(client.clone(), &served.resource),
    }
}

/// The manifest as it is sent: with the label that marks it as applied by this hub's works
/// (so one watch per kind sees it), and the namespace it lands in.
pub fn prepared(manifest: &Value, namespace: Option<&str>, hub_hash: &str) -> Value {
    let mut obj = manifest.clone();
    if !obj["metadata"].is_object() {
        obj["metadata"] = serde_json::json!({});
    }
    if !obj["metadata"]["labels"].is_object() {
        obj["metadata"]["labels"] = serde_json::json!({});
    }
    obj["metadata"]["labels"][APPLIED_BY_LABEL] = Value::String(hub_hash.into());
    if let Some(ns) = namespace {
        obj["metadata"]["namespace"] = Value::String(ns.into());
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            m.remove(f);
        }
    }
    obj
}

/// Apply one manifest by its strategy; returns the object as the cluster has it then (`None`
/// for a `ReadOnly` manifest whose object does not exist).
pub async fn apply(
    api: &Api<DynamicObject>,
    name: &str,
    obj: &Value,
    strategy: Option<&UpdateStrategy>,
) -> Result<Option<Value>, String> {
    let kind = obj["kind"].as_str().unwrap_or("object");
    let why = |e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 401 => format!(
            "the cluster refused the applier's credential ({}); for a Push cluster, `atoll join --sync-mode Push` again renews it",
            s.message
        ),
        kube::Error::Api(s) => s.message,
        other => other.to_string(),
    };
    let as_value = |o: DynamicObject| serde_json::to_value(o).map_err(|e| e.to_string());
    let type_ = strategy.map_or("Update", |s| s.type_.as_str());
    match type_ {
        "ReadOnly" => match api.get_opt(name).await.map_err(why)? {
            Some(o) => Ok(Some(as_value(o)?)),
            None => Ok(None),
        },
        "CreateOnly" => {
            if let Some(o) = api.get_opt(name).await.map_err(why)? {
                return Ok(Some(as_value(o)?));
            }
            let dynamic: DynamicObject = serde_json::from_value(obj.clone())
                .map_err(|e| format!("the {kind} manifest: {e}"))?;
            match api.create(&PostParams::default(), &dynamic).await {
                Ok(o) => Ok(Some(as_value(o)?)),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(api
                    .get_opt(name)
                    .await
                    .map_err(why)?
                    .map(as_value)
                    .transpose()?),
                Err(e) => Err(why(e)),
            }
        }
        "Update" | "ServerSideApply" | "" => {
            let ssa = strategy.and_then(|s| s.server_side_apply.as_ref());
            // `Update` keeps every field the manifest sets as it says (taking them from other
            // managers); `ServerSideApply` takes them only with `force`.
            let force = type_ != "ServerSideApply" || ssa.is_some_and(|s| s.force);
            let manager = ssa
                .and_then(|s| s.field_manager.clone())
                .unwrap_or_else(|| APPLIER_MANAGER.to_string());
            let mut pp = PatchParams::apply(&manager);
            if force {
                pp = pp.force();
            }
            let o = api
                .patch(name, &pp, &Patch::Apply(obj))
                .await
                .map_err(|e| match e {
                    kube::Error::Api(s) if s.code == 409 => format!(
                        "conflict: {} (other field managers own these fields; set updateStrategy.serverSideApply.force to take them)",
                        s.message
                    ),
                    other => why(other),
                })?;
            Ok(Some(as_value(o)?))
        }
        other => Err(format!(
            "unknown update strategy {other:?} (Update, CreateOnly, ServerSideApply or ReadOnly)"
        )),
    }
}

/// Delete what a work applied, if it is still the object it applied (same uid); `Ok(true)`
/// once it is gone.
pub async fn delete(api: &Api<DynamicObject>, r: &AppliedResource) -> Result<bool, String> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: Some(r.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&r.name, &dp).await {
        Ok(_) => {}
        // Gone, or replaced by another object of the name (not this work's any more).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(true),
        Err(kube::Error::Api(s)) => return Err(s.message),
        Err(e) => return Err(e.to_string()),
    }
    match api.get_opt(&r.name).await {
        Ok(Some(o)) => Ok(o.metadata.uid.as_deref() != Some(r.uid.as_str())),
        Ok(None) => Ok(true),
        Err(e) => Err(e.to_string()),
    }
}

/// The `resourceMeta` of a manifest.
pub fn meta(
    ordinal: usize,
    id: Option<&Identity>,
    served: Option<&Served>,
    namespace: Option<&str>,
) -> ManifestResourceMeta {
    ManifestResourceMeta {
        ordinal: ordinal as i32,
        group: id.map(|i| i.group.clone()).unwrap_or_default(),
        version: id.map(|i| i.version.clone()).unwrap_or_default(),
        kind: id.map(|i| i.kind.clone()).unwrap_or_default(),
        resource: served
            .map(|s| s.resource.plural.clone())
            .unwrap_or_default(),
        name: id.map(|i| i.name.clone()).unwrap_or_default(),
        namespace: namespace.unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manifests_say_what_they_are_or_why_not() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "demo"}});
        assert_eq!(
            identify(&d).unwrap(),
            Identity {
                group: "apps".into(),
                version: "v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                namespace: "demo".into()
            }
        );
        let core =
            identify(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}))
                .unwrap();
        assert_eq!((core.group.as_str(), core.version.as_str()), ("", "v1"));
        assert!(
            identify(&json!({"apiVersion": "v1", "metadata": {"name": "c"}}))
                .unwrap_err()
                .contains("no kind")
        );
        assert!(
            identify(&json!({"apiVersion": "v1", "kind": "ConfigMap"}))
                .unwrap_err()
                .contains("metadata.name")
        );
    }

    #[test]
    fn what_is_sent_carries_the_label_and_namespace_and_no_server_fields() {
        let m = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "resourceVersion": "9", "uid": "x"}, "data": {"a": "b"}});
        let p = prepared(&m, Some("demo"), "hub1");
        assert_eq!(p["metadata"]["labels"][APPLIED_BY_LABEL], "hub1");
        assert_eq!(p["metadata"]["namespace"], "demo");
        assert!(
            p["metadata"].get("resourceVersion").is_none() && p["metadata"].get("uid").is_none()
        );
        assert_eq!(p["data"]["a"], "b");
    }
}
