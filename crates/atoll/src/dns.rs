//! `atoll dns`: the cluster DNS on its own, for any cluster (a real one too), read-only: it
//! needs only list and watch on Services, EndpointSlices and Pods (the `system:kube-dns`
//! ClusterRole).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args)]
pub struct DnsArgs {
    /// Kubeconfig of the cluster to serve; without it, the pod's own service account
    /// (in-cluster, as a Deployment of it runs).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current one).
    #[arg(long, requires = "kubeconfig")]
    context: Option<String>,
    /// Address for UDP and TCP (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:53")]
    listen: SocketAddr,
    /// The cluster's zone.
    #[arg(long, default_value = "cluster.local")]
    zone: String,
    /// Multi-cluster services' zone (`off`: not served).
    #[arg(long, default_value = "clusterset.local")]
    clusterset_zone: String,
    /// Resolvers for other names (repeatable); default: the nameservers of /etc/resolv.conf.
    #[arg(long = "upstream")]
    upstreams: Vec<SocketAddr>,
    /// Serve /metrics and /healthz over HTTP here.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Threads answering UDP queries.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Publish this cluster and the ForeignClusters it knows under this domain, for peers'
    /// discovery over DNS (PTR, SRV, TXT and address records, as `atoll peer zone` prints).
    #[arg(long)]
    peering_domain: Option<String>,
}

pub async fn run(args: DnsArgs) -> anyhow::Result<()> {
    let client = match &args.kubeconfig {
        Some(path) => {
            crate::clients::from_flags(Some(path), args.context.as_deref())
                .await?
                .0
        }
        None => crate::clients::in_cluster()?.0,
    };
    let opts = atoll_dns::Options {
        listen: args.listen,
        zone: args.zone.clone(),
        clusterset_zone: (args.clusterset_zone != "off").then(|| args.clusterset_zone.clone()),
        upstreams: (!args.upstreams.is_empty()).then(|| args.upstreams.clone()),
        ns_addresses: vec![],
        metrics_listen: args.metrics_listen,
        udp_threads: args.threads,
        peering_domain: args.peering_domain.clone(),
    };
    let running = atoll_dns::start(client, opts, Duration::from_secs(60))
        .await
        .context("cannot start the DNS server")?;
    let metrics = running
        .metrics_addr
        .map(|a| format!(", metrics on http://{a}/metrics"))
        .unwrap_or_default();
    let peering = args
        .peering_domain
        .as_ref()
        .map(|d| format!(", peering domain {d}"))
        .unwrap_or_default();
    println!(
        "atoll dns ready on {} (zone {}{peering}{metrics})",
        running.addr, args.zone
    );
    crate::clients::terminated().await;
    Ok(())
}
