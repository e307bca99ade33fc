//! The MCS API's own conformance suite (kubernetes-sigs/mcs-api `conformance/`, Ginkgo),
//! ported case for case to run against `atoll dev up --clusters 2`: every `Required` case and
//! every `DNS`, `EndpointSlice` and `Connectivity` case (with the `ExportedLabels` and
//! `StrictPortConflict` ones), with the suite's fixtures, its driver's order (cluster0 deploys
//! and exports; the two-cluster driver waits for the import, sleeps 1.1 s, then cluster1
//! deploys and exports), its waits and timeouts, and its request pod running `nc` and
//! `nslookup` through the cluster's DNS. Each case has a namespace of its own
//! (`mcs-conformance-N`) on both clusters, so cases run side by side, a few at a time.
//!
//! Where the process runtime makes the fixtures differ, said once here: pods share the host's
//! network, so the hello pods' `socat` binds the pod's IP rather than every address (two pods
//! listening on `*:42` would collide), and only the IPv4 branch of the suite's listener script
//! is kept (the clusters are IPv4), and the listener reads the client's line before it
//! answers: the suite's closes with the line unread, so its kernel resets the connection, and
//! on a loaded machine the reset can overtake the answer at the client (seen here straight to
//! the pod's IP, with no proxy in between: a failure of the fixture, not of what is tested).
//! The request pod is the suite's: its shell loop given as `args` alone runs as the command,
//! as it does in the netshoot image, which has no ENTRYPOINT.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{DevEnv, json as parse, sandbox_available};
use crate::harness::Kubectl;

const CLUSTERS: [&str; 2] = ["member1", "member2"];
const DOMAIN: &str = "clusterset.local";
const HELLO: &str = "hello";
/// How many cases run at once (2 cores: each case has its pods and polls with kubectl).
const AT_ONCE: usize = 4;

fn hello_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": HELLO, "annotations": {"dummy-svc": "dummy"}, "labels": {"dummy-svc": "dummy"}},
        "spec": {
            "selector": {"app": HELLO},
            "ports": [
                {"name": "tcp", "port": 42, "protocol": "TCP"},
                {"name": "udp", "port": 42, "protocol": "UDP"},
            ],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10}},
            "ipFamilyPolicy": "PreferDualStack",
        },
    })
}

fn hello_export() -> Value {
    json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
        "metadata": {"name": HELLO, "annotations": {"dummy-svcexport": "dummy"}, "labels": {"dummy-svcexport": "dummy"}},
    })
}

/// The suite's listener: replies `pod ip <ip>` on port 42 (bound to the pod's IP, see above).
fn listener(protocol: &str) -> String {
    format!(
        "first_ip=$(echo \"$MY_POD_IPS\" | tr ',' ' ' | awk '{{print $1}}')\n\
         export first_ip\n\
         exec socat -v -v {protocol}-LISTEN:42,bind=$first_ip,crlf,reuseaddr,fork SYSTEM:'read -r line; echo \"pod ip $first_ip\"'"
    )
}

fn pod_containers() -> Value {
    let container = |name: &str, protocol: &str| {
        json!({
            "name": name, "image": "alpine/socat:1.7.4.4",
            "command": ["/bin/sh"], "args": ["-c", listener(protocol)],
            "env": [{"name": "MY_POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}}],
        })
    };
    json!([container("hello-tcp", "TCP"), container("hello-udp", "UDP")])
}

fn hello_deployment(replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": HELLO},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": HELLO}},
            "template": {"metadata": {"labels": {"app": HELLO}}, "spec": {"containers": pod_containers()}},
        },
    })
}

fn stateful_set(replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": format!("{HELLO}-ss")},
        "spec": {
            "selector": {"matchLabels": {"app": HELLO}},
            "serviceName": HELLO,
            "replicas": replicas,
            "template": {
                "metadata": {"labels": {"app": HELLO}},
                "spec": {"containers": pod_containers(), "restartPolicy": "Always"},
            },
        },
    })
}

fn request_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "request", "labels": {"app": "request"}},
        "spec": {"containers": [{
            "name": "request", "image": "nicolaka/netshoot:v0.15",
            "args": ["/bin/sh", "-ec", "while :; do echo '.'; sleep 5 ; done"],
        }]},
    })
}

/// The suite's `ncCommand` (IPv4).
fn nc_command(fqdn: &str, port: u16) -> String {
    format!("echo hi | nc -v -w 2 -4 {fqdn} {port} 2>&1")
}

/// The suite's `addressesRegEx` (`Name:.*\s*Address:\s*(.*)`) over `nslookup` output, sorted.
fn nslookup_addresses(out: &str) -> Vec<String> {
    let lines: Vec<&str> = out.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.contains("Name:") {
            continue;
        }
        if let Some(next) = lines[i + 1..].iter().find(|l| !l.trim().is_empty())
            && let Some(addr) = next.trim_start().strip_prefix("Address:")
        {
            found.push(addr.trim().to_string());
        }
    }
    found.sort();
    found
}

/// The suite's `parseSRVRecords`: (port, target without its trailing dot) per `=` line.
fn nslookup_srv(out: &str) -> Vec<(u16, String)> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(_, rest)| {
            let t: Vec<&str> = rest.split_whitespace().collect();
            let port = t.get(2)?.parse().ok()?;
            Some((port, t.get(3)?.trim_end_matches('.').to_string()))
        })
        .collect()
}

/// Ports as the suite compares them: `{name, protocol, port, appProtocol}`, sorted by the
/// lower-cased name.
fn mcs_ports(ports: &Value) -> Vec<(String, String, i64, Option<String>)> {
    let mut out: Vec<_> = ports
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["protocol"].as_str().unwrap_or("TCP").to_string(),
                p["port"].as_i64().unwrap_or_default(),
                p["appProtocol"].as_str().map(String::from),
            )
        })
        .collect();
    out.sort_by_key(|p| p.0.to_lowercase());
    out
}

/// One case's driver (the suite's `testDriver`, and `twoClusterTestDriver` when `service2`
/// is set).
struct Driver<'a> {
    k: &'a Kubectl<'static>,
    case: &'static str,
    namespace: String,
    service: Value,
    export: Value,
    deployment: Option<Value>,
    auto_export: bool,
    /// The two-cluster driver: cluster1's Service and export.
    two: Option<(Value, Value)>,
    /// A StatefulSet of this many replicas made on cluster0 last (the headless DNS case).
    stateful_set: Option<u32>,
}

impl<'a> Driver<'a> {
    fn new(k: &'a Kubectl<'static>, case: &'static str, n: usize) -> Self {
        Driver {
            k,
            case,
            namespace: format!("mcs-conformance-{n}-{}", std::process::id()),
            service: hello_service(),
            export: hello_export(),
            deployment: Some(hello_deployment(1)),
            auto_export: true,
            two: None,
            stateful_set: None,
        }
    }

    fn two_clusters(&mut self) -> &mut (Value, Value) {
        self.auto_export = false;
        self.two
            .get_or_insert_with(|| (hello_service(), hello_export()))
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!("[{}] {what}", self.case)
    }

    fn kubectl(&self, c: &str, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--context", c, "-n", &self.namespace];
        all.extend_from_slice(args);
        self.k.run(&all)
    }

    fn create(&self, c: &str, obj: &Value) -> Value {
        let mut all = vec!["--context", c, "-n", &self.namespace];
        all.extend_from_slice(&["create", "-o", "json", "-f", "-"]);
        let out = self.k.run_stdin(&all, &obj.to_string());
        if !out.status.success() {
            self.fail(format!(
                "creating {} on {c}: {}",
                obj["kind"],
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse(&String::from_utf8_lossy(&out.stdout))
    }

    fn get(&self, c: &str, what: &[&str]) -> Option<Value> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(c, &args);
        out.status
            .success()
            .then(|| parse(&String::from_utf8_lossy(&out.stdout)))
    }

    fn service_import(&self, c: &str) -> Option<Value> {
        self.get(c, &["serviceimports.multicluster.x-k8s.io", HELLO])
    }

    /// `Eventually(f).Within(secs)`: poll until `f` says yes.
    fn eventually<T>(&self, secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                self.fail(format!("timed out after {secs} s: {what}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `Consistently(f).Within(5 s)`.
    fn consistently(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !f() {
                self.fail(format!("not consistently: {what}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn await_service_import(&self, c: &str, mut verify: impl FnMut(&Value) -> bool) -> Value {
        self.eventually(20, &format!("the ServiceImport on {c}"), || {
            self.service_import(c).filter(|si| verify(si))
        })
    }

    fn await_no_service_import(&self, c: &str) {
        self.eventually(20, &format!("no ServiceImport on {c}"), || {
            self.service_import(c).is_none().then_some(())
        });
    }

    fn await_export_condition(&self, c: &str, type_: &str, status: &str) {
        self.eventually(
            20,
            &format!("{type_}={status} on {c}'s ServiceExport"),
            || {
                let se = self.get(c, &["serviceexports.multicluster.x-k8s.io", HELLO])?;
                se["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|x| x["type"] == type_ && x["status"] == status)
                    .then_some(())
            },
        );
    }

    fn unexport(&self, c: &str) {
        let out = self.kubectl(
            c,
            &["delete", "serviceexports.multicluster.x-k8s.io", HELLO],
        );
        if !out.status.success() {
            self.fail(format!(
                "unexporting on {c}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }

    fn deploy_hello_service(&self, c: &str, service: &Value) -> Value {
        if let Some(d) = &self.deployment {
            self.create(c, d);
        }
        self.create(c, service)
    }

    /// The suite's `JustBeforeEach`es, outermost first.
    fn start(&mut self) {
        for c in CLUSTERS {
            let out = self
                .k
                .run(&["--context", c, "create", "namespace", &self.namespace]);
            if !out.status.success() {
                self.fail(String::from_utf8_lossy(&out.stderr));
            }
        }
        self.service = self.deploy_hello_service(CLUSTERS[0], &self.service.clone());
        for c in CLUSTERS {
            self.create(c, &request_pod());
            self.eventually(60, &format!("the request pod running on {c}"), || {
                let pod = self.get(c, &["pod", "request"])?;
                (pod["status"]["phase"] == "Running").then_some(())
            });
        }
        if self.auto_export {
            self.create(CLUSTERS[0], &self.export);
        }
        if let Some((service2, export2)) = self.two.clone() {
            self.create(CLUSTERS[0], &self.export);
            self.await_service_import(CLUSTERS[0], |_| true);
            std::thread::sleep(Duration::from_millis(1100));
            self.deploy_hello_service(CLUSTERS[1], &service2);
            self.create(CLUSTERS[1], &export2);
        }
        if let Some(n) = self.stateful_set {
            self.create(CLUSTERS[0], &stateful_set(n));
        }
    }

    fn stop(&self) {
        for c in CLUSTERS {
            let _ = self.k.run(&[
                "--context",
                c,
                "delete",
                "namespace",
                &self.namespace,
                "--wait=false",
            ]);
        }
    }

    /// `kubectl exec` in cluster `c`'s request pod, as the suite's `execCmd` (4 s at most).
    fn exec(&self, c: &str, command: &str) -> String {
        let out = std::process::Command::new("timeout")
            .arg("4")
            .arg(self.k.bin)
            .env("KUBECONFIG", &self.k.kubeconfig)
            .args([
                "--context",
                c,
                "-n",
                &self.namespace,
                "exec",
                "request",
                "--",
            ])
            .args(["sh", "-c", command])
            .output()
            .expect("kubectl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The suite's `awaitCmdOutputMatches`: within 20 s per iteration, probing every second,
    /// `n` passes in a row.
    fn await_output(&self, c: &str, command: &str, n: u32, matches: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20 * u64::from(n));
        let mut in_a_row = 0;
        let mut last = String::new();
        while in_a_row < n {
            if Instant::now() > deadline {
                self.fail(format!(
                    "{command:?} on {c}: {in_a_row} of {n} in a row; last output:\n{last}"
                ));
            }
            last = self.exec(c, command);
            if matches(&last) {
                in_a_row += 1;
            } else {
                if in_a_row > 0 {
                    eprintln!(
                        "[{}] {command:?} on {c}: a miss after {in_a_row} in a row:\n{last}",
                        self.case
                    );
                }
                in_a_row = 0;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }

    fn fqdn(&self) -> String {
        format!("{HELLO}.{}.svc.{DOMAIN}", self.namespace)
    }

    fn ip_families(&self, c: &str) -> Vec<String> {
        let si = self.await_service_import(c, |si| {
            si["spec"]["ipFamilies"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
        });
        si["spec"]["ipFamilies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(String::from))
            .collect()
    }

    /// The suite's `execPortConnectivityCommand`.
    fn connect_from_all(&self, port: u16, expect: &str, n: u32) {
        for c in CLUSTERS {
            for family in self.ip_families(c) {
                assert_eq!(family, "IPv4", "[{}] the clusters are IPv4", self.case);
                self.await_output(c, &nc_command(&self.fqdn(), port), n, |o| {
                    o.contains(expect)
                });
            }
        }
    }

    fn service_pod_ip(&self, c: &str) -> String {
        self.eventually(60, &format!("the hello pod's IP on {c}"), || {
            let pods = self.get(c, &["pods", "-l", "app=hello"])?;
            let ip = pods["items"][0]["status"]["podIP"].as_str()?;
            (!ip.is_empty()).then(|| ip.to_string())
        })
    }

    /// The suite's `awaitK8sEndpoints` (cluster0's own slices of the Service): every endpoint
    /// ready, as many as the Deployment's replicas; (address, host name) pairs.
    fn k8s_endpoints(&self, expect: usize) -> Vec<(String, String)> {
        self.eventually(60, "cluster0's ready endpoints", || {
            let list = self.get(
                CLUSTERS[0],
                &[
                    "endpointslices",
                    "-l",
                    &format!("kubernetes.io/service-name={HELLO}"),
                ],
            )?;
            let mut out = Vec::new();
            for s in list["items"].as_array()? {
                if s["addressType"] != "IPv4" {
                    continue;
                }
                for e in s["endpoints"].as_array().into_iter().flatten() {
                    if e["conditions"]["ready"] == false {
                        return None;
                    }
                    for a in e["addresses"].as_array().into_iter().flatten() {
                        let a = a.as_str()?.to_string();
                        let host = e["hostname"]
                            .as_str()
                            .map(String::from)
                            .unwrap_or_else(|| a.replace('.', "-"));
                        out.push((a, host));
                    }
                }
            }
            (out.len() == expect).then_some(out)
        })
    }

    /// The suite's `awaitMCSEndpointSlice`: a slice with the MCS labels and an endpoint.
    fn mcs_slice(&self, c: &str, verify: impl Fn(&Value) -> bool) -> Value {
        self.eventually(60, &format!("an MCS EndpointSlice on {c}"), || {
            let list = self.get(c, &["endpointslices"])?;
            list["items"]
                .as_array()?
                .iter()
                // The suite keeps the last such slice, and verifies that one.
                .rfind(|s| {
                    let l = &s["metadata"]["labels"];
                    l.get("multicluster.kubernetes.io/service-name").is_some()
                        && l.get("multicluster.kubernetes.io/source-cluster").is_some()
                        && s["addressType"] == "IPv4"
                        && s["endpoints"].as_array().is_some_and(|e| !e.is_empty())
                })
                .filter(|s| verify(s))
                .cloned()
        })
    }
}

type Setup = fn(&mut Driver);
type Body = fn(&Driver);

struct Case {
    name: &'static str,
    setup: Setup,
    body: Body,
}

/// Every key and value of `expected` is in `actual` (labels or annotations).
fn has_all(actual: &Value, expected: &Value) -> bool {
    expected
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| actual.get(k) == Some(v))
}

/// None of the keys and values of `expected` is in `actual`.
fn has_none(actual: &Value, expected: &Value) -> bool {
    expected
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| actual.get(k) != Some(v))
}

fn exported_labels(d: &mut Driver) {
    d.export["spec"] = json!({
        "exportedAnnotations": {"dummy-annotation": "true"},
        "exportedLabels": {"dummy-label": "true"},
    });
}

fn headless(d: &mut Driver) {
    d.service["spec"]["clusterIP"] = json!("None");
}

fn headless_dns(d: &mut Driver) {
    headless(d);
    d.deployment = Some(hello_deployment(2));
}

fn cases() -> Vec<Case> {
    vec![
        // service_import.go
        Case {
            name: "Required: a ServiceImport exists while at least one cluster exports",
            setup: |_| {},
            body: |d| {
                let c = CLUSTERS;
                d.await_service_import(c[0], |_| true);
                d.deploy_hello_service(c[1], &hello_service());
                d.create(c[1], &hello_export());
                d.consistently("the ServiceImport after the 2nd export", || {
                    d.service_import(c[0]).is_some()
                });
                d.unexport(c[0]);
                d.consistently("the ServiceImport while cluster1 exports", || {
                    d.service_import(c[0]).is_some()
                });
                d.unexport(c[1]);
                d.await_no_service_import(c[0]);
            },
        },
        Case {
            name: "ExportedLabels: only the export's labels and annotations reach the import",
            setup: exported_labels,
            body: |d| {
                d.await_service_import(CLUSTERS[0], |si| {
                    let m = &si["metadata"];
                    has_all(&m["annotations"], &d.export["spec"]["exportedAnnotations"])
                        && has_none(&m["annotations"], &d.service["metadata"]["annotations"])
                        && has_all(&m["labels"], &d.export["spec"]["exportedLabels"])
                        && has_none(&m["labels"], &d.service["metadata"]["labels"])
                });
            },
        },
        Case {
            name: "ExportedLabels: conflicting labels on two clusters, Conflict on each export",
            setup: |d| {
                exported_labels(d);
                d.two_clusters().1["spec"] = json!({
                    "exportedAnnotations": {"dummy-annotation2": "true"},
                    "exportedLabels": {"dummy-label2": "true"},
                });
            },
            body: |d| {
                d.await_export_condition(CLUSTERS[0], "Conflict", "True");
                d.await_export_condition(CLUSTERS[1], "Conflict", "True");
                let other = d
                    .two
                    .as_ref()
                    .map(|t| t.1["spec"].clone())
                    .unwrap_or_default();
                d.await_service_import(CLUSTERS[0], |si| {
                    let m = &si["metadata"];
                    has_all(&m["annotations"], &d.export["spec"]["exportedAnnotations"])
                        && has_none(&m["annotations"], &other["exportedAnnotations"])
                        && has_all(&m["labels"], &d.export["spec"]["exportedLabels"])
                        && has_none(&m["labels"], &other["exportedLabels"])
                });
            },
        },
        Case {
            name: "Required: a ClusterIP export imports as ClusterSetIP everywhere, and goes",
            setup: |_| {},
            body: |d| {
                d.await_export_condition(CLUSTERS[0], "Valid", "True");
                for c in CLUSTERS {
                    let si = d.await_service_import(c, |_| true);
                    assert_eq!(si["spec"]["type"], "ClusterSetIP", "[{}] {c}", d.case);
                }
                d.unexport(CLUSTERS[0]);
                for c in CLUSTERS {
                    d.await_no_service_import(c);
                }
            },
        },
        Case {
            name: "Required: session affinity as the Service's",
            setup: |_| {},
            body: |d| {
                d.await_service_import(CLUSTERS[0], |si| {
                    si["spec"]["sessionAffinity"] == d.service["spec"]["sessionAffinity"]
                        && si["spec"]["sessionAffinityConfig"]
                            == d.service["spec"]["sessionAffinityConfig"]
                });
            },
        },
        Case {
            name: "Required: internal traffic policy as the Service's",
            setup: |d| d.service["spec"]["internalTrafficPolicy"] = json!("Cluster"),
            body: |d| {
                d.await_service_import(CLUSTERS[0], |si| {
                    si["spec"]["internalTrafficPolicy"]
                        == d.service["spec"]["internalTrafficPolicy"]
                });
            },
        },
        Case {
            name: "Required: traffic distribution as the Service's",
            setup: |d| d.service["spec"]["trafficDistribution"] = json!("PreferClose"),
            body: |d| {
                d.await_service_import(CLUSTERS[0], |si| {
                    si["spec"]["trafficDistribution"] == "PreferClose"
                });
            },
        },
        Case {
            name: "Required: an IP per IP family",
            setup: |_| {},
            body: |d| {
                let si = d.await_service_import(CLUSTERS[0], |si| {
                    si["spec"]["ips"].as_array().is_some_and(|i| !i.is_empty())
                });
                let ips = si["spec"]["ips"].as_array().cloned().unwrap_or_default();
                let families = si["spec"]["ipFamilies"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(ips.len(), families.len(), "[{}] {si}", d.case);
                for (ip, family) in ips.iter().zip(&families) {
                    let ip: std::net::IpAddr = ip
                        .as_str()
                        .and_then(|i| i.parse().ok())
                        .unwrap_or_else(|| d.fail(format!("not an IP: {ip}")));
                    let f = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                    assert_eq!(family, f, "[{}]", d.case);
                }
            },
        },
        Case {
            name: "Required: the ports are the Service's",
            setup: |_| {},
            body: |d| {
                d.await_service_import(CLUSTERS[0], |si| {
                    mcs_ports(&si["spec"]["ports"]) == mcs_ports(&d.service["spec"]["ports"])
                });
            },
        },
        Case {
            name: "Required: two clusters' ports are the union, with a Conflict",
            setup: |d| {
                d.two_clusters().0["spec"]["ports"] = json!([
                    {"name": "tcp", "port": 42, "protocol": "TCP"},
                    {"name": "stcp", "port": 142, "protocol": "SCTP"},
                ]);
            },
            body: |d| {
                d.await_export_condition(CLUSTERS[0], "Conflict", "True");
                d.await_export_condition(CLUSTERS[1], "Conflict", "True");
                let mut want = d.service["spec"]["ports"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                want.push(json!({"name": "stcp", "port": 142, "protocol": "SCTP"}));
                d.await_service_import(CLUSTERS[0], |si| {
                    mcs_ports(&si["spec"]["ports"]) == mcs_ports(&json!(want))
                });
            },
        },
        Case {
            name: "Required: conflicting ports: the oldest export's, with a Conflict",
            setup: |d| {
                d.two_clusters().0["spec"]["ports"] =
                    json!([{"name": "tcp", "port": 43, "protocol": "TCP"}]);
            },
            body: |d| {
                d.await_export_condition(CLUSTERS[0], "Conflict", "True");
                d.await_export_condition(CLUSTERS[1], "Conflict", "True");
                d.await_service_import(CLUSTERS[0], |si| {
                    mcs_ports(&si["spec"]["ports"]) == mcs_ports(&d.service["spec"]["ports"])
                });
            },
        },
        Case {
            name: "Required: a headless export imports as Headless everywhere, and goes",
            setup: headless,
            body: |d| {
                for c in CLUSTERS {
                    let si = d.await_service_import(c, |_| true);
                    assert_eq!(si["spec"]["type"], "Headless", "[{}] {c}", d.case);
                }
                d.unexport(CLUSTERS[0]);
                for c in CLUSTERS {
                    d.await_no_service_import(c);
                }
            },
        },
        Case {
            name: "Required: no ClusterSetIP for a headless import",
            setup: headless,
            body: |d| {
                d.await_service_import(CLUSTERS[0], |_| true);
                d.consistently("no IPs", || {
                    d.service_import(CLUSTERS[0])
                        .is_some_and(|si| si["spec"]["ips"].as_array().is_none_or(|i| i.is_empty()))
                });
            },
        },
        Case {
            name: "Required: an ExternalName export is not valid and not imported",
            setup: |d| {
                d.service["spec"]["type"] = json!("ExternalName");
                d.service["spec"]["externalName"] = json!("example.com");
                if let Some(s) = d.service["spec"].as_object_mut() {
                    s.remove("ipFamilyPolicy");
                }
            },
            body: |d| {
                d.await_export_condition(CLUSTERS[0], "Valid", "False");
                d.consistently("no ServiceImport", || {
                    d.service_import(CLUSTERS[0]).is_none()
                });
            },
        },
        Case {
            name: "Required: conflicting headlessness: the oldest export's type, with a Conflict",
            setup: |d| d.two_clusters().0["spec"]["clusterIP"] = json!("None"),
            body: |d| {
                d.await_export_condition(CLUSTERS[0], "Conflict", "True");
                d.await_export_condition(CLUSTERS[1], "Conflict", "True");
                for c in CLUSTERS {
                    let si = d.await_service_import(c, |_| true);
                    assert_eq!(si["spec"]["type"], "ClusterSetIP", "[{}] {c}", d.case);
                }
            },
        },
        // connectivity.go
        Case {
            name: "Required: a Service that is not exported cannot be reached",
            setup: |d| d.auto_export = false,
            body: |d| {
                let families = d.service["spec"]["ipFamilies"].clone();
                for family in families.as_array().into_iter().flatten() {
                    assert_eq!(family, "IPv4", "[{}]", d.case);
                    for c in CLUSTERS {
                        for _ in 0..20 {
                            let out = d.exec(c, &nc_command(&d.fqdn(), 42));
                            assert!(!out.contains("pod ip"), "[{}] {c}: {out}", d.case);
                        }
                    }
                }
            },
        },
        Case {
            name: "Connectivity: an exported ClusterIP Service is reached through DNS",
            setup: |d| d.auto_export = false,
            body: |d| {
                d.create(CLUSTERS[0], &hello_export());
                d.connect_from_all(42, "pod ip", 1);
            },
        },
        Case {
            name: "Connectivity: a Service in both clusters exported from one reaches only it",
            setup: |d| d.auto_export = false,
            body: |d| {
                d.deploy_hello_service(CLUSTERS[1], &hello_service());
                d.create(CLUSTERS[0], &hello_export());
                let ip = d.service_pod_ip(CLUSTERS[0]);
                d.connect_from_all(42, &ip, 10);
            },
        },
        Case {
            name: "Connectivity, StrictPortConflict: a port name at another number reaches only the cluster with the port",
            setup: |d| {
                d.two_clusters().0["spec"]["ports"] =
                    json!([{"name": "tcp", "port": 4242, "protocol": "TCP", "targetPort": 42}]);
            },
            body: |d| {
                let ip = d.service_pod_ip(CLUSTERS[0]);
                d.connect_from_all(42, &ip, 10);
            },
        },
        Case {
            name: "Connectivity, StrictPortConflict: each port reaches only the cluster that has it",
            setup: |d| {
                d.two_clusters().0["spec"]["ports"] =
                    json!([{"name": "tcp2", "port": 4242, "protocol": "TCP", "targetPort": 42}]);
            },
            body: |d| {
                let ip0 = d.service_pod_ip(CLUSTERS[0]);
                let ip1 = d.service_pod_ip(CLUSTERS[1]);
                d.connect_from_all(42, &ip0, 10);
                d.connect_from_all(4242, &ip1, 10);
            },
        },
        // endpoint_slice.go
        Case {
            name: "EndpointSlice: an MCS EndpointSlice in every cluster, gone on unexport",
            setup: |_| {},
            body: |d| {
                let mut names = Vec::new();
                for c in CLUSTERS {
                    for family in d.ip_families(c) {
                        assert_eq!(family, "IPv4", "[{}]", d.case);
                        let s = d.mcs_slice(c, |_| true);
                        let l = &s["metadata"]["labels"];
                        assert_eq!(
                            l["multicluster.kubernetes.io/service-name"], HELLO,
                            "[{}]",
                            d.case
                        );
                        let by = l["endpointslice.kubernetes.io/managed-by"].as_str();
                        assert!(
                            by.is_some_and(|b| b != "endpointslice-controller.k8s.io"),
                            "[{}] managed-by {by:?}",
                            d.case
                        );
                        names.push((
                            c,
                            s["metadata"]["name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                        ));
                    }
                }
                d.unexport(CLUSTERS[0]);
                for (c, name) in names {
                    d.eventually(20, &format!("slice {name} gone from {c}"), || {
                        d.get(c, &["endpointslice", &name]).is_none().then_some(())
                    });
                }
            },
        },
        // clusterip_service_dns.go
        Case {
            name: "DNS: the clusterset name of a ClusterIP import is its ClusterSetIP",
            setup: |_| {},
            body: |d| {
                for c in CLUSTERS {
                    let si = d.await_service_import(c, |si| {
                        si["spec"]["ips"].as_array().is_some_and(|i| !i.is_empty())
                    });
                    for ip in si["spec"]["ips"].as_array().into_iter().flatten() {
                        let ip = ip.as_str().unwrap_or_default().to_string();
                        let cmd = format!("nslookup -type=A {}.", d.fqdn());
                        d.await_output(c, &cmd, 1, |o| o.contains(&ip));
                    }
                }
            },
        },
        Case {
            name: "DNS: one SRV record for the bare clusterset name of a ClusterIP import",
            setup: |_| {},
            body: |d| {
                for c in CLUSTERS {
                    let recs = d.srv_records(c, 1);
                    assert_eq!(recs, vec![(42, d.fqdn())], "[{}] {c}", d.case);
                }
            },
        },
        Case {
            name: "DNS: the cluster.local name stays the local Service's",
            setup: |_| {},
            body: |d| {
                let ip = d.eventually(20, "the local ClusterIP", || {
                    let svc = d.get(CLUSTERS[0], &["service", HELLO])?;
                    svc["spec"]["clusterIP"].as_str().map(String::from)
                });
                let cmd = format!(
                    "nslookup -type=A {HELLO}.{}.svc.cluster.local.",
                    d.namespace
                );
                d.await_output(CLUSTERS[0], &cmd, 1, |o| o.contains(&ip));
            },
        },
        // headless_service_dns.go
        Case {
            name: "DNS, Headless: the clusterset name answers every ready endpoint",
            setup: headless_dns,
            body: |d| {
                for c in CLUSTERS {
                    for family in d.ip_families(c) {
                        assert_eq!(family, "IPv4", "[{}]", d.case);
                        let mut want: Vec<String> =
                            d.k8s_endpoints(2).into_iter().map(|(a, _)| a).collect();
                        want.sort();
                        let cmd = format!("nslookup -type=A {}.", d.fqdn());
                        d.await_output(c, &cmd, 1, |o| nslookup_addresses(o) == want);
                    }
                }
            },
        },
        Case {
            name: "DNS, Headless, EndpointSlice: a StatefulSet pod by <hostname>.<clusterid>",
            setup: |d| {
                headless_dns(d);
                d.deployment = None;
                d.stateful_set = Some(2);
            },
            body: |d| {
                for c in CLUSTERS {
                    for family in d.ip_families(c) {
                        assert_eq!(family, "IPv4", "[{}]", d.case);
                        let s = d.mcs_slice(c, |s| {
                            let e = s["endpoints"].as_array().cloned().unwrap_or_default();
                            e.len() == 2
                                && e.iter().all(|e| {
                                    e["conditions"]["ready"] != false
                                        && e["hostname"].as_str().is_some_and(|h| !h.is_empty())
                                })
                        });
                        let cluster =
                            s["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string();
                        for e in s["endpoints"].as_array().into_iter().flatten() {
                            let host = e["hostname"].as_str().unwrap_or_default();
                            let cmd = format!(
                                "nslookup -type=A {host}.{cluster}.{HELLO}.{}.svc.{DOMAIN}.",
                                d.namespace
                            );
                            let mut want: Vec<String> = e["addresses"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|a| a.as_str().map(String::from))
                                .collect();
                            want.sort();
                            d.await_output(c, &cmd, 1, |o| nslookup_addresses(o) == want);
                        }
                    }
                }
            },
        },
        Case {
            name: "DNS, Headless: SRV records for the bare clusterset name, one per endpoint",
            setup: headless_dns,
            body: |d| {
                let endpoints = d.k8s_endpoints(2);
                for c in CLUSTERS {
                    let recs = d.srv_records(c, endpoints.len());
                    for (_, host) in &endpoints {
                        let rec = recs.iter().find(|(_, t)| t.starts_with(host.as_str()));
                        let rec = rec.unwrap_or_else(|| {
                            d.fail(format!("no SRV record for {host} on {c}: {recs:?}"))
                        });
                        assert_eq!(rec.0, 42, "[{}]", d.case);
                    }
                }
            },
        },
    ]
}

impl Driver<'_> {
    /// The suite's `expectSRVRecords`: `nslookup -type=SRV` until it gives `n` records (20 s).
    fn srv_records(&self, c: &str, n: usize) -> Vec<(u16, String)> {
        let cmd = format!("nslookup -type=SRV {}.", self.fqdn());
        self.eventually(20, &format!("{n} SRV records on {c}"), || {
            let recs = nslookup_srv(&self.exec(c, &cmd));
            (recs.len() == n).then_some(recs)
        })
    }
}

#[test]
fn nslookup_output_is_read_as_the_suite_reads_it() {
    let a = "Server:\t\t127.10.0.10\nAddress:\t127.10.0.10#53\n\nName:\thello.ns.svc.clusterset.local\nAddress: 127.0.0.9\nName:\thello.ns.svc.clusterset.local\nAddress: 127.0.0.8\n";
    assert_eq!(nslookup_addresses(a), ["127.0.0.8", "127.0.0.9"]);
    assert!(nslookup_addresses("** server can't find x: NXDOMAIN\n").is_empty());
    let srv = "hello.ns.svc.clusterset.local\tservice = 0 100 42 hello.ns.svc.clusterset.local.\n";
    assert_eq!(
        nslookup_srv(srv),
        [(42, "hello.ns.svc.clusterset.local".to_string())]
    );
}

#[test]
fn the_mcs_conformance_suite_passes() {
    if !sandbox_available() {
        eprintln!(
            "skipped: the request pods resolve through their sandbox's resolv.conf, which needs a root node agent (CI runs as root)"
        );
        return;
    }
    let env = DevEnv::up(&["--clusters", "2"]);
    let k = env.kubectl();
    let started = Instant::now();
    let queue = Mutex::new(cases().into_iter().enumerate().collect::<Vec<_>>());
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..AT_ONCE {
            s.spawn(|| {
                loop {
                    let Some((n, case)) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let t = Instant::now();
                    let k = &k;
                    let outcome = std::thread::scope(|s| {
                        std::thread::Builder::new()
                            .name(case.name.into())
                            .spawn_scoped(s, move || {
                                let mut d = Driver::new(k, case.name, n);
                                (case.setup)(&mut d);
                                d.start();
                                let r =
                                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                        (case.body)(&d)
                                    }));
                                d.stop();
                                if let Err(e) = r {
                                    std::panic::resume_unwind(e);
                                }
                            })
                            .expect("a thread")
                            .join()
                    });
                    let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
                    eprintln!(
                        "{verdict:>6} {:>5.1}s  {}",
                        t.elapsed().as_secs_f64(),
                        case.name
                    );
                    if outcome.is_err() {
                        failed.lock().unwrap().push(case.name);
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    eprintln!(
        "MCS conformance: {} cases, {} failed, {:.0} s",
        cases().len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "failed cases: {failed:#?}");
}
