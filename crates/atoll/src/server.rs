//! `atoll server`: the embedded Kubernetes-compatible API server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use atoll_apiserver::{ApiServer, Config, Pki};
use atoll_store::{BackendKind, Options, Store};

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Where the database, the PKI and admin.kubeconfig live.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to serve HTTPS on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Storage backend: redb (durable, the default) or memory (nothing survives).
    #[arg(long, default_value = "redb")]
    storage: String,
    /// Name of this cluster (kubeconfig cluster and context name).
    #[arg(long, default_value = "atoll")]
    name: String,
    /// Range Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: String,
    /// Static bearer tokens, one `token,user,uid,"group1,group2"` per line.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Append one JSON line per request (user, verb, resource, code) to this file.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Also run the cluster runtime's scheduler and controllers (ReplicaSet, Deployment,
    /// EndpointSlice, default ServiceAccount, node lifecycle) against this server.
    #[arg(long)]
    controllers: bool,
    /// With --controllers: the range node pod CIDRs (/24 each) come from, in 127.0.0.0/8.
    #[arg(long, default_value = "127.16.0.0/16")]
    cluster_cidr: String,
    /// With --controllers: how long pods stay on an unreachable node when they do not say.
    #[arg(long, default_value_t = 300)]
    default_toleration_seconds: i64,
    /// The longest life, in seconds, of a certificate the built-in CSR signer issues (as
    /// kube-controller-manager's --cluster-signing-duration); default one year.
    #[arg(long, default_value_t = 365 * 86_400)]
    cluster_signing_duration: i64,
    /// With --controllers: where the cluster DNS listens (UDP and TCP), or `off`. Default:
    /// the tenth address of --service-cidr (kube-dns's ClusterIP, as kubeadm has it) when it
    /// is a loopback address, else 127.0.0.1; port 53 when run as root, else a free port.
    #[arg(long)]
    dns_listen: Option<String>,
    /// With --controllers: the cluster's DNS zone.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let backend = match args.storage.as_str() {
        "redb" => BackendKind::Redb(args.data_dir.join("store.redb")),
        "memory" => BackendKind::Memory,
        other if other.starts_with("etcd://") => {
            bail!("--storage {other}: the etcd backend is not built yet; use redb or memory")
        }
        other => bail!("--storage {other}: must be redb or memory"),
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen on {}: the address is already in use (pick another with --listen)", args.listen)
        } else {
            anyhow::anyhow!("cannot listen on {}: {e}", args.listen)
        }
    })?;
    let addr = listener.local_addr()?;
    let store = Store::open(backend, Options::default()).context("cannot open the store")?;
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ip = addr.ip().to_string();
    if !hosts.contains(&ip) && !addr.ip().is_unspecified() {
        hosts.push(ip);
    }
    // In-cluster clients reach the server as the `kubernetes` Service (its ClusterIP, the
    // range's first address, is KUBERNETES_SERVICE_HOST in every pod) and by its names.
    if let Some(first) = nth_address(&args.service_cidr, 1) {
        hosts.push(first.to_string());
    }
    for name in [
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{}", args.cluster_domain),
    ] {
        hosts.push(name);
    }
    let pki = Pki::load_or_create(&args.data_dir.join("pki"), &hosts)
        .context("cannot set up the cluster PKI")?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let url = match addr {
        SocketAddr::V6(_) if !addr.ip().is_unspecified() => {
            format!("https://[{host}]:{}", addr.port())
        }
        _ => format!("https://{host}:{}", addr.port()),
    };
    let static_tokens = match &args.token_auth_file {
        Some(p) => atoll_apiserver::authn::StaticTokens::load(p)
            .map_err(|e| anyhow::anyhow!("--token-auth-file: {e}"))?,
        None => Default::default(),
    };
    let signer = atoll_apiserver::authn::TokenSigner::load_or_create(
        &args.data_dir.join("pki").join("sa.key"),
    )
    .map_err(|e| anyhow::anyhow!("service-account signing key: {e}"))?;
    let pki = std::sync::Arc::new(pki);
    let config = Config {
        audit_log: args.audit_log.clone(),
        ca: Some(pki.clone()),
        token_signer: Some(std::sync::Arc::new(signer)),
        static_tokens,
        name: args.name.clone(),
        service_cidr: args.service_cidr.clone(),
        max_certificate_seconds: args.cluster_signing_duration.max(1),
        advertise_address: format!("{host}:{}", addr.port()),
        ..Config::default()
    };
    let server = ApiServer::start(store, config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the API server: {e}"))?;
    let kubeconfig = pki
        .kubeconfig(
            &url,
            &args.name,
            "atoll:admin",
            &["system:masters".to_string()],
        )
        .context("cannot issue the admin certificate")?;
    let kubeconfig_path = args.data_dir.join("admin.kubeconfig");
    atoll_apiserver::tls::write_private(&kubeconfig_path, &kubeconfig)?;
    let tls = pki.server_config()?;
    println!(
        "atoll server {} ready on {url} (kubeconfig: {})",
        args.name,
        kubeconfig_path.display()
    );
    let serving = atoll_apiserver::tls::serve(listener, tls, server.router());
    if args.controllers {
        start_controllers(&pki, &url, &args).await?;
    }
    tokio::select! {
        _ = serving => Ok(()),
        _ = crate::clients::terminated() => Ok(()),
    }
}

/// The scheduler and the controllers, each as its own identity over the same HTTPS API any
/// client uses (never reaching into the store).
async fn start_controllers(pki: &Pki, url: &str, args: &ServerArgs) -> anyhow::Result<()> {
    let identity =
        |user: &str| -> anyhow::Result<String> { Ok(pki.kubeconfig(url, &args.name, user, &[])?) };
    let (scheduler, _) = crate::clients::from_yaml(&identity("system:kube-scheduler")?).await?;
    let (controllers, _) =
        crate::clients::from_yaml(&identity("system:kube-controller-manager")?).await?;
    let cfg = atoll_cluster::controllers::ControllerConfig {
        cluster_cidr: args.cluster_cidr.clone(),
        default_toleration_seconds: args.default_toleration_seconds,
        root_ca: Some(pki.ca_pem.clone()),
        ..Default::default()
    };
    if args.dns_listen.as_deref() != Some("off") {
        // In the background: the DNS lists from this very server, which serves once this
        // function has returned.
        let dns = dns_setup(pki, url, args)?;
        tokio::spawn(async move {
            if let Err(e) = start_dns(dns).await {
                tracing::error!(error = %format!("{e:#}"), "the cluster DNS did not start");
                eprintln!("error: the cluster DNS did not start: {e:#}");
            }
        });
    }
    tokio::spawn(async move {
        if let Err(e) = atoll_cluster::scheduler::run(scheduler).await {
            tracing::error!(error = %e, "the scheduler stopped");
        }
    });
    tokio::spawn(async move {
        if let Err(e) = atoll_cluster::controllers::run(controllers, cfg).await {
            tracing::error!(error = %e, "the controllers stopped");
        }
    });
    Ok(())
}

/// The tenth address of a range (`10.96.0.0/12` -> `10.96.0.10`).
/// The `n`th address (n < 16) of an IPv4 range of /28 or more.
fn nth_address(cidr: &str, n: u32) -> Option<std::net::Ipv4Addr> {
    let (ip, bits) = cidr.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let bits: u32 = bits.parse().ok().filter(|b| *b <= 28)?;
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    Some(std::net::Ipv4Addr::from((u32::from(ip) & mask) + n))
}

struct DnsSetup {
    listen: SocketAddr,
    tenth: std::net::Ipv4Addr,
    zone: String,
    cluster: String,
    dns_kubeconfig: String,
    admin_kubeconfig: String,
}

fn dns_setup(pki: &Pki, url: &str, args: &ServerArgs) -> anyhow::Result<DnsSetup> {
    let tenth = nth_address(&args.service_cidr, 10).with_context(|| {
        format!(
            "--service-cidr {}: not an IPv4 range of /28 or more",
            args.service_cidr
        )
    })?;
    let listen: SocketAddr = match args.dns_listen.as_deref() {
        Some(a) => a
            .parse()
            .with_context(|| format!("--dns-listen {a}: not ADDRESS:PORT or `off`"))?,
        None => {
            let ip = if tenth.is_loopback() {
                tenth
            } else {
                std::net::Ipv4Addr::LOCALHOST
            };
            let port = if rustix::process::geteuid().is_root() {
                53
            } else {
                0
            };
            SocketAddr::from((ip, port))
        }
    };
    Ok(DnsSetup {
        listen,
        tenth,
        zone: args.cluster_domain.clone(),
        cluster: args.name.clone(),
        dns_kubeconfig: pki.kubeconfig(url, &args.name, "system:kube-dns", &[])?,
        admin_kubeconfig: pki.kubeconfig(
            url,
            &args.name,
            "atoll:admin",
            &["system:masters".to_string()],
        )?,
    })
}

/// The cluster DNS, as identity `system:kube-dns` (list and watch of what it serves), and
/// Service `kube-system/kube-dns` at the range's tenth address saying where it listens.
async fn start_dns(setup: DnsSetup) -> anyhow::Result<()> {
    let DnsSetup {
        listen,
        tenth,
        zone,
        cluster,
        dns_kubeconfig,
        admin_kubeconfig,
    } = setup;
    let (dns_client, _) = crate::clients::from_yaml(&dns_kubeconfig).await?;
    let opts = atoll_dns::Options {
        listen,
        zone: zone.clone(),
        ns_addresses: vec![std::net::IpAddr::V4(tenth)],
        ..Default::default()
    };
    let running = atoll_dns::start(dns_client, opts, std::time::Duration::from_secs(60))
        .await
        .context("cannot start the cluster DNS")?;
    let addr = running.addr;
    let (admin, _) = crate::clients::from_yaml(&admin_kubeconfig).await?;
    let svc = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": "kube-dns", "namespace": "kube-system",
            "labels": {
                "k8s-app": "kube-dns", "kubernetes.io/name": "atoll-dns",
                // Our Service proxy leaves it alone: the DNS listens at the address itself.
                "service.kubernetes.io/service-proxy-name": "atoll-dns",
            },
            "annotations": {"dns.atoll.io/listen": addr.to_string()},
        },
        "spec": {
            "clusterIP": tenth.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": addr.port()},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": addr.port()},
            ],
        },
    });
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(admin, "kube-system");
    api.patch(
        "kube-dns",
        &kube::api::PatchParams::apply("atoll-dns").force(),
        &kube::api::Patch::Apply(&svc),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot publish Service kube-system/kube-dns: {}",
            crate::clients::api_message(&e)
        )
    })?;
    // Whoever started the server may have stopped reading its output after "ready".
    use std::io::Write;
    let _ = writeln!(
        std::io::stdout(),
        "atoll server {cluster}: cluster DNS ({zone}) on {addr}, Service kube-system/kube-dns {tenth}"
    );
    // It serves for the life of the process: this task holds it.
    std::future::pending::<()>().await;
    drop(running);
    Ok(())
}
