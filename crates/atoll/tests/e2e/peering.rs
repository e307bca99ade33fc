//! Peering end to end (`dev up --clusters 2`, no hub involved): member1 peers with member2 as
//! a user would, with `atoll peer` and kubectl. A wrong pin, a wrong token and an expired
//! token are refused with a condition that says which; a good token gives member1 a peer
//! identity on member2 that gets 403 outside its tenant and offloaded namespaces; a request
//! is granted per member2's policy and becomes a virtual node of exactly that capacity; a
//! Deployment of 4 HTTP servers in an offloaded namespace runs on both sides, every pod
//! answering curl and listed in its Service's endpoints; a copy deleted in member2 comes back;
//! a pod beyond the grant stays Pending saying why; a taken remote namespace is refused up
//! front; when member2 dies the virtual node goes NotReady and the pods are replaced locally.

use std::path::Path;
use std::process::Command;

use crate::cluster::{DevEnv, json, wait_for};

/// `atoll peer ARGS` against the environment's kubeconfig: (success, stdout + stderr).
fn peer(env: &DevEnv, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .arg("peer")
        .args(args)
        .env("KUBECONFIG", env.dir.join("kubeconfig"))
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

fn peer_ok(env: &DevEnv, args: &[&str]) -> String {
    let (ok, out) = peer(env, args);
    assert!(ok, "atoll peer {args:?} failed: {out}");
    out
}

/// The `atoll peer add` line `atoll peer token` prints, as its words.
fn token_line(env: &DevEnv, ttl: &str) -> Vec<String> {
    let out = peer_ok(env, &["token", "--context", "member2", "--ttl", ttl]);
    let line = out
        .lines()
        .find(|l| l.starts_with("atoll peer add "))
        .unwrap_or_else(|| panic!("no add line: {out}"));
    line.split_whitespace().skip(3).map(String::from).collect()
}

fn flag<'a>(words: &'a [String], name: &str) -> &'a str {
    let i = words
        .iter()
        .position(|w| w == name)
        .unwrap_or_else(|| panic!("{name} in {words:?}"));
    &words[i + 1]
}

const SHOP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: python:3
        command: ["sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec python3 -m http.server 8080 --bind $POD_IP --directory /tmp/www"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

const TOO_BIG: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: big, namespace: shop}
spec:
  nodeSelector: {atoll.io/type: virtual-node}
  tolerations: [{key: virtual-node.atoll.io/not-allowed, operator: Exists}]
  containers:
  - name: c
    image: python:3
    command: ["sleep", "3600"]
    resources: {requests: {cpu: "2"}}
"#;

fn condition(fc: &serde_json::Value, type_: &str) -> (String, String, String) {
    let c = fc["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_);
    let s = |k: &str| {
        c.and_then(|c| c[k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    (s("status"), s("reason"), s("message"))
}

/// (name, node, phase, ready, podIP, restarts) of the pods of `shop/web` in member1.
fn shop_pods(k: &crate::harness::Kubectl) -> Vec<(String, String, String, bool, String, i64)> {
    let list = json(&k.ok(&[
        "--context",
        "member1",
        "-n",
        "shop",
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "json",
    ]));
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["status"]["phase"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ready,
                p["status"]["podIP"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["status"]["containerStatuses"][0]["restartCount"]
                    .as_i64()
                    .unwrap_or(0),
            )
        })
        .collect()
}

fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "3", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn members_peer_and_offload_pods_without_a_hub() {
    let env = DevEnv::up(&["--clusters", "2", "--default-toleration-seconds", "2"]);
    let k = env.kubectl();
    let words = token_line(&env, "1h");
    let (name, url, token, pin) = (
        words[0].clone(),
        flag(&words, "--url").to_string(),
        flag(&words, "--token").to_string(),
        flag(&words, "--ca-sha256").to_string(),
    );
    assert_eq!(name, "member2");

    // Refusals, each with the condition that says why.
    let wrong_pin = format!("sha256:{}", "0".repeat(64));
    let (ok, out) = peer(
        &env,
        &[
            "add",
            "member2",
            "--context",
            "member1",
            "--url",
            &url,
            "--token",
            &token,
            "--ca-sha256",
            &wrong_pin,
        ],
    );
    assert!(!ok && out.contains("presents no CA"), "{out}");
    let fc = json(&k.ok(&["--context", "member1", "get", "fc", "member2", "-o", "json"]));
    assert_eq!(condition(&fc, "Authenticated").1, "CAPinMismatch");
    let wrong_token = format!("{}.{}", &token[..6], "x".repeat(16));
    let (ok, out) = peer(
        &env,
        &[
            "add",
            "member2",
            "--context",
            "member1",
            "--url",
            &url,
            "--token",
            &wrong_token,
            "--ca-sha256",
            &pin,
        ],
    );
    assert!(
        !ok && out.contains("does not accept the peering token"),
        "{out}"
    );
    let fc = json(&k.ok(&["--context", "member1", "get", "fc", "member2", "-o", "json"]));
    assert_eq!(condition(&fc, "Authenticated").1, "TokenInvalid");
    let expired = token_line(&env, "1s");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (ok, out) = peer(
        &env,
        &[
            "add",
            "member2",
            "--context",
            "member1",
            "--url",
            &url,
            "--token",
            flag(&expired, "--token"),
            "--ca-sha256",
            &pin,
        ],
    );
    assert!(!ok && out.contains("expired"), "{out}");

    // The good token.
    let out = peer_ok(
        &env,
        &[
            "add",
            "member2",
            "--context",
            "member1",
            "--url",
            &url,
            "--token",
            &token,
            "--ca-sha256",
            &pin,
        ],
    );
    assert!(out.contains("authenticated"), "{out}");
    let provider_side =
        json(&k.ok(&["--context", "member2", "get", "fc", "member1", "-o", "json"]));
    assert_eq!(provider_side["status"]["role"], "Provider");
    assert_eq!(provider_side["spec"]["discoveredBy"], "IncomingPeering");

    // Negotiation: member2 grants half of its allocatable to peers.
    let out = peer_ok(
        &env,
        &[
            "request",
            "member2",
            "--context",
            "member1",
            "--cpu",
            "1",
            "--memory",
            "1Gi",
        ],
    );
    assert!(out.contains("Accepted"), "{out}");
    let node = wait_for(20, "the virtual node Ready", || {
        let out = k.run(&[
            "--context",
            "member1",
            "get",
            "node",
            "atoll-member2",
            "-o",
            "json",
        ]);
        let node = serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()?;
        let ready = node["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(node)
    });
    assert_eq!(node["status"]["capacity"]["cpu"], "1");
    assert_eq!(node["status"]["capacity"]["memory"], "1Gi");
    assert_eq!(node["status"]["allocatable"], node["status"]["capacity"]);
    assert_eq!(node["metadata"]["labels"]["atoll.io/type"], "virtual-node");
    assert_eq!(
        node["metadata"]["labels"]["atoll.io/remote-cluster-id"],
        "member2"
    );
    assert_eq!(
        node["spec"]["taints"][0]["key"],
        "virtual-node.atoll.io/not-allowed"
    );
    let list = peer_ok(&env, &["list", "--context", "member1"]);
    assert!(
        list.contains("member2") && list.contains("Consumer") && list.contains("cpu=1"),
        "{list}"
    );

    // Offloading: pods on both sides, all answering, all in the Service.
    k.ok(&["--context", "member1", "create", "namespace", "shop"]);
    peer_ok(&env, &["offload", "shop", "--context", "member1"]);
    k.eventually(
        &[
            "--context",
            "member1",
            "-n",
            "shop",
            "get",
            "namespaceoffloading",
            "offloading",
            "-o",
            "jsonpath={.status.offloadingPhase}",
        ],
        |s| s == "Ready",
    );
    let ns = json(&k.ok(&[
        "--context",
        "member2",
        "get",
        "namespace",
        "shop-member1",
        "-o",
        "json",
    ]));
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "baseline"
    );
    // The webhook gives the pods the virtual-node toleration (LocalAndRemote): the manifest
    // is an ordinary one.
    k.eventually(
        &[
            "--context",
            "member1",
            "get",
            "namespace",
            "shop",
            "-o",
            "jsonpath={.metadata.labels.peering\\.atoll\\.io/pod-offloading}",
        ],
        |s| s == "LocalAndRemote",
    );
    k.ok_stdin(&["--context", "member1", "apply", "-f", "-"], SHOP);
    let pods = wait_for(60, "4 web pods Ready on both sides", || {
        let pods = shop_pods(&k);
        let remote = pods.iter().filter(|p| p.1 == "atoll-member2").count();
        (pods.len() == 4 && pods.iter().all(|p| p.3) && remote > 0 && remote < 4).then_some(pods)
    });
    for p in &pods {
        let answer = curl(&format!("http://{}:8080/", p.4)).unwrap_or_default();
        assert_eq!(answer, p.0, "pod {} on {} answers", p.0, p.1);
    }
    // `kubectl logs` and `exec` reach the remote container (through the virtual node's kubelet).
    let remote_one = pods
        .iter()
        .find(|p| p.1 == "atoll-member2")
        .unwrap()
        .0
        .clone();
    let logs = k.ok(&["--context", "member1", "-n", "shop", "logs", &remote_one]);
    assert!(logs.contains("\"GET / HTTP/1.1\" 200"), "{logs}");
    let hostname = k.ok(&[
        "--context",
        "member1",
        "-n",
        "shop",
        "exec",
        &remote_one,
        "--",
        "hostname",
    ]);
    assert_eq!(hostname.trim(), remote_one);
    let echoed = k.ok_stdin(
        &[
            "--context",
            "member1",
            "-n",
            "shop",
            "exec",
            "-i",
            &remote_one,
            "--",
            "cat",
        ],
        "through the peering\n",
    );
    assert_eq!(echoed, "through the peering\n");
    let remote_pods = json(&k.ok(&[
        "--context",
        "member2",
        "-n",
        "shop-member1",
        "get",
        "pods",
        "-o",
        "json",
    ]));
    let remote_names: Vec<&str> = remote_pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    for p in pods.iter().filter(|p| p.1 == "atoll-member2") {
        assert!(
            remote_names.contains(&p.0.as_str()),
            "{} runs in member2: {remote_names:?}",
            p.0
        );
    }
    k.eventually(
        &[
            "--context",
            "member1",
            "-n",
            "shop",
            "get",
            "endpointslices",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[*]}",
        ],
        |s| pods.iter().all(|p| s.split_whitespace().any(|a| a == p.4)),
    );
    // The Service is in member2 too, every pod behind it: member2's controller lists the
    // copies there, and member1's own pods come in a reflected slice.
    k.eventually(
        &[
            "--context",
            "member2",
            "-n",
            "shop-member1",
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].port} {.spec.selector.app} {.metadata.labels.peering\\.atoll\\.io/tenant}",
        ],
        |s| s == "80 web member1",
    );
    k.eventually(
        &[
            "--context",
            "member2",
            "-n",
            "shop-member1",
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[*]}",
        ],
        |s| {
            let mut got: Vec<&str> = s.split_whitespace().collect();
            got.sort();
            let mut want: Vec<&str> = pods.iter().map(|p| p.4.as_str()).collect();
            want.sort();
            got == want
        },
    );
    // A Service that goes here goes there.
    k.ok(&[
        "--context",
        "member1",
        "-n",
        "shop",
        "create",
        "service",
        "clusterip",
        "extra",
        "--tcp=81:8080",
    ]);
    k.eventually(
        &[
            "--context",
            "member2",
            "-n",
            "shop-member1",
            "get",
            "services",
            "-o",
            "name",
        ],
        |s| s.contains("service/extra"),
    );
    k.ok(&[
        "--context",
        "member1",
        "-n",
        "shop",
        "delete",
        "service",
        "extra",
    ]);
    k.eventually(
        &[
            "--context",
            "member2",
            "-n",
            "shop-member1",
            "get",
            "services",
            "-o",
            "name",
        ],
        |s| !s.contains("service/extra") && s.contains("service/web"),
    );

    // The peer identity: its tenant and offloaded namespaces, nothing else.
    let secret = json(&k.ok(&[
        "--context",
        "member1",
        "-n",
        "atoll-peering",
        "get",
        "secret",
        "member2-identity",
        "-o",
        "json",
    ]));
    let kubeconfig = {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["kubeconfig"].as_str().unwrap())
            .unwrap();
        let path = env.dir.join("peer.kubeconfig");
        std::fs::write(&path, b).unwrap();
        path
    };
    let as_peer = |args: &[&str]| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs")
    };
    for args in [
        &["get", "pods", "-n", "default"][..],
        &["get", "secrets", "-n", "kube-system"],
        &["get", "nodes"],
        &["create", "namespace", "mine"],
        &["get", "resourcerequests", "-n", "atoll-tenant-someone"],
        &[
            "delete",
            "resourceoffer",
            "member1",
            "-n",
            "atoll-tenant-member1",
        ],
        &["get", "pods", "-n", "atoll-peering"],
        &["get", "clusterroles"],
    ] {
        let out = as_peer(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Forbidden"),
            "the peer identity may {args:?}: {err}"
        );
    }
    for args in [
        &["get", "resourcerequests", "-n", "atoll-tenant-member1"][..],
        &["get", "resourceoffers", "-n", "atoll-tenant-member1"],
        &["get", "pods", "-n", "shop-member1"],
        &["get", "services", "-n", "shop-member1"],
    ] {
        let out = as_peer(args);
        assert!(
            out.status.success(),
            "the peer identity may not {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let peer_create = |ns: &str, manifest: &str| {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["-n", ns, "create", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let sleeper = |name: &str, cpu: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, \"3600\"]\n    resources: {{requests: {{cpu: \"{cpu}\", memory: 1Mi}}}}\n"
        )
    };
    // Even straight to the provider's API, the peer gets no more than its grant and no
    // privileged pods: the offloaded namespace's ResourceQuota and Pod Security level.
    for (manifest, refusal) in [
        (
            sleeper("greedy", "2"),
            "exceeded quota: atoll-peering-grant, requested: requests.cpu=2",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: root}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {requests: {cpu: 1m, memory: 1Mi}}\n    securityContext: {privileged: true}\n".to_string(),
            "violates PodSecurity \"baseline:latest\": privileged",
        ),
    ] {
        let (ok, err) = peer_create("shop-member1", &manifest);
        assert!(
            !ok && err.contains("Forbidden") && err.contains(refusal),
            "the provider lets the peer create {manifest}: {err}"
        );
    }
    // Nor by spreading pods over its namespaces: what one uses of the grant the others'
    // quotas lose.
    let (ok, err) = peer_create("shop-member1", &sleeper("half", "600m"));
    assert!(ok, "{err}");
    k.ok(&["--context", "member1", "create", "namespace", "shop2"]);
    peer_ok(&env, &["offload", "shop2", "--context", "member1"]);
    k.eventually(
        &[
            "--context",
            "member2",
            "-n",
            "shop2-member1",
            "get",
            "quota",
            "atoll-peering-grant",
            "-o",
            "jsonpath={.spec.hard.requests\\.cpu}",
        ],
        |s| s == "400m",
    );
    let (ok, err) = peer_create("shop2-member1", &sleeper("other-half", "600m"));
    assert!(
        !ok && err.contains("exceeded quota: atoll-peering-grant, requested: requests.cpu=600m"),
        "{err}"
    );
    k.ok(&[
        "--context",
        "member2",
        "-n",
        "shop-member1",
        "delete",
        "pod",
        "half",
        "--wait=false",
    ]);
    k.ok(&[
        "--context",
        "member1",
        "delete",
        "namespace",
        "shop2",
        "--wait=false",
    ]);

    // A copy deleted out of band is made again.
    k.ok(&[
        "--context",
        "member2",
        "-n",
        "shop-member1",
        "delete",
        "pod",
        &remote_one,
        "--wait=false",
    ]);
    wait_for(30, "the copy made again and counted as a restart", || {
        let p = shop_pods(&k).into_iter().find(|p| p.0 == remote_one)?;
        (p.3 && p.5 >= 1).then_some(())
    });

    // A pod beyond the grant waits, saying why.
    k.ok_stdin(&["--context", "member1", "apply", "-f", "-"], TOO_BIG);
    k.eventually(
        &[
            "--context",
            "member1",
            "-n",
            "shop",
            "get",
            "pod",
            "big",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ],
        |s| s.contains("Insufficient cpu"),
    );
    k.ok(&[
        "--context",
        "member1",
        "-n",
        "shop",
        "delete",
        "pod",
        "big",
        "--wait=false",
    ]);

    // A remote namespace that is taken is refused before anything is made.
    k.ok(&["--context", "member2", "create", "namespace", "taken"]);
    k.ok(&["--context", "member1", "create", "namespace", "taken"]);
    peer_ok(
        &env,
        &[
            "offload",
            "taken",
            "--context",
            "member1",
            "--mapping",
            "EnforceSameName",
        ],
    );
    let status = k.eventually(
        &[
            "--context",
            "member1",
            "-n",
            "taken",
            "get",
            "namespaceoffloading",
            "offloading",
            "-o",
            "json",
        ],
        |s| s.contains("NamespaceConflict"),
    );
    assert!(
        status.contains("already exists in provider member2"),
        "{status}"
    );

    // member2 dies: its node goes NotReady, the pods there are replaced here.
    env.sigkill("member2");
    k.eventually(
        &[
            "--context",
            "member1",
            "get",
            "node",
            "atoll-member2",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
        ],
        |s| s == "ProviderUnreachable",
    );
    wait_for(90, "4 web pods Ready, all in member1", || {
        let pods = shop_pods(&k);
        (pods.len() == 4 && pods.iter().all(|p| p.3 && p.1 == "member1-node1")).then_some(())
    });
    let list = peer_ok(&env, &["list", "--context", "member1"]);
    assert!(list.contains("ProviderUnreachable"), "{list}");

    // member2 back: `atoll peer remove` on member1 ends the peering on both sides.
    let (ok, out) = crate::cluster::atoll(&env.dir, &["dev", "up"]);
    assert!(ok, "{out}");
    k.eventually(
        &[
            "--context",
            "member1",
            "get",
            "node",
            "atoll-member2",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        |s| s == "True",
    );
    let out = peer_ok(&env, &["remove", "member2", "--context", "member1"]);
    assert!(
        out.contains("peering with member2 removed") && out.contains("no rights left"),
        "{out}"
    );
    assert_clean_consumer(&k);
    wait_for(30, "member2 keeps nothing for member1", || {
        let ns = k.ok(&["--context", "member2", "get", "namespaces", "-o", "name"]);
        let fc = k.ok(&["--context", "member2", "get", "fc", "-o", "name"]);
        let roles = k.ok(&["--context", "member2", "get", "clusterroles", "-o", "name"]);
        (!ns.contains("atoll-tenant-member1")
            && !ns.contains("shop-member1")
            && fc.trim().is_empty()
            && !roles.contains("atoll:peer:member1"))
        .then_some(())
    });
    // The identity is refused from now on.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "resourcerequests", "-n", "atoll-tenant-member1"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the old identity still reads its tenant namespace"
    );

    // Peered again, then member2 dies: removing the peering ends clean here anyway.
    let words = token_line(&env, "1h");
    peer_ok(
        &env,
        &[
            "add",
            "member2",
            "--context",
            "member1",
            "--url",
            &url,
            "--token",
            flag(&words, "--token"),
            "--ca-sha256",
            &pin,
        ],
    );
    peer_ok(
        &env,
        &[
            "request",
            "member2",
            "--context",
            "member1",
            "--cpu",
            "500m",
            "--memory",
            "256Mi",
        ],
    );
    k.eventually(
        &[
            "--context",
            "member1",
            "get",
            "node",
            "atoll-member2",
            "-o",
            "jsonpath={.status.capacity.cpu}",
        ],
        |s| s == "500m",
    );
    env.sigkill("member2");
    let out = peer_ok(
        &env,
        &[
            "remove",
            "member2",
            "--context",
            "member1",
            "--timeout",
            "3s",
        ],
    );
    assert!(
        out.contains("does not answer") || out.contains("cannot end the peering"),
        "{out}"
    );
    assert_clean_consumer(&k);
}

/// member1 keeps nothing of its peering with member2.
fn assert_clean_consumer(k: &crate::harness::Kubectl) {
    wait_for(15, "member1 keeps nothing of the peering", || {
        let nodes = k.ok(&["--context", "member1", "get", "nodes", "-o", "name"]);
        let fc = k.ok(&["--context", "member1", "get", "fc", "-o", "name"]);
        let secrets = k.ok(&[
            "--context",
            "member1",
            "-n",
            "atoll-peering",
            "get",
            "secrets",
            "-o",
            "name",
        ]);
        let ns = k.ok(&["--context", "member1", "get", "namespaces", "-o", "name"]);
        (!nodes.contains("atoll-member2")
            && fc.trim().is_empty()
            && !secrets.contains("member2")
            && !ns.contains("atoll-peer-member2"))
        .then_some(())
    });
}

/// NSD serving `zone` for `domain` on a free loopback port, stopped when dropped.
/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Nsd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nsd(dir: &std::path::Path, domain: &str, zone: &str) -> Nsd {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{domain}.zone")), zone).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nsd.conf"),
        format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\nremote-control:\n  control-enable: no\nzone:\n  name: {domain}\n  zonefile: {domain}.zone\n"
        ),
    )
    .unwrap();
    let bin = if Path::new("/usr/sbin/nsd").exists() {
        "/usr/sbin/nsd"
    } else {
        "nsd"
    };
    let child = Command::new(bin)
        .args(["-d", "-c"])
        .arg(dir.join("nsd.conf"))
        .spawn()
        .expect("nsd runs (Debian package nsd)");
    wait_for(10, "NSD answering", || {
        let out = Command::new("dig")
            .args([
                "+short",
                "+time=1",
                "+tries=1",
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "SOA",
                domain,
            ])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).starts_with(&format!("ns.{domain}."))).then_some(())
    });
    Nsd { child, port }
}

#[test]
fn peers_are_found_over_dns_and_peered_by_name() {
    let env = DevEnv::up(&["--clusters", "2"]);
    let k = env.kubectl();
    // member2 publishes itself; NSD serves what `atoll peer zone` printed.
    let zone = peer_ok(
        &env,
        &["zone", "--domain", "peers.test", "--context", "member2"],
    );
    assert!(
        zone.contains("PTR member2._atoll-peering._tcp.peers.test."),
        "{zone}"
    );
    let dns = nsd(&env.dir.join("nsd"), "peers.test", &zone);
    let server = format!("127.0.0.1:{}", dns.port);
    let ptr = Command::new("dig")
        .args([
            "+short",
            "@127.0.0.1",
            "-p",
            &dns.port.to_string(),
            "PTR",
            "peers.test",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ptr.stdout).trim(),
        "member2._atoll-peering._tcp.peers.test."
    );

    // One browse by hand.
    let out = peer_ok(
        &env,
        &[
            "discover",
            "--domain",
            "peers.test",
            "--dns",
            &server,
            "--context",
            "member1",
        ],
    );
    assert!(
        out.contains("member2") && out.contains("https://127.0.0.1:"),
        "{out}"
    );
    let fc = json(&k.ok(&["--context", "member1", "get", "fc", "member2", "-o", "json"]));
    assert_eq!(fc["spec"]["discoveredBy"], "DNS");
    k.eventually(
        &[
            "--context",
            "member1",
            "get",
            "fc",
            "member2",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Discovered\")].status}",
        ],
        |s| s == "True",
    );
    let token = token_line(&env, "1h");
    assert_eq!(
        fc["spec"]["caSHA256"].as_str(),
        Some(flag(&token, "--ca-sha256"))
    );
    assert_eq!(
        fc["spec"]["apiServerURL"].as_str(),
        Some(flag(&token, "--url"))
    );
    // Without a token it says what to do.
    k.eventually(
        &[
            "--context",
            "member1",
            "get",
            "fc",
            "member2",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Authenticated\")].reason}",
        ],
        |s| s == "NoToken",
    );

    // `atoll dns --peering-domain` publishes the same records from member2's own API: its
    // peering ConfigMap and the ForeignClusters it knows (none yet).
    let mut child = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["dns", "--kubeconfig"])
        .arg(env.dir.join("kubeconfig"))
        .args([
            "--context",
            "member2",
            "--listen",
            "127.0.0.1:0",
            "--peering-domain",
            "peers.test",
            "--upstream",
            &server,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _atoll_dns = Killed(child);
    assert!(line.contains("peering domain peers.test"), "{line}");
    let own = line
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .unwrap()
        .to_string();
    let (own_ip, own_port) = own.rsplit_once(':').unwrap();
    let dig = |at: (&str, &str), args: &[&str]| {
        let out = Command::new("dig")
            .args([
                "+short",
                "+time=2",
                "+tries=2",
                &format!("@{}", at.0),
                "-p",
                at.1,
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let nsd_at = ("127.0.0.1", dns.port.to_string());
    for question in [
        &["PTR", "peers.test"][..],
        &["SRV", "member2._atoll-peering._tcp.peers.test"],
        &["TXT", "member2._atoll-peering._tcp.peers.test"],
        &["A", "member2.peers.test"],
    ] {
        let ours = wait_for(20, "atoll dns publishing member2", || {
            let a = dig((own_ip, own_port), question);
            (!a.is_empty()).then_some(a)
        });
        assert_eq!(
            ours,
            dig((nsd_at.0, &nsd_at.1), question),
            "atoll dns and NSD answer {question:?} alike"
        );
    }

    // A SearchDomain finds it again once gone, and says so: this time from atoll dns.
    k.ok(&["--context", "member1", "delete", "fc", "member2"]);
    k.ok_stdin(&["--context", "member1", "apply", "-f", "-"], &format!(
        "apiVersion: peering.atoll.io/v1alpha1\nkind: SearchDomain\nmetadata: {{name: peers}}\nspec: {{domain: peers.test, server: \"{own}\"}}\n"
    ));
    k.eventually(
        &[
            "--context",
            "member1",
            "get",
            "fc",
            "member2",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Discovered\")].reason}",
        ],
        |s| s == "FoundByDNS",
    );
    k.eventually(
        &[
            "--context",
            "member1",
            "get",
            "searchdomain",
            "peers",
            "-o",
            "jsonpath={.status.found}",
        ],
        |s| s == "1",
    );

    // Peered by name, with the token alone (URL and pin from DNS).
    let out = peer_ok(
        &env,
        &[
            "add",
            "member2",
            "--token",
            flag(&token, "--token"),
            "--context",
            "member1",
        ],
    );
    assert!(out.contains("authenticated"), "{out}");

    // No longer published: marked, not deleted.
    drop(dns);
    let empty = nsd(
        &env.dir.join("nsd2"),
        "peers.test",
        &format!("{}\n", zone.lines().take(5).collect::<Vec<_>>().join("\n")),
    );
    let server = format!("127.0.0.1:{}", empty.port);
    k.ok(&[
        "--context",
        "member1",
        "patch",
        "searchdomain",
        "peers",
        "--type=merge",
        "-p",
        &format!("{{\"spec\":{{\"server\":\"{server}\"}}}}"),
    ]);
    k.eventually(
        &[
            "--context",
            "member1",
            "get",
            "fc",
            "member2",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Discovered\")].reason}",
        ],
        |s| s == "Vanished",
    );
    k.eventually(
        &[
            "--context",
            "member1",
            "get",
            "fc",
            "member2",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Authenticated\")].status}",
        ],
        |s| s == "True",
    );
}
