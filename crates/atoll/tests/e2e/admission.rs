//! The built-in admission plugins through kubectl: ResourceQuota (with its controller's
//! `status.used`), LimitRange defaults and bounds, and Pod Security levels from namespace
//! labels.

use crate::harness::{Kubectl, Server};

fn pod(name: &str, cpu: Option<&str>) -> String {
    let resources = cpu.map_or(String::new(), |c| {
        format!("\n    resources: {{requests: {{cpu: \"{c}\", memory: 32Mi}}}}")
    });
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: app\n    image: busybox{resources}\n"
    )
}

fn stderr_of(k: &Kubectl, args: &[&str], stdin: &str) -> (bool, String) {
    let out = k.run_stdin(args, stdin);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn quotas_limit_ranges_and_pod_security_hold_at_admission() {
    let server = Server::start();
    let k = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: server.kubeconfig(),
    };
    k.ok(&["create", "namespace", "team"]);
    k.ok(&[
        "-n",
        "team",
        "create",
        "quota",
        "grant",
        "--hard=pods=4,requests.cpu=1,requests.memory=1Gi",
    ]);
    // The controller counts the quota as soon as it exists.
    k.eventually(
        &[
            "-n",
            "team",
            "get",
            "quota",
            "grant",
            "-o",
            "jsonpath={.status.used.pods}",
        ],
        |s| s == "0",
    );
    let apply = ["-n", "team", "apply", "-f", "-"];
    k.ok_stdin(&apply, &pod("first", Some("600m")));
    let table = k.ok(&["-n", "team", "get", "quota"]);
    assert!(
        table.contains("REQUEST")
            && table.contains("pods: 1/4")
            && table.contains("requests.cpu: 600m/1"),
        "{table}"
    );

    // Over the grant: refused, with what was asked, used and allowed.
    let (ok, err) = stderr_of(&k, &apply, &pod("second", Some("600m")));
    assert!(!ok);
    assert!(
        err.contains("Forbidden")
            && err.contains(
                "exceeded quota: grant, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"
            ),
        "{err}"
    );
    // A container that declares nothing the quota limits is refused until a LimitRange
    // gives it defaults.
    let (ok, err) = stderr_of(&k, &apply, &pod("bare", None));
    assert!(!ok);
    assert!(err.contains("must specify requests.cpu for: app"), "{err}");
    k.ok_stdin(
        &apply,
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: defaults}\nspec:\n  limits:\n  - type: Container\n    defaultRequest: {cpu: 100m, memory: 64Mi}\n    max: {cpu: 500m}\n",
    );
    k.ok_stdin(&apply, &pod("bare", None));
    let bare = k.ok(&[
        "-n",
        "team",
        "get",
        "pod",
        "bare",
        "-o",
        "jsonpath={.spec.containers[0].resources.requests.cpu} {.spec.containers[0].resources.limits.cpu} {.metadata.annotations.kubernetes\\.io/limit-ranger}",
    ]);
    assert!(
        bare.starts_with("100m 500m LimitRanger plugin set: cpu limit for container app"),
        "{bare}"
    );
    let (ok, err) = stderr_of(
        &k,
        &apply,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: big}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    resources: {requests: {cpu: 100m}, limits: {cpu: \"1\"}}\n",
    );
    assert!(!ok);
    assert!(
        err.contains("maximum cpu usage per Container is 500m, but limit is 1"),
        "{err}"
    );
    let (ok, err) = stderr_of(
        &k,
        &apply,
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: upside-down}\nspec:\n  limits:\n  - type: Container\n    min: {cpu: \"2\"}\n    max: {cpu: \"1\"}\n",
    );
    assert!(!ok && err.contains("is invalid"), "{err}");

    // Creates side by side never take more than the quota holds: 2 pods are left of 4.
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let kubeconfig = server.kubeconfig();
            std::thread::spawn(move || {
                let k = Kubectl {
                    bin: std::path::Path::new("kubectl"),
                    kubeconfig,
                };
                k.run_stdin(
                    &["-n", "team", "apply", "-f", "-"],
                    &pod(&format!("racer-{i}"), Some("10m")),
                )
                .status
                .success()
            })
        })
        .collect();
    let admitted = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(admitted, 2, "4 pods allowed, 2 there already");
    // Deleting gives it back.
    k.ok(&["-n", "team", "delete", "pod", "first", "--wait=false"]);
    k.eventually(
        &[
            "-n",
            "team",
            "get",
            "quota",
            "grant",
            "-o",
            "jsonpath={.status.used.pods} {.status.used.requests\\.cpu}",
        ],
        |s| s == "3 120m",
    );

    // Pod Security: the enforced level refuses, the warned level warns.
    k.ok(&["create", "namespace", "locked"]);
    k.ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=baseline",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    let in_locked = ["-n", "locked", "apply", "-f", "-"];
    let (ok, err) = stderr_of(
        &k,
        &in_locked,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: root}\nspec:\n  hostNetwork: true\n  containers:\n  - name: app\n    image: busybox\n    securityContext: {privileged: true}\n",
    );
    assert!(!ok);
    assert!(
        err.contains(
            "violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true), privileged (container \"app\" must not set securityContext.privileged=true)"
        ),
        "{err}"
    );
    let (ok, err) = stderr_of(&k, &in_locked, &pod("plain", None));
    assert!(ok, "{err}");
    assert!(
        err.contains("Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"),
        "{err}"
    );
    // A workload whose pods would be refused is warned about when it is created.
    let (ok, err) = stderr_of(
        &k,
        &in_locked,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec:\n      containers:\n      - name: app\n        image: busybox\n        securityContext: {privileged: true}\n",
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("would violate PodSecurity \"baseline:latest\": privileged"),
        "{err}"
    );
    let out = k.run(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=strict",
        "--overwrite",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("Unsupported value: \"strict\": supported values: \"privileged\", \"baseline\", \"restricted\""),
        "{err}"
    );
}
