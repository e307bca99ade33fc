//! What is read back from an applied object: status feedback (`WellKnownStatus`, as Open
//! Cluster Management lists it per kind, and `JSONPaths`) and its health by its kind's own
//! rule (beyond OCM, which needs hand-written CEL for it): progressing while not yet as its
//! spec asks, degraded when it failed.

use atoll_api::work::{FeedbackRule, FeedbackValue, FieldValue};
use serde_json::Value;

/// The longest `JsonRaw` feedback value kept (OCM caps it at 1 KiB; a pod list or a status
/// block is often more).
pub const MAX_JSON_RAW: usize = 64 * 1024;

fn int(obj: &Value, pointer: &str) -> Option<i64> {
    obj.pointer(pointer).and_then(Value::as_i64)
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(obj: &Value, type_: &str, status: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == status)
}

fn integer(name: &str, v: i64) -> FeedbackValue {
    FeedbackValue {
        name: name.into(),
        field_value: FieldValue {
            type_: "Integer".into(),
            integer: Some(v),
            ..Default::default()
        },
    }
}

fn boolean(name: &str, v: bool) -> FeedbackValue {
    FeedbackValue {
        name: name.into(),
        field_value: FieldValue {
            type_: "Boolean".into(),
            boolean: Some(v),
            ..Default::default()
        },
    }
}

fn string(name: &str, v: &str) -> FeedbackValue {
    FeedbackValue {
        name: name.into(),
        field_value: FieldValue {
            type_: "String".into(),
            string: Some(v.into()),
            ..Default::default()
        },
    }
}

/// The well-known status values of `obj` (of `group`/`kind`): OCM's list.
pub fn well_known(group: &str, kind: &str, obj: &Value) -> Vec<FeedbackValue> {
    let mut out = Vec::new();
    let mut push_int = |name: &str, pointer: &str| {
        if let Some(v) = int(obj, pointer) {
            out.push(integer(name, v));
        }
    };
    match (group, kind) {
        ("apps", "Deployment") => {
            push_int("ReadyReplicas", "/status/readyReplicas");
            push_int("Replicas", "/status/replicas");
            push_int("AvailableReplicas", "/status/availableReplicas");
        }
        ("apps", "DaemonSet") => {
            push_int("NumberReady", "/status/numberReady");
            push_int("DesiredNumberScheduled", "/status/desiredNumberScheduled");
            push_int("NumberAvailable", "/status/numberAvailable");
        }
        ("batch", "Job") => {
            out.push(boolean(
                "JobComplete",
                condition_is(obj, "Complete", "True"),
            ));
            if let Some(v) = int(obj, "/status/succeeded") {
                out.push(integer("JobSucceeded", v));
            }
        }
        ("", "Pod") => {
            out.push(boolean("PodReady", condition_is(obj, "Ready", "True")));
            if let Some(p) = obj.pointer("/status/phase").and_then(Value::as_str) {
                out.push(string("PodPhase", p));
            }
        }
        _ => {}
    }
    out
}

/// The values of `rules` for `obj`; `Err` names a path that cannot be evaluated.
pub fn values(
    group: &str,
    kind: &str,
    obj: &Value,
    rules: &[FeedbackRule],
) -> Result<Vec<FeedbackValue>, String> {
    let mut out = Vec::new();
    for rule in rules {
        match rule.type_.as_str() {
            "WellKnownStatus" => out.extend(well_known(group, kind, obj)),
            "JSONPaths" => {
                for p in &rule.json_paths {
                    let found = atoll_runtime::jsonpath::eval(obj, &p.path)
                        .map_err(|e| format!("feedback {:?}: {e}", p.name))?;
                    let Some(v) = found.into_iter().next() else {
                        continue;
                    };
                    out.push(match v {
                        Value::Bool(b) => boolean(&p.name, b),
                        Value::Number(n) if n.is_i64() => integer(&p.name, n.as_i64().unwrap_or(0)),
                        Value::String(s) => string(&p.name, &s),
                        other => {
                            let mut raw = other.to_string();
                            if raw.len() > MAX_JSON_RAW {
                                return Err(format!(
                                    "feedback {:?} is {} bytes of JSON, more than the {MAX_JSON_RAW} kept",
                                    p.name,
                                    raw.len()
                                ));
                            }
                            raw.shrink_to_fit();
                            FeedbackValue {
                                name: p.name.clone(),
                                field_value: FieldValue {
                                    type_: "JsonRaw".into(),
                                    json_raw: Some(raw),
                                    ..Default::default()
                                },
                            }
                        }
                    });
                }
            }
            other => return Err(format!("unknown feedback rule type {other:?}")),
        }
    }
    Ok(out)
}

/// How a workload is doing by its kind's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// As its spec asks (or a kind without a rule: it exists).
    Ready,
    /// Not yet: why.
    Progressing(String),
    /// Failed: why.
    Degraded(String),
}

/// The health of `obj` by its kind's rule: a Deployment, StatefulSet or DaemonSet whose
/// controller has seen its generation and whose pods are all updated and ready; a Job
/// complete; a Pod ready or succeeded.
pub fn health(group: &str, kind: &str, obj: &Value) -> Health {
    let generation = int(obj, "/metadata/generation").unwrap_or(0);
    let observed = int(obj, "/status/observedGeneration").unwrap_or(0);
    let seen = || {
        if observed < generation {
            Some(Health::Progressing(format!(
                "{kind} generation {generation} not yet observed by its controller ({observed})"
            )))
        } else {
            None
        }
    };
    let want_replicas = || int(obj, "/spec/replicas").unwrap_or(1);
    match (group, kind) {
        ("apps", "Deployment") => {
            if let Some(c) = condition(obj, "Progressing")
                && c["status"] == "False"
                && c["reason"] == "ProgressDeadlineExceeded"
            {
                return Health::Degraded(format!(
                    "Deployment {}",
                    c["message"]
                        .as_str()
                        .unwrap_or("exceeded its progress deadline")
                ));
            }
            if let Some(h) = seen() {
                return h;
            }
            let want = want_replicas();
            let updated = int(obj, "/status/updatedReplicas").unwrap_or(0);
            let available = int(obj, "/status/availableReplicas").unwrap_or(0);
            let total = int(obj, "/status/replicas").unwrap_or(0);
            if updated < want || available < want || total > want {
                return Health::Progressing(format!(
                    "Deployment: {updated} of {want} replicas updated, {available} available, {total} in all"
                ));
            }
            Health::Ready
        }
        ("apps", "StatefulSet") => {
            if let Some(h) = seen() {
                return h;
            }
            let want = want_replicas();
            let ready = int(obj, "/status/readyReplicas").unwrap_or(0);
            let updated = int(obj, "/status/updatedReplicas").unwrap_or(0);
            if ready < want || updated < want {
                return Health::Progressing(format!(
                    "StatefulSet: {ready} of {want} replicas ready, {updated} updated"
                ));
            }
            Health::Ready
        }
        ("apps", "DaemonSet") => {
            if let Some(h) = seen() {
                return h;
            }
            let desired = int(obj, "/status/desiredNumberScheduled").unwrap_or(0);
            let ready = int(obj, "/status/numberReady").unwrap_or(0);
            let updated = int(obj, "/status/updatedNumberScheduled").unwrap_or(desired);
            if ready < desired || updated < desired {
                return Health::Progressing(format!(
                    "DaemonSet: {ready} of {desired} pods ready, {updated} updated"
                ));
            }
            Health::Ready
        }
        ("batch", "Job") => {
            if condition_is(obj, "Failed", "True") {
                let why = condition(obj, "Failed")
                    .and_then(|c| c["message"].as_str().or(c["reason"].as_str()))
                    .unwrap_or("failed")
                    .to_string();
                return Health::Degraded(format!("Job failed: {why}"));
            }
            if condition_is(obj, "Complete", "True") {
                Health::Ready
            } else {
                Health::Progressing("Job not complete yet".into())
            }
        }
        ("", "Pod") => match obj.pointer("/status/phase").and_then(Value::as_str) {
            Some("Succeeded") => Health::Ready,
            Some("Failed") => Health::Degraded("Pod failed".into()),
            _ if condition_is(obj, "Ready", "True") => Health::Ready,
            phase => {
                Health::Progressing(format!("Pod {} and not ready", phase.unwrap_or("Pending")))
            }
        },
        _ => Health::Ready,
    }
}

/// Whether a workload of this kind has run to completion (Jobs, and Pods that do not restart).
pub fn finished(group: &str, kind: &str, obj: &Value) -> bool {
    match (group, kind) {
        ("batch", "Job") => {
            condition_is(obj, "Complete", "True") || condition_is(obj, "Failed", "True")
        }
        ("", "Pod") => matches!(
            obj.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_api::work::JsonPath;
    use serde_json::json;

    fn deployment(
        generation: i64,
        observed: i64,
        want: i64,
        updated: i64,
        available: i64,
    ) -> Value {
        json!({"metadata": {"generation": generation}, "spec": {"replicas": want},
               "status": {"observedGeneration": observed, "replicas": want, "updatedReplicas": updated,
                          "availableReplicas": available, "readyReplicas": available}})
    }

    #[test]
    fn well_known_values_are_ocms() {
        let d = deployment(2, 2, 3, 3, 2);
        let names: Vec<(String, Option<i64>)> = well_known("apps", "Deployment", &d)
            .into_iter()
            .map(|v| (v.name, v.field_value.integer))
            .collect();
        assert_eq!(
            names,
            [
                ("ReadyReplicas".to_string(), Some(2)),
                ("Replicas".to_string(), Some(3)),
                ("AvailableReplicas".to_string(), Some(2))
            ]
        );
        let job = json!({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
        let v = well_known("batch", "Job", &job);
        assert_eq!(v[0].field_value.boolean, Some(true));
        assert_eq!(v[1].field_value.integer, Some(1));
        let pod = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}});
        let v = well_known("", "Pod", &pod);
        assert_eq!(v[0].field_value.boolean, Some(false));
        assert_eq!(v[1].field_value.string.as_deref(), Some("Running"));
        assert!(well_known("", "ConfigMap", &json!({})).is_empty());
    }

    #[test]
    fn json_paths_give_typed_values() {
        let obj = json!({"status": {"ready": true, "n": 4, "phase": "Up", "list": [1, 2]}});
        let rules = vec![FeedbackRule {
            type_: "JSONPaths".into(),
            json_paths: ["ready", "n", "phase", "list", "missing"]
                .iter()
                .map(|n| JsonPath {
                    name: n.to_string(),
                    path: format!(".status.{n}"),
                    version: None,
                })
                .collect(),
        }];
        let v = values("x", "Y", &obj, &rules).unwrap();
        let types: Vec<&str> = v.iter().map(|v| v.field_value.type_.as_str()).collect();
        assert_eq!(
            types,
            ["Boolean", "Integer", "String", "JsonRaw"],
            "missing paths give nothing"
        );
        assert_eq!(v[3].field_value.json_raw.as_deref(), Some("[1,2]"));
        let bad = vec![FeedbackRule {
            type_: "JSONPaths".into(),
            json_paths: vec![JsonPath {
                name: "x".into(),
                path: ".a[".into(),
                version: None,
            }],
        }];
        assert!(values("x", "Y", &obj, &bad).is_err());
    }

    #[test]
    fn health_by_kind() {
        assert_eq!(
            health("apps", "Deployment", &deployment(2, 2, 3, 3, 3)),
            Health::Ready
        );
        assert!(
            matches!(health("apps", "Deployment", &deployment(3, 2, 3, 3, 3)), Health::Progressing(m) if m.contains("not yet observed"))
        );
        assert!(matches!(
            health("apps", "Deployment", &deployment(2, 2, 3, 2, 3)),
            Health::Progressing(_)
        ));
        let mut stuck = deployment(2, 2, 3, 1, 1);
        stuck["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "web has timed out progressing"}]);
        assert!(
            matches!(health("apps", "Deployment", &stuck), Health::Degraded(m) if m.contains("timed out"))
        );
        let job = |t: &str| json!({"status": {"conditions": [{"type": t, "status": "True", "message": "BackoffLimitExceeded"}]}});
        assert_eq!(health("batch", "Job", &job("Complete")), Health::Ready);
        assert!(matches!(
            health("batch", "Job", &job("Failed")),
            Health::Degraded(_)
        ));
        assert!(matches!(
            health("batch", "Job", &json!({})),
            Health::Progressing(_)
        ));
        let ds = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2}});
        assert!(matches!(
            health("apps", "DaemonSet", &ds),
            Health::Progressing(_)
        ));
        assert_eq!(health("", "ConfigMap", &json!({})), Health::Ready);
        assert!(finished("batch", "Job", &job("Failed")));
        assert!(!finished("apps", "Deployment", &deployment(1, 1, 1, 1, 1)));
    }
}
