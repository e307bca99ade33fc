//! `atoll node`: run a node agent (Atoll's kubelet) against a cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use atoll_cluster::node::{NodeConfig, Runtime};

#[derive(clap::Args)]
pub struct NodeArgs {
    /// Kubeconfig of the cluster to join (a `system:node:NAME` identity in `system:nodes`).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The node's name.
    #[arg(long)]
    name: String,
    /// `process` runs containers' commands as local processes; `simulated` only pretends.
    #[arg(long, default_value = "process")]
    runtime: String,
    /// Where pod directories (volumes, logs) live, for the process runtime.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// CPU capacity (default: this machine's CPUs).
    #[arg(long)]
    cpu: Option<String>,
    /// Memory capacity (default: this machine's memory).
    #[arg(long)]
    memory: Option<String>,
    /// Most pods on the node.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Node lease duration in seconds (renewed every quarter of it).
    #[arg(long, default_value_t = 40)]
    lease_seconds: i32,
    /// A fixed pod CIDR; by default the node-lifecycle controller assigns one.
    #[arg(long)]
    pod_cidr: Option<String>,
    /// Extra node labels, `key=value`, repeatable.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The DNS server pods resolve with (default: the ClusterIP of Service kube-system/kube-dns).
    #[arg(long)]
    cluster_dns: Option<String>,
    /// The cluster's DNS zone, for pods' search domains.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Run this many simulated nodes, named NAME-1..NAME-N, in this one process.
    #[arg(long, default_value_t = 1)]
    count: u32,
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let (client, config) = crate::clients::from_path(&args.kubeconfig).await?;
    let runtime = match args.runtime.as_str() {
        "process" => {
            let root = args
                .data_dir
                .clone()
                .context("--runtime process needs --data-dir for its pod directories")?;
            Runtime::Process { root }
        }
        "simulated" => Runtime::Simulated,
        other => anyhow::bail!("--runtime {other}: must be process or simulated"),
    };
    anyhow::ensure!(
        args.count == 1 || matches!(runtime, Runtime::Simulated),
        "--count is for simulated nodes"
    );
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--label {l}: expected key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let mut nodes = Vec::new();
    for i in 1..=args.count {
        let name = if args.count == 1 {
            args.name.clone()
        } else {
            format!("{}-{i}", args.name)
        };
        let mut cfg = NodeConfig::from_machine(&name, runtime.clone());
        if let Some(c) = &args.cpu {
            cfg.cpu = c.clone();
        }
        if let Some(m) = &args.memory {
            cfg.memory = m.clone();
        }
        cfg.pods = args.pods;
        cfg.lease_seconds = args.lease_seconds;
        cfg.pod_cidr = args.pod_cidr.clone();
        cfg.labels = labels.clone();
        cfg.cluster_ca = config.root_cert.clone().unwrap_or_default();
        cfg.cluster_dns = args.cluster_dns.clone();
        cfg.cluster_domain = args.cluster_domain.clone();
        nodes.push(cfg);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for cfg in nodes {
        let client = client.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let name = cfg.name.clone();
            let result = atoll_cluster::node::run(client, cfg, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
            if let Err(e) = &result {
                eprintln!("error: node {name}: {e}");
            }
            result
        }));
    }
    println!("atoll node {} ready", args.name);
    crate::clients::terminated().await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
