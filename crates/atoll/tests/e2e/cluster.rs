//! The cluster runtime end to end: `atoll dev up` environments (real API servers, schedulers,
//! controllers and node agents as separate processes), driven with kubectl and curl.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Kubectl;

/// A `dev up` environment in a temporary directory; `dev down` when dropped.
pub(crate) struct DevEnv {
    pub(crate) dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl DevEnv {
    pub(crate) fn up(extra: &[&str]) -> DevEnv {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let out = atoll(&dir, &[&["dev", "up"], extra].concat());
        assert!(out.0, "dev up failed: {}", out.1);
        assert!(
            out.1.contains("ready"),
            "dev up printed no ready line: {}",
            out.1
        );
        DevEnv { dir, _tmp: tmp }
    }

    /// A directory for an environment the test brings up itself; whatever runs in it is
    /// stopped when the test ends, passed or failed.
    pub(crate) fn unstarted() -> DevEnv {
        let tmp = tempfile::tempdir().expect("tempdir");
        DevEnv {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        }
    }

    pub(crate) fn kubectl(&self) -> Kubectl<'static> {
        Kubectl {
            bin: Path::new("kubectl"),
            kubeconfig: self.dir.join("kubeconfig"),
        }
    }

    /// SIGKILL the environment's process `name` (a server, node, hub or agent).
    pub(crate) fn sigkill(&self, name: &str) {
        let pid = self.pid_of(name);
        let killed = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success(), "kill -9 {pid} ({name})");
    }

    /// Run `atoll ARGS` against the hub of the environment; it must succeed.
    pub(crate) fn atoll_on_hub(&self, args: &[&str]) {
        let kubeconfig = self.dir.join("kubeconfig").display().to_string();
        let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
            .args(args)
            .args(["--kubeconfig", &kubeconfig, "--context", "hub"])
            .output()
            .expect("atoll runs");
        assert!(
            out.status.success(),
            "atoll {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn pid_of(&self, name: &str) -> i32 {
        let state: Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("dev.json")).unwrap()).unwrap();
        state["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["pid"].as_i64())
            .expect("the process is in dev.json") as i32
    }
}

impl Drop for DevEnv {
    fn drop(&mut self) {
        let _ = atoll(&self.dir, &["dev", "down"]);
    }
}

/// Run `atoll ARGS --data-dir DIR`; (success, stdout + stderr).
pub(crate) fn atoll(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("atoll runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub(crate) fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Whether pods get their sandbox here: a root node agent that may make mount namespaces (as
/// CI runs); what needs a pod's own resolv.conf or volumes at their mountPath needs it.
pub(crate) fn sandbox_available() -> bool {
    let namespaces = Command::new("unshare")
        .args(["--mount", "--uts", "--propagation", "private", "true"])
        .status()
        .is_ok_and(|s| s.success());
    rustix::process::geteuid().is_root() && namespaces
}

/// The ClusterIP of member `ctx`'s cluster DNS (Service `kube-system/kube-dns`).
pub(crate) fn dns_ip(k: &Kubectl, ctx: &str) -> String {
    k.ok(&[
        "--context",
        ctx,
        "-n",
        "kube-system",
        "get",
        "svc",
        "kube-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

/// `dig @server +short ARGS`: the answer, trimmed.
pub(crate) fn dig(server: &str, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args([&format!("@{server}"), "+short", "+time=2", "+tries=2"])
        .args(args)
        .output()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Poll until `f` returns Some, for up to `secs` seconds.
pub(crate) fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ready_endpoints(k: &Kubectl, ctx: &str, svc: &str) -> Vec<String> {
    let slices = json(&k.ok(&[
        "--context",
        ctx,
        "get",
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={svc}"),
        "-o",
        "json",
    ]));
    slices["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .filter_map(|e| e["addresses"][0].as_str().map(String::from))
        .collect()
}

pub(crate) fn http_status(url: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            url,
        ])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn running_pods(k: &Kubectl, ctx: &str, selector: &str) -> Vec<Value> {
    let pods = json(&k.ok(&[
        "--context",
        ctx,
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "json",
    ]));
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

/// Wait up to `secs` for exactly `n` pods of `selector` in member1, all Ready (none deleted).
fn ready_pods(k: &Kubectl, selector: &str, n: usize, secs: u64) -> Vec<Value> {
    wait_for(secs, &format!("{n} ready pods of {selector}"), || {
        let pods = running_pods(k, "member1", selector);
        (pods.len() == n && pods.iter().all(is_ready)).then_some(pods)
    })
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[test]
fn deployment_of_http_servers_serves_scales_probes_logs_and_rolls_out() {
    let env = DevEnv::up(&["--clusters", "2"]);
    let k = env.kubectl();
    // Every context answers; each member has its node.
    for ctx in ["hub", "member1", "member2"] {
        let nodes = k.ok(&["--context", ctx, "get", "nodes"]);
        assert!(nodes.contains(" Ready "), "{ctx}: {nodes}");
    }
    let m1 = ["--context", "member1"];
    k.ok(&[
        &m1[..],
        &[
            "create",
            "deployment",
            "web",
            "--replicas=3",
            "--image=python:3",
            "--port=8000",
            "--",
            "sh",
            "-c",
            "touch ready; exec python3 -m http.server 8000 --bind $POD_IP",
        ],
    ]
    .concat());
    k.ok(&[
        &m1[..],
        &[
            "expose",
            "deployment",
            "web",
            "--port=80",
            "--target-port=8000",
        ],
    ]
    .concat());
    let pods = ready_pods(&k, "app=web", 3, 60);
    let ips: Vec<String> = pods
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    let distinct: std::collections::HashSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 3, "each pod has its own IP: {ips:?}");
    for ip in &ips {
        assert!(
            ip.starts_with("127."),
            "pod IPs are loopback addresses: {ip}"
        );
        // Without a readiness probe, Ready says the container started, not that python has
        // bound its socket yet (on a busy machine that takes a while): wait for the answer.
        let url = format!("http://{ip}:8000/");
        wait_for(30, &format!("pod {ip} to answer 200"), || {
            (http_status(&url) == "200").then_some(())
        });
    }
    // The Service answers on its ClusterIP (a loopback address the cluster's proxy listens
    // on), from each of the pods in turn. (Port 8080: below 1024 needs privileges.)
    k.ok(&[
        &m1[..],
        &[
            "expose",
            "deployment",
            "web",
            "--name=web-alt",
            "--port=8080",
            "--target-port=8000",
        ],
    ]
    .concat());
    let cluster_ip = k.ok(&[
        &m1[..],
        &["get", "svc", "web-alt", "-o", "jsonpath={.spec.clusterIP}"],
    ]
    .concat());
    assert!(cluster_ip.starts_with("127."), "{cluster_ip}");
    let via_service = format!("http://{cluster_ip}:8080/");
    wait_for(30, "the Service to answer on its ClusterIP", || {
        (http_status(&via_service) == "200").then_some(())
    });
    for _ in 0..6 {
        assert_eq!(http_status(&via_service), "200");
    }
    let mut ready = wait_for(30, "3 ready endpoints", || {
        let e = ready_endpoints(&k, "member1", "web");
        (e.len() == 3).then_some(e)
    });
    ready.sort();
    let mut sorted_ips = ips.clone();
    sorted_ips.sort();
    assert_eq!(ready, sorted_ips);

    // Logs: the server's access log, with --tail, and followed.
    let first = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    let first_ip = pods[0]["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(
        http_status(&format!("http://{first_ip}:8000/hello-logs")),
        "404"
    );
    let logs = k.eventually(&[&m1[..], &["logs", &first]].concat(), |t| {
        t.contains("/hello-logs")
    });
    assert!(logs.contains("GET / HTTP/1.1"), "{logs}");
    let tail = k.ok(&[&m1[..], &["logs", &first, "--tail=1"]].concat());
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.contains("/hello-logs"), "{tail}");
    let mut follow = k
        .cmd(&[&m1[..], &["logs", "-f", &first]].concat())
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("/while-following"))
    });
    std::thread::sleep(Duration::from_millis(500));
    http_status(&format!("http://{first_ip}:8000/while-following"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        reader.join().unwrap().is_some(),
        "kubectl logs -f showed the new request"
    );

    // A readiness probe; a pod whose probe fails loses its endpoint.
    k.ok(&[
        &m1[..],
        &[
            "patch", "deployment", "web", "--type=strategic", "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"python","readinessProbe":{"httpGet":{"path":"/ready","port":8000},"periodSeconds":1,"failureThreshold":1}}]}}}}"#,
        ],
    ]
    .concat());
    k.ok(&[
        &m1[..],
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    ]
    .concat());
    let pods = ready_pods(&k, "app=web", 3, 30);
    // Pods started after a Service get its variables, as the kubelet gives them.
    let seen = k.ok(&[
        &m1[..],
        &[
            "exec",
            pods[0]["metadata"]["name"].as_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo $WEB_ALT_SERVICE_HOST:$WEB_ALT_SERVICE_PORT $WEB_ALT_PORT",
        ],
    ]
    .concat());
    assert_eq!(
        seen.trim(),
        format!("{cluster_ip}:8080 tcp://{cluster_ip}:8080"),
        "{seen}"
    );
    wait_for(30, "3 ready endpoints after the rollout", || {
        (ready_endpoints(&k, "member1", "web").len() == 3).then_some(())
    });
    let victim = &pods[1];
    let victim_ip = victim["status"]["podIP"].as_str().unwrap().to_string();
    let pod_dir = find_pod_dir(&env.dir, victim["metadata"]["uid"].as_str().unwrap());
    std::fs::remove_file(pod_dir.join("ready")).expect("the pod's ready file");
    let left = wait_for(30, "the failing pod's endpoint to go", || {
        let e = ready_endpoints(&k, "member1", "web");
        (e.len() == 2).then_some(e)
    });
    assert!(!left.contains(&victim_ip), "{left:?} still has {victim_ip}");

    // Scale to 1.
    k.ok(&[&m1[..], &["scale", "deployment", "web", "--replicas=1"]].concat());
    wait_for(60, "one pod left", || {
        let pods =
            json(&k.ok(&[&m1[..], &["get", "pods", "-l", "app=web", "-o", "json"]].concat()));
        (pods["items"].as_array().unwrap().len() == 1).then_some(())
    });
    wait_for(30, "one endpoint left", || {
        (ready_endpoints(&k, "member1", "web").len() <= 1).then_some(())
    });

    // An image change rolls out.
    k.ok(&[
        &m1[..],
        &["set", "image", "deployment/web", "python=python:3.12"],
    ]
    .concat());
    let status = k.ok(&[
        &m1[..],
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    ]
    .concat());
    assert!(status.contains("successfully rolled out"), "{status}");
    let pods = running_pods(&k, "member1", "app=web");
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["spec"]["containers"][0]["image"], "python:3.12");
    let rs = k.ok(&[&m1[..], &["get", "rs", "-l", "app=web", "-o", "name"]].concat());
    assert!(
        rs.lines().count() >= 2,
        "old ReplicaSets are kept for history: {rs}"
    );

    // The default ServiceAccount exists in new namespaces.
    k.ok(&[&m1[..], &["create", "namespace", "team-a"]].concat());
    k.eventually(
        &[
            &m1[..],
            &["get", "serviceaccount", "default", "-n", "team-a"],
        ]
        .concat(),
        |_| true,
    );
}

/// The slot number `dev up` tries first for an environment in `dir` (FNV-1a of its path).
fn home_slot(dir: &Path) -> u16 {
    let path = dir.canonicalize().unwrap();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % 360) as u16
}

fn base_port(dir: &Path) -> u16 {
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("dev.json")).unwrap()).unwrap();
    state["basePort"].as_u64().unwrap() as u16
}

fn find_pod_dir(env_dir: &Path, uid: &str) -> PathBuf {
    let mut stack = vec![env_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                if p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(uid))
                {
                    return p;
                }
                stack.push(p);
            }
        }
    }
    panic!("no pod directory for {uid} under {}", env_dir.display());
}

#[test]
fn pods_that_cannot_run_say_why() {
    let env = DevEnv::up(&["--clusters", "1", "--nodes", "2"]);
    let k = env.kubectl();
    let manifest = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello, file.txt: from-a-volume}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"], resources: {requests: {cpu: "500"}}}
---
apiVersion: v1
kind: Pod
metadata: {name: picky}
spec:
  nodeSelector: {disk: ssd}
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: imageonly}
spec:
  containers:
  - {name: main, image: nginx}
---
apiVersion: v1
kind: Pod
metadata: {name: env}
spec:
  restartPolicy: Never
  volumes:
  - {name: c, configMap: {name: cfg}}
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo name=$MY_NAME ns=$MY_NS node=$MY_NODE ip=$MY_IP pod=$POD_IP g=$GREETING t=$TOKEN e=$EXPANDED p=$P_greeting f=$(cat etc/cfg/file.txt) a=$(ARG)"]
    env:
    - {name: MY_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MY_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: MY_NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: MY_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}}
    - {name: TOKEN, valueFrom: {secretKeyRef: {name: sec, key: token}}}
    - {name: EXPANDED, value: "$(GREETING)-world"}
    - {name: ARG, value: expanded-in-args}
    envFrom:
    - {prefix: P_, configMapRef: {name: cfg}}
    volumeMounts:
    - {name: c, mountPath: /etc/cfg}
---
apiVersion: v1
kind: Pod
metadata: {name: crashes}
spec:
  restartPolicy: OnFailure
  containers:
  - {name: main, image: busybox, command: [sh, -c, "echo failing; exit 3"]}
"#;
    k.ok_stdin(&["--context", "member1", "apply", "-f", "-"], manifest);
    let m1 = ["--context", "member1"];
    // Too big for any node: Pending, PodScheduled=False, a FailedScheduling event.
    let events = k.eventually(
        &[
            &m1[..],
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=huge,reason=FailedScheduling",
                "-o",
                "json",
            ],
        ]
        .concat(),
        |t| t.contains("Insufficient cpu"),
    );
    assert!(events.contains("0/2 nodes are available"), "{events}");
    let huge = json(&k.ok(&[&m1[..], &["get", "pod", "huge", "-o", "json"]].concat()));
    assert_eq!(huge["status"]["phase"], "Pending");
    assert!(huge["spec"]["nodeName"].is_null());
    let sched = huge["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap();
    assert_eq!(sched["status"], "False");
    assert_eq!(sched["reason"], "Unschedulable");
    k.eventually(
        &[
            &m1[..],
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=picky,reason=FailedScheduling",
            ],
        ]
        .concat(),
        |t| t.contains("didn't match Pod's node affinity/selector"),
    );
    // Labelling a node makes the picky pod schedulable; it is retried without being touched.
    k.ok(&[&m1[..], &["label", "node", "member1-node2", "disk=ssd"]].concat());
    k.eventually(
        &[
            &m1[..],
            &[
                "get",
                "pod",
                "picky",
                "-o",
                "jsonpath={.spec.nodeName} {.status.phase}",
            ],
        ]
        .concat(),
        |t| t == "member1-node2 Running",
    );
    // No command under the process runtime: a clear Waiting reason.
    let waiting = k.eventually(
        &[&m1[..], &["get", "pod", "imageonly", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}"]].concat(),
        |t| t.starts_with("NoCommand"),
    );
    assert!(waiting.contains("set `command`"), "{waiting}");
    let table = k.ok(&[&m1[..], &["get", "pod", "imageonly"]].concat());
    assert!(table.contains("NoCommand"), "{table}");
    // Environment, volumes and $(VAR) expansion as Kubernetes builds them.
    k.eventually(
        &[
            &m1[..],
            &["get", "pod", "env", "-o", "jsonpath={.status.phase}"],
        ]
        .concat(),
        |t| t == "Succeeded",
    );
    let pod = json(&k.ok(&[&m1[..], &["get", "pod", "env", "-o", "json"]].concat()));
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let node = pod["spec"]["nodeName"].as_str().unwrap().to_string();
    let out = k.ok(&[&m1[..], &["logs", "env"]].concat());
    assert_eq!(
        out.trim(),
        format!(
            "name=env ns=default node={node} ip={ip} pod={ip} g=hello t=s3cret e=hello-world p=hello f=from-a-volume a=expanded-in-args"
        )
    );
    let term = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 0);
    assert_eq!(term["reason"], "Completed");
    // A failing container is restarted (OnFailure) with its exit code recorded.
    let crashes = k.eventually(
        &[&m1[..], &["get", "pod", "crashes", "-o", "json"]].concat(),
        |t| {
            json(t)["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .unwrap_or(0)
                >= 1
        },
    );
    let crashes = json(&crashes);
    assert_eq!(
        crashes["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        3
    );
    let previous = k.ok(&[&m1[..], &["logs", "crashes", "--previous"]].concat());
    assert_eq!(previous.trim(), "failing");
    // Deleting a running pod stops it within its grace period and removes it.
    k.ok(&[&m1[..], &["delete", "pod", "picky", "--timeout=30s"]].concat());
    let gone = k.run(&[&m1[..], &["get", "pod", "picky"]].concat());
    assert!(!gone.status.success());
}

#[test]
fn a_lost_node_is_marked_and_its_pods_are_replaced_elsewhere() {
    let env = DevEnv::up(&[
        "--clusters",
        "1",
        "--nodes",
        "2",
        "--node-lease-seconds",
        "3",
        "--default-toleration-seconds",
        "1",
    ]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    k.ok(&[
        &m1[..],
        &[
            "create",
            "deployment",
            "sleepers",
            "--replicas=4",
            "--image=busybox",
            "--",
            "sleep",
            "86399",
        ],
    ]
    .concat());
    let pods = ready_pods(&k, "app=sleepers", 4, 60);
    let on_node1 = pods
        .iter()
        .filter(|p| p["spec"]["nodeName"] == "member1-node1")
        .count();
    assert!(
        on_node1 > 0 && on_node1 < 4,
        "the scheduler spreads pods over both nodes"
    );
    // SIGKILL node1's agent.
    env.sigkill("member1-node1");
    k.eventually(
        &[
            &m1[..],
            &[
                "get",
                "node",
                "member1-node1",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
        ]
        .concat(),
        |t| t == "Unknown",
    );
    let taints = k.ok(&[
        &m1[..],
        &[
            "get",
            "node",
            "member1-node1",
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ],
    ]
    .concat());
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    let nodes = k.ok(&[&m1[..], &["get", "nodes"]].concat());
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("member1-node1") && l.contains("NotReady")),
        "{nodes}"
    );
    // Its pods are evicted and replaced on node2.
    let replaced = wait_for(60, "4 running pods on node2", || {
        let pods = running_pods(&k, "member1", "app=sleepers");
        (pods.len() == 4
            && pods
                .iter()
                .all(|p| p["spec"]["nodeName"] == "member1-node2" && is_ready(p)))
        .then_some(pods)
    });
    assert_eq!(replaced.len(), 4);
    let all = json(
        &k.ok(&[
            &m1[..],
            &["get", "pods", "-l", "app=sleepers", "-o", "json"],
        ]
        .concat()),
    );
    let terminating = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["metadata"]["deletionTimestamp"].is_null())
        .count();
    assert_eq!(
        terminating, on_node1,
        "the lost node's pods wait, Terminating, for their node"
    );
    // `dev up` brings the agent back: Ready, untainted, and it finishes the evicted pods.
    let (ok, out) = atoll(&env.dir, &["dev", "up"]);
    assert!(ok, "{out}");
    k.eventually(
        &[
            &m1[..],
            &[
                "get",
                "node",
                "member1-node1",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}/{.spec.taints}",
            ],
        ]
        .concat(),
        |t| t == "True/" || t == "True/[]",
    );
    wait_for(30, "the evicted pods to be gone", || {
        let all = json(
            &k.ok(&[
                &m1[..],
                &["get", "pods", "-l", "app=sleepers", "-o", "json"],
            ]
            .concat()),
        );
        (all["items"].as_array().unwrap().len() == 4).then_some(())
    });
}

#[test]
fn dev_down_keeps_data_and_environments_do_not_collide() {
    let env = DevEnv::up(&["--clusters", "1"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    k.ok(&[
        &m1[..],
        &["create", "configmap", "kept", "--from-literal=a=b"],
    ]
    .concat());
    k.ok(&[
        &m1[..],
        &[
            "create",
            "deployment",
            "kept",
            "--replicas=2",
            "--image=busybox",
            "--",
            "sleep",
            "86398",
        ],
    ]
    .concat());
    let before = ready_pods(&k, "app=kept", 2, 60);
    // A second environment in another directory runs beside the first.
    let other = DevEnv::up(&["--clusters", "1"]);
    other
        .kubectl()
        .ok(&["--context", "member1", "get", "nodes"]);
    // Their pods get addresses from different ranges (pods of both may listen on one port).
    let ranges = |dir: &Path| -> Vec<String> {
        let state: Value =
            serde_json::from_slice(&std::fs::read(dir.join("dev.json")).unwrap()).unwrap();
        state["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| {
                let args = p["args"].as_array()?;
                let at = args.iter().position(|a| a == "--cluster-cidr")?;
                Some(args[at + 1].as_str()?.to_string())
            })
            .collect()
    };
    let (mine, theirs) = (ranges(&env.dir), ranges(&other.dir));
    assert_eq!(mine.len(), 2);
    assert!(
        mine.iter().all(|r| !theirs.contains(r)),
        "{mine:?} {theirs:?}"
    );
    // Its ports are taken: an environment that would reuse them says so.
    let third = DevEnv::unstarted();
    let state: Value =
        serde_json::from_slice(&std::fs::read(env.dir.join("dev.json")).unwrap()).unwrap();
    let clash = serde_json::json!({"basePort": state["basePort"]});
    std::fs::write(third.dir.join("dev.json"), clash.to_string()).unwrap();
    let (ok, out) = atoll(&third.dir, &["dev", "up", "--clusters", "1"]);
    assert!(!ok, "a port clash must fail: {out}");
    assert!(out.contains("already in use"), "{out}");
    // A new environment whose own slot is held by something else takes the next free one.
    let fourth = DevEnv::unstarted();
    let own = 20000 + home_slot(&fourth.dir) * 20;
    let holders: Vec<std::net::TcpListener> = (own..own + 20)
        .filter_map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
        .collect();
    assert!(!holders.is_empty());
    let up = ["dev", "up", "--clusters", "1", "--runtime", "simulated"];
    let (ok, out) = atoll(&fourth.dir, &up);
    assert!(ok, "{out}");
    assert_ne!(base_port(&fourth.dir), own);
    let (ok, out) = atoll(&fourth.dir, &["dev", "down"]);
    assert!(ok, "{out}");
    drop(holders);
    // Nor a free slot whose pod ranges a running environment uses: slots 120 apart share
    // them, and a held hub port there is an environment running.
    let fifth = DevEnv::unstarted();
    let slot = home_slot(&fifth.dir);
    let sharer = |slot: u16| 20000 + (slot + 120) % 360 * 20;
    // (Held by us, or already by something else: in use either way.)
    let hub = std::net::TcpListener::bind(("127.0.0.1", sharer(slot)));
    let (ok, out) = atoll(&fifth.dir, &up);
    assert!(ok, "{out}");
    let taken = base_port(&fifth.dir);
    assert_ne!(taken, 20000 + slot * 20);
    let (ok, out) = atoll(&fifth.dir, &["dev", "down"]);
    assert!(ok, "{out}");
    drop(hub);
    // Once recorded, its ranges are its own: if another environment runs on them while it is
    // down, starting it again says so.
    let hub = std::net::TcpListener::bind(("127.0.0.1", sharer((taken - 20000) / 20)));
    let (ok, out) = atoll(&fifth.dir, &up);
    assert!(!ok && out.contains("pod ranges"), "{out}");
    drop(hub);

    let (ok, out) = atoll(&env.dir, &["dev", "status"]);
    assert!(ok && out.contains("running"), "{out}");
    let (ok, out) = atoll(&env.dir, &["dev", "down"]);
    assert!(ok, "{out}");
    let (_, out) = atoll(&env.dir, &["dev", "status"]);
    assert!(out.contains("stopped") && !out.contains("running"), "{out}");
    // The containers stopped with their node.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("sleep 86398"),
        "container processes outlived dev down"
    );

    // The environment keeps its shape.
    let (ok, out) = atoll(&env.dir, &["dev", "up", "--clusters", "3"]);
    assert!(!ok && out.contains("keeps that shape"), "{out}");
    let (ok, out) = atoll(&env.dir, &["dev", "up"]);
    assert!(
        ok && out.contains("hub and 1 member cluster(s) ready"),
        "{out}"
    );
    assert_eq!(
        k.ok(&[
            &m1[..],
            &["get", "configmap", "kept", "-o", "jsonpath={.data.a}"]
        ]
        .concat()),
        "b"
    );
    let after = ready_pods(&k, "app=kept", 2, 60);
    let names = |v: &[Value]| {
        let mut n: Vec<String> = v
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(&before),
        names(&after),
        "the node agent restarts its pods, it does not lose them"
    );
}

#[test]
fn init_containers_run_first_in_order_and_sidecars_alongside() {
    let env = DevEnv::up(&["--clusters", "1"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: initialized}
spec:
  initContainers:
  - {name: setup, image: busybox, command: [sh, -c, "echo prepared > shared.txt; echo setup-ran"]}
  - {name: sidecar, image: busybox, restartPolicy: Always, command: [sh, -c, "echo sidecar-up; exec sleep 3600"]}
  - {name: check, image: busybox, command: [sh, -c, "test -f shared.txt && echo check-ran"]}
  containers:
  - {name: main, image: busybox, command: [sh, -c, "cat shared.txt; exec sleep 3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: retried}
spec:
  initContainers:
  - {name: flaky, image: busybox, command: [sh, -c, "if [ -f tried ]; then exit 0; fi; touch tried; exit 1"]}
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: failed}
spec:
  restartPolicy: Never
  initContainers:
  - {name: broken, image: busybox, command: [sh, -c, "exit 3"]}
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: waiting}
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - {name: forever, image: busybox, command: [sleep, "3600"]}
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"]}
"#;
    k.ok_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), manifest);
    let pod = |name: &str| json(&k.ok(&[&m1[..], &["get", "pod", name, "-o", "json"]].concat()));
    let condition = |p: &Value, t: &str| {
        p["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .map(|c| c["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    // In order: setup completed, the sidecar runs, check completed (it saw setup's file),
    // then main, which reads it too.
    let p = wait_for(60, "initialized to be Ready", || {
        let p = pod("initialized");
        is_ready(&p).then_some(p)
    });
    assert_eq!(condition(&p, "Initialized"), "True");
    let init = p["status"]["initContainerStatuses"].as_array().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["setup", "sidecar", "check"]);
    assert_eq!(init[0]["state"]["terminated"]["reason"], "Completed", "{p}");
    assert!(init[1]["state"]["running"].is_object(), "{p}");
    assert_eq!(init[2]["state"]["terminated"]["exitCode"], 0, "{p}");
    assert_eq!(p["status"]["containerStatuses"][0]["name"], "main");
    for (container, line) in [
        ("setup", "setup-ran"),
        ("sidecar", "sidecar-up"),
        ("check", "check-ran"),
        ("main", "prepared"),
    ] {
        k.eventually(
            &[&m1[..], &["logs", "initialized", "-c", container]].concat(),
            |t| t.contains(line),
        );
    }
    // A failed init container is run again (the pod's policy is Always) until it completes.
    let p = wait_for(60, "retried to be Ready", || {
        let p = pod("retried");
        is_ready(&p).then_some(p)
    });
    let flaky = &p["status"]["initContainerStatuses"][0];
    assert!(flaky["restartCount"].as_i64().unwrap() >= 1, "{p}");
    assert_eq!(flaky["state"]["terminated"]["exitCode"], 0, "{p}");
    // Under `Never`, a failed init container fails the pod; its app container never runs.
    let p = wait_for(30, "failed to fail", || {
        let p = pod("failed");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(condition(&p, "Initialized"), "False");
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 3,
        "{p}"
    );
    assert!(
        p["status"]["containerStatuses"][0]["state"]["waiting"].is_object(),
        "{p}"
    );
    let table = k.ok(&[&m1[..], &["get", "pods", "failed", "waiting"]].concat());
    assert!(table.contains("Init:Error"), "{table}");
    // A pod still initializing is Pending, shows as such, and goes promptly when deleted.
    let p = pod("waiting");
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
    assert!(table.contains("Init:0/1"), "{table}");
    k.ok(&[&m1[..], &["delete", "pod", "waiting", "--timeout=30s"]].concat());
}

#[test]
fn statefulsets_keep_names_claims_and_order() {
    let env = DevEnv::up(&["--clusters", "1"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    let manifest = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: main
        image: busybox
        command: [sh, -c, "echo $HOSTNAME >> data/started; exec sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#;
    k.ok_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), manifest);
    let rollout = || k.ok(&[&m1[..], &["rollout", "status", "sts/db", "--timeout=60s"]].concat());
    rollout();
    let pods = || {
        let mut pods = running_pods(&k, "member1", "app=db");
        pods.sort_by_key(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
        pods
    };
    let names = |pods: &[Value]| -> Vec<String> {
        pods.iter()
            .map(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let all = wait_for(60, "db-0..db-2 ready", || {
        let p = pods();
        (p.len() == 3 && p.iter().all(is_ready)).then_some(p)
    });
    assert_eq!(names(&all), ["db-0", "db-1", "db-2"]);
    assert_eq!(all[1]["spec"]["hostname"], "db-1");
    assert_eq!(all[1]["spec"]["subdomain"], "db");
    assert_eq!(
        all[1]["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
        "1"
    );
    // Ordered: each pod was created once the one before it was ready.
    let created = |p: &Value| {
        p["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(created(&all[0]) <= created(&all[1]) && created(&all[1]) <= created(&all[2]));
    // A deleted pod comes back under its name, with its claim's data.
    k.ok(&[&m1[..], &["delete", "pod", "db-1"]].concat());
    wait_for(60, "db-1 back and ready", || {
        let p = pods();
        let back = p.iter().find(|x| x["metadata"]["name"] == "db-1")?;
        (back["metadata"]["uid"] != all[1]["metadata"]["uid"] && is_ready(back)).then_some(())
    });
    let started = k.ok(&[&m1[..], &["exec", "db-1", "--", "cat", "data/started"]].concat());
    assert_eq!(
        started.lines().collect::<Vec<_>>(),
        ["db-1", "db-1"],
        "{started}"
    );
    // A new template rolls out to every pod.
    k.ok(&[&m1[..], &["set", "image", "sts/db", "main=busybox:2"]].concat());
    rollout();
    let sts = json(&k.ok(&[&m1[..], &["get", "sts", "db", "-o", "json"]].concat()));
    let revision = sts["status"]["updateRevision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    wait_for(60, "every pod at the new revision", || {
        let p = pods();
        (p.len() == 3
            && p.iter().all(|x| {
                x["metadata"]["labels"]["controller-revision-hash"] == revision.as_str()
                    && x["spec"]["containers"][0]["image"] == "busybox:2"
                    && is_ready(x)
            }))
        .then_some(())
    });
    // Scaled down, the highest ordinals go.
    k.ok(&[&m1[..], &["scale", "sts", "db", "--replicas=1"]].concat());
    wait_for(60, "only db-0 left", || {
        (names(&pods()) == ["db-0"]).then_some(())
    });
    // Its claims are objects, bound to volumes, and stay when the pods go.
    let pvcs = k.ok(&[&m1[..], &["get", "pvc"]].concat());
    for claim in ["data-db-0", "data-db-1", "data-db-2"] {
        assert!(
            pvcs.lines()
                .any(|l| l.starts_with(claim) && l.contains("Bound")),
            "{pvcs}"
        );
    }
    // A pod waits for its claim; a claim's volume goes with it.
    k.ok_stdin(
        &[&m1[..], &["apply", "-f", "-"]].concat(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: claimer}\nspec:\n  volumes: [{name: v, persistentVolumeClaim: {claimName: later}}]\n  containers: [{name: main, image: busybox, command: [sleep, \"3600\"], volumeMounts: [{name: v, mountPath: /v}]}]\n",
    );
    k.eventually(
        &[&m1[..], &["get", "pod", "claimer", "-o", "json"]].concat(),
        |t| t.contains("persistentvolumeclaim \\\"later\\\" not found"),
    );
    k.ok_stdin(
        &[&m1[..], &["apply", "-f", "-"]].concat(),
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: later}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    wait_for(60, "the claimer to run with its claim", || {
        let p = json(&k.ok(&[&m1[..], &["get", "pod", "claimer", "-o", "json"]].concat()));
        is_ready(&p).then_some(())
    });
    let volume = k.ok(&[
        &m1[..],
        &["get", "pvc", "later", "-o", "jsonpath={.spec.volumeName}"],
    ]
    .concat());
    assert!(volume.starts_with("pvc-"), "{volume}");
    k.ok(&[&m1[..], &["delete", "pod", "claimer"]].concat());
    k.ok(&[&m1[..], &["delete", "pvc", "later"]].concat());
    wait_for(30, "the claim's volume to go", || {
        let out = k.run(&[&m1[..], &["get", "pv", &volume]].concat());
        (!out.status.success()).then_some(())
    });
    // A claim naming its volume waits, Pending, for that one, then binds to it.
    k.ok_stdin(
        &[&m1[..], &["apply", "-f", "-"]].concat(),
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: static}\nspec: {accessModes: [ReadWriteOnce], volumeName: my-pv, resources: {requests: {storage: 1Gi}}}\n",
    );
    let phase = |claim: &str| {
        k.ok(&[
            &m1[..],
            &["get", "pvc", claim, "-o", "jsonpath={.status.phase}"],
        ]
        .concat())
    };
    assert_eq!(phase("static"), "Pending");
    k.ok_stdin(
        &[&m1[..], &["apply", "-f", "-"]].concat(),
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: my-pv}\nspec: {capacity: {storage: 5Gi}, accessModes: [ReadWriteOnce], csi: {driver: node-directory.atoll.io, volumeHandle: default/static}}\n",
    );
    wait_for(30, "the static claim to bind", || {
        (phase("static") == "Bound").then_some(())
    });
    let pv = json(&k.ok(&[&m1[..], &["get", "pv", "my-pv", "-o", "json"]].concat()));
    assert_eq!(pv["spec"]["claimRef"]["name"], "static", "{pv}");
    assert_eq!(pv["status"]["phase"], "Bound", "{pv}");
    // What may not change, does not.
    let out = k.run(
        &[
            &m1[..],
            &[
                "patch",
                "sts",
                "db",
                "-p",
                r#"{"spec":{"serviceName":"other"}}"#,
            ],
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("spec.serviceName"),
        "{err}"
    );
}

#[test]
fn cronjobs_start_jobs_on_their_schedule() {
    let env = DevEnv::up(&["--clusters", "1"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    let manifest = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: every}
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: main, image: busybox, command: [sh, -c, "echo tick"]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: paused}
spec:
  schedule: "* * * * *"
  suspend: true
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: main, image: busybox, command: ["true"]}]
"#;
    k.ok_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), manifest);
    // A Job from its template now, by hand (kubectl reads the template).
    k.ok(&[
        &m1[..],
        &["create", "job", "by-hand", "--from=cronjob/every"],
    ]
    .concat());
    k.ok(&[
        &m1[..],
        &[
            "wait",
            "--for=condition=complete",
            "job/by-hand",
            "--timeout=60s",
        ],
    ]
    .concat());
    let jobs = || json(&k.ok(&[&m1[..], &["get", "jobs", "-o", "json"]].concat()));
    let complete = |j: &Value| {
        j["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
        })
    };
    // At the next minute, its own Job, named after the minute, runs to completion.
    let scheduled = wait_for(90, "a scheduled Job to complete", || {
        jobs()["items"].as_array().and_then(|items| {
            items
                .iter()
                .find(|j| {
                    j["metadata"]["name"]
                        .as_str()
                        .and_then(|n| n.strip_prefix("every-"))
                        .is_some_and(|m| m.parse::<u64>().is_ok())
                        && complete(j)
                })
                .cloned()
        })
    });
    let annotations = &scheduled["metadata"]["annotations"];
    assert!(
        annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with(":00Z")),
        "{scheduled}"
    );
    let cj = json(&k.ok(&[&m1[..], &["get", "cronjob", "every", "-o", "json"]].concat()));
    assert!(cj["status"]["lastScheduleTime"].is_string(), "{cj}");
    // One successful Job kept: the one by hand, older, goes.
    wait_for(30, "the older Job to go", || {
        let out = k.run(&[&m1[..], &["get", "job", "by-hand"]].concat());
        (!out.status.success()).then_some(())
    });
    // A suspended CronJob starts nothing.
    let paused: Vec<String> = jobs()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["metadata"]["name"].as_str().map(String::from))
        .filter(|n| n.starts_with("paused-"))
        .collect();
    assert!(paused.is_empty(), "{paused:?}");
    let row = k.ok(&[&m1[..], &["get", "cronjob", "paused"]].concat());
    assert!(row.contains("true") && row.contains("<none>"), "{row}");
    // A schedule cron cannot read is refused.
    let out = k.run_stdin(
        &[&m1[..], &["apply", "-f", "-"]].concat(),
        &manifest.replace("name: every", "name: wrong").replace(
            "\"* * * * *\"\n  successful",
            "\"61 * * * *\"\n  successful",
        ),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("spec.schedule"),
        "{err}"
    );
}

#[test]
fn daemonsets_run_a_pod_on_each_node_that_wants_one() {
    let env = DevEnv::up(&["--clusters", "1", "--nodes", "2", "--runtime", "simulated"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    let manifest = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: main, image: agent:1}]
"#;
    k.ok_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), manifest);
    let rollout = || k.ok(&[&m1[..], &["rollout", "status", "ds/agent", "--timeout=60s"]].concat());
    let nodes_of_pods = || {
        let pods = running_pods(&k, "member1", "app=agent");
        let mut nodes: Vec<String> = pods
            .iter()
            .map(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        nodes.sort();
        nodes
    };
    assert!(rollout().contains("successfully rolled out"));
    assert_eq!(nodes_of_pods(), ["member1-node1", "member1-node2"]);
    let row = k.ok(&[&m1[..], &["get", "ds", "agent"]].concat());
    assert!(
        row.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("2")),
        "{row}"
    );
    // A new template rolls out to every node.
    k.ok(&[&m1[..], &["set", "image", "ds/agent", "main=agent:2"]].concat());
    rollout();
    wait_for(30, "every daemon pod on the new image", || {
        let pods = running_pods(&k, "member1", "app=agent");
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "agent:2"))
        .then_some(())
    });
    // Only nodes its nodeSelector picks keep one.
    k.ok(&[&m1[..], &["label", "node", "member1-node2", "disk=ssd"]].concat());
    k.ok(&[
        &m1[..],
        &[
            "patch",
            "ds",
            "agent",
            "-p",
            r#"{"spec":{"template":{"spec":{"nodeSelector":{"disk":"ssd"}}}}}"#,
        ],
    ]
    .concat());
    rollout();
    wait_for(30, "the daemon pod to leave node1", || {
        (nodes_of_pods() == ["member1-node2"]).then_some(())
    });
    let row = k.ok(&[&m1[..], &["get", "ds", "agent"]].concat());
    assert!(row.contains("disk=ssd"), "{row}");
    // A NoSchedule taint keeps new pods away, not the one already there.
    k.ok(&[
        &m1[..],
        &["taint", "node", "member1-node2", "dedicated=x:NoSchedule"],
    ]
    .concat());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(nodes_of_pods(), ["member1-node2"]);
    // Its pods go with it.
    k.ok(&[&m1[..], &["delete", "ds", "agent"]].concat());
    wait_for(30, "the daemon pods to go", || {
        nodes_of_pods().is_empty().then_some(())
    });
}

#[test]
fn jobs_run_pods_to_completion_or_fail() {
    let env = DevEnv::up(&["--clusters", "1"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    let manifest = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: count}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox, command: [sh, -c, "echo counted"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: fails}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox, command: [sh, -c, "exit 1"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: slow}
spec:
  activeDeadlineSeconds: 2
  template:
    spec:
      restartPolicy: OnFailure
      containers: [{name: main, image: busybox, command: [sleep, "600"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: brief}
spec:
  ttlSecondsAfterFinished: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox, command: ["true"]}]
"#;
    k.ok_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), manifest);
    let wait = |job: &str, condition: &str| {
        k.ok(&[
            &m1[..],
            &[
                "wait",
                &format!("--for=condition={condition}"),
                &format!("job/{job}"),
                "--timeout=60s",
            ],
        ]
        .concat())
    };
    let job = |name: &str| json(&k.ok(&[&m1[..], &["get", "job", name, "-o", "json"]].concat()));
    let reason = |j: &Value, t: &str| {
        j["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .map(|c| c["reason"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    // Three completions, two at a time; its pods are labelled with its name.
    wait("count", "complete");
    let j = job("count");
    assert_eq!(j["status"]["succeeded"], 3, "{j}");
    assert!(j["status"]["completionTime"].is_string(), "{j}");
    let pods = json(
        &k.ok(&[
            &m1[..],
            &["get", "pods", "-l", "job-name=count", "-o", "json"],
        ]
        .concat()),
    );
    assert_eq!(pods["items"].as_array().unwrap().len(), 3, "{pods}");
    let row = k.ok(&[&m1[..], &["get", "job", "count"]].concat());
    assert!(row.contains("Complete") && row.contains("3/3"), "{row}");
    assert!(
        k.ok(&[&m1[..], &["logs", "job/count"]].concat())
            .contains("counted")
    );
    // No retries allowed: one failed pod fails the Job.
    wait("fails", "failed");
    assert_eq!(reason(&job("fails"), "Failed"), "BackoffLimitExceeded");
    let row = k.ok(&[&m1[..], &["get", "job", "fails"]].concat());
    assert!(row.contains("Failed") && row.contains("0/1"), "{row}");
    // Past its deadline, a Job fails and its pods are stopped.
    wait("slow", "failed");
    assert_eq!(reason(&job("slow"), "Failed"), "DeadlineExceeded");
    wait_for(30, "the slow Job's pod to go", || {
        let pods = json(
            &k.ok(&[
                &m1[..],
                &["get", "pods", "-l", "job-name=slow", "-o", "json"],
            ]
            .concat()),
        );
        pods["items"].as_array().unwrap().is_empty().then_some(())
    });
    // A finished Job with a TTL is removed, with its pods.
    wait_for(30, "the brief Job to be removed", || {
        let out = k.run(&[&m1[..], &["get", "job", "brief"]].concat());
        (!out.status.success()).then_some(())
    });
    wait_for(30, "the brief Job's pods to go", || {
        let pods = json(
            &k.ok(&[
                &m1[..],
                &["get", "pods", "-l", "job-name=brief", "-o", "json"],
            ]
            .concat()),
        );
        pods["items"].as_array().unwrap().is_empty().then_some(())
    });
    // kubectl explain knows built-in kinds (the server's OpenAPI carries their schemas).
    let explained = k.ok(&[&m1[..], &["explain", "job.spec.backoffLimit"]].concat());
    assert!(explained.contains("backoffLimit <integer>"), "{explained}");
    // A Job's pods do not restart forever.
    for (policy, says) in [
        ("Always", "Unsupported value: \"Always\""),
        ("", "Required value"),
    ] {
        let policy_line = if policy.is_empty() {
            String::new()
        } else {
            format!("      restartPolicy: {policy}\n")
        };
        let bad = format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: bad}}\nspec:\n  template:\n    spec:\n{policy_line}      containers: [{{name: main, image: busybox, command: [\"true\"]}}]\n"
        );
        let out = k.run_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), &bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("spec.template.spec.restartPolicy")
                && err.contains(says),
            "{err}"
        );
    }
}

#[test]
fn exec_attach_and_cp_reach_into_containers() {
    let env = DevEnv::up(&["--clusters", "1"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: box}
spec:
  containers:
  - name: main
    image: busybox
    env: [{name: GREETING, value: hi}]
    command: [sh, -c, "echo prepared > state; exec sleep 3600"]
  - {name: other, image: busybox, command: [sleep, "3600"]}
"#;
    k.ok_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), manifest);
    wait_for(60, "box to be Ready", || {
        let p = json(&k.ok(&[&m1[..], &["get", "pod", "box", "-o", "json"]].concat()));
        is_ready(&p).then_some(())
    });
    let exec = |args: &[&str]| {
        let all = [&m1[..], &["exec", "box", "-c", "main", "--"], args].concat();
        k.run(&all)
    };
    // Its environment and directory; stdout, stderr and the exit code come back apart.
    let out = exec(&[
        "sh",
        "-c",
        "echo out $GREETING $POD_IP; cat state; echo err >&2; exit 3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout} {stderr}");
    assert!(stdout.starts_with("out hi 127."), "{stdout}");
    assert!(stdout.contains("prepared"), "{stdout}");
    assert!(
        stderr.contains("err") && !stdout.contains("err"),
        "{stderr}"
    );
    // Standard input, and a large output, intact.
    let out = k.run_stdin(
        &[&m1[..], &["exec", "-i", "box", "-c", "main", "--", "cat"]].concat(),
        "through stdin\n",
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    let out = exec(&["seq", "1", "100000"]);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 100000);
    assert_eq!(lines.last().map(String::as_str), Some("100000"));
    // With a terminal (-t; `script` gives kubectl one of its own), the command has one too.
    let in_terminal = format!(
        "kubectl --kubeconfig {} --context member1 exec -it box -c main -- sh -c 'tty; exit 4'",
        env.dir.join("kubeconfig").display()
    );
    let out = Command::new("script")
        .args(["-qec", &in_terminal, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    // `kubectl run -i` attaches to the new pod's stdin (through the node), and with `-t` to
    // its terminal; `--rm` removes it after.
    let out = k.run_stdin(
        &[
            &m1[..],
            &[
                "run",
                "catter",
                "-i",
                "--rm",
                "--restart=Never",
                "--image=busybox",
                "--command",
                "--",
                "cat",
            ],
        ]
        .concat(),
        "hello through attach\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello through attach"), "{stdout}");
    let run_in_terminal = format!(
        "kubectl --kubeconfig {} --context member1 run shell -it --rm --restart=Never --image=busybox --command -- sh -c 'tty; echo in-run; exit 3'",
        env.dir.join("kubeconfig").display()
    );
    let out = Command::new("script")
        .args(["-qec", &run_in_terminal, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("/dev/pts/") && stdout.contains("in-run"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    for pod in ["catter", "shell"] {
        let out = k.run(&[&m1[..], &["get", "pod", pod]].concat());
        assert!(!out.status.success(), "{pod} was not removed");
    }
    // A container started without stdin or tty has nothing to attach to, and says so.
    let out = k.run(&[&m1[..], &["attach", "box", "-c", "main"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("started without stdin or tty"), "{err}");
    // `kubectl cp` (tar through exec), both ways.
    let local = env.dir.join("to-copy.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    let target = "box:copied.txt";
    k.ok(&[
        &m1[..],
        &["cp", "-c", "main", local.to_str().unwrap(), target],
    ]
    .concat());
    let out = exec(&["cat", "copied.txt"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "copied in\n");
    let back = env.dir.join("copied-back.txt");
    k.ok(&[
        &m1[..],
        &["cp", "-c", "main", target, back.to_str().unwrap()],
    ]
    .concat());
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
    // What cannot run says why.
    let out = exec(&["no-such-command"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-command"));
    let out = k.run(&[&m1[..], &["exec", "box", "-c", "nope", "--", "true"]].concat());
    assert!(String::from_utf8_lossy(&out.stderr).contains("container nope is not valid"));
    // A command whose caller goes away goes too.
    let mut caller = k
        .cmd(
            &[
                &m1[..],
                &["exec", "box", "-c", "main", "--", "sleep", "4242"],
            ]
            .concat(),
        )
        .spawn()
        .expect("kubectl exec");
    let running = |what: &str| {
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        String::from_utf8_lossy(&ps.stdout)
            .lines()
            .any(|l| l == what)
    };
    wait_for(20, "the exec'd command to run", || {
        running("sleep 4242").then_some(())
    });
    let _ = caller.kill();
    let _ = caller.wait();
    wait_for(20, "the exec'd command to stop", || {
        (!running("sleep 4242")).then_some(())
    });
    // Exec is a `create` of pods/exec: reading pods is not enough.
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["kubeconfig", "--user", "reader", "--data-dir"])
        .arg(env.dir.join("member1"))
        .output()
        .unwrap();
    let reader = env.dir.join("reader.kubeconfig");
    std::fs::write(&reader, &out.stdout).unwrap();
    k.ok(&[
        &m1[..],
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
        ],
    ]
    .concat());
    k.ok(&[
        &m1[..],
        &[
            "create",
            "rolebinding",
            "pod-reader",
            "--role=pod-reader",
            "--user=reader",
        ],
    ]
    .concat());
    let out = Command::new("kubectl")
        .args(["--kubeconfig"])
        .arg(&reader)
        .args(["exec", "box", "-c", "main", "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pods/exec"), "{err}");
}

#[test]
fn liveness_and_startup_probes_and_graceful_termination() {
    let env = DevEnv::up(&["--clusters", "1"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  containers:
  - name: main
    image: python
    command: [sh, -c, "touch alive; sleep 2; exec python3 -m http.server 8080 --bind $POD_IP"]
    startupProbe: {tcpSocket: {port: 8080}, periodSeconds: 1, failureThreshold: 30}
    livenessProbe: {exec: {command: [test, -f, alive]}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {name: main, image: busybox, command: [sh, -c, "trap 'echo ignoring TERM' TERM; echo started; while true; do sleep 0.2; done"]}
"#;
    k.ok_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), manifest);
    // The startup probe holds readiness back until the server listens (after 2 s).
    let pod = wait_for(30, "probed to be started", || {
        let p = json(&k.ok(&[&m1[..], &["get", "pod", "probed", "-o", "json"]].concat()));
        (p["status"]["containerStatuses"][0]["started"] == true).then_some(p)
    });
    assert!(is_ready(&pod), "no readiness probe: ready once started");
    let started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        .as_str()
        .unwrap()
        .to_string();
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(http_status(&format!("http://{ip}:8080/")), "200");
    // A failing liveness probe restarts the container.
    let dir = find_pod_dir(&env.dir, pod["metadata"]["uid"].as_str().unwrap());
    std::fs::remove_file(dir.join("alive")).expect("the pod's alive file");
    let restarted = wait_for(30, "a restart after the liveness probe failed", || {
        let p = json(&k.ok(&[&m1[..], &["get", "pod", "probed", "-o", "json"]].concat()));
        (p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)).then_some(p)
    });
    // The new run recreated `alive`, so it stays up.
    let cs = &restarted["status"]["containerStatuses"][0];
    assert!(cs["lastState"]["terminated"].is_object(), "{cs}");
    wait_for(30, "the restarted container to be started", || {
        let p = json(&k.ok(&[&m1[..], &["get", "pod", "probed", "-o", "json"]].concat()));
        let cs = &p["status"]["containerStatuses"][0];
        (cs["started"] == true && cs["state"]["running"]["startedAt"].as_str() != Some(&started))
            .then_some(())
    });

    // A container that ignores SIGTERM is killed after the grace period.
    k.eventually(&[&m1[..], &["logs", "stubborn"]].concat(), |t| {
        t.contains("started")
    });
    let t = Instant::now();
    k.ok(&[&m1[..], &["delete", "pod", "stubborn", "--timeout=30s"]].concat());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "deleted in {took:?}, before its grace period"
    );
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("ignoring TERM"),
        "the container outlived its pod"
    );

    // HTTPS probes: the pod's self-signed certificate is not verified (as the kubelet's
    // are not), but TLS is spoken: an HTTPS probe of a plain HTTP server fails.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (crt, key) = (env.dir.join("tls.crt"), env.dir.join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    k.ok(&[
        &m1[..],
        &[
            "create",
            "secret",
            "tls",
            "web-tls",
            &format!("--cert={}", crt.display()),
            &format!("--key={}", key.display()),
        ],
    ]
    .concat());
    let https = r#"
apiVersion: v1
kind: Pod
metadata: {name: secure}
spec:
  volumes: [{name: tls, secret: {secretName: web-tls}}]
  containers:
  - name: main
    image: python
    volumeMounts: [{name: tls, mountPath: /certs}]
    command: [python3, -c, "import http.server, os, ssl; s = http.server.HTTPServer((os.environ['POD_IP'], 8443), http.server.SimpleHTTPRequestHandler); c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('certs/tls.crt', 'certs/tls.key'); s.socket = c.wrap_socket(s.socket, server_side=True); s.serve_forever()"]
    readinessProbe: {httpGet: {scheme: HTTPS, port: 8443, path: /}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  containers:
  - name: main
    image: python
    command: [sh, -c, "exec python3 -m http.server 8443 --bind $POD_IP"]
    readinessProbe: {httpGet: {scheme: HTTPS, port: 8443, path: /}, periodSeconds: 1}
"#;
    k.ok_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), https);
    wait_for(60, "the HTTPS-probed pod to be Ready", || {
        let p = json(&k.ok(&[&m1[..], &["get", "pod", "secure", "-o", "json"]].concat()));
        is_ready(&p).then_some(())
    });
    let plain = wait_for(30, "the plain server to be started", || {
        let p = json(&k.ok(&[&m1[..], &["get", "pod", "plain", "-o", "json"]].concat()));
        let ip = p["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (!ip.is_empty() && http_status(&format!("http://{ip}:8443/")) == "200").then_some(p)
    });
    // It answers plain HTTP, yet its HTTPS probe has had seconds to pass, and has not.
    std::thread::sleep(Duration::from_secs(3));
    let p = json(&k.ok(&[&m1[..], &["get", "pod", "plain", "-o", "json"]].concat()));
    assert!(
        !is_ready(&p),
        "an HTTPS probe passed against plain HTTP: {plain}"
    );
}

#[test]
fn the_simulated_runtime_makes_pods_ready_without_processes() {
    let env = DevEnv::up(&["--clusters", "1", "--nodes", "3", "--runtime", "simulated"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    k.ok(&[
        &m1[..],
        &[
            "create",
            "deployment",
            "many",
            "--replicas=30",
            "--image=nginx",
        ],
    ]
    .concat());
    k.ok(&[
        &m1[..],
        &["rollout", "status", "deployment/many", "--timeout=60s"],
    ]
    .concat());
    let pods = running_pods(&k, "member1", "app=many");
    assert_eq!(pods.len(), 30);
    assert!(pods.iter().all(is_ready));
    let nodes: std::collections::HashSet<_> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nodes.len(), 3, "spread over the 3 nodes");
    let ips: std::collections::HashSet<_> = pods
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 30, "each pod has its own IP");
    // Nothing was run.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ps.stdout).contains("nginx"));
    // Init containers have completed, sidecars run: Running, the sidecar counted as ready.
    k.ok_stdin(
        &[&m1[..], &["apply", "-f", "-"]].concat(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: with-init}\nspec:\n  initContainers:\n  - {name: setup, image: busybox}\n  - {name: proxy, image: envoy, restartPolicy: Always}\n  containers:\n  - {name: main, image: nginx}\n",
    );
    let row = k.eventually(&[&m1[..], &["get", "pod", "with-init"]].concat(), |t| {
        t.contains("Running")
    });
    assert!(row.contains("2/2"), "{row}");
    // There is no process to exec into; that is said plainly.
    let out = k.run(&[&m1[..], &["exec", "with-init", "--", "true"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("publishes no endpoint for exec"),
        "{err}"
    );
    k.ok(&[&m1[..], &["scale", "deployment", "many", "--replicas=0"]].concat());
    wait_for(30, "the pods to go", || {
        running_pods(&k, "member1", "app=many")
            .is_empty()
            .then_some(())
    });
}

#[test]
fn replication_controllers_keep_their_pods_and_scale() {
    let env = DevEnv::up(&["--clusters", "1", "--runtime", "simulated"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    // No selector: kube-apiserver defaults it (and the labels) from the template's labels.
    let manifest = r#"
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web-rc}}
    spec:
      containers: [{name: main, image: web:1}]
"#;
    k.ok_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), manifest);
    let rc = json(&k.ok(&[&m1[..], &["get", "rc", "web", "-o", "json"]].concat()));
    assert_eq!(rc["spec"]["selector"], serde_json::json!({"app": "web-rc"}));
    assert_eq!(
        rc["metadata"]["labels"],
        serde_json::json!({"app": "web-rc"})
    );
    let ready = |n: i64| {
        wait_for(30, &format!("{n} ready replicas"), || {
            let rc = json(&k.ok(&[&m1[..], &["get", "rc", "web", "-o", "json"]].concat()));
            (rc["status"]["readyReplicas"].as_i64().unwrap_or(0) == n
                && running_pods(&k, "member1", "app=web-rc").len() == n as usize)
                .then_some(())
        })
    };
    ready(2);
    let row = k.ok(&[&m1[..], &["get", "rc", "web"]].concat());
    assert!(
        row.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>()[1..4] == ["2", "2", "2"]),
        "DESIRED CURRENT READY: {row}"
    );
    // The scale subresource, as `kubectl scale` uses it; its selector is the label map.
    k.ok(&[&m1[..], &["scale", "rc", "web", "--replicas=3"]].concat());
    ready(3);
    let scale = json(
        &k.ok(&[
            &m1[..],
            &[
                "get",
                "--raw",
                "/api/v1/namespaces/default/replicationcontrollers/web/scale",
            ],
        ]
        .concat()),
    );
    assert_eq!(scale["status"]["selector"], "app=web-rc");
    assert_eq!(scale["spec"]["replicas"], 3);
    // A deleted pod is replaced.
    let victim = running_pods(&k, "member1", "app=web-rc")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    k.ok(&[&m1[..], &["delete", "pod", &victim, "--wait=false"]].concat());
    wait_for(30, "a replacement pod", || {
        let pods = running_pods(&k, "member1", "app=web-rc");
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str()))
        .then_some(())
    });
    // A selector the template does not match is refused, with a message that says so.
    let bad = manifest.replace("name: web}", "name: bad}").replace(
        "  replicas: 2\n",
        "  replicas: 2\n  selector: {app: other}\n",
    );
    let out = k.run_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), &bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    // Its pods go with it.
    k.ok(&[&m1[..], &["delete", "rc", "web"]].concat());
    wait_for(30, "the controller's pods to go", || {
        running_pods(&k, "member1", "app=web-rc")
            .is_empty()
            .then_some(())
    });
}

/// A `pods/portforward` session as the Python client speaks it (`v4.channel.k8s.io` over a
/// WebSocket, over TLS with the kubeconfig's client certificate), in stdlib Python: sends
/// `line` on each port and prints what came back on each channel.
const PORT_FORWARD_CLIENT: &str = r#"
import base64, json, os, socket, ssl, sys, tempfile, time, urllib.parse
cfg = json.loads(sys.stdin.read())
cluster, user = cfg['clusters'][0]['cluster'], cfg['users'][0]['user']
d = tempfile.mkdtemp()
def file(name, data):
    path = os.path.join(d, name)
    open(path, 'wb').write(base64.b64decode(data))
    return path
ctx = ssl.create_default_context(cafile=file('ca', cluster['certificate-authority-data']))
ctx.load_cert_chain(file('crt', user['client-certificate-data']), file('key', user['client-key-data']))
url = urllib.parse.urlparse(cluster['server'])
ports = sys.argv[2].split(',')
s = ctx.wrap_socket(socket.create_connection((url.hostname, url.port), timeout=20), server_hostname=url.hostname)
s.sendall(('GET /api/v1/namespaces/default/pods/%s/portforward?ports=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v5.channel.k8s.io,v4.channel.k8s.io\r\n\r\n' % (sys.argv[1], sys.argv[2], url.netloc)).encode())
buf = b''
while b'\r\n\r\n' not in buf:
    buf += s.recv(4096)
head, buf = buf.split(b'\r\n\r\n', 1)
assert b' 101 ' in head.split(b'\r\n')[0], head + buf
assert b'v4.channel.k8s.io' in head, head
def frames():
    global buf
    while True:
        while len(buf) < 2:
            buf += s.recv(4096)
        n = buf[1] & 127
        off = 2
        if n == 126:
            while len(buf) < 4:
                buf += s.recv(4096)
            n, off = int.from_bytes(buf[2:4], 'big'), 4
        while len(buf) < off + n:
            buf += s.recv(4096)
        payload, buf = buf[off:off + n], buf[off + n:]
        yield payload
def send(channel, data):
    mask = b'\x01\x02\x03\x04'
    payload = bytes([channel]) + data
    s.sendall(bytes([0x82, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
got = {}
f = frames()
# First the port number on each channel.
for i in range(2 * len(ports)):
    p = next(f)
    print('init', p[0], p[1] + 256 * p[2])
for i, port in enumerate(ports):
    send(2 * i, ('hello %s\n' % port).encode())
deadline = time.time() + 10
while time.time() < deadline and len(got) < len(ports):
    p = next(f)
    got.setdefault(p[0], b'')
    got[p[0]] += p[1:]
    if p[0] % 2 == 0 and not got[p[0]].endswith(b'\n'):
        del got[p[0]]
for channel in sorted(got):
    print('channel', channel, got[channel].decode().strip())
"#;

#[test]
fn port_forward_reaches_the_pods_ports_over_a_websocket() {
    let env = DevEnv::up(&["--clusters", "1"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    // An echo server on 1234 (socat: each connection's lines come back); nothing on 1236.
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: echo}
spec:
  containers:
  - name: main
    image: debian
    command: [sh, -c, "exec socat TCP-LISTEN:1234,bind=$POD_IP,fork,reuseaddr EXEC:cat"]
    readinessProbe: {tcpSocket: {port: 1234}, periodSeconds: 1}
"#;
    k.ok_stdin(&[&m1[..], &["apply", "-f", "-"]].concat(), manifest);
    wait_for(60, "echo to be Ready", || {
        let p = json(&k.ok(&[&m1[..], &["get", "pod", "echo", "-o", "json"]].concat()));
        is_ready(&p).then_some(())
    });
    let config = k.ok(&[
        &m1[..],
        &["config", "view", "--raw", "--minify", "-o", "json"],
    ]
    .concat());
    let out = Command::new("python3")
        .args(["-c", PORT_FORWARD_CLIENT, "echo", "1234,1236"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(config.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each channel announced with its port, the echo back on port 1234's data channel, and
    // the refused port's error on its error channel.
    for want in [
        "init 0 1234",
        "init 1 1234",
        "init 2 1236",
        "init 3 1236",
        "channel 0 hello 1234",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("channel 3 error forwarding port 1236 to pod default/echo")),
        "{text}"
    );
}

#[test]
fn every_namespace_gets_the_cluster_ca_as_kube_root_ca_crt() {
    let env = DevEnv::up(&["--clusters", "1", "--runtime", "simulated"]);
    let k = env.kubectl();
    let m1 = ["--context", "member1"];
    let config = json(
        &k.ok(&[
            &m1[..],
            &["config", "view", "--raw", "--minify", "-o", "json"],
        ]
        .concat()),
    );
    let ca = {
        use base64::Engine;
        let b64 = config["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    let published = |ns: &str| {
        let out = k.run(
            &[
                &m1[..],
                &[
                    "-n",
                    ns,
                    "get",
                    "configmap",
                    "kube-root-ca.crt",
                    "-o",
                    "jsonpath={.data.ca\\.crt}",
                ],
            ]
            .concat(),
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    };
    for ns in ["default", "kube-system"] {
        let got = wait_for(20, &format!("kube-root-ca.crt in {ns}"), || published(ns));
        assert_eq!(got.trim(), ca.trim(), "the cluster CA in {ns}");
    }
    // A new namespace gets one; a deleted one comes back; an edited one is put right.
    k.ok(&[&m1[..], &["create", "namespace", "team"]].concat());
    wait_for(20, "kube-root-ca.crt in team", || published("team"));
    k.ok(&[
        &m1[..],
        &["-n", "team", "delete", "configmap", "kube-root-ca.crt"],
    ]
    .concat());
    wait_for(20, "kube-root-ca.crt back in team", || published("team"));
    k.ok(&[
        &m1[..],
        &[
            "-n",
            "team",
            "patch",
            "configmap",
            "kube-root-ca.crt",
            "-p",
            r#"{"data":{"ca.crt":"x"}}"#,
        ],
    ]
    .concat());
    wait_for(20, "kube-root-ca.crt put right in team", || {
        published("team").filter(|c| c.trim() == ca.trim())
    });
}
