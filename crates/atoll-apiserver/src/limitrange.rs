//! LimitRange, as kube-apiserver's `LimitRanger` admission plugin applies it to pods: default
//! requests and limits for containers that name none, then minimum, maximum and
//! limit-to-request ratio per container and per pod. Pure functions over the pod and the
//! namespace's LimitRanges.

use serde_json::{Value, json};

use crate::quota::{Amounts, amounts, format, milli};

/// One LimitRange item with its defaults filled in as the API defaults them: `default` from
/// `max`, `defaultRequest` from `default` and then `min` (Container items only).
struct Item {
    kind: String,
    max: Amounts,
    min: Amounts,
    default: Amounts,
    default_request: Amounts,
    ratio: Amounts,
}

fn items(range: &Value) -> Vec<Item> {
    range
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|l| {
            let kind = l
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let max = amounts(l.get("max"));
            let min = amounts(l.get("min"));
            let mut default = amounts(l.get("default"));
            let mut default_request = amounts(l.get("defaultRequest"));
            if kind == "Container" {
                for (k, v) in &max {
                    default.entry(k.clone()).or_insert(*v);
                }
                for (k, v) in default.iter().chain(min.iter()) {
                    default_request.entry(k.clone()).or_insert(*v);
                }
            }
            Item {
                kind,
                max,
                min,
                default,
                default_request,
                ratio: amounts(l.get("maxLimitRequestRatio")),
            }
        })
        .collect()
}

fn container_lists(pod: &mut Value) -> Vec<&mut Value> {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (field, list) in spec.iter_mut() {
        if field == "containers" || field == "initContainers" {
            out.extend(list.as_array_mut().into_iter().flatten());
        }
    }
    out
}

/// Give the pod's containers the defaults of `ranges`; returns what was set, for the
/// `kubernetes.io/limit-ranger` annotation (empty when nothing was).
pub fn apply_defaults(pod: &mut Value, ranges: &[Value]) -> Vec<String> {
    let items: Vec<Item> = ranges.iter().flat_map(items).collect();
    let mut set = Vec::new();
    for c in container_lists(pod) {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        // A limit the container itself sets is also its request (defaulting, before
        // admission); a limit given here from a default is not.
        let own_limits = c.pointer("/resources/limits").cloned();
        for item in items.iter().filter(|i| i.kind == "Container") {
            for (field, defaults) in [
                ("limits", &item.default),
                ("requests", &item.default_request),
            ] {
                for (k, v) in defaults {
                    let resources = &mut c["resources"];
                    if !resources.is_object() {
                        *resources = json!({});
                    }
                    let has = resources.get(field).and_then(|m| m.get(k)).is_some()
                        || (field == "requests"
                            && own_limits.as_ref().and_then(|m| m.get(k)).is_some());
                    if has {
                        continue;
                    }
                    let list = &mut resources[field];
                    if !list.is_object() {
                        *list = json!({});
                    }
                    list[k] = json!(format(k, *v));
                    let what = if field == "limits" {
                        "limit"
                    } else {
                        "request"
                    };
                    set.push(format!("{k} {what} for container {name}"));
                }
            }
        }
    }
    set
}

/// Why the pod breaks the ranges' minimums, maximums or ratios (kube-apiserver's messages).
pub fn violations(pod: &Value, ranges: &[Value]) -> Vec<String> {
    let items: Vec<Item> = ranges.iter().flat_map(items).collect();
    let mut out = Vec::new();
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|f| {
            pod.pointer(&format!("/spec/{f}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .collect();
    let of = |c: &Value, f: &str| amounts(c.pointer(&format!("/resources/{f}")));
    for item in &items {
        let scopes: Vec<(Amounts, Amounts)> = match item.kind.as_str() {
            "Container" => containers
                .iter()
                .map(|c| {
                    let limits = of(c, "limits");
                    let mut requests = of(c, "requests");
                    for (k, v) in &limits {
                        requests.entry(k.clone()).or_insert(*v);
                    }
                    (requests, limits)
                })
                .collect(),
            "Pod" => {
                let mut requests = Amounts::new();
                let mut limits = Amounts::new();
                for c in &containers {
                    let l = of(c, "limits");
                    let mut r = of(c, "requests");
                    for (k, v) in &l {
                        r.entry(k.clone()).or_insert(*v);
                    }
                    crate::quota::add(&mut requests, &r);
                    crate::quota::add(&mut limits, &l);
                }
                vec![(requests, limits)]
            }
            _ => continue,
        };
        let kind = &item.kind;
        for (requests, limits) in scopes {
            for (k, min) in &item.min {
                match requests.get(k) {
                    Some(r) if r < min => out.push(format!(
                        "minimum {k} usage per {kind} is {}, but request is {}",
                        format(k, *min),
                        format(k, *r)
                    )),
                    None => out.push(format!(
                        "minimum {k} usage per {kind} is {}.  No request is specified",
                        format(k, *min)
                    )),
                    _ => {}
                }
            }
            for (k, max) in &item.max {
                match limits.get(k) {
                    Some(l) if l > max => out.push(format!(
                        "maximum {k} usage per {kind} is {}, but limit is {}",
                        format(k, *max),
                        format(k, *l)
                    )),
                    None => out.push(format!(
                        "maximum {k} usage per {kind} is {}.  No limit is specified",
                        format(k, *max)
                    )),
                    _ => {}
                }
            }
            for (k, ratio) in &item.ratio {
                if let (Some(l), Some(r)) = (limits.get(k), requests.get(k))
                    && *r > 0
                    && (*l as i128) * 1000 > (*ratio as i128) * (*r as i128)
                {
                    out.push(format!(
                        "{k} max limit to request ratio per {kind} is {}, but provided ratio is {:.6}",
                        format("", *ratio),
                        *l as f64 / *r as f64
                    ));
                }
            }
        }
    }
    out
}

/// Validate a LimitRange: known types, quantities that parse, and min <= default request <=
/// default <= max for each resource.
pub fn validate(obj: &Value, causes: &mut Vec<crate::error::Cause>) {
    use crate::error::Cause;
    const TYPES: [&str; 3] = ["Container", "Pod", "PersistentVolumeClaim"];
    for (i, l) in obj
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let kind = l.get("type").and_then(Value::as_str).unwrap_or_default();
        if !TYPES.contains(&kind) {
            causes.push(Cause::not_supported(
                format!("spec.limits[{i}].type"),
                kind,
                &TYPES,
            ));
        }
        for f in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            for (k, v) in l.get(f).and_then(Value::as_object).into_iter().flatten() {
                let s = v.as_str().unwrap_or_default();
                if milli(s).is_none_or(|n| n < 0) {
                    causes.push(Cause::invalid(
                        format!("spec.limits[{i}].{f}[{k}]"),
                        s,
                        "must be a non-negative quantity",
                    ));
                }
            }
        }
        if kind != "Container" {
            for f in ["default", "defaultRequest"] {
                if l.get(f)
                    .and_then(Value::as_object)
                    .is_some_and(|m| !m.is_empty())
                {
                    causes.push(Cause::forbidden(
                        format!("spec.limits[{i}].{f}"),
                        &format!("may not be specified when `type` is '{kind}'"),
                    ));
                }
            }
        }
        let get = |f: &str, k: &str| {
            l.get(f)
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .and_then(milli)
        };
        let mut keys: Vec<&String> = ["max", "min", "default", "defaultRequest"]
            .iter()
            .flat_map(|f| {
                l.get(*f)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|m| m.keys())
            })
            .collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let order = [
                ("min", get("min", k)),
                ("defaultRequest", get("defaultRequest", k)),
                ("default", get("default", k)),
                ("max", get("max", k)),
            ];
            for (a, (an, av)) in order.iter().enumerate() {
                for (bn, bv) in &order[a + 1..] {
                    if let (Some(x), Some(y)) = (av, bv)
                        && x > y
                    {
                        causes.push(Cause::invalid(
                            format!("spec.limits[{i}].{bn}[{k}]"),
                            &format(k, *y),
                            &format!(
                                "{an} value {} is greater than {bn} value {}",
                                format(k, *x),
                                format(k, *y)
                            ),
                        ));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> Value {
        json!({"metadata": {"name": "defaults"}, "spec": {"limits": limits}})
    }

    #[test]
    fn containers_get_the_defaults_they_lack() {
        let ranges = [range(json!([{"type": "Container",
            "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]))];
        let mut pod = json!({"spec": {"containers": [
            {"name": "bare"},
            {"name": "own", "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}},
        ]}});
        let set = apply_defaults(&mut pod, &ranges);
        let bare = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(bare["limits"]["cpu"], "500m");
        assert_eq!(bare["requests"]["cpu"], "100m");
        assert_eq!(bare["requests"]["memory"], "128Mi");
        let own = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(own["requests"]["cpu"], "250m", "its own request stays");
        assert_eq!(own["limits"]["cpu"], "500m");
        assert_eq!(
            own["requests"].get("memory"),
            None,
            "its memory limit is its request"
        );
        assert_eq!(set.len(), 4, "{set:?}");
        assert!(set.contains(&"cpu request for container bare".to_string()));
    }

    #[test]
    fn max_is_the_default_limit_and_min_the_default_request() {
        let ranges = [range(
            json!([{"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"}}]),
        )];
        let mut pod = json!({"spec": {"containers": [{"name": "c"}]}});
        apply_defaults(&mut pod, &ranges);
        let r = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(r["limits"]["cpu"], "1");
        assert_eq!(r["requests"]["cpu"], "1");
        assert_eq!(r["requests"]["memory"], "64Mi");
    }

    #[test]
    fn bounds_and_ratios_are_checked_per_container_and_pod() {
        let ranges = [range(json!([
            {"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "100m"}, "maxLimitRequestRatio": {"cpu": "2"}},
            {"type": "Pod", "max": {"memory": "1Gi"}},
        ]))];
        let pod = |cpu_req: &str, cpu_lim: &str, mem: &str| {
            json!({"spec": {"containers": [{"name": "c", "resources": {
                "requests": {"cpu": cpu_req}, "limits": {"cpu": cpu_lim, "memory": mem}}}]}})
        };
        assert_eq!(
            violations(&pod("500m", "1", "512Mi"), &ranges),
            Vec::<String>::new()
        );
        assert_eq!(
            violations(&pod("500m", "2", "512Mi"), &ranges),
            [
                "maximum cpu usage per Container is 1, but limit is 2",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"
            ]
        );
        assert_eq!(
            violations(&pod("50m", "100m", "2Gi"), &ranges),
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum memory usage per Pod is 1Gi, but limit is 2Gi"
            ]
        );
    }

    #[test]
    fn limit_ranges_are_validated() {
        for (limits, errors) in [
            (
                json!([{"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "1"}}]),
                0,
            ),
            (json!([{"type": "Node"}]), 1),
            (json!([{"type": "Container", "max": {"cpu": "lots"}}]), 1),
            (json!([{"type": "Pod", "default": {"cpu": "1"}}]), 1),
            (
                json!([{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]),
                1,
            ),
        ] {
            let mut causes = Vec::new();
            validate(&range(limits.clone()), &mut causes);
            assert_eq!(causes.len(), errors, "{limits}: {causes:?}");
        }
    }
}
