//! `atoll bench work`: delivering ManifestWorks to 100 Pull and 100 Push clusters.
//!
//! The hub is what a user runs: an `atoll server` process and an `atoll hub` process (with its
//! admission webhooks); its CPU and RSS are read from /proc. The members are lightweight: an
//! in-memory API server each, in this process, so every cluster is a cluster of its own
//! (objects of one never meet another's), with its agent (Pull: the real `atoll-agent` code,
//! in this process) or the hub's push credential (Push: a token of the member's
//! `atoll-push` ServiceAccount, as `atoll join --sync-mode Push` makes it).
//!
//! Figures: the latency from a ManifestWork's creation on the hub to its object existing in
//! the member (seen on a watch of the member), paced, p50/p90/p99 for each mode; a
//! ManifestWorkReplicaSet over the 100 Pull clusters until all its works are Available; 100
//! works per Pull cluster (10,000) applied, then the hub's CPU and RSS in steady state; one
//! agent as its own process (`atoll agent`) with 100 works, its RSS; failover: a placement of
//! one of two clusters, the chosen one's agent stopped, time until the work's object exists
//! on the other, against the lease grace plus tolerationSeconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_api::cluster::{CONDITION_AVAILABLE, ManagedCluster, cluster_namespace};
use atoll_apiserver::{ApiServer, Config, Pki};
use atoll_store::{BackendKind, Options, Store};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::registration::{Child, bootstrap_token, start_hub, start_server, usage_of};
use super::{BenchArgs, Phase};

/// A member: an in-memory API server of this process, and an admin client for it.
pub(super) struct Member {
    pub(super) client: Client,
    pub(super) config: kube::Config,
    kubeconfig: String,
    _server: Arc<ApiServer>,
}

pub(super) async fn member(name: &str, dir: &std::path::Path) -> anyhow::Result<Member> {
    let store = Store::open(BackendKind::Memory, Options::default())?;
    let pki_dir = dir.join(name).join("pki");
    let pki = Pki::load_or_create(&pki_dir, &["127.0.0.1".into()])?;
    // Tokens for the push credential, and the CA for the CSRs agents ask for.
    let signer = atoll_apiserver::authn::TokenSigner::load_or_create(&pki_dir.join("sa.key"))
        .map_err(|e| anyhow::anyhow!("service-account signing key: {e}"))?;
    let config = Config {
        name: name.to_string(),
        token_signer: Some(Arc::new(signer)),
        ..Config::default()
    };
    let server = ApiServer::start(store, config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(atoll_apiserver::tls::serve(
        listener,
        pki.server_config()?,
        server.router(),
    ));
    let url = format!("https://127.0.0.1:{}", addr.port());
    let kubeconfig = pki.kubeconfig(&url, name, "admin", &["system:masters".to_string()])?;
    let (client, config) = crate::clients::from_yaml(&kubeconfig).await?;
    // The namespace the works write into.
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "bench"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(Member {
        client,
        config,
        kubeconfig,
        _server: server,
    })
}

fn config_map_work(name: &str, cluster: &str, cm: &str) -> serde_json::Value {
    json!({
        "apiVersion": "work.atoll.io/v1alpha1", "kind": "ManifestWork",
        "metadata": {"name": name, "namespace": cluster_namespace(cluster)},
        "spec": {"workload": {"manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": cm, "namespace": "bench", "labels": {"bench": "work"}},
             "data": {"payload": "x".repeat(256)}},
        ]}},
    })
}

/// When each ConfigMap first appeared in a member, by name.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

fn watch_arrivals(m: &Member, arrivals: Arrivals) -> tokio::task::JoinHandle<()> {
    let api: Api<ConfigMap> = Api::namespaced(m.client.clone(), "bench");
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default().labels("bench=work")).boxed();
        while let Ok(Some(ev)) = stream.try_next().await {
            if let watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) = ev {
                arrivals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(cm.name_any())
                    .or_insert_with(Instant::now);
            }
        }
    })
}

/// Wait until `pred` holds, or fail after `secs`.
async fn until(secs: u64, what: &str, mut pred: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !pred() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Create one work per cluster, `rounds` times, paced at `rate` per second; returns each
/// object's latency from its work's create request to its arrival in the member.
async fn paced_latency(
    hub: &Client,
    clusters: &[String],
    arrivals: &Arrivals,
    prefix: &str,
    rounds: usize,
    rate: f64,
) -> anyhow::Result<Vec<Duration>> {
    let mut sent: Vec<(String, Instant)> = Vec::new();
    let start = Instant::now();
    let mut i = 0usize;
    for round in 0..rounds {
        for c in clusters {
            tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into())
                .await;
            i += 1;
            let cm = format!("{prefix}-{c}-{round}");
            let work_name = format!("{prefix}-{round}");
            let w = config_map_work(&work_name, c, &cm);
            let api: Api<atoll_api::work::ManifestWork> =
                Api::namespaced(hub.clone(), &cluster_namespace(c));
            let t = Instant::now();
            // Sent without waiting for the answer: the pace is kept even if the hub is slow.
            tokio::spawn(async move {
                if let Err(e) = api
                    .patch(
                        &work_name,
                        &PatchParams::apply("bench").force(),
                        &Patch::Apply(&w),
                    )
                    .await
                {
                    tracing::warn!(error = %e, "bench: cannot create a work");
                }
            });
            sent.push((cm, t));
        }
    }
    let want = sent.len();
    until(120, "every work's object in its member", || {
        let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
        sent.iter().filter(|(n, _)| a.contains_key(n)).count() == want
    })
    .await?;
    let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
    Ok(sent
        .iter()
        .filter_map(|(n, t)| a.get(n).map(|at| at.saturating_duration_since(*t)))
        .collect())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let say = |s: &str| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    let n = args.clusters.unwrap_or(100).max(2);
    let works_per_cluster = args.works_per_cluster;
    say(&format!(
        "atoll bench work: {n} Pull and {n} Push clusters (in-memory members), {works_per_cluster} works per Pull cluster in steady state"
    ));
    let tmp = tempfile::tempdir()?;
    let hub_dir = tmp.path().join("hub");
    let server = start_server(&hub_dir, "hub")?;
    let hub_kubeconfig = hub_dir.join("admin.kubeconfig");
    let (boot, token_id) = bootstrap_token(&hub_kubeconfig).await?;
    let exe = std::env::current_exe()?;
    let hub = start_hub(
        &hub_kubeconfig,
        &[
            "--auto-accept",
            &format!("system:bootstrap:{token_id}"),
            "--webhook-listen",
            "127.0.0.1:0",
        ],
    )?;
    let pids = [server.0.id(), hub.0.id()];
    let hub_usage = || usage_of(&pids);
    let (admin, _) = crate::clients::from_path(&hub_kubeconfig).await?;

    say(&format!("starting {} members...", 2 * n + 3));
    let pull: Vec<String> = (0..n).map(|i| format!("pull-{i:03}")).collect();
    let push: Vec<String> = (0..n).map(|i| format!("push-{i:03}")).collect();
    let mut members: HashMap<String, Member> = HashMap::new();
    for c in pull.iter().chain(&push).chain(
        [
            "fail-a".to_string(),
            "fail-b".to_string(),
            "probe".to_string(),
        ]
        .iter(),
    ) {
        members.insert(c.clone(), member(c, tmp.path()).await?);
    }
    // Pull: an agent each, here; the failover pair with 2 s leases.
    let mut agents: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    for c in pull
        .iter()
        .chain(["fail-a".to_string(), "fail-b".to_string()].iter())
    {
        let m = &members[c];
        let mut cfg = atoll_agent::AgentConfig::new(c);
        cfg.bootstrap_kubeconfig = Some(boot.clone());
        cfg.lease_seconds = if c.starts_with("fail") { 2 } else { 10 };
        cfg.pull_work = Some(m.config.clone());
        let client = m.client.clone();
        let name = c.clone();
        agents.insert(
            c.clone(),
            tokio::spawn(async move {
                if let Err(e) = atoll_agent::run(client, cfg).await {
                    tracing::error!(cluster = %name, error = %e, "agent stopped");
                }
            }),
        );
    }
    // Push: joined as `atoll join --sync-mode Push` does, by writing files for it.
    for c in &push {
        let m = &members[c];
        let path = tmp.path().join(format!("{c}.kubeconfig"));
        std::fs::write(&path, &m.kubeconfig)?;
        crate::registration::push_join(&admin, &path, c, 10, true).await?;
    }
    let mcs: Api<ManagedCluster> = Api::all(admin.clone());
    let all: Vec<String> = pull
        .iter()
        .chain(&push)
        .cloned()
        .chain(["fail-a".into(), "fail-b".into()])
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = mcs.list(&ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|m| m.is(CONDITION_AVAILABLE))
            .count();
        if ready >= all.len() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {} clusters became Available",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Their cluster namespaces, where works go, exist once accepted; wait for those too.
    for c in &all {
        let ns: Api<Namespace> = Api::all(admin.clone());
        while ns.get_opt(&cluster_namespace(c)).await?.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let arrivals: Arrivals = Arc::default();
    let watches: Vec<tokio::task::JoinHandle<()>> = members
        .values()
        .map(|m| watch_arrivals(m, arrivals.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    say("work latency, Pull...");
    let rounds = 3;
    let rate = 50.0;
    let pull_lat = paced_latency(&admin, &pull, &arrivals, "lat", rounds, rate).await?;
    say("work latency, Push...");
    let push_lat = paced_latency(&admin, &push, &arrivals, "lat", rounds, rate).await?;
    let pull_phase = Phase {
        name: "pull",
        ops: pull_lat.len(),
        elapsed: Duration::ZERO,
        latencies: pull_lat,
    };
    let push_phase = Phase {
        name: "push",
        ops: push_lat.len(),
        elapsed: Duration::ZERO,
        latencies: push_lat,
    };

    // A replica set over the Pull clusters.
    say("a ManifestWorkReplicaSet over the Pull clusters...");
    for c in &pull {
        mcs.patch(
            c,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"bench-mode": "pull"}}})),
        )
        .await?;
    }
    let apply = PatchParams::apply("bench").force();
    for obj in [
        json!({"apiVersion": "cluster.atoll.io/v1alpha1", "kind": "ManagedClusterSet", "metadata": {"name": "bench-pull"},
               "spec": {"clusterSelector": {"selectorType": "LabelSelector", "labelSelector": {"matchLabels": {"bench-mode": "pull"}}}}}),
    ] {
        Api::<atoll_api::clusterset::ManagedClusterSet>::all(admin.clone())
            .patch("bench-pull", &apply, &Patch::Apply(&obj))
            .await?;
    }
    let ws = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-ws"}});
    Api::<Namespace>::all(admin.clone())
        .patch("bench-ws", &apply, &Patch::Apply(&ws))
        .await?;
    let binding = json!({"apiVersion": "cluster.atoll.io/v1alpha1", "kind": "ManagedClusterSetBinding",
        "metadata": {"name": "bench-pull", "namespace": "bench-ws"}, "spec": {"clusterSet": "bench-pull"}});
    Api::<atoll_api::clusterset::ManagedClusterSetBinding>::namespaced(admin.clone(), "bench-ws")
        .patch("bench-pull", &apply, &Patch::Apply(&binding))
        .await?;
    let placement = json!({"apiVersion": "cluster.atoll.io/v1alpha1", "kind": "Placement",
        "metadata": {"name": "all", "namespace": "bench-ws"}, "spec": {"clusterSets": ["bench-pull"]}});
    Api::<atoll_api::placement::Placement>::namespaced(admin.clone(), "bench-ws")
        .patch("all", &apply, &Patch::Apply(&placement))
        .await?;
    let rs_api: Api<atoll_api::work::ManifestWorkReplicaSet> =
        Api::namespaced(admin.clone(), "bench-ws");
    let t_rs = Instant::now();
    let rs = json!({"apiVersion": "work.atoll.io/v1alpha1", "kind": "ManifestWorkReplicaSet",
        "metadata": {"name": "app", "namespace": "bench-ws"},
        "spec": {"manifestWorkTemplate": {"workload": {"manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "namespace": "bench"}, "data": {"a": "b"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app", "namespace": "bench"},
             "spec": {"ports": [{"port": 80}], "selector": {"app": "app"}}},
        ]}}, "placementRefs": [{"name": "all"}]}});
    rs_api.patch("app", &apply, &Patch::Apply(&rs)).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = rs_api.get("app").await?.status.unwrap_or_default();
        if s.summary.available as usize >= n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the replica set reached {} of {n} available",
            s.summary.available
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rs_took = t_rs.elapsed();

    // Failover: one of fail-a and fail-b, tolerating an unreachable one for 2 s.
    say("failover...");
    for c in ["fail-a", "fail-b"] {
        mcs.patch(
            c,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"bench-mode": "fail"}}})),
        )
        .await?;
    }
    let set = json!({"apiVersion": "cluster.atoll.io/v1alpha1", "kind": "ManagedClusterSet", "metadata": {"name": "bench-fail"},
        "spec": {"clusterSelector": {"selectorType": "LabelSelector", "labelSelector": {"matchLabels": {"bench-mode": "fail"}}}}});
    Api::<atoll_api::clusterset::ManagedClusterSet>::all(admin.clone())
        .patch("bench-fail", &apply, &Patch::Apply(&set))
        .await?;
    let binding = json!({"apiVersion": "cluster.atoll.io/v1alpha1", "kind": "ManagedClusterSetBinding",
        "metadata": {"name": "bench-fail", "namespace": "bench-ws"}, "spec": {"clusterSet": "bench-fail"}});
    Api::<atoll_api::clusterset::ManagedClusterSetBinding>::namespaced(admin.clone(), "bench-ws")
        .patch("bench-fail", &apply, &Patch::Apply(&binding))
        .await?;
    let toleration = 2;
    let placement = json!({"apiVersion": "cluster.atoll.io/v1alpha1", "kind": "Placement",
        "metadata": {"name": "one", "namespace": "bench-ws"},
        "spec": {"clusterSets": ["bench-fail"], "numberOfClusters": 1,
                 "tolerations": [{"key": "cluster.atoll.io/unreachable", "operator": "Exists", "tolerationSeconds": toleration}]}});
    Api::<atoll_api::placement::Placement>::namespaced(admin.clone(), "bench-ws")
        .patch("one", &apply, &Patch::Apply(&placement))
        .await?;
    let rs = json!({"apiVersion": "work.atoll.io/v1alpha1", "kind": "ManifestWorkReplicaSet",
        "metadata": {"name": "ha", "namespace": "bench-ws"},
        "spec": {"manifestWorkTemplate": {"workload": {"manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ha", "namespace": "bench", "labels": {"bench": "work"}}, "data": {"a": "b"}},
        ]}}, "placementRefs": [{"name": "one"}]}});
    rs_api.patch("ha", &apply, &Patch::Apply(&rs)).await?;
    let has_ha = |m: &Member| {
        let api: Api<ConfigMap> = Api::namespaced(m.client.clone(), "bench");
        async move { api.get_opt("ha").await.ok().flatten().is_some() }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let chosen = loop {
        if has_ha(&members["fail-a"]).await {
            break "fail-a";
        }
        if has_ha(&members["fail-b"]).await {
            break "fail-b";
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the failover work reached neither cluster"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let other = if chosen == "fail-a" {
        "fail-b"
    } else {
        "fail-a"
    };
    if let Some(a) = agents.remove(chosen) {
        a.abort();
    }
    let t_fail = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !has_ha(&members[other]).await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no failover to {other} within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failover = t_fail.elapsed();
    let budget = Duration::from_secs(5 * 2 + toleration as u64);

    // Steady state: many works per Pull cluster.
    say(&format!(
        "{} works ({works_per_cluster} per Pull cluster)...",
        works_per_cluster * n
    ));
    let t_many = Instant::now();
    let hub_works = admin.clone();
    let pull_names = pull.clone();
    super::concurrent(
        "steady works",
        works_per_cluster * n,
        args.clients,
        move |i| {
            let hub = hub_works.clone();
            // Round-robin over the clusters: the `k`th work of each.
            let c = pull_names[i % pull_names.len()].clone();
            let k = i / pull_names.len();
            async move {
                let name = format!("steady-{k}");
                let w = config_map_work(&name, &c, &format!("steady-{c}-{k}"));
                Api::<atoll_api::work::ManifestWork>::namespaced(hub, &cluster_namespace(&c))
                    .patch(
                        &name,
                        &PatchParams::apply("bench").force(),
                        &Patch::Apply(&w),
                    )
                    .await?;
                Ok(())
            }
        },
    )
    .await?;
    let want = works_per_cluster * n;
    until(300, "every steady work's object in its member", || {
        arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|k| k.starts_with("steady-"))
            .count()
            >= want
    })
    .await?;
    let many_took = t_many.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu0, _) = hub_usage();
    let t_steady = Instant::now();
    let steady_secs = args.steady_seconds.clamp(5, 600);
    tokio::time::sleep(Duration::from_secs(steady_secs)).await;
    let (cpu1, rss) = hub_usage();
    let steady_cores = (cpu1 - cpu0) / t_steady.elapsed().as_secs_f64();

    // One agent as its own process, with works_per_cluster works: its RSS.
    say("one agent as a process...");
    let probe = &members["probe"];
    let probe_kc = tmp.path().join("probe.kubeconfig");
    std::fs::write(&probe_kc, &probe.kubeconfig)?;
    let boot_path = tmp.path().join("boot.kubeconfig");
    std::fs::write(&boot_path, &boot)?;
    let agent_proc = Child(
        std::process::Command::new(exe)
            .args([
                "agent",
                "--cluster-name",
                "probe",
                "--lease-duration",
                "10s",
                "--kubeconfig",
            ])
            .arg(&probe_kc)
            .arg("--bootstrap-kubeconfig")
            .arg(&boot_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mcs
        .get_opt("probe")
        .await?
        .is_some_and(|m| m.is(CONDITION_AVAILABLE))
    {
        anyhow::ensure!(Instant::now() < deadline, "the agent process did not join");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ns: Api<Namespace> = Api::all(admin.clone());
    while ns.get_opt(&cluster_namespace("probe")).await?.is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for k in 0..works_per_cluster {
        let name = format!("steady-{k}");
        let w = config_map_work(&name, "probe", &format!("steady-probe-{k}"));
        Api::<atoll_api::work::ManifestWork>::namespaced(
            admin.clone(),
            &cluster_namespace("probe"),
        )
        .patch(
            &name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&w),
        )
        .await?;
    }
    until(120, "the agent process's works", || {
        arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|k| k.starts_with("steady-probe-"))
            .count()
            >= works_per_cluster
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agent_rss = super::rss_of(&agent_proc.0.id().to_string());

    for w in watches {
        w.abort();
    }
    for (_, a) in agents {
        a.abort();
    }
    drop(agent_proc);
    drop(hub);
    drop(server);
    let mib = |b: u64| b as f64 / 1048576.0;
    let report = json!({
        "clusters_per_mode": n,
        "pull_latency": pull_phase.json(),
        "pull_latency_p90_ms": pull_phase.pct(0.9),
        "push_latency": push_phase.json(),
        "push_latency_p90_ms": push_phase.pct(0.9),
        "replicaset_all_available_seconds": rs_took.as_secs_f64(),
        "failover_seconds": failover.as_secs_f64(),
        "failover_budget_seconds": budget.as_secs_f64(),
        "steady_works": want,
        "steady_works_applied_seconds": many_took.as_secs_f64(),
        "hub_cores_steady": steady_cores,
        "hub_rss_mib": mib(rss),
        "agent_process_rss_mib": mib(agent_rss),
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{n} Pull + {n} Push clusters (in-memory members in this process); hub = `atoll server` + `atoll hub` (webhooks on) on this {}-core machine",
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    println!(
        "work created -> object in the member, {} works each paced at {rate}/s: Pull p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms; Push p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms (goal: p99 under 200 ms; Karmada's 100-cluster test: push p99 1,298 ms, pull p99 989 ms)",
        pull_phase.ops,
        pull_phase.pct(0.5),
        pull_phase.pct(0.9),
        pull_phase.pct(0.99),
        push_phase.pct(0.5),
        push_phase.pct(0.9),
        push_phase.pct(0.99)
    );
    println!(
        "a ManifestWorkReplicaSet over {n} Pull clusters: all Available in {:.2} s",
        rs_took.as_secs_f64()
    );
    println!(
        "failover (2 s leases, tolerationSeconds {toleration}): the work on the other cluster {:.1} s after the agent stopped (goal: lease grace + tolerationSeconds + under 2 s = under {:.0} s)",
        failover.as_secs_f64(),
        budget.as_secs_f64() + 2.0
    );
    println!(
        "{want} works on {n} Pull clusters applied in {:.1} s; steady state: hub CPU {:.2} cores, RSS {:.0} MiB; one agent process with {works_per_cluster} works: RSS {:.1} MiB (goal: under 30 MiB; Karmada's agent: 266 MiB at 5k nodes)",
        many_took.as_secs_f64(),
        steady_cores,
        mib(rss),
        mib(agent_rss)
    );
    Ok(())
}
