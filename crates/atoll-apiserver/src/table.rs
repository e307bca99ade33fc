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
    let p = PodSummary::of(pod);
    Value::String(format!("{}/{}", p.ready, p.total))
}

/// The Age column where a kind wants it before its wide columns.
pub fn age_cell(obj: &Value) -> Value {
    Value::String(age(obj))
}

/// kubectl's pod STATUS: the reason an init or app container is waiting or terminated,
/// `Init:N/M` while initializing, `Terminating`, or the phase.
pub fn pod_status(pod: &Value) -> Value {
    json!(PodSummary::of(pod).reason)
}

pub fn pod_restarts(pod: &Value) -> Value {
    json!(PodSummary::of(pod).restarts)
}

/// A pod's READY, STATUS and RESTARTS, worked out as kubectl's printer does.
struct PodSummary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: i64,
}

impl PodSummary {
    fn of(pod: &Value) -> PodSummary {
        let list = |p: &str| {
            pod.pointer(p)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let str_at = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
        let int_at = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        let init_specs = list("/spec/initContainers");
        let restartable = |name: &str| {
            init_specs.iter().any(|c| {
                c.get("name").and_then(Value::as_str) == Some(name)
                    && c.get("restartPolicy").and_then(Value::as_str) == Some("Always")
            })
        };
        let sidecars = init_specs
            .iter()
            .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"))
            .count();
        let total = list("/spec/containers").len() + sidecars;
        let mut ready = 0;
        let mut restarts = 0;
        let mut sidecar_restarts = 0;
        let mut reason = str_at(pod, "/status/reason")
            .filter(|r| !r.is_empty())
            .or_else(|| str_at(pod, "/status/phase"))
            .unwrap_or_else(|| "Pending".into());
        let exit_reason = |prefix: &str, c: &Value| {
            let signal = int_at(c, "/state/terminated/signal");
            if signal != 0 {
                format!("{prefix}Signal:{signal}")
            } else {
                format!(
                    "{prefix}ExitCode:{}",
                    int_at(c, "/state/terminated/exitCode")
                )
            }
        };
        let mut initializing = false;
        let init = list("/status/initContainerStatuses");
        for (i, c) in init.iter().enumerate() {
            let name = str_at(c, "/name").unwrap_or_default();
            let started = c.get("started").and_then(Value::as_bool) == Some(true);
            restarts += int_at(c, "/restartCount");
            if restartable(&name) {
                sidecar_restarts += int_at(c, "/restartCount");
                if started && c.get("ready").and_then(Value::as_bool) == Some(true) {
                    ready += 1;
                }
            }
            let terminated = c.pointer("/state/terminated").is_some();
            let waiting = str_at(c, "/state/waiting/reason").filter(|r| !r.is_empty());
            if terminated && int_at(c, "/state/terminated/exitCode") == 0 {
                continue;
            }
            if restartable(&name) && started {
                continue;
            }
            reason = if terminated {
                match str_at(c, "/state/terminated/reason").filter(|r| !r.is_empty()) {
                    Some(r) => format!("Init:{r}"),
                    None => exit_reason("Init:", c),
                }
            } else if let Some(w) = waiting.filter(|w| w != "PodInitializing") {
                format!("Init:{w}")
            } else {
                format!("Init:{i}/{}", init_specs.len())
            };
            initializing = true;
            break;
        }
        let initialized = list("/status/conditions").iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Initialized")
                && c.get("status").and_then(Value::as_str) == Some("True")
        });
        if !initializing || initialized {
            restarts = sidecar_restarts;
            let mut running = false;
            // From the last container to the first: the first one's reason is shown.
            for c in list("/status/containerStatuses").iter().rev() {
                restarts += int_at(c, "/restartCount");
                let waiting = str_at(c, "/state/waiting/reason").filter(|r| !r.is_empty());
                let terminated = c.pointer("/state/terminated").is_some();
                if let Some(w) = waiting {
                    reason = w;
                } else if terminated {
                    reason = str_at(c, "/state/terminated/reason")
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| exit_reason("", c));
                } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                    && c.pointer("/state/running").is_some()
                {
                    running = true;
                    ready += 1;
                }
            }
            if reason == "Completed" && running {
                let pod_ready = list("/status/conditions").iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Ready")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                });
                reason = if pod_ready { "Running" } else { "NotReady" }.into();
            }
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            reason = if str_at(pod, "/status/reason").as_deref() == Some("NodeLost") {
                "Unknown".into()
            } else {
                "Terminating".into()
            };
        }
        PodSummary {
            ready,
            total,
            reason,
            restarts,
        }
    }
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

/// A quota's `requests.cpu: 500m/2, pods: 3/10` (kubectl's REQUEST column: everything
/// but limits).
pub fn quota_requests(quota: &Value) -> Value {
    quota_cell(quota, false)
}

/// A quota's `limits.cpu: 1/4` (kubectl's LIMIT column).
pub fn quota_limits(quota: &Value) -> Value {
    quota_cell(quota, true)
}

fn quota_cell(quota: &Value, limits: bool) -> Value {
    let hard = quota
        .pointer("/status/hard")
        .or_else(|| quota.pointer("/spec/hard"))
        .and_then(Value::as_object);
    let used = quota.pointer("/status/used");
    let cells: Vec<String> = hard
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("limits.") == limits)
        .map(|(k, h)| {
            let u = used
                .and_then(|u| u.get(k))
                .and_then(Value::as_str)
                .unwrap_or("0");
            format!("{k}: {u}/{}", h.as_str().unwrap_or_default())
        })
        .collect();
    Value::String(cells.join(", "))
}

/// Access modes as kubectl abbreviates them: RWO, ROX, RWX, RWOP.
pub fn access_modes(obj: &Value) -> Value {
    let modes: Vec<&str> = obj
        .pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    json!(modes.join(","))
}

/// A volume's claim as `namespace/name`.
pub fn pv_claim(pv: &Value) -> Value {
    let at = |p: &str| pv.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let name = at("/spec/claimRef/name");
    json!(if name.is_empty() {
        String::new()
    } else {
        format!("{}/{name}", at("/spec/claimRef/namespace"))
    })
}

pub fn cronjob_time_zone(cj: &Value) -> Value {
    json!(
        cj.pointer("/spec/timeZone")
            .and_then(Value::as_str)
            .filter(|z| !z.is_empty())
            .unwrap_or("<none>")
    )
}

pub fn cronjob_suspend(cj: &Value) -> Value {
    json!(
        cj.pointer("/spec/suspend")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string()
    )
}

pub fn cronjob_active(cj: &Value) -> Value {
    json!(
        cj.pointer("/status/active")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    )
}

/// How long ago the CronJob last started a Job, or `<none>`.
pub fn cronjob_last_schedule(cj: &Value) -> Value {
    json!(
        cj.pointer("/status/lastScheduleTime")
            .and_then(Value::as_str)
            .map_or_else(|| "<none>".to_string(), age_since)
    )
}

/// A workload's pod template `nodeSelector` as `k=v,...`, or `<none>`.
pub fn template_node_selector(obj: &Value) -> Value {
    let pairs: Vec<String> = obj
        .pointer("/spec/template/spec/nodeSelector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    json!(if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    })
}

fn has_condition(obj: &Value, type_: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(type_)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// A Job's STATUS, as kubectl prints it.
pub fn job_status(job: &Value) -> Value {
    let status = if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if job.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else if has_condition(job, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else {
        "Running"
    };
    json!(status)
}

/// A Job's COMPLETIONS: succeeded of wanted (`N/1 of P` for a work queue run P at a time).
pub fn job_completions(job: &Value) -> Value {
    let int = |p: &str| job.pointer(p).and_then(Value::as_i64);
    let succeeded = int("/status/succeeded").unwrap_or(0);
    Value::String(match (int("/spec/completions"), int("/spec/parallelism")) {
        (Some(c), _) => format!("{succeeded}/{c}"),
        (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
        (None, _) => format!("{succeeded}/1"),
    })
}

/// A Job's DURATION: from its start to its completion, or to now.
pub fn job_duration(job: &Value) -> Value {
    let time = |p: &str| {
        job.pointer(p)
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Timestamp>().ok())
    };
    let Some(start) = time("/status/startTime") else {
        return json!("");
    };
    let end = time("/status/completionTime").unwrap_or_else(Timestamp::now);
    json!(human_duration((end.as_second() - start.as_second()).max(0)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(pod: Value) -> (String, String, i64) {
        (
            pod_ready(&pod).as_str().unwrap_or_default().to_string(),
            pod_status(&pod).as_str().unwrap_or_default().to_string(),
            pod_restarts(&pod).as_i64().unwrap_or(-1),
        )
    }

    #[test]
    fn pod_columns_are_what_kubectl_would_print() {
        let spec = json!({
            "initContainers": [{"name": "setup"}, {"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "a"}, {"name": "b"}]});
        // Initializing: the first init container not done gives the count.
        let pod = json!({"spec": spec, "status": {"phase": "Pending", "initContainerStatuses": [
            {"name": "setup", "restartCount": 0, "state": {"running": {}}},
            {"name": "proxy", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        assert_eq!(summary(pod), ("0/3".into(), "Init:0/2".into(), 0));
        // A failing init container says why, with its restarts.
        let pod = json!({"spec": spec, "status": {"phase": "Pending", "initContainerStatuses": [
            {"name": "setup", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(summary(pod).1, "Init:CrashLoopBackOff");
        let pod = json!({"spec": spec, "status": {"phase": "Failed", "initContainerStatuses": [
            {"name": "setup", "state": {"terminated": {"exitCode": 3}}}]}});
        assert_eq!(summary(pod).1, "Init:ExitCode:3");
        // Initialized: the sidecar counts as a ready container; the first app container's
        // reason is the one shown.
        let pod = json!({"spec": spec, "status": {"phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [
                {"name": "setup", "restartCount": 1, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "proxy", "restartCount": 2, "started": true, "ready": true, "state": {"running": {}}}],
            "containerStatuses": [
                {"name": "a", "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                {"name": "b", "restartCount": 0, "ready": true, "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(summary(pod), ("1/3".into(), "CrashLoopBackOff".into(), 3));
        // One container completed, another still running and the pod Ready: Running.
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "a", "ready": true, "state": {"running": {}}},
                {"name": "b", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        assert_eq!(summary(pod), ("1/2".into(), "Running".into(), 0));
        let gone = json!({"metadata": {"deletionTimestamp": "2026-11-25T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}});
        assert_eq!(summary(gone).1, "Terminating");
    }

    #[test]
    fn job_columns_are_what_kubectl_would_print() {
        let job = json!({"spec": {"completions": 3, "parallelism": 2},
            "status": {"succeeded": 2, "startTime": "2026-11-25T10:00:00Z",
                       "completionTime": "2026-11-25T10:01:30Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(job_status(&job), "Complete");
        assert_eq!(job_completions(&job), "2/3");
        assert_eq!(job_duration(&job), "90s");
        let queue = json!({"spec": {"parallelism": 4}, "status": {
            "conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(job_status(&queue), "Suspended");
        assert_eq!(job_completions(&queue), "0/1 of 4");
        assert_eq!(job_duration(&queue), "");
        let failing = json!({"spec": {"completions": 1}, "status": {
            "conditions": [{"type": "FailureTarget", "status": "True"}]}});
        assert_eq!(job_status(&failing), "FailureTarget");
    }
}
