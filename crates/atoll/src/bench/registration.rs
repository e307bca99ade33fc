//! `atoll bench registration`: many clusters joining one hub, then holding their leases.
//!
//! The hub is what a user runs: an `atoll server` process and an `atoll hub` process (with
//! `--auto-accept` for the benchmark's bootstrap token: acceptance in bulk). Its CPU and memory
//! are read from /proc for those two processes alone. The clusters are N lightweight agents in
//! this process, each the real `atoll-agent` code with its own key, certificate, kube client
//! and lease; they share one member API server (a process of its own), each keeping its hub
//! identity in its own Secret.
//!
//! Figures: time from starting the agents until all are Available, and each cluster's
//! join-to-Available latency (from its agent's start to the hub's `Available=True`, seen on a
//! watch); then, in steady state with 10 s leases, the hub's CPU and RSS, and how many clusters
//! were ever marked anything but Available after being Available (falsely Unknown; must be 0);
//! then more clusters arriving at a steady rate on the loaded hub, each join timed.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use atoll_api::cluster::{CONDITION_AVAILABLE, ManagedCluster};
use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::runtime::watcher;
use serde_json::json;

use super::{BenchArgs, Phase};

/// A child process of the hub, killed when dropped.
pub(super) struct Child(pub(super) std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) and RSS bytes of a process.
pub(super) fn usage(pid: u32) -> (f64, u64) {
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s
                .rsplit_once(") ")?
                .1
                .split_whitespace()
                .collect::<Vec<_>>();
            // Fields 14 and 15 (utime, stime) are 11 and 12 after the state field.
            Some((rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0);
    let rss = super::rss_of(&pid.to_string());
    (cpu, rss)
}

/// Start `atoll server` named `name` on a free port in `dir`; returns the child once it is
/// ready.
pub(super) fn start_server(dir: &Path, name: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args([
            "server",
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    anyhow::ensure!(
        line.contains("ready"),
        "the {name} server did not start: {line}"
    );
    Ok(Child(child))
}

/// A bootstrap kubeconfig for the agents (an hour), and its token's id (whom the hub
/// auto-accepts).
pub(super) async fn bootstrap_token(hub_kubeconfig: &Path) -> anyhow::Result<(String, String)> {
    let boot = crate::registration::token(hub_kubeconfig, Duration::from_secs(3600), None).await?;
    let token_id = boot
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .and_then(|t| t.split('.').next())
        .context("the bootstrap kubeconfig has no token")?
        .to_string();
    Ok((boot, token_id))
}

/// `atoll hub ARGS --kubeconfig K`, once it says its controllers are ready. The rest of what
/// it writes is drained (echoed with ATOLL_BENCH_ECHO_HUB set).
pub(super) fn start_hub(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Child> {
    let mut hub = Child(
        std::process::Command::new(std::env::current_exe()?)
            .arg("hub")
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?,
    );
    let stderr = hub.0.stderr.take().context("hub stderr")?;
    let mut lines = std::io::BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("controllers ready") => break,
            Some(_) => {}
            None => anyhow::bail!("atoll hub exited before it was ready"),
        }
    }
    let echo = std::env::var_os("ATOLL_BENCH_ECHO_HUB").is_some();
    std::thread::spawn(move || {
        for l in lines.by_ref().map_while(Result::ok) {
            if echo {
                eprintln!("hub: {l}");
            }
        }
    });
    Ok(hub)
}

/// CPU seconds and RSS bytes of processes, summed (a hub is a server and its controllers).
pub(super) fn usage_of(pids: &[u32]) -> (f64, u64) {
    pids.iter().fold((0.0, 0u64), |(c, r), p| {
        let (c2, r2) = usage(*p);
        (c + c2, r + r2)
    })
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let say = |s: &str| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    let n = args.clusters.unwrap_or(5_000).max(1);
    let lease = 10;
    say(&format!(
        "atoll bench registration: {n} clusters join one hub (auto-accepted), then {} s of {lease} s leases",
        args.steady_seconds
    ));
    let tmp = tempfile::tempdir()?;
    let hub_dir = tmp.path().join("hub");
    let server = start_server(&hub_dir, "hub")?;
    let hub_kubeconfig = hub_dir.join("admin.kubeconfig");
    let (boot, token_id) = bootstrap_token(&hub_kubeconfig).await?;
    let hub = start_hub(
        &hub_kubeconfig,
        &["--auto-accept", &format!("system:bootstrap:{token_id}")],
    )?;
    let pids = [server.0.id(), hub.0.id()];
    let hub_usage = || usage_of(&pids);
    let (admin, _) = crate::clients::from_path(&hub_kubeconfig).await?;

    // The member every agent reports from, a process of its own (its connections would
    // otherwise count twice against this process's open files).
    let member_dir = tmp.path().join("member");
    let _member = start_server(&member_dir, "member")?;
    let (member_client, _) =
        crate::clients::from_path(&member_dir.join("admin.kubeconfig")).await?;

    // Watch the hub's view: first Available per cluster, and any fall from it.
    let first_available: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let fell: Arc<Mutex<HashSet<String>>> = Arc::default();
    let watch = {
        let (first_available, fell) = (first_available.clone(), fell.clone());
        let mcs: kube::Api<ManagedCluster> = kube::Api::all(admin.clone());
        tokio::spawn(async move {
            let mut stream = watcher(mcs, watcher::Config::default()).boxed();
            while let Ok(Some(ev)) = stream.try_next().await {
                let mc = match ev {
                    watcher::Event::Apply(mc) | watcher::Event::InitApply(mc) => mc,
                    _ => continue,
                };
                let name = mc.name_any();
                let available = mc.is(CONDITION_AVAILABLE);
                let mut first = first_available.lock().unwrap_or_else(|p| p.into_inner());
                if available {
                    first.entry(name).or_insert_with(Instant::now);
                } else if first.contains_key(&name) {
                    fell.lock().unwrap_or_else(|p| p.into_inner()).insert(name);
                }
            }
        })
    };

    say(&format!("starting {n} agents..."));
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut agents = Vec::with_capacity(n + args.late_joins);
    let t0 = Instant::now();
    let (cpu0, _) = hub_usage();
    for i in 0..n {
        let name = format!("c{i:05}");
        let mut cfg = atoll_agent::AgentConfig::new(&name);
        cfg.bootstrap_kubeconfig = Some(boot.clone());
        cfg.lease_seconds = lease;
        cfg.secret_name = format!("hub-kubeconfig-{name}");
        started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), Instant::now());
        let member = member_client.clone();
        agents.push(tokio::spawn(async move {
            if let Err(e) = atoll_agent::run(member, cfg).await {
                tracing::error!(cluster = %name, error = %e, "agent stopped");
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(args.join_timeout);
    let mut last_report = Instant::now();
    loop {
        let done = first_available
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        if done >= n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {n} clusters became Available within {} s",
            args.join_timeout
        );
        if last_report.elapsed() > Duration::from_secs(10) {
            say(&format!(
                "  {done}/{n} Available after {:.0} s",
                t0.elapsed().as_secs_f64()
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_available = t0.elapsed();
    let (cpu_join, rss_join) = hub_usage();
    let latencies: Vec<Duration> = {
        let first = first_available.lock().unwrap_or_else(|p| p.into_inner());
        let started = started.lock().unwrap_or_else(|p| p.into_inner());
        first
            .iter()
            .filter_map(|(name, at)| Some(at.saturating_duration_since(*started.get(name)?)))
            .collect()
    };
    // Each cluster should have asked once: a retry that started over would show here.
    let csrs: kube::Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> =
        kube::Api::all(admin.clone());
    let csr_count = csrs
        .list_metadata(&kube::api::ListParams::default())
        .await?
        .items
        .len();
    let join = Phase {
        name: "join to Available",
        ops: n,
        elapsed: all_available,
        latencies,
    };
    say(&format!(
        "all {n} Available in {:.1} s; steady state for {} s...",
        all_available.as_secs_f64(),
        args.steady_seconds
    ));
    let steady_start = Instant::now();
    let (cpu_s0, _) = hub_usage();
    let mut peak_rss = rss_join;
    while steady_start.elapsed() < Duration::from_secs(args.steady_seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(hub_usage().1);
    }
    let (cpu_s1, rss_end) = hub_usage();
    let steady_cores = (cpu_s1 - cpu_s0) / steady_start.elapsed().as_secs_f64();
    let falsely_unknown = fell.lock().unwrap_or_else(|p| p.into_inner()).len();
    // Clusters arriving one after another on the loaded hub, as they do once a fleet is in
    // place: each join timed from its agent's start to the hub's `Available=True`.
    let rate = if args.late_rate > 0.0 {
        args.late_rate
    } else {
        1.0
    };
    say(&format!(
        "{} more clusters arriving at {rate} per second...",
        args.late_joins
    ));
    let late_start = Instant::now();
    let mut late_started = Vec::new();
    for i in 0..args.late_joins {
        tokio::time::sleep_until((late_start + Duration::from_secs_f64(i as f64 / rate)).into())
            .await;
        let name = format!("late{i:04}");
        let mut cfg = atoll_agent::AgentConfig::new(&name);
        cfg.bootstrap_kubeconfig = Some(boot.clone());
        cfg.lease_seconds = lease;
        cfg.secret_name = format!("hub-kubeconfig-{name}");
        late_started.push((name.clone(), Instant::now()));
        let member = member_client.clone();
        agents.push(tokio::spawn(async move {
            let _ = atoll_agent::run(member, cfg).await;
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let late: Vec<Duration> = loop {
        let first = first_available
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let done: Vec<Duration> = late_started
            .iter()
            .filter_map(|(name, t)| Some(first.get(name)?.saturating_duration_since(*t)))
            .collect();
        if done.len() == late_started.len() {
            break done;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} late clusters became Available within 60 s of the last arrival",
            done.len(),
            late_started.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let late = Phase {
        name: "joins arriving on the loaded hub",
        ops: late.len(),
        elapsed: late_start.elapsed(),
        latencies: late,
    };
    watch.abort();
    // The agents stop before the hub does (they would only report it gone).
    for a in &agents {
        a.abort();
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    let report = json!({
        "clusters": n,
        "lease_seconds": lease,
        "all_available_seconds": all_available.as_secs_f64(),
        "join_to_available": join.json(),
        "hub_cpu_seconds_during_join": cpu_join - cpu0,
        "csrs_after_join": csr_count,
        "steady_seconds": args.steady_seconds,
        "hub_cores_steady": steady_cores,
        "hub_rss_mib_after_join": mib(rss_join),
        "hub_rss_mib_peak": mib(peak_rss),
        "hub_rss_mib_end": mib(rss_end),
        "falsely_unknown": falsely_unknown,
        "late_join_rate": rate,
        "joins_arriving_on_loaded_hub": late.json(),
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{n} clusters, {lease} s leases; hub = `atoll server` + `atoll hub` processes on this {}-core machine",
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    println!(
        "{n} joining at once: all Available in {:.1} s ({:.0} clusters/s); join-to-Available p50 {:.0} ms, p99 {:.0} ms, queueing included (Karmada's test: 100 clusters, registration p99 6.9 s)",
        all_available.as_secs_f64(),
        n as f64 / all_available.as_secs_f64(),
        join.pct(0.5),
        join.pct(0.99)
    );
    println!("CSRs on the hub after the join: {csr_count} for {n} clusters (goal: one each)");
    println!(
        "steady state: hub CPU {:.2} cores; hub RSS {:.0} MiB (peak {:.0} MiB) (goal: under 2 GiB; ACM: 3,500 clusters on ~100 cores and 500 GB)",
        steady_cores,
        mib(rss_end),
        mib(peak_rss)
    );
    println!(
        "clusters arriving at {rate}/s on the hub holding {n}: join-to-Available p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} joins (goal: p99 under 1 s)",
        late.pct(0.5),
        late.pct(0.99),
        late.pct(1.0),
        late.ops
    );
    println!("falsely Unknown: {falsely_unknown} (goal: 0)");
    drop(hub);
    drop(server);
    Ok(())
}
