//! The cluster DNS end to end: a `dev up` member's kube-dns answered with `dig` (A, SRV, PTR,
//! a headless Service's ready endpoints, a StatefulSet pod by hostname, NXDOMAIN, a scale
//! seen), hostile packets survived, and `atoll dns` standalone with a service account that
//! may only list and watch, forwarding to the cluster's DNS with a cache, /metrics, /healthz.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{DevEnv, wait_for};
use crate::harness::Kubectl;

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: python:3
        command: ["sh", "-c", "exec python3 -m http.server 8080 --bind $POD_IP"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless, namespace: demo}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: demo}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - {name: db, image: db, command: ["sleep", "3600"]}
"#;

/// `dig @SERVER -p PORT ARGS +short`, the answer lines sorted.
fn dig(server: &str, args: &[&str]) -> Vec<String> {
    let (ip, port) = server.rsplit_once(':').expect("ADDRESS:PORT");
    let out = Command::new("dig")
        .args([
            &format!("@{ip}"),
            "-p",
            port,
            "+short",
            "+time=2",
            "+tries=2",
        ])
        .args(args)
        .output()
        .expect("dig runs");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';') && !l.is_empty())
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

/// The response code dig reports (`NOERROR`, `NXDOMAIN`, ...).
fn status(server: &str, args: &[&str]) -> String {
    let (ip, port) = server.rsplit_once(':').expect("ADDRESS:PORT");
    let out = Command::new("dig")
        .args([&format!("@{ip}"), "-p", port, "+time=2", "+tries=2"])
        .args(args)
        .output()
        .expect("dig runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in: {text}"))
        .to_string()
}

fn pod_ips(k: &Kubectl, selector: &str) -> Vec<String> {
    let out = k.ok(&[
        "--context",
        "member1",
        "-n",
        "demo",
        "get",
        "pods",
        "-l",
        selector,
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    let mut ips: Vec<String> = out.split_whitespace().map(String::from).collect();
    ips.sort();
    ips
}

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cluster_dns_answers_from_the_cluster_and_survives_bad_packets() {
    let env = DevEnv::up(&["--clusters", "1"]);
    let k = env.kubectl();
    let svc = |ns: &str, name: &str, path: &str| {
        k.ok(&[
            "--context",
            "member1",
            "-n",
            ns,
            "get",
            "svc",
            name,
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    // kube-dns at the tenth address of the Service range, saying where the DNS listens (port
    // 53 as root, a port of the environment's slot otherwise).
    let dns_ip = svc("kube-system", "kube-dns", "{.spec.clusterIP}");
    assert!(dns_ip.ends_with(".10"), "{dns_ip}");
    let dns = svc(
        "kube-system",
        "kube-dns",
        "{.metadata.annotations.dns\\.atoll\\.io/listen}",
    );
    assert!(dns.starts_with(&format!("{dns_ip}:")), "{dns}");
    let status_table = crate::cluster::atoll(&env.dir, &["dev", "status"]).1;
    assert!(status_table.contains(&dns), "{status_table}");

    // The specification's own example: the API server's Service.
    let api_ip = svc("default", "kubernetes", "{.spec.clusterIP}");
    assert!(api_ip.ends_with(".1"), "{api_ip}");
    assert_eq!(
        dig(&dns, &["kubernetes.default.svc.cluster.local"]),
        vec![api_ip.clone()]
    );
    assert_eq!(
        dig(
            &dns,
            &["SRV", "_https._tcp.kubernetes.default.svc.cluster.local"]
        ),
        vec!["0 100 443 kubernetes.default.svc.cluster.local.".to_string()]
    );

    k.ok_stdin(&["--context", "member1", "apply", "-f", "-"], APP);
    let web_ip = svc("demo", "web", "{.spec.clusterIP}");
    assert_eq!(
        dig(&dns, &["web.demo.svc.cluster.local"]),
        vec![web_ip.clone()]
    );
    assert_eq!(
        dig(&dns, &["SRV", "_http._tcp.web.demo.svc.cluster.local"]),
        vec!["0 100 80 web.demo.svc.cluster.local.".to_string()]
    );
    assert_eq!(
        dig(&dns, &["-x", &web_ip]),
        vec!["web.demo.svc.cluster.local.".to_string()]
    );
    assert_eq!(
        dig(&dns, &["+tcp", "TXT", "dns-version.cluster.local"]),
        vec!["\"1.0.1\"".to_string()]
    );
    assert_eq!(status(&dns, &["nope.demo.svc.cluster.local"]), "NXDOMAIN");
    assert_eq!(status(&dns, &["demo.svc.cluster.local"]), "NOERROR");

    // The headless Service: every ready endpoint; the StatefulSet's pod by its hostname.
    let pods = wait_for(120, "two web pods running", || {
        let ips = pod_ips(&k, "app=web");
        (ips.len() == 2).then_some(ips)
    });
    wait_for(60, "the headless Service's two ready endpoints", || {
        (dig(&dns, &["web-headless.demo.svc.cluster.local"]) == pods).then_some(())
    });
    let db = wait_for(120, "db-0 running", || pod_ips(&k, "app=db").pop());
    wait_for(60, "db-0 by its hostname", || {
        (dig(&dns, &["db-0.db.demo.svc.cluster.local"]) == vec![db.clone()]).then_some(())
    });
    assert_eq!(
        dig(&dns, &["SRV", "_pg._tcp.db.demo.svc.cluster.local"]),
        vec!["0 100 5432 db-0.db.demo.svc.cluster.local.".to_string()]
    );
    assert_eq!(
        dig(&dns, &["-x", &db]),
        vec!["db-0.db.demo.svc.cluster.local.".to_string()]
    );

    // A scale shows in the headless answer (how fast is `atoll bench dns`'s to measure).
    k.ok(&[
        "--context",
        "member1",
        "-n",
        "demo",
        "scale",
        "deploy/web",
        "--replicas=3",
    ]);
    let started = Instant::now();
    let three = wait_for(120, "three web pods running and ready", || {
        let ips = pod_ips(&k, "app=web");
        (ips.len() == 3 && dig(&dns, &["web-headless.demo.svc.cluster.local"]) == ips)
            .then_some(ips)
    });
    eprintln!("scaled to {three:?} in {:?}", started.elapsed());

    // Garbage, a truncated query and a response: none breaks the server.
    let (ip, port) = dns.rsplit_once(':').unwrap();
    let to = format!("{ip}:{port}");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(b"\xff\xfe garbage that is no DNS message at all", &to)
        .unwrap();
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x03web\x04demo\x03svc\x07clus");
    sock.send_to(&query, &to).unwrap();
    // Both have a header a query's: each is answered FORMERR, with its own id.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut buf = [0u8; 512];
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        assert!(n >= 12 && buf[3] & 0x0f == 1, "FORMERR: {:?}", &buf[..n]);
        ids.push([buf[0], buf[1]]);
    }
    ids.sort();
    assert_eq!(ids, vec![[0x12, 0x34], [0xff, 0xfe]]);
    sock.send_to(&[0u8; 3], &to).unwrap();
    assert_eq!(
        dig(&dns, &["web.demo.svc.cluster.local"]),
        vec![web_ip.clone()]
    );

    // `atoll dns` standalone, as service account kube-system/kube-dns (bound to
    // system:kube-dns: list and watch, nothing else), serving zone other.test and
    // forwarding the rest to the cluster's DNS.
    k.ok(&[
        "--context",
        "member1",
        "-n",
        "kube-system",
        "create",
        "serviceaccount",
        "kube-dns",
    ]);
    let token = k.ok(&[
        "--context",
        "member1",
        "-n",
        "kube-system",
        "create",
        "token",
        "kube-dns",
    ]);
    let sa = "system:serviceaccount:kube-system:kube-dns";
    for (verb, resource, allowed) in [
        ("watch", "services", "yes"),
        ("list", "endpointslices.discovery.k8s.io", "yes"),
        ("list", "pods", "yes"),
        ("get", "secrets", "no"),
        ("create", "services", "no"),
    ] {
        let out = k.run(&[
            "--context",
            "member1",
            "auth",
            "can-i",
            verb,
            resource,
            "--as",
            sa,
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            allowed,
            "{verb} {resource}"
        );
    }
    let server = k.ok(&[
        "--context",
        "member1",
        "config",
        "view",
        "--raw",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server} {.clusters[0].cluster.certificate-authority-data}",
    ]);
    let (url, ca) = server.trim().split_once(' ').unwrap();
    let kubeconfig = env.dir.join("dns-sa.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: m\n  cluster: {{server: \"{url}\", certificate-authority-data: {ca}}}\nusers:\n- name: dns\n  user: {{token: {}}}\ncontexts:\n- name: m\n  context: {{cluster: m, user: dns}}\ncurrent-context: m\n",
            token.trim()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["dns", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--zone",
            "other.test",
            "--upstream",
            &dns,
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _standalone = Proc(child);
    assert!(line.contains("ready on"), "{line}");
    let words: Vec<&str> = line.split_whitespace().collect();
    let own = words[words.iter().position(|w| *w == "on").unwrap() + 1];
    let metrics = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap()
        .to_string();
    assert_eq!(dig(own, &["web.demo.svc.other.test"]), vec![web_ip.clone()]);
    // Forwarded to the cluster's DNS, the second time from the cache.
    for _ in 0..2 {
        assert_eq!(
            dig(own, &["web.demo.svc.cluster.local"]),
            vec![web_ip.clone()]
        );
    }
    let curl = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", &format!("http://{metrics}{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(curl("/healthz"), "ok");
    let m = curl("/metrics");
    assert!(m.contains("atoll_dns_forwarded_total 2"), "{m}");
    assert!(m.contains("atoll_dns_cache_hits_total 1"), "{m}");
    assert!(
        m.contains("atoll_dns_queries_total{type=\"A\",rcode=\"NOERROR\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("atoll_dns_request_duration_seconds_count 3"),
        "{m}"
    );
}
