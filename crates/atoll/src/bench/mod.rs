//! `atoll bench <area>`: benchmarks that print their figures next to a reference measured in
//! the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use atoll_apiserver::{ApiServer, Config, Pki};
use atoll_store::{BackendKind, Options, Precondition, Store};
use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchParams};
use kube::core::WatchEvent;
use serde_json::{Value, json};

mod cluster;
mod dns;
mod gateway;
mod http;
mod peering;
mod placement;
mod registration;
mod services;
mod work;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// What to measure: `apiserver`, `cluster`, `registration`, `placement`, `work`, `dns`,
    /// `services`, `gateway` or `peering`.
    area: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Objects written in the create/update/get phases; dns: Services.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Watchers in the watch-delivery phase.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Objects held for the memory figure (0 skips the phase).
    #[arg(long, default_value_t = 100_000)]
    memory_objects: usize,
    /// cluster: simulated nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// cluster: pods created end to end (and held for the memory figure).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// cluster: pods in the scheduler-only phase.
    #[arg(long, default_value_t = 5_000)]
    sched_pods: usize,
    /// cluster: skip timing `atoll dev up --clusters 3`.
    #[arg(long)]
    no_dev_up: bool,
    /// registration: clusters (agents) joining the hub (default 5,000); placement: simulated
    /// clusters (default 1,000); work: Pull clusters and as many Push clusters (default 100);
    /// services: clusters (default 100).
    #[arg(long)]
    clusters: Option<usize>,
    /// placement: placements of 10 clusters each.
    #[arg(long, default_value_t = 1_000)]
    placements: usize,
    /// work: works per Pull cluster in the steady-state phase.
    #[arg(long, default_value_t = 100)]
    works_per_cluster: usize,
    /// placement: changes to one cluster each, timed until every decision reflects them.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// registration: seconds of steady state after all are Available.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// registration: how long all may take to become Available.
    #[arg(long, default_value_t = 900)]
    join_timeout: u64,
    /// registration: clusters joining afterwards, arriving at `--late-rate` per second while
    /// the hub holds the others, for the latency of a join.
    #[arg(long, default_value_t = 200)]
    late_joins: usize,
    /// registration: arrivals per second of the late joins.
    #[arg(long, default_value_t = 20.0)]
    late_rate: f64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.area.as_str() {
        "apiserver" => apiserver(args).await,
        "cluster" => cluster::run(args).await,
        "registration" => registration::run(args).await,
        "placement" => placement::run(args).await,
        "work" => work::run(args).await,
        "dns" => dns::run(args).await,
        "services" => services::run(args).await,
        "gateway" => gateway::run(args).await,
        "peering" => peering::run(args).await,
        other => anyhow::bail!(
            "unknown benchmark area {other:?}; available: apiserver, cluster, registration, placement, work, dns, services, gateway, peering"
        ),
    }
}

/// Latencies of one phase, summarized.
struct Phase {
    name: &'static str,
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let mut v = self.latencies.clone();
        v.sort();
        let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[idx].as_secs_f64() * 1000.0
    }
    fn json(&self) -> Value {
        json!({"ops": self.ops, "seconds": self.elapsed.as_secs_f64(), "per_second": self.rate(), "p50_ms": self.pct(0.5), "p99_ms": self.pct(0.99)})
    }
}

fn payload(i: usize) -> String {
    // 1 KiB of data per object.
    format!("{i:0>1024}")
}

fn config_map(name: String, value: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        data: Some([("v".to_string(), value)].into()),
        ..Default::default()
    }
}

/// Create a namespace for a phase's objects.
async fn create_namespace(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let namespace = k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    nss.create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {ns}"))?;
    Ok(())
}

fn rss_bytes() -> u64 {
    rss_of("self")
}

/// VmRSS of process `pid` ("self" for this one), in bytes.
fn rss_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Run `total` operations from `clients` concurrent tasks; `op(i)` is operation number i.
async fn concurrent<F, Fut>(
    name: &'static str,
    total: usize,
    clients: usize,
    op: F,
) -> anyhow::Result<Phase>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Phase {
        name,
        ops: total,
        elapsed: start.elapsed(),
        latencies,
    })
}

async fn client_for(kubeconfig: &str) -> anyhow::Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(kubeconfig)?,
        &Default::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Authorization cost: the same gets as cluster-admin (the superuser group, no rule lookup)
/// and as a user whose access comes through the last of 100 RoleBindings.
async fn authz_cost(
    admin: &kube::Client,
    user: &kube::Client,
    n: usize,
    clients: usize,
) -> anyhow::Result<(Phase, Phase)> {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let ns = "bench-authz";
    create_namespace(admin, ns).await?;
    let roles: Api<Role> = Api::namespaced(admin.clone(), ns);
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), ns);
    for i in 0..100 {
        // 99 roles on other resources, the last one on configmaps: the worst case for the scan.
        let resource = if i == 99 { "configmaps" } else { "leases" };
        let role: Role = serde_json::from_value(
            json!({"metadata": {"name": format!("r{i}")}, "rules": [{"apiGroups": [""], "resources": [resource], "verbs": ["get"]}]}),
        )?;
        roles.create(&PostParams::default(), &role).await?;
        let rb: RoleBinding = serde_json::from_value(
            json!({"metadata": {"name": format!("b{i}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("r{i}")},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bench-user"}]}),
        )?;
        bindings.create(&PostParams::default(), &rb).await?;
    }
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    for i in 0..100 {
        cms.create(
            &PostParams::default(),
            &config_map(format!("a{i}"), payload(i)),
        )
        .await?;
    }
    // The authorizer's index follows RBAC changes asynchronously; wait until the user is allowed.
    let user_cms: Api<ConfigMap> = Api::namespaced(user.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    while user_cms.get("a0").await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the bench user was never authorized"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let as_admin = concurrent("get as cluster-admin", n, clients, move |i| {
        let cms = cms.clone();
        async move {
            cms.get(&format!("a{}", i % 100)).await?;
            Ok(())
        }
    })
    .await?;
    let as_user = concurrent("get via 100 bindings", n, clients, move |i| {
        let cms = user_cms.clone();
        async move {
            cms.get(&format!("a{}", i % 100)).await?;
            Ok(())
        }
    })
    .await?;
    Ok((as_admin, as_user))
}

/// An API server of this process on a TLS listener: what identities are minted from.
struct Served {
    server: Arc<ApiServer>,
    pki: Pki,
    url: String,
}

impl Served {
    async fn start(dir: &std::path::Path) -> anyhow::Result<Served> {
        let store = Store::open(
            BackendKind::Redb(dir.join("store.redb")),
            Options::default(),
        )?;
        let server = ApiServer::start(store, Config::default())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let pki = Pki::load_or_create(&dir.join("pki"), &["127.0.0.1".into()])?;
        tokio::spawn(atoll_apiserver::tls::serve(
            listener,
            pki.server_config()?,
            server.router(),
        ));
        let url = format!("https://127.0.0.1:{}", addr.port());
        Ok(Served { server, pki, url })
    }

    /// A client for `user` in `groups`, with a certificate from the cluster CA.
    async fn client(&self, user: &str, groups: &[&str]) -> anyhow::Result<kube::Client> {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        client_for(&self.pki.kubeconfig(&self.url, "bench", user, &groups)?).await
    }
}

/// The server on a TLS listener, a cluster-admin client, and a client for an unprivileged
/// user `bench-user`.
async fn start_server(
    dir: &std::path::Path,
) -> anyhow::Result<(Arc<ApiServer>, kube::Client, kube::Client)> {
    let served = Served::start(dir).await?;
    let admin = served.client("bench", &["system:masters"]).await?;
    let user = served.client("bench-user", &[]).await?;
    Ok((served.server, admin, user))
}

async fn apiserver(args: BenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (server, client, user) = start_server(tmp.path()).await?;
    let n = args.objects;
    let say = |s: &str| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    say(&format!(
        "atoll bench apiserver: {n} objects of 1 KiB, {} clients over HTTPS, redb storage",
        args.clients
    ));

    // The limit: the raw store doing the same writes, no HTTP or JSON.
    say("raw store creates...");
    let raw_dir = tempfile::tempdir()?;
    let raw = Store::open(
        BackendKind::Redb(raw_dir.path().join("raw.redb")),
        Options::default(),
    )?;
    let raw_phase = {
        let raw = raw.clone();
        concurrent("raw store create", n, args.clients, move |i| {
            let raw = raw.clone();
            async move {
                let value = Bytes::from(payload(i));
                raw.update(
                    &format!("/core/configmaps/bench/c{i}"),
                    value,
                    Precondition::Absent,
                )
                .await?;
                Ok(())
            }
        })
        .await?
    };
    drop(raw);

    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    say("API creates...");
    let create = {
        let api = api.clone();
        concurrent("create", n, args.clients, move |i| {
            let api = api.clone();
            async move {
                api.create(
                    &PostParams::default(),
                    &config_map(format!("c{i}"), payload(i)),
                )
                .await?;
                Ok(())
            }
        })
        .await?
    };
    say("API updates...");
    let update = {
        let api = api.clone();
        concurrent("update", n, args.clients, move |i| {
            let api = api.clone();
            async move {
                let cm = config_map(format!("c{i}"), payload(i + 1));
                api.replace(&format!("c{i}"), &PostParams::default(), &cm)
                    .await?;
                Ok(())
            }
        })
        .await?
    };
    say("API gets...");
    let get = {
        let api = api.clone();
        concurrent("get", n, args.clients, move |i| {
            let api = api.clone();
            async move {
                api.get(&format!("c{i}")).await?;
                Ok(())
            }
        })
        .await?
    };
    say("authorization cost...");
    let (as_admin, as_user) = authz_cost(&client, &user, n, args.clients).await?;

    say("API lists of every object...");
    let lists = 10;
    let list = {
        let api = api.clone();
        concurrent("list", lists, 1, move |_| {
            let api = api.clone();
            async move {
                let l = api.list(&ListParams::default()).await?;
                anyhow::ensure!(l.items.len() >= n, "list returned {} items", l.items.len());
                Ok(())
            }
        })
        .await?
    };

    say("paced writes at 1,000/s...");
    let paced = paced_writes(&api, 1000, Duration::from_secs(5)).await?;
    say(&format!("watch delivery to {} watchers...", args.watchers));
    let watch = watch_delivery(&client, args.watchers, 1000).await?;

    let mut memory = Value::Null;
    if args.memory_objects > 0 {
        say(&format!(
            "memory while holding {} ConfigMaps...",
            args.memory_objects
        ));
        memory = memory_figure(&server, &client, args.memory_objects, args.clients).await?;
    }

    let ratio = create.rate() / raw_phase.rate();
    let report = json!({
        "objects": n,
        "clients": args.clients,
        "raw_store_create": raw_phase.json(),
        "create": create.json(),
        "update": update.json(),
        "get": get.json(),
        "list_all": {"objects": n, "lists": lists, "seconds_each": list.elapsed.as_secs_f64() / lists as f64, "p99_ms": list.pct(0.99)},
        "create_vs_raw_store": ratio,
        "paced_1000_writes_per_second": paced,
        "watch": watch,
        "memory": memory,
        "authz": {"get_as_cluster_admin": as_admin.json(), "get_via_100_rolebindings": as_user.json(), "slowdown": 1.0 - as_user.rate() / as_admin.rate()},
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{:<22} {:>10} {:>12} {:>10} {:>10}",
        "phase", "ops", "ops/s", "p50 ms", "p99 ms"
    );
    for p in [&raw_phase, &create, &update, &get, &as_admin, &as_user] {
        println!(
            "{:<22} {:>10} {:>12.0} {:>10.2} {:>10.2}",
            p.name,
            p.ops,
            p.rate(),
            p.pct(0.5),
            p.pct(0.99)
        );
    }
    println!(
        "{:<22} {:>10} {:>12} {:>10.1} {:>10.1}",
        format!("list ({n} objects)"),
        lists,
        format!("{:.2} s each", list.elapsed.as_secs_f64() / lists as f64),
        list.pct(0.5),
        list.pct(0.99)
    );
    println!(
        "API create / raw store create: {:.0}% (goal: at least 50%)",
        ratio * 100.0
    );
    println!(
        "paced 1,000 writes/s: achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms (goal: p99 under 10 ms)",
        paced["achieved_per_second"].as_f64().unwrap_or(0.0),
        paced["p50_ms"].as_f64().unwrap_or(0.0),
        paced["p99_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "watch delivery to {} watchers: p50 {:.2} ms, p99 {:.2} ms over {} deliveries (goal: p99 under 50 ms)",
        args.watchers,
        watch["p50_ms"].as_f64().unwrap_or(0.0),
        watch["p99_ms"].as_f64().unwrap_or(0.0),
        watch["deliveries"]
    );
    if !memory.is_null() {
        println!(
            "memory holding {} ConfigMaps: RSS grew {:.0} MiB for {:.0} MiB of objects ({:.2}x; goal: under 3x)",
            memory["objects"],
            memory["rss_growth_mib"].as_f64().unwrap_or(0.0),
            memory["object_bytes_mib"].as_f64().unwrap_or(0.0),
            memory["ratio"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// Writes issued at a fixed rate (open loop), so latency is measured at a known load.
async fn paced_writes(
    api: &Api<ConfigMap>,
    per_second: u64,
    duration: Duration,
) -> anyhow::Result<Value> {
    let total = (per_second as f64 * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / per_second as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            api.create(
                &PostParams::default(),
                &config_map(format!("paced{i}"), payload(i)),
            )
            .await?;
            Ok::<_, anyhow::Error>(t.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        lat.push(t.await??);
    }
    let elapsed = start.elapsed();
    let p = Phase {
        name: "paced",
        ops: total,
        elapsed,
        latencies: lat,
    };
    Ok(
        json!({"target_per_second": per_second, "achieved_per_second": p.rate(), "p50_ms": p.pct(0.5), "p99_ms": p.pct(0.99)}),
    )
}

/// `watchers` watches on one namespace; `writes` paced creates, each carrying its send time;
/// latency is from just before the create is sent to its arrival at each watcher.
async fn watch_delivery(
    client: &kube::Client,
    watchers: usize,
    writes: usize,
) -> anyhow::Result<Value> {
    let ns = "bench-watch";
    create_namespace(client, ns).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let epoch = Instant::now();
    let rv = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("list has a resourceVersion")?;
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let stream = api.watch(&WatchParams::default().timeout(290), &rv).await?;
        tasks.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut lat = Vec::with_capacity(writes);
            while lat.len() < writes {
                match stream.next().await {
                    Some(Ok(WatchEvent::Added(cm))) => {
                        let sent: u64 = cm
                            .data
                            .as_ref()
                            .and_then(|d| d.get("t"))
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0);
                        let now = epoch.elapsed().as_micros() as u64;
                        lat.push(Duration::from_micros(now.saturating_sub(sent)));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(anyhow::anyhow!("watch failed: {e}")),
                    None => {
                        return Err(anyhow::anyhow!(
                            "watch ended early after {} events",
                            lat.len()
                        ));
                    }
                }
            }
            Ok(lat)
        }));
    }
    // Writes at 200/s, so delivery latency is not queueing behind a burst.
    let interval = Duration::from_millis(5);
    let start = Instant::now();
    for i in 0..writes {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        let mut cm = config_map(format!("w{i}"), String::new());
        cm.data = Some(
            [(
                "t".to_string(),
                (epoch.elapsed().as_micros() as u64).to_string(),
            )]
            .into(),
        );
        api.create(&PostParams::default(), &cm).await?;
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .context("watchers did not receive every event in 60 s")???,
        );
    }
    let p = Phase {
        name: "watch",
        ops: all.len(),
        elapsed: start.elapsed(),
        latencies: all,
    };
    Ok(
        json!({"watchers": watchers, "writes": writes, "deliveries": p.ops, "p50_ms": p.pct(0.5), "p99_ms": p.pct(0.99)}),
    )
}

/// RSS growth of this process (server and client) while the server holds `n` more ConfigMaps.
async fn memory_figure(
    server: &Arc<ApiServer>,
    client: &kube::Client,
    n: usize,
    clients: usize,
) -> anyhow::Result<Value> {
    let ns = "bench-memory";
    create_namespace(client, ns).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let before = rss_bytes();
    concurrent("memory", n, clients, move |i| {
        let api = api.clone();
        async move {
            api.create(
                &PostParams::default(),
                &config_map(format!("m{i}"), payload(i)),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    let after = rss_bytes();
    let page = server
        .store
        .list(&format!("/core/configmaps/{ns}/"), None, 0, None)?;
    let object_bytes: usize = page
        .items
        .iter()
        .map(|(k, e)| k.len() + e.value.len())
        .sum();
    drop(page);
    let growth = after.saturating_sub(before) as f64;
    Ok(json!({
        "objects": n,
        "object_bytes_mib": object_bytes as f64 / 1048576.0,
        "rss_before_mib": before as f64 / 1048576.0,
        "rss_after_mib": after as f64 / 1048576.0,
        "rss_growth_mib": growth / 1048576.0,
        "ratio": growth / object_bytes.max(1) as f64,
    }))
}
