//! The pod sandbox end to end (a root node agent, as CI runs): ordinary programs in a pod see
//! what they would in a real pod. A client pod reaches a Service by its full and its short
//! name through the cluster DNS, reads its ConfigMap at `/etc/app/config` (read-only, and a
//! `subPath` file), and lists pods with `kubectl` in-cluster with its projected token, its
//! service account's RBAC applying; `dnsPolicy: None`, `hostAliases` and
//! `automountServiceAccountToken: false` honoured; `atoll dns` as a pod with kube-rs'
//! in-cluster configuration; `kubectl exec` and exec probes in the same view; a token bound
//! only to a pod of its account, and dead with its pod; the host's files and mounts untouched.

use std::path::Path;

use crate::cluster::{DevEnv, dns_ip, sandbox_available, wait_for};
use crate::harness::Kubectl;

const APP: &str = r##"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: site, namespace: demo}
data: {index.html: "hello from web"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: app, namespace: demo}
data: {config: "mode=sandboxed"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: tools, namespace: demo}
data: {hello.sh: "#!/bin/sh\necho hello from a script\n"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: python:3
        command: ["sh", "-c", "exec python3 -m http.server 8080 --bind $POD_IP --directory /srv/site"]
        readinessProbe:
          exec: {command: ["test", "-f", "/srv/site/index.html"]}
          periodSeconds: 1
        volumeMounts:
        - {name: site, mountPath: /srv/site, readOnly: true}
      volumes:
      - name: site
        configMap: {name: site}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: demo}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: demo}
rules:
- {apiGroups: [""], resources: ["pods"], verbs: ["get", "list"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: demo}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: demo}
"##;

const CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo}
spec:
  serviceAccountName: reader
  restartPolicy: Never
  containers:
  - name: client
    image: debian
    command:
    - sh
    - -c
    - |
      echo "resolv: $(tr '\n' '|' < /etc/resolv.conf)"
      echo "hosts: $(grep -c "$(hostname)" /etc/hosts) $(hostname)"
      echo "fqdn: $(curl -sS --max-time 10 http://web.demo.svc.cluster.local/ 2>&1)"
      echo "short: $(curl -sS --max-time 10 http://web/ 2>&1)"
      echo "config: $(cat /etc/app/config)"
      echo "subpath: $(cat /opt/one/config.txt)"
      echo "script: $(/opt/tools/hello.sh 2>&1)"
      if touch /etc/app/new 2>/dev/null; then echo "readonly: no"; else echo "readonly: yes"; fi
      echo "pods: $(kubectl get pods -o name 2>&1 | sort | tr '\n' ' ')"
      echo "secrets: $(kubectl get secrets 2>&1)"
    volumeMounts:
    - {name: app, mountPath: /etc/app, readOnly: true}
    - {name: app, mountPath: /opt/one/config.txt, subPath: config}
    - {name: tools, mountPath: /opt/tools}
  volumes:
  - name: app
    configMap: {name: app}
  - name: tools
    configMap: {name: tools, defaultMode: 0755}
---
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: demo}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  dnsPolicy: None
  dnsConfig:
    nameservers: [127.0.0.9]
    searches: [corp.example]
    options: [{name: ndots, value: "2"}]
  hostAliases:
  - {ip: 127.0.0.7, hostnames: [db.corp.example]}
  containers:
  - name: bare
    image: debian
    command:
    - sh
    - -c
    - |
      if [ -e /var/run/secrets/kubernetes.io/serviceaccount ]; then echo "token: yes"; else echo "token: no"; fi
      echo "resolv: $(tr '\n' '|' < /etc/resolv.conf)"
      echo "alias: $(grep db.corp.example /etc/hosts)"
"#;

/// `atoll dns` as a pod, in-cluster (kube-rs' `Config::incluster`) with a service account
/// that may only read what the DNS serves.
const DNS_POD: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: dns, namespace: demo}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: demo-dns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kube-dns"}
subjects:
- {kind: ServiceAccount, name: dns, namespace: demo}
---
apiVersion: v1
kind: Pod
metadata: {name: dns, namespace: demo}
spec:
  serviceAccountName: dns
  containers:
  - name: dns
    image: atoll
    command: ["sh", "-c", "exec /atoll-bin/atoll dns --listen $POD_IP:5353 --upstream 127.0.0.1:9"]
    volumeMounts: [{name: bin, mountPath: /atoll-bin, readOnly: true}]
  # The binary through a hostPath volume: the pod's /tmp is its own, and the build may be
  # under the host's /tmp.
  volumes: [{name: bin, hostPath: {path: ATOLL_DIR, type: Directory}}]
"#;

/// The DNS pod, with the directory of the `atoll` binary under test.
fn dns_pod() -> String {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_atoll"));
    let dir = bin.parent().expect("the binary's directory");
    DNS_POD.replace("ATOLL_DIR", &format!("{:?}", dir.display().to_string()))
}

/// The value after `key: ` on the line that starts with it.
fn line<'a>(logs: &'a str, key: &str) -> &'a str {
    logs.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{logs}"))
}

/// Wait for a pod to finish; its logs.
fn finished_logs(k: &Kubectl, pod: &str) -> String {
    wait_for(90, &format!("pod {pod} to finish"), || {
        let phase = k.ok(&[
            "--context",
            "member1",
            "-n",
            "demo",
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.phase}",
        ]);
        (phase == "Succeeded" || phase == "Failed").then_some(())
    });
    k.ok(&["--context", "member1", "-n", "demo", "logs", pod])
}

/// Mount points under `dir` in this (the host's) mount namespace.
fn host_mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&dir))
        .map(String::from)
        .collect()
}

#[test]
fn pods_resolve_services_see_their_volumes_and_call_the_api_in_cluster() {
    if !sandbox_available() {
        eprintln!(
            "skipped: the pod sandbox needs a root node agent that may make mount namespaces (CI runs as root)"
        );
        return;
    }
    let resolv_before = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    let env = DevEnv::up(&["--clusters", "1"]);
    let k = env.kubectl();
    let m = |args: &[&str]| {
        let mut all = vec!["--context", "member1", "-n", "demo"];
        all.extend_from_slice(args);
        k.ok(&all)
    };
    k.ok_stdin(&["--context", "member1", "apply", "-f", "-"], APP);
    // Ready only once the exec probe, run in the container's view, found the volume.
    wait_for(90, "web to be available", || {
        (m(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ]) == "1")
            .then_some(())
    });
    k.ok_stdin(&["--context", "member1", "apply", "-f", "-"], CLIENT);

    let logs = finished_logs(&k, "client");
    assert_eq!(
        line(&logs, "resolv"),
        "search demo.svc.cluster.local svc.cluster.local cluster.local|nameserver ".to_string()
            + &dns_ip(&k, "member1")
            + "|options ndots:5|",
        "{logs}"
    );
    assert_eq!(line(&logs, "hosts"), "1 client", "{logs}");
    assert_eq!(line(&logs, "fqdn"), "hello from web", "{logs}");
    assert_eq!(line(&logs, "short"), "hello from web", "{logs}");
    assert_eq!(line(&logs, "config"), "mode=sandboxed", "{logs}");
    assert_eq!(line(&logs, "subpath"), "mode=sandboxed", "{logs}");
    assert_eq!(line(&logs, "script"), "hello from a script", "{logs}");
    assert_eq!(line(&logs, "readonly"), "yes", "{logs}");
    let pods = line(&logs, "pods");
    assert!(
        pods.contains("pod/client") && pods.contains("pod/web-"),
        "{logs}"
    );
    let secrets = line(&logs, "secrets");
    assert!(
        secrets.contains("Forbidden")
            && secrets.contains("system:serviceaccount:demo:reader")
            && secrets.contains("cannot list resource \"secrets\""),
        "{logs}"
    );

    let logs = finished_logs(&k, "bare");
    assert_eq!(line(&logs, "token"), "no", "{logs}");
    assert_eq!(
        line(&logs, "resolv"),
        "search corp.example|nameserver 127.0.0.9|options ndots:2|",
        "{logs}"
    );
    assert_eq!(line(&logs, "alias"), "127.0.0.7\tdb.corp.example", "{logs}");

    // A kube-rs client in a pod finds the API server with the pod's token alone.
    k.ok_stdin(&["--context", "member1", "apply", "-f", "-"], &dns_pod());
    let web_ip = m(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    // If it never answers, say what the pod went through.
    let report = || {
        let run = |args: &[&str]| {
            let mut a = vec!["--context", "member1", "-n", "demo"];
            a.extend_from_slice(args);
            let out = k.run(&a);
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        format!(
            "--- pod status:\n{}\n--- logs:\n{}\n--- previous logs:\n{}",
            run(&["get", "pod", "dns", "-o", "jsonpath={.status}"]),
            run(&["logs", "dns", "--tail=40"]),
            run(&["logs", "dns", "--previous", "--tail=40"]),
        )
    };
    let started = std::time::Instant::now();
    wait_for(120, "atoll dns in a pod to answer", || {
        if started.elapsed() > std::time::Duration::from_secs(115) {
            panic!("atoll dns in a pod never answered\n{}", report());
        }
        let ip = m(&["get", "pod", "dns", "-o", "jsonpath={.status.podIP}"]);
        if ip.is_empty() {
            return None;
        }
        let out = std::process::Command::new("dig")
            .args([
                &format!("@{ip}"),
                "-p",
                "5353",
                "+short",
                "+time=1",
                "+tries=1",
            ])
            .arg("web.demo.svc.cluster.local")
            .output()
            .expect("dig runs");
        (String::from_utf8_lossy(&out.stdout).trim() == web_ip).then_some(())
    });

    // `kubectl exec` runs in the container's view.
    let web = m(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    assert_eq!(
        m(&["exec", &web, "--", "cat", "/srv/site/index.html"]),
        "hello from web"
    );
    // The projected token is bound to its pod: refused by RBAC while the pod lives (the
    // default account may not list pods), not a token at all once the pod is gone.
    let token = m(&[
        "exec",
        &web,
        "--",
        "cat",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
    ]);
    let server = k.ok(&[
        "--context",
        "member1",
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let code = |token: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("{server}/api/v1/namespaces/demo/pods"))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(code(&token), "403");
    // A token is bound only to a pod that runs as its account.
    let refused = k.run(&[
        "--context",
        "member1",
        "-n",
        "demo",
        "create",
        "token",
        "reader",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        &web,
    ]);
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        !refused.status.success() && said.contains("runs as service account \"default\""),
        "{said}"
    );
    m(&["delete", "pod", &web, "--wait=true"]);
    assert_eq!(code(&token), "401");

    // The host saw none of it: no new files, its resolv.conf as it was, no mounts left.
    assert!(!Path::new("/etc/app").exists(), "/etc/app made on the host");
    assert!(!Path::new("/opt/one").exists(), "/opt/one made on the host");
    assert!(
        !Path::new("/opt/tools").exists(),
        "/opt/tools made on the host"
    );
    assert!(
        !Path::new("/srv/site").exists(),
        "/srv/site made on the host"
    );
    assert_eq!(
        std::fs::read("/etc/resolv.conf").unwrap_or_default(),
        resolv_before
    );
    assert_eq!(host_mounts_under(&env.dir), Vec::<String>::new());
}
