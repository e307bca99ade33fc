//! Cluster sets, workspaces and placement end to end: `atoll dev up` environments (a hub and
//! members as separate processes, the hub with its webhooks), driven with kubectl and the
//! `atoll` CLI as an admin and as users minted for the test.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::cluster::{DevEnv, json, wait_for};
use crate::harness::Kubectl;

/// A kubeconfig for `user` on the hub of `env`.
pub(crate) fn hub_user(env: &DevEnv, user: &str) -> Kubectl<'static> {
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["kubeconfig", "--user", user, "--data-dir"])
        .arg(env.dir.join("hub"))
        .output()
        .expect("atoll kubeconfig runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = env.dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&path, &out.stdout).unwrap();
    Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: path,
    }
}

/// Run `atoll ARGS` with `kubeconfig`; (success, stdout + stderr).
pub(crate) fn atoll_as(kubeconfig: &PathBuf, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
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

pub(crate) fn hub_admin(env: &DevEnv) -> PathBuf {
    env.dir.join("hub").join("admin.kubeconfig")
}

/// The clusters a placement decided, from its PlacementDecisions (sorted).
/// `k` is the hub's admin (context `hub`) or a user's own kubeconfig (one context).
fn decided(k: &Kubectl, ns: &str, placement: &str) -> Vec<String> {
    // The environment's kubeconfig (a file named `kubeconfig`) has contexts; a user's has one.
    let hub = k.kubeconfig.ends_with("kubeconfig");
    let ctx: &[&str] = if hub { &["--context", "hub"] } else { &[] };
    let list = json(
        &k.ok(&[
            ctx,
            &[
                "-n",
                ns,
                "get",
                "placementdecisions",
                "-l",
                &format!("cluster.atoll.io/placement={placement}"),
                "-o",
                "json",
            ],
        ]
        .concat()),
    );
    let mut out: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|pd| {
            pd["status"]["decisions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|d| d["clusterName"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn wait_decided(k: &Kubectl, ns: &str, placement: &str, want: &[&str], secs: u64) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    wait_for(
        secs,
        &format!("placement {ns}/{placement} to decide {want:?}"),
        || {
            let got = decided(k, ns, placement);
            (got == want).then_some(())
        },
    );
}

fn condition(obj: &Value, t: &str) -> (String, String, String) {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == t)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

fn refused(out: &std::process::Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains(needle),
        "expected a refusal naming {needle:?}, got: {err} {}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

const PLACEMENT: &str = r#"
apiVersion: cluster.atoll.io/v1alpha1
kind: Placement
metadata: {name: web, namespace: team-a}
spec:
  numberOfClusters: 1
  predicates:
  - requiredClusterSelector:
      labelSelector:
        matchLabels: {tier: gold}
"#;

#[test]
fn sets_workspaces_and_who_may_do_what() {
    let env = DevEnv::up(&["--clusters", "3", "--runtime", "simulated"]);
    let k = env.kubectl();
    let admin = hub_admin(&env);

    // Every member lands in `default`; `global` holds them all; both exist without being asked.
    for m in ["member1", "member2", "member3"] {
        let labels = k.ok(&[
            "--context",
            "hub",
            "get",
            "mcl",
            m,
            "-o",
            "jsonpath={.metadata.labels.cluster\\.atoll\\.io/clusterset}",
        ]);
        assert_eq!(labels, "default", "{m}");
    }
    k.eventually(
        &["--context", "hub", "get", "mclset", "global", "-o", "json"],
        |t| serde_json::from_str::<Value>(t).is_ok_and(|s| s["status"]["memberCount"] == 3),
    );
    let table = k.ok(&["--context", "hub", "get", "mclset"]);
    assert!(
        table.contains("TYPE") && table.contains("MEMBERS"),
        "{table}"
    );
    // Deleting `default` brings it back; editing its selector is reverted.
    k.ok(&["--context", "hub", "delete", "mclset", "default"]);
    k.eventually(
        &["--context", "hub", "get", "mclset", "default", "-o", "name"],
        |t| t.contains("default"),
    );
    k.ok(&[
        "--context",
        "hub",
        "patch",
        "mclset",
        "global",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"clusterSelector":{"labelSelector":{"matchLabels":{"only":"me"}}}}}"#,
    ]);
    k.eventually(
        &["--context", "hub", "get", "mclset", "global", "-o", "json"],
        |t| {
            serde_json::from_str::<Value>(t).is_ok_and(|s| {
                s["spec"]["clusterSelector"]["labelSelector"] == serde_json::json!({})
            })
        },
    );

    // The admin makes `prod` of member1 and member3.
    let (ok, out) = atoll_as(&admin, &["clusterset", "create", "prod"]);
    assert!(ok, "{out}");
    for m in ["member1", "member3"] {
        let (ok, out) = atoll_as(&admin, &["clusterset", "set", m, "prod"]);
        assert!(ok && out.contains("moved"), "{out}");
    }
    let (ok, out) = atoll_as(&admin, &["clusterset", "list"]);
    assert!(ok, "{out}");
    let prod = out
        .lines()
        .find(|l| l.starts_with("prod"))
        .unwrap_or_default();
    assert!(
        prod.contains("member1,member3") && prod.contains(" 2 "),
        "{out}"
    );

    // bob may edit clusters but not join sets: refused by kubectl and by atoll, both naming
    // the permission.
    let bob = hub_user(&env, "bob");
    k.ok_stdin(
        &["--context", "hub", "apply", "-f", "-"],
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: cluster-editor}
rules:
- {apiGroups: [cluster.atoll.io], resources: [managedclusters], verbs: [get, list, patch, update]}
- {apiGroups: [""], resources: [secrets], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: bob-cluster-editor}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-editor}
subjects: [{kind: User, apiGroup: rbac.authorization.k8s.io, name: bob}]
"#,
    );
    let out = bob.run(&[
        "label",
        "mcl",
        "member2",
        "cluster.atoll.io/clusterset=prod",
        "--overwrite",
    ]);
    let err = refused(&out, "managedclustersets/join");
    assert!(err.contains("prod"), "{err}");
    let (ok, out) = atoll_as(&bob.kubeconfig, &["clusterset", "set", "member2", "prod"]);
    assert!(!ok && out.contains("managedclustersets/join"), "{out}");
    // Labels other than the set's are still his to change.
    bob.ok(&["label", "mcl", "member2", "owner=bob"]);

    // A workspace for alice over prod.
    let (ok, out) = atoll_as(
        &admin,
        &[
            "workspace",
            "create",
            "team-a",
            "--clusterset",
            "prod",
            "--user",
            "alice",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = atoll_as(
        &admin,
        &["workspace", "create", "team-b", "--clusterset", "default"],
    );
    assert!(ok, "{out}");
    let (ok, out) = atoll_as(&admin, &["workspace", "list"]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("team-a") && l.contains("prod") && l.contains("alice")),
        "{out}"
    );
    let alice = hub_user(&env, "alice");
    k.ok(&[
        "--context",
        "hub",
        "label",
        "mcl",
        "member1",
        "member3",
        "tier=gold",
    ]);
    alice.ok_stdin(&["apply", "-f", "-"], PLACEMENT);
    let d = wait_for(20, "alice's placement to decide one cluster", || {
        let d = decided(&alice, "team-a", "web");
        (d.len() == 1).then_some(d)
    });
    assert!(d == ["member1"] || d == ["member3"], "{d:?}");
    let p = json(&alice.ok(&["-n", "team-a", "get", "placement", "web", "-o", "json"]));
    assert_eq!(
        condition(&p, "PlacementSatisfied").1,
        "AllDecisionsScheduled"
    );
    assert_eq!(p["status"]["numberOfSelectedClusters"], 1);
    let table = alice.ok(&["-n", "team-a", "get", "placementdecisions"]);
    assert!(
        table.contains("web-decision-1") && table.contains(" web "),
        "{table}"
    );

    // What alice may not do.
    let out = alice.run_stdin(
        &["create", "-f", "-"],
        "apiVersion: cluster.atoll.io/v1alpha1\nkind: ManagedClusterSetBinding\nmetadata: {name: default, namespace: team-a}\nspec: {clusterSet: default}\n",
    );
    refused(&out, "Forbidden");
    let (ok, out) = atoll_as(
        &alice.kubeconfig,
        &["clusterset", "bind", "default", "-n", "team-a"],
    );
    assert!(!ok && out.contains("forbidden"), "{out}");
    refused(
        &alice.run(&["-n", "team-b", "get", "placements"]),
        "Forbidden",
    );
    refused(
        &alice.run(&["-n", "atoll-cluster-member1", "get", "leases"]),
        "Forbidden",
    );
    refused(&alice.run(&["get", "mcl"]), "Forbidden");
    refused(
        &alice.run(&[
            "-n",
            "team-a",
            "patch",
            "placementdecision",
            "web-decision-1",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        ]),
        "Forbidden",
    );
    // Her clusters, as the inventory standard lists them: member1 and member3, not member2.
    let profiles = alice.eventually(
        &["-n", "team-a", "get", "clusterprofiles", "-o", "json"],
        |t| {
            serde_json::from_str::<Value>(t)
                .is_ok_and(|l| l["items"].as_array().is_some_and(|i| i.len() == 2))
        },
    );
    let profiles = json(&profiles);
    let mut names: Vec<&str> = profiles["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["member1", "member3"]);
    for p in profiles["items"].as_array().unwrap() {
        assert_eq!(p["spec"]["clusterManager"]["name"], "atoll");
        assert_eq!(p["metadata"]["labels"]["x-k8s.io/cluster-manager"], "atoll");
        assert_eq!(condition(p, "ControlPlaneHealthy").0, "True", "{p}");
        assert!(
            p["status"]["version"]["kubernetes"]
                .as_str()
                .is_some_and(|v| v.starts_with("v1."))
        );
        let props = p["status"]["properties"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            props
                .iter()
                .any(|x| x["name"] == "cluster.clusterset.k8s.io"
                    && x["value"] == p["metadata"]["name"]),
            "{p}"
        );
    }
    let table = alice.ok(&["-n", "team-a", "get", "clusterprofiles"]);
    assert!(
        table.contains("HEALTHY") && table.contains("KUBERNETES"),
        "{table}"
    );

    // explain: answered for alice, with every cluster of her sets; refused for bob.
    let (ok, out) = atoll_as(
        &alice.kubeconfig,
        &["placement", "explain", "web", "-n", "team-a"],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("member1") && out.contains("member3") && !out.contains("member2"),
        "{out}"
    );
    assert!(
        out.contains("picked #1") && out.contains("BALANCE"),
        "{out}"
    );
    let dry = env.dir.join("dry.yaml");
    std::fs::write(
        &dry,
        "apiVersion: cluster.atoll.io/v1alpha1\nkind: Placement\nmetadata: {name: what-if}\nspec:\n  predicates:\n  - requiredClusterSelector:\n      labelSelector: {matchLabels: {nothing: here}}\n",
    )
    .unwrap();
    let (ok, out) = atoll_as(
        &alice.kubeconfig,
        &[
            "placement",
            "explain",
            "-f",
            dry.to_str().unwrap(),
            "-n",
            "team-a",
            "-o",
            "json",
        ],
    );
    assert!(ok, "{out}");
    let a = json(&out);
    assert_eq!(a["dryRun"], true);
    assert_eq!(a["satisfied"]["reason"], "NoManagedClusterMatched");
    assert_eq!(a["filtered"].as_array().map(Vec::len), Some(2), "{a}");
    let (ok, out) = atoll_as(
        &bob.kubeconfig,
        &["placement", "explain", "web", "-n", "team-a"],
    );
    assert!(!ok && out.contains("may not get placements"), "{out}");

    // A binding named unlike its set: 400, saying so.
    let out = k.run_stdin(
        &["--context", "hub", "create", "-f", "-"],
        "apiVersion: cluster.atoll.io/v1alpha1\nkind: ManagedClusterSetBinding\nmetadata: {name: mine, namespace: team-a}\nspec: {clusterSet: prod}\n",
    );
    let err = refused(&out, "must equal spec.clusterSet");
    assert!(err.contains("BadRequest"), "{err}");

    // A binding to a set not there yet says so, and is bound once the set exists.
    let (ok, out) = atoll_as(&admin, &["clusterset", "bind", "later", "-n", "team-b"]);
    assert!(ok, "{out}");
    let bound = |want: &str| {
        k.eventually(
            &[
                "--context",
                "hub",
                "-n",
                "team-b",
                "get",
                "mclsetbinding",
                "later",
                "-o",
                "json",
            ],
            |t| serde_json::from_str::<Value>(t).is_ok_and(|b| condition(&b, "Bound").1 == want),
        )
    };
    bound("ClusterSetNotFound");
    let (ok, out) = atoll_as(
        &admin,
        &["clusterset", "create", "later", "--selector", "tier=gold"],
    );
    assert!(ok, "{out}");
    bound("ClusterSetBound");

    // Bootstrap tokens: one minted for prod joins there; bob may not mint one; a plain
    // token's identity may create its cluster only in `default`.
    let (ok, out) = atoll_as(
        &bob.kubeconfig,
        &[
            "hub",
            "token",
            "--kubeconfig",
            bob.kubeconfig.to_str().unwrap(),
            "--clusterset",
            "prod",
        ],
    );
    assert!(!ok && out.contains("managedclustersets/join"), "{out}");
    let forged = bob.run_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata: {name: bootstrap-token-bobbob, namespace: kube-system}\ntype: bootstrap.kubernetes.io/token\nstringData: {token-id: bobbob, token-secret: 0123456789abcdef, usage-bootstrap-authentication: \"true\", auth-extra-groups: \"system:bootstrappers:atoll,system:bootstrappers:atoll:clusterset:prod\"}\n",
    );
    refused(&forged, "managedclustersets/join");
    let boot = |set: Option<&str>, name: &str| -> Kubectl<'static> {
        let admin_s = admin.to_str().unwrap().to_string();
        let mut args = vec!["hub", "token", "--kubeconfig", admin_s.as_str()];
        if let Some(s) = set {
            args.extend(["--clusterset", s]);
        }
        let (ok, out) = atoll_as(&admin, &args);
        assert!(ok, "{out}");
        let path = env.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, out).unwrap();
        Kubectl {
            bin: std::path::Path::new("kubectl"),
            kubeconfig: path,
        }
    };
    let mcl = |name: &str, set: Option<&str>| match set {
        Some(s) => format!(
            "apiVersion: cluster.atoll.io/v1alpha1\nkind: ManagedCluster\nmetadata: {{name: {name}, labels: {{cluster.atoll.io/clusterset: {s}}}}}\nspec: {{hubAcceptsClient: false}}\n"
        ),
        None => format!(
            "apiVersion: cluster.atoll.io/v1alpha1\nkind: ManagedCluster\nmetadata: {{name: {name}}}\nspec: {{hubAcceptsClient: false}}\n"
        ),
    };
    let plain = boot(None, "plain-boot");
    refused(
        &plain.run_stdin(&["create", "-f", "-"], &mcl("sneaky", Some("prod"))),
        "only in cluster set default",
    );
    plain.ok_stdin(&["create", "-f", "-"], &mcl("joiner1", None));
    let for_prod = boot(Some("prod"), "prod-boot");
    for_prod.ok_stdin(&["create", "-f", "-"], &mcl("joiner2", None));
    for (name, set) in [("joiner1", "default"), ("joiner2", "prod")] {
        let got = k.ok(&[
            "--context",
            "hub",
            "get",
            "mcl",
            name,
            "-o",
            "jsonpath={.metadata.labels.cluster\\.atoll\\.io/clusterset}",
        ]);
        assert_eq!(got, set, "{name}");
    }
}

#[test]
fn decisions_follow_clusters_sets_bindings_and_the_placement() {
    // Two-second cluster leases: a stopped agent is unreachable after 10 s.
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
        vec!["workspace", "create", "team-a", "--clusterset", "prod"],
    ] {
        let (ok, out) = atoll_as(&admin, &args);
        assert!(ok, "{args:?}: {out}");
    }
    k.ok(&["--context", "hub", "label", "mcl", "member1", "tier=gold"]);
    k.ok_stdin(
        &["--context", "hub", "apply", "-f", "-"],
        &format!(
            "{PLACEMENT}  tolerations:\n  - {{key: cluster.atoll.io/unreachable, operator: Exists, tolerationSeconds: 4}}\n"
        ),
    );
    wait_decided(&k, "team-a", "web", &["member1"], 20);

    // A label makes member3 the only one the predicate takes.
    k.ok(&["--context", "hub", "label", "mcl", "member3", "tier=gold"]);
    k.ok(&["--context", "hub", "label", "mcl", "member1", "tier-"]);
    wait_decided(&k, "team-a", "web", &["member3"], 20);
    // A NoSelect taint on member3 moves it back to member1 (gold again).
    k.ok(&["--context", "hub", "label", "mcl", "member1", "tier=gold"]);
    k.ok(&[
        "--context",
        "hub",
        "patch",
        "mcl",
        "member3",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"taints":[{"key":"maintenance","effect":"NoSelect"}]}}"#,
    ]);
    wait_decided(&k, "team-a", "web", &["member1"], 20);
    // The hub stamped when the taint came.
    let t = k.ok(&[
        "--context",
        "hub",
        "get",
        "mcl",
        "member3",
        "-o",
        "jsonpath={.spec.taints[0].timeAdded}",
    ]);
    assert!(t.ends_with('Z'), "timeAdded {t:?}");
    k.ok(&[
        "--context",
        "hub",
        "patch",
        "mcl",
        "member3",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"taints":[]}}"#,
    ]);
    // Steady: untainting member3 does not move the decision back.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(decided(&k, "team-a", "web"), ["member1"]);

    // member1's agent stops: unreachable after 5 missed 2 s leases, tolerated 4 s more, then
    // the decision moves to member3.
    env.sigkill("member1-agent");
    wait_for(30, "member1 to be tainted unreachable", || {
        let taints = k.ok(&[
            "--context",
            "hub",
            "get",
            "mcl",
            "member1",
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ]);
        taints
            .contains("cluster.atoll.io/unreachable")
            .then_some(())
    });
    assert_eq!(
        decided(&k, "team-a", "web"),
        ["member1"],
        "still tolerated for a few seconds"
    );
    wait_decided(&k, "team-a", "web", &["member3"], 20);
    // Back again, member1 is untainted; the decision stays (Steady).
    let (ok, out) = crate::cluster::atoll(&env.dir, &["dev", "up"]);
    assert!(ok, "{out}");
    wait_for(30, "member1 untainted", || {
        let taints = k.ok(&[
            "--context",
            "hub",
            "get",
            "mcl",
            "member1",
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ]);
        (!taints.contains("unreachable")).then_some(())
    });
    assert_eq!(decided(&k, "team-a", "web"), ["member3"]);

    // member3 leaves prod: member1 is what is left.
    let (ok, out) = atoll_as(&admin, &["clusterset", "set", "member3", "default"]);
    assert!(ok, "{out}");
    wait_decided(&k, "team-a", "web", &["member1"], 20);
    let profiles = k.eventually(
        &[
            "--context",
            "hub",
            "-n",
            "team-a",
            "get",
            "clusterprofiles",
            "-o",
            "name",
        ],
        |t| !t.contains("member3") && t.contains("member1"),
    );
    assert!(!profiles.contains("member3"));

    // The binding goes: nothing decided, and a reason; it comes back: decided again.
    k.ok(&[
        "--context",
        "hub",
        "-n",
        "team-a",
        "delete",
        "mclsetbinding",
        "prod",
    ]);
    wait_decided(&k, "team-a", "web", &[], 20);
    let p = json(&k.ok(&[
        "--context",
        "hub",
        "-n",
        "team-a",
        "get",
        "placement",
        "web",
        "-o",
        "json",
    ]));
    assert_eq!(
        condition(&p, "PlacementSatisfied").1,
        "NoManagedClusterSetBindings"
    );
    assert_eq!(
        k.ok(&[
            "--context",
            "hub",
            "-n",
            "team-a",
            "get",
            "placementdecisions",
            "-o",
            "name"
        ])
        .trim(),
        "placementdecision.cluster.atoll.io/web-decision-1",
        "one (empty) PlacementDecision remains"
    );
    let (ok, out) = atoll_as(&admin, &["clusterset", "bind", "prod", "-n", "team-a"]);
    assert!(ok, "{out}");
    wait_decided(&k, "team-a", "web", &["member1"], 20);

    // A deleted PlacementDecision is put back.
    k.ok(&[
        "--context",
        "hub",
        "-n",
        "team-a",
        "delete",
        "placementdecision",
        "web-decision-1",
    ]);
    wait_decided(&k, "team-a", "web", &["member1"], 20);

    // The placement itself changes: all gold clusters of every set bound (add default's).
    let (ok, out) = atoll_as(&admin, &["clusterset", "bind", "default", "-n", "team-a"]);
    assert!(ok, "{out}");
    k.ok(&[
        "--context",
        "hub",
        "-n",
        "team-a",
        "patch",
        "placement",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/numberOfClusters"}]"#,
    ]);
    wait_decided(&k, "team-a", "web", &["member1", "member3"], 20);

    // Misconfigured placements say what is wrong; the good one is untouched; a fix heals.
    k.ok_stdin(
        &["--context", "hub", "apply", "-f", "-"],
        r#"
apiVersion: cluster.atoll.io/v1alpha1
kind: Placement
metadata: {name: bad-toleration, namespace: team-a}
spec:
  tolerations: [{operator: Equal, value: x}]
---
apiVersion: cluster.atoll.io/v1alpha1
kind: Placement
metadata: {name: bad-prioritizer, namespace: team-a}
spec:
  prioritizerPolicy:
    mode: Exact
    configurations: [{scoreCoordinate: {builtIn: Fastest}}]
"#,
    );
    for (name, text) in [
        (
            "bad-toleration",
            "if the key is empty, operator must be Exists",
        ),
        (
            "bad-prioritizer",
            "incorrect builtin prioritizer: \"Fastest\"",
        ),
    ] {
        let p = k.eventually(
            &[
                "--context",
                "hub",
                "-n",
                "team-a",
                "get",
                "placement",
                name,
                "-o",
                "json",
            ],
            |t| {
                serde_json::from_str::<Value>(t)
                    .is_ok_and(|p| condition(&p, "PlacementMisconfigured").0 == "True")
            },
        );
        let (_, reason, message) = condition(&json(&p), "PlacementMisconfigured");
        assert_eq!(reason, "Misconfigured");
        assert!(message.contains(text), "{name}: {message}");
    }
    assert_eq!(decided(&k, "team-a", "web"), ["member1", "member3"]);
    k.ok(&[
        "--context",
        "hub",
        "-n",
        "team-a",
        "patch",
        "placement",
        "bad-prioritizer",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"prioritizerPolicy":{"configurations":[{"scoreCoordinate":{"builtIn":"Steady"}}]}}}"#,
    ]);
    k.eventually(
        &[
            "--context",
            "hub",
            "-n",
            "team-a",
            "get",
            "placement",
            "bad-prioritizer",
            "-o",
            "json",
        ],
        |t| {
            serde_json::from_str::<Value>(t).is_ok_and(|p| {
                condition(&p, "PlacementMisconfigured").0 == "False"
                    && p["status"]["numberOfSelectedClusters"] == 3
            })
        },
    );
}
