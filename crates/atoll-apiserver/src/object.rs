//! Object plumbing shared by every handler: decoding request bodies, the stored form, metadata.

use bytes::Bytes;
use serde_json::{Map, Value};

use atoll_store::Entry;

use crate::error::{ApiError, ApiResult};
use crate::registry::ResourceType;

/// The current time as Kubernetes writes timestamps (RFC 3339, whole seconds, UTC).
pub fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// Decode a request body as JSON or YAML (kubectl sends JSON; people send YAML to curl).
pub fn decode_body(body: &[u8], content_type: &str) -> ApiResult<Value> {
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    let value: Value = match mime {
        "application/yaml" | "application/x-yaml" | "text/yaml" | "application/apply-patch+yaml" => {
            serde_saphyr::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        }
        _ => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})"))
        })?,
    };
    Ok(value)
}

/// The request body must be an object of this resource's kind and group/version.
pub fn check_type_meta(obj: &Value, rt: &ResourceType) -> ApiResult<()> {
    let Some(map) = obj.as_object() else {
        return Err(ApiError::bad_request(format!(
            "the body of the request must be a JSON object, got {}",
            kind_of_json(obj)
        )));
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind.is_empty() && api_version.is_empty() {
        return Ok(());
    }
    if api_version != rt.api_version() || kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({}), or the kind in the data ({kind}) does not match the expected kind ({})",
            rt.api_version(),
            rt.kind
        )));
    }
    Ok(())
}

fn kind_of_json(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `metadata` of an object, created empty if missing or not an object.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The stored form: the object without `resourceVersion`, which the store's revision supplies.
pub fn encode_for_store(obj: &mut Value) -> Bytes {
    let rv = meta_mut(obj).remove("resourceVersion");
    let bytes = Bytes::from(serde_json::to_vec(obj).unwrap_or_default());
    if let Some(rv) = rv {
        meta_mut(obj).insert("resourceVersion".into(), rv);
    }
    bytes
}

/// Decode a stored entry, as the requested version of the resource.
pub fn decode_stored(rt: &ResourceType, entry: &Entry) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&entry.value)
        .map_err(|e| ApiError::Internal(format!("stored object is not JSON: {e}")))?;
    meta_mut(&mut obj).insert(
        "resourceVersion".into(),
        Value::String(entry.mod_revision.to_string()),
    );
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(rt.api_version()));
    }
    Ok(obj)
}

/// Parse a client-supplied resourceVersion.
pub fn parse_rv(rv: &str) -> ApiResult<u64> {
    rv.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid resourceVersion {rv:?}: must be an integer"
        ))
    })
}

/// Whether `a` and `b` differ in anything but metadata and status (what bumps `generation`).
pub fn spec_changed(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        for f in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(f);
        }
        m
    };
    strip(a) != strip(b)
}

/// Random suffix for `generateName`, from the alphabet Kubernetes uses (no vowels, no lookalikes).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

pub fn labels_of(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn finalizers_of(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The stored JSON with `"resourceVersion":"N"` put into its top-level `metadata`, without
/// decoding it. `None` if the JSON has no top-level `metadata` object (then decode instead).
///
/// The stored form is serde_json's compact output of an object, so a byte scanner that skips
/// strings and tracks nesting finds the top-level key exactly.
pub fn with_resource_version(json: &[u8], rv: u64) -> Option<Vec<u8>> {
    let n = json.len();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < n {
        match json[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < n {
                    match json[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                if i >= n {
                    return None;
                }
                if depth == 1
                    && &json[start..i] == b"metadata"
                    && json.get(i + 1) == Some(&b':')
                    && json.get(i + 2) == Some(&b'{')
                {
                    let at = i + 3;
                    let rv = rv.to_string();
                    let mut out = Vec::with_capacity(n + rv.len() + 24);
                    out.extend_from_slice(&json[..at]);
                    out.extend_from_slice(b"\"resourceVersion\":\"");
                    out.extend_from_slice(rv.as_bytes());
                    out.push(b'"');
                    if json.get(at) != Some(&b'}') {
                        out.push(b',');
                    }
                    out.extend_from_slice(&json[at..]);
                    return Some(out);
                }
                i += 1;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// The stored object as response bytes for the requested version, spliced when the stored
/// form can be sent as is (same version), decoded and re-encoded otherwise.
pub fn stored_bytes(rt: &ResourceType, entry: &Entry) -> ApiResult<Vec<u8>> {
    if rt.version == rt.storage_version
        && let Some(out) = with_resource_version(&entry.value, entry.mod_revision)
    {
        return Ok(out);
    }
    let obj = decode_stored(rt, entry)?;
    serde_json::to_vec(&obj).map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_version_is_spliced_into_top_level_metadata() {
        let cases = [
            json!({"apiVersion": "v1", "data": {"metadata": {"x": "}{\"metadata\":{"}}, "kind": "ConfigMap", "metadata": {"name": "a"}}),
            json!({"metadata": {}}),
            json!({"a": [{"metadata": {"deep": 1}}], "metadata": {"labels": {"metadata": "x"}}}),
        ];
        for c in cases {
            let bytes = serde_json::to_vec(&c).unwrap();
            let out: Value =
                serde_json::from_slice(&with_resource_version(&bytes, 42).unwrap()).unwrap();
            let mut want = c.clone();
            want["metadata"]["resourceVersion"] = json!("42");
            assert_eq!(out, want);
        }
        assert!(with_resource_version(b"{\"a\":1}", 1).is_none());
        assert!(with_resource_version(b"{\"metadata\":\"x", 1).is_none());
    }
}
