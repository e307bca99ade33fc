//! The four patch types: JSON merge (RFC 7386), JSON patch (RFC 6902), strategic merge (for
//! built-in kinds) and server-side apply (with `managedFields` and conflicts, in `managed.rs`).

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_mime(mime: &str, custom: bool) -> ApiResult<PatchKind> {
        let kind = match mime {
            "application/merge-patch+json" => PatchKind::Merge,
            "application/json-patch+json" => PatchKind::Json,
            "application/strategic-merge-patch+json" => PatchKind::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
            other => {
                return Err(ApiError::UnsupportedMediaType {
                    message: format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                    ),
                });
            }
        };
        if kind == PatchKind::Strategic && custom {
            return Err(ApiError::UnsupportedMediaType {
                message: "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
            });
        }
        Ok(kind)
    }
}

/// Apply a JSON merge, JSON or strategic merge patch to a document.
pub fn apply(kind: PatchKind, doc: &Value, patch: &Value) -> ApiResult<Value> {
    let mut out = doc.clone();
    match kind {
        PatchKind::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut out, patch);
        }
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is not valid: {e}")))?;
            json_patch::patch(&mut out, &ops).map_err(|e| ApiError::UnprocessableEntity {
                message: format!(
                    "the server rejected our request due to an error in our request: {e}"
                ),
            })?;
        }
        PatchKind::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            strategic_merge(&mut out, patch, "")?;
        }
        PatchKind::Apply => unreachable!("server-side apply is not a document patch"),
    }
    Ok(out)
}

/// The merge key of a list field in built-in kinds (Kubernetes' `patchMergeKey` tags), by the
/// list's field name. Lists not named here are replaced whole, as `atomic` lists are.
pub fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "addresses" => "type",
        "ports" => "port",
        _ => return None,
    })
}

/// The merge key of a list given its items: container ports merge on `containerPort`, service
/// ports on `port`. A list whose items lack the key is atomic (replaced whole): `None`.
pub fn list_merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    merge_key(field)
        .map(|k| {
            if field == "ports" && items.iter().any(|p| p.get("containerPort").is_some()) {
                "containerPort"
            } else {
                k
            }
        })
        .filter(|k| {
            items
                .iter()
                .all(|p| p.get(*k).is_some() || p.get("$patch").is_some())
        })
}

/// Lists of scalars merged as sets by strategic merge (`patchStrategy: merge` on primitives).
fn is_scalar_set(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn strategic_merge(doc: &mut Value, patch: &Value, field: &str) -> ApiResult<()> {
    let Some(pmap) = patch.as_object() else {
        *doc = patch.clone();
        return Ok(());
    };
    if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = pmap.clone();
        p.remove("$patch");
        *doc = Value::Object(p);
        return Ok(());
    }
    if pmap.get("$patch").and_then(Value::as_str) == Some("delete") {
        *doc = Value::Null;
        return Ok(());
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let dmap = match doc.as_object_mut() {
        Some(m) => m,
        None => return Ok(()),
    };
    let retain: Option<Vec<String>> = pmap.get("$retainKeys").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    });
    for (k, pv) in pmap {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(list_field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) =
                (dmap.get_mut(list_field), pv.as_array())
            {
                items.retain(|i| !remove.contains(i));
            }
            continue;
        }
        if pv.is_null() {
            dmap.remove(k);
            continue;
        }
        match (dmap.get_mut(k), pv) {
            (Some(dv @ Value::Object(_)), Value::Object(_)) => strategic_merge(dv, pv, k)?,
            (Some(Value::Array(items)), Value::Array(patch_items)) => {
                merge_list(items, patch_items, k)?;
            }
            (_, Value::Object(_)) => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge(&mut fresh, pv, k)?;
                dmap.insert(k.clone(), fresh);
            }
            (_, Value::Array(patch_items)) => {
                let mut items = Vec::new();
                merge_list(&mut items, patch_items, k)?;
                dmap.insert(k.clone(), Value::Array(items));
            }
            _ => {
                dmap.insert(k.clone(), pv.clone());
            }
        }
    }
    if let Some(keep) = retain {
        dmap.retain(|k, _| keep.contains(k));
    }
    let _ = field;
    Ok(())
}

fn merge_list(items: &mut Vec<Value>, patch_items: &[Value], field: &str) -> ApiResult<()> {
    if is_scalar_set(field) {
        for p in patch_items {
            if !items.contains(p) {
                items.push(p.clone());
            }
        }
        return Ok(());
    }
    let Some(key) = list_merge_key(field, patch_items) else {
        // Atomic list: replaced, but `$patch` directives are not part of the value.
        *items = patch_items
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(());
    };
    if patch_items
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *items = patch_items
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(());
    }
    for p in patch_items {
        let Some(kv) = p.get(key) else {
            return Err(ApiError::bad_request(format!(
                "the strategic merge patch has an element of {field} without its merge key {key:?}"
            )));
        };
        let pos = items.iter().position(|i| i.get(key) == Some(kv));
        if p.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(pos) = pos {
                items.remove(pos);
            }
            continue;
        }
        match pos {
            Some(pos) => strategic_merge(&mut items[pos], p, field)?,
            None => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge(&mut fresh, p, field)?;
                items.push(fresh);
            }
        }
    }
    Ok(())
}

pub use crate::managed::server_side_apply;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_keyed_lists() {
        let doc = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}], "tolerations": [{"key": "t"}]},
                         "metadata": {"finalizers": ["f/1"], "labels": {"a": "1", "b": "2"}}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}, {"name": "a", "$patch": "delete"}],
                                    "tolerations": [{"key": "u"}], "$setElementOrder/containers": [{"name": "b"}]},
                           "metadata": {"finalizers": ["f/2"], "labels": {"a": null, "c": "3"}}});
        let out = apply(PatchKind::Strategic, &doc, &patch).unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b", "image": "z"}, {"name": "c", "image": "w"}])
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "u"}]));
        assert_eq!(out["metadata"]["finalizers"], json!(["f/1", "f/2"]));
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    }

    #[test]
    fn container_ports_merge_on_container_port_and_keyless_lists_are_atomic() {
        let doc = json!({"ports": [{"containerPort": 80, "name": "http"}], "addresses": [{"ip": "1.1.1.1"}]});
        let patch = json!({"ports": [{"containerPort": 443}], "addresses": [{"ip": "2.2.2.2"}]});
        let out = apply(PatchKind::Strategic, &doc, &patch).unwrap();
        assert_eq!(
            out["ports"],
            json!([{"containerPort": 80, "name": "http"}, {"containerPort": 443}])
        );
        assert_eq!(out["addresses"], json!([{"ip": "2.2.2.2"}]));
    }

    #[test]
    fn json_and_merge_patches() {
        let doc = json!({"a": {"b": 1}, "l": [1, 2]});
        let out = apply(PatchKind::Merge, &doc, &json!({"a": {"b": null, "c": 2}})).unwrap();
        assert_eq!(out, json!({"a": {"c": 2}, "l": [1, 2]}));
        let out = apply(PatchKind::Json, &doc, &json!([{"op": "add", "path": "/l/-", "value": 3}, {"op": "test", "path": "/a/b", "value": 1}])).unwrap();
        assert_eq!(out["l"], json!([1, 2, 3]));
        let err = apply(
            PatchKind::Json,
            &doc,
            &json!([{"op": "test", "path": "/a/b", "value": 2}]),
        )
        .unwrap_err();
        assert_eq!(err.code().as_u16(), 422);
        assert_eq!(
            apply(PatchKind::Json, &doc, &json!({"op": "x"}))
                .unwrap_err()
                .code()
                .as_u16(),
            400
        );
        assert_eq!(
            apply(PatchKind::Merge, &doc, &json!([1]))
                .unwrap_err()
                .code()
                .as_u16(),
            400
        );
    }
}
