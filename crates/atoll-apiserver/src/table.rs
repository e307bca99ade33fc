//! `meta.k8s.io/v1` Table output, which `kubectl get` asks for and prints as is.

use jiff::Timestamp;
use serde_json::{Value, json};

/// How a column gets its cell from an object.
#[derive(Clone)]
pub enum CellSource {
    /// A JSON pointer, printed as is.
    Pointer(String),
    /// The number of keys in the maps at these pointers.
    Count(Vec<String>),
    /// Computed from the whole object.
    Computed(fn(&Value) -> Value),
    /// A CRD `additionalPrinterColumns` JSONPath.
    JsonPath(String),
}

#[derive(Clone)]
pub struct Column {
    pub name: String,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub ty: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub source: CellSource,
}

impl Column {
    pub fn text(name: &str, pointer: &str, description: &str) -> Column {
        Column::new(
            name,
            "string",
            CellSource::Pointer(pointer.into()),
            description,
        )
    }
    pub fn int(name: &str, pointer: &str, description: &str) -> Column {
        Column::new(
            name,
            "integer",
            CellSource::Pointer(pointer.into()),
            description,
        )
    }
    pub fn count(name: &str, pointers: &[&str], description: &str) -> Column {
        Column::new(
            name,
            "integer",
            CellSource::Count(pointers.iter().map(|p| p.to_string()).collect()),
            description,
        )
    }
    pub fn computed(name: &str, f: fn(&Value) -> Value, description: &str) -> Column {
        Column::new(name, "string", CellSource::Computed(f), description)
    }
    /// Shown only with `-o wide`.
    pub fn wide(mut self) -> Column {
        self.priority = 1;
        self
    }
    fn new(name: &str, ty: &str, source: CellSource, description: &str) -> Column {
        Column {
            name: name.into(),
            ty: ty.into(),
            format: String::new(),
            description: description.into(),
            priority: 0,
            source,
        }
    }

    fn cell(&self, obj: &Value) -> Value {
        let v = match &self.source {
            CellSource::Pointer(p) => obj.pointer(p).cloned().unwrap_or(Value::Null),
            CellSource::Count(ps) => json!(
                ps.iter()
                    .filter_map(|p| obj.pointer(p).and_then(Value::as_object))
                    .map(|m| m.len())
                    .sum::<usize>()
            ),
            CellSource::Computed(f) => f(obj),
            CellSource::JsonPath(path) => crate::jsonpath::eval(obj, path)
                .map(|vs| match vs.len() {
                    0 => Value::Null,
                    1 => vs[0].clone(),
                    _ => Value::String(
                        vs.iter()
                            .map(|v| match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                })
                .unwrap_or(Value::Null),
        };
        if self.ty == "date" {
            return match v.as_str() {
                Some(ts) => Value::String(age_since(ts)),
                None => Value::String("<unknown>".into()),
            };
        }
        match v {
            Value::Null => match (self.ty.as_str(), &self.source) {
                ("string", CellSource::JsonPath(_)) => Value::String(String::new()),
                ("string", _) => Value::String("<none>".into()),
                // Built-in counters are plain integers in Go: unset prints as 0.
                ("integer", CellSource::Pointer(_)) => json!(0),
                _ => Value::Null,
            },
            Value::Object(_) | Value::Array(_) => Value::String(v.to_string()),
            other => other,
        }
    }
}

/// Build a Table from objects; `include_object` is `None`, `Metadata` (default) or `Object`.
pub fn table(
    columns: &[Column],
    objects: &[Value],
    include_object: &str,
    list_meta: Value,
) -> Value {
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0
    })];
    for c in columns {
        defs.push(json!({
            "name": c.name, "type": if c.ty == "date" { "date" } else { c.ty.as_str() },
            "format": c.format, "description": c.description, "priority": c.priority,
        }));
    }
    let has_age = columns
        .iter()
        .any(|c| c.name == "Age" || c.name == "Created At");
    if !has_age {
        defs.push(json!({
            "name": "Age", "type": "string", "format": "",
            "description": "The time since the object was created.", "priority": 0
        }));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(columns.iter().map(|c| c.cell(o)));
            if !has_age {
                cells.push(Value::String(age(o)));
            }
            let mut row = json!({ "cells": cells });
            match include_object {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or_default(),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// `5m`, `3h`, `2d` since the object's creation, as kubectl prints ages.
pub fn age(obj: &Value) -> String {
    match obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
    {
        Some(ts) => age_since(ts),
        None => "<unknown>".into(),
    }
}

fn age_since(ts: &str) -> String {
    let Ok(t) = ts.parse::<Timestamp>() else {
        return "<invalid>".into();
    };
    let secs = (Timestamp::now().as_second() - t.as_second()).max(0);
    human_duration(secs)
}

/// kubectl's `HumanDuration`, simplified to one or two units.
pub fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub fn pod_ready(pod: &Value) -> Value {
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |cs| {
            cs.iter()
                .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                .count()
        });
    Value::String(format!("{ready}/{total}"))
}

/// The Age column where a kind wants it before its wide columns.
pub fn age_cell(obj: &Value) -> Value {
    Value::String(age(obj))
}

/// kubectl's pod STATUS: the reason a container is waiting or terminated, `Terminating`, or
/// the phase.
pub fn pod_status(pod: &Value) -> Value {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return json!("Terminating");
    }
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let mut reason = String::new();
    for c in pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let waiting = c.pointer("/state/waiting/reason").and_then(Value::as_str);
        let terminated = c
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str);
        if let Some(r) = waiting.or(terminated)
            && !r.is_empty()
        {
            reason = r.to_string();
        }
    }
    if reason.is_empty() || (phase == "Succeeded" && reason == "Completed") {
        if phase == "Succeeded" {
            return json!("Completed");
        }
        let unschedulable = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type") == Some(&json!("PodScheduled"))
                        && c.get("status") == Some(&json!("False"))
                })
            });
        return json!(if unschedulable && phase == "Pending" {
            "Pending"
        } else {
            phase
        });
    }
    json!(reason)
}

pub fn pod_restarts(pod: &Value) -> Value {
    let n: i64 = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |cs| {
            cs.iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .sum()
        });
    json!(n)
}

pub fn node_status(node: &Value) -> Value {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let mut s = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        s.push_str(",SchedulingDisabled");
    }
    Value::String(s)
}

pub fn ready_of_replicas(obj: &Value) -> Value {
    let ready = obj
        .pointer("/status/readyReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let want = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    Value::String(format!("{ready}/{want}"))
}

pub fn service_ports(svc: &Value) -> Value {
    let ports: Vec<String> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) if np > 0 => format!("{port}:{np}/{proto}"),
                        _ => format!("{port}/{proto}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Value::String(if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    })
}
