//! The README's tour, run as written: every `sh` block of its "A short tour" section, in
//! order, as one bash script in a fresh HOME (so `atoll dev up` makes its environment there),
//! with the `atoll` this build made first on the PATH. A tour that stops working fails here.

use std::path::Path;
use std::process::Command;

/// The `sh` blocks of the README section headed `heading`, joined.
fn tour_script(readme: &str, heading: &str) -> String {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?} section"));
    let section = &readme[start + heading.len()..];
    let end = section.find("\n## ").unwrap_or(section.len());
    let mut script = String::new();
    let mut inside = false;
    for line in section[..end].lines() {
        match line.trim_end() {
            "```sh" => inside = true,
            "```" if inside => inside = false,
            l if inside => {
                script.push_str(l);
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

/// `atoll dev down` in the tour's HOME, whatever happened.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_atoll"))
            .args(["dev", "down"])
            .env("HOME", self.0)
            .output();
    }
}

#[test]
fn the_readme_tour_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let script = tour_script(&readme, "## A short tour");
    assert!(
        script.contains("atoll dev up"),
        "the tour starts an environment:\n{script}"
    );
    let home = tempfile::tempdir().unwrap();
    let _down = Down(home.path());
    let bin = Path::new(env!("CARGO_BIN_EXE_atoll")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("HOME", home.path())
        .env("PATH", path)
        .env_remove("KUBECONFIG")
        .current_dir(home.path())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the tour failed:\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // What the tour says a reader sees.
    for want in [
        "managedclusterset.cluster.atoll.io/prod created",
        "placementdecision.cluster.atoll.io/web-decision-1",
        "clusterprofile.multicluster.x-k8s.io/member1",
        "clusterprofile.multicluster.x-k8s.io/member3",
        "PlacementSatisfied: True",
        "manifestworkreplicaset.work.atoll.io/hello deployed",
        "2/2",
        "ReadyReplicas=2",
        "manifestworkreplicaset.work.atoll.io/hello deleted",
        "hello.default.svc.cluster.local.",
        // The pod's own resolver found the Service; its projected token named it.
        "hello.default.svc.cluster.local\n",
        "system:serviceaccount:default:default",
        // The gateway's status, as `atoll get ingresses` shows it.
        "multiclusteringress.networking.atoll.io/web condition met",
        "member1=1,member3=1",
    ] {
        assert!(
            stdout.contains(want),
            "the tour's output lacks {want:?}:\n{stdout}"
        );
    }
    // The request pod's answers came from the web pods of both clusters (`uniq -c` lines of
    // two different pod names).
    let answering: std::collections::BTreeSet<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|name| name.starts_with("web-"))
        .collect();
    assert_eq!(
        answering.len(),
        2,
        "the requests reached both clusters' pods:\n{stdout}"
    );
    assert!(
        stdout.contains("serviceexport.multicluster.x-k8s.io/web created"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("clusterprofile.multicluster.x-k8s.io/member2"),
        "alice sees only prod's clusters:\n{stdout}"
    );
}
