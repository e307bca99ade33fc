//! RBAC with real identities: users minted with `atoll kubeconfig`, checked with kubectl.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Kubectl, Server};

/// A kubeconfig for `user` in `groups`, written next to the server's data.
fn user_kubeconfig(server: &Server, user: &str, groups: &[&str]) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atoll"));
    cmd.args(["kubeconfig", "--data-dir"])
        .arg(&server.dir)
        .args(["--user", user]);
    for g in groups {
        cmd.args(["--group", g]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "atoll kubeconfig: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = server.dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewers, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: viewer}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-writer, namespace: team}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get, list, create, delete]}
- {apiGroups: [rbac.authorization.k8s.io], resources: [rolebindings], verbs: [create, get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: writers, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-writer}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: writers}]
"#;

#[test]
fn identities_get_what_rbac_gives_them() {
    let server = Server::start();
    let admin = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: server.kubeconfig(),
    };
    admin.ok_stdin(&["apply", "-f", "-"], SETUP);
    let viewer = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: user_kubeconfig(&server, "viewer", &[]),
    };
    let writer = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: user_kubeconfig(&server, "wanda", &["writers"]),
    };
    let nobody = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: user_kubeconfig(&server, "nobody", &[]),
    };

    // (who, args, allowed)
    let cases: Vec<(&Kubectl, Vec<&str>, bool)> = vec![
        (&admin, vec!["get", "nodes"], true),
        (
            &admin,
            vec![
                "-n",
                "team",
                "delete",
                "configmap",
                "cfg",
                "--dry-run=server",
            ],
            true,
        ),
        (&viewer, vec!["-n", "team", "get", "configmaps"], true),
        (&viewer, vec!["-n", "team", "get", "configmap", "cfg"], true),
        (&viewer, vec!["-n", "default", "get", "configmaps"], false),
        (&viewer, vec!["-n", "team", "get", "secrets"], false),
        (
            &viewer,
            vec![
                "-n",
                "team",
                "delete",
                "configmap",
                "cfg",
                "--dry-run=server",
            ],
            false,
        ),
        (&viewer, vec!["get", "namespaces"], false),
        (
            &writer,
            vec!["-n", "team", "create", "configmap", "made-by-wanda"],
            true,
        ),
        (
            &writer,
            vec!["-n", "team", "get", "configmap", "made-by-wanda"],
            true,
        ),
        (
            &writer,
            vec!["-n", "team", "label", "configmap", "cfg", "x=y"],
            false,
        ),
        (
            &writer,
            vec!["-n", "default", "create", "configmap", "nope"],
            false,
        ),
        (&nobody, vec!["-n", "team", "get", "configmaps"], false),
        (&nobody, vec!["get", "crds"], false),
    ];
    for (who, args, allowed) in cases {
        let out = who.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.success(),
            allowed,
            "{args:?} as {}: {stderr}",
            who.kubeconfig.display()
        );
        if !allowed {
            assert!(
                stderr.contains("forbidden") && stderr.contains("cannot"),
                "a 403 naming the verb and resource: {stderr}"
            );
        }
    }

    // Discovery works for every authenticated user.
    nobody.ok(&["api-resources"]);
    // `auth can-i` and `auth whoami` answer from the server.
    assert_eq!(
        viewer
            .ok(&["auth", "can-i", "list", "configmaps", "-n", "team"])
            .trim(),
        "yes"
    );
    let no = viewer.run(&["auth", "can-i", "delete", "configmaps", "-n", "team"]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    assert!(writer.ok(&["auth", "whoami"]).contains("wanda"));
    assert!(
        writer
            .ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"])
            .contains("writers")
    );
    let rules = writer.ok(&["auth", "can-i", "--list", "-n", "team"]);
    assert!(rules.contains("configmaps"), "{rules}");

    // Escalation: wanda may create RoleBindings but holds no cluster-admin, so cannot bind it.
    let escalate = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: grab, namespace: team}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: wanda}]\n";
    let out = writer.run_stdin(&["create", "-f", "-"], escalate);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not currently held"),
        "binding cluster-admin is refused: {stderr}"
    );
    // Binding a role whose permissions she holds is fine.
    writer.ok_stdin(&["create", "-f", "-"], "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: share, namespace: team}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-writer}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: viewer}]\n");
    viewer.eventually(
        &["-n", "team", "auth", "can-i", "create", "configmaps"],
        |s| s.trim() == "yes",
    );
}

#[test]
fn aggregated_cluster_roles_pick_up_labelled_roles() {
    let server = Server::start();
    let admin = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: server.kubeconfig(),
    };
    let view = admin.ok(&[
        "get",
        "clusterrole",
        "view",
        "-o",
        "jsonpath={.rules[*].resources}",
    ]);
    assert!(
        view.contains("configmaps"),
        "view is aggregated from system:aggregate-to-view: {view}"
    );
    let edit = admin.ok(&[
        "get",
        "clusterrole",
        "edit",
        "-o",
        "jsonpath={.rules[*].resources}",
    ]);
    assert!(
        edit.contains("secrets") && edit.contains("configmaps"),
        "edit includes view's rules: {edit}"
    );
    // A CRD author extends `view` by labelling a ClusterRole.
    admin.ok_stdin(&["apply", "-f", "-"], "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: widgets-view\n  labels: {rbac.authorization.k8s.io/aggregate-to-view: \"true\"}\nrules:\n- {apiGroups: [example.com], resources: [widgets], verbs: [get, list, watch]}\n");
    admin.eventually(
        &[
            "get",
            "clusterrole",
            "view",
            "-o",
            "jsonpath={.rules[*].resources}",
        ],
        |s| s.contains("widgets"),
    );
    admin.eventually(
        &[
            "get",
            "clusterrole",
            "admin",
            "-o",
            "jsonpath={.rules[*].resources}",
        ],
        |s| s.contains("widgets"),
    );
}

/// A kubeconfig for the server (its URL and CA from the admin kubeconfig) with the given
/// `user:` entry lines (a token, or certificate and key data).
fn kubeconfig_with(server: &Server, user: &str) -> PathBuf {
    let admin = std::fs::read_to_string(server.kubeconfig()).unwrap();
    let field = |name: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap()
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n{user}contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        field("server:"),
        field("certificate-authority-data:")
    );
    // Numbered files: tokens (JWTs) are too long for file names.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = server.dir.join(format!("user-{n}.kubeconfig"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A kubeconfig that authenticates with `token` only (no client certificate).
fn token_kubeconfig(server: &Server, token: &str) -> PathBuf {
    kubeconfig_with(server, &format!("    token: {token}\n"))
}

/// A kubeconfig with a client certificate and key (both PEM).
fn cert_key_kubeconfig(server: &Server, cert_pem: &str, key_pem: &str) -> PathBuf {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    kubeconfig_with(
        server,
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert_pem),
            b64(key_pem)
        ),
    )
}

#[test]
fn bearer_tokens_static_and_bootstrap() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("tokens.csv"),
        "s3cr3t-admin-token,ops-admin,1,\"system:masters\"\nreader-token,reader,2\n",
    )
    .unwrap();
    let tokens = tmp.path().join("tokens.csv");
    let audit = tmp.path().join("audit.log");
    let server = Server::start_with(
        tmp.path(),
        &[
            "--token-auth-file",
            tokens.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    let kubectl = |kubeconfig: PathBuf| Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig,
    };

    let ops = kubectl(token_kubeconfig(&server, "s3cr3t-admin-token"));
    assert!(ops.ok(&["auth", "whoami"]).contains("ops-admin"));
    ops.ok(&["get", "namespaces"]);
    let reader = kubectl(token_kubeconfig(&server, "reader-token"));
    let out = reader.run(&["get", "namespaces"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "no RBAC, no access"
    );
    let bad = kubectl(token_kubeconfig(&server, "s3cr3t-admin-tokeX"));
    let out = bad.run(&["get", "namespaces"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "a tampered token is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Bootstrap tokens: valid until their expiration.
    let secret = |id: &str, expiration: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: bootstrap-token-{id}, namespace: kube-system}}\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: {id}\n  token-secret: 0123456789abcdef\n  expiration: \"{expiration}\"\n  usage-bootstrap-authentication: \"true\"\n  auth-extra-groups: system:bootstrappers:atoll\n"
        )
    };
    ops.ok_stdin(
        &["apply", "-f", "-"],
        &secret("abcdef", "2099-01-01T00:00:00Z"),
    );
    ops.ok_stdin(
        &["apply", "-f", "-"],
        &secret("expird", "2020-01-01T00:00:00Z"),
    );
    let boot = kubectl(token_kubeconfig(&server, "abcdef.0123456789abcdef"));
    let who = boot.ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]);
    assert!(
        who.starts_with("system:bootstrap:abcdef") && who.contains("system:bootstrappers:atoll"),
        "{who}"
    );
    let out = boot.run(&["get", "secrets", "-n", "kube-system"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "bootstrappers get nothing by default"
    );
    let expired = kubectl(token_kubeconfig(&server, "expird.0123456789abcdef"));
    let out = expired.run(&["auth", "whoami"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "an expired bootstrap token is refused"
    );
    let wrong_secret = kubectl(token_kubeconfig(&server, "abcdef.0123456789abcdee"));
    assert!(
        String::from_utf8_lossy(&wrong_secret.run(&["auth", "whoami"]).stderr)
            .contains("Unauthorized")
    );
    // The audit log has a line per request, with who, what and the code.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["user"] == "ops-admin"
        && l["resource"] == "namespaces"
        && l["verb"] == "list"
        && l["code"] == 200));
    assert!(
        lines
            .iter()
            .any(|l| l["user"] == "reader" && l["code"] == 403)
    );
    assert!(
        lines
            .iter()
            .any(|l| l["user"] == "system:anonymous" && l["code"] == 401)
    );
}

#[test]
fn service_account_tokens() {
    let server = Server::start();
    let admin = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: server.kubeconfig(),
    };
    admin.ok(&["create", "serviceaccount", "bot"]);
    admin.ok(&[
        "create",
        "rolebinding",
        "bot-view",
        "--clusterrole=view",
        "--serviceaccount=default:bot",
    ]);
    let token = admin.ok(&["create", "token", "bot"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let bot = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: token_kubeconfig(&server, &token),
    };
    assert!(
        bot.ok(&["auth", "whoami"])
            .contains("system:serviceaccount:default:bot")
    );
    bot.eventually(&["get", "configmaps"], |_| true);
    let out = bot.run(&["get", "secrets"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "view does not include secrets"
    );

    // TokenReview sees it; a token for another audience is not an API token.
    let review = format!(
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec: {{token: {token}}}\n"
    );
    let reviewed = admin.ok_stdin(
        &[
            "create",
            "-f",
            "-",
            "-o",
            "jsonpath={.status.authenticated} {.status.user.username}",
        ],
        &review,
    );
    assert_eq!(reviewed, "true system:serviceaccount:default:bot");
    let vault = admin
        .ok(&["create", "token", "bot", "--audience=vault"])
        .trim()
        .to_string();
    let vault_review = format!(
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec: {{token: {vault}, audiences: [vault]}}\n"
    );
    let reviewed = admin.ok_stdin(
        &[
            "create",
            "-f",
            "-",
            "-o",
            "jsonpath={.status.authenticated} {.status.audiences}",
        ],
        &vault_review,
    );
    assert!(
        reviewed.starts_with("true") && reviewed.contains("vault"),
        "{reviewed}"
    );
    let other = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: token_kubeconfig(&server, &vault),
    };
    assert!(
        String::from_utf8_lossy(&other.run(&["auth", "whoami"]).stderr).contains("Unauthorized")
    );

    // A tampered token is refused.
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: token_kubeconfig(&server, &String::from_utf8(tampered).unwrap()),
    };
    assert!(
        String::from_utf8_lossy(&tampered.run(&["auth", "whoami"]).stderr).contains("Unauthorized")
    );

    // Deleting the service account revokes its tokens.
    admin.ok(&["delete", "serviceaccount", "bot"]);
    let out = bot.run(&["auth", "whoami"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "a deleted service account's token stops working"
    );
}

fn csr_manifest(name: &str, request_pem: &str, usages: &str) -> String {
    use base64::Engine;
    let request = base64::engine::general_purpose::STANDARD.encode(request_pem);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 3600\n  usages: [{usages}]\n"
    )
}

fn request_for(cn: &str, org: &str) -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    let csr = params.serialize_request(&key).unwrap();
    (csr.pem().unwrap(), key)
}

#[test]
fn certificate_signing_requests_end_to_end() {
    use base64::Engine;
    let server = Server::start();
    let admin = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: server.kubeconfig(),
    };
    let (pem, key) = request_for("carol", "devs");
    admin.ok_stdin(
        &["apply", "-f", "-"],
        &csr_manifest("carol", &pem, "client auth, digital signature"),
    );
    let listed = admin.ok(&["get", "csr", "carol"]);
    assert!(listed.contains("Pending"), "{listed}");
    admin.ok(&["certificate", "approve", "carol"]);
    let cert = admin.eventually(
        &[
            "get",
            "csr",
            "carol",
            "-o",
            "jsonpath={.status.certificate}",
        ],
        |s| !s.is_empty(),
    );

    // The issued certificate authenticates as the CSR's subject.
    let cert_pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&cert)
            .unwrap(),
    )
    .unwrap();
    let path = cert_key_kubeconfig(&server, &cert_pem, &key.serialize_pem());
    let carol = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: path,
    };
    let who = carol.ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]);
    assert!(who.starts_with("carol") && who.contains("devs"), "{who}");

    // Denied stays unsigned, and cannot then be approved.
    let (pem, _) = request_for("dave", "devs");
    admin.ok_stdin(
        &["apply", "-f", "-"],
        &csr_manifest("dave", &pem, "client auth"),
    );
    admin.ok(&["certificate", "deny", "dave"]);
    let out = admin.run(&["certificate", "approve", "dave"]);
    assert!(!out.status.success(), "a denied CSR cannot be approved");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        admin.ok(&["get", "csr", "dave", "-o", "jsonpath={.status.certificate}"]),
        ""
    );

    // Server usages are not for this signer: approved, but the signer marks it Failed.
    let (pem, _) = request_for("erin", "devs");
    admin.ok_stdin(
        &["apply", "-f", "-"],
        &csr_manifest("erin", &pem, "server auth"),
    );
    admin.ok(&["certificate", "approve", "erin"]);
    admin.eventually(
        &[
            "get",
            "csr",
            "erin",
            "-o",
            "jsonpath={.status.conditions[*].type}",
        ],
        |s| s.contains("Failed"),
    );

    // A malformed request is refused when created.
    let bad = csr_manifest(
        "bad",
        "-----BEGIN CERTIFICATE REQUEST-----\nnot a csr\n-----END CERTIFICATE REQUEST-----\n",
        "client auth",
    );
    let out = admin.run_stdin(&["apply", "-f", "-"], &bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("spec.request"),
        "{stderr}"
    );

    // Someone who may update approvals but not approve for this signer is refused.
    admin.ok_stdin(&["apply", "-f", "-"], "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: csr-approver-without-signer}\nrules:\n- {apiGroups: [certificates.k8s.io], resources: [certificatesigningrequests, certificatesigningrequests/approval], verbs: [get, list, update]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: frank-csr}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: csr-approver-without-signer}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: frank}]\n");
    let (pem, _) = request_for("gina", "devs");
    admin.ok_stdin(
        &["apply", "-f", "-"],
        &csr_manifest("gina", &pem, "client auth"),
    );
    let frank = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: user_kubeconfig(&server, "frank", &[]),
    };
    let out = frank.run(&["certificate", "approve", "gina"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("signerName"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A kubeconfig whose client certificate (CN `name`, O `system:masters`) is signed by the given
/// CA (certificate and key PEM), valid from `not_before` to `not_after`.
fn cert_kubeconfig(
    server: &Server,
    name: &str,
    ca_cert: &str,
    ca_key: &str,
    not_before: time_offset::Offset,
    not_after: time_offset::Offset,
) -> PathBuf {
    let ca_key = rcgen::KeyPair::from_pem(ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert, &ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = not_before.at();
    params.not_after = not_after.at();
    let cert = params.signed_by(&key, &issuer).unwrap();
    cert_key_kubeconfig(server, &cert.pem(), &key.serialize_pem())
}

/// Days from now, for certificate validity in tests.
mod time_offset {
    pub struct Offset(pub i64);
    impl Offset {
        pub fn at(&self) -> time::OffsetDateTime {
            time::OffsetDateTime::now_utc() + time::Duration::days(self.0)
        }
    }
}

#[test]
fn client_certificates_must_be_current_and_from_the_cluster_ca() {
    let server = Server::start();
    let ca_cert = std::fs::read_to_string(server.dir.join("pki/ca.crt")).unwrap();
    let ca_key = std::fs::read_to_string(server.dir.join("pki/ca.key")).unwrap();
    let use_ = |path: PathBuf| Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: path,
    };
    use time_offset::Offset;
    // Control: a current certificate from the cluster CA works.
    use_(cert_kubeconfig(
        &server,
        "current",
        &ca_cert,
        &ca_key,
        Offset(-1),
        Offset(1),
    ))
    .ok(&["get", "namespaces"]);
    for (name, from, to) in [
        ("expired", Offset(-10), Offset(-2)),
        ("future", Offset(2), Offset(10)),
    ] {
        let out = use_(cert_kubeconfig(&server, name, &ca_cert, &ca_key, from, to))
            .run(&["get", "namespaces"]);
        assert!(!out.status.success(), "a {name} certificate is refused");
    }
    // A certificate from another CA, even one claiming system:masters, is refused.
    let foreign = foreign_ca();
    let out = use_(cert_kubeconfig(
        &server,
        "foreign",
        &foreign.0,
        &foreign.1,
        Offset(-1),
        Offset(1),
    ))
    .run(&["get", "namespaces"]);
    assert!(
        !out.status.success(),
        "a foreign CA's certificate is refused"
    );
}

/// A fresh CA (certificate PEM, key PEM), as another cluster would have.
fn foreign_ca() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "another-ca");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn impersonation_needs_the_impersonate_verb_and_then_runs_as_the_impersonated() {
    let server = Server::start();
    let admin = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: server.kubeconfig(),
    };
    admin.ok_stdin(&["apply", "-f", "-"], SETUP);
    admin.ok_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: deployer, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: deployer-view, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: ServiceAccount, name: deployer, namespace: team}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonate-deployer}
rules:
- {apiGroups: [""], resources: [serviceaccounts], resourceNames: [deployer], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ivan-impersonates, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonate-deployer}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: ivan}]
"#,
    );
    let ivan = Kubectl {
        bin: std::path::Path::new("kubectl"),
        kubeconfig: user_kubeconfig(&server, "ivan", &[]),
    };
    let sa = "system:serviceaccount:team:deployer";
    // As the service account: what it may (view in team), not more, and who it is.
    ivan.ok(&["--as", sa, "-n", "team", "get", "configmaps"]);
    let out = ivan.run(&[
        "--as",
        sa,
        "-n",
        "team",
        "delete",
        "configmap",
        "cfg",
        "--dry-run=server",
    ]);
    assert!(!out.status.success(), "the service account may only view");
    let who = ivan.ok(&[
        "--as",
        sa,
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]);
    assert!(
        who.starts_with(sa) && who.contains("system:serviceaccounts:team"),
        "{who}"
    );
    // Anyone else, or another account: refused, saying what is missing.
    let out = ivan.run(&["--as", "viewer", "-n", "team", "get", "configmaps"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot impersonate resource \"users\""),
        "{err}"
    );
    let out = ivan.run(&[
        "--as",
        "system:serviceaccount:team:default",
        "-n",
        "team",
        "get",
        "configmaps",
    ]);
    assert!(!out.status.success());
    // A group without a user is a bad request.
    let out = admin.run(&["--as-group", "writers", "-n", "team", "get", "configmaps"]);
    assert!(!out.status.success());
    // The admin may impersonate anyone: as wanda of writers, she writes config maps.
    admin.ok(&[
        "--as",
        "wanda",
        "--as-group",
        "writers",
        "-n",
        "team",
        "create",
        "configmap",
        "by-wanda",
    ]);
    let out = admin.run(&[
        "--as",
        "wanda",
        "-n",
        "team",
        "create",
        "configmap",
        "by-wanda-alone",
    ]);
    assert!(!out.status.success(), "without the group, wanda may not");
}
