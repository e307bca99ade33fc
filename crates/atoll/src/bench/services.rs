//! `atoll bench services`: multi-cluster services over 100 clusters.
//!
//! The hub is what a user runs (an `atoll server` and an `atoll hub` process, endpoint grace 2
//! lease periods); the members are in-memory API servers of this process, each with the real
//! agent (as `atoll bench work` has them), all in the set `default`.
//!
//! Figures:
//! - programming: a ServiceExport created in one member, until the ServiceImport exists in
//!   every member (watches of all of them), and until the member's `atoll dns` answers
//!   `<svc>.bench.svc.clusterset.local` over UDP; p50/p99 over the rounds;
//! - withdrawal: an exporting cluster's agent stopped (its lease is 2 s, so the grace is 4 s);
//!   from the end of the grace until its endpoints are gone from every member, per cluster
//!   lost;
//! - data path: `wrk` through a ClusterSetIP (the member's Service proxy, in this process) to
//!   nginx endpoints in two clusters, against `wrk` straight to one of them, same run.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_api::cluster::{CONDITION_AVAILABLE, ManagedCluster, cluster_namespace};
use atoll_api::mcs::v1beta1::ServiceImport;
use atoll_api::mcs::{LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use super::registration::{bootstrap_token, start_hub, start_server, usage_of};
use super::work::{Member, member};
use super::{BenchArgs, Phase};

/// When each (member, service) first had its ServiceImport.
type Arrivals = Arc<Mutex<HashMap<(String, String), Instant>>>;
/// Per (member, service), the source clusters of its imported slices, as last seen.
type Sources = Arc<Mutex<HashMap<(String, String), HashMap<String, String>>>>;

fn watch_member(
    name: String,
    m: &Member,
    arrivals: Arrivals,
    sources: Sources,
) -> [tokio::task::JoinHandle<()>; 2] {
    let imports: Api<ServiceImport> = Api::namespaced(m.client.clone(), "bench");
    let n = name.clone();
    let imports = tokio::spawn(async move {
        let mut stream = watcher(imports, watcher::Config::default()).boxed();
        while let Ok(Some(ev)) = stream.try_next().await {
            if let watcher::Event::Apply(i) | watcher::Event::InitApply(i) = ev {
                arrivals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry((n.clone(), i.name_any()))
                    .or_insert_with(Instant::now);
            }
        }
    });
    let slices: Api<EndpointSlice> = Api::namespaced(m.client.clone(), "bench");
    let slices = tokio::spawn(async move {
        let mut stream = watcher(
            slices,
            watcher::Config::default()
                .labels("endpointslice.kubernetes.io/managed-by=mcs-controller.atoll.io"),
        )
        .boxed();
        while let Ok(Some(ev)) = stream.try_next().await {
            let (slice, gone) = match ev {
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => (s, false),
                watcher::Event::Delete(s) => (s, true),
                _ => continue,
            };
            let labels = slice.labels().clone();
            let (Some(svc), Some(src)) = (
                labels.get(LABEL_SERVICE_NAME),
                labels.get(LABEL_SOURCE_CLUSTER),
            ) else {
                continue;
            };
            let mut all = sources.lock().unwrap_or_else(|p| p.into_inner());
            let entry = all.entry((name.clone(), svc.clone())).or_default();
            if gone {
                entry.remove(&slice.name_any());
            } else {
                entry.insert(slice.name_any(), src.clone());
            }
        }
    });
    [imports, slices]
}

/// A Service with one ready endpoint in `m`, and its ServiceExport; returns when the export
/// was created.
async fn export(m: &Member, name: &str, endpoint: &str) -> anyhow::Result<Instant> {
    let pp = PostParams::default();
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "bench"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}});
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(m.client.clone(), "bench")
        .create(&pp, &serde_json::from_value(svc)?)
        .await?;
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-own"), "namespace": "bench", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [endpoint], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]});
    Api::<EndpointSlice>::namespaced(m.client.clone(), "bench")
        .create(&pp, &serde_json::from_value(slice)?)
        .await?;
    let at = Instant::now();
    let se = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": "bench"}});
    Api::<atoll_api::mcs::v1beta1::ServiceExport>::namespaced(m.client.clone(), "bench")
        .create(&pp, &serde_json::from_value(se)?)
        .await?;
    Ok(at)
}

async fn until(secs: u64, what: &str, mut pred: impl FnMut() -> bool) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if pred() {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    for t in ["wrk", "nginx"] {
        super::dns::tool(t)?;
    }
    let say = |s: &str| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    let losses = 5;
    // The probe, the lost ones, the exporter, the proxy's member and the data path's two.
    let n = args.clusters.unwrap_or(100).max(losses + 5);
    let rounds = 20;
    say(&format!(
        "atoll bench services: {n} clusters (in-memory members with their agents), {rounds} exports, {losses} clusters lost"
    ));
    let tmp = tempfile::tempdir()?;
    let hub_dir = tmp.path().join("hub");
    let server = start_server(&hub_dir, "hub")?;
    let hub_kubeconfig = hub_dir.join("admin.kubeconfig");
    let (boot, token_id) = bootstrap_token(&hub_kubeconfig).await?;
    let hub = start_hub(
        &hub_kubeconfig,
        &[
            "--auto-accept",
            &format!("system:bootstrap:{token_id}"),
            // The webhook puts joining clusters into the set `default`.
            "--webhook-listen",
            "127.0.0.1:0",
            "--service-endpoint-grace",
            "2",
        ],
    )?;
    let pids = [server.0.id(), hub.0.id()];
    let (admin, _) = crate::clients::from_path(&hub_kubeconfig).await?;

    say(&format!("starting {n} members..."));
    let names: Vec<String> = (0..n).map(|i| format!("m{i:03}")).collect();
    let mut members: HashMap<String, Member> = HashMap::new();
    let mut agents: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let started = Instant::now();
    for (i, c) in names.iter().enumerate() {
        if i > 0 && i % 10 == 0 {
            say(&format!(
                "  {i} of {n} members started ({:.0} s)",
                started.elapsed().as_secs_f64()
            ));
        }
        let m = member(c, tmp.path()).await?;
        let mut cfg = atoll_agent::AgentConfig::new(c);
        cfg.bootstrap_kubeconfig = Some(boot.clone());
        // The clusters that will be lost renew every 2 s; the others every 10 s.
        cfg.lease_seconds = if (1..=losses).contains(&i) { 2 } else { 10 };
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
        members.insert(c.clone(), m);
    }
    let mcs: Api<ManagedCluster> = Api::all(admin.clone());
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut said = Instant::now();
    loop {
        let ready = mcs
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|m| {
                m.is(CONDITION_AVAILABLE)
                    && m.labels()
                        .contains_key(atoll_api::clusterset::CLUSTERSET_LABEL)
            })
            .count();
        if ready >= n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {n} clusters became Available"
        );
        if said.elapsed() > Duration::from_secs(10) {
            say(&format!(
                "  {ready} of {n} clusters Available and in the set"
            ));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for c in &names {
        let ns: Api<Namespace> = Api::all(admin.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        while ns.get_opt(&cluster_namespace(c)).await?.is_none() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "cluster {c}'s namespace on the hub did not appear"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    say(&format!(
        "all {n} clusters joined ({:.0} s)",
        started.elapsed().as_secs_f64()
    ));
    let arrivals: Arrivals = Arc::default();
    let sources: Sources = Arc::default();
    let mut watches = Vec::new();
    for (c, m) in &members {
        watches.extend(watch_member(
            c.clone(),
            m,
            arrivals.clone(),
            sources.clone(),
        ));
    }
    // The probe member's cluster DNS, in this process.
    let probe = &members[&names[0]];
    let dns = atoll_dns::start(
        probe.client.clone(),
        atoll_dns::Options {
            listen: "127.0.0.1:0".parse()?,
            upstreams: Some(vec![]),
            ..Default::default()
        },
        Duration::from_secs(60),
    )
    .await?;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    // The agents install the MCS CRDs; give them a moment before the first export.
    tokio::time::sleep(Duration::from_secs(2)).await;

    say("programming latency...");
    let exporter = &members[&names[n - 1]];
    let mut to_all = Vec::new();
    let mut to_dns = Vec::new();
    for r in 0..rounds {
        let name = format!("svc-{r}");
        let t0 = export(exporter, &name, "127.21.0.1").await?;
        let fqdn = format!("{name}.bench.svc.clusterset.local");
        let mut id = 0u16;
        let dns_at = until(30, "the DNS name to answer", || {
            id = id.wrapping_add(1);
            !super::dns::ask(&sock, dns.addr, &fqdn, id).is_empty()
        })
        .await?;
        let all_at = until(30, "the ServiceImport in every member", || {
            let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
            names
                .iter()
                .all(|c| a.contains_key(&(c.clone(), name.clone())))
        })
        .await?;
        let last = {
            let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
            names
                .iter()
                .filter_map(|c| a.get(&(c.clone(), name.clone())))
                .max()
                .copied()
                .unwrap_or(all_at)
        };
        to_all.push(last.duration_since(t0));
        to_dns.push(dns_at.duration_since(t0));
        say(&format!(
            "  export {r}: in all members after {:.0} ms, in DNS after {:.0} ms",
            last.duration_since(t0).as_secs_f64() * 1000.0,
            dns_at.duration_since(t0).as_secs_f64() * 1000.0
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    say("cluster loss...");
    // Each lost cluster exports one service of its own beside the exporter's.
    let mut withdrawal = Vec::new();
    let mut dead: HashSet<String> = HashSet::new();
    for (k, lost) in names.iter().enumerate().skip(1).take(losses) {
        let name = format!("loss-{k}");
        export(&members[lost], &name, &format!("127.22.0.{k}")).await?;
        export(exporter, &name, "127.21.0.1").await?;
        let both = |s: &Sources| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            names.iter().filter(|c| !dead.contains(*c)).all(|c| {
                s.get(&(c.clone(), name.clone()))
                    .is_some_and(|m| m.values().collect::<HashSet<_>>().len() == 2)
            })
        };
        until(60, "both sources in every member", || both(&sources)).await?;
        if let Some(a) = agents.remove(lost) {
            a.abort();
        }
        dead.insert(lost.clone());
        // The grace runs from the lease's last renewal.
        let leases: Api<Lease> = Api::namespaced(admin.clone(), &cluster_namespace(lost));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let renewed = leases
            .get(atoll_api::cluster::CLUSTER_LEASE)
            .await?
            .spec
            .and_then(|s| s.renew_time)
            .map(|t| t.0)
            .ok_or_else(|| anyhow::anyhow!("{lost} has no lease renewal"))?;
        let grace_end = renewed + k8s_openapi::jiff::SignedDuration::from_secs(4);
        // Everywhere but in the lost cluster itself, whose agent is gone with it.
        let gone_at = until(60, "the lost cluster's endpoints gone everywhere", || {
            let s = sources.lock().unwrap_or_else(|p| p.into_inner());
            names.iter().filter(|c| !dead.contains(*c)).all(|c| {
                s.get(&(c.clone(), name.clone()))
                    .is_some_and(|m| !m.values().any(|src| src == lost))
            })
        })
        .await?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let after_grace =
            (now - grace_end).get_milliseconds() - gone_at.elapsed().as_millis() as i64;
        withdrawal.push(Duration::from_millis(after_grace.max(0) as u64));
        say(&format!(
            "  {lost} lost: withdrawn everywhere {after_grace} ms after the grace"
        ));
    }
    let (cpu, rss) = usage_of(&pids);

    say("data path: wrk through a ClusterSetIP against wrk straight to an endpoint...");
    let _nginx = super::http::nginx_ok(tmp.path(), &["127.23.0.1", "127.23.0.2"])?;
    let proxy_member = &members[&names[2 + losses]];
    let controllers = proxy_member.client.clone();
    tokio::spawn(async move {
        let _ = atoll_cluster::controllers::run(
            controllers,
            atoll_cluster::controllers::ControllerConfig::default(),
        )
        .await;
    });
    let a = &members[&names[losses + 3]];
    let b = &members[&names[losses + 4]];
    export(a, "path", "127.23.0.1").await?;
    export(b, "path", "127.23.0.2").await?;
    let imports: Api<ServiceImport> = Api::namespaced(proxy_member.client.clone(), "bench");
    let ip = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let both = {
                let s = sources.lock().unwrap_or_else(|p| p.into_inner());
                s.get(&(names[2 + losses].clone(), "path".to_string()))
                    .is_some_and(|m| m.values().collect::<HashSet<_>>().len() == 2)
            };
            if let Some(ip) = imports
                .get_opt("path")
                .await?
                .and_then(|i| i.spec.ips.first().cloned())
                && both
            {
                break ip;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no ClusterSetIP with both clusters' endpoints"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let via = format!("http://{ip}/");
    until(30, "the proxy to listen on the ClusterSetIP", || {
        std::net::TcpStream::connect_timeout(
            &format!("{ip}:80").parse().expect("an address"),
            Duration::from_millis(100),
        )
        .is_ok()
    })
    .await?;
    let direct = super::http::wrk("http://127.23.0.1:8080/", None)?;
    let (direct_rps, direct_p99) = (direct.rps, direct.p99_ms);
    let through = super::http::wrk(&via, None)?;
    let (set_rps, set_p99) = (through.rps, through.p99_ms);

    let phase = |name: &'static str, latencies: Vec<Duration>| Phase {
        name,
        ops: latencies.len(),
        elapsed: Duration::ZERO,
        latencies,
    };
    let all = phase("import_in_all_members", to_all);
    let dns_phase = phase("dns_answers", to_dns);
    let lost = phase("withdrawn_after_grace", withdrawal);
    let report = json!({
        "clusters": n,
        "programming": {"all_members": all.json(), "dns": dns_phase.json()},
        "withdrawal_after_grace": lost.json(),
        "data_path": {"direct_rps": direct_rps, "direct_p99_ms": direct_p99, "clustersetip_rps": set_rps,
                      "clustersetip_p99_ms": set_p99, "ratio": set_rps / direct_rps},
        "hub": {"cpu_cores_avg": cpu, "rss_mib": rss as f64 / 1048576.0},
    });
    if args.json {
        println!("{report}");
    } else {
        println!("atoll bench services ({n} clusters)");
        println!("  {:<44} {:>9} {:>9}", "", "p50 ms", "p99 ms");
        println!(
            "  {:<44} {:>9.1} {:>9.1}",
            format!("export -> ServiceImport in all {n} members"),
            all.pct(0.5),
            all.pct(0.99)
        );
        println!(
            "  {:<44} {:>9.1} {:>9.1}",
            "export -> clusterset.local answers",
            dns_phase.pct(0.5),
            dns_phase.pct(0.99)
        );
        println!(
            "  {:<44} {:>9.1} {:>9.1}",
            "grace end -> endpoints withdrawn everywhere",
            lost.pct(0.5),
            lost.pct(0.99)
        );
        println!("  goal: p99 under 1000 ms for both (beyond the 4 s grace)");
        println!(
            "  data path (wrk -t1 -c32 -d10s): ClusterSetIP {:.0} req/s p99 {:.2} ms; direct {:.0} req/s p99 {:.2} ms; ratio {:.2} (goal >= 0.7)",
            set_rps,
            set_p99,
            direct_rps,
            direct_p99,
            set_rps / direct_rps
        );
    }
    // Quietly down: the agents and watches before the servers they talk to.
    for task in agents.into_values().chain(watches) {
        task.abort();
    }
    drop(dns);
    Ok(())
}
