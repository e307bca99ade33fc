//! kubectl against a real `atoll server`: with the default kubectl and the oldest versioned one.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{Kubectl, Server, kubectls};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd], categories: [all]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        type: object
        description: A widget made for tests.
        properties:
          spec:
            type: object
            description: The desired widget.
            required: [size]
            properties:
              size: {type: integer, minimum: 1, description: How big the widget is.}
              color: {type: string, default: blue}
          status:
            type: object
            properties:
              conditions:
                type: array
                items:
                  type: object
                  properties: {type: {type: string}, status: {type: string}}
"#;

const WIDGETS: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, labels: {tier: front}}
spec: {size: 3}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w2, labels: {tier: back}}
spec: {size: 5}
"#;

#[test]
fn kubectl_workflows() {
    for bin in kubectls() {
        let server = Server::start();
        let k = Kubectl {
            bin: &bin,
            kubeconfig: server.kubeconfig(),
        };
        exercise(&k);
    }
}

fn exercise(k: &Kubectl) {
    assert_eq!(k.ok(&["get", "--raw", "/readyz"]), "ok");
    let resources = k.ok(&["api-resources"]);
    for kind in [
        "ConfigMap",
        "Deployment",
        "CustomResourceDefinition",
        "Lease",
        "EndpointSlice",
    ] {
        assert!(
            resources.contains(kind),
            "api-resources lists {kind}:\n{resources}"
        );
    }

    // CRDs and CRs with apply; the kind appears in discovery at once.
    k.ok_stdin(&["apply", "-f", "-"], CRD);
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=20s",
    ]);
    k.ok_stdin(&["apply", "-f", "-"], WIDGETS);
    let table = k.ok(&["get", "widgets"]);
    assert!(
        table.contains("SIZE") && table.contains("READY") && table.contains("AGE"),
        "printer columns:\n{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("w1") && l.contains('3')),
        "{table}"
    );
    let yaml = k.ok(&["get", "wd", "w1", "-o", "yaml"]);
    assert!(yaml.contains("color: blue"), "defaulted field:\n{yaml}");
    let labelled = k.ok(&["get", "widgets", "-l", "tier=back", "-o", "name"]);
    assert_eq!(labelled.trim(), "widget.example.com/w2");
    let by_field = k.ok(&[
        "get",
        "widgets",
        "--field-selector",
        "metadata.name=w1",
        "-o",
        "name",
    ]);
    assert_eq!(by_field.trim(), "widget.example.com/w1");
    let all_ns = k.ok(&["get", "namespaces", "-A"]);
    assert!(all_ns.contains("kube-system"));
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n",
    );
    k.ok_stdin(
        &["apply", "-n", "other", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1}\ndata: {a: \"1\"}\n",
    );
    let across = k.ok(&["get", "configmaps", "-A"]);
    assert!(
        across.contains("other") && across.contains("c1"),
        "{across}"
    );
    let all = k.ok(&["get", "all"]);
    assert!(
        all.contains("widget.example.com/w1"),
        "category `all` includes widgets:\n{all}"
    );
    let explained = k.ok(&["explain", "widget.spec"]);
    assert!(
        explained.contains("How big the widget is"),
        "explain:\n{explained}"
    );
    let described = k.ok(&["describe", "widget", "w1"]);
    assert!(
        described.contains("Size:") && described.contains("3"),
        "describe:\n{described}"
    );

    // Schema validation errors reach the user.
    let out = run(
        k,
        &["apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 0}\n",
    );
    assert!(!out.0, "an invalid widget is refused");
    assert!(
        out.2.contains("spec.size"),
        "the message names the field: {}",
        out.2
    );

    // Patches of every type, label, annotate, edit.
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":4}}"#,
    ]);
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/size","value":6}]"#,
    ]);
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: \"1\"}\n",
    );
    k.ok(&["patch", "configmap", "cfg", "-p", r#"{"data":{"b":"2"}}"#]);
    let cfg = k.ok(&[
        "get",
        "configmap",
        "cfg",
        "-o",
        "jsonpath={.data.a},{.data.b}",
    ]);
    assert_eq!(cfg, "1,2");
    k.ok(&["label", "widget", "w1", "team=core"]);
    k.ok(&["annotate", "widget", "w1", "note=hello"]);
    let meta = k.ok(&["get", "widget", "w1", "-o", "jsonpath={.spec.size} {.metadata.labels.team} {.metadata.annotations.note} {.metadata.generation}"]);
    assert_eq!(meta, "6 core hello 3");
    let mut edit = k.cmd(&["edit", "widget", "w2"]);
    edit.env("KUBE_EDITOR", "sed -i -e s/size:\\ 5/size:\\ 7/");
    let out = edit.output().unwrap();
    assert!(
        out.status.success(),
        "kubectl edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        k.ok(&["get", "widget", "w2", "-o", "jsonpath={.spec.size}"]),
        "7"
    );

    // Server-side apply, and its conflict with another manager.
    k.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {owned: mine}\n",
    );
    let out = run(
        k,
        &["apply", "--server-side", "--field-manager=other", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {owned: theirs}\n",
    );
    assert!(
        !out.0 && out.2.contains("conflict"),
        "a conflicting apply is refused: {}",
        out.2
    );
    k.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {owned: theirs}\n",
    );
    assert_eq!(
        k.ok(&["get", "configmap", "ssa", "-o", "jsonpath={.data.owned}"]),
        "theirs"
    );

    // wait --for=condition on a status set through the status subresource.
    let waiter = k
        .cmd(&[
            "wait",
            "--for=condition=Ready",
            "widget/w1",
            "--timeout=20s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    let out = waiter.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = k.ok(&["get", "widget", "w1"]);
    assert!(
        table.contains("True"),
        "the Ready column shows the condition:\n{table}"
    );

    // get -w sees a change made while it watches.
    let mut watch = k
        .cmd(&["get", "widgets", "-w", "--request-timeout=4s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w3}\nspec: {size: 9}\n",
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let watched = String::from_utf8_lossy(&watch.wait_with_output().unwrap().stdout).into_owned();
    assert!(
        watched.lines().any(|l| l.starts_with("w3")),
        "get -w printed the new widget:\n{watched}"
    );

    // Finalizers hold a delete until they are removed.
    k.ok(&[
        "patch",
        "widget",
        "w3",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    k.ok(&["delete", "widget", "w3", "--wait=false"]);
    let ts = k.ok(&[
        "get",
        "widget",
        "w3",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!ts.is_empty(), "marked for deletion");
    k.ok(&[
        "patch",
        "widget",
        "w3",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    k.eventually(&["get", "widgets", "-o", "name"], |s| !s.contains("w3"));

    // Cascades: background removes dependents, orphan keeps them.
    for policy in ["background", "foreground", "orphan"] {
        k.ok_stdin(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: owner-{policy}}}\n"),
        );
        let uid = k.ok(&[
            "get",
            "configmap",
            &format!("owner-{policy}"),
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        let dependent = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dep-{policy}\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: owner-{policy}, uid: {uid}, blockOwnerDeletion: true}}\n"
        );
        k.ok_stdin(&["apply", "-f", "-"], &dependent);
        k.ok(&[
            "delete",
            "configmap",
            &format!("owner-{policy}"),
            &format!("--cascade={policy}"),
            "--timeout=20s",
        ]);
        let remaining = k.eventually(&["get", "configmaps", "-o", "name"], |s| {
            !s.contains(&format!("owner-{policy}"))
        });
        if policy == "orphan" {
            assert!(
                remaining.contains(&format!("dep-{policy}")),
                "orphaned dependent stays:\n{remaining}"
            );
            let refs = k.ok(&[
                "get",
                "configmap",
                &format!("dep-{policy}"),
                "-o",
                "jsonpath={.metadata.ownerReferences}",
            ]);
            assert!(refs.is_empty(), "its owner reference is gone: {refs}");
        } else {
            k.eventually(&["get", "configmaps", "-o", "name"], |s| {
                !s.contains(&format!("dep-{policy}"))
            });
        }
    }

    // `kubectl create <kind>` and `scale` send protobuf bodies.
    k.ok(&["create", "namespace", "typed"]);
    k.ok(&[
        "-n",
        "typed",
        "create",
        "configmap",
        "c",
        "--from-literal=a=1",
    ]);
    k.ok(&[
        "-n",
        "typed",
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=p=hunter2",
    ]);
    k.ok(&[
        "-n",
        "typed",
        "create",
        "deployment",
        "web",
        "--image=registry.local/web:1",
        "--replicas=2",
    ]);
    k.ok(&[
        "-n",
        "typed",
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
    ]);
    k.ok(&["-n", "typed", "create", "serviceaccount", "bot"]);
    k.ok(&["-n", "typed", "scale", "deployment", "web", "--replicas=0"]);
    let typed = k.ok(&[
        "-n",
        "typed",
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.spec.strategy.type} {.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(typed, "0 RollingUpdate registry.local/web:1");
    let svc = k.ok(&[
        "-n",
        "typed",
        "get",
        "service",
        "web",
        "-o",
        "jsonpath={.spec.ports[0].port}/{.spec.ports[0].targetPort} {.spec.clusterIP}",
    ]);
    assert!(
        svc.starts_with("80/8080 10.96."),
        "service from protobuf: {svc}"
    );
    let secret = k.ok(&[
        "-n",
        "typed",
        "get",
        "secret",
        "s",
        "-o",
        "jsonpath={.type} {.data.p}",
    ]);
    assert_eq!(secret, "Opaque aHVudGVyMg==");
    k.ok(&["delete", "namespace", "typed", "--timeout=30s"]);

    // Namespace deletion empties the namespace.
    k.ok(&["delete", "namespace", "other", "--timeout=30s"]);
    k.eventually(&["get", "namespaces", "-o", "name"], |s| {
        !s.contains("namespace/other")
    });

    // Deleting the CRD deletes its objects and its resource.
    k.ok(&["delete", "crd", "widgets.example.com", "--timeout=30s"]);
    let out = k.run(&["get", "widgets"]);
    assert!(!out.status.success(), "widgets are no longer served");
}

/// Run kubectl with `input` on stdin; (success, stdout, stderr).
fn run(k: &Kubectl, args: &[&str], input: &str) -> (bool, String, String) {
    let out = k.run_stdin(args, input);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
