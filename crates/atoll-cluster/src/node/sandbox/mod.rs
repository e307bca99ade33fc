//! The pod sandbox of the process runtime: what a container sees of the file system.
//!
//! When the node agent runs as root, each container starts in a private mount namespace (and
//! its own UTS namespace, for the pod's hostname), built by `atoll __sandbox` (see [`enter`])
//! before it executes the container's command:
//! - a new root on a tmpfs holding recursive binds of the host's top-level directories, so the
//!   host's programs and libraries are all there;
//! - a `/tmp` of its own (a directory of the pod's);
//! - the pod's `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`, its volumes at their
//!   absolute `mountPath` (`readOnly` honoured, `subPath` resolved), its service-account
//!   token at `/var/run/secrets/kubernetes.io/serviceaccount`;
//! - a mount point that does not exist on the host is made in an overlay of its parent (upper
//!   layer on the sandbox's tmpfs), or in the volume above it, so the host is never written.
//!
//! The namespace goes with the container's last process: nothing is left mounted on the host.
//! `kubectl exec` and exec probes join the container's namespaces with util-linux `nsenter`.
//! Without root (or without util-linux `unshare`/`nsenter`) containers run as before: in the
//! host's view, their volumes linked under the pod directory.
//!
//! The file contents (`resolv.conf`, `hosts`) and the plan are pure functions, tested here.

pub(crate) mod enter;

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::volumes::{self, Prepared};

/// Where a service account's token, CA and namespace are projected.
pub(crate) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the node knows for its pods' sandboxes.
#[derive(Clone, Debug)]
pub(crate) struct Host {
    /// This program, to run `__sandbox` (the node's own image through /proc: still there if
    /// the file was replaced since the node started).
    pub exe: String,
}

/// Whether containers can be sandboxed here; if not, why (said once, at the node's start).
pub(crate) fn available() -> Result<Host, String> {
    if !rustix::process::geteuid().is_root() {
        return Err(
            "the node agent is not root: containers see the host's /etc/resolv.conf and /etc/hosts, and their volumes are linked under $POD_DIR instead of mounted at their mountPath"
                .into(),
        );
    }
    for tool in ["unshare", "nsenter"] {
        if which(tool).is_none() {
            return Err(format!(
                "util-linux `{tool}` is not installed: containers run without a sandbox (volumes under $POD_DIR, the host's resolv.conf)"
            ));
        }
    }
    // Root may still be refused namespaces (an unprivileged container): try once.
    let tried = std::process::Command::new("unshare")
        .args(["--mount", "--uts", "--propagation", "private", "true"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !tried.is_ok_and(|s| s.success()) {
        return Err(
            "this machine refuses new mount namespaces (`unshare --mount` failed): containers run without a sandbox (volumes under $POD_DIR, the host's resolv.conf)"
                .into(),
        );
    }
    Ok(Host {
        exe: format!("/proc/{}/exe", std::process::id()),
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_else(|| vec!["/usr/bin".into(), "/bin".into()])
        .into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// One bind mount of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mount {
    /// A path on the host.
    pub source: PathBuf,
    /// An absolute path in the container.
    pub target: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// What `atoll __sandbox` builds before it runs a container's command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// An empty directory of the pod's, where the sandbox's tmpfs (its root, overlays) goes.
    pub stage: PathBuf,
    /// The UTS namespace's hostname (none: the node's, for `hostNetwork` pods).
    pub hostname: Option<String>,
    /// Mounts, parents before children.
    pub mounts: Vec<Mount>,
    /// Where the command starts (made if missing).
    pub workdir: PathBuf,
}

impl Plan {
    /// Mounts in the order they must be made: by the depth of their target, then by path, so
    /// that a volume at /data is there before one at /data/cache. A later mount at the same
    /// target as an earlier one is dropped (the container's own volume wins over ours).
    pub(crate) fn ordered(mut mounts: Vec<Mount>) -> Vec<Mount> {
        let mut seen = std::collections::HashSet::new();
        mounts.retain(|m| seen.insert(m.target.clone()));
        mounts.sort_by(|a, b| {
            let depth = |p: &Path| p.components().count();
            depth(&a.target)
                .cmp(&depth(&b.target))
                .then_with(|| a.target.cmp(&b.target))
        });
        mounts
    }
}

/// A container's plan: the pod directory where it is on the host (its working directory by
/// default, its logs and volumes), the pod's `/etc` files, the service-account projection and
/// the container's own volume mounts, which win over the others at the same path.
pub(crate) fn plan(
    pod_dir: &Path,
    prepared: &Prepared,
    pod: &Pod,
    container: &Container,
) -> Result<Plan, String> {
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        if !m.mount_path.starts_with('/') {
            return Err(format!(
                "container {:?}: mountPath {:?} must be absolute",
                container.name, m.mount_path
            ));
        }
        mounts.push(Mount {
            source: volumes::mount_source(
                prepared,
                &container.name,
                &m.name,
                m.sub_path.as_deref(),
            )?,
            target: PathBuf::from(&m.mount_path),
            read_only: m.read_only == Some(true),
        });
    }
    mounts.push(Mount {
        source: pod_dir.to_path_buf(),
        target: pod_dir.to_path_buf(),
        read_only: false,
    });
    // A /tmp of the container's own, as a container's root file system has.
    mounts.push(Mount {
        source: private_tmp(pod_dir, &container.name),
        target: PathBuf::from("/tmp"),
        read_only: false,
    });
    for file in ["hosts", "resolv.conf", "hostname"] {
        mounts.push(Mount {
            source: prepared.etc.join(file),
            target: Path::new("/etc").join(file),
            read_only: false,
        });
    }
    if let Some(sa) = &prepared.service_account {
        mounts.push(Mount {
            source: sa.clone(),
            target: SERVICE_ACCOUNT_DIR.into(),
            read_only: true,
        });
    }
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
    Ok(Plan {
        stage: pod_dir
            .join("sandbox")
            .join(format!("{}.root", container.name)),
        hostname: (!host_network).then(|| hostname(pod)),
        mounts: Plan::ordered(mounts),
        workdir: container
            .working_dir
            .as_deref()
            .filter(|w| w.starts_with('/'))
            .map_or_else(|| pod_dir.to_path_buf(), PathBuf::from),
    })
}

/// The directory that is a container's `/tmp`.
pub(crate) fn private_tmp(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("sandbox").join(format!("{container}.tmp"))
}

/// The argv that starts a container's command in a new sandbox.
pub(crate) fn start_argv(host: &Host, plan: &Path, argv: &[String]) -> Vec<String> {
    let mut out: Vec<String> = [
        "unshare",
        "--mount",
        "--uts",
        "--propagation",
        "private",
        "--",
        &host.exe,
        "__sandbox",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    out.push(plan.display().to_string());
    out.push("--".into());
    out.extend(argv.iter().cloned());
    out
}

/// The argv that runs a command inside the sandbox of the container whose main process is
/// `pid` (`kubectl exec`, exec probes), starting in `cwd` there.
pub(crate) fn join_argv(pid: i32, cwd: &Path, argv: &[String]) -> Vec<String> {
    let mut out = vec![
        "nsenter".to_string(),
        format!("--mount=/proc/{pid}/ns/mnt"),
        format!("--uts=/proc/{pid}/ns/uts"),
        format!("--wdns={}", cwd.display()),
        "--".to_string(),
    ];
    out.extend(argv.iter().cloned());
    out
}

/// The pod's hostname, as the kubelet gives it: `spec.hostname`, else the pod's name cut to
/// 63 characters (a DNS label).
pub(crate) fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.name_any());
    let mut cut: String = name.chars().take(63).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    cut
}

/// The pod's `/etc/hosts`, in the kubelet's format: loopback and IPv6 names, the pod's own
/// address with its hostname (and its fully qualified name when it has a subdomain), then
/// `hostAliases`.
pub(crate) fn hosts_file(pod: &Pod, pod_ip: &str, zone: &str) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let name = hostname(pod);
    let subdomain = pod
        .spec
        .as_ref()
        .and_then(|s| s.subdomain.clone())
        .filter(|s| !s.is_empty());
    match subdomain {
        Some(sub) => {
            let ns = pod.namespace().unwrap_or_default();
            out.push_str(&format!("{pod_ip}\t{name}.{sub}.{ns}.svc.{zone}\t{name}\n"));
        }
        None => out.push_str(&format!("{pod_ip}\t{name}\n")),
    }
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.unwrap_or_default();
            if a.ip.is_empty() || names.is_empty() {
                continue;
            }
            out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
        }
    }
    out
}

/// A parsed resolver configuration (the parts Kubernetes manages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Resolver {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value`.
    pub options: Vec<String>,
}

impl Resolver {
    /// Read `resolv.conf` text (the node's own, for `dnsPolicy: Default`).
    pub(crate) fn parse(text: &str) -> Resolver {
        let mut r = Resolver::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => r.nameservers.extend(words.next().map(String::from)),
                // The last search (or domain) line wins, as in glibc.
                Some("search" | "domain") => r.searches = words.map(String::from).collect(),
                Some("options") => r.options.extend(words.map(String::from)),
                _ => {}
            }
        }
        r
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for n in &self.nameservers {
            out.push_str(&format!("nameserver {n}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// The pod's `/etc/resolv.conf` by its `dnsPolicy` and `dnsConfig`, as the kubelet writes
/// it. `cluster_dns` is the cluster DNS Service's address (none known: `ClusterFirst` falls
/// back to `Default`, as the kubelet does); `node` is the node's own resolver configuration.
pub(crate) fn resolv_conf(
    pod: &Pod,
    cluster_dns: Option<&str>,
    zone: &str,
    node: &Resolver,
) -> Result<String, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        "Default" | "None" => false,
        other => {
            return Err(format!(
                "dnsPolicy {other:?}: must be ClusterFirst, ClusterFirstWithHostNet, Default or None"
            ));
        }
    };
    let mut r = match (policy, cluster_first, cluster_dns) {
        ("None", ..) => Resolver::default(),
        (_, true, Some(dns)) => {
            let ns = pod.namespace().unwrap_or_default();
            let mut searches = vec![
                format!("{ns}.svc.{zone}"),
                format!("svc.{zone}"),
                zone.to_string(),
            ];
            searches.extend(node.searches.iter().cloned());
            Resolver {
                nameservers: vec![dns.to_string()],
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        _ => node.clone(),
    };
    if let Some(config) = spec.dns_config {
        r.nameservers
            .extend(config.nameservers.into_iter().flatten());
        r.searches.extend(config.searches.into_iter().flatten());
        for o in config.options.into_iter().flatten() {
            let Some(name) = o.name.filter(|n| !n.is_empty()) else {
                continue;
            };
            r.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            r.options.push(match o.value {
                Some(v) if !v.is_empty() => format!("{name}:{v}"),
                _ => name,
            });
        }
    }
    dedupe(&mut r.nameservers);
    dedupe(&mut r.searches);
    // glibc reads three nameservers; the kubelet keeps 32 search domains.
    r.nameservers.truncate(3);
    r.searches.truncate(32);
    if policy == "None" && r.nameservers.is_empty() {
        return Err("dnsPolicy None needs dnsConfig.nameservers".into());
    }
    Ok(r.render())
}

fn dedupe(list: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|x| seen.insert(x.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "demo"},
            "spec": spec,
        }))
        .expect("a pod")
    }

    #[test]
    fn resolv_conf_follows_dns_policy_and_config() {
        let node = Resolver::parse(
            "# the node's\nsearch corp.example\nnameserver 127.0.0.53\noptions edns0\n",
        );
        // (what, pod spec, cluster DNS, resolv.conf or error)
        type Case = (
            &'static str,
            serde_json::Value,
            Option<&'static str>,
            Result<&'static str, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "ClusterFirst (the default)",
                serde_json::json!({"containers": []}),
                Some("127.96.0.10"),
                Ok(
                    "search demo.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 127.96.0.10\noptions ndots:5\n",
                ),
            ),
            (
                "ClusterFirst without a cluster DNS falls back to the node's",
                serde_json::json!({"containers": []}),
                None,
                Ok("search corp.example\nnameserver 127.0.0.53\noptions edns0\n"),
            ),
            (
                "ClusterFirst on the host network is the node's",
                serde_json::json!({"containers": [], "hostNetwork": true}),
                Some("127.96.0.10"),
                Ok("search corp.example\nnameserver 127.0.0.53\noptions edns0\n"),
            ),
            (
                "ClusterFirstWithHostNet is the cluster's",
                serde_json::json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
                Some("127.96.0.10"),
                Ok(
                    "search demo.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 127.96.0.10\noptions ndots:5\n",
                ),
            ),
            (
                "Default is the node's",
                serde_json::json!({"containers": [], "dnsPolicy": "Default"}),
                Some("127.96.0.10"),
                Ok("search corp.example\nnameserver 127.0.0.53\noptions edns0\n"),
            ),
            (
                "None takes dnsConfig alone",
                serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {"nameservers": ["127.0.0.9"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}]}}),
                Some("127.96.0.10"),
                Ok("search a.example\nnameserver 127.0.0.9\noptions ndots:2\n"),
            ),
            (
                "dnsConfig merges: options by name, lists without repeats",
                serde_json::json!({"containers": [], "dnsConfig": {"nameservers": ["127.96.0.10", "127.0.0.9"], "searches": ["svc.cluster.local", "b.example"], "options": [{"name": "ndots", "value": "1"}, {"name": "single-request-reopen"}]}}),
                Some("127.96.0.10"),
                Ok(
                    "search demo.svc.cluster.local svc.cluster.local cluster.local corp.example b.example\nnameserver 127.96.0.10\nnameserver 127.0.0.9\noptions ndots:1 single-request-reopen\n",
                ),
            ),
            (
                "None without nameservers is refused",
                serde_json::json!({"containers": [], "dnsPolicy": "None"}),
                Some("127.96.0.10"),
                Err("dnsPolicy None needs dnsConfig.nameservers"),
            ),
        ];
        for (what, spec, dns, want) in cases {
            let got = resolv_conf(&pod(spec), dns, "cluster.local", &node);
            assert_eq!(got.as_deref().map_err(String::as_str), want, "{what}");
        }
    }

    #[test]
    fn hosts_file_names_the_pod_and_its_aliases() {
        let plain = hosts_file(
            &pod(serde_json::json!({"containers": []})),
            "127.1.0.5",
            "cluster.local",
        );
        assert!(
            plain.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
            "{plain}"
        );
        assert!(
            plain.ends_with("fe00::2\tip6-allrouters\n127.1.0.5\tweb-0\n"),
            "{plain}"
        );
        let full = hosts_file(
            &pod(
                serde_json::json!({"containers": [], "hostname": "db", "subdomain": "web",
                "hostAliases": [{"ip": "127.0.0.7", "hostnames": ["foo.local", "bar.local"]}, {"ip": "127.0.0.8"}]}),
            ),
            "127.1.0.5",
            "cluster.local",
        );
        assert!(
            full.ends_with("127.1.0.5\tdb.web.demo.svc.cluster.local\tdb\n\n# Entries added by HostAliases.\n127.0.0.7\tfoo.local\tbar.local\n"),
            "{full}"
        );
    }

    #[test]
    fn hostnames_are_dns_labels() {
        let long = "a".repeat(62) + "-b";
        let p: Pod =
            serde_json::from_value(serde_json::json!({"metadata": {"name": long}})).unwrap();
        assert_eq!(hostname(&p), "a".repeat(62));
    }

    #[test]
    fn mounts_go_parents_first_and_once_per_target() {
        let m = |s: &str, t: &str| Mount {
            source: s.into(),
            target: t.into(),
            read_only: false,
        };
        let got = Plan::ordered(vec![
            m("/v/cache", "/data/cache"),
            m("/v/data", "/data"),
            m("/v/other", "/data"),
            m("/v/cfg", "/etc/app/config"),
            m("/v/a", "/a"),
        ]);
        let targets: Vec<_> = got
            .iter()
            .map(|m| {
                (
                    m.source.display().to_string(),
                    m.target.display().to_string(),
                )
            })
            .collect();
        assert_eq!(
            targets,
            [
                ("/v/a", "/a"),
                ("/v/data", "/data"),
                ("/v/cache", "/data/cache"),
                ("/v/cfg", "/etc/app/config")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn argv_wraps_the_command() {
        let host = Host {
            exe: "/proc/1/exe".into(),
        };
        assert_eq!(
            start_argv(
                &host,
                Path::new("/p/run/c.json"),
                &["sh".into(), "-c".into(), "true".into()]
            )
            .join(" "),
            "unshare --mount --uts --propagation private -- /proc/1/exe __sandbox /p/run/c.json -- sh -c true"
        );
        assert_eq!(
            join_argv(42, Path::new("/p"), &["ls".into()]).join(" "),
            "nsenter --mount=/proc/42/ns/mnt --uts=/proc/42/ns/uts --wdns=/p -- ls"
        );
    }
}
