//! Multi-cluster services end to end (`dev up --clusters 4`; member4 in a set of its own):
//! two members export a Service, every member of their set (exporters too, and a member with
//! only the namespace) gets the ServiceImport with a ClusterSetIP and one labelled EndpointSlice
//! per source cluster, the set's outsider gets nothing, a member cannot read another's
//! exports; conflicts (ports, type) on both exports with the oldest's values kept; ExternalName
//! and Service-less exports refused; a member whose agent stops has its endpoints withdrawn
//! within the grace and restored when it is back; unexporting everywhere removes it all.

use serde_json::Value;

use crate::cluster::{DevEnv, atoll, dig, dns_ip, json, wait_for};
use crate::harness::Kubectl;

/// A Deployment answering with its cluster's name (`CLUSTER`, replaced), its Service and
/// ServiceExport, in namespace `demo`.
pub(crate) const WEB: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
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
        command: ["sh", "-c", "mkdir -p /tmp/www && echo CLUSTER > /tmp/www/index.html && exec python3 -m http.server 8080 --bind $POD_IP --directory /tmp/www"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: web, namespace: demo}
"#;

/// A headless Service with a one-pod StatefulSet behind it, exported.
const DB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: sql, port: 5432}]
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
      - name: db
        image: postgres
        command: ["sleep", "3600"]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: db, namespace: demo}
"#;

fn get(k: &Kubectl, ctx: &str, args: &[&str]) -> Option<Value> {
    let mut all = vec!["--context", ctx, "-n", "demo", "get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = k.run(&all);
    out.status
        .success()
        .then(|| json(&String::from_utf8_lossy(&out.stdout)))
}

/// A condition of member `ctx`'s ServiceExport `name`: (status, reason).
fn export_condition(k: &Kubectl, ctx: &str, name: &str, type_: &str) -> Option<(String, String)> {
    let e = get(k, ctx, &["serviceexport", name])?;
    e["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// The source clusters of member `ctx`'s imported slices of `name` with a ready endpoint.
fn ready_sources(k: &Kubectl, ctx: &str, name: &str) -> Vec<String> {
    let Some(list) = get(
        k,
        ctx,
        &[
            "endpointslices",
            "-l",
            &format!("multicluster.kubernetes.io/service-name={name}"),
        ],
    ) else {
        return Vec::new();
    };
    let mut out: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                == "mcs-controller.atoll.io"
                && s["endpoints"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["conditions"]["ready"] == true))
        })
        .filter_map(|s| {
            s["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"]
                .as_str()
                .map(String::from)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn exported_services_are_imported_across_the_set() {
    let env = DevEnv::up(&["--clusters", "4", "--cluster-lease-seconds", "2"]);
    let k = env.kubectl();
    env.atoll_on_hub(&["clusterset", "create", "other"]);
    env.atoll_on_hub(&["clusterset", "set", "member4", "other"]);
    // member1 exports first (the oldest export), member2 a second later.
    k.ok_stdin(
        &["--context", "member1", "apply", "-f", "-"],
        &WEB.replace("CLUSTER", "member1"),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    k.ok_stdin(
        &["--context", "member2", "apply", "-f", "-"],
        &WEB.replace("CLUSTER", "member2"),
    );
    for m in ["member3", "member4"] {
        k.ok(&["--context", m, "create", "namespace", "demo"]);
    }

    for m in ["member1", "member2", "member3"] {
        let import = wait_for(20, &format!("the ServiceImport in {m}"), || {
            let i = get(&k, m, &["serviceimport", "web"])?;
            (i["status"]["clusters"].as_array()?.len() == 2).then_some(i)
        });
        assert_eq!(import["spec"]["type"], "ClusterSetIP");
        let ip = import["spec"]["ips"][0].as_str().expect("a ClusterSetIP");
        assert!(
            ip.starts_with("127.12.") || ip.starts_with("127.13."),
            "the environment's ClusterSetIP range: {ip}"
        );
        assert_eq!(import["spec"]["ipFamilies"], serde_json::json!(["IPv4"]));
        assert_eq!(
            import["spec"]["ports"],
            serde_json::json!([{"name": "http", "port": 80, "protocol": "TCP"}])
        );
        assert_eq!(
            import["status"]["clusters"],
            serde_json::json!([{"cluster": "member1"}, {"cluster": "member2"}])
        );
        wait_for(
            30,
            &format!("both clusters' ready endpoints in {m}"),
            || (ready_sources(&k, m, "web") == ["member1", "member2"]).then_some(()),
        );
    }
    // The request pod in member3 reaches both clusters by the clusterset name (its cluster DNS
    // answers clusterset.local) and by the derived Service's cluster.local name.
    wait_for(20, "the derived Service in member3", || {
        let svc = get(&k, "member3", &["service", "web"])?;
        (svc["metadata"]["labels"]["networking.atoll.io/derived-from"] == "web").then_some(())
    });
    let dns = dns_ip(&k, "member3");
    let dig = |args: &[&str]| dig(&dns, args);
    let ip = get(&k, "member3", &["serviceimport", "web"]).expect("the import")["spec"]["ips"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(dig(&["web.demo.svc.clusterset.local"]), ip);
    assert_eq!(
        dig(&["SRV", "_http._tcp.web.demo.svc.clusterset.local"]),
        "0 100 80 web.demo.svc.clusterset.local."
    );
    assert_eq!(dig(&["TXT", "dns-version.clusterset.local"]), "\"1.0.0\"");
    assert_eq!(dig(&["member1.web.demo.svc.clusterset.local"]), "");
    k.ok_stdin(
        &["--context", "member3", "apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: request, namespace: demo}
spec:
  restartPolicy: Never
  containers:
  - name: request
    image: debian
    command: ["sh", "-c", "for i in 1 2 3 4 5 6; do echo \"set $(curl -s --max-time 5 http://web.demo.svc.clusterset.local/)\"; echo \"local $(curl -s --max-time 5 http://web.demo.svc.cluster.local/)\"; done"]
"#,
    );
    let logs = wait_for(60, "the request pod to finish", || {
        let phase = get(&k, "member3", &["pod", "request"])?["status"]["phase"].clone();
        (phase == "Succeeded")
            .then(|| k.ok(&["--context", "member3", "-n", "demo", "logs", "request"]))
    });
    for (via, cluster) in [
        ("set", "member1"),
        ("set", "member2"),
        ("local", "member1"),
        ("local", "member2"),
    ] {
        assert!(
            logs.contains(&format!("{via} {cluster}")),
            "{via} never reached {cluster}:\n{logs}"
        );
    }
    // A Service made later where the derived one holds the name takes it; the derived one
    // steps aside as web-clusterset.
    k.ok(&[
        "--context",
        "member3",
        "-n",
        "demo",
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
    ]);
    wait_for(20, "the derived Service to step aside", || {
        let derived = get(&k, "member3", &["service", "web-clusterset"])?;
        (derived["metadata"]["labels"]["networking.atoll.io/derived-from"] == "web").then_some(())
    });
    let own = get(&k, "member3", &["service", "web"]).expect("member3's own web");
    assert!(
        own["metadata"]["labels"]["networking.atoll.io/derived-from"].is_null(),
        "{own}"
    );
    // ...and it stays (the derived one's cleanup deletes only the derived one), so member3 can
    // export it in turn.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        get(&k, "member3", &["service", "web"])
            .is_some_and(|s| s["metadata"]["uid"] == own["metadata"]["uid"])
    );
    k.ok_stdin(
        &["--context", "member3", "apply", "-f", "-"],
        "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {name: web, namespace: demo}\n",
    );
    wait_for(20, "member3's export valid", || {
        (export_condition(&k, "member3", "web", "Valid") == Some(("True".into(), "Valid".into())))
            .then_some(())
    });
    k.ok(&[
        "--context",
        "member3",
        "-n",
        "demo",
        "delete",
        "serviceexport",
        "web",
    ]);
    for m in ["member1", "member2"] {
        assert_eq!(
            export_condition(&k, m, "web", "Valid"),
            Some(("True".into(), "Valid".into()))
        );
        assert_eq!(
            export_condition(&k, m, "web", "Ready"),
            Some(("True".into(), "Ready".into()))
        );
        assert_eq!(
            export_condition(&k, m, "web", "Conflict"),
            Some(("False".into(), "NoConflicts".into()))
        );
    }
    // The outsider gets nothing; members see only their own records on the hub.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(get(&k, "member4", &["serviceimport", "web"]).is_none());
    let as_member3 = [
        "--context",
        "hub",
        "--as",
        "system:atoll:cluster:member3:agent",
        "--as-group",
        "system:atoll:cluster:member3",
        "--as-group",
        "system:atoll:clusters",
    ];
    let peek = k.run(
        &[
            &as_member3[..],
            &["-n", "atoll-cluster-member1", "get", "exportedservices"],
        ]
        .concat(),
    );
    assert!(!peek.status.success(), "member3 read member1's exports");
    assert!(String::from_utf8_lossy(&peek.stderr).contains("forbidden"));
    k.ok(&[
        &as_member3[..],
        &["-n", "atoll-cluster-member3", "get", "importedservices"],
    ]
    .concat());

    // A port conflict: member2 serves http on 81. Both exports say so; member1's port stays.
    k.ok(&[
        "--context",
        "member2",
        "-n",
        "demo",
        "patch",
        "service",
        "web",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/ports/0/port", "value": 81}]"#,
    ]);
    for m in ["member1", "member2"] {
        wait_for(20, &format!("PortConflict on {m}'s export"), || {
            (export_condition(&k, m, "web", "Conflict")
                == Some(("True".into(), "PortConflict".into())))
            .then_some(())
        });
    }
    let import = get(&k, "member3", &["serviceimport", "web"]).expect("the import");
    assert_eq!(import["spec"]["ports"][0]["port"], 80);
    k.ok(&[
        "--context",
        "member2",
        "-n",
        "demo",
        "patch",
        "service",
        "web",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/ports/0/port", "value": 80}]"#,
    ]);
    wait_for(20, "the port conflict to clear", || {
        (export_condition(&k, "member1", "web", "Conflict")
            == Some(("False".into(), "NoConflicts".into())))
        .then_some(())
    });

    // A type conflict: db is a ClusterIP Service in member1 (older), headless in member2.
    // (member2 makes its Service first: a cluster that is to serve an imported service has
    // its own Service, and the derived one keeps out of its way.)
    let db = |headless: bool, export: bool| {
        let mut text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: demo}}\nspec:\n  {}selector: {{app: db}}\n  ports: [{{name: pg, port: 5432}}]\n",
            if headless { "clusterIP: None\n  " } else { "" }
        );
        if export {
            text.push_str("---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {name: db, namespace: demo}\n");
        }
        text
    };
    k.ok_stdin(
        &["--context", "member2", "apply", "-f", "-"],
        &db(true, false),
    );
    k.ok_stdin(
        &["--context", "member1", "apply", "-f", "-"],
        &db(false, true),
    );
    wait_for(20, "db imported", || {
        get(&k, "member3", &["serviceimport", "db"])
    });
    std::thread::sleep(std::time::Duration::from_millis(1100));
    k.ok_stdin(
        &["--context", "member2", "apply", "-f", "-"],
        &db(true, true),
    );
    assert!(
        get(&k, "member2", &["service", "db-clusterset"]).is_some(),
        "member2's own db keeps its name; the derived one is db-clusterset"
    );
    for m in ["member1", "member2"] {
        wait_for(20, &format!("TypeConflict on {m}'s db export"), || {
            (export_condition(&k, m, "db", "Conflict")
                == Some(("True".into(), "TypeConflict".into())))
            .then_some(())
        });
    }
    assert_eq!(
        get(&k, "member3", &["serviceimport", "db"]).expect("db")["spec"]["type"],
        "ClusterSetIP"
    );

    // Exports that cannot be: an ExternalName Service, and no Service at all.
    k.ok_stdin(
        &["--context", "member1", "apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: demo}\nspec: {type: ExternalName, externalName: example.invalid}\n---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {name: ext, namespace: demo}\n---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {name: ghost, namespace: demo}\n",
    );
    wait_for(20, "ext and ghost refused", || {
        (export_condition(&k, "member1", "ext", "Valid")
            == Some(("False".into(), "InvalidServiceType".into()))
            && export_condition(&k, "member1", "ghost", "Valid")
                == Some(("False".into(), "NoService".into())))
        .then_some(())
    });
    assert!(get(&k, "member3", &["serviceimport", "ext"]).is_none());
    assert!(get(&k, "member3", &["serviceimport", "ghost"]).is_none());

    // member1's agent stops renewing: after 2 lease periods (4 s) its endpoints are withdrawn
    // everywhere, long before the hub calls it unavailable; back, they return.
    env.sigkill("member1-agent");
    for m in ["member2", "member3"] {
        wait_for(15, &format!("member1's endpoints withdrawn in {m}"), || {
            (ready_sources(&k, m, "web") == ["member2"]).then_some(())
        });
    }
    let (ok, out) = atoll(&env.dir, &["dev", "up"]);
    assert!(ok, "{out}");
    wait_for(30, "member1's endpoints back", || {
        (ready_sources(&k, "member3", "web") == ["member1", "member2"]).then_some(())
    });

    // Unexported everywhere: no import, no slices, in any member.
    for m in ["member1", "member2"] {
        k.ok(&[
            "--context",
            m,
            "-n",
            "demo",
            "delete",
            "serviceexport",
            "web",
        ]);
    }
    for m in ["member1", "member2", "member3"] {
        wait_for(20, &format!("web's import gone from {m}"), || {
            (get(&k, m, &["serviceimport", "web"]).is_none()
                && ready_sources(&k, m, "web").is_empty())
            .then_some(())
        });
    }
    wait_for(20, "the derived Service gone", || {
        get(&k, "member3", &["service", "web-clusterset"])
            .is_none()
            .then_some(())
    });
    let left = get(
        &k,
        "member3",
        &[
            "endpointslices",
            "-l",
            "multicluster.kubernetes.io/service-name=web",
        ],
    )
    .expect("a list");
    assert_eq!(left["items"].as_array().map(Vec::len), Some(0), "{left}");
}

/// A Push cluster (no agent: the hub works it with its push credential) exports and imports
/// as a Pull cluster does, and its endpoints are withdrawn when the hub's probe of it fails;
/// a headless StatefulSet exported from both clusters answers by pod and by cluster.
#[test]
fn push_clusters_export_and_import_as_pull_ones_do() {
    let env = DevEnv::up(&[
        "--clusters",
        "2",
        "--push-clusters",
        "1",
        "--cluster-lease-seconds",
        "2",
    ]);
    let k = env.kubectl();
    k.ok_stdin(
        &["--context", "member1", "apply", "-f", "-"],
        &WEB.replace("CLUSTER", "member1"),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    k.ok_stdin(
        &["--context", "member2", "apply", "-f", "-"],
        &WEB.replace("CLUSTER", "member2"),
    );
    for m in ["member1", "member2"] {
        wait_for(30, &format!("both clusters' endpoints in {m}"), || {
            let i = get(&k, m, &["serviceimport", "web"])?;
            (i["status"]["clusters"].as_array()?.len() == 2
                && ready_sources(&k, m, "web") == ["member1", "member2"])
            .then_some(())
        });
    }
    wait_for(20, "member2's export valid and ready", || {
        (export_condition(&k, "member2", "web", "Valid")? == ("True".into(), "Valid".into())
            && export_condition(&k, "member2", "web", "Ready")?.0 == "True")
            .then_some(())
    });
    // The push member gets a derived Service only where no local one is: it has its own web,
    // so web-clusterset.
    wait_for(20, "the derived Service in member2", || {
        let svc = get(&k, "member2", &["service", "web-clusterset"])?;
        (svc["metadata"]["labels"]["networking.atoll.io/derived-from"] == "web").then_some(())
    });
    // member2's API server stops answering the hub's probe: its endpoints are withdrawn from
    // member1 after the grace; back, they return.
    env.sigkill("member2");
    wait_for(20, "member2's endpoints withdrawn in member1", || {
        (ready_sources(&k, "member1", "web") == ["member1"]).then_some(())
    });
    let (ok, out) = atoll(&env.dir, &["dev", "up"]);
    assert!(ok, "{out}");
    wait_for(40, "member2's endpoints back in member1", || {
        (ready_sources(&k, "member1", "web") == ["member1", "member2"]).then_some(())
    });
    // Headless across clusters: a StatefulSet db in each, exported by both; the clusterset
    // name answers every ready pod of both, and db-0 of each by its cluster's name. member2
    // gets a derived db from member1's export before its own manifest is applied: the
    // `kubectl apply` takes the name from it.
    k.ok_stdin(&["--context", "member1", "apply", "-f", "-"], DB);
    wait_for(20, "member1's db derived in member2", || {
        let svc = get(&k, "member2", &["service", "db"])?;
        (svc["metadata"]["labels"]["networking.atoll.io/derived-from"] == "db").then_some(())
    });
    k.ok_stdin(&["--context", "member2", "apply", "-f", "-"], DB);
    let pod_ip = |m: &str| {
        wait_for(60, &format!("db-0 running in {m}"), || {
            let p = get(&k, m, &["pod", "db-0"])?;
            (p["status"]["phase"] == "Running")
                .then(|| p["status"]["podIP"].as_str().map(String::from))
                .flatten()
        })
    };
    let (ip1, ip2) = (pod_ip("member1"), pod_ip("member2"));
    let dns = dns_ip(&k, "member1");
    let dig = |name: &str| {
        let mut ips: Vec<String> = dig(&dns, &[name]).lines().map(String::from).collect();
        ips.sort();
        ips
    };
    let mut both = vec![ip1.clone(), ip2.clone()];
    both.sort();
    wait_for(30, "an A record per ready db pod of both clusters", || {
        (dig("db.demo.svc.clusterset.local") == both).then_some(())
    });
    assert_eq!(dig("db-0.member1.db.demo.svc.clusterset.local"), [ip1]);
    assert_eq!(dig("db-0.member2.db.demo.svc.clusterset.local"), [ip2]);
    let import = get(&k, "member1", &["serviceimport", "db"]).expect("db's import");
    assert_eq!(import["spec"]["type"], "Headless", "{import}");
    let own = get(&k, "member2", &["service", "db"]).expect("member2's db");
    assert!(
        own["metadata"]["labels"]["networking.atoll.io/derived-from"].is_null()
            && own["spec"]["selector"]["app"] == "db",
        "{own}"
    );

    // Unexported from the push member: member1's import is its own alone.
    k.ok(&[
        "--context",
        "member2",
        "-n",
        "demo",
        "delete",
        "serviceexport",
        "web",
    ]);
    wait_for(20, "member2 gone from member1's import", || {
        let i = get(&k, "member1", &["serviceimport", "web"])?;
        (i["status"]["clusters"] == serde_json::json!([{"cluster": "member1"}])).then_some(())
    });
}
