//! `atoll gateway`: outside traffic to the Services a cluster set exports, as the hub's
//! MultiClusterIngresses route it; and `atoll get ingresses`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use atoll_api::ingress::{CONDITION_BACKENDS_READY, CONDITION_PROGRAMMED, MultiClusterIngress};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

#[derive(clap::Args)]
pub struct GatewayArgs {
    /// The hub's kubeconfig (with --east-west: the member's); without it, the pod's own
    /// service account (in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Plain HTTP (HTTP/1.1, and HTTP/2 by prior knowledge); `off` for none. Port 0 picks one.
    /// With --east-west: the mutual-TLS tunnel port (default 127.0.0.1:7443).
    #[arg(long)]
    listen: Option<String>,
    /// HTTPS with the certificates the ingresses' `tls` entries name (SNI).
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// Serve /metrics and /healthz over HTTP here.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Data-plane threads (each accepts and serves connections on its own).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Access log: `-` for stdout, a file, or `off`.
    #[arg(long, default_value = "-")]
    access_log: String,
    /// Largest request line and headers, in bytes (431 beyond).
    #[arg(long, default_value_t = 32 * 1024)]
    max_header_bytes: usize,
    /// Largest request body, in bytes (413 beyond).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: u64,
    /// Seconds a client has to send a request's headers.
    #[arg(long, default_value_t = 10)]
    header_timeout_seconds: u64,
    /// Lease durations without a renewal after which a cluster takes no traffic.
    #[arg(long, default_value_t = 2.0)]
    grace_periods: f64,
    /// Seconds between health checks of each endpoint.
    #[arg(long, default_value_t = 2.0)]
    health_interval_seconds: f64,
    /// The address the ingresses' status gives (default: the listening one).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Run as the member's east-west gateway: other members' Service proxies reach this
    /// cluster's exported endpoints through it (mutual TLS with the clusters' hub identities).
    /// --kubeconfig is then the member's.
    #[arg(long)]
    east_west: bool,
    /// With --east-west: the Secret (`namespace/name`) where the agent keeps the cluster's hub
    /// identity.
    #[arg(long, default_value = "atoll-agent/hub-kubeconfig")]
    identity_secret: String,
}

/// `--access-log`: `-` for stdout, `off`, or a file.
fn access_log(arg: &str) -> atoll_gateway::AccessLog {
    match arg {
        "off" => atoll_gateway::AccessLog::Off,
        "-" => atoll_gateway::AccessLog::Stdout,
        path => atoll_gateway::AccessLog::File(path.into()),
    }
}

async fn east_west(args: GatewayArgs) -> anyhow::Result<()> {
    let listen = args.listen.as_deref().unwrap_or("127.0.0.1:7443");
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not an address such as 127.0.0.1:7443"))?;
    let (secret_namespace, secret_name) =
        args.identity_secret.split_once('/').with_context(|| {
            format!(
                "--identity-secret {:?} is not namespace/name",
                args.identity_secret
            )
        })?;
    if args.tls_listen.is_some() || args.metrics_listen.is_some() {
        bail!("--tls-listen and --metrics-listen are for the north-south gateway, not --east-west");
    }
    let client = match &args.kubeconfig {
        Some(path) => crate::clients::from_path(path).await?.0,
        None => crate::clients::in_cluster()?.0,
    };
    let access_log = access_log(&args.access_log);
    let opts = atoll_gateway::eastwest::EastWestOptions {
        listen,
        secret_namespace: secret_namespace.into(),
        secret_name: secret_name.into(),
        access_log,
        ..Default::default()
    };
    let running = atoll_gateway::eastwest::start(client, opts)
        .await
        .context("cannot start the east-west gateway")?;
    println!(
        "atoll gateway (east-west) of cluster {} ready on {}",
        running.cluster, running.addr
    );
    crate::clients::terminated().await;
    Ok(())
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    if args.east_west {
        return east_west(args).await;
    }
    anyhow::ensure!(
        args.health_interval_seconds > 0.0 && args.health_interval_seconds.is_finite(),
        "--health-interval-seconds must be a positive number"
    );
    let client = match &args.kubeconfig {
        Some(path) => crate::clients::from_path(path).await?.0,
        None => crate::clients::in_cluster()?.0,
    };
    let listen = match args.listen.as_deref().unwrap_or("127.0.0.1:8080") {
        "off" => None,
        s => Some(s.parse::<SocketAddr>().with_context(|| {
            format!("--listen {s:?} is not an address such as 127.0.0.1:8080 (or off)")
        })?),
    };
    anyhow::ensure!(
        listen.is_some() || args.tls_listen.is_some(),
        "nothing to listen on: give --listen or --tls-listen"
    );
    let access_log = access_log(&args.access_log);
    let opts = atoll_gateway::Options {
        listen,
        tls_listen: args.tls_listen,
        metrics_listen: args.metrics_listen,
        threads: args.threads,
        limits: atoll_gateway::Limits {
            max_header_bytes: args.max_header_bytes,
            max_body_bytes: args.max_body_bytes,
            header_timeout: Duration::from_secs(args.header_timeout_seconds.max(1)),
            ..Default::default()
        },
        access_log,
        grace_periods: args.grace_periods,
        health_interval: Duration::from_secs_f64(args.health_interval_seconds),
        advertise: args.advertise_address,
        write_status: true,
    };
    let running = atoll_gateway::start(client, opts)
        .await
        .context("cannot start the gateway")?;
    let mut on = Vec::new();
    if let Some(a) = running.addr {
        on.push(format!("http://{a}"));
    }
    if let Some(a) = running.tls_addr {
        on.push(format!("https://{a}"));
    }
    if let Some(a) = running.metrics_addr {
        on.push(format!("metrics on http://{a}/metrics"));
    }
    println!("atoll gateway ready on {}", on.join(", "));
    crate::clients::terminated().await;
    Ok(())
}

/// `atoll get ingresses`: each ingress's hosts and paths, their backends and the ready
/// endpoints per cluster the gateway found.
pub async fn get_ingresses(client: &Client, namespace: Option<&str>) -> anyhow::Result<()> {
    let api: Api<MultiClusterIngress> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "this cluster serves no MultiClusterIngresses (networking.atoll.io): is it a hub? `atoll hub` installs them"
        ),
        other => other.context("cannot list the MultiClusterIngresses")?,
    };
    let mut rows = vec![
        [
            "NAMESPACE",
            "NAME",
            "HOST",
            "PATH",
            "BACKEND",
            "READY",
            "STATUS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for mci in &list.items {
        let status = mci.status.clone().unwrap_or_default();
        let ready: BTreeMap<(String, String), String> = status
            .backends
            .iter()
            .map(|b| {
                let per: Vec<String> = b
                    .clusters
                    .iter()
                    .map(|c| format!("{}={}", c.cluster, c.ready))
                    .collect();
                (
                    (b.service.clone(), b.port.clone()),
                    if per.is_empty() {
                        "none".into()
                    } else {
                        per.join(",")
                    },
                )
            })
            .collect();
        let state = {
            let c = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
            match (c(CONDITION_PROGRAMMED), c(CONDITION_BACKENDS_READY)) {
                (None, _) => "not served by a gateway yet".to_string(),
                (Some(p), b) => {
                    let mut s = p.reason.clone();
                    if let Some(b) = b.filter(|b| b.status != "True") {
                        s = format!("{s},{}", b.reason);
                    }
                    s
                }
            }
        };
        let backend_of = |b: &k8s_openapi::api::networking::v1::IngressBackend| {
            let Some(svc) = &b.service else {
                return ("(resource)".to_string(), "-".to_string());
            };
            let port = svc
                .port
                .as_ref()
                .map(|p| match (&p.number, &p.name) {
                    (Some(n), _) => n.to_string(),
                    (None, Some(n)) => n.clone(),
                    _ => String::new(),
                })
                .unwrap_or_default();
            let r = ready
                .get(&(svc.name.clone(), port.clone()))
                .cloned()
                .unwrap_or_else(|| "-".into());
            (format!("{}:{port}", svc.name), r)
        };
        let (ns, name) = (mci.namespace().unwrap_or_default(), mci.name_any());
        for rule in mci.spec.rules.iter().flatten() {
            let host = rule.host.clone().unwrap_or_else(|| "*".into());
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let (backend, r) = backend_of(&p.backend);
                let path = format!("{} ({})", p.path.as_deref().unwrap_or("/"), p.path_type);
                rows.push(vec![
                    ns.clone(),
                    name.clone(),
                    host.clone(),
                    path,
                    backend,
                    r,
                    state.clone(),
                ]);
            }
        }
        if let Some(b) = &mci.spec.default_backend {
            let (backend, r) = backend_of(b);
            rows.push(vec![
                ns.clone(),
                name.clone(),
                "(default)".into(),
                "-".into(),
                backend,
                r,
                state.clone(),
            ]);
        }
    }
    if rows.len() == 1 {
        println!("No MultiClusterIngresses.");
    } else {
        crate::output::print_table(&rows);
    }
    Ok(())
}
