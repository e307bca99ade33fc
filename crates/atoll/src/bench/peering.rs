//! `atoll bench peering`: `dev up --clusters 2` on the simulated runtime (20 nodes each);
//! member1 peers with member2. Measured: `atoll peer add` to the virtual node Ready; N pods of
//! one Deployment to Running on member2 itself (the reference) and then offloaded from member1
//! to member2 (Liqo's method: vanilla Kubernetes on the provider against offloading), same run;
//! and, for each offloaded pod, the time from its copy Running in member2 to its status Running
//! in member1 (reflection latency), both seen by watches of this process.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;

use super::BenchArgs;

/// The `dev` environment, brought down when dropped.
struct Env(std::path::PathBuf);

impl Drop for Env {
    fn drop(&mut self) {
        let _ = atoll(&["dev", "down", "--data-dir", &self.0.display().to_string()]);
    }
}

fn atoll(args: &[&str]) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe).args(args).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("atoll {args:?} failed: {text}");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn deployment(name: &str, ns: &str, replicas: usize) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}}})
}

/// When each pod of `ns` was first seen Running, by name.
fn running_times(
    client: kube::Client,
    ns: &str,
) -> (
    Arc<Mutex<HashMap<String, Instant>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let api: Api<Pod> = Api::namespaced(client, ns);
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default());
        futures::pin_mut!(stream);
        while let Some(e) = stream.next().await {
            let pods = match e {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => vec![p],
                _ => continue,
            };
            for p in pods {
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    out.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        }
    });
    (seen, task)
}

async fn until_count(
    seen: &Mutex<HashMap<String, Instant>>,
    n: usize,
    secs: u64,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = Instant::now();
    loop {
        let c = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
        if c >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {secs} s waiting for {what} ({c} of {n})");
        }
        if last.elapsed() > Duration::from_secs(10) {
            eprintln!("  {what}: {c} of {n}");
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let n = if args.pods == 10_000 { 1000 } else { args.pods };
    let say = |s: &str| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    say(&format!(
        "atoll bench peering: dev up --clusters 2 (simulated runtime, 20 nodes each), {n} pods local and offloaded"
    ));
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("dev");
    let dir_s = dir.display().to_string();
    atoll(&[
        "dev",
        "up",
        "--clusters",
        "2",
        "--runtime",
        "simulated",
        "--nodes",
        "20",
        "--data-dir",
        &dir_s,
    ])?;
    let _env = Env(dir.clone());
    let kubeconfig = dir.join("kubeconfig");
    let kc = kubeconfig.display().to_string();
    let m1 = crate::clients::from_flags(Some(&kubeconfig), Some("member1"))
        .await?
        .0;
    let m2 = crate::clients::from_flags(Some(&kubeconfig), Some("member2"))
        .await?
        .0;

    // Peering: `peer add` to the virtual node Ready.
    let line = atoll(&["peer", "token", "--kubeconfig", &kc, "--context", "member2"])?;
    let mut words: Vec<String> = line.split_whitespace().skip(1).map(String::from).collect();
    words.extend([
        "--kubeconfig".to_string(),
        kc.clone(),
        "--context".into(),
        "member1".into(),
    ]);
    let request = [
        "peer",
        "request",
        "member2",
        "--kubeconfig",
        &kc,
        "--context",
        "member1",
        "--cpu",
        "4",
        "--memory",
        "4Gi",
        "--pods",
        &n.to_string(),
    ];
    let started = Instant::now();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    atoll(&words)?;
    atoll(&request)?;
    let nodes: Api<Node> = Api::all(m1.clone());
    let peering_ms = loop {
        if let Ok(Some(node)) = nodes.get_opt("atoll-member2").await
            && node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        {
            break started.elapsed().as_secs_f64() * 1000.0;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the virtual node is not Ready after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    say(&format!(
        "  peered: virtual node Ready {peering_ms:.0} ms after `atoll peer add`"
    ));

    let pp = PatchParams::apply("atoll-bench").force();
    let ns =
        |name: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    // The reference: the same Deployment on member2 itself.
    Api::<k8s_openapi::api::core::v1::Namespace>::all(m2.clone())
        .patch("local", &pp, &Patch::Apply(&ns("local")))
        .await?;
    let (local_seen, local_task) = running_times(m2.clone(), "local");
    let t0 = Instant::now();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(m2.clone(), "local")
        .patch(
            "local",
            &pp,
            &Patch::Apply(&deployment("local", "local", n)),
        )
        .await?;
    until_count(&local_seen, n, 600, "local pods Running").await?;
    let local_s = t0.elapsed().as_secs_f64();
    local_task.abort();
    say(&format!(
        "  {n} pods on member2 itself: Running in {local_s:.1} s"
    ));
    // The reference's pods go before the offloaded ones start: member2 terminating a
    // thousand pods would slow what is measured next.
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(m2.clone());
    namespaces.delete("local", &DeleteParams::default()).await?;
    let gone_by = Instant::now() + Duration::from_secs(120);
    while namespaces.get_opt("local").await?.is_some() {
        if Instant::now() > gone_by {
            bail!("namespace local of member2 is not gone after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Offloaded: member1's namespace `bench`, all its pods on the virtual node.
    Api::<k8s_openapi::api::core::v1::Namespace>::all(m1.clone())
        .patch("bench", &pp, &Patch::Apply(&ns("bench")))
        .await?;
    atoll(&[
        "peer",
        "offload",
        "bench",
        "--strategy",
        "Remote",
        "--kubeconfig",
        &kc,
        "--context",
        "member1",
    ])?;
    let offloadings: Api<atoll_api::peering::NamespaceOffloading> =
        Api::namespaced(m1.clone(), "bench");
    let ready_at = Instant::now();
    loop {
        let ready = offloadings
            .get_opt("offloading")
            .await?
            .and_then(|o| o.status)
            .is_some_and(|s| s.offloading_phase == "Ready");
        let labelled = Api::<k8s_openapi::api::core::v1::Namespace>::all(m1.clone())
            .get("bench")
            .await?
            .metadata
            .labels
            .is_some_and(|l| l.contains_key(atoll_peering::webhook::STRATEGY_LABEL));
        if ready && labelled {
            break;
        }
        if ready_at.elapsed() > Duration::from_secs(30) {
            bail!("namespace bench is not offloaded after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (remote_seen, remote_task) = running_times(m2.clone(), "bench-member1");
    let (offload_seen, offload_task) = running_times(m1.clone(), "bench");
    let t0 = Instant::now();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(m1.clone(), "bench")
        .patch(
            "bench",
            &pp,
            &Patch::Apply(&deployment("bench", "bench", n)),
        )
        .await?;
    until_count(&offload_seen, n, 900, "offloaded pods Running").await?;
    let offload_s = t0.elapsed().as_secs_f64();
    remote_task.abort();
    offload_task.abort();
    let remote = remote_seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let local = offload_seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut lag: Vec<f64> = local
        .iter()
        .filter_map(|(name, at)| {
            Some(
                at.saturating_duration_since(*remote.get(name)?)
                    .as_secs_f64()
                    * 1000.0,
            )
        })
        .collect();
    let samples = lag.len();
    let (p50, p99) = (pct(&mut lag, 0.5), pct(&mut lag, 0.99));
    let ratio = offload_s / local_s;
    if args.json {
        println!(
            "{}",
            json!({
                "pods": n, "peering_ms": peering_ms,
                "local_seconds": local_s, "offloaded_seconds": offload_s, "ratio": ratio,
                "reflection_ms": {"samples": samples, "p50": p50, "p99": p99},
            })
        );
    } else {
        println!("atoll bench peering ({n} pods, simulated runtime, 20 nodes per cluster)");
        println!(
            "  peer add -> virtual node Ready:        {peering_ms:>8.0} ms   (goal < 2000 ms)"
        );
        println!("  {n} pods Running on the provider itself: {local_s:>8.1} s    (reference)");
        println!(
            "  {n} pods Running offloaded to it:        {offload_s:>8.1} s    ({ratio:.2}x the reference; goal <= 1.5x)"
        );
        println!(
            "  status reflection (copy Running -> pod Running): p50 {p50:.0} ms, p99 {p99:.0} ms over {samples} pods (goal p99 < 200 ms)"
        );
    }
    Ok(())
}
