//! `atoll gateway` end to end (`dev up --clusters 3`): member1 and member2 export `web`
//! (answering with their cluster's name), member3 `api`, a WebSocket echo and a server that
//! never answers; MultiClusterIngresses on the hub route hosts and paths to them. Checked with
//! curl and small Python clients, as a user would: both clusters answer `a.example` (HTTP/1.1,
//! HTTP/2, TLS by SNI), `b.example/api` reaches member3, a WebSocket echoes; the bad cases get
//! 400, 404, 413, 431, 503 and 504 with a body that says why, a slow client is cut off; pods
//! deleted under a stream of requests fail none; a route and a TLS host added while a
//! keep-alive stream runs fail none; a cluster whose agent stops takes no traffic after the
//! lease grace; the status and `atoll get ingresses` show each backend's ready endpoints.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::{DevEnv, json, wait_for};
use crate::harness::Kubectl;
use crate::services::WEB;

/// member3's services: `api` (files under /api/), `ws` (a WebSocket echo in plain Python) and
/// `slow` (accepts connections, never answers).
const MEMBER3: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: demo, labels: {app: api}}
spec:
  containers:
  - name: api
    image: python:3
    command: ["sh", "-c", "mkdir -p /tmp/www/api && echo api member3 > /tmp/www/api/index.html && exec python3 -m http.server 8080 --bind $POD_IP --directory /tmp/www"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: ws, namespace: demo, labels: {app: ws}}
spec:
  containers:
  - name: ws
    image: python:3
    command: ["sh", "-c", "exec python3 -c \"$SCRIPT\""]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
    env:
    - name: SCRIPT
      value: |
        import base64, hashlib, os, socket, threading
        def serve(c):
            data = b''
            while b'\r\n\r\n' not in data:
                d = c.recv(4096)
                if not d:
                    return
                data += d
            head = data.split(b'\r\n\r\n')[0].decode()
            keys = [l.split(':', 1)[1].strip() for l in head.split('\r\n') if l.lower().startswith('sec-websocket-key:')]
            if not keys:
                c.sendall(b'HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')
                return
            accept = base64.b64encode(hashlib.sha1((keys[0] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest()).decode()
            c.sendall(('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ' + accept + '\r\n\r\n').encode())
            while True:
                h = c.recv(2)
                if len(h) < 2:
                    return
                n = h[1] & 127
                mask = c.recv(4)
                payload = b''
                while len(payload) < n:
                    payload += c.recv(n - len(payload))
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                c.sendall(bytes([0x81, len(payload)]) + payload)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((os.environ['POD_IP'], 8080))
        s.listen()
        while True:
            c, _ = s.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
---
apiVersion: v1
kind: Pod
metadata: {name: slow, namespace: demo, labels: {app: slow}}
spec:
  containers:
  - name: slow
    image: python:3
    command: ["sh", "-c", "exec python3 -c \"import os, socket; s = socket.socket(); s.bind((os.environ['POD_IP'], 8080)); s.listen(); held = [s.accept() for _ in iter(int, 1)]\""]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: demo}
spec: {selector: {app: api}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ws, namespace: demo}
spec: {selector: {app: ws}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: slow, namespace: demo}
spec: {selector: {app: slow}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: api, namespace: demo}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: ws, namespace: demo}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: slow, namespace: demo}
"#;

const INGRESSES: &str = r#"
apiVersion: networking.atoll.io/v1alpha1
kind: MultiClusterIngress
metadata: {name: web, namespace: demo}
spec:
  tls: [{hosts: [a.example], secretName: a-tls}]
  rules:
  - host: a.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: b.example
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
  - host: ws.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: ws, port: {number: 80}}}}
  - host: none.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: nothing, port: {number: 80}}}}
---
apiVersion: networking.atoll.io/v1alpha1
kind: MultiClusterIngress
metadata:
  name: slow
  namespace: demo
  annotations: {networking.atoll.io/upstream-timeout: 1s}
spec:
  rules:
  - host: slow.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: slow, port: {number: 80}}}}
"#;

/// A route and a TLS host added to `web` while traffic flows.
const ADDED: &str = r#"
apiVersion: networking.atoll.io/v1alpha1
kind: MultiClusterIngress
metadata: {name: more, namespace: demo}
spec:
  tls: [{hosts: [c.example], secretName: c-tls}]
  rules:
  - host: c.example
    http:
      paths:
      - {path: /, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
"#;

/// The running gateway; killed when dropped.
struct Gateway {
    child: Child,
    http: SocketAddr,
    https: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(hub_kubeconfig: &std::path::Path) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["gateway", "--kubeconfig"])
        .arg(hub_kubeconfig)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--max-body-bytes",
            "1024",
            "--max-header-bytes",
            "16384",
            "--header-timeout-seconds",
            "2",
            "--health-interval-seconds",
            "1",
            "--access-log",
            "off",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("atoll gateway starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the gateway's ready line");
    assert!(line.contains("ready"), "the gateway's first line: {line}");
    // "atoll gateway ready on http://A, https://B"
    let addr = |scheme: &str| -> SocketAddr {
        let at = line.find(&format!("{scheme}://")).expect("an address") + scheme.len() + 3;
        line[at..]
            .split([',', ' ', '\n'])
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {scheme} address in {line}"))
    };
    Gateway {
        http: addr("http"),
        https: addr("https"),
        child,
    }
}

/// `curl` with `args`: (exit success, HTTP status, body).
fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (out.status.success(), code.to_string(), body.to_string())
}

/// A GET of `http://HOST/PATH` through the gateway: (status, body).
fn get(gw: &Gateway, host: &str, path: &str) -> (String, String) {
    let resolve = format!("{host}:{}:127.0.0.1", gw.http.port());
    let url = format!("http://{host}:{}{path}", gw.http.port());
    let (_, code, body) = curl(&["--resolve", &resolve, &url]);
    (code, body.trim().to_string())
}

/// Which clusters answer `a.example` over `n` requests.
fn answering(gw: &Gateway, n: usize) -> Vec<String> {
    let mut seen: Vec<String> = (0..n)
        .map(|_| get(gw, "a.example", "/"))
        .filter(|(code, _)| code == "200")
        .map(|(_, body)| body)
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

fn python(script: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tls_secret(k: &Kubectl, dir: &std::path::Path, name: &str, host: &str) -> std::path::PathBuf {
    let cert = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    k.ok(&[
        "--context",
        "hub",
        "-n",
        "demo",
        "create",
        "secret",
        "tls",
        name,
        "--cert",
        crt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    crt
}

/// `n` GETs of `url` on one keep-alive connection (curl reuses it for repeated URLs): each
/// one's status code and how many connections it opened.
fn keep_alive_stream(resolve: &str, url: &str, n: usize) -> std::thread::JoinHandle<Vec<String>> {
    let (resolve, url) = (resolve.to_string(), url.to_string());
    std::thread::spawn(move || {
        let mut args = vec![
            "-s".to_string(),
            "--resolve".into(),
            resolve,
            "-w".into(),
            "\ncode=%{http_code} %{num_connects}\n".into(),
            // A little apart, so the stream lasts while the route changes.
            "--rate".into(),
            "50/s".into(),
        ];
        args.extend(std::iter::repeat_n(url, n));
        let out = Command::new("curl")
            .args(&args)
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("code="))
            .map(String::from)
            .collect()
    })
}

/// The hub's `demo/web` ingress's status and its backend `web`, once the gateway wrote them.
fn web_status(k: &Kubectl) -> Option<(serde_json::Value, serde_json::Value)> {
    let mci = json(&k.ok(&[
        "--context",
        "hub",
        "-n",
        "demo",
        "get",
        "mci",
        "web",
        "-o",
        "json",
    ]));
    let web = mci["status"]["backends"]
        .as_array()?
        .iter()
        .find(|b| b["service"] == "web")?
        .clone();
    Some((mci["status"].clone(), web))
}

#[test]
fn multicluster_ingress_routes_outside_traffic_across_clusters() {
    let env = DevEnv::up(&["--clusters", "3", "--cluster-lease-seconds", "2"]);
    let k = env.kubectl();
    for m in ["member1", "member2"] {
        k.ok_stdin(
            &["--context", m, "apply", "-f", "-"],
            &WEB.replace("CLUSTER", m),
        );
    }
    k.ok_stdin(&["--context", "member3", "apply", "-f", "-"], MEMBER3);
    // The hub's namespace for the ingresses, bound to the set the members are in.
    k.ok(&["--context", "hub", "create", "namespace", "demo"]);
    let kubeconfig = env.dir.join("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args([
            "clusterset",
            "bind",
            "default",
            "-n",
            "demo",
            "--context",
            "hub",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .output()
        .expect("atoll runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a_crt = tls_secret(&k, &env.dir, "a-tls", "a.example");
    k.ok_stdin(&["--context", "hub", "apply", "-f", "-"], INGRESSES);
    let hub_kubeconfig = env.dir.join("hub.kubeconfig");
    std::fs::write(
        &hub_kubeconfig,
        k.ok(&[
            "config",
            "view",
            "--minify",
            "--flatten",
            "--context",
            "hub",
        ]),
    )
    .unwrap();
    let gw = start_gateway(&hub_kubeconfig);

    // Both clusters answer a.example, over HTTP/1.1 and HTTP/2 (prior knowledge).
    wait_for(90, "member1 and member2 to answer a.example", || {
        (answering(&gw, 6) == ["member1", "member2"]).then_some(())
    });
    let resolve = format!("a.example:{}:127.0.0.1", gw.http.port());
    let url = format!("http://a.example:{}/", gw.http.port());
    let (_, code, body) = curl(&["--http2-prior-knowledge", "--resolve", &resolve, &url]);
    assert_eq!(code, "200");
    assert!(body.starts_with("member"), "{body}");
    // TLS by SNI with the Secret's certificate, HTTP/2 by ALPN.
    let resolve_tls = format!("a.example:{}:127.0.0.1", gw.https.port());
    let url_tls = format!("https://a.example:{}/", gw.https.port());
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(&a_crt)
        .args([
            "--resolve",
            &resolve_tls,
            "-w",
            "\n%{http_version}",
            &url_tls,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl over TLS: {text}");
    assert!(
        text.starts_with("member") && text.ends_with("\n2"),
        "{text}"
    );

    // b.example/api reaches member3's api; b.example/ is no path of b.example.
    wait_for(30, "member3's api", || {
        (get(&gw, "b.example", "/api/") == ("200".into(), "api member3".into())).then_some(())
    });
    assert_eq!(
        get(&gw, "b.example", "/"),
        ("404".into(), "no path of host b.example matches /".into())
    );

    // A WebSocket echoes through the gateway.
    // (It answers a plain GET with 400.)
    wait_for(30, "the ws backend", || {
        (get(&gw, "ws.example", "/").0 == "400").then_some(())
    });
    let echoed = python(&format!(
        r#"
import socket
s = socket.create_connection(('127.0.0.1', {port}), timeout=10)
s.sendall(b'GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
data = b''
while b'\r\n\r\n' not in data:
    data += s.recv(4096)
head, rest = data.split(b'\r\n\r\n', 1)
assert b' 101 ' in head.split(b'\r\n')[0], data
assert b's3pPLMBiTxaQ9kYGzzhZRbK+xOo=' in head, head
for msg in [b'hello through the gateway', b'and again']:
    mask = b'\x01\x02\x03\x04'
    s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
    while len(rest) < 2 + len(msg):
        rest += s.recv(4096)
    print(rest[2:2 + len(msg)].decode())
    rest = rest[2 + len(msg):]
"#,
        port = gw.http.port()
    ));
    assert_eq!(echoed, "hello through the gateway\nand again");

    // Bad input, each with a body that says why.
    let (_, code, body) = curl(&["-H", "Host: other.example", &format!("http://{}/", gw.http)]);
    assert_eq!(
        (code.as_str(), body.trim()),
        ("404", "no MultiClusterIngress routes host other.example")
    );
    let (_, code, body) = curl(&["-H", "Host:", &format!("http://{}/", gw.http)]);
    assert_eq!(
        (code.as_str(), body.trim()),
        ("400", "the request has no Host header")
    );
    let (code, body) = get(&gw, "none.example", "/");
    assert_eq!(code, "503", "{body}");
    assert!(
        body.contains("no ready endpoint for Service demo/nothing port 80"),
        "{body}"
    );
    wait_for(30, "the slow backend", || {
        let (code, _) = get(&gw, "slow.example", "/");
        (code == "504").then_some(())
    });
    let (code, body) = get(&gw, "slow.example", "/");
    assert_eq!(code, "504", "{body}");
    assert!(body.contains("did not answer within 1s"), "{body}");
    let big = "x".repeat(2048);
    let (_, code, body) = curl(&["--resolve", &resolve, "--data", &big, &url]);
    assert_eq!(code, "413", "{body}");
    assert!(
        body.contains("larger than the gateway's limit of 1024 bytes"),
        "{body}"
    );
    let huge = format!("X-Big: {}", "a".repeat(20_000));
    let (_, code, _) = curl(&["--resolve", &resolve, "-H", &huge, &url]);
    assert_eq!(code, "431");
    // A client that never finishes its headers is cut off after the header timeout (2 s).
    let cut = python(&format!(
        r#"
import socket, time
s = socket.create_connection(('127.0.0.1', {port}), timeout=10)
s.sendall(b'GET / HTTP/1.1\r\nHost: a.exa')
start = time.time()
while True:
    d = s.recv(4096)
    if not d:
        break
print(round(time.time() - start))
"#,
        port = gw.http.port()
    ));
    assert!(["2", "3"].contains(&cut.as_str()), "cut off after {cut} s");

    // The status: where the gateway listens and each backend's ready endpoints per cluster.
    let status = wait_for(20, "the web ingress's status", || {
        let (status, web) = web_status(&k)?;
        (web["clusters"] == serde_json::json!([{"cluster": "member1", "ready": 1}, {"cluster": "member2", "ready": 1}]))
            .then_some(status)
    });
    assert_eq!(status["loadBalancer"]["ingress"][0]["ip"], "127.0.0.1");
    let programmed = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Programmed")
        .unwrap();
    assert_eq!(programmed["reason"], "Programmed", "{programmed}");
    let backends = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "BackendsReady")
        .unwrap();
    assert_eq!(backends["status"], "False", "nothing serves demo/nothing");
    assert!(
        backends["message"].as_str().unwrap().contains("nothing:80"),
        "{backends}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["get", "ingresses", "--context", "hub", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().any(|l| l.contains("a.example")
            && l.contains("web:80")
            && l.contains("member1=1,member2=1")),
        "{table}"
    );

    // member1's pod is deleted under a stream of requests: none fails (the connection that
    // cannot be made is tried on member2, the endpoint ejected until the slices drop it).
    let stream = keep_alive_stream(&resolve, &url, 150);
    std::thread::sleep(Duration::from_millis(700));
    k.ok(&[
        "--context",
        "member1",
        "-n",
        "demo",
        "delete",
        "pod",
        "-l",
        "app=web",
        "--wait=false",
    ]);
    let codes = stream.join().unwrap();
    assert_eq!(codes.len(), 150);
    assert!(codes.iter().all(|c| c.starts_with("200 ")), "{codes:?}");
    wait_for(60, "member1's new pod to answer", || {
        (answering(&gw, 6) == ["member1", "member2"]).then_some(())
    });

    // A route and a TLS host are added while a keep-alive stream runs: no request fails and
    // the stream keeps its one connection.
    let c_crt = tls_secret(&k, &env.dir, "c-tls", "c.example");
    let stream = keep_alive_stream(&resolve, &url, 150);
    std::thread::sleep(Duration::from_millis(500));
    k.ok_stdin(&["--context", "hub", "apply", "-f", "-"], ADDED);
    let codes = stream.join().unwrap();
    assert!(codes.iter().all(|c| c.starts_with("200 ")), "{codes:?}");
    let new_connections = codes.iter().filter(|c| !c.ends_with(" 0")).count();
    assert_eq!(
        new_connections, 1,
        "one connection for the whole stream: {codes:?}"
    );
    wait_for(20, "the new route", || {
        (get(&gw, "c.example", "/").0 == "200").then_some(())
    });
    assert_eq!(get(&gw, "c.example", "/other").0, "404", "an Exact path");
    let resolve_c = format!("c.example:{}:127.0.0.1", gw.https.port());
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(&c_crt)
        .args([
            "--resolve",
            &resolve_c,
            &format!("https://c.example:{}/", gw.https.port()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "the new TLS host");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("member"));

    // member1's agent stops: once its lease is past the grace (2 periods of 2 s), only
    // member2 answers, and the status says member1 has none ready.
    env.sigkill("member1-agent");
    wait_for(30, "only member2 to answer", || {
        (answering(&gw, 8) == ["member2"]).then_some(())
    });
    wait_for(20, "member1 with no ready endpoint in the status", || {
        let (_, web) = web_status(&k)?;
        (web["clusters"][0] == serde_json::json!({"cluster": "member1", "ready": 0})).then_some(())
    });
}
