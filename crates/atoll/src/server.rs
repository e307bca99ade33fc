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
        ..Default::default()
    };
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
