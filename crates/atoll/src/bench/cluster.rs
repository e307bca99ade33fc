//! `atoll bench cluster`: the cluster runtime at scale. One process holds an API server (redb,
//! HTTPS), the scheduler, the controllers and N node agents with the `simulated` runtime, each
//! component with its own identity and its own kube-rs client, as in `atoll dev up`.
//!
//! Phases:
//! - end to end: P pods created by 32 clients; time from the first create to the last pod seen
//!   Running and Ready on a watch, and each pod's latency from its create to its Ready;
//! - memory: RSS of the whole process (server, scheduler, controllers, agents, bench clients)
//!   holding those P pods;
//! - scheduler alone: 100 more nodes without agents (nothing runs their pods), then S pods for
//!   them created faster than they can be bound; time from the first create to the last bind;
//! - references in the same run: a second, bare API server (nothing schedules or runs pods) takes
//!   the same pod creates, and the same bindings from 64 clients that make no decisions: the
//!   ceilings the end-to-end and scheduler figures are held against;
//! - `atoll dev up --clusters 3`: wall time until ready, as a user runs it (separate processes).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::{BenchArgs, Phase, Served, concurrent, create_namespace, rss_bytes};

const CLIENTS: usize = 32;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let say = |s: &str| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    let (n_nodes, n_pods, n_sched) = (args.nodes.max(1), args.pods.max(1), args.sched_pods);
    say(&format!(
        "atoll bench cluster: {n_nodes} simulated nodes, {n_pods} pods end to end, {n_sched} pods for the scheduler alone"
    ));
    let rss_start = rss_bytes();
    let tmp = tempfile::tempdir()?;
    let served = Served::start(tmp.path()).await?;
    let admin = served.client("bench", &["system:masters"]).await?;
    start_control_plane(&served).await?;

    // Node agents, each with its own identity; room for every pod with a margin.
    say(&format!("starting {n_nodes} node agents..."));
    let per_node = (n_pods.div_ceil(n_nodes) * 2).max(110) as u32;
    for i in 0..n_nodes {
        let name = format!("bench-node-{i}");
        let client = served
            .client(&format!("system:node:{name}"), &["system:nodes"])
            .await?;
        let cfg = atoll_cluster::node::NodeConfig {
            name: name.clone(),
            runtime: atoll_cluster::node::Runtime::Simulated,
            cpu: "64".into(),
            memory: "256Gi".into(),
            pods: per_node,
            labels: BTreeMap::new(),
            lease_seconds: 40,
            pod_cidr: None,
            cluster_ca: Vec::new(),
            cluster_dns: None,
            cluster_domain: "cluster.local".into(),
        };
        tokio::spawn(async move {
            if let Err(e) = atoll_cluster::node::run(client, cfg, std::future::pending()).await {
                tracing::error!(node = %name, error = %e, "node agent stopped");
            }
        });
    }
    let nodes_ready = Instant::now();
    wait_nodes_ready(&admin, n_nodes).await?;
    say(&format!(
        "{n_nodes} nodes Ready (with pod ranges) in {:.2} s",
        nodes_ready.elapsed().as_secs_f64()
    ));
    let rss_idle = rss_bytes();

    // End to end.
    say(&format!(
        "creating {n_pods} pods and waiting for each to be Running and Ready..."
    ));
    create_namespace(&admin, "bench-e2e").await?;
    let e2e = pods_until(&admin, "bench-e2e", n_pods, None, PodReached::Ready).await?;
    let rss_full = rss_bytes();
    let placed = spread(&admin, "bench-e2e").await?;
    say(&format!(
        "end to end: {:.0} pods/s; RSS {:.0} MiB",
        e2e.rate(),
        rss_full as f64 / 1048576.0
    ));

    // The scheduler alone.
    let mut sched = None;
    if n_sched > 0 {
        say(&format!(
            "scheduler alone: {n_sched} pods for 100 nodes without agents..."
        ));
        sched = Some(scheduler_alone(&admin, n_sched, 100).await?);
    }

    // References: a bare API server, nothing scheduling or running pods.
    say("reference: the same pod creates and bindings on a bare API server...");
    let ref_tmp = tempfile::tempdir()?;
    let bare = Served::start(ref_tmp.path()).await?;
    let bare_admin = bare.client("bench", &["system:masters"]).await?;
    create_namespace(&bare_admin, "bench-e2e").await?;
    let bare_create = {
        let api: Api<Pod> = Api::namespaced(bare_admin.clone(), "bench-e2e");
        concurrent("bare pod create", n_pods, CLIENTS, move |i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &bench_pod(i, None))
                    .await?;
                Ok(())
            }
        })
        .await?
    };
    let bare_bind = {
        let api: Api<Pod> = Api::namespaced(bare_admin.clone(), "bench-e2e");
        let n = n_sched.max(1).min(n_pods);
        concurrent("bare pod binding", n, 64, move |i| {
            let api = api.clone();
            async move {
                let binding = json!({"apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": format!("p{i}")},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": format!("n{}", i % 100)}});
                api.create_subresource::<Value, Value>(
                    "binding",
                    &format!("p{i}"),
                    &PostParams::default(),
                    &binding,
                )
                .await?;
                Ok(())
            }
        })
        .await?
    };
    drop(bare);

    // `atoll dev up --clusters 3`, as a user runs it.
    let dev_up = if args.no_dev_up {
        None
    } else {
        say("atoll dev up --clusters 3...");
        Some(time_dev_up().await?)
    };

    let mib = |b: u64| b as f64 / 1048576.0;
    let report = json!({
        "nodes": n_nodes,
        "end_to_end": e2e.json(),
        "pods_per_node": {"min": placed.0, "max": placed.1},
        "memory": {"rss_at_start_mib": mib(rss_start), "rss_nodes_idle_mib": mib(rss_idle), "rss_with_pods_mib": mib(rss_full), "pods": n_pods},
        "scheduler_alone": sched.as_ref().map(|p| p.json()),
        "reference_bare_pod_create": bare_create.json(),
        "reference_bare_binding": bare_bind.json(),
        "dev_up_clusters_3": dev_up,
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{:<40} {:>8} {:>10} {:>9} {:>9}",
        "phase", "pods", "pods/s", "p50 ms", "p99 ms"
    );
    let row = |label: &str, p: &Phase| {
        let ms = |q: f64| {
            if p.latencies.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", p.pct(q))
            }
        };
        println!(
            "{:<40} {:>8} {:>10.0} {:>9} {:>9}",
            label,
            p.ops,
            p.rate(),
            ms(0.5),
            ms(0.99)
        );
    };
    row("create -> Running+Ready (end to end)", &e2e);
    row("reference: create on a bare API server", &bare_create);
    if let Some(s) = &sched {
        row("scheduler alone: create -> bound", s);
    }
    row("reference: bindings, no decisions", &bare_bind);
    println!(
        "end to end: {:.0} pods/s, {:.0}% of the bare API server's create rate (goal: at least 500 pods/s; kwok creates about 20 pods/s)",
        e2e.rate(),
        100.0 * e2e.rate() / bare_create.rate()
    );
    if let Some(s) = &sched {
        println!(
            "scheduler alone: {:.0} pods/s, {:.0}% of the bare binding rate (kube-scheduler's published throughput: low hundreds of pods/s)",
            s.rate(),
            100.0 * s.rate() / bare_bind.rate()
        );
    }
    println!(
        "pods per node: {} to {} over {n_nodes} nodes (least-allocated scoring)",
        placed.0, placed.1
    );
    println!(
        "memory of the whole cluster in one process with {n_pods} pods: {:.0} MiB RSS ({:.0} MiB with the nodes idle, {:.0} MiB at start; goal: under 2 GiB)",
        mib(rss_full),
        mib(rss_idle),
        mib(rss_start)
    );
    if let Some(d) = &dev_up {
        println!(
            "atoll dev up --clusters 3: ready in {:.2} s (first start), {:.2} s (again after dev down) (goal: under 5 s)",
            d["first_seconds"].as_f64().unwrap_or(0.0),
            d["restart_seconds"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// The scheduler and the controllers of the served cluster, each with its own identity.
async fn start_control_plane(served: &Served) -> anyhow::Result<()> {
    let scheduler = served.client("system:kube-scheduler", &[]).await?;
    let controllers = served.client("system:kube-controller-manager", &[]).await?;
    tokio::spawn(async move {
        if let Err(e) = atoll_cluster::scheduler::run(scheduler).await {
            tracing::error!(error = %e, "the scheduler stopped");
        }
    });
    let cfg = atoll_cluster::controllers::ControllerConfig::default();
    tokio::spawn(async move {
        if let Err(e) = atoll_cluster::controllers::run(controllers, cfg).await {
            tracing::error!(error = %e, "the controllers stopped");
        }
    });
    Ok(())
}

async fn wait_nodes_ready(client: &kube::Client, n: usize) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = nodes
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|n| {
                let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some();
                cidr && n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {n} nodes became Ready within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bench_pod(i: usize, node_selector: Option<(&str, &str)>) -> Pod {
    let mut spec = json!({
        "containers": [{"name": "main", "image": "registry.example/bench:1",
            "command": ["sleep", "3600"],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
    });
    if let Some((k, v)) = node_selector {
        spec["nodeSelector"] = json!({ k: v });
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{i}"), "labels": {"app": "bench"}},
        "spec": spec,
    }))
    .expect("a valid pod")
}

#[derive(Clone, Copy, PartialEq)]
enum PodReached {
    /// Bound to a node (`spec.nodeName`).
    Bound,
    /// Running with condition Ready=True.
    Ready,
}

fn reached(p: &Pod, what: PodReached) -> bool {
    match what {
        PodReached::Bound => p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some(),
        PodReached::Ready => {
            let s = p.status.as_ref();
            s.and_then(|s| s.phase.as_deref()) == Some("Running")
                && s.and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        }
    }
}

/// Create pods `p0..p{n-1}` in `ns` (32 clients) and watch until all have reached `what`; the
/// phase's time runs from the first create, each latency from that pod's create.
async fn pods_until(
    client: &kube::Client,
    ns: &str,
    n: usize,
    node_selector: Option<(&str, &str)>,
    what: PodReached,
) -> anyhow::Result<Phase> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Vec<Duration>>();
    let watch_sent = sent.clone();
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn({
        let api = api.clone();
        async move {
            let mut seen: HashMap<String, Duration> = HashMap::with_capacity(n);
            let mut synced = Some(synced_tx);
            let mut stream = watcher(api, watcher::Config::default().labels("app=bench")).boxed();
            let mut done = Some(done_tx);
            while let Some(ev) = stream.try_next().await? {
                let pods = match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
                    watcher::Event::InitDone => {
                        if let Some(s) = synced.take() {
                            let _ = s.send(());
                        }
                        vec![]
                    }
                    _ => vec![],
                };
                for p in pods {
                    let Some(name) = p.metadata.name.clone() else {
                        continue;
                    };
                    if seen.contains_key(&name) || !reached(&p, what) {
                        continue;
                    }
                    let since = watch_sent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&name)
                        .map_or(Duration::ZERO, |t| t.elapsed());
                    seen.insert(name, since);
                }
                if seen.len() >= n {
                    if let Some(d) = done.take() {
                        let _ = d.send(seen.values().copied().collect());
                    }
                    break;
                }
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    synced_rx
        .await
        .context("the pod watch ended before it synced")?;
    let start = Instant::now();
    {
        let sent = sent.clone();
        let api = api.clone();
        let selector = node_selector.map(|(k, v)| (k.to_string(), v.to_string()));
        concurrent("create", n, CLIENTS, move |i| {
            let (api, sent, selector) = (api.clone(), sent.clone(), selector.clone());
            async move {
                sent.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(format!("p{i}"), Instant::now());
                let pod = bench_pod(i, selector.as_ref().map(|(k, v)| (k.as_str(), v.as_str())));
                api.create(&PostParams::default(), &pod).await?;
                Ok(())
            }
        })
        .await?;
    }
    let latencies = tokio::select! {
        l = done_rx => l.context("the pod watch stopped")?,
        _ = tokio::time::sleep(Duration::from_secs(600)) => anyhow::bail!("not every pod got there within 10 minutes"),
    };
    let elapsed = start.elapsed();
    watch.abort();
    Ok(Phase {
        name: "end to end",
        ops: n,
        elapsed,
        latencies,
    })
}

/// (fewest, most) pods on one node.
async fn spread(client: &kube::Client, ns: &str) -> anyhow::Result<(usize, usize)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut per: HashMap<String, usize> = HashMap::new();
    for p in pods.list(&ListParams::default()).await?.items {
        if let Some(n) = p.spec.and_then(|s| s.node_name) {
            *per.entry(n).or_default() += 1;
        }
    }
    Ok((
        per.values().copied().min().unwrap_or(0),
        per.values().copied().max().unwrap_or(0),
    ))
}

/// The scheduler alone, as kube-scheduler's scheduler_perf measures it: `nodes` nodes labelled
/// `bench=scheduler` (objects with a lease and no agent, so nothing runs the pods), then `n`
/// pods for them created by 32 clients, faster than any scheduler binds; measured from the
/// first create to the last pod seen bound.
async fn scheduler_alone(client: &kube::Client, n: usize, nodes: usize) -> anyhow::Result<Phase> {
    let ns = "bench-scheduler";
    create_namespace(client, ns).await?;
    let node_api: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let per_node = (n.div_ceil(nodes) * 2).max(110);
    for i in 0..nodes {
        let name = format!("sched-node-{i}");
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": per_node.to_string()},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": per_node.to_string()},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now, "lastTransitionTime": now}],
        });
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"bench": "scheduler"}},
        }))?;
        node_api.create(&PostParams::default(), &node).await?;
        node_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
        let lease = Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some(name.clone()),
                lease_duration_seconds: Some(300),
                renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    k8s_openapi::jiff::Timestamp::now(),
                )),
                ..Default::default()
            }),
        };
        leases.create(&PostParams::default(), &lease).await?;
    }
    // The scheduler has seen them (a pod for them binds) before the clock starts.
    let probe: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut warm = bench_pod(0, Some(("bench", "scheduler")));
    warm.metadata.name = Some("warm-up".into());
    warm.metadata.labels = None;
    probe.create(&PostParams::default(), &warm).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while probe
        .get("warm-up")
        .await?
        .spec
        .and_then(|s| s.node_name)
        .is_none()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the scheduler never bound the warm-up pod"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut phase = pods_until(
        client,
        ns,
        n,
        Some(("bench", "scheduler")),
        PodReached::Bound,
    )
    .await?;
    phase.name = "scheduler alone";
    Ok(phase)
}

/// Wall time of `atoll dev up --clusters 3` (fresh, then again after `dev down`).
async fn time_dev_up() -> anyhow::Result<Value> {
    let exe = std::env::current_exe().context("cannot find the atoll executable")?;
    let dir = tempfile::tempdir()?;
    let run = |args: &[&str]| -> anyhow::Result<f64> {
        let t = Instant::now();
        let out = std::process::Command::new(&exe)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "atoll {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(t.elapsed().as_secs_f64())
    };
    let first = run(&["dev", "up", "--clusters", "3"]);
    let _ = run(&["dev", "down"]);
    let first = first?;
    let again = run(&["dev", "up"]);
    let _ = run(&["dev", "down"]);
    Ok(json!({"first_seconds": first, "restart_seconds": again?}))
}
