//! The east-west gateway end to end (`dev up --clusters 3`, member3 in a set of its own):
//! member1 exports `web`; once its ManagedCluster says its endpoints are reachable only
//! through its gateway, member2's request pod still reaches them by the clusterset name, every
//! connection going through member1's gateway (its access log, and no answer while it is
//! down); back to Direct, traffic flows without it. With curl as the client: member2's hub
//! identity gets a tunnel to the endpoint, and 403 for anything that is not one; member3
//! (outside the set) is refused at the TLS handshake.

use std::process::Command;

use serde_json::Value;

use crate::cluster::{DevEnv, json, wait_for};
use crate::harness::Kubectl;
use crate::services::WEB;

fn get(k: &Kubectl, ctx: &str, args: &[&str]) -> Option<Value> {
    let mut all = vec!["--context", ctx];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = k.run(&all);
    out.status
        .success()
        .then(|| json(&String::from_utf8_lossy(&out.stdout)))
}

/// member1's imported slices in member2: (endpoint address, gateway annotation).
fn member1_slices(k: &Kubectl) -> Vec<(String, Option<String>)> {
    let Some(list) = get(
        k,
        "member2",
        &[
            "-n",
            "demo",
            "get",
            "endpointslices",
            "-l",
            "multicluster.kubernetes.io/service-name=web,multicluster.kubernetes.io/source-cluster=member1",
        ],
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in list["items"].as_array().into_iter().flatten() {
        let gateway = s["metadata"]["annotations"]["gateway.atoll.io/east-west"]
            .as_str()
            .map(String::from);
        for e in s["endpoints"].as_array().into_iter().flatten() {
            if e["conditions"]["ready"] == true
                && let Some(a) = e["addresses"][0].as_str()
            {
                out.push((a.to_string(), gateway.clone()));
            }
        }
    }
    out
}

/// Say on the hub how member1's endpoints are reached (`Direct` or `Gateway`).
fn reach_member1(k: &Kubectl, how: &str) {
    k.ok(&[
        "--context",
        "hub",
        "annotate",
        "--overwrite",
        "managedcluster",
        "member1",
        &format!("gateway.atoll.io/endpoint-reachability={how}"),
    ]);
}

/// Run a pod in member2 that asks for `web` `n` times by each of its names: the clusterset one
/// (on one machine the members share the ClusterSetIP and one member's proxy serves it) and
/// the derived Service's (member2's own proxy); its log.
fn requests(k: &Kubectl, name: &str, n: usize) -> String {
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: demo}}
spec:
  restartPolicy: Never
  containers:
  - name: request
    image: debian
    command: ["sh", "-c", "for i in $(seq {n}); do for name in web.demo.svc.clusterset.local web.demo.svc.cluster.local; do echo \"got $(curl -s --max-time 3 http://$name/ || echo nothing)\"; done; done"]
"#
    );
    k.ok_stdin(&["--context", "member2", "apply", "-f", "-"], &pod);
    wait_for(90, &format!("pod {name} to finish"), || {
        let phase =
            get(k, "member2", &["-n", "demo", "get", "pod", name])?["status"]["phase"].clone();
        (phase == "Succeeded").then(|| k.ok(&["--context", "member2", "-n", "demo", "logs", name]))
    })
}

/// A cluster's hub identity from its agent's Secret, as PEM files in `dir`: (cert, key, CA).
fn identity_files(k: &Kubectl, ctx: &str, dir: &std::path::Path) -> [String; 3] {
    use base64::Engine;
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .expect("base64")
    };
    let secret = get(
        k,
        ctx,
        &["-n", "atoll-agent", "get", "secret", "hub-kubeconfig"],
    )
    .expect("the agent's Secret");
    let kubeconfig = String::from_utf8(b64(secret["data"]["kubeconfig"]
        .as_str()
        .expect("a kubeconfig")))
    .expect("UTF-8");
    let field = |name: &str| {
        kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} in the hub kubeconfig"))
            .to_string()
    };
    let mut paths = Vec::new();
    for (file, name) in [
        ("cert.pem", "client-certificate-data"),
        ("key.pem", "client-key-data"),
        ("ca.pem", "certificate-authority-data"),
    ] {
        let path = dir.join(format!("{ctx}-{file}"));
        std::fs::write(&path, b64(&field(name))).expect("write a PEM file");
        paths.push(path.display().to_string());
    }
    paths.try_into().expect("three files")
}

/// curl through the east-west gateway at `gateway` with a cluster's identity files to `url`:
/// (exit code, stdout, stderr).
fn curl_through(gateway: &str, id: &[String; 3], url: &str) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--proxytunnel"])
        .args(["--proxy", &format!("https://{gateway}")])
        // The gateway's certificate is a hub identity (client usage), which curl would not
        // take for a server's; the tunnel's own client checks it (unit-tested).
        .args([
            "--proxy-insecure",
            "--proxy-cert",
            &id[0],
            "--proxy-key",
            &id[1],
        ])
        .arg(url)
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn east_west_gateways_carry_traffic_to_clusters_not_directly_reachable() {
    let env = DevEnv::up(&["--clusters", "3"]);
    let k = env.kubectl();
    env.atoll_on_hub(&["clusterset", "create", "other"]);
    env.atoll_on_hub(&["clusterset", "set", "member3", "other"]);
    // dev up recorded each Pull member's gateway on its ManagedCluster.
    let mc = get(&k, "hub", &["get", "managedcluster", "member1"]).expect("member1");
    let gateway = mc["metadata"]["annotations"]["gateway.atoll.io/east-west-address"]
        .as_str()
        .expect("member1's east-west gateway address")
        .to_string();

    k.ok_stdin(
        &["--context", "member1", "apply", "-f", "-"],
        &WEB.replace("CLUSTER", "member1"),
    );
    k.ok(&["--context", "member2", "create", "namespace", "demo"]);
    let endpoint = wait_for(60, "member1's ready endpoint in member2", || {
        member1_slices(&k).into_iter().next().map(|(a, _)| a)
    });
    // The hub tells member1's gateway who imports the export: the set's members.
    wait_for(20, "the importers on member1's export record", || {
        let e = get(
            &k,
            "hub",
            &[
                "-n",
                "atoll-cluster-member1",
                "get",
                "exportedservice",
                "demo.web",
            ],
        )?;
        (e["status"]["importers"] == serde_json::json!(["member1", "member2"])).then_some(())
    });
    wait_for(20, "the derived Service in member2", || {
        get(&k, "member2", &["-n", "demo", "get", "service", "web"]).map(|_| ())
    });
    let direct = requests(&k, "direct", 2);
    assert_eq!(direct.matches("got member1").count(), 4, "{direct}");

    // member1's endpoints become reachable only through its gateway.
    reach_member1(&k, "Gateway");
    wait_for(
        20,
        "member1's slices in member2 to name its gateway",
        || {
            let slices = member1_slices(&k);
            (!slices.is_empty() && slices.iter().all(|(_, g)| g.as_deref() == Some(&gateway)))
                .then_some(())
        },
    );
    let log = env.dir.join("logs").join("member1-eastwest.log");
    // Tunnels made, by any member's proxy and by member2's.
    let tunnels = |from: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("east-west {from}")) && l.contains(" 200 "))
            .count()
    };
    let (before, before_member2) = (tunnels(""), tunnels("member2 "));
    let through = requests(&k, "through", 3);
    let logs = |name: &str| {
        std::fs::read_to_string(env.dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("east-west") || l.contains("east_west"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        through.matches("got member1").count(),
        6,
        "{through}\nmember1's gateway:\n{}\nmember2's Service proxy:\n{}",
        logs("member1-eastwest"),
        logs("member2")
    );
    assert!(
        tunnels("") >= before + 6 && tunnels("member2 ") >= before_member2 + 3,
        "every request went through member1's gateway:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Real clients at the gateway: member2's identity tunnels to the endpoint, and is told
    // why not for an address that is no endpoint; member3, outside the set, is refused at the
    // handshake.
    let member2 = identity_files(&k, "member2", &env.dir);
    let member3 = identity_files(&k, "member3", &env.dir);
    let url = format!("http://{endpoint}:8080/");
    let (code, body, err) = curl_through(&gateway, &member2, &url);
    assert_eq!((code, body.trim()), (0, "member1"), "{err}");
    let (code, _, err) = curl_through(&gateway, &member2, "http://127.0.0.1:1/");
    assert_ne!(code, 0);
    assert!(err.contains("403"), "not an endpoint: {err}");
    let (code, body, err) = curl_through(&gateway, &member3, &url);
    assert_ne!(code, 0, "member3 got through: {body}");
    assert!(
        !err.contains("403"),
        "refused at the handshake, before any request: {err}"
    );
    // Without a client certificate at all, likewise.
    let bare = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "--proxytunnel",
            "--proxy-insecure",
        ])
        .args(["--proxy", &format!("https://{gateway}"), &url])
        .output()
        .expect("curl runs");
    assert!(!bare.status.success());

    // While the gateway is down nothing gets through; back to Direct, the pods are reached
    // without it.
    env.sigkill("member1-eastwest");
    let down = requests(&k, "gateway-down", 2);
    assert_eq!(down.matches("got nothing").count(), 4, "{down}");
    reach_member1(&k, "Direct");
    wait_for(20, "member1's slices in member2 without a gateway", || {
        let slices = member1_slices(&k);
        (!slices.is_empty() && slices.iter().all(|(_, g)| g.is_none())).then_some(())
    });
    let again = requests(&k, "direct-again", 2);
    assert_eq!(again.matches("got member1").count(), 4, "{again}");
}
