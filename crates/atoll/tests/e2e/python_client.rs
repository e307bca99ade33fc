//! The official Kubernetes Python client's own end-to-end suite
//! (`../shared/thirdparty/python-client-e2e`, copied unchanged), run with its `run.sh` against
//! a fresh `dev up` member. Every test must pass but those not yet possible here, named below
//! with why; one of those passing too is fine.

use std::path::Path;
use std::process::Command;

use crate::cluster::DevEnv;

/// Not yet possible, and why.
const NOT_YET: [(&str, &str); 2] = [
    (
        "test_client.py::TestClient::test_portforward_http",
        "its nginx pod has no command and the image's entrypoint cannot be known without images",
    ),
    (
        "test_utils.py::TestUtils::test_create_apiservice_from_yaml_with_conflict",
        "APIService needs the aggregation layer (the cluster-proxy issue)",
    ),
];

#[test]
fn the_python_clients_own_e2e_suite_passes() {
    let run_sh = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/thirdparty/python-client-e2e/run.sh");
    assert!(
        run_sh.exists(),
        "{} is missing: the suite lives in ../shared beside the repository",
        run_sh.display()
    );
    let env = DevEnv::up(&["--clusters", "1"]);
    let k = env.kubectl();
    // run.sh tests the kubeconfig's current context.
    k.ok(&["config", "use-context", "member1"]);
    let run = |args: &[&str]| {
        let out = Command::new("bash")
            .arg(&run_sh)
            .arg(env.dir.join("kubeconfig"))
            .args(args)
            .output()
            .expect("bash runs");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (failures(&text), text)
    };
    let (failed, text) = run(&[]);
    let unexpected: Vec<String> = failed
        .into_iter()
        .filter(|f| !NOT_YET.iter().any(|(t, _)| f == t))
        .collect();
    let passed_again = unexpected.len();
    if !unexpected.is_empty() {
        // Once more, those alone: the suite's informer tests wait on timers of their own, which
        // a machine loaded by the other tests can miss once (seen: an informer's watch loop
        // error on a loaded machine, passing alone). A second failure is a failure.
        let names: Vec<&str> = unexpected
            .iter()
            .map(|f| f.rsplit("::").next().unwrap_or(f))
            .collect();
        let (again, text_again) = run(&["-k", &names.join(" or ")]);
        assert!(
            again.is_empty() && text_again.contains(" passed"),
            "the Python client's e2e suite failed {unexpected:?} (besides the ones not yet possible), and {again:?} again alone:\n{text}\n--- again:\n{text_again}"
        );
    }
    // The summary: at least the 42 that pass today ran and passed (on the first run, or the
    // second).
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or_else(|| panic!("no pytest summary:\n{text}"));
    let passed: usize = summary
        .split(',')
        .find_map(|part| {
            part.trim()
                .trim_start_matches('=')
                .trim()
                .strip_suffix(" passed")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        passed + passed_again >= 42,
        "{passed} passed (and {passed_again} on a second run): {summary}"
    );
}

/// The tests pytest's short summary says failed or errored (`FAILED kubernetes/e2e_test/F::C::T`),
/// as `F::C::T`; captured log lines that begin with `ERROR` are not these.
fn failures(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("FAILED kubernetes/e2e_test/")
                .or_else(|| l.strip_prefix("ERROR kubernetes/e2e_test/"))
        })
        .map(|l| l.split(" - ").next().unwrap_or(l).trim().to_string())
        .collect()
}

#[test]
fn failures_are_read_from_the_short_summary_only() {
    let text = "\
kubernetes/e2e_test/test_a.py::T::test_x FAILED [ 10%]
ERROR    kubernetes.informer.informer:informer.py:312 Unexpected error
FAILED kubernetes/e2e_test/test_a.py::T::test_x - AssertionError: no
ERROR kubernetes/e2e_test/test_b.py::U::test_y
PASSED kubernetes/e2e_test/test_b.py::U::test_z
";
    assert_eq!(
        failures(text),
        ["test_a.py::T::test_x", "test_b.py::U::test_y"]
    );
}
