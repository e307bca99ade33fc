//! Registration end to end: `atoll dev up` runs a hub (API server + `atoll hub`) and members
//! (API server + node + `atoll agent`) as separate processes; the agents join with bootstrap
//! tokens and `dev up` accepts them, as `atoll accept` does.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::Value;

use crate::cluster::{DevEnv, atoll, json, wait_for};
use crate::harness::Kubectl;

fn kubectl_with(kubeconfig: PathBuf) -> Kubectl<'static> {
    Kubectl {
        bin: Path::new("kubectl"),
        kubeconfig,
    }
}

/// The hub kubeconfig member `m`'s agent holds, from its Secret, written beside the env.
pub(crate) fn agent_kubeconfig(env: &DevEnv, m: &str) -> PathBuf {
    let k = env.kubectl();
    let data = k.ok(&[
        "--context",
        m,
        "-n",
        "atoll-agent",
        "get",
        "secret",
        "hub-kubeconfig",
        "-o",
        "jsonpath={.data.kubeconfig}",
    ]);
    let text = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .expect("base64");
    let path = env.dir.join(format!("{m}-agent.kubeconfig"));
    std::fs::write(&path, text).unwrap();
    path
}

fn condition(mc: &Value, t: &str) -> String {
    mc["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == t)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn get_mcl(k: &Kubectl, name: &str) -> Value {
    json(&k.ok(&["--context", "hub", "get", "mcl", name, "-o", "json"]))
}

/// A kubectl run that must be refused with 403 Forbidden.
fn forbidden(k: &Kubectl, args: &[&str]) {
    let out = k.run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Forbidden"),
        "{args:?} should be Forbidden: {err} {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn dev_up_joins_and_accepts_every_member_with_its_own_identity() {
    let env = DevEnv::up(&["--clusters", "2", "--runtime", "simulated"]);
    let k = env.kubectl();
    let table = k.ok(&["--context", "hub", "get", "mcl"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("ACCEPTED") && table.contains("JOINED") && table.contains("AVAILABLE"),
        "{table}"
    );
    for m in ["member1", "member2"] {
        let mc = get_mcl(&k, m);
        assert_eq!(mc["spec"]["hubAcceptsClient"], true);
        for t in [
            "HubAcceptedManagedCluster",
            "ManagedClusterJoined",
            "ManagedClusterConditionAvailable",
        ] {
            assert_eq!(condition(&mc, t), "True", "{m} {t}: {mc}");
        }
        // Status from the member: its nodes, its version, its id claim.
        assert!(mc["status"]["allocatable"]["cpu"].is_string(), "{mc}");
        assert!(
            mc["status"]["version"]["kubernetes"]
                .as_str()
                .is_some_and(|v| v.starts_with("v1.")),
            "{mc}"
        );
        let claims = mc["status"]["clusterClaims"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            claims
                .iter()
                .any(|c| c["name"] == "cluster.clusterset.k8s.io" && c["value"] == m),
            "{mc}"
        );
        // The agent's identity: its own user, its cluster's group and the clusters' group.
        let me = kubectl_with(agent_kubeconfig(&env, m));
        let who = json(&me.ok(&["auth", "whoami", "-o", "json"]));
        assert_eq!(
            who["status"]["userInfo"]["username"],
            format!("system:atoll:cluster:{m}:agent")
        );
        let groups: Vec<String> = who["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect();
        assert!(
            groups.contains(&format!("system:atoll:cluster:{m}")),
            "{groups:?}"
        );
        assert!(
            groups.contains(&"system:atoll:clusters".to_string()),
            "{groups:?}"
        );
    }
    // By hand, as a user joins a cluster of their own: a separate member server, a bootstrap
    // token, `atoll join` (the agent, its own process), `atoll accept`.
    let member = crate::harness::Server::start();
    let out = hub_admin(&env, &["hub", "token"]);
    let boot = member.dir.join("boot.kubeconfig");
    std::fs::write(&boot, &out.stdout).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args([
            "join",
            "--cluster-name",
            "by-hand",
            "--lease-duration",
            "2s",
            "--hub-kubeconfig",
        ])
        .arg(&boot)
        .arg("--kubeconfig")
        .arg(member.kubeconfig())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    k.eventually(
        &[
            "--context",
            "hub",
            "get",
            "csr",
            "-l",
            "cluster.atoll.io/cluster-name=by-hand",
        ],
        |t| t.contains("Pending"),
    );
    let mc = get_mcl(&k, "by-hand");
    assert_eq!(
        mc["spec"]["hubAcceptsClient"], false,
        "not accepted before `atoll accept`"
    );
    assert_ne!(condition(&mc, "ManagedClusterJoined"), "True");
    hub_admin(&env, &["accept", "by-hand"]);
    wait_for(30, "by-hand to join", || {
        let mc = get_mcl(&k, "by-hand");
        (condition(&mc, "ManagedClusterJoined") == "True"
            && condition(&mc, "ManagedClusterConditionAvailable") == "True")
            .then_some(())
    });
    let _ = agent.kill();
    let _ = agent.wait();
    // Deleting the ManagedCluster removes what the hub made for it (finalizer).
    k.ok(&[
        "--context",
        "hub",
        "delete",
        "mcl",
        "by-hand",
        "--timeout=30s",
    ]);
    let left = k.run(&[
        "--context",
        "hub",
        "get",
        "namespace",
        "atoll-cluster-by-hand",
    ]);
    let left_text = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.status.success() || left_text.contains("Terminating"),
        "{left_text}"
    );
    for kind in ["clusterrole", "clusterrolebinding"] {
        let out = k.run(&["--context", "hub", "get", kind, "atoll:cluster:by-hand"]);
        assert!(
            !out.status.success(),
            "{kind} atoll:cluster:by-hand is left"
        );
    }

    let out = hub_admin(&env, &["get", "clusters"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("member2") && l.contains("True")),
        "{text}"
    );
    // Asked of a cluster that is no hub, it says so.
    let out = atoll_with(
        &env.dir.join("member1").join("admin.kubeconfig"),
        &["get", "clusters"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is it a hub?"),
        "{err}"
    );
}

#[test]
fn members_are_isolated_and_bootstrap_identities_can_do_almost_nothing() {
    let env = DevEnv::up(&["--clusters", "2", "--runtime", "simulated"]);
    let k = env.kubectl();
    let a = kubectl_with(agent_kubeconfig(&env, "member1"));
    // Its own objects: yes.
    a.ok(&["get", "mcl", "member1"]);
    a.ok(&[
        "-n",
        "atoll-cluster-member1",
        "get",
        "lease",
        "cluster-lease",
    ]);
    // Member2's: no.
    forbidden(&a, &["get", "mcl", "member2"]);
    forbidden(
        &a,
        &[
            "-n",
            "atoll-cluster-member2",
            "get",
            "lease",
            "cluster-lease",
        ],
    );
    forbidden(&a, &["-n", "atoll-cluster-member2", "get", "events"]);
    forbidden(&a, &["get", "mcl"]);
    forbidden(
        &a,
        &[
            "patch",
            "mcl",
            "member1",
            "--type=merge",
            "-p",
            r#"{"spec":{"hubAcceptsClient":true}}"#,
        ],
    );
    let csrs = k.ok(&["--context", "hub", "get", "csr", "-o", "name"]);
    let member2_csr = csrs
        .lines()
        .find(|l| l.contains("member2-"))
        .unwrap()
        .trim()
        .to_string();
    forbidden(&a, &["certificate", "approve", &member2_csr]);

    // A bootstrap identity: creating a ManagedCluster and CSRs, nothing else.
    let out = hub_admin(&env, &["hub", "token", "--ttl", "10m"]);
    let boot_path = env.dir.join("boot.kubeconfig");
    std::fs::write(&boot_path, &out.stdout).unwrap();
    let b = kubectl_with(boot_path.clone());
    forbidden(&b, &["get", "mcl", "member1"]);
    forbidden(&b, &["get", "mcl"]);
    forbidden(&b, &["get", "csr"]);
    forbidden(&b, &["get", "namespaces"]);
    forbidden(&b, &["-n", "kube-system", "get", "secrets"]);
    forbidden(
        &b,
        &[
            "-n",
            "atoll-cluster-member1",
            "get",
            "lease",
            "cluster-lease",
        ],
    );
    forbidden(&b, &["delete", "mcl", "member1"]);

    // CSRs claiming another cluster's name are never approved, not even by `atoll accept`.
    let wrong_subject = csr_manifest(
        "claims-member2",
        "member2",
        "system:atoll:cluster:member1:agent",
        &["system:atoll:cluster:member2", "system:atoll:clusters"],
    );
    b.ok_stdin(&["create", "-f", "-"], &wrong_subject);
    // The right subject for member2, but asked for by member1's agent.
    let wrong_requester = csr_manifest(
        "member1-asks-for-member2",
        "member2",
        "system:atoll:cluster:member2:agent",
        &["system:atoll:cluster:member2", "system:atoll:clusters"],
    );
    a.ok_stdin(&["create", "-f", "-"], &wrong_requester);
    let hubk = ["--context", "hub"];
    k.eventually(
        &[
            &hubk[..],
            &[
                "get",
                "events",
                "--all-namespaces",
                "--field-selector",
                "reason=InvalidClusterCSR",
                "-o",
                "json",
            ],
        ]
        .concat(),
        |t| t.contains("claims-member2") && t.contains("member1-asks-for-member2"),
    );
    let out = hub_admin(&env, &["accept", "member2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("leaving CSR claims-member2 alone"),
        "{stderr}"
    );
    for name in ["claims-member2", "member1-asks-for-member2"] {
        let csr = json(&k.ok(&[&hubk[..], &["get", "csr", name, "-o", "json"]].concat()));
        assert!(
            csr["status"]["certificate"].is_null(),
            "{name} was signed: {csr}"
        );
        assert!(
            csr["status"]["conditions"].is_null(),
            "{name} was decided: {csr}"
        );
    }
    // A user without `update` on managedclusters/accept may not accept.
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["kubeconfig", "--user", "mallory", "--data-dir"])
        .arg(env.dir.join("hub"))
        .output()
        .unwrap();
    let mallory = env.dir.join("mallory.kubeconfig");
    std::fs::write(&mallory, &out.stdout).unwrap();
    let out = atoll_with(&mallory, &["accept", "member2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("managedclusters/accept"));
    // Nor may they with kubectl, even with `update` on ManagedClusters: the hub's webhook
    // asks for `managedclusters/accept`.
    k.ok_stdin(
        &["--context", "hub", "apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: mcl-editor}\nrules:\n- {apiGroups: [cluster.atoll.io], resources: [managedclusters], verbs: [get, update, patch]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: mallory-mcl-editor}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: mcl-editor}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: User, name: mallory}\n",
    );
    hub_admin(&env, &["deny", "member2"]);
    let m = kubectl_with(mallory);
    m.eventually(
        &[
            "get",
            "mcl",
            "member2",
            "-o",
            "jsonpath={.spec.hubAcceptsClient}",
        ],
        |t| t == "false",
    );
    let out = m.run(&[
        "patch",
        "mcl",
        "member2",
        "--type=merge",
        "-p",
        r#"{"spec":{"hubAcceptsClient":true}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("managedclusters/accept"),
        "{err}"
    );
    // Labels are still theirs to change.
    m.ok(&["label", "mcl", "member2", "team=a"]);
    // The admin may accept again, and the cluster comes back.
    hub_admin(&env, &["accept", "member2"]);
    wait_for(60, "member2 Available again", || {
        let mc = get_mcl(&k, "member2");
        (condition(&mc, "HubAcceptedManagedCluster") == "True"
            && condition(&mc, "ManagedClusterConditionAvailable") == "True")
            .then_some(())
    });

    // Names a hub namespace cannot be made of are refused, by the agent and by the API.
    let member1 = env.dir.join("member1").join("admin.kubeconfig");
    let join = |name: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
            .args(["join", "--cluster-name", name, "--hub-kubeconfig"])
            .arg(&boot_path)
            .arg("--kubeconfig")
            .arg(&member1)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for bad in ["Bad_Name", "dotted.name", &"x".repeat(50)] {
        let (ok, err) = join(bad);
        assert!(
            !ok && err.contains("is not a valid cluster name"),
            "{bad}: {err}"
        );
    }
    let out = b.run_stdin(
        &["create", "-f", "-"],
        "apiVersion: cluster.atoll.io/v1alpha1\nkind: ManagedCluster\nmetadata: {name: dotted.name}\nspec: {}\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is invalid") && err.contains("metadata.name"),
        "{err}"
    );
    // Nor are taints or client configs the schema does not allow.
    let out = k.run_stdin(
        &["--context", "hub", "create", "-f", "-"],
        "apiVersion: cluster.atoll.io/v1alpha1\nkind: ManagedCluster\nmetadata: {name: odd}\nspec:\n  taints: [{key: '', effect: Bogus}]\n  managedClusterClientConfigs: [{url: 'ftp://x', caBundle: '!!!'}]\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "spec.taints[0].key",
        "spec.taints[0].effect",
        "spec.managedClusterClientConfigs[0].url",
        "spec.managedClusterClientConfigs[0].caBundle",
    ] {
        assert!(
            !out.status.success() && err.contains(field),
            "{field}: {err}"
        );
    }
    // A member that joined as member1 does not join again under another name with member1's
    // identity: the agent says whose identity its Secret holds, and stops.
    let (ok, err) = join("another-name");
    assert!(
        !ok && err.contains("holds the hub identity of cluster member1"),
        "{err}"
    );
}

/// A CSR object (YAML) for `cn` in `orgs`, labelled as cluster `cluster`'s.
fn csr_manifest(name: &str, cluster: &str, cn: &str, orgs: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    dn.push(rcgen::DnType::OrganizationName, orgs[0]);
    if let Some(o) = orgs.get(1) {
        dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 10]), *o);
    }
    params.distinguished_name = dn;
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let request = base64::engine::general_purpose::STANDARD.encode(pem);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\n  labels: {{cluster.atoll.io/cluster-name: {cluster}}}\nspec:\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [client auth, digital signature]\n  request: {request}\n"
    )
}

#[test]
fn the_agent_rotates_its_certificate_and_keeps_working() {
    let env = DevEnv::up(&[
        "--clusters",
        "1",
        "--runtime",
        "simulated",
        "--cluster-lease-seconds",
        "1",
        "--cluster-signing-duration",
        "8",
    ]);
    let k = env.kubectl();
    let hubk = ["--context", "hub"];
    // 8 s certificates are renewed at 80% of their life with the agent's own identity,
    // approved by the hub; the cluster stays Available throughout.
    wait_for(40, "two renewals by the agent", || {
        let csrs = json(&k.ok(&[&hubk[..], &["get", "csr", "-o", "json"]].concat()));
        let renewed = csrs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["spec"]["username"] == "system:atoll:cluster:member1:agent"
                    && c["status"]["certificate"].is_string()
            })
            .count();
        assert_eq!(
            condition(&get_mcl(&k, "member1"), "ManagedClusterConditionAvailable"),
            "True"
        );
        (renewed >= 2).then_some(())
    });
    // The identity in the Secret is the newest one, and it works.
    let a = kubectl_with(agent_kubeconfig(&env, "member1"));
    a.ok(&[
        "-n",
        "atoll-cluster-member1",
        "get",
        "lease",
        "cluster-lease",
    ]);
}

#[test]
fn a_killed_agent_goes_unknown_comes_back_and_can_be_denied() {
    let env = DevEnv::up(&[
        "--clusters",
        "1",
        "--runtime",
        "simulated",
        "--cluster-lease-seconds",
        "1",
    ]);
    let k = env.kubectl();
    let csr_count = || hub_csrs(&k).len();
    assert_eq!(csr_count(), 1, "one CSR: the bootstrap one");

    // SIGKILL the agent: after 5 missed 1 s leases the cluster is Unknown and tainted.
    env.sigkill("member1-agent");
    let mc = wait_for(30, "member1 to be Unknown", || {
        let mc = get_mcl(&k, "member1");
        (condition(&mc, "ManagedClusterConditionAvailable") == "Unknown").then_some(mc)
    });
    assert!(
        mc["spec"]["taints"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["key"] == "cluster.atoll.io/unreachable")),
        "{mc}"
    );
    // `dev up` restarts it: Available again and untainted, with no new bootstrap CSR.
    let (ok, out) = atoll(&env.dir, &["dev", "up"]);
    assert!(ok, "{out}");
    wait_for(30, "member1 to be Available and untainted again", || {
        let mc = get_mcl(&k, "member1");
        (condition(&mc, "ManagedClusterConditionAvailable") == "True"
            && mc["spec"]["taints"].as_array().is_none_or(|t| t.is_empty()))
        .then_some(())
    });
    assert_eq!(
        csr_count(),
        1,
        "the restarted agent resumed from its Secret: no new CSR"
    );

    // Deny: the agent's next request is refused and the conditions say denied.
    hub_admin(&env, &["deny", "member1"]);
    let mc = wait_for(20, "member1 to be denied", || {
        let mc = get_mcl(&k, "member1");
        (condition(&mc, "HubDeniedManagedCluster") == "True").then_some(mc)
    });
    assert_eq!(condition(&mc, "HubAcceptedManagedCluster"), "False");
    let a = kubectl_with(agent_kubeconfig(&env, "member1"));
    wait_for(20, "the agent's identity to be refused", || {
        let out = a.run(&[
            "-n",
            "atoll-cluster-member1",
            "get",
            "lease",
            "cluster-lease",
        ]);
        String::from_utf8_lossy(&out.stderr)
            .contains("Forbidden")
            .then_some(())
    });
    // The agent says why it cannot go on (and keeps trying, should the cluster be accepted again).
    wait_for(20, "the agent to report the refusal", || {
        let log = std::fs::read_to_string(env.dir.join("logs").join("member1-agent.log")).unwrap();
        log.contains("refuses this cluster").then_some(())
    });
    // A denied cluster is not registered again behind the admin's back (the agent asks the
    // hub whether its ManagedCluster was removed before it says it is refused).
    let log = std::fs::read_to_string(env.dir.join("logs").join("member1-agent.log")).unwrap();
    assert!(!log.contains("was removed from the hub"), "{log}");
    assert_eq!(csr_count(), 1, "no new request after a denial");
    let after = get_mcl(&k, "member1");
    assert_eq!(after["metadata"]["uid"], mc["metadata"]["uid"]);
    assert_eq!(condition(&after, "HubDeniedManagedCluster"), "True");
}

#[test]
fn a_cluster_removed_from_the_hub_registers_again_and_waits_for_acceptance() {
    let env = DevEnv::up(&[
        "--clusters",
        "1",
        "--runtime",
        "simulated",
        "--cluster-lease-seconds",
        "1",
    ]);
    let k = env.kubectl();
    let first = get_mcl(&k, "member1");
    let agent_pid = env.pid_of("member1-agent");
    // The admin deletes the ManagedCluster; the hub's finalizer removes its grants with it.
    k.ok(&[
        "--context",
        "hub",
        "delete",
        "mcl",
        "member1",
        "--timeout=30s",
    ]);
    // The running agent finds its identity refused, asks, and registers the cluster again: a
    // new ManagedCluster, not accepted, and one new CSR, pending.
    let again = wait_for(30, "member1 to be registered again", || {
        let out = k.run(&["--context", "hub", "get", "mcl", "member1", "-o", "json"]);
        out.status
            .success()
            .then(|| json(&String::from_utf8_lossy(&out.stdout)))
            .filter(|mc| mc["metadata"]["uid"] != first["metadata"]["uid"])
    });
    assert_eq!(again["spec"]["hubAcceptsClient"], false, "{again}");
    assert_ne!(condition(&again, "ManagedClusterJoined"), "True");
    let pending = wait_for(30, "a new CSR from member1", || {
        let csrs = hub_csrs(&k);
        (csrs.len() == 2).then_some(csrs)
    });
    let log = std::fs::read_to_string(env.dir.join("logs").join("member1-agent.log")).unwrap();
    assert!(log.contains("was removed from the hub"), "{log}");
    // Accepted again: the same agent process joins with its new identity and is Available.
    hub_admin(&env, &["accept", "member1"]);
    wait_for(30, "member1 to be Joined and Available again", || {
        let mc = get_mcl(&k, "member1");
        (condition(&mc, "ManagedClusterJoined") == "True"
            && condition(&mc, "ManagedClusterConditionAvailable") == "True")
            .then_some(())
    });
    assert!(
        std::path::Path::new(&format!("/proc/{agent_pid}")).exists(),
        "the same agent process: {pending:?}"
    );
    let a = kubectl_with(agent_kubeconfig(&env, "member1"));
    a.ok(&[
        "-n",
        "atoll-cluster-member1",
        "get",
        "lease",
        "cluster-lease",
    ]);
    assert_eq!(hub_csrs(&k).len(), 2, "one request per registration");
}

#[test]
fn agents_ride_out_a_hub_outage() {
    let env = DevEnv::up(&[
        "--clusters",
        "1",
        "--runtime",
        "simulated",
        "--cluster-lease-seconds",
        "1",
    ]);
    let k = env.kubectl();
    let csrs_before = hub_csrs(&k).len();
    // The hub's API server goes away (SIGKILL) for a few seconds; the agent keeps trying.
    env.sigkill("hub");
    std::thread::sleep(std::time::Duration::from_secs(4));
    let log = std::fs::read_to_string(env.dir.join("logs").join("member1-agent.log")).unwrap();
    assert!(log.contains("cannot reach the hub"), "{log}");
    // Back: the same agent process, with the same identity, renews again.
    let agent_pid = env.pid_of("member1-agent");
    let (ok, out) = atoll(&env.dir, &["dev", "up"]);
    assert!(ok, "{out}");
    assert_eq!(
        env.pid_of("member1-agent"),
        agent_pid,
        "the agent was not restarted"
    );
    let renewed_after = k8s_now();
    wait_for(30, "a lease renewal after the outage", || {
        (renew_time(&k, "member1") > renewed_after).then_some(())
    });
    wait_for(30, "member1 Available", || {
        (condition(&get_mcl(&k, "member1"), "ManagedClusterConditionAvailable") == "True")
            .then_some(())
    });
    let csrs_after = hub_csrs(&k).len();
    assert_eq!(csrs_after, csrs_before, "no new CSR after the outage");
}

#[test]
fn an_agent_whose_identity_expires_during_an_outage_joins_again() {
    let env = DevEnv::up(&[
        "--clusters",
        "1",
        "--runtime",
        "simulated",
        "--cluster-lease-seconds",
        "1",
        "--cluster-signing-duration",
        "8",
    ]);
    let k = env.kubectl();
    // Names of the bootstrap identities' CSRs (the hub's CSR cleaner removes those whose
    // certificate has expired, so they are told apart by name, not counted).
    let bootstrap_csrs = || -> std::collections::BTreeSet<String> {
        hub_csrs(&k)
            .iter()
            .filter(|c| {
                c["spec"]["username"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("system:bootstrap:"))
            })
            .filter_map(|c| c["metadata"]["name"].as_str().map(String::from))
            .collect()
    };
    let before = bootstrap_csrs();
    assert_eq!(before.len(), 1);
    let new_requests = || bootstrap_csrs().difference(&before).count();
    // The hub is away for longer than the agent's 8 s certificate lives: it cannot renew it.
    env.sigkill("hub");
    std::thread::sleep(std::time::Duration::from_secs(10));
    let agent_pid = env.pid_of("member1-agent");
    // Back: the agent (the same process) sees its identity expired and joins again with its
    // bootstrap kubeconfig; the new request waits for the admin.
    let (ok, out) = atoll(&env.dir, &["dev", "up"]);
    assert!(ok, "{out}");
    wait_for(40, "the agent to join again", || {
        let log = std::fs::read_to_string(env.dir.join("logs").join("member1-agent.log")).unwrap();
        (log.contains("the hub identity has expired") && new_requests() == 1).then_some(())
    });
    assert_eq!(
        env.pid_of("member1-agent"),
        agent_pid,
        "the agent was not restarted"
    );
    let accepted_at = k8s_now();
    hub_admin(&env, &["accept", "member1"]);
    wait_for(30, "a lease renewal with the new identity", || {
        (renew_time(&k, "member1") > accepted_at).then_some(())
    });
    wait_for(30, "member1 Available", || {
        (condition(&get_mcl(&k, "member1"), "ManagedClusterConditionAvailable") == "True")
            .then_some(())
    });
    assert_eq!(new_requests(), 1, "one new bootstrap request, no more");
    // The identity in the Secret is the new one, and it works.
    let a = kubectl_with(agent_kubeconfig(&env, "member1"));
    a.ok(&[
        "-n",
        "atoll-cluster-member1",
        "get",
        "lease",
        "cluster-lease",
    ]);
}

/// The CSRs on the hub.
fn hub_csrs(k: &Kubectl) -> Vec<Value> {
    let csrs = json(&k.ok(&["--context", "hub", "get", "csr", "-o", "json"]));
    csrs["items"].as_array().cloned().unwrap_or_default()
}

/// `atoll ARGS --kubeconfig KUBECONFIG`.
fn atoll_with(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .unwrap()
}

/// `atoll ARGS --kubeconfig <hub admin>`, which must succeed.
fn hub_admin(env: &DevEnv, args: &[&str]) -> std::process::Output {
    let out = atoll_with(&env.dir.join("hub").join("admin.kubeconfig"), args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The renewTime of a cluster's lease on the hub ("" if never renewed).
fn renew_time(k: &Kubectl, cluster: &str) -> String {
    let lease = json(&k.ok(&[
        "--context",
        "hub",
        "-n",
        &format!("atoll-cluster-{cluster}"),
        "get",
        "lease",
        "cluster-lease",
        "-o",
        "json",
    ]));
    lease["spec"]["renewTime"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Now as RFC 3339 with microseconds, comparable as text with a Lease's renewTime.
fn k8s_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
