//! Pod Security admission, as kube-apiserver's `PodSecurity` plugin: a namespace's
//! `pod-security.kubernetes.io/{enforce,warn,audit}` labels name a level of the Pod Security
//! Standards (`privileged`, `baseline`, `restricted`); pods that break the enforced level are
//! refused, and pods (or workload templates) that break the warned level get a warning. The
//! checks are the standards' current ("latest") version; the messages are kube-apiserver's.
//! Pure functions over the pod spec.

use serde_json::Value;

pub const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
pub const WARN: &str = "pod-security.kubernetes.io/warn";
pub const AUDIT: &str = "pod-security.kubernetes.io/audit";
const LEVELS: [&str; 3] = ["privileged", "baseline", "restricted"];

/// A level of the Pod Security Standards, from least to most restrictive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        LEVELS[self as usize]
    }
}

/// The level a namespace's label names (`mode` is `enforce` or `warn`), with the version
/// the message quotes; unset or unreadable labels mean `privileged`.
pub fn namespace_level(namespace: &Value, label: &str) -> (Level, String) {
    let labels = namespace.pointer("/metadata/labels");
    let level = labels
        .and_then(|l| l.get(label))
        .and_then(Value::as_str)
        .and_then(Level::parse)
        .unwrap_or(Level::Privileged);
    let version = labels
        .and_then(|l| l.get(format!("{label}-version")))
        .and_then(Value::as_str)
        .unwrap_or("latest")
        .to_string();
    (level, version)
}

/// Namespace label checks (kube-apiserver refuses a namespace whose labels it cannot read).
pub fn validate_namespace(ns: &Value, causes: &mut Vec<crate::error::Cause>) {
    use crate::error::Cause;
    let Some(labels) = ns.pointer("/metadata/labels").and_then(Value::as_object) else {
        return;
    };
    for mode in [ENFORCE, WARN, AUDIT] {
        if let Some(v) = labels.get(mode).and_then(Value::as_str)
            && Level::parse(v).is_none()
        {
            causes.push(Cause::not_supported(
                format!("metadata.labels[{mode}]"),
                v,
                &LEVELS,
            ));
        }
        if let Some(v) = labels
            .get(&format!("{mode}-version"))
            .and_then(Value::as_str)
            && !valid_version(v)
        {
            causes.push(Cause::invalid(
                format!("metadata.labels[{mode}-version]"),
                v,
                "must be \"latest\" or \"v1.<minor>\"",
            ));
        }
    }
}

fn valid_version(v: &str) -> bool {
    v == "latest"
        || v.strip_prefix("v1.")
            .is_some_and(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
}

/// A container with where it sits, for the messages.
struct Container<'a> {
    name: &'a str,
    c: &'a Value,
}

fn all_containers(spec: &Value) -> Vec<Container<'_>> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|f| spec.get(*f).and_then(Value::as_array).into_iter().flatten())
        .map(|c| Container {
            name: c.get("name").and_then(Value::as_str).unwrap_or(""),
            c,
        })
        .collect()
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase(names: &[&str]) -> String {
    if names.len() == 1 {
        format!("container {}", quoted(names))
    } else {
        format!("containers {}", quoted(names))
    }
}

fn verb(names: &[&str], one: &str, many: &str) -> String {
    if names.len() == 1 { one } else { many }.to_string()
}

const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Per container, the capabilities it adds beyond what `allowed` lets through, as the
/// standards' message says them.
fn added_capabilities(cs: &[Container<'_>], allowed: impl Fn(&str) -> bool) -> Vec<String> {
    cs.iter()
        .filter_map(|c| {
            let added: Vec<String> =
                c.c.pointer("/securityContext/capabilities/add")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|cap| !allowed(cap))
                    .map(|cap| format!("{cap:?}"))
                    .collect();
            (!added.is_empty()).then(|| {
                format!(
                    "container {:?} must not include {} in securityContext.capabilities.add",
                    c.name,
                    added.join(", ")
                )
            })
        })
        .collect()
}

/// What a pod spec (with the pod's metadata, for AppArmor annotations) breaks of `level`:
/// one entry per check, as `"<check> (<details>)"`, in the standards' order.
pub fn violations(level: Level, metadata: &Value, spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    let cs = all_containers(spec);
    let sc = |c: &Value, f: &str| c.pointer(&format!("/securityContext/{f}")).cloned();
    let pod_sc = |f: &str| spec.pointer(&format!("/securityContext/{f}")).cloned();

    // Baseline.
    let host: Vec<&str> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|f| spec.get(*f).and_then(Value::as_bool) == Some(true))
        .collect();
    if !host.is_empty() {
        let list: Vec<String> = host.iter().map(|h| format!("{h}=true")).collect();
        out.push(format!("host namespaces ({})", list.join(", ")));
    }
    let privileged: Vec<&str> = cs
        .iter()
        .filter(|c| sc(c.c, "privileged").and_then(|v| v.as_bool()) == Some(true))
        .map(|c| c.name)
        .collect();
    if !privileged.is_empty() {
        out.push(format!(
            "privileged ({} {} not set securityContext.privileged=true)",
            containers_phrase(&privileged),
            "must"
        ));
    }
    let caps = added_capabilities(&cs, |cap| BASELINE_CAPABILITIES.contains(&cap));
    if !caps.is_empty() {
        out.push(format!("non-default capabilities ({})", caps.join("; ")));
    }
    let volumes: Vec<&Value> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let host_paths: Vec<&str> = volumes
        .iter()
        .filter(|v| v.get("hostPath").is_some())
        .map(|v| v.get("name").and_then(Value::as_str).unwrap_or(""))
        .collect();
    if !host_paths.is_empty() {
        out.push(format!(
            "hostPath {} ({} {})",
            verb(&host_paths, "volume", "volumes"),
            verb(&host_paths, "volume", "volumes"),
            quoted(&host_paths)
        ));
    }
    let mut ports = Vec::new();
    for c in &cs {
        let used: Vec<String> =
            c.c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
                .filter(|p| *p != 0)
                .map(|p| p.to_string())
                .collect();
        if !used.is_empty() {
            ports.push(format!(
                "container {:?} uses {} {}",
                c.name,
                if used.len() == 1 {
                    "hostPort"
                } else {
                    "hostPorts"
                },
                used.join(", ")
            ));
        }
    }
    if !ports.is_empty() {
        out.push(format!("hostPort ({})", ports.join("; ")));
    }
    let mut apparmor = Vec::new();
    if let Some(a) = metadata.get("annotations").and_then(Value::as_object) {
        for (k, v) in a {
            if k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && let Some(v) = v.as_str()
                && !(v == "runtime/default" || v.starts_with("localhost/"))
            {
                apparmor.push(format!("annotation {k}={v:?}"));
            }
        }
    }
    if pod_sc("appArmorProfile/type").and_then(|v| v.as_str().map(String::from))
        == Some("Unconfined".into())
    {
        apparmor
            .push("pod must not set securityContext.appArmorProfile.type to \"Unconfined\"".into());
    }
    for c in &cs {
        if sc(c.c, "appArmorProfile/type").and_then(|v| v.as_str().map(String::from))
            == Some("Unconfined".into())
        {
            apparmor.push(format!(
                "container {:?} must not set securityContext.appArmorProfile.type to \"Unconfined\"",
                c.name
            ));
        }
    }
    if !apparmor.is_empty() {
        out.push(format!(
            "forbidden AppArmor profile ({})",
            apparmor.join("; ")
        ));
    }
    let selinux_bad = |o: &Value| {
        let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
        let ty_ok = matches!(
            ty,
            "" | "container_t" | "container_init_t" | "container_kvm_t" | "container_engine_t"
        );
        let user = o
            .get("user")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        let role = o
            .get("role")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        !ty_ok || user || role
    };
    let mut selinux = Vec::new();
    if pod_sc("seLinuxOptions").is_some_and(|o| selinux_bad(&o)) {
        selinux.push("pod".to_string());
    }
    for c in &cs {
        if sc(c.c, "seLinuxOptions").is_some_and(|o| selinux_bad(&o)) {
            selinux.push(format!("container {:?}", c.name));
        }
    }
    if !selinux.is_empty() {
        out.push(format!(
            "seLinuxOptions ({} must not set a custom SELinux type, user or role)",
            selinux.join(", ")
        ));
    }
    let unmasked: Vec<&str> = cs
        .iter()
        .filter(|c| {
            sc(c.c, "procMount")
                .and_then(|v| v.as_str().map(String::from))
                .is_some_and(|m| m != "Default")
        })
        .map(|c| c.name)
        .collect();
    if !unmasked.is_empty() {
        out.push(format!(
            "procMount ({} must not set securityContext.procMount to \"Unmasked\")",
            containers_phrase(&unmasked)
        ));
    }
    let seccomp_type = |v: Option<Value>| v.and_then(|v| v.as_str().map(String::from));
    let pod_seccomp = seccomp_type(pod_sc("seccompProfile/type"));
    let mut unconfined = Vec::new();
    if pod_seccomp.as_deref() == Some("Unconfined") {
        unconfined.push(
            "pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_string(),
        );
    }
    for c in &cs {
        if seccomp_type(sc(c.c, "seccompProfile/type")).as_deref() == Some("Unconfined") {
            unconfined.push(format!(
                "container {:?} must not set securityContext.seccompProfile.type to \"Unconfined\"",
                c.name
            ));
        }
    }
    if !unconfined.is_empty() {
        out.push(format!("seccompProfile ({})", unconfined.join("; ")));
    }
    let sysctls: Vec<&str> = spec
        .pointer("/securityContext/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .collect();
    if !sysctls.is_empty() {
        out.push(format!("forbidden sysctls ({})", sysctls.join(", ")));
    }
    let host_process = pod_sc("windowsOptions/hostProcess").and_then(|v| v.as_bool()) == Some(true)
        || cs
            .iter()
            .any(|c| sc(c.c, "windowsOptions/hostProcess").and_then(|v| v.as_bool()) == Some(true));
    if host_process {
        out.push("hostProcess (pod or containers must not set securityContext.windowsOptions.hostProcess=true)".into());
    }
    if level == Level::Baseline {
        return out;
    }

    // Restricted.
    let mut restricted = Vec::new();
    for v in &volumes {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if let Some(m) = v.as_object()
            && let Some(ty) = m
                .keys()
                .find(|k| *k != "name" && !RESTRICTED_VOLUMES.contains(&k.as_str()))
        {
            restricted.push(format!(
                "volume {name:?} uses restricted volume type {ty:?}"
            ));
        }
    }
    if !restricted.is_empty() {
        out.push(format!(
            "restricted volume types ({})",
            restricted.join("; ")
        ));
    }
    let escalating: Vec<&str> = cs
        .iter()
        .filter(|c| sc(c.c, "allowPrivilegeEscalation").and_then(|v| v.as_bool()) != Some(false))
        .map(|c| c.name)
        .collect();
    if !escalating.is_empty() {
        out.push(format!(
            "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
            containers_phrase(&escalating)
        ));
    }
    let pod_non_root = pod_sc("runAsNonRoot").and_then(|v| v.as_bool());
    let root_ok: Vec<&str> = cs
        .iter()
        .filter(
            |c| match sc(c.c, "runAsNonRoot").and_then(|v| v.as_bool()) {
                Some(v) => !v,
                None => pod_non_root != Some(true),
            },
        )
        .map(|c| c.name)
        .collect();
    if !root_ok.is_empty() {
        let who = if pod_non_root == Some(true) {
            containers_phrase(&root_ok)
        } else {
            format!("pod or {}", containers_phrase(&root_ok))
        };
        out.push(format!(
            "runAsNonRoot != true ({who} must set securityContext.runAsNonRoot=true)"
        ));
    }
    let mut root_uid = Vec::new();
    if pod_sc("runAsUser").and_then(|v| v.as_i64()) == Some(0) {
        root_uid.push("pod".to_string());
    }
    for c in &cs {
        if sc(c.c, "runAsUser").and_then(|v| v.as_i64()) == Some(0) {
            root_uid.push(format!("container {:?}", c.name));
        }
    }
    if !root_uid.is_empty() {
        out.push(format!(
            "runAsUser=0 ({} must not set runAsUser=0)",
            root_uid.join(" and ")
        ));
    }
    let seccomp_ok = |t: Option<&str>| matches!(t, Some("RuntimeDefault") | Some("Localhost"));
    let unset: Vec<&str> = cs
        .iter()
        .filter(|c| match seccomp_type(sc(c.c, "seccompProfile/type")) {
            Some(t) => t != "Unconfined" && !seccomp_ok(Some(&t)),
            None => !seccomp_ok(pod_seccomp.as_deref()),
        })
        .map(|c| c.name)
        .collect();
    if !unset.is_empty() {
        out.push(format!(
            "seccompProfile (pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            containers_phrase(&unset)
        ));
    }
    let mut unrestricted = Vec::new();
    let no_drop: Vec<&str> = cs
        .iter()
        .filter(|c| {
            !c.c.pointer("/securityContext/capabilities/drop")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL")))
        })
        .map(|c| c.name)
        .collect();
    if !no_drop.is_empty() {
        unrestricted.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&no_drop)
        ));
    }
    unrestricted.extend(added_capabilities(&cs, |cap| cap == "NET_BIND_SERVICE"));
    if !unrestricted.is_empty() {
        out.push(format!(
            "unrestricted capabilities ({})",
            unrestricted.join("; ")
        ));
    }
    out
}

/// The refusal or warning text for `violations` of `level`: `violates PodSecurity
/// "baseline:latest": privileged (...), hostPath volumes (...)`.
pub fn describe(level: Level, version: &str, violations: &[String]) -> String {
    format!(
        "PodSecurity \"{}:{version}\": {}",
        level.name(),
        violations.join(", ")
    )
}

/// Where the pod template of a workload kind sits (for warnings on Deployments and the like).
pub fn template_pointer(group: &str, resource: &str) -> Option<&'static str> {
    match (group, resource) {
        ("", "replicationcontrollers")
        | ("apps", "deployments")
        | ("apps", "replicasets")
        | ("apps", "statefulsets")
        | ("apps", "daemonsets")
        | ("batch", "jobs") => Some("/spec/template"),
        ("batch", "cronjobs") => Some("/spec/jobTemplate/spec/template"),
        ("", "podtemplates") => Some("/template"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(level: Level, spec: Value) -> Vec<String> {
        violations(level, &json!({}), &spec)
    }

    #[test]
    fn baseline_refuses_what_breaks_isolation() {
        let ok = json!({"containers": [{"name": "web", "image": "x",
            "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}]});
        assert_eq!(check(Level::Baseline, ok), Vec::<String>::new());
        for (spec, want) in [
            (
                json!({"hostNetwork": true, "hostPID": true, "containers": [{"name": "c"}]}),
                "host namespaces (hostNetwork=true, hostPID=true)",
            ),
            (
                json!({"containers": [{"name": "a", "securityContext": {"privileged": true}},
                                   {"name": "b", "securityContext": {"privileged": true}}]}),
                "privileged (containers \"a\", \"b\" must not set securityContext.privileged=true)",
            ),
            (
                json!({"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}}]}),
                "non-default capabilities (container \"c\" must not include \"NET_ADMIN\" in securityContext.capabilities.add)",
            ),
            (
                json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}], "containers": [{"name": "c"}]}),
                "hostPath volume (volume \"root\")",
            ),
            (
                json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
                "hostPort (container \"c\" uses hostPort 8080)",
            ),
            (
                json!({"containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}]}),
                "procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")",
            ),
            (
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [{"name": "c"}]}),
                "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
            ),
            (
                json!({"securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1"}]}, "containers": [{"name": "c"}]}),
                "forbidden sysctls (net.core.somaxconn)",
            ),
            (
                json!({"containers": [{"name": "c", "securityContext": {"seLinuxOptions": {"type": "spc_t"}}}]}),
                "seLinuxOptions (container \"c\" must not set a custom SELinux type, user or role)",
            ),
        ] {
            assert_eq!(check(Level::Baseline, spec.clone()), [want], "{spec}");
            assert_eq!(check(Level::Privileged, spec), Vec::<String>::new());
        }
    }

    #[test]
    fn restricted_wants_a_hardened_pod() {
        let hardened = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "web", "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]});
        assert_eq!(check(Level::Restricted, hardened), Vec::<String>::new());
        let plain = json!({"containers": [{"name": "web"}]});
        assert_eq!(check(Level::Baseline, plain.clone()), Vec::<String>::new());
        assert_eq!(
            check(Level::Restricted, plain),
            [
                "allowPrivilegeEscalation != false (container \"web\" must set securityContext.allowPrivilegeEscalation=false)",
                "runAsNonRoot != true (pod or container \"web\" must set securityContext.runAsNonRoot=true)",
                "seccompProfile (pod or container \"web\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
                "unrestricted capabilities (container \"web\" must set securityContext.capabilities.drop=[\"ALL\"])",
            ]
        );
        let nfs = json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 0,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "share", "nfs": {"server": "x", "path": "/"}}],
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}}}]});
        assert_eq!(
            check(Level::Restricted, nfs),
            [
                "restricted volume types (volume \"share\" uses restricted volume type \"nfs\")",
                "runAsUser=0 (pod must not set runAsUser=0)",
            ]
        );
    }

    #[test]
    fn namespace_labels_name_a_level() {
        let ns = |labels: Value| json!({"metadata": {"labels": labels}});
        assert_eq!(
            namespace_level(&ns(json!({ENFORCE: "baseline"})), ENFORCE),
            (Level::Baseline, "latest".into())
        );
        assert_eq!(
            namespace_level(
                &ns(
                    json!({ENFORCE: "restricted", "pod-security.kubernetes.io/enforce-version": "v1.30"})
                ),
                ENFORCE
            ),
            (Level::Restricted, "v1.30".into())
        );
        assert_eq!(
            namespace_level(&ns(json!({})), ENFORCE).0,
            Level::Privileged
        );
        for (labels, errors) in [
            (json!({ENFORCE: "baseline", WARN: "restricted"}), 0),
            (json!({ENFORCE: "strict"}), 1),
            (
                json!({"pod-security.kubernetes.io/enforce-version": "1.30"}),
                1,
            ),
        ] {
            let mut causes = Vec::new();
            validate_namespace(&ns(labels.clone()), &mut causes);
            assert_eq!(causes.len(), errors, "{labels}");
        }
    }
}
