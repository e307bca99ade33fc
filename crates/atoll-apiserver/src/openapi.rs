//! OpenAPI documents: v3 (an index plus one document per group/version) and v2 (one document).
//!
//! They give kubectl what it needs: the `fieldValidation` parameter on every PATCH and POST, so
//! `kubectl apply` validates on the server; and, for CRD kinds, their schema, so `kubectl
//! explain` works. Built-in kinds are described as open objects (their schemas are not served).

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::{ResourceType, Snapshot};
use crate::rest::json_response;

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

pub fn serve(snap: &Snapshot, path: &str, accept: &str) -> ApiResult<Option<Response>> {
    let json_ok = accept.is_empty() || accept.contains("json") || accept.contains("*/*");
    if path == "/openapi/v2"
        && accept.contains("com.github.proto-openapi.spec.v2")
        && !accept.starts_with("application/json")
    {
        return Ok(Some(
            (
                StatusCode::OK,
                [(http::header::CONTENT_TYPE, "application/octet-stream")],
                v2_protobuf(snap),
            )
                .into_response(),
        ));
    }
    if (path == "/openapi/v2" || path.starts_with("/openapi/v3")) && !json_ok {
        // The protobuf (gnostic) encodings are not served; clients fall back or say so.
        return Err(ApiError::NotAcceptable {
            message: format!("only application/json is served for {path}, not {accept:?}"),
        });
    }
    if path == "/openapi/v2" {
        return Ok(Some(json_response(StatusCode::OK, &v2(snap))));
    }
    if path == "/openapi/v3" {
        let mut paths = Map::new();
        for (g, vs) in &snap.groups {
            for v in vs {
                let key = gv_path(g, v);
                paths.insert(key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash(snap, g, v))}));
            }
        }
        return Ok(Some(json_response(
            StatusCode::OK,
            &json!({"paths": paths}),
        )));
    }
    if let Some(rest) = path.strip_prefix("/openapi/v3/") {
        let (g, v) = match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["api", v] => (String::new(), v.to_string()),
            ["apis", g, v] => (g.to_string(), v.to_string()),
            _ => return Err(ApiError::no_such_resource()),
        };
        let resources = snap.group_version(&g, &v);
        if resources.is_empty() {
            return Err(ApiError::no_such_resource());
        }
        return Ok(Some(json_response(StatusCode::OK, &v3(&resources))));
    }
    Ok(None)
}

fn gv_path(g: &str, v: &str) -> String {
    if g.is_empty() {
        format!("api/{v}")
    } else {
        format!("apis/{g}/{v}")
    }
}

/// A hash that changes when the group/version's resources change, so clients refetch.
fn hash(snap: &Snapshot, g: &str, v: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in snap.group_version(g, v) {
        r.resource.hash(&mut h);
        // A CRD's schema changes with the CRD; a built-in kind's only with the server.
        match &r.schema {
            Some(s) => s.to_string().hash(&mut h),
            None => atoll_api::ATOLL_VERSION.hash(&mut h),
        }
    }
    format!("{:016X}", h.finish())
}

/// `com.example.v1.Widget` for group `example.com`, as Kubernetes names definitions.
fn definition_name(r: &ResourceType) -> String {
    let group = if r.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else if r.group.contains('.') {
        r.group.split('.').rev().collect::<Vec<_>>().join(".")
    } else {
        format!("io.k8s.api.{}", r.group)
    };
    format!("{group}.{}.{}", r.version, r.kind)
}

fn gvk(r: &ResourceType) -> Value {
    json!([{"group": r.group, "version": r.version, "kind": r.kind}])
}

fn parameters(kind: &str, write: bool) -> Vec<Value> {
    let q = |name: &str, desc: &str| json!({"name": name, "in": "query", "description": desc, "schema": {"type": "string", "uniqueItems": true}});
    let mut ps = vec![q("pretty", "If 'true', the output is pretty printed.")];
    if write {
        ps.push(q(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
        ));
        ps.push(q("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."));
        ps.push(q("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict."));
    }
    if kind == "patch" {
        ps.push(q("force", "Force is going to \"force\" Apply requests."));
    }
    ps
}

fn operation(r: &ResourceType, action: &str, write: bool, schema_ref: &str) -> Value {
    json!({
        "operationId": format!("{action}{}", r.kind),
        "parameters": parameters(action, write),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": schema_ref}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    })
}

fn resource_paths(r: &ResourceType) -> (String, String) {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.resource)
    } else {
        format!("{base}/{}", r.resource)
    };
    let item = format!("{collection}/{{name}}");
    (collection, item)
}

/// The schema of a kind: its CRD schema with `metadata` pointing at ObjectMeta, or an open
/// object for built-ins.
fn kind_schema(r: &ResourceType, meta_ref: &str) -> Value {
    let mut s = match r.schema.clone().or_else(|| r.strategy.openapi_schema()) {
        Some(s) if s.is_object() => s,
        _ => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    };
    if !s.is_object() {
        s = json!({"type": "object"});
    }
    let props = s.as_object_mut().and_then(|m| {
        m.entry("properties").or_insert_with(|| json!({}));
        m.get_mut("properties").and_then(Value::as_object_mut)
    });
    if let Some(props) = props {
        props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        props.insert(
            "metadata".into(),
            json!({"description": "Standard object's metadata.", "allOf": [{"$ref": meta_ref}]}),
        );
    }
    s["x-kubernetes-group-version-kind"] = gvk(r);
    s
}

fn object_meta_schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have.",
        "properties": {
            "name": s("Name must be unique within a namespace."),
            "namespace": s("Namespace defines the space within which each name must be unique."),
            "generateName": s("An optional prefix used to generate a unique name."),
            "uid": s("UID is the unique in time and space value for this object."),
            "resourceVersion": s("An opaque value that represents the internal version of this object."),
            "creationTimestamp": {"type": "string", "format": "date-time", "description": "When the object was created."},
            "deletionTimestamp": {"type": "string", "format": "date-time", "description": "When the object will be deleted."},
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values that can be used to organize and categorize objects."},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Unstructured key value map stored with a resource."},
            "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted from the registry."},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Objects depended on by this object."},
            "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Field ownership of the object."}
        }
    })
}

fn v3(resources: &[&std::sync::Arc<ResourceType>]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(OBJECT_META.into(), object_meta_schema());
    let meta_ref = format!("#/components/schemas/{OBJECT_META}");
    for r in resources {
        let def = definition_name(r);
        let sref = format!("#/components/schemas/{def}");
        schemas.insert(def, kind_schema(r, &meta_ref));
        let (collection, item) = resource_paths(r);
        paths.insert(collection, json!({"get": operation(r, "list", false, &sref), "post": operation(r, "post", true, &sref)}));
        paths.insert(item, json!({
            "get": operation(r, "get", false, &sref), "put": operation(r, "put", true, &sref),
            "patch": operation(r, "patch", true, &sref), "delete": operation(r, "delete", false, &sref),
        }));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", crate::discovery::KUBE_MAJOR, crate::discovery::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Swagger 2.0 for older clients: same operations, definitions instead of components.
fn v2(snap: &Snapshot) -> Value {
    let mut paths = Map::new();
    let mut defs = Map::new();
    defs.insert(OBJECT_META.into(), object_meta_schema());
    let meta_ref = format!("#/definitions/{OBJECT_META}");
    let v2_params = |action: &str, write: bool| -> Vec<Value> {
        parameters(action, write)
            .into_iter()
            .map(|mut p| {
                p["type"] = json!("string");
                if let Some(m) = p.as_object_mut() {
                    m.remove("schema");
                }
                p
            })
            .collect()
    };
    for r in snap.resources.values() {
        let def = definition_name(r);
        let sref = format!("#/definitions/{def}");
        defs.insert(def, strip_v3_only(kind_schema(r, &meta_ref)));
        let op = |action: &str, write: bool| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "parameters": v2_params(action, write),
                "responses": {"200": {"description": "OK", "schema": {"$ref": sref}}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
            })
        };
        let (collection, item) = resource_paths(r);
        paths.insert(
            collection,
            json!({"get": op("list", false), "post": op("post", true)}),
        );
        paths.insert(item, json!({"get": op("get", false), "put": op("put", true), "patch": op("patch", true), "delete": op("delete", false)}));
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", crate::discovery::KUBE_MAJOR, crate::discovery::KUBE_MINOR)},
        "paths": paths,
        "definitions": defs,
    })
}

/// Swagger 2.0 has no `nullable` and no `allOf` wrappers around a `$ref`.
fn strip_v3_only(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        if let Some(m) = v.as_object_mut() {
            m.remove("nullable");
            if let Some(Value::Array(all)) = m.get("allOf")
                && all.len() == 1
                && let Some(r) = all[0].get("$ref").cloned()
            {
                m.remove("allOf");
                m.insert("$ref".into(), r);
            }
            for (_, x) in m.iter_mut() {
                walk(x);
            }
        } else if let Some(a) = v.as_array_mut() {
            for x in a {
                walk(x);
            }
        }
    }
    walk(&mut v);
    v
}

/// Protobuf wire encoding, enough to write gnostic's `openapi.v2.Document`.
mod pb {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field (string, bytes or embedded message).
    pub fn bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
        varint(out, (u64::from(field) << 3) | 2);
        varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }

    pub fn message(out: &mut Vec<u8>, field: u32, build: impl FnOnce(&mut Vec<u8>)) {
        let mut inner = Vec::new();
        build(&mut inner);
        bytes(out, field, &inner);
    }
}

/// OpenAPI v2 as gnostic protobuf, which kubectl before 1.28 requires for `apply`: every
/// resource's PATCH operation with its group/version/kind and the `fieldValidation` parameter,
/// so kubectl validates on the server. Definitions are left out: kubectl then uses its
/// compiled-in types for strategic merge patches and skips client-side schema checks.
pub fn v2_protobuf(snap: &Snapshot) -> Vec<u8> {
    let mut doc = Vec::new();
    pb::bytes(&mut doc, 1, b"2.0");
    pb::message(&mut doc, 2, |info| {
        pb::bytes(info, 1, b"Kubernetes");
        let version = format!(
            "v{}.{}.0",
            crate::discovery::KUBE_MAJOR,
            crate::discovery::KUBE_MINOR
        );
        pb::bytes(info, 2, version.as_bytes());
    });
    pb::message(&mut doc, 8, |paths| {
        for r in snap.resources.values() {
            let (_, item) = resource_paths(r);
            pb::message(paths, 2, |named| {
                pb::bytes(named, 1, item.as_bytes());
                pb::message(named, 2, |path_item| {
                    pb::message(path_item, 8, |op| {
                        pb::bytes(op, 5, format!("patch{}", r.kind).as_bytes());
                        for name in ["dryRun", "fieldManager", "fieldValidation", "force"] {
                            pb::message(op, 8, |item| {
                                pb::message(item, 1, |param| {
                                    pb::message(param, 2, |non_body| {
                                        pb::message(non_body, 3, |q| {
                                            pb::bytes(q, 2, b"query");
                                            pb::bytes(q, 4, name.as_bytes());
                                            pb::bytes(q, 6, b"string");
                                        });
                                    });
                                });
                            });
                        }
                        pb::message(op, 13, |ext| {
                            pb::bytes(ext, 1, b"x-kubernetes-group-version-kind");
                            pb::message(ext, 2, |any| {
                                let yaml = format!(
                                    "group: \"{}\"\nkind: {}\nversion: {}\n",
                                    r.group, r.kind, r.version
                                );
                                pb::bytes(any, 2, yaml.as_bytes());
                            });
                        });
                    });
                });
            });
        }
    });
    doc
}
