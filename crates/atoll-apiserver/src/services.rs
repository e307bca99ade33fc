//! Kind hooks that need server state or run on create: ClusterIP allocation for Services, the
//! initial status of Namespaces and Pods, `stringData` of Secrets.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::ApiServer;
use crate::error::{ApiError, ApiResult, Cause};
use crate::object::decode_stored;
use crate::registry::ResourceType;

fn is(rt: &ResourceType, group: &str, resource: &str) -> bool {
    rt.group == group && rt.resource == resource
}

/// Allocates Service ClusterIPs from `--service-cidr`; an IP is free again when its Service is
/// deleted. The allocation table is rebuilt from the stored Services at start.
pub struct ClusterIpAllocator {
    base: u32,
    size: u32,
    used: Mutex<HashSet<u32>>,
}

impl ClusterIpAllocator {
    pub fn new(cidr: &str) -> Result<ClusterIpAllocator, String> {
        let (ip, bits) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not a CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let bits: u32 = bits
            .parse()
            .map_err(|_| format!("{bits:?} is not a prefix length"))?;
        if !(8..=28).contains(&bits) {
            return Err(format!("prefix length /{bits} must be between /8 and /28"));
        }
        let size = 1u32 << (32 - bits);
        let base = u32::from(ip) & !(size - 1);
        Ok(ClusterIpAllocator {
            base,
            size,
            used: Mutex::new(HashSet::new()),
        })
    }

    fn used(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let x = u32::from(ip);
        x > self.base && x < self.base + self.size - 1
    }

    /// A free address; the network address, the first address (reserved for the
    /// `kubernetes` Service) and the broadcast address are never handed out. As
    /// kube-apiserver (KEP-3070), addresses are taken from above the range's lower band
    /// while any is free there, so addresses Services ask for by number (the tenth, the
    /// cluster DNS's) stay free for them.
    pub fn allocate(&self) -> Option<Ipv4Addr> {
        let mut used = self.used();
        let seed = uuid::Uuid::new_v4().as_u128() as u32;
        let lower = self.static_band();
        let bands = [
            (self.base + lower, self.size - 1 - lower),
            (self.base + 2, lower - 2),
        ];
        for (first, span) in bands {
            for i in 0..span {
                let ip = first + (seed.wrapping_add(i) % span);
                if used.insert(ip) {
                    return Some(Ipv4Addr::from(ip));
                }
            }
        }
        None
    }

    /// The size of the lower band, from the range's start: a sixteenth of the range, at
    /// least 16 and at most 256 addresses (kube-apiserver's rule), never more than half.
    fn static_band(&self) -> u32 {
        (self.size / 16).clamp(16, 256).min(self.size / 2)
    }

    /// The range's first address: the `kubernetes` Service's.
    pub fn first(&self) -> Option<Ipv4Addr> {
        (self.size > 2).then(|| Ipv4Addr::from(self.base + 1))
    }

    pub fn allocate_specific(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && self.used().insert(u32::from(ip))
    }

    pub fn release(&self, ip: &str) {
        if let Ok(ip) = ip.parse::<Ipv4Addr>() {
            self.used().remove(&u32::from(ip));
        }
    }

    pub fn load(&self, server: &ApiServer) -> ApiResult<()> {
        let snapshot = server.registry.snapshot();
        let Some(rt) = snapshot.get("", "v1", "services") else {
            return Ok(());
        };
        let page = server.store.list(&rt.key_prefix(), None, 0, None)?;
        for (_, entry) in &page.items {
            let svc = decode_stored(rt, entry)?;
            if let Some(ip) = svc
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
            {
                self.allocate_specific(ip);
            }
        }
        Ok(())
    }
}

/// Defaults a kind sets on create before validation.
pub fn prepare_create(rt: &ResourceType, obj: &mut Value) {
    if is(rt, "", "namespaces") {
        obj["status"] = json!({"phase": "Active"});
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        namespace_name_label(obj);
    } else if is(rt, "", "pods") {
        obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        if obj.pointer("/spec/restartPolicy").is_none()
            && obj.get("spec").is_some_and(Value::is_object)
        {
            obj["spec"]["restartPolicy"] = json!("Always");
        }
    } else if is(rt, "", "persistentvolumeclaims") {
        obj["status"] = json!({"phase": "Pending"});
    } else if is(rt, "", "persistentvolumes") {
        obj["status"] = json!({"phase": "Available"});
    } else if is(rt, "", "services") {
        if obj.get("spec").is_some_and(Value::is_object) {
            if obj.pointer("/spec/type").is_none() {
                obj["spec"]["type"] = json!("ClusterIP");
            }
            if obj.pointer("/spec/sessionAffinity").is_none() {
                obj["spec"]["sessionAffinity"] = json!("None");
            }
            if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports {
                    if p.get("protocol").is_none() {
                        p["protocol"] = json!("TCP");
                    }
                    if p.get("targetPort").is_none() {
                        p["targetPort"] = p.get("port").cloned().unwrap_or_default();
                    }
                    // 0 means "not set" (protobuf clients send it); only NodePort services get one.
                    if p.get("nodePort").and_then(Value::as_i64) == Some(0)
                        && let Some(m) = p.as_object_mut()
                    {
                        m.remove("nodePort");
                    }
                }
            }
        }
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
        obj["status"] = json!({"loadBalancer": {}});
    }
    if is(rt, "", "secrets") {
        string_data(obj);
        if obj.get("type").is_none_or(|t| t.is_null() || t == "") {
            obj["type"] = json!("Opaque");
        }
    }
    if rt.kind == "Deployment" || rt.kind == "ReplicaSet" || rt.kind == "ReplicationController" {
        if obj.get("spec").is_some_and(Value::is_object) && obj.pointer("/spec/replicas").is_none()
        {
            obj["spec"]["replicas"] = json!(1);
        }
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
}

/// Defaults of built-in kinds, applied on every write as kube-apiserver's decoder does (they
/// are idempotent): the ones controllers and clients rely on.
pub fn apply_defaults(rt: &ResourceType, obj: &mut Value) {
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "pods") => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
            }
        }
        ("apps", "deployments") => {
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            default_field(spec, "replicas", json!(1));
            default_field(spec, "revisionHistoryLimit", json!(10));
            default_field(spec, "progressDeadlineSeconds", json!(600));
            default_field(spec, "strategy", json!({}));
            default_field(&mut spec["strategy"], "type", json!("RollingUpdate"));
            if spec["strategy"]["type"] == "RollingUpdate" {
                default_field(&mut spec["strategy"], "rollingUpdate", json!({}));
                default_field(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
                default_field(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxSurge",
                    json!("25%"),
                );
            }
            if let Some(pod) = spec.pointer_mut("/template/spec") {
                default_pod_spec(pod);
            }
        }
        ("batch", "cronjobs") => {
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            default_field(spec, "concurrencyPolicy", json!("Allow"));
            default_field(spec, "suspend", json!(false));
            default_field(spec, "successfulJobsHistoryLimit", json!(3));
            default_field(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(pod) = spec.pointer_mut("/jobTemplate/spec/template/spec") {
                default_job_pod_spec(pod);
            }
        }
        ("batch", "jobs") => {
            let uid = obj
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            // One pod to one completion unless told otherwise; without completions, pods
            // work a queue until one succeeds.
            if spec.get("completions").is_none_or(Value::is_null)
                && spec.get("parallelism").is_none_or(Value::is_null)
            {
                spec["completions"] = json!(1);
            }
            default_field(spec, "parallelism", json!(1));
            default_field(spec, "backoffLimit", json!(6));
            default_field(spec, "completionMode", json!("NonIndexed"));
            default_field(spec, "suspend", json!(false));
            // The selector and pod labels come from the Job's uid (unless `manualSelector`),
            // so `kubectl logs job/NAME` and `-l job-name=NAME` find its pods.
            let manual = spec.get("manualSelector") == Some(&json!(true));
            if !manual && !uid.is_empty() && spec.get("selector").is_none_or(Value::is_null) {
                spec["selector"] =
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                if spec
                    .pointer("/template/metadata")
                    .is_none_or(|m| !m.is_object())
                    && spec.get("template").is_some_and(Value::is_object)
                {
                    spec["template"]["metadata"] = json!({});
                }
                if let Some(meta) = spec.pointer_mut("/template/metadata") {
                    default_field(meta, "labels", json!({}));
                    for (k, v) in [
                        ("batch.kubernetes.io/controller-uid", &uid),
                        ("batch.kubernetes.io/job-name", &name),
                        ("controller-uid", &uid),
                        ("job-name", &name),
                    ] {
                        meta["labels"][k] = json!(v);
                    }
                }
            }
            if let Some(pod) = spec.pointer_mut("/template/spec") {
                default_job_pod_spec(pod);
            }
        }
        ("apps", "statefulsets") => {
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            default_field(spec, "replicas", json!(1));
            default_field(spec, "podManagementPolicy", json!("OrderedReady"));
            default_field(spec, "revisionHistoryLimit", json!(10));
            default_field(spec, "updateStrategy", json!({}));
            default_field(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                default_field(&mut spec["updateStrategy"], "rollingUpdate", json!({}));
                default_field(
                    &mut spec["updateStrategy"]["rollingUpdate"],
                    "partition",
                    json!(0),
                );
            }
            if let Some(pod) = spec.pointer_mut("/template/spec") {
                default_pod_spec(pod);
            }
        }
        ("apps", "daemonsets") => {
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            default_field(spec, "revisionHistoryLimit", json!(10));
            default_field(spec, "updateStrategy", json!({}));
            default_field(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                default_field(&mut spec["updateStrategy"], "rollingUpdate", json!({}));
                let rolling = &mut spec["updateStrategy"]["rollingUpdate"];
                default_field(rolling, "maxUnavailable", json!(1));
                default_field(rolling, "maxSurge", json!(0));
            }
            if let Some(pod) = spec.pointer_mut("/template/spec") {
                default_pod_spec(pod);
            }
        }
        ("apps", "replicasets") => {
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            default_field(spec, "replicas", json!(1));
            if let Some(pod) = spec.pointer_mut("/template/spec") {
                default_pod_spec(pod);
            }
        }
        ("", "replicationcontrollers") => {
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            default_field(spec, "replicas", json!(1));
            // As kube-apiserver: no selector means the template's labels (and no labels on
            // the controller means its selector's).
            if spec
                .get("selector")
                .is_none_or(|s| s.is_null() || s.as_object().is_some_and(|m| m.is_empty()))
                && let Some(labels) = spec.pointer("/template/metadata/labels").cloned()
            {
                spec["selector"] = labels;
            }
            if let Some(pod) = spec.pointer_mut("/template/spec") {
                default_pod_spec(pod);
            }
            let selector = obj.pointer("/spec/selector").cloned();
            if obj.pointer("/metadata/labels").is_none_or(|l| l.is_null())
                && let (Some(sel), Some(meta)) = (selector, obj.get_mut("metadata"))
            {
                meta["labels"] = sel;
            }
        }
        _ => {}
    }
}

/// Set `field` when it is missing, null or "".
fn default_field(obj: &mut Value, field: &str, value: Value) {
    if let Some(m) = obj.as_object_mut() {
        let missing = m.get(field).is_none_or(|v| v.is_null() || v == "");
        if missing {
            m.insert(field.to_string(), value);
        }
    }
}

/// A Job's pod template: the pod defaults, but a restart policy is required, not defaulted
/// (a Job's pods do not restart forever).
fn default_job_pod_spec(pod: &mut Value) {
    let policy = pod.get("restartPolicy").cloned();
    default_pod_spec(pod);
    match policy {
        Some(p) => pod["restartPolicy"] = p,
        None => {
            if let Some(m) = pod.as_object_mut() {
                m.remove("restartPolicy");
            }
        }
    }
}

fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default_field(spec, "restartPolicy", json!("Always"));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    default_field(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let tag = image.rsplit('/').next().unwrap_or_default();
            let latest = !tag.contains(':') || tag.ends_with(":latest");
            let pull = if latest && !image.contains('@') {
                "Always"
            } else {
                "IfNotPresent"
            };
            default_field(c, "imagePullPolicy", json!(pull));
            default_field(c, "terminationMessagePath", json!("/dev/termination-log"));
            default_field(c, "terminationMessagePolicy", json!("File"));
            for p in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                default_field(p, "protocol", json!("TCP"));
            }
        }
    }
}

/// `stringData` is write-only: merged into `data` as base64.
pub fn string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    if let Some(sd) = sd.as_object() {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            let raw = v.as_str().unwrap_or_default();
            obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
        }
    }
}

/// Defaults a kind sets on update: values the server allocated are kept when the client
/// leaves them out (as `kubectl apply` and `replace` do), and `stringData` is folded in.
pub fn prepare_update(rt: &ResourceType, old: &Value, new: &mut Value) {
    if is(rt, "", "services") && new.get("spec").is_some_and(Value::is_object) {
        for f in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "type",
            "sessionAffinity",
        ] {
            let missing = new
                .pointer(&format!("/spec/{f}"))
                .is_none_or(|v| v.is_null() || v == "");
            if missing && let Some(v) = old.pointer(&format!("/spec/{f}")) {
                new["spec"][f] = v.clone();
            }
        }
    }
    if is(rt, "", "secrets") {
        string_data(new);
    }
    if is(rt, "", "namespaces") {
        namespace_name_label(new);
    }
}

/// Every namespace carries `kubernetes.io/metadata.name: <name>`, set by the server whatever
/// the client sends, as kube-apiserver does (selectors of webhooks and network policies use it).
fn namespace_name_label(obj: &mut Value) {
    let Some(name) = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(String::from)
    else {
        return;
    };
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels["kubernetes.io/metadata.name"] = json!(name);
}

/// Allocate a ClusterIP for a new Service; returns the address to release if the create fails.
pub fn allocate(
    server: &ApiServer,
    rt: &ResourceType,
    obj: &mut Value,
    _dry_run: bool,
) -> ApiResult<Option<String>> {
    if !is(rt, "", "services") {
        return Ok(None);
    }
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return Ok(None);
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let requested = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ip = match requested.as_str() {
        "None" => {
            // As kube-apiserver on a single-stack cluster: a headless Service has the
            // cluster's family; one without a selector may take every family the cluster has.
            obj["spec"]["clusterIPs"] = json!(["None"]);
            if obj.pointer("/spec/ipFamilies").is_none_or(Value::is_null) {
                obj["spec"]["ipFamilies"] = json!(["IPv4"]);
            }
            if obj
                .pointer("/spec/ipFamilyPolicy")
                .is_none_or(Value::is_null)
            {
                let selector = obj
                    .pointer("/spec/selector")
                    .and_then(Value::as_object)
                    .is_some_and(|m| !m.is_empty());
                obj["spec"]["ipFamilyPolicy"] = json!(if selector {
                    "SingleStack"
                } else {
                    "RequireDualStack"
                });
            }
            return Ok(None);
        }
        "" => server.cluster_ips.allocate().ok_or_else(|| {
            ApiError::invalid(
                "",
                "Service",
                &name,
                vec![Cause::invalid(
                    "spec.clusterIPs",
                    "",
                    "failed to allocate IP: range is full",
                )],
            )
        })?,
        other => {
            let ip: Ipv4Addr = other.parse().map_err(|_| {
                ApiError::invalid(
                    "",
                    "Service",
                    &name,
                    vec![Cause::invalid(
                        "spec.clusterIPs",
                        other,
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )],
                )
            })?;
            if !server.cluster_ips.contains(ip) {
                return Err(ApiError::invalid(
                    "",
                    "Service",
                    &name,
                    vec![Cause::invalid(
                        "spec.clusterIPs",
                        other,
                        &format!(
                            "failed to allocate IP {other}: provided IP is not in the valid range. The range of valid IPs is {}",
                            server.config.service_cidr
                        ),
                    )],
                ));
            }
            if !server.cluster_ips.allocate_specific(ip) {
                return Err(ApiError::invalid(
                    "",
                    "Service",
                    &name,
                    vec![Cause::invalid(
                        "spec.clusterIPs",
                        other,
                        &format!("failed to allocate IP {other}: provided IP is already allocated"),
                    )],
                ));
            }
            ip
        }
    };
    let s = ip.to_string();
    obj["spec"]["clusterIP"] = json!(s);
    obj["spec"]["clusterIPs"] = json!([s]);
    obj["spec"]["ipFamilies"] = json!(["IPv4"]);
    obj["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    Ok(Some(s))
}

/// Release what an object held once it is gone.
pub fn release(server: &ApiServer, rt: &ResourceType, obj: &Value) {
    if is(rt, "", "services")
        && let Some(ip) = obj.pointer("/spec/clusterIP").and_then(Value::as_str)
    {
        server.cluster_ips.release(ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_addresses_leave_the_lower_band_until_the_rest_is_taken() {
        for (cidr, lower) in [
            ("127.1.0.0/24", 16),
            ("10.96.0.0/20", 256),
            ("10.0.0.0/28", 8),
        ] {
            let a = ClusterIpAllocator::new(cidr).expect("a CIDR");
            let base = a.base;
            let total = a.size - 3;
            let mut seen = HashSet::new();
            for n in 0..total {
                let ip = u32::from(a.allocate().expect("a free address"));
                assert!(ip > base + 1 && ip < base + a.size - 1, "{cidr}: {ip}");
                // The lower band is used only once the upper one is full.
                if n < a.size - 1 - lower {
                    assert!(
                        ip >= base + lower,
                        "{cidr}: {n}th address in the lower band"
                    );
                }
                assert!(seen.insert(ip), "{cidr}: {ip} handed out twice");
            }
            assert_eq!(a.allocate(), None, "{cidr}");
            // The tenth address (the cluster DNS's) is in the lower band of ranges of 256
            // addresses and more.
            if lower > 10 {
                let b = ClusterIpAllocator::new(cidr).expect("a CIDR");
                for _ in 0..100 {
                    let _ = b.allocate();
                }
                assert!(b.allocate_specific(Ipv4Addr::from(base + 10)), "{cidr}");
            }
        }
    }
}
