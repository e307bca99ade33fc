//! CustomResourceDefinitions: validation of the CRD itself, and the strategy that serves its
//! kinds — structural-schema pruning, defaulting and validation, and printer columns.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::Cause;
use crate::registry::{NormalizeError, ResourceType, ScalePaths, Strategy};
use crate::table::{CellSource, Column};
use crate::validation::{self, NameRule};

pub fn validate_crd(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec").cloned().unwrap_or_default();
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = spec
        .pointer("/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = spec
        .pointer("/names/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    } else if let Err(m) = validation::dns1123_subdomain(group) {
        causes.push(Cause::invalid("spec.group", group, &m));
    } else if !group.contains('.') {
        causes.push(Cause::invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural"));
    } else if let Err(m) = validation::dns1123_label(plural) {
        causes.push(Cause::invalid("spec.names.plural", plural, &m));
    }
    if kind.is_empty() {
        causes.push(Cause::required("spec.names.kind"));
    }
    for f in ["singular", "listKind"] {
        if let Some(v) = spec.pointer(&format!("/names/{f}")).and_then(Value::as_str)
            && f == "singular"
            && let Err(m) = validation::dns1123_label(v)
        {
            causes.push(Cause::invalid(format!("spec.names.{f}"), v, &m));
        }
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            &format!("must be spec.names.plural+\".\"+spec.group (\"{plural}.{group}\")"),
        ));
    }
    let scope = spec
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !["Namespaced", "Cluster"].contains(&scope) {
        causes.push(Cause::not_supported(
            "spec.scope",
            scope,
            &["Cluster", "Namespaced"],
        ));
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::required("spec.versions"));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            "",
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        let vname = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if let Err(m) = validation::dns1123_label(vname) {
            causes.push(Cause::invalid(
                format!("spec.versions[{i}].name"),
                vname,
                &m,
            ));
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None => causes.push(Cause::required(format!(
                "spec.versions[{i}].schema.openAPIV3Schema"
            ))),
            Some(schema) => {
                let field = format!("spec.versions[{i}].schema.openAPIV3Schema");
                check_structural(schema, &field, causes);
                check_metadata_schema(schema, &field, causes);
            }
        }
        for (j, col) in v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = col
                .get("jsonPath")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Err(m) = crate::jsonpath::check(path) {
                causes.push(Cause::invalid(
                    format!("spec.versions[{i}].additionalPrinterColumns[{j}].jsonPath"),
                    path,
                    &m,
                ));
            }
        }
    }
    if let Some(old) = old {
        for (f, p) in [
            ("spec.group", "/spec/group"),
            ("spec.names.plural", "/spec/names/plural"),
            ("spec.scope", "/spec/scope"),
        ] {
            if old.pointer(p) != obj.pointer(p) {
                causes.push(Cause::invalid(
                    f,
                    obj.pointer(p).and_then(Value::as_str).unwrap_or_default(),
                    "field is immutable",
                ));
            }
        }
    }
}

/// A schema may restrict `metadata.name` and `metadata.generateName`, and nothing else of
/// `metadata` (which the API machinery owns), as kube-apiserver requires.
fn check_metadata_schema(schema: &Value, field: &str, causes: &mut Vec<Cause>) {
    let Some(meta) = schema.pointer("/properties/metadata") else {
        return;
    };
    let field = format!("{field}.properties[metadata]");
    if let Some(Value::Object(props)) = meta.get("properties") {
        for k in props
            .keys()
            .filter(|k| !["name", "generateName"].contains(&k.as_str()))
        {
            causes.push(Cause::forbidden(
                format!("{field}.properties[{k}]"),
                "must not specify anything other than name and generateName",
            ));
        }
    }
    if let Value::Object(m) = meta {
        for k in m
            .keys()
            .filter(|k| !["type", "properties"].contains(&k.as_str()))
        {
            causes.push(Cause::forbidden(
                format!("{field}.{k}"),
                "must not specify anything other than name and generateName",
            ));
        }
    }
}

/// A structural schema gives every node a type (or preserves unknown fields / int-or-string).
fn check_structural(schema: &Value, field: &str, causes: &mut Vec<Cause>) {
    let typed = schema.get("type").and_then(Value::as_str).is_some()
        || schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !typed {
        causes.push(Cause::required(format!("{field}.type")));
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{field}.properties[{k}]"), causes);
        }
    }
    if let Some(items) = schema.get("items") {
        check_structural(items, &format!("{field}.items"), causes);
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str)
        && regex::Regex::new(p).is_err()
    {
        causes.push(Cause::invalid(
            format!("{field}.pattern"),
            p,
            "must be a valid regular expression",
        ));
    }
}

/// The served kinds of a CRD, one per served version.
pub fn kinds_of(crd: &Value) -> Vec<Arc<ResourceType>> {
    let spec = crd.get("spec").cloned().unwrap_or_default();
    let s = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let strings = |p: &str| -> Vec<String> {
        spec.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").and_then(Value::as_str))
        .unwrap_or_default()
        .to_string();
    let kind = s("/names/kind");
    let crd_name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .map(|v| {
            let schema = v
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .unwrap_or(Value::Null);
            let columns = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .map(|cols| cols.iter().map(printer_column).collect())
                .unwrap_or_else(|| {
                    vec![Column {
                        name: "Age".into(),
                        ty: "date".into(),
                        format: String::new(),
                        description: "The time since the object was created.".into(),
                        priority: 0,
                        source: CellSource::JsonPath(".metadata.creationTimestamp".into()),
                    }]
                });
            let scale = v.pointer("/subresources/scale").map(|sc| ScalePaths {
                spec_replicas: json_path_to_pointer(
                    sc.get("specReplicasPath")
                        .and_then(Value::as_str)
                        .unwrap_or(".spec.replicas"),
                ),
                status_replicas: json_path_to_pointer(
                    sc.get("statusReplicasPath")
                        .and_then(Value::as_str)
                        .unwrap_or(".status.replicas"),
                ),
                label_selector: sc
                    .get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(json_path_to_pointer),
            });
            Arc::new(ResourceType {
                group: s("/group"),
                version: v
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                storage_version: storage_version.clone(),
                resource: s("/names/plural"),
                singular: {
                    let singular = s("/names/singular");
                    if singular.is_empty() {
                        kind.to_lowercase()
                    } else {
                        singular
                    }
                },
                kind: kind.clone(),
                namespaced: s("/scope") == "Namespaced",
                short_names: strings("/names/shortNames"),
                categories: strings("/names/categories"),
                status_subresource: v.pointer("/subresources/status").is_some(),
                scale,
                name_rule: NameRule::Subdomain,
                strategy: Arc::new(CustomStrategy {
                    schema: schema.clone(),
                    columns,
                    selectable: v
                        .get("selectableFields")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                                .map(|p| p.trim_start_matches('.').to_string())
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                schema: Some(schema),
                crd: Some(crd_name.clone()),
                review: false,
            })
        })
        .collect()
}

/// `.spec.replicas` -> `/spec/replicas`.
fn json_path_to_pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |mut acc, part| {
            acc.push('/');
            acc.push_str(part);
            acc
        })
}

fn printer_column(col: &Value) -> Column {
    let g = |f: &str| {
        col.get(f)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Column {
        name: g("name"),
        ty: g("type"),
        format: g("format"),
        description: g("description"),
        priority: col.get("priority").and_then(Value::as_i64).unwrap_or(0),
        source: CellSource::JsonPath(g("jsonPath")),
    }
}

struct CustomStrategy {
    schema: Value,
    columns: Vec<Column>,
    selectable: Vec<String>,
}

impl Strategy for CustomStrategy {
    fn normalize(&self, obj: &Value) -> Result<Value, NormalizeError> {
        let mut obj = obj.clone();
        let mut causes = Vec::new();
        if let Value::Object(map) = &mut obj {
            // apiVersion, kind and metadata belong to the API machinery, not the schema.
            let keep: Vec<(String, Value)> = ["apiVersion", "kind", "metadata"]
                .iter()
                .filter_map(|k| map.remove(*k).map(|v| (k.to_string(), v)))
                .collect();
            let mut body = Value::Object(std::mem::take(map));
            apply_schema(&mut body, &self.schema, "", &mut causes, true);
            if let Value::Object(m) = body {
                *map = m;
            }
            // The schema's restrictions of metadata.name and generateName (the only ones a
            // CRD may make there) are checked; nothing of metadata is pruned or defaulted.
            let meta_schema = self.schema.pointer("/properties/metadata/properties");
            for (k, v) in keep {
                if k == "metadata"
                    && let Some(meta_schema) = meta_schema
                {
                    for field in ["name", "generateName"] {
                        if let (Some(s), Some(value)) = (meta_schema.get(field), v.get(field)) {
                            let mut value = value.clone();
                            let path = format!("metadata.{field}");
                            apply_schema(&mut value, s, &path, &mut causes, false);
                        }
                    }
                }
                map.insert(k, v);
            }
        }
        if causes.is_empty() {
            Ok(obj)
        } else {
            Err(NormalizeError::Invalid(causes))
        }
    }

    fn field(&self, obj: &Value, field: &str) -> Option<String> {
        if !self.selectable.iter().any(|f| f == field) {
            return None;
        }
        Some(match obj.pointer(&json_path_to_pointer(field)) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        })
    }

    fn fields(&self) -> Vec<String> {
        self.selectable.clone()
    }

    fn columns(&self) -> Vec<Column> {
        self.columns.clone()
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => {
            let s = other.to_string();
            if s.len() > 64 {
                format!("{}...", s.chars().take(60).collect::<String>())
            } else {
                s
            }
        }
    }
}

/// Default, prune and validate `v` against a structural schema node, in that order (as the
/// apiextensions server does), recording problems at `path`.
fn apply_schema(v: &mut Value, schema: &Value, path: &str, causes: &mut Vec<Cause>, root: bool) {
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let nullable = schema.get("nullable") == Some(&Value::Bool(true));
    let ty = schema.get("type").and_then(Value::as_str);
    let shown = if path.is_empty() {
        "body".to_string()
    } else {
        path.to_string()
    };

    if v.is_null() {
        if !nullable && ty.is_some() && !root {
            causes.push(Cause::invalid(
                path,
                "null",
                &format!(
                    "{shown} in body must be of type {}: \"null\"",
                    ty.unwrap_or("object")
                ),
            ));
        }
        return;
    }
    if int_or_string {
        if !matches!(type_name(v), "integer" | "string") {
            causes.push(Cause::invalid(
                path,
                &short(v),
                &format!("{shown} in body must be of type integer-or-string"),
            ));
        }
    } else if let Some(ty) = ty {
        let actual = type_name(v);
        let ok = actual == ty || (ty == "number" && actual == "integer");
        if !ok {
            causes.push(Cause::invalid(
                path,
                &short(v),
                &format!("{shown} in body must be of type {ty}: \"{actual}\""),
            ));
            return;
        }
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            // Defaults for missing properties.
            if let Some(props) = props {
                for (k, s) in props {
                    if !map.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                }
            }
            // Prune unknown fields.
            if !preserve && !matches!(additional, Some(Value::Object(_)) | Some(Value::Bool(true)))
            {
                let known = |k: &str| props.is_some_and(|p| p.contains_key(k));
                map.retain(|k, _| known(k));
            }
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let child_schema = props.and_then(|p| p.get(&k)).or(match additional {
                    Some(s @ Value::Object(_)) => Some(s),
                    _ => None,
                });
                if let (Some(s), Some(child)) = (child_schema, map.get_mut(&k)) {
                    apply_schema(child, s, &join(path, &k), causes, false);
                }
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = r.as_str()
                    && !map.contains_key(r)
                {
                    causes.push(Cause::required(join(path, r)));
                }
            }
            check_count(
                map.len(),
                schema,
                "minProperties",
                "maxProperties",
                path,
                "properties",
                causes,
            );
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    apply_schema(item, s, &format!("{path}[{i}]"), causes, false);
                }
            }
            check_count(
                items.len(),
                schema,
                "minItems",
                "maxItems",
                path,
                "items",
                causes,
            );
        }
        Value::String(s) => {
            let len = s.chars().count();
            check_count(
                len,
                schema,
                "minLength",
                "maxLength",
                path,
                "characters",
                causes,
            );
            if let Some(p) = schema.get("pattern").and_then(Value::as_str)
                && let Ok(re) = regex::Regex::new(p)
                && !re.is_match(s)
            {
                causes.push(Cause::invalid(
                    path,
                    s,
                    &format!("{shown} in body should match '{p}'"),
                ));
            }
            if let Some(f) = schema.get("format").and_then(Value::as_str)
                && !string_format_ok(f, s)
            {
                causes.push(Cause::invalid(
                    path,
                    &short(v),
                    &format!("{shown} in body must be of type {f}: \"{}\"", short(v)),
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let fits = match schema.get("format").and_then(Value::as_str) {
                Some("int32") => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                Some("int64") => n.as_i64().is_some(),
                _ => true,
            };
            if !fits {
                let f = schema
                    .get("format")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                causes.push(Cause::invalid(
                    path,
                    &n.to_string(),
                    &format!("{shown} in body must be of type {f}: \"{n}\""),
                ));
            }
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                let exclusive = schema.get("exclusiveMinimum") == Some(&Value::Bool(true));
                if x < min || (exclusive && x == min) {
                    causes.push(Cause::invalid(
                        path,
                        &n.to_string(),
                        &format!("{shown} in body should be greater than or equal to {min}"),
                    ));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                let exclusive = schema.get("exclusiveMaximum") == Some(&Value::Bool(true));
                if x > max || (exclusive && x == max) {
                    causes.push(Cause::invalid(
                        path,
                        &n.to_string(),
                        &format!("{shown} in body should be less than or equal to {max}"),
                    ));
                }
            }
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let names: Vec<String> = allowed.iter().map(short).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        causes.push(Cause::not_supported(path, &short(v), &refs));
    }
}

/// Whether `s` is a string of `format`, for the formats kube-apiserver checks that objects
/// commonly use; others are accepted (as kube-apiserver accepts formats it does not know).
fn string_format_ok(format: &str, s: &str) -> bool {
    use base64::Engine;
    match format {
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        // RFC 3339, or (as go-openapi's strfmt also accepts) a local time without an offset.
        "date-time" | "datetime" => {
            s.parse::<jiff::Timestamp>().is_ok() || s.parse::<jiff::civil::DateTime>().is_ok()
        }
        "date" => s.len() == 10 && s.parse::<jiff::civil::Date>().is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok() && s.len() == 36,
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            let max = match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => 32,
                Ok(std::net::IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            bits.parse::<u8>().is_ok_and(|b| b <= max)
        }),
        _ => true,
    }
}

fn check_count(
    n: usize,
    schema: &Value,
    min: &str,
    max: &str,
    path: &str,
    what: &str,
    causes: &mut Vec<Cause>,
) {
    if let Some(lo) = schema.get(min).and_then(Value::as_u64)
        && (n as u64) < lo
    {
        causes.push(Cause::invalid(
            path,
            &n.to_string(),
            &format!("should have at least {lo} {what}"),
        ));
    }
    if let Some(hi) = schema.get(max).and_then(Value::as_u64)
        && (n as u64) > hi
    {
        causes.push(Cause {
            reason: "FieldValueTooMany",
            field: path.into(),
            message: format!("Too many: {n}: must have at most {hi} {what}"),
        });
    }
}

/// Status conditions of an accepted CRD: `NamesAccepted` and `Established`.
pub fn established_status(crd: &Value, now: &str) -> Value {
    let names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let cond = |t: &str, reason: &str, msg: &str| serde_json::json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": msg});
    let mut accepted = names;
    if accepted.get("singular").is_none()
        && let Some(k) = crd.pointer("/spec/names/kind").and_then(Value::as_str)
    {
        accepted["singular"] = Value::String(k.to_lowercase());
    }
    if accepted.get("listKind").is_none()
        && let Some(k) = crd.pointer("/spec/names/kind").and_then(Value::as_str)
    {
        accepted["listKind"] = Value::String(format!("{k}List"));
    }
    serde_json::json!({
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": accepted,
        "storedVersions": stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }},
            "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        }})
    }

    #[test]
    fn prunes_defaults_and_validates() {
        let mut obj = json!({"spec": {"size": 2, "junk": 1, "free": {"x": {"y": 1}}}, "top": 1});
        let mut causes = Vec::new();
        apply_schema(&mut obj, &schema(), "", &mut causes, true);
        assert!(causes.is_empty(), "{causes:?}");
        assert_eq!(
            obj,
            json!({"spec": {"size": 2, "mode": "a", "free": {"x": {"y": 1}}}})
        );

        let mut bad = json!({"spec": {"size": "two", "mode": "c", "tags": [1]}});
        let mut causes = Vec::new();
        apply_schema(&mut bad, &schema(), "", &mut causes, true);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.mode", "spec.size", "spec.tags[0]"]);

        let mut missing = json!({"spec": {"size": 0}});
        let mut causes = Vec::new();
        apply_schema(&mut missing, &schema(), "", &mut causes, true);
        assert_eq!(causes.len(), 1);
        assert!(causes[0].message.contains("greater than or equal to 1"));
    }

    #[test]
    fn string_formats_are_checked() {
        let schema = json!({"type": "object", "properties": {
            "ca": {"type": "string", "format": "byte"},
            "at": {"type": "string", "format": "date-time"},
            "net": {"type": "string", "format": "cidr"},
            "n": {"type": "integer", "format": "int32"},
            "other": {"type": "string", "format": "no-such-format"}}});
        let mut good = json!({"ca": "aGVsbG8=", "at": "2026-11-25T22:00:00Z",
                              "net": "10.0.0.0/8", "other": "anything"});
        let mut causes = Vec::new();
        apply_schema(&mut good, &schema, "", &mut causes, true);
        assert!(causes.is_empty(), "{causes:?}");
        let mut bad =
            json!({"ca": "!!!", "at": "yesterday", "net": "10.0.0.0/33", "n": 2147483648u64});
        apply_schema(&mut bad, &schema, "", &mut causes, true);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["at", "ca", "n", "net"]);
        assert!(
            causes[1].message.contains("must be of type byte"),
            "{causes:?}"
        );
    }

    #[test]
    fn a_schema_may_restrict_the_name_and_nothing_else_of_metadata() {
        let mut schema = schema();
        schema["properties"]["metadata"] = json!({"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 10, "pattern": "^[a-z]+$"}}});
        let strategy = CustomStrategy {
            schema: schema.clone(),
            columns: Vec::new(),
            selectable: Vec::new(),
        };
        let obj = |name: &str| {
            json!({"apiVersion": "x/v1", "kind": "X", "spec": {"size": 1},
                   "metadata": {"name": name, "labels": {"a": "b"}}})
        };
        let ok = strategy.normalize(&obj("fine")).expect("a valid name");
        assert_eq!(ok["metadata"]["labels"]["a"], "b", "metadata is not pruned");
        for bad in ["Not_Fine", "muchtoolonganame"] {
            match strategy.normalize(&obj(bad)) {
                Err(NormalizeError::Invalid(causes)) => {
                    assert_eq!(causes.len(), 1, "{causes:?}");
                    assert_eq!(causes[0].field, "metadata.name");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // Anything else of metadata in a schema is refused when the CRD is written.
        let mut causes = Vec::new();
        check_metadata_schema(&schema, "s", &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        schema["properties"]["metadata"]["properties"]["labels"] = json!({"type": "object"});
        check_metadata_schema(&schema, "s", &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "s.properties[metadata].properties[labels]");
    }
}
