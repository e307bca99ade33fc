//! Work delivery end to end: ManifestWorks applied in Pull mode (the member's agent) and Push
//! mode (the hub, with the member's credential), drift put back, bad input reported, executors
//! and credentials; `atoll deploy` over a workspace's placement, a progressive update, undeploy
//! and failover. Real processes (`atoll dev up`), kubectl, curl.

use serde_json::Value;

use crate::cluster::{DevEnv, http_status, json, wait_for};
use crate::harness::Kubectl;
use crate::placement::{atoll_as, hub_admin, hub_user};

const WEB: &str = r#"
    - apiVersion: v1
      kind: Namespace
      metadata: {name: demo}
    - apiVersion: apps/v1
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
    - apiVersion: v1
      kind: Service
      metadata: {name: web, namespace: demo}
      spec:
        selector: {app: web}
        ports: [{port: 8080, targetPort: 8080}]
"#;

fn work(name: &str, cluster: &str, manifests: &str, extra: &str) -> String {
    format!(
        "apiVersion: work.atoll.io/v1alpha1\nkind: ManifestWork\nmetadata: {{name: {name}, namespace: atoll-cluster-{cluster}}}\nspec:\n  workload:\n    manifests:{manifests}{extra}"
    )
}

const FEEDBACK: &str = "  manifestConfigs:\n  - resourceIdentifier: {group: apps, resource: deployments, namespace: demo, name: web}\n    feedbackRules: [{type: WellKnownStatus}]\n";

fn work_json(k: &Kubectl, cluster: &str, name: &str) -> Value {
    json(&k.ok(&[
        "--context",
        "hub",
        "-n",
        &format!("atoll-cluster-{cluster}"),
        "get",
        "manifestwork",
        name,
        "-o",
        "json",
    ]))
}

fn condition(obj: &Value, t: &str) -> (String, String) {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == t)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

fn ready_replicas(k: &Kubectl, ctx: &str) -> Option<i64> {
    let out = k.run(&[
        "--context",
        ctx,
        "-n",
        "demo",
        "get",
        "deploy",
        "web",
        "-o",
        "json",
    ]);
    if !out.status.success() {
        return None;
    }
    let d: Value = serde_json::from_slice(&out.stdout).ok()?;
    d["status"]["readyReplicas"].as_i64()
}

#[test]
fn works_apply_in_pull_and_push_mode_keep_their_state_and_report_what_fails() {
    let env = DevEnv::up(&["--clusters", "3", "--push-clusters", "1"]);
    let k = env.kubectl();
    // member3 is Push, and no agent process runs for it.
    let mode = k.ok(&[
        "--context",
        "hub",
        "get",
        "mcl",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.syncMode} {end}",
    ]);
    assert!(
        mode.contains("member1=Pull") && mode.contains("member3=Push"),
        "{mode}"
    );
    let table = k.ok(&["--context", "hub", "get", "mcl"]);
    assert!(
        table.contains("MODE")
            && table
                .lines()
                .any(|l| l.starts_with("member3") && l.contains("Push")),
        "{table}"
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(env.dir.join("dev.json")).unwrap()).unwrap();
    let names: Vec<&str> = state["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"member1-agent") && !names.contains(&"member3-agent"),
        "{names:?}"
    );

    // The same web app to member1 (pull) and member3 (push).
    for m in ["member1", "member3"] {
        k.ok_stdin(
            &["--context", "hub", "apply", "-f", "-"],
            &work("web", m, WEB, FEEDBACK),
        );
    }
    for m in ["member1", "member3"] {
        wait_for(90, &format!("web ready in {m}"), || {
            (ready_replicas(&k, m) == Some(2)).then_some(())
        });
        let w = wait_for(30, &format!("{m}'s work to report its feedback"), || {
            let w = work_json(&k, m, "web");
            let fed = w["status"]["resourceStatus"]["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|m| {
                    m["statusFeedback"]["values"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .any(|v| v["name"] == "ReadyReplicas" && v["fieldValue"]["integer"] == 2);
            (fed && condition(&w, "Available").0 == "True").then_some(w)
        });
        assert_eq!(condition(&w, "Applied").0, "True", "{w}");
        assert_eq!(
            w["status"]["conditions"][0]["observedGeneration"],
            w["metadata"]["generation"]
        );
        // It answers, through the Service's ClusterIP.
        let ip = k.ok(&[
            "--context",
            m,
            "-n",
            "demo",
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        wait_for(30, &format!("{m}'s web to answer"), || {
            (http_status(&format!("http://{ip}:8080/")) == "200").then_some(())
        });
    }
    // The same objects in both, whichever mode delivered them.
    let spec = |m: &str| {
        json(&k.ok(&[
            "--context",
            m,
            "-n",
            "demo",
            "get",
            "deploy",
            "web",
            "-o",
            "json",
        ]))["spec"]
            .clone()
    };
    assert_eq!(spec("member1"), spec("member3"));
    let table = k.ok(&[
        "--context",
        "hub",
        "-n",
        "atoll-cluster-member1",
        "get",
        "manifestworks",
    ]);
    assert!(
        table.contains("APPLIED") && table.contains("AVAILABLE"),
        "{table}"
    );
    let (ok, out) = atoll_as(&hub_admin(&env), &["get", "works"]);
    assert!(ok && out.contains("ReadyReplicas=2"), "{out}");

    // Drift: scaled and deleted by hand, put back (from the watches, not a timer).
    for m in ["member1", "member3"] {
        k.ok(&[
            "--context",
            m,
            "-n",
            "demo",
            "scale",
            "deploy/web",
            "--replicas=5",
        ]);
        k.ok(&["--context", m, "-n", "demo", "delete", "service", "web"]);
        wait_for(
            10,
            &format!("{m}'s web scaled back and its Service back"),
            || {
                let replicas = k.ok(&[
                    "--context",
                    m,
                    "-n",
                    "demo",
                    "get",
                    "deploy",
                    "web",
                    "-o",
                    "jsonpath={.spec.replicas}",
                ]);
                let svc = k.run(&["--context", m, "-n", "demo", "get", "service", "web"]);
                (replicas == "2" && svc.status.success()).then_some(())
            },
        );
    }

    // Bad input: a manifest without a kind and one of a kind not served fail, naming them;
    // the others apply.
    let bad = r#"
    - apiVersion: v1
      kind: ConfigMap
      metadata: {name: fine, namespace: demo}
      data: {a: b}
    - apiVersion: v1
      metadata: {name: nokind}
    - apiVersion: example.com/v1
      kind: Widget
      metadata: {name: w}
"#;
    k.ok_stdin(
        &["--context", "hub", "apply", "-f", "-"],
        &work("bad", "member1", bad, ""),
    );
    let w = wait_for(30, "the bad work's status", || {
        let w = work_json(&k, "member1", "bad");
        (condition(&w, "Applied").0 == "False").then_some(w)
    });
    let msg = condition(&w, "Applied").1;
    assert!(
        msg.contains("manifest #1") && msg.contains("no kind"),
        "{msg}"
    );
    assert!(
        msg.contains("Widget w") && msg.contains("does not serve"),
        "{msg}"
    );
    k.ok(&[
        "--context",
        "member1",
        "-n",
        "demo",
        "get",
        "configmap",
        "fine",
    ]);
    // An empty work is refused on the hub.
    let out = k.run_stdin(
        &["--context", "hub", "create", "-f", "-"],
        "apiVersion: work.atoll.io/v1alpha1\nkind: ManifestWork\nmetadata: {name: empty, namespace: atoll-cluster-member1}\nspec: {workload: {manifests: []}}\n",
    );
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("at least one manifest")
    );

    // Executors: bob may write works in member1's namespace but not run them as anyone.
    let bob = hub_user(&env, "bob");
    k.ok_stdin(
        &["--context", "hub", "apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob-works, namespace: atoll-cluster-member1}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: works, namespace: atoll-cluster-member1}\nrules: [{apiGroups: [work.atoll.io], resources: [manifestworks], verbs: [create, get, list]}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob-mw, namespace: atoll-cluster-member1}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: works}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}]\n",
    );
    let executor = "\n  executor:\n    subject: {type: ServiceAccount, serviceAccount: {namespace: demo, name: limited}}\n";
    let cm = "\n    - {apiVersion: v1, kind: ConfigMap, metadata: {name: as-limited, namespace: demo}, data: {a: b}}\n";
    let out = bob.run_stdin(
        &["create", "-f", "-"],
        &work("as-limited", "member1", cm, executor),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("execute-as"), "{err}");
    // The admin may; in the member the account may only view, and the work says so.
    k.ok_stdin(
        &["--context", "member1", "apply", "-f", "-"],
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: limited, namespace: demo}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: limited-view, namespace: demo}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects: [{kind: ServiceAccount, name: limited, namespace: demo}]\n",
    );
    k.ok_stdin(
        &["--context", "hub", "apply", "-f", "-"],
        &work("as-limited", "member1", cm, executor),
    );
    let w = wait_for(
        30,
        "the executor's work to be refused in the member",
        || {
            let w = work_json(&k, "member1", "as-limited");
            (condition(&w, "Applied").0 == "False").then_some(w)
        },
    );
    assert!(condition(&w, "Applied").1.contains("forbidden"), "{w}");
    assert!(
        !k.run(&[
            "--context",
            "member1",
            "-n",
            "demo",
            "get",
            "configmap",
            "as-limited"
        ])
        .status
        .success()
    );

    // Isolation: member1's agent reads neither member3's works nor the push credential.
    let agent = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: crate::registration::agent_kubeconfig(&env, "member1"),
    };
    for args in [
        vec!["-n", "atoll-cluster-member3", "get", "manifestworks"],
        vec![
            "-n",
            "atoll-cluster-member3",
            "get",
            "secret",
            "push-credential",
        ],
        vec!["-n", "atoll-cluster-member1", "get", "secrets"],
    ] {
        let out = agent.run(&args);
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
            "{args:?}"
        );
    }
    agent.ok(&["-n", "atoll-cluster-member1", "get", "manifestworks"]);

    // Size: a work as large as the API server takes is created, updated (its review carries it
    // twice) and applied; a larger one is refused saying why.
    let big = |name: &str, fill: char, configmaps: usize| {
        let mut manifests = String::new();
        for i in 0..configmaps {
            let data: String = std::iter::repeat_n(fill, 900 * 1024).collect();
            manifests.push_str(&format!(
                "\n    - {{apiVersion: v1, kind: ConfigMap, metadata: {{name: {name}-{i}, namespace: default}}, data: {{blob: {data}}}}}"
            ));
        }
        work(name, "member1", &manifests, "\n")
    };
    k.ok_stdin(
        &["--context", "hub", "create", "-f", "-"],
        &big("big", 'a', 2),
    );
    k.ok_stdin(
        &["--context", "hub", "replace", "-f", "-"],
        &big("big", 'b', 2),
    );
    wait_for(60, "the updated large work applied in member1", || {
        let out = k.run(&[
            "--context",
            "member1",
            "get",
            "configmap",
            "big-1",
            "-o",
            "jsonpath={.data.blob}",
        ]);
        (out.status.success() && out.stdout.starts_with(b"bbbb")).then_some(())
    });
    let out = k.run_stdin(
        &["--context", "hub", "create", "-f", "-"],
        &big("huge", 'c', 4),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("larger than the server's limit"),
        "{err}"
    );
    k.ok(&[
        "--context",
        "hub",
        "-n",
        "atoll-cluster-member1",
        "delete",
        "manifestwork",
        "big",
    ]);

    // A revoked push credential: every work of member3 says the member refuses it.
    k.ok(&[
        "--context",
        "member3",
        "-n",
        "atoll-agent",
        "delete",
        "serviceaccount",
        "atoll-push",
    ]);
    let w = wait_for(
        60,
        "member3's work to report the refused credential",
        || {
            let w = work_json(&k, "member3", "web");
            (condition(&w, "Applied").0 == "False").then_some(w)
        },
    );
    assert!(
        condition(&w, "Applied")
            .1
            .contains("refused the applier's credential"),
        "{w}"
    );

    // Deleting a work deletes what it applied (the hub waits for the member).
    k.ok(&[
        "--context",
        "hub",
        "-n",
        "atoll-cluster-member1",
        "delete",
        "manifestwork",
        "web",
        "--timeout=60s",
    ]);
    assert!(
        !k.run(&["--context", "member1", "-n", "demo", "get", "deploy", "web"])
            .status
            .success()
    );
}

const APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers:
      - {name: shop, image: shop:v1}
---
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: default}
spec:
  selector: {app: shop}
  ports: [{port: 80}]
"#;

fn deployed_image(k: &Kubectl, ctx: &str, name: &str) -> Option<String> {
    let out = k.run(&[
        "--context",
        ctx,
        "-n",
        "default",
        "get",
        "deploy",
        name,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn deploy_rolls_out_progressively_undeploys_and_fails_over() {
    let env = DevEnv::up(&[
        "--clusters",
        "3",
        "--runtime",
        "simulated",
        "--cluster-lease-seconds",
        "2",
    ]);
    let k = env.kubectl();
    let admin = hub_admin(&env);
    for args in [
        vec!["clusterset", "create", "prod"],
        vec!["clusterset", "set", "member1", "prod"],
        vec!["clusterset", "set", "member3", "prod"],
        vec!["clusterset", "create", "ha", "--selector", "ha=yes"],
        vec![
            "workspace",
            "create",
            "team-a",
            "--clusterset",
            "prod",
            "--clusterset",
            "ha",
            "--user",
            "alice",
        ],
    ] {
        let (ok, out) = atoll_as(&admin, &args);
        assert!(ok, "{args:?}: {out}");
    }
    k.ok(&[
        "--context",
        "hub",
        "label",
        "mcl",
        "member1",
        "member2",
        "ha=yes",
    ]);
    let alice = hub_user(&env, "alice");
    let app = env.dir.join("app.yaml");
    std::fs::write(&app, APP).unwrap();
    let app_s = app.to_str().unwrap().to_string();

    // alice deploys to prod: member1 and member3, not member2.
    let (ok, out) = atoll_as(
        &alice.kubeconfig,
        &[
            "deploy",
            "-f",
            &app_s,
            "--workspace",
            "team-a",
            "--clusterset",
            "prod",
        ],
    );
    assert!(ok, "{out}");
    for m in ["member1", "member3"] {
        wait_for(60, &format!("shop in {m}"), || {
            (deployed_image(&k, m, "shop").as_deref() == Some("shop:v1")).then_some(())
        });
    }
    assert_eq!(deployed_image(&k, "member2", "shop"), None);
    let (ok, out) = atoll_as(&alice.kubeconfig, &["get", "works", "-n", "team-a"]);
    assert!(
        ok && out.contains("member1") && out.contains("member3") && !out.contains("member2"),
        "{out}"
    );

    // A new image, one cluster at a time.
    std::fs::write(&app, APP.replace("shop:v1", "shop:v2")).unwrap();
    let (ok, out) = atoll_as(
        &alice.kubeconfig,
        &[
            "deploy",
            "-f",
            &app_s,
            "--workspace",
            "team-a",
            "--clusterset",
            "prod",
            "--rollout",
            "progressive",
            "--max-concurrency",
            "1",
            "--min-success-time",
            "2s",
        ],
    );
    assert!(ok, "{out}");
    let mut seen: Vec<(bool, bool)> = Vec::new();
    wait_for(60, "both clusters on v2", || {
        let now = (
            deployed_image(&k, "member1", "shop").as_deref() == Some("shop:v2"),
            deployed_image(&k, "member3", "shop").as_deref() == Some("shop:v2"),
        );
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        (now == (true, true)).then_some(())
    });
    assert!(
        seen.iter().any(|s| s.0 != s.1),
        "the clusters changed one at a time, not together: {seen:?}"
    );
    let rs = json(&alice.ok(&["-n", "team-a", "get", "mwrs", "shop", "-o", "json"]));
    assert_eq!(rs["status"]["summary"]["updated"], 2, "{rs}");

    // Undeploy: gone from both.
    let (ok, out) = atoll_as(
        &alice.kubeconfig,
        &["undeploy", "shop", "--workspace", "team-a"],
    );
    assert!(ok, "{out}");
    for m in ["member1", "member3"] {
        wait_for(60, &format!("shop gone from {m}"), || {
            deployed_image(&k, m, "shop").is_none().then_some(())
        });
    }

    // Failover: one cluster of ha (member1, member2), tolerating an unreachable one for 2 s.
    alice.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: cluster.atoll.io/v1alpha1\nkind: Placement\nmetadata: {name: ha, namespace: team-a}\nspec:\n  clusterSets: [ha]\n  numberOfClusters: 1\n  tolerations: [{key: cluster.atoll.io/unreachable, operator: Exists, tolerationSeconds: 2}]\n",
    );
    let (ok, out) = atoll_as(
        &alice.kubeconfig,
        &[
            "deploy",
            "-f",
            &app_s,
            "--workspace",
            "team-a",
            "--placement",
            "ha",
            "--name",
            "shop",
        ],
    );
    assert!(ok, "{out}");
    let chosen = wait_for(60, "shop on one ha cluster", || {
        ["member1", "member2"]
            .into_iter()
            .find(|m| deployed_image(&k, m, "shop").is_some())
    });
    let other = if chosen == "member1" {
        "member2"
    } else {
        "member1"
    };
    env.sigkill(&format!("{chosen}-agent"));
    // Lease grace (5 x 2 s) + tolerationSeconds (2 s) + a few seconds.
    wait_for(40, &format!("shop to fail over to {other}"), || {
        deployed_image(&k, other, "shop").is_some().then_some(())
    });
    assert!(
        deployed_image(&k, chosen, "shop").is_some(),
        "the lost cluster still runs its copy"
    );
    let (ok, out) = crate::cluster::atoll(&env.dir, &["dev", "up"]);
    assert!(ok, "{out}");
    wait_for(60, &format!("the stale copy removed from {chosen}"), || {
        deployed_image(&k, chosen, "shop").is_none().then_some(())
    });
    assert!(deployed_image(&k, other, "shop").is_some());
}
