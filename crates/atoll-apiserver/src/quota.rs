//! ResourceQuota, as kube-apiserver's `ResourceQuota` admission plugin and
//! kube-controller-manager's quota controller count it: what an object uses of a namespace's
//! quotas, which quotas apply to it, and whether a create fits. Pure functions; the admission
//! step (`rest/write.rs`) and the controller (`controllers/quota.rs`) do the reading and writing.
//!
//! Amounts are integers in thousandths of a unit (`500m` CPU is 500, `1Gi` is 1024^3 * 1000),
//! so CPU and bytes add up the same way and nothing rounds.

use std::collections::BTreeMap;

use serde_json::Value;

/// Usage or limits by resource name (`pods`, `requests.cpu`, `count/secrets`), in milli-units.
pub type Amounts = BTreeMap<String, i64>;

/// The resources whose use a pod's containers must declare when a quota limits them (the
/// backward-compatible rule of Kubernetes' pod evaluator).
const DECLARED: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// Legacy object-count names and the resource each counts.
const LEGACY_COUNTS: [(&str, &str); 6] = [
    ("configmaps", "configmaps"),
    ("secrets", "secrets"),
    ("services", "services"),
    ("persistentvolumeclaims", "persistentvolumeclaims"),
    ("replicationcontrollers", "replicationcontrollers"),
    ("resourcequotas", "resourcequotas"),
];

/// A quantity in milli-units; `None` if it does not parse.
pub fn milli(q: &str) -> Option<i64> {
    atoll_runtime::quantity::cpu_millis(q)
}

/// A milli-unit amount as a quantity: `500m`, `2`, `512Mi` for byte-counted resources.
pub fn format(resource: &str, v: i64) -> String {
    if v % 1000 != 0 {
        return format!("{v}m");
    }
    let units = v / 1000;
    let bytes = ["memory", "storage", "ephemeral-storage"]
        .iter()
        .any(|b| resource == *b || resource.ends_with(&format!(".{b}")))
        || resource.starts_with("hugepages-")
        || resource.contains(".hugepages-");
    if bytes && units != 0 {
        for (suffix, factor) in [
            ("Ti", 1i64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if units % factor == 0 {
                return format!("{}{suffix}", units / factor);
            }
        }
    }
    units.to_string()
}

/// A ResourceList object (`{"cpu": "2", ...}`) as amounts; what does not parse is left out
/// (validation refuses it before it is stored).
pub fn amounts(list: Option<&Value>) -> Amounts {
    list.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), milli(v.as_str()?)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Amounts as a ResourceList object.
pub fn resource_list(a: &Amounts) -> Value {
    Value::Object(
        a.iter()
            .map(|(k, v)| (k.clone(), Value::String(format(k, *v))))
            .collect(),
    )
}

/// The object-count name of a resource: `count/pods`, `count/deployments.apps`.
fn count_name(group: &str, resource: &str) -> String {
    if group.is_empty() {
        format!("count/{resource}")
    } else {
        format!("count/{resource}.{group}")
    }
}

fn is_native(name: &str) -> bool {
    !name.contains('/') || name.starts_with("kubernetes.io/")
}

/// One container's requests and limits, a missing request taking its limit (as defaulting
/// does).
fn container_resources(c: &Value) -> (Amounts, Amounts) {
    let limits = amounts(c.pointer("/resources/limits"));
    let mut requests = amounts(c.pointer("/resources/requests"));
    for (k, v) in &limits {
        requests.entry(k.clone()).or_insert(*v);
    }
    (requests, limits)
}

fn containers<'a>(pod: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A pod's effective requests and limits: the sum over its containers, at least the largest
/// init container's, plus its overhead.
fn pod_resources(pod: &Value) -> (Amounts, Amounts) {
    let mut requests = Amounts::new();
    let mut limits = Amounts::new();
    for c in containers(pod, "containers") {
        let (r, l) = container_resources(c);
        add(&mut requests, &r);
        add(&mut limits, &l);
    }
    for c in containers(pod, "initContainers") {
        let (r, l) = container_resources(c);
        for (k, v) in r {
            let e = requests.entry(k).or_default();
            *e = (*e).max(v);
        }
        for (k, v) in l {
            let e = limits.entry(k).or_default();
            *e = (*e).max(v);
        }
    }
    let overhead = amounts(pod.pointer("/spec/overhead"));
    add(&mut requests, &overhead);
    if !limits.is_empty() {
        add(&mut limits, &overhead);
    }
    (requests, limits)
}

/// What compute resources requests and limits use, by quota name.
fn compute_usage(requests: &Amounts, limits: &Amounts) -> Amounts {
    let mut out = Amounts::new();
    for (k, v) in requests {
        match k.as_str() {
            "cpu" | "memory" | "ephemeral-storage" => {
                out.insert(k.clone(), *v);
                out.insert(format!("requests.{k}"), *v);
            }
            h if h.starts_with("hugepages-") => {
                out.insert(format!("requests.{h}"), *v);
            }
            other if !is_native(other) => {
                out.insert(format!("requests.{other}"), *v);
            }
            _ => {}
        }
    }
    for (k, v) in limits {
        if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
            out.insert(format!("limits.{k}"), *v);
        }
    }
    out
}

/// Whether a pod is done with its resources: in a terminal phase (Succeeded, Failed).
fn pod_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded") | Some("Failed")
    )
}

/// What one object of `group`/`resource` uses of quotas.
pub fn usage(group: &str, resource: &str, obj: &Value) -> Amounts {
    let mut out = Amounts::new();
    out.insert(count_name(group, resource), 1000);
    if group.is_empty() {
        for (name, counted) in LEGACY_COUNTS {
            if counted == resource {
                out.insert(name.into(), 1000);
            }
        }
    }
    match (group, resource) {
        ("", "pods") if !pod_terminal(obj) => {
            out.insert("pods".into(), 1000);
            let (requests, limits) = pod_resources(obj);
            out.extend(compute_usage(&requests, &limits));
        }
        ("", "services") => match obj.pointer("/spec/type").and_then(Value::as_str) {
            Some("NodePort") => {
                out.insert("services.nodeports".into(), node_ports(obj));
            }
            Some("LoadBalancer") => {
                out.insert("services.loadbalancers".into(), 1000);
                out.insert("services.nodeports".into(), node_ports(obj));
            }
            _ => {}
        },
        ("", "persistentvolumeclaims") => {
            if let Some(s) = obj
                .pointer("/spec/resources/requests/storage")
                .and_then(Value::as_str)
                .and_then(milli)
            {
                out.insert("requests.storage".into(), s);
                if let Some(class) = obj
                    .pointer("/spec/storageClassName")
                    .and_then(Value::as_str)
                {
                    out.insert(
                        format!("{class}.storageclass.storage.k8s.io/requests.storage"),
                        s,
                    );
                    out.insert(
                        format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
                        1000,
                    );
                }
            }
        }
        _ => {}
    }
    out
}

fn node_ports(svc: &Value) -> i64 {
    let n = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map_or(0, |p| p.len() as i64);
    n * 1000
}

/// Add `b` to `a` (saturating: quantities as large as `9E` parse, and must not overflow).
pub fn add(a: &mut Amounts, b: &Amounts) {
    for (k, v) in b {
        let e = a.entry(k.clone()).or_default();
        *e = e.saturating_add(*v);
    }
}

/// Whether quota `quota` applies to `obj` of `group`/`resource` (its scopes and scope
/// selector; scoped quotas count pods only).
pub fn applies(quota: &Value, group: &str, resource: &str, obj: &Value) -> bool {
    let mut scopes: Vec<(String, &'static str, Vec<String>)> = Vec::new();
    for s in quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        scopes.push((s.to_string(), "Exists", Vec::new()));
    }
    for e in quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let scope = e
            .get("scopeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let op = match e.get("operator").and_then(Value::as_str) {
            Some("In") => "In",
            Some("NotIn") => "NotIn",
            Some("DoesNotExist") => "DoesNotExist",
            _ => "Exists",
        };
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
        scopes.push((scope.to_string(), op, values));
    }
    if scopes.is_empty() {
        return true;
    }
    if !(group.is_empty() && resource == "pods") {
        return false;
    }
    scopes
        .iter()
        .all(|(scope, op, values)| scope_matches(scope, op, values, obj))
}

fn scope_matches(scope: &str, op: &str, values: &[String], pod: &Value) -> bool {
    let holds = match scope {
        "Terminating" => pod.pointer("/spec/activeDeadlineSeconds").is_some(),
        "NotTerminating" => pod.pointer("/spec/activeDeadlineSeconds").is_none(),
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => {
            let class = pod
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str);
            return match op {
                "In" => class.is_some_and(|c| values.iter().any(|v| v == c)),
                "NotIn" => class.is_none_or(|c| !values.iter().any(|v| v == c)),
                "DoesNotExist" => class.is_none_or(str::is_empty),
                _ => class.is_some_and(|c| !c.is_empty()),
            };
        }
        "CrossNamespacePodAffinity" => ["podAffinity", "podAntiAffinity"].iter().any(|a| {
            ["requiredDuringSchedulingIgnoredDuringExecution"]
                .iter()
                .chain(["preferredDuringSchedulingIgnoredDuringExecution"].iter())
                .flat_map(|f| {
                    pod.pointer(&format!("/spec/affinity/{a}/{f}"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .any(|t| {
                    let t = t.get("podAffinityTerm").unwrap_or(t);
                    t.get("namespaceSelector").is_some()
                        || t.get("namespaces")
                            .and_then(Value::as_array)
                            .is_some_and(|n| !n.is_empty())
                })
        }),
        _ => false,
    };
    match op {
        "DoesNotExist" | "NotIn" => !holds,
        _ => holds,
    }
}

/// A pod none of whose containers asks for or is limited in CPU or memory.
fn best_effort(pod: &Value) -> bool {
    containers(pod, "containers")
        .chain(containers(pod, "initContainers"))
        .all(|c| {
            let (r, l) = container_resources(c);
            !["cpu", "memory"]
                .iter()
                .any(|k| r.contains_key(*k) || l.contains_key(*k))
        })
}

/// Why a quota refuses a create.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A container does not declare a resource the quota limits.
    MustSpecify { quota: String, missing: String },
    /// The quota controller has not counted the quota yet.
    StatusUnknown { quota: String, resources: String },
    /// The create would take usage past a limit.
    Exceeded {
        quota: String,
        requested: String,
        used: String,
        limited: String,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::MustSpecify { quota, missing } => {
                write!(f, "failed quota: {quota}: must specify {missing}")
            }
            Refusal::StatusUnknown { quota, resources } => {
                write!(
                    f,
                    "status unknown for quota: {quota}, resources: {resources}"
                )
            }
            Refusal::Exceeded {
                quota,
                requested,
                used,
                limited,
            } => write!(
                f,
                "exceeded quota: {quota}, requested: {requested}, used: {used}, limited: {limited}"
            ),
        }
    }
}

fn pretty(resources: &[&String], of: &Amounts) -> String {
    resources
        .iter()
        .map(|r| format!("{r}={}", format(r, of.get(*r).copied().unwrap_or(0))))
        .collect::<Vec<_>>()
        .join(",")
}

/// Charge a create of `obj` (using `delta`) to `quota`: its new `status.used`, or why not.
/// Only the resources the quota limits are looked at.
pub fn charge(quota: &Value, obj: &Value, pod: bool, delta: &Amounts) -> Result<Amounts, Refusal> {
    let name = quota
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let hard = amounts(quota.pointer("/status/hard"));
    let spec_hard = amounts(quota.pointer("/spec/hard"));
    let mut used = amounts(quota.pointer("/status/used"));
    let limited: Vec<&String> = spec_hard
        .keys()
        .filter(|k| delta.contains_key(*k))
        .collect();
    if pod {
        let required: Vec<&str> = DECLARED
            .iter()
            .copied()
            .filter(|r| spec_hard.contains_key(*r))
            .collect();
        let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for c in containers(obj, "containers").chain(containers(obj, "initContainers")) {
            let (r, l) = container_resources(c);
            let declared = compute_usage(&r, &l);
            for req in &required {
                if !declared.contains_key(*req) {
                    missing
                        .entry(req)
                        .or_default()
                        .push(c.get("name").and_then(Value::as_str).unwrap_or("").into());
                }
            }
        }
        if !missing.is_empty() {
            let missing = missing
                .iter()
                .map(|(r, cs)| format!("{r} for: {}", cs.join(",")))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Refusal::MustSpecify {
                quota: name,
                missing,
            });
        }
    }
    if limited.is_empty() {
        return Ok(used);
    }
    let unknown: Vec<&String> = limited
        .iter()
        .copied()
        .filter(|r| !hard.contains_key(*r) || !used.contains_key(*r))
        .collect();
    if !unknown.is_empty() {
        return Err(Refusal::StatusUnknown {
            quota: name,
            resources: unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
        });
    }
    let exceeded: Vec<&String> = limited
        .iter()
        .copied()
        .filter(|r| {
            let d = delta.get(*r).copied().unwrap_or(0);
            d > 0
                && used.get(*r).copied().unwrap_or(0).saturating_add(d)
                    > hard.get(*r).copied().unwrap_or(0)
        })
        .collect();
    if !exceeded.is_empty() {
        return Err(Refusal::Exceeded {
            quota: name,
            requested: pretty(&exceeded, delta),
            used: pretty(&exceeded, &used),
            limited: pretty(&exceeded, &hard),
        });
    }
    for r in limited {
        let e = used.entry(r.clone()).or_default();
        *e = e.saturating_add(delta.get(r).copied().unwrap_or(0));
    }
    Ok(used)
}

/// What `objects` (of `group`/`resource`) use of the resources `quota` limits.
pub fn used_by<'a>(
    quota: &Value,
    group: &str,
    resource: &str,
    objects: impl IntoIterator<Item = &'a Value>,
) -> Amounts {
    let hard = amounts(quota.pointer("/spec/hard"));
    let mut used = Amounts::new();
    for o in objects {
        if !applies(quota, group, resource, o) {
            continue;
        }
        for (k, v) in usage(group, resource, o) {
            if hard.contains_key(&k) {
                let e = used.entry(k).or_default();
                *e = e.saturating_add(v);
            }
        }
    }
    used
}

/// The resources that objects of `group`/`resource` can use (to know which kinds a quota
/// needs counted).
pub fn counts_resource(hard_key: &str, group: &str, resource: &str) -> bool {
    if hard_key == count_name(group, resource) {
        return true;
    }
    if !group.is_empty() {
        return false;
    }
    match resource {
        "pods" => {
            hard_key == "pods"
                || DECLARED.contains(&hard_key)
                || hard_key == "ephemeral-storage"
                || hard_key.starts_with("requests.")
                || hard_key.starts_with("limits.")
        }
        "services" => {
            hard_key == "services"
                || hard_key == "services.nodeports"
                || hard_key == "services.loadbalancers"
        }
        "persistentvolumeclaims" => {
            hard_key == "persistentvolumeclaims"
                || hard_key == "requests.storage"
                || hard_key.contains(".storageclass.storage.k8s.io/")
        }
        r => LEGACY_COUNTS.iter().any(|(n, c)| *n == hard_key && *c == r),
    }
}

/// Validate a ResourceQuota's spec: quantities that parse and are not negative, scopes
/// Kubernetes knows, and scoped quotas limiting only what scopes can count.
pub fn validate(obj: &Value, causes: &mut Vec<crate::error::Cause>) {
    use crate::error::Cause;
    for field in ["spec/hard", "status/hard", "status/used"] {
        if let Some(m) = obj.pointer(&format!("/{field}")).and_then(Value::as_object) {
            for (k, v) in m {
                let path = format!("{}[{k}]", field.replace('/', "."));
                match v.as_str().and_then(milli) {
                    None => causes.push(Cause::invalid(
                        path,
                        &v.as_str().map_or_else(|| v.to_string(), String::from),
                        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                    )),
                    Some(n) if n < 0 => causes.push(Cause::invalid(
                        path,
                        v.as_str().unwrap_or_default(),
                        "must be greater than or equal to 0",
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    const SCOPES: [&str; 6] = [
        "Terminating",
        "NotTerminating",
        "BestEffort",
        "NotBestEffort",
        "PriorityClass",
        "CrossNamespacePodAffinity",
    ];
    let mut named = Vec::new();
    for (i, s) in obj
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let s = s.as_str().unwrap_or_default();
        if !SCOPES.contains(&s) {
            causes.push(Cause::not_supported(
                format!("spec.scopes[{i}]"),
                s,
                &SCOPES,
            ));
        }
        named.push(s.to_string());
    }
    for (i, e) in obj
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let s = e
            .get("scopeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !SCOPES.contains(&s) {
            causes.push(Cause::not_supported(
                format!("spec.scopeSelector.matchExpressions[{i}].scopeName"),
                s,
                &SCOPES,
            ));
        }
        let op = e
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default();
        const OPS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];
        if !OPS.contains(&op) {
            causes.push(Cause::not_supported(
                format!("spec.scopeSelector.matchExpressions[{i}].operator"),
                op,
                &OPS,
            ));
        }
        named.push(s.to_string());
    }
    if named.iter().any(|s| s == "BestEffort") && named.iter().any(|s| s == "NotBestEffort") {
        causes.push(Cause::invalid(
            "spec.scopes",
            "BestEffort, NotBestEffort",
            "conflicting scopes",
        ));
    }
    if named.iter().any(|s| s == "Terminating") && named.iter().any(|s| s == "NotTerminating") {
        causes.push(Cause::invalid(
            "spec.scopes",
            "Terminating, NotTerminating",
            "conflicting scopes",
        ));
    }
    if !named.is_empty()
        && let Some(hard) = obj.pointer("/spec/hard").and_then(Value::as_object)
    {
        for k in hard.keys() {
            if !counts_resource(k, "", "pods") {
                causes.push(Cause::invalid(
                    format!("spec.hard[{k}]"),
                    k,
                    "unsupported scope applied to resource",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    fn quota(hard: Value, used: Option<Value>) -> Value {
        let mut q = json!({"metadata": {"name": "grant"}, "spec": {"hard": hard.clone()}});
        if let Some(u) = used {
            q["status"] = json!({"hard": hard, "used": u});
        }
        q
    }

    #[test]
    fn quantities_read_and_print_in_milli_units() {
        for (resource, q, v, printed) in [
            ("requests.cpu", "500m", 500, "500m"),
            ("requests.cpu", "2", 2000, "2"),
            ("requests.memory", "1Gi", (1i64 << 30) * 1000, "1Gi"),
            ("memory", "1536Mi", 1536 * (1i64 << 20) * 1000, "1536Mi"),
            ("pods", "10", 10_000, "10"),
            ("requests.storage", "1G", 1_000_000_000_000, "1000000000"),
        ] {
            assert_eq!(milli(q), Some(v), "{q}");
            assert_eq!(format(resource, v), printed, "{resource} {v}");
        }
    }

    #[test]
    fn a_pod_uses_the_sum_of_its_containers_at_least_its_largest_init_container() {
        let mut p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "200m", "nvidia.com/gpu": "1"}}},
        ]));
        p["spec"]["initContainers"] =
            json!([{"name": "i", "resources": {"requests": {"cpu": "1"}}}]);
        let u = usage("", "pods", &p);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(u["requests.cpu"], 1000, "init container's 1 CPU beats 300m");
        assert_eq!(u["cpu"], 1000);
        assert_eq!(u["limits.cpu"], 200);
        assert_eq!(u["requests.memory"], 64 * (1 << 20) * 1000);
        assert_eq!(
            u["requests.nvidia.com/gpu"], 1000,
            "a limit stands in for a request"
        );
        assert!(!u.contains_key("limits.memory"));

        p["status"] = json!({"phase": "Succeeded"});
        let done = usage("", "pods", &p);
        assert_eq!(done.get("pods"), None, "a finished pod uses no compute");
        assert_eq!(done["count/pods"], 1000, "but it is still an object");
    }

    #[test]
    fn objects_count_by_their_count_name_and_legacy_name() {
        let svc = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage("", "services", &svc);
        assert_eq!(u["services"], 1000);
        assert_eq!(u["count/services"], 1000);
        assert_eq!(u["services.loadbalancers"], 1000);
        assert_eq!(u["services.nodeports"], 2000);
        let u = usage("apps", "deployments", &json!({}));
        assert_eq!(u.keys().collect::<Vec<_>>(), ["count/deployments.apps"]);
        let pvc = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}});
        let u = usage("", "persistentvolumeclaims", &pvc);
        assert_eq!(u["requests.storage"], (1i64 << 30) * 1000);
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/persistentvolumeclaims"],
            1000
        );
    }

    #[test]
    fn creates_fit_or_are_refused_as_kubernetes_says() {
        let web = pod(
            json!([{"name": "web", "resources": {"requests": {"cpu": "600m", "memory": "100Mi"}}}]),
        );
        let bare = pod(json!([{"name": "web"}, {"name": "side"}]));
        let hard = json!({"requests.cpu": "1", "pods": "2"});
        type Case<'a> = (
            &'a str,
            Value,
            &'a Value,
            Result<Vec<(&'a str, i64)>, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "fits and is charged",
                quota(
                    hard.clone(),
                    Some(json!({"requests.cpu": "0", "pods": "0"})),
                ),
                &web,
                Ok(vec![("pods", 1000), ("requests.cpu", 600)]),
            ),
            (
                "over the CPU limit",
                quota(
                    hard.clone(),
                    Some(json!({"requests.cpu": "600m", "pods": "1"})),
                ),
                &web,
                Err(
                    "exceeded quota: grant, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1",
                ),
            ),
            (
                "not counted yet",
                quota(hard.clone(), None),
                &web,
                Err("status unknown for quota: grant, resources: pods,requests.cpu"),
            ),
            (
                "containers must declare what is limited",
                quota(
                    hard.clone(),
                    Some(json!({"requests.cpu": "0", "pods": "0"})),
                ),
                &bare,
                Err("failed quota: grant: must specify requests.cpu for: web,side"),
            ),
            (
                "a quota on something else lets it through unchanged",
                quota(
                    json!({"count/secrets": "1"}),
                    Some(json!({"count/secrets": "1"})),
                ),
                &bare,
                Ok(vec![("count/secrets", 1000)]),
            ),
        ];
        for (what, q, obj, want) in cases {
            let delta = usage("", "pods", obj);
            let got = charge(&q, obj, true, &delta).map_err(|r| r.to_string());
            match want {
                Ok(used) => {
                    let used: Amounts = used.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                    assert_eq!(got, Ok(used), "{what}");
                }
                Err(msg) => assert_eq!(got, Err(msg.to_string()), "{what}"),
            }
        }
    }

    #[test]
    fn huge_quantities_saturate_instead_of_overflowing() {
        let huge = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "9E", "memory": "9E"}}},
            {"name": "b", "resources": {"requests": {"cpu": "9E", "memory": "9E"}}},
        ]));
        let q = quota(
            json!({"requests.cpu": "1"}),
            Some(json!({"requests.cpu": "9E"})),
        );
        let delta = usage("", "pods", &huge);
        assert_eq!(delta["requests.cpu"], i64::MAX);
        assert!(matches!(
            charge(&q, &huge, true, &delta),
            Err(Refusal::Exceeded { .. })
        ));
    }

    #[test]
    fn scopes_choose_the_pods_a_quota_counts() {
        let best_effort = pod(json!([{"name": "a"}]));
        let mut burstable = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
        burstable["spec"]["priorityClassName"] = json!("high");
        burstable["spec"]["activeDeadlineSeconds"] = json!(60);
        let scoped = |scopes: Value| json!({"spec": {"hard": {"pods": "1"}, "scopes": scopes}});
        let selected = |op: &str, values: Value| {
            json!({"spec": {"hard": {"pods": "1"},
            "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": op, "values": values}]}}})
        };
        for (what, q, on_best_effort, on_burstable) in [
            (
                "no scope",
                json!({"spec": {"hard": {"pods": "1"}}}),
                true,
                true,
            ),
            ("BestEffort", scoped(json!(["BestEffort"])), true, false),
            (
                "NotBestEffort",
                scoped(json!(["NotBestEffort"])),
                false,
                true,
            ),
            ("Terminating", scoped(json!(["Terminating"])), false, true),
            (
                "NotTerminating",
                scoped(json!(["NotTerminating"])),
                true,
                false,
            ),
            (
                "PriorityClass In",
                selected("In", json!(["high"])),
                false,
                true,
            ),
            (
                "PriorityClass NotIn",
                selected("NotIn", json!(["high"])),
                true,
                false,
            ),
            (
                "PriorityClass Exists",
                selected("Exists", json!([])),
                false,
                true,
            ),
            (
                "PriorityClass DoesNotExist",
                selected("DoesNotExist", json!([])),
                true,
                false,
            ),
        ] {
            assert_eq!(
                applies(&q, "", "pods", &best_effort),
                on_best_effort,
                "{what}"
            );
            assert_eq!(applies(&q, "", "pods", &burstable), on_burstable, "{what}");
        }
        assert!(!applies(
            &scoped(json!(["BestEffort"])),
            "",
            "secrets",
            &json!({})
        ));
    }

    #[test]
    fn quota_specs_are_validated() {
        let cases = [
            (
                json!({"spec": {"hard": {"pods": "10", "requests.cpu": "2"}}}),
                0,
            ),
            (json!({"spec": {"hard": {"pods": "ten"}}}), 1),
            (json!({"spec": {"hard": {"pods": "-1"}}}), 1),
            (
                json!({"spec": {"hard": {"pods": "1"}, "scopes": ["Sometimes"]}}),
                1,
            ),
            (
                json!({"spec": {"hard": {"pods": "1"}, "scopes": ["BestEffort", "NotBestEffort"]}}),
                1,
            ),
            (
                json!({"spec": {"hard": {"secrets": "1"}, "scopes": ["BestEffort"]}}),
                1,
            ),
        ];
        for (q, errors) in cases {
            let mut causes = Vec::new();
            validate(&q, &mut causes);
            assert_eq!(causes.len(), errors, "{q}: {causes:?}");
        }
    }
}
