//! `atoll bench placement`: Open Cluster Management's placement benchmark shape
//! (`test/benchmark/placement`): 1,000 simulated clusters in one set bound to a namespace, and
//! 1,000 placements there (`numberOfClusters: 10`, `Exact` with `ResourceAllocatableCPU` and
//! `Balance`, as OCM's, less its AddOn score). The hub is what a user runs: an `atoll server`
//! process and an `atoll hub` process; its CPU and memory are read from /proc.
//!
//! Figures: the time from the first placement created until every one has its 10 clusters in
//! its PlacementDecision, and each placement's create-to-decided latency; then changes to one
//! cluster at a time (a NoSelect taint, or its clusterset label moved out of the set), each
//! timed until every PlacementDecision that held that cluster no longer does (seen on a
//! watch); hub CPU and RSS. Reference in the same run: the bare API writes the decisions need
//! (create a PlacementDecision and write its status, the same number, 32 clients), done by
//! this process directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use atoll_api::cluster::{ClusterClaim, ManagedCluster, ManagedClusterSpec};
use atoll_api::clusterset::{
    CLUSTERSET_LABEL, ManagedClusterSet, ManagedClusterSetBinding, ManagedClusterSetBindingSpec,
    ManagedClusterSetSpec,
};
use atoll_api::placement::{PLACEMENT_LABEL, Placement, PlacementDecision};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use super::registration::{start_hub, start_server, usage_of};
use super::{BenchArgs, Phase, concurrent};

const NS: &str = "bench";
const SET: &str = "bench";
const NOC: usize = 10;

/// Decisions per placement as the watch shows them, and when each placement first had all.
#[derive(Default)]
struct Seen {
    decided: HashMap<String, BTreeSet<String>>,
    complete: HashMap<String, Instant>,
    /// When a (placement, cluster) pair was last seen to leave a decision.
    left: HashMap<(String, String), Instant>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let say = |s: &str| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    let clusters = args.clusters.unwrap_or(1000).max(1);
    let placements = args.placements;
    let changes = args.changes;
    say(&format!(
        "atoll bench placement: {clusters} clusters, {placements} placements of {NOC} clusters each, then {changes} cluster changes"
    ));
    let tmp = tempfile::tempdir()?;
    let hub_dir = tmp.path().join("hub");
    let server = start_server(&hub_dir, "hub")?;
    let kubeconfig = hub_dir.join("admin.kubeconfig");
    let (admin, _) = crate::clients::from_path(&kubeconfig).await?;
    atoll_hub::install(&admin).await?;

    say(&format!(
        "creating {clusters} simulated clusters, a set and its binding..."
    ));
    Api::<ManagedClusterSet>::all(admin.clone())
        .create(
            &PostParams::default(),
            &ManagedClusterSet::new(SET, ManagedClusterSetSpec::default()),
        )
        .await?;
    for ns in [NS, "bench-reference"] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &n)
            .await?;
    }
    let mut binding = ManagedClusterSetBinding::new(
        SET,
        ManagedClusterSetBindingSpec {
            cluster_set: SET.into(),
        },
    );
    binding.metadata.namespace = Some(NS.into());
    Api::<ManagedClusterSetBinding>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &binding)
        .await?;
    let c = admin.clone();
    concurrent("create clusters", clusters, args.clients, move |i| {
        let c = c.clone();
        async move {
            let name = format!("cluster{i:04}");
            let mut mc = ManagedCluster::new(&name, ManagedClusterSpec::default());
            mc.metadata.labels = Some(
                [
                    (CLUSTERSET_LABEL.to_string(), SET.to_string()),
                    ("zone".to_string(), format!("zone-{}", i % 10)),
                ]
                .into(),
            );
            let api: Api<ManagedCluster> = Api::all(c);
            api.create(&PostParams::default(), &mc).await?;
            // Clusters differ in CPU, so ResourceAllocatableCPU has something to rank.
            let cpu = (i % 64 + 1).to_string();
            let status = json!({"status": {
                "allocatable": {"cpu": cpu, "memory": "64Gi"},
                "capacity": {"cpu": cpu, "memory": "64Gi"},
                "clusterClaims": [ClusterClaim { name: "region".into(), value: format!("region-{}", i % 4) }],
            }});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await?;
            Ok(())
        }
    })
    .await?;

    // The reference: the writes the decisions need, straight to the API.
    let c = admin.clone();
    let reference = concurrent("reference writes", placements, args.clients, move |i| {
        let c = c.clone();
        async move {
            let api: Api<PlacementDecision> = Api::namespaced(c, "bench-reference");
            let name = format!("ref-{i}-decision-1");
            let mut pd = PlacementDecision::new(&name, Default::default());
            pd.metadata.namespace = Some("bench-reference".into());
            api.create(&PostParams::default(), &pd).await?;
            let decisions: Vec<serde_json::Value> = (0..NOC)
                .map(|k| json!({"clusterName": format!("cluster{:04}", (i + k) % 1000), "reason": ""}))
                .collect();
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"decisions": decisions}})),
            )
            .await?;
            Ok(())
        }
    })
    .await?;

    say("starting the hub's controllers...");
    let hub = start_hub(&kubeconfig, &[])?;
    let pids = [server.0.id(), hub.0.id()];
    let hub_usage = || usage_of(&pids);
    // Let the registration controllers finish with the new clusters (finalizers, conditions)
    // so they do not run alongside the placements.
    let mcs: Api<ManagedCluster> = Api::all(admin.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = mcs.list(&ListParams::default()).await?;
        if list.items.iter().all(|m| {
            m.finalizers()
                .iter()
                .any(|f| f == atoll_api::cluster::CLUSTER_FINALIZER)
        }) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the hub did not take up the clusters"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Watch the decisions.
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let watch = {
        let seen = seen.clone();
        let pds: Api<PlacementDecision> = Api::namespaced(admin.clone(), NS);
        tokio::spawn(async move {
            let mut stream = watcher(pds, watcher::Config::default()).boxed();
            while let Ok(Some(ev)) = stream.try_next().await {
                let pd = match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                    _ => continue,
                };
                let Some(placement) = pd.labels().get(PLACEMENT_LABEL).cloned() else {
                    continue;
                };
                let now: BTreeSet<String> = pd
                    .status
                    .iter()
                    .flat_map(|s| s.decisions.iter().map(|d| d.cluster_name.clone()))
                    .collect();
                let mut s = lock(&seen);
                let before = s
                    .decided
                    .insert(placement.clone(), now.clone())
                    .unwrap_or_default();
                for gone in before.difference(&now) {
                    s.left
                        .insert((placement.clone(), gone.clone()), Instant::now());
                }
                if now.len() == NOC {
                    s.complete.entry(placement).or_insert_with(Instant::now);
                }
            }
        })
    };

    say(&format!("creating {placements} placements..."));
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (cpu0, _) = hub_usage();
    let t0 = Instant::now();
    let c = admin.clone();
    let cr = created.clone();
    concurrent("create placements", placements, args.clients, move |i| {
        let (c, cr) = (c.clone(), cr.clone());
        async move {
            let name = format!("bench-{i}");
            let p: Placement = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": NS},
                "spec": {"numberOfClusters": NOC, "prioritizerPolicy": {"mode": "Exact", "configurations": [
                    {"scoreCoordinate": {"type": "BuiltIn", "builtIn": "ResourceAllocatableCPU"}, "weight": 1},
                    {"scoreCoordinate": {"type": "BuiltIn", "builtIn": "Balance"}, "weight": 1},
                ]}},
            }))?;
            lock(&cr).insert(name, Instant::now());
            Api::<Placement>::namespaced(c, NS)
                .create(&PostParams::default(), &p)
                .await?;
            Ok(())
        }
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(args.join_timeout);
    loop {
        let done = lock(&seen).complete.len();
        if done >= placements {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {placements} placements decided within {} s",
            args.join_timeout
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_decided = t0.elapsed();
    let (cpu1, rss1) = hub_usage();
    let per_placement: Vec<Duration> = {
        let s = lock(&seen);
        let cr = lock(&created);
        s.complete
            .iter()
            .filter_map(|(p, at)| Some(at.saturating_duration_since(*cr.get(p)?)))
            .collect()
    };
    let schedule = Phase {
        name: "placement created to decided",
        ops: placements,
        elapsed: all_decided,
        latencies: per_placement,
    };
    say(&format!(
        "all {placements} decided in {:.2} s; {changes} cluster changes...",
        all_decided.as_secs_f64()
    ));
    // Let the Balance ripples of the first round settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Changes: each to the cluster most placements hold now.
    let mut change_latencies = Vec::new();
    let mut change_totals = Vec::new();
    let mut affected_total = 0;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let (cpu2, _) = hub_usage();
    let changes_start = Instant::now();
    for k in 0..changes {
        let (cluster, affected) = {
            let s = lock(&seen);
            let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (p, cs) in &s.decided {
                for c in cs {
                    if !touched.contains(c) {
                        holders.entry(c.clone()).or_default().push(p.clone());
                    }
                }
            }
            holders
                .into_iter()
                .max_by_key(|(_, ps)| ps.len())
                .context("no cluster is decided")?
        };
        touched.insert(cluster.clone());
        affected_total += affected.len();
        let t = Instant::now();
        if k % 2 == 0 {
            mcs.patch(
                &cluster,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"taints": [{"key": "bench/maintenance", "effect": "NoSelect", "timeAdded": atoll_runtime::now()}]}})),
            )
            .await?;
        } else {
            mcs.patch(
                &cluster,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {CLUSTERSET_LABEL: "elsewhere"}}})),
            )
            .await?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let gone: Vec<Duration> = {
                let s = lock(&seen);
                affected
                    .iter()
                    .filter(|p| !s.decided.get(*p).is_some_and(|d| d.contains(&cluster)))
                    .filter_map(|p| {
                        s.left
                            .get(&(p.clone(), cluster.clone()))
                            .map(|at| at.saturating_duration_since(t))
                    })
                    .collect()
            };
            if gone.len() == affected.len() {
                change_totals.push(gone.iter().copied().max().unwrap_or_default());
                change_latencies.extend(gone);
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "after change {k} ({cluster}), {} of {} placements still held it after 30 s",
                affected.len() - gone.len(),
                affected.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let changes_elapsed = changes_start.elapsed();
    let (cpu3, rss3) = hub_usage();
    let changed = Phase {
        name: "cluster change reflected",
        ops: change_latencies.len(),
        elapsed: changes_elapsed,
        latencies: change_latencies,
    };
    let totals = Phase {
        name: "cluster change reflected everywhere",
        ops: change_totals.len(),
        elapsed: changes_elapsed,
        latencies: change_totals,
    };
    watch.abort();
    let alone = cpu_only(clusters, placements);
    let mib = |b: u64| b as f64 / 1048576.0;
    let report = json!({
        "scheduler_alone_seconds": alone.as_secs_f64(),
        "clusters": clusters,
        "placements": placements,
        "clusters_per_placement": NOC,
        "all_decided_seconds": all_decided.as_secs_f64(),
        "placement_created_to_decided": schedule.json(),
        "reference_writes": reference.json(),
        "hub_cpu_seconds_scheduling": cpu1 - cpu0,
        "hub_rss_mib_after_scheduling": mib(rss1),
        "changes": changes,
        "placements_affected_by_changes": affected_total,
        "change_to_each_decision": changed.json(),
        "change_to_every_decision": totals.json(),
        "hub_cpu_seconds_changes": cpu3 - cpu2,
        "hub_rss_mib_end": mib(rss3),
    });
    drop(hub);
    drop(server);
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{clusters} clusters x {placements} placements ({NOC} clusters each, Exact: ResourceAllocatableCPU + Balance); hub = `atoll server` + `atoll hub` on this {}-core machine",
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    println!(
        "all decided in {:.2} s (goal: under 10 s; OCM: 100,000 placements in ~255 s); created-to-decided p50 {:.0} ms, p99 {:.0} ms; hub CPU {:.1} s, RSS {:.0} MiB",
        all_decided.as_secs_f64(),
        schedule.pct(0.5),
        schedule.pct(0.99),
        cpu1 - cpu0,
        mib(rss1)
    );
    println!(
        "the scheduler alone (no API, one core): {placements} placements over {clusters} clusters in {:.2} s",
        alone.as_secs_f64()
    );
    println!(
        "reference, same run: the {placements} PlacementDecision creates + status writes straight to the API (32 clients): {:.2} s",
        reference.elapsed.as_secs_f64()
    );
    println!(
        "{changes} cluster changes (taint / out of the set), {affected_total} decisions affected: each reflected p50 {:.0} ms, p99 {:.0} ms; every affected decision reflected p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (goal: p99 under 1 s); hub CPU {:.1} s, RSS {:.0} MiB",
        changed.pct(0.5),
        changed.pct(0.99),
        totals.pct(0.5),
        totals.pct(0.99),
        totals.pct(1.0),
        cpu3 - cpu2,
        mib(rss3)
    );
    Ok(())
}

/// Placement scheduling alone, without the API: the pure scheduler over `clusters` clusters.
pub fn cpu_only(clusters: usize, placements: usize) -> Duration {
    use atoll_hub::placement::{cel, schedule};
    let all: Vec<schedule::Cluster> = (0..clusters)
        .map(|i| {
            let mut mc =
                ManagedCluster::new(&format!("cluster{i:04}"), ManagedClusterSpec::default());
            mc.metadata.labels = Some([(CLUSTERSET_LABEL.to_string(), SET.to_string())].into());
            mc.status = Some(atoll_api::cluster::ManagedClusterStatus {
                allocatable: [("cpu".to_string(), (i % 64 + 1).to_string())].into(),
                capacity: [("cpu".to_string(), "64".to_string())].into(),
                ..Default::default()
            });
            schedule::Cluster::from_managed(&mc)
        })
        .collect();
    let refs: Vec<&schedule::Cluster> = all.iter().collect();
    let spec: atoll_api::placement::PlacementSpec = serde_json::from_value(json!({
        "numberOfClusters": NOC, "prioritizerPolicy": {"mode": "Exact", "configurations": [
            {"scoreCoordinate": {"type": "BuiltIn", "builtIn": "ResourceAllocatableCPU"}, "weight": 1},
            {"scoreCoordinate": {"type": "BuiltIn", "builtIn": "Balance"}, "weight": 1}]}
    }))
    .unwrap_or_default();
    let cache = cel::Cache::default();
    let mut counts: HashMap<String, u32> = HashMap::new();
    let current = BTreeSet::new();
    let t = Instant::now();
    for _ in 0..placements {
        let (others, max_others) = schedule::others_of(&refs, &counts, &current);
        if let Ok(o) = schedule::schedule(
            &spec,
            &refs,
            &schedule::Context {
                current: &current,
                others: &others,
                max_others,
                now: k8s_openapi::jiff::Timestamp::now(),
                cel: &cache,
                explain: false,
            },
        ) {
            for d in o.decisions {
                *counts.entry(d).or_default() += 1;
            }
        }
    }
    t.elapsed()
}
