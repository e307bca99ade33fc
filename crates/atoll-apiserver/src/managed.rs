//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Every write records which manager set which fields, in the `FieldsV1` format clients know
//! (`f:spec`, `k:{"name":"web"}`, `v:"x"`, `.`). Apply merges a manager's configuration into the
//! object, removes fields the manager applied before and no longer applies (unless another
//! manager owns them), and refuses to change a field another manager owns to a different value
//! unless `force=true` — the `409 Conflict` with `FieldManagerConflict` causes kubectl prints.
//!
//! # Caveats
//! - Lists of built-in kinds are keyed by their field name's merge key (`containers` by `name`,
//!   container `ports` by `containerPort`, ...), not by full per-type patch metadata. Lists of
//!   CRDs follow their schema: `x-kubernetes-list-type: map` (by `x-kubernetes-list-map-keys`),
//!   `set`, or atomic.

use std::collections::BTreeSet;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult, Cause, Subject};
use crate::object::{self, meta_mut, meta_str};
use crate::rest::{Ctx, json_response};

/// One owned path: encoded elements such as `f:spec`, `k:{"name":"a"}`, `v:"x"`.
type FieldPath = Vec<String>;
type FieldSet = BTreeSet<FieldPath>;

/// How lists at a place in an object merge: built-in kinds by their merge keys, CRDs by their
/// schema's `x-kubernetes-list-type` (`map` with `x-kubernetes-list-map-keys`, `set`, or
/// atomic).
#[derive(Clone, Copy)]
pub(crate) enum Shape<'a> {
    BuiltIn,
    Schema(Option<&'a Value>),
}

enum ListKind {
    Keys(Vec<String>),
    Set,
    Atomic,
}

impl<'a> Shape<'a> {
    fn field(self, name: &str) -> Shape<'a> {
        match self {
            Shape::BuiltIn => Shape::BuiltIn,
            Shape::Schema(s) => Shape::Schema(s.and_then(|s| {
                s.get("properties")
                    .and_then(|p| p.get(name))
                    .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
            })),
        }
    }

    fn items(self) -> Shape<'a> {
        match self {
            Shape::BuiltIn => Shape::BuiltIn,
            Shape::Schema(s) => Shape::Schema(s.and_then(|s| s.get("items"))),
        }
    }

    fn list(self, field: &str, items: &[Value]) -> ListKind {
        match self {
            Shape::BuiltIn if field == "finalizers" => ListKind::Set,
            Shape::BuiltIn => match crate::patch::list_merge_key(field, items) {
                // Ports are keyed by number and protocol (Kubernetes' listMapKeys), so a TCP
                // and a UDP port of one number are two entries.
                Some(k @ ("port" | "containerPort")) => {
                    ListKind::Keys(vec![k.to_string(), "protocol".to_string()])
                }
                Some(k) => ListKind::Keys(vec![k.to_string()]),
                None => ListKind::Atomic,
            },
            Shape::Schema(s) => match s
                .and_then(|s| s.get("x-kubernetes-list-type"))
                .and_then(Value::as_str)
            {
                Some("set") => ListKind::Set,
                Some("map") => {
                    let keys: Vec<String> = s
                        .and_then(|s| s.get("x-kubernetes-list-map-keys"))
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|k| k.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    if !keys.is_empty()
                        && items
                            .iter()
                            .all(|i| keys.iter().all(|k| i.get(k).is_some()))
                    {
                        ListKind::Keys(keys)
                    } else {
                        ListKind::Atomic
                    }
                }
                _ => ListKind::Atomic,
            },
        }
    }
}

/// The shape of a resource's objects.
pub(crate) fn shape_of(rt: &crate::registry::ResourceType) -> Shape<'_> {
    match (&rt.crd, &rt.schema) {
        (Some(_), schema) => Shape::Schema(schema.as_ref()),
        (None, _) => Shape::BuiltIn,
    }
}

fn item_key(item: &Value, keys: &[String]) -> String {
    let m: Map<String, Value> = keys
        .iter()
        .map(|k| {
            let v = item.get(k).cloned().unwrap_or_else(|| {
                // A port's protocol defaults to TCP, in the key too (as Kubernetes').
                if k == "protocol" {
                    json!("TCP")
                } else {
                    Value::Null
                }
            });
            (k.clone(), v)
        })
        .collect();
    format!("k:{}", Value::Object(m))
}

/// The leaf paths of an object's fields (what a manager owns by setting them).
fn field_set(obj: &Value, shape: Shape) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(map) = obj.as_object() {
        for (k, v) in map {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                        if let Some(x) = v.get(f) {
                            collect(
                                x,
                                vec!["f:metadata".into(), format!("f:{f}")],
                                f,
                                Shape::BuiltIn,
                                &mut out,
                            );
                        }
                    }
                }
                _ => collect(v, vec![format!("f:{k}")], k, shape.field(k), &mut out),
            }
        }
    }
    out
}

fn collect(v: &Value, path: FieldPath, field: &str, shape: Shape, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                collect(x, p, k, shape.field(k), out);
            }
        }
        Value::Array(items) if !items.is_empty() => match shape.list(field, items) {
            // A set's members are owned one by one; the list itself is not a leaf.
            ListKind::Set => {
                for i in items {
                    let mut p = path.clone();
                    p.push(format!("v:{i}"));
                    out.insert(p);
                }
            }
            ListKind::Keys(keys) => {
                for item in items {
                    let mut p = path.clone();
                    p.push(item_key(item, &keys));
                    out.insert(p.clone());
                    if let Some(m) = item.as_object() {
                        for (k, x) in m {
                            let mut q = p.clone();
                            q.push(format!("f:{k}"));
                            collect(x, q, k, shape.items().field(k), out);
                        }
                    }
                }
            }
            ListKind::Atomic => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

/// The value at a path, if the object has it.
fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array()?
                .iter()
                .find(|i| want.iter().all(|(wk, wv)| i.get(wk) == Some(wv)))?;
        } else if let Some(v) = el.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|i| **i == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Remove the field at a path (a map key or a list item).
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parent_path {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = el.strip_prefix("k:") {
            let Ok(want) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|i| want.iter().all(|(wk, wv)| i.get(wk) == Some(wv)))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(want), Some(a)) = (
            serde_json::from_str::<Map<String, Value>>(k),
            cur.as_array_mut(),
        ) {
            a.retain(|i| !want.iter().all(|(wk, wv)| i.get(wk) == Some(wv)));
        }
    } else if let Some(v) = last.strip_prefix("v:")
        && let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut())
    {
        a.retain(|i| *i != want);
    }
}

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        insert_path(&mut root, path);
    }
    // A member that also has children is marked with "."; a leaf member is an empty map.
    mark_members(&mut root, set, &mut Vec::new());
    Value::Object(root)
}

fn insert_path(node: &mut Map<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let child = node.entry(first.clone()).or_insert_with(|| json!({}));
    if let Some(m) = child.as_object_mut() {
        insert_path(m, rest);
    }
}

fn mark_members(node: &mut Map<String, Value>, set: &FieldSet, path: &mut FieldPath) {
    for (k, v) in node.iter_mut() {
        if k == "." {
            continue;
        }
        path.push(k.clone());
        if let Some(m) = v.as_object_mut() {
            if !m.is_empty() && set.contains(path) {
                m.insert(".".into(), json!({}));
            }
            mark_members(m, set, path);
        }
        path.pop();
    }
}

fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn walk(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, x) in m {
            if k == "." {
                continue;
            }
            path.push(k.clone());
            walk(x, path, out);
            path.pop();
        }
    }
    walk(v, &mut Vec::new(), &mut out);
    out
}

struct ManagerEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
}

fn entries(obj: &Value) -> Vec<ManagerEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |f: &str| {
                        e.get(f)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    ManagerEntry {
                        manager: s("manager"),
                        operation: s("operation"),
                        api_version: s("apiVersion"),
                        time: s("time"),
                        subresource: s("subresource"),
                        fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_entries(obj: &mut Value, list: Vec<ManagerEntry>) {
    let arr: Vec<Value> = list
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    let meta = meta_mut(obj);
    if arr.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(arr));
    }
}

/// Record an Update-operation write by `manager`: the fields it changed become its own and
/// are no longer anyone else's; fields it removed belong to no one.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    shape: Shape,
) {
    let empty = json!({});
    let old_obj = old.unwrap_or(&empty);
    let mut list = entries(old_obj);
    let new_fields = field_set(new, shape);
    let changed: FieldSet = new_fields
        .iter()
        .filter(|p| value_at(old_obj, p) != value_at(new, p))
        .cloned()
        .collect();
    let old_fields = field_set(old_obj, shape);
    let removed: FieldSet = old_fields.difference(&new_fields).cloned().collect();
    for e in &mut list {
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        match list.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = object::now();
                e.api_version = api_version.to_string();
            }
            None => list.push(ManagerEntry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: object::now(),
                subresource: subresource.to_string(),
                fields: changed,
            }),
        }
    }
    write_entries(new, list);
}

/// PATCH with `application/apply-patch+yaml`.
pub async fn server_side_apply(ctx: &Ctx, body: &[u8]) -> ApiResult<Response> {
    let config = object::decode_body(body, "application/apply-patch+yaml")?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "an apply configuration must be an object",
        ));
    }
    object::check_type_meta(&config, &ctx.rt)?;
    let manager = match ctx.query.get("fieldManager") {
        Some(m) => m.to_string(),
        None => {
            return Err(ApiError::bad_request(
                "PATCH with application/apply-patch+yaml requires the fieldManager query parameter",
            ));
        }
    };
    let force = ctx.query.flag("force");
    let name = ctx.rr.name.clone().unwrap_or_default();
    if let Some(n) = meta_str(&config, "name")
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    let shape = shape_of(&ctx.rt);
    let applied = field_set(&config, shape);
    let api_version = ctx.rt.api_version();
    let subresource = ctx.rr.subresource.clone().unwrap_or_default();

    if ctx.server.store.get(&ctx.key(&name)).is_none() {
        let mut obj = config.clone();
        meta_mut(&mut obj).insert("name".into(), json!(name));
        write_entries(
            &mut obj,
            vec![ManagerEntry {
                manager: manager.clone(),
                operation: "Apply".into(),
                api_version: api_version.clone(),
                time: object::now(),
                subresource: subresource.clone(),
                fields: applied.clone(),
            }],
        );
        match ctx.create_object(&mut obj).await {
            Ok(created) => return Ok(created.response(StatusCode::CREATED)),
            // Created by someone else since we looked: apply onto it, as kube-apiserver's
            // apply (an update that may create) retries, rather than failing the apply. The
            // other write may be committed but not yet readable for a moment: wait for it.
            Err(ApiError::AlreadyExists { .. }) => {
                for _ in 0..200 {
                    if ctx.server.store.get(&ctx.key(&name)).is_some() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            Err(e) => return Err(e),
        }
    }
    let updated = ctx
        .guaranteed_update(&name, None, |current| {
            let mut list = entries(current);
            // Conflicts: fields another manager owns that this apply would change.
            let mut conflicts: Vec<(String, String, String)> = Vec::new();
            for e in &list {
                if e.manager == manager && e.operation == "Apply" {
                    continue;
                }
                for p in applied.intersection(&e.fields) {
                    let (a, b) = (value_at(current, p), value_at(&config, p));
                    let is_leaf = b.is_some_and(|v| {
                        !v.is_object() || v.as_object().is_some_and(Map::is_empty)
                    });
                    if is_leaf && a != b {
                        conflicts.push((e.manager.clone(), e.api_version.clone(), dotted(p)));
                    }
                }
            }
            if !conflicts.is_empty() && !force {
                return Err(conflict_error(
                    &ctx.rt.group,
                    &ctx.rt.resource,
                    &name,
                    &conflicts,
                ));
            }
            let previous: FieldSet = list
                .iter()
                .find(|e| e.manager == manager && e.operation == "Apply")
                .map(|e| e.fields.clone())
                .unwrap_or_default();
            let mut merged = current.clone();
            let mut patch_doc = config.clone();
            if let Some(m) = patch_doc.as_object_mut() {
                m.remove("status");
                if subresource == "status" {
                    m.retain(|k, _| k == "status" || k == "metadata");
                    if let Some(s) = config.get("status") {
                        m.insert("status".into(), s.clone());
                    }
                }
            }
            if let Some(s) = config.get("status")
                && subresource != "status"
                && !ctx.rt.status_subresource
            {
                patch_doc["status"] = s.clone();
            }
            merged = merge_apply(&merged, &patch_doc, shape)?;
            // Fields this manager applied before and no longer applies, owned by no one else.
            for p in previous.difference(&applied) {
                let owned_elsewhere = list.iter().any(|e| {
                    !(e.manager == manager && e.operation == "Apply") && e.fields.contains(p)
                });
                if !owned_elsewhere {
                    remove_at(&mut merged, p);
                }
            }
            for e in &mut list {
                if force && !(e.manager == manager && e.operation == "Apply") {
                    e.fields
                        .retain(|p| !conflicts.iter().any(|(_, _, d)| *d == dotted(p)));
                }
            }
            list.retain(|e| !(e.manager == manager && e.operation == "Apply"));
            list.push(ManagerEntry {
                manager: manager.clone(),
                operation: "Apply".into(),
                api_version: api_version.clone(),
                time: object::now(),
                subresource: subresource.clone(),
                fields: applied.clone(),
            });
            write_entries(&mut merged, list);
            meta_mut(&mut merged).insert(
                "resourceVersion".into(),
                current
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or_default(),
            );
            Ok(merged)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &updated))
}

fn merge_apply(current: &Value, config: &Value, shape: Shape) -> ApiResult<Value> {
    // Not a strategic merge patch: its lists are keyed by one field (ports by number alone),
    // apply's by all the keys Kubernetes' schema names.
    let mut out = current.clone();
    merge_with_shape(&mut out, config, "", shape);
    Ok(out)
}

/// Apply semantics: objects merge, list-maps merge item by key, sets take the union,
/// atomic lists and scalars are replaced.
fn merge_with_shape(doc: &mut Value, patch: &Value, field: &str, shape: Shape) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p {
                let child = if field.is_empty() && k == "metadata" {
                    Shape::BuiltIn
                } else {
                    shape.field(k)
                };
                match d.get_mut(k) {
                    Some(existing)
                        if (existing.is_object() && v.is_object())
                            || (existing.is_array() && v.is_array()) =>
                    {
                        merge_with_shape(existing, v, k, child)
                    }
                    _ => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(d), Value::Array(p)) => match shape.list(field, p) {
            ListKind::Set => {
                for x in p {
                    if !d.contains(x) {
                        d.push(x.clone());
                    }
                }
            }
            ListKind::Keys(keys) => {
                for item in p {
                    let key = item_key(item, &keys);
                    match d.iter_mut().find(|i| item_key(i, &keys) == key) {
                        Some(existing) => merge_with_shape(existing, item, field, shape.items()),
                        None => d.push(item.clone()),
                    }
                }
            }
            ListKind::Atomic => *d = p.clone(),
        },
        (d, p) => *d = p.clone(),
    }
}

/// `.spec.containers[name="web"].image`, as kube-apiserver prints conflicting fields.
fn dotted(p: &[String]) -> String {
    let mut s = String::new();
    for el in p {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let inner: Vec<String> = m.iter().map(|(a, b)| format!("{a}={b}")).collect();
            s.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

fn conflict_error(
    group: &str,
    resource: &str,
    name: &str,
    conflicts: &[(String, String, String)],
) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, v, f)| format!("conflict with \"{m}\" using {v}: {f}"))
        .collect();
    let message = if lines.len() == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!(
            "Apply failed with {} conflicts: {}",
            lines.len(),
            lines.join("\n")
        )
    };
    let causes = conflicts
        .iter()
        .map(|(m, v, f)| Cause {
            reason: "FieldManagerConflict",
            field: f.clone(),
            message: format!("conflict with \"{m}\" using {v}"),
        })
        .collect();
    ApiError::ApplyConflict {
        subject: Box::new(Subject {
            group: group.into(),
            kind: resource.into(),
            name: name.into(),
        }),
        message,
        causes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "n", "labels": {"a": "1"}, "finalizers": ["x/y"]},
            "spec": {"containers": [{"name": "web", "image": "i", "ports": [{"port": 80}]}], "replicas": 2, "empty": {}}});
        let set = field_set(&obj, Shape::BuiltIn);
        assert!(set.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
        assert!(set.contains(&vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"web\"}".into()
        ]));
        assert!(set.contains(&vec![
            "f:metadata".into(),
            "f:finalizers".into(),
            "v:\"x/y\"".into()
        ]));
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["."],
            json!({})
        );
        assert_eq!(from_fields_v1(&v1), set);
        assert_eq!(
            dotted(&[
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"web\"}".into(),
                "f:image".into()
            ]),
            ".spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn ports_are_keyed_by_number_and_protocol() {
        let tcp_udp = json!([
            {"name": "tcp", "port": 42, "protocol": "TCP"},
            {"name": "udp", "port": 42, "protocol": "UDP"},
        ]);
        let cases = [
            (
                "two protocols, one number",
                json!({}),
                json!({"ports": tcp_udp}),
                tcp_udp.clone(),
            ),
            (
                "an unset protocol is TCP",
                json!({"ports": tcp_udp}),
                json!({"ports": [{"name": "web", "port": 42}]}),
                json!([{"name": "web", "port": 42, "protocol": "TCP"}, {"name": "udp", "port": 42, "protocol": "UDP"}]),
            ),
            (
                "container ports",
                json!({}),
                json!({"ports": [{"containerPort": 53, "protocol": "UDP"}, {"containerPort": 53, "protocol": "TCP"}]}),
                json!([{"containerPort": 53, "protocol": "UDP"}, {"containerPort": 53, "protocol": "TCP"}]),
            ),
        ];
        for (case, current, config, want) in cases {
            let merged = merge_apply(&current, &config, Shape::BuiltIn).expect(case);
            assert_eq!(merged["ports"], want, "{case}");
        }
        let set = field_set(&json!({"spec": {"ports": [{"port": 80}]}}), Shape::BuiltIn);
        assert!(
            set.contains(&vec![
                "f:spec".into(),
                "f:ports".into(),
                "k:{\"port\":80,\"protocol\":\"TCP\"}".into()
            ]),
            "{set:?}"
        );
    }

    #[test]
    fn update_tracking_moves_ownership() {
        let mut a = json!({"metadata": {"name": "n"}, "data": {"x": "1", "y": "2"}});
        track_update(None, &mut a, "creator", "v1", "", Shape::BuiltIn);
        let mut b = a.clone();
        b["data"]["x"] = json!("changed");
        track_update(Some(&a), &mut b, "editor", "v1", "", Shape::BuiltIn);
        let list = entries(&b);
        let owner = |f: &str| {
            list.iter()
                .find(|e| {
                    e.fields
                        .contains(&vec!["f:data".to_string(), format!("f:{f}")])
                })
                .map(|e| e.manager.clone())
        };
        assert_eq!(owner("x").as_deref(), Some("editor"));
        assert_eq!(owner("y").as_deref(), Some("creator"));
    }
}
