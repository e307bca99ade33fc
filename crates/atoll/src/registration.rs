//! Registration commands: `atoll hub` (the hub's controllers) and `atoll hub token`,
//! `atoll agent` / `atoll join` (the member agent), `atoll accept` / `atoll deny`,
//! `atoll get clusters`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use atoll_api::cluster::{
    BOOTSTRAP_GROUP, CONDITION_AVAILABLE, CONDITION_JOINED, CSR_CLUSTER_LABEL, ManagedCluster,
    SyncMode,
};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HubArgs {
    #[command(subcommand)]
    command: Option<HubCommand>,
    /// Kubeconfig of the hub cluster.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Bootstrap users (`system:bootstrap:<token-id>`) whose clusters are accepted without
    /// `atoll accept`; repeatable.
    #[arg(long)]
    auto_accept: Vec<String>,
    /// Serve the acceptance webhook (only those allowed to `update` `managedclusters/accept`
    /// may set hubAcceptsClient) on this address, e.g. 127.0.0.1:0 next to an embedded hub.
    #[arg(long)]
    webhook_listen: Option<std::net::SocketAddr>,
    /// The host name or address the API server reaches the webhook at (default: the listen
    /// address).
    #[arg(long)]
    webhook_host: Option<String>,
    /// Where multi-cluster services' ClusterSetIPs come from (IPv4; loopback by default, so
    /// the embedded clusters' Service proxies listen on them).
    #[arg(long, default_value = "127.0.64.0/18")]
    clusterset_ip_range: String,
    /// Lease durations a member may miss before its multi-cluster services' endpoints are
    /// withdrawn from every member (restored when it renews).
    #[arg(long, default_value_t = 2.0)]
    service_endpoint_grace: f64,
}

#[derive(clap::Subcommand)]
enum HubCommand {
    /// Print a bootstrap kubeconfig for joining one cluster (a bootstrap token with a TTL).
    Token {
        /// Kubeconfig of the hub cluster (an identity that may create Secrets in kube-system).
        #[arg(long)]
        kubeconfig: PathBuf,
        /// How long the token is valid, e.g. 30m, 1h, 24h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The cluster set the joining cluster lands in (default: `default`); minting needs
        /// `create` on `managedclustersets/join` for it.
        #[arg(long)]
        clusterset: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The name this cluster has on the hub.
    #[arg(long)]
    cluster_name: String,
    /// Kubeconfig of this (member) cluster.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Bootstrap kubeconfig for the hub (`atoll hub token`); needed until the cluster has its
    /// own identity.
    #[arg(long, alias = "hub-kubeconfig")]
    bootstrap_kubeconfig: Option<PathBuf>,
    /// How the cluster gets its work: Pull (the agent fetches it) or Push (the hub writes it).
    #[arg(long, default_value = "Pull")]
    sync_mode: String,
    /// Lease period, e.g. 10s or 1m (the ManagedCluster's leaseDurationSeconds).
    #[arg(long, default_value = "60s")]
    lease_duration: String,
    /// Lifetime to ask for the agent's certificate, e.g. 24h (the hub's signer may cap it).
    #[arg(long)]
    certificate_lifetime: Option<String>,
}

#[derive(clap::Args)]
pub struct AcceptArgs {
    /// Kubeconfig of the hub cluster.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The clusters.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// What to list: `clusters`, `works`, `services --clusterset` or `ingresses`.
    what: String,
    /// services: the hub's multi-cluster services (the only kind of services it lists).
    #[arg(long)]
    clusterset: bool,
    /// works, ingresses: the namespace (a workspace, or a cluster's `atoll-cluster-NAME`);
    /// default all.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    #[command(flatten)]
    target: crate::clustersets::Target,
}

/// "90s", "10m", "1h", "2d" or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration like 30s, 10m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("{s:?} is not a duration like 30s, 10m, 1h"),
    };
    anyhow::ensure!(secs > 0, "{s:?}: a duration must be positive");
    Ok(Duration::from_secs(secs))
}

async fn client(path: &std::path::Path) -> anyhow::Result<Client> {
    Ok(crate::clients::from_path(path).await?.0)
}

pub async fn hub(args: HubArgs) -> anyhow::Result<()> {
    if let Some(HubCommand::Token {
        kubeconfig,
        ttl,
        clusterset,
    }) = args.command
    {
        print!(
            "{}",
            token(&kubeconfig, parse_duration(&ttl)?, clusterset.as_deref()).await?
        );
        return Ok(());
    }
    let kubeconfig = args
        .kubeconfig
        .context("--kubeconfig (the hub cluster's) is required")?;
    let client = client(&kubeconfig).await?;
    let (hub_url, _) = atoll_runtime::kubeconfig_cluster(&std::fs::read_to_string(&kubeconfig)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", kubeconfig.display()))?;
    let cfg = atoll_hub::HubConfig {
        auto_accept: args.auto_accept,
        hub_url,
        services: atoll_hub::services::ServicesConfig {
            clusterset_ip_range: args.clusterset_ip_range.clone(),
            grace_periods: args.service_endpoint_grace,
        },
    };
    atoll_hub::install(&client).await?;
    let sets = atoll_hub::start_sets_and_placements(client.clone()).await;
    match args.webhook_listen {
        Some(listen) => {
            // Callers of `explain` show client certificates of the hub cluster's CA.
            let (_, ca) = atoll_runtime::kubeconfig_cluster(&std::fs::read_to_string(&kubeconfig)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", kubeconfig.display()))?;
            let ca_pem = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, ca)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|p| !p.is_empty());
            let url = atoll_hub::webhook::start(
                client.clone(),
                listen,
                args.webhook_host,
                Some(sets),
                ca_pem,
            )
            .await?;
            eprintln!("atoll hub: admission webhooks and placement explain at {url}");
        }
        None => eprintln!(
            "atoll hub: no --webhook-listen: acceptance, set membership and bindings are not enforced by the hub, and `atoll placement explain` is not served"
        ),
    }
    eprintln!("atoll hub: controllers ready");
    tokio::select! {
        r = atoll_hub::run(client, cfg) => Ok(r?),
        _ = crate::clients::terminated() => Ok(()),
    }
}

/// Create a bootstrap token (`<id>.<secret>`, a Secret in `kube-system`) that expires after
/// `ttl` and carries `extra_groups`; returns the token.
pub async fn mint_bootstrap_token(
    client: &Client,
    ttl: Duration,
    extra_groups: &str,
    description: &str,
) -> anyhow::Result<String> {
    let mut bytes = [0u8; 22];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for the token"))?;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let text: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    let (id, secret) = text.split_at(6);
    let expiration = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
            ttl.as_secs() as i64
        ))
        .context("--ttl is too long")?
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let token_secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {
            "token-id": id, "token-secret": secret, "expiration": expiration,
            "usage-bootstrap-authentication": "true",
            "auth-extra-groups": extra_groups,
            "description": description,
        },
    }))?;
    Api::<Secret>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &token_secret)
        .await
        .context("cannot create the bootstrap token Secret in kube-system")?;
    Ok(format!("{id}.{secret}"))
}

/// A bootstrap token Secret in kube-system and a kubeconfig that uses it; with `clusterset`,
/// the joining cluster lands in that set (and only the caller's right to join it lets them mint
/// such a token, which the hub's webhook checks too).
pub async fn token(
    kubeconfig: &std::path::Path,
    ttl: Duration,
    clusterset: Option<&str>,
) -> anyhow::Result<String> {
    let (client, _) = crate::clients::from_path(kubeconfig).await?;
    let mut extra_groups = BOOTSTRAP_GROUP.to_string();
    if let Some(set) = clusterset {
        anyhow::ensure!(
            !set.is_empty()
                && set.len() <= 253
                && set.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'.'),
            "--clusterset {set:?} is not a valid cluster set name (lower case letters, digits, '-' and '.')"
        );
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {"group": "cluster.atoll.io", "resource": "managedclustersets",
                     "subresource": "join", "verb": "create", "name": set}},
        }))?;
        let allowed = Api::<SelfSubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .context("cannot check your access (SelfSubjectAccessReview)")?
            .status
            .is_some_and(|s| s.allowed);
        anyhow::ensure!(
            allowed,
            "you may not mint a token that joins clusters into cluster set {set}: that needs `create` on `managedclustersets/join` (cluster.atoll.io) for {set}"
        );
        extra_groups = format!(
            "{BOOTSTRAP_GROUP},{}{set}",
            atoll_api::clusterset::BOOTSTRAP_SET_GROUP_PREFIX
        );
    }
    let token = mint_bootstrap_token(
        &client,
        ttl,
        &extra_groups,
        "atoll hub token: joins one cluster",
    )
    .await?;
    let (server, ca) = atoll_runtime::kubeconfig_cluster(&std::fs::read_to_string(kubeconfig)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", kubeconfig.display()))?;
    Ok(atoll_runtime::kubeconfig(
        "hub",
        &server,
        &ca,
        "bootstrap",
        atoll_runtime::Credentials::Token(&token),
    ))
}

pub async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    if args.sync_mode == "Push" {
        let hub = args.bootstrap_kubeconfig.as_ref().context(
            "--hub-kubeconfig is required with --sync-mode Push: a kubeconfig of the hub that may write Secrets and ManagedClusters",
        )?;
        let (hub, _) = crate::clients::from_path(hub).await?;
        let lease = i32::try_from(parse_duration(&args.lease_duration)?.as_secs())
            .context("--lease-duration is too long")?;
        return push_join(&hub, &args.kubeconfig, &args.cluster_name, lease, false).await;
    }
    let (member, member_config) = crate::clients::from_path(&args.kubeconfig).await?;
    let bootstrap_kubeconfig = match &args.bootstrap_kubeconfig {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the bootstrap kubeconfig {}", p.display()))?,
        ),
        None => None,
    };
    let sync_mode = match args.sync_mode.as_str() {
        "Pull" => SyncMode::Pull,
        "Push" => SyncMode::Push,
        other => bail!("--sync-mode {other}: must be Pull or Push"),
    };
    let cfg = atoll_agent::AgentConfig {
        secret_name: atoll_api::cluster::HUB_KUBECONFIG_SECRET.into(),
        cluster_name: args.cluster_name,
        bootstrap_kubeconfig,
        lease_seconds: i32::try_from(parse_duration(&args.lease_duration)?.as_secs())
            .context("--lease-duration is too long")?,
        sync_mode,
        pull_work: Some(member_config),
        certificate_seconds: match &args.certificate_lifetime {
            Some(d) => Some(
                i32::try_from(parse_duration(d)?.as_secs())
                    .context("--certificate-lifetime is too long")?,
            ),
            None => None,
        },
    };
    tokio::select! {
        r = atoll_agent::run(member, cfg) => Ok(r?),
        _ = crate::clients::terminated() => Ok(()),
    }
}

/// `atoll join --sync-mode Push`: as an admin holding both kubeconfigs, prepare the member
/// (ServiceAccount `atoll-push` bound to `atoll:work-applier`, the AppliedManifestWork CRD, the
/// cluster's id property), store its credential in Secret `push-credential` of
/// `atoll-cluster-NAME` on the hub, and create the ManagedCluster in Push mode, accepted if
/// the caller may accept. No agent runs: the hub applies the works and watches its health.
pub async fn push_join(
    hub: &Client,
    member_kubeconfig: &std::path::Path,
    name: &str,
    lease_seconds: i32,
    quiet: bool,
) -> anyhow::Result<()> {
    let say = |s: String| {
        if !quiet {
            println!("{s}");
        }
    };
    atoll_api::cluster::check_cluster_name(name).map_err(|e| anyhow::anyhow!(e))?;
    let (member, _) = crate::clients::from_path(member_kubeconfig).await?;
    let (server, ca_data) =
        atoll_runtime::kubeconfig_cluster(&std::fs::read_to_string(member_kubeconfig)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", member_kubeconfig.display()))?;
    let ca_pem = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &ca_data)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let token = atoll_hub::push::prepare_member(&member)
        .await
        .context("cannot prepare the member for push (it needs an admin kubeconfig)")?;
    atoll_work::member::ensure_cluster_id(&member, name).await;
    say(format!(
        "serviceaccount/{} in {} of the member, bound to clusterrole {}",
        atoll_hub::push::PUSH_SERVICE_ACCOUNT,
        atoll_hub::push::PUSH_NAMESPACE,
        atoll_hub::push::WORK_APPLIER_ROLE
    ));
    let credential = atoll_hub::push::Credential {
        server: server.clone(),
        ca_pem,
        token,
    };
    atoll_hub::push::store_credential(hub, name, &credential)
        .await
        .context("cannot store the push credential on the hub")?;
    say(format!(
        "secret/{} in {} on the hub",
        atoll_hub::push::PUSH_SECRET,
        atoll_api::cluster::cluster_namespace(name)
    ));
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": {"resourceAttributes": {"group": "cluster.atoll.io", "resource": "managedclusters",
                 "subresource": "accept", "verb": "update", "name": name}},
    }))?;
    let may_accept = Api::<SelfSubjectAccessReview>::all(hub.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed);
    let mc = json!({"apiVersion": "cluster.atoll.io/v1alpha1", "kind": "ManagedCluster",
        "metadata": {"name": name},
        "spec": {"syncMode": "Push", "hubAcceptsClient": may_accept, "leaseDurationSeconds": lease_seconds,
                 "managedClusterClientConfigs": [{"url": server, "caBundle": ca_data}]}});
    Api::<ManagedCluster>::all(hub.clone())
        .patch(
            name,
            &PatchParams::apply("atoll-join").force(),
            &Patch::Apply(&mc),
        )
        .await
        .context("cannot create the ManagedCluster")?;
    if may_accept {
        say(format!(
            "managedcluster.cluster.atoll.io/{name} joined in Push mode and accepted"
        ));
    } else {
        say(format!(
            "managedcluster.cluster.atoll.io/{name} joined in Push mode; it waits for `atoll accept {name}`"
        ));
    }
    Ok(())
}

/// `atoll accept`: approve each cluster's pending, valid CSRs and set `hubAcceptsClient`.
/// `atoll deny` (`accept == false`): deny them and clear `hubAcceptsClient`.
pub async fn accept(args: AcceptArgs, accept: bool) -> anyhow::Result<()> {
    let client = client(&args.kubeconfig).await?;
    for name in &args.names {
        decide(&client, name, accept).await?;
        println!(
            "managedcluster.cluster.atoll.io/{name} {}",
            if accept { "accepted" } else { "denied" }
        );
    }
    Ok(())
}

/// Accept or deny one cluster (also used by `atoll dev up`).
pub async fn decide(client: &Client, name: &str, accept: bool) -> anyhow::Result<()> {
    // Whether the caller may: `update` on the `managedclusters/accept` subresource, as Open
    // Cluster Management asks of whoever accepts a cluster.
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": {"resourceAttributes": {"group": "cluster.atoll.io", "resource": "managedclusters",
                 "subresource": "accept", "verb": "update", "name": name}},
    }))?;
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let allowed = reviews
        .create(&PostParams::default(), &review)
        .await
        .context("cannot check your access (SelfSubjectAccessReview)")?
        .status
        .is_some_and(|s| s.allowed);
    anyhow::ensure!(
        allowed,
        "you may not {} cluster {name}: that needs `update` on `managedclusters/accept` (cluster.atoll.io)",
        if accept { "accept" } else { "deny" }
    );
    let mcs: Api<ManagedCluster> = Api::all(client.clone());
    anyhow::ensure!(
        mcs.get_opt(name).await?.is_some(),
        "there is no ManagedCluster {name}; has its agent run with a bootstrap kubeconfig?"
    );
    if accept {
        // Accepted first, then approved, as the hub does for `--auto-accept`: once the hub has
        // granted the cluster its access (it says so with `HubAcceptedManagedCluster`), the
        // agent's first request with its new certificate is allowed instead of retried.
        mcs.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hubAcceptsClient": true}})),
        )
        .await?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !mcs
            .get_opt(name)
            .await?
            .is_some_and(|mc| mc.is(atoll_api::cluster::CONDITION_HUB_ACCEPTED))
        {
            if std::time::Instant::now() > deadline {
                eprintln!(
                    "the hub has not granted cluster {name} its access yet (is `atoll hub` running?); approving its request anyway"
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let pending = csrs
        .list(&ListParams::default().labels(&format!("{CSR_CLUSTER_LABEL}={name}")))
        .await?;
    for csr in pending.items.iter().filter(|c| !atoll_hub::csr::decided(c)) {
        match atoll_hub::csr::check(csr) {
            Ok((cluster, _)) if cluster == *name => {
                atoll_hub::csr::decide(
                    client,
                    csr,
                    accept,
                    if accept {
                        "AcceptedByHubAdmin"
                    } else {
                        "DeniedByHubAdmin"
                    },
                    &format!("atoll {} {name}", if accept { "accept" } else { "deny" }),
                )
                .await?;
            }
            Ok(_) => {}
            Err(why) => eprintln!("leaving CSR {} alone: {why}", csr.name_any()),
        }
    }
    if !accept {
        mcs.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hubAcceptsClient": false}})),
        )
        .await?;
    }
    Ok(())
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = args.target.client().await?;
    match args.what.as_str() {
        "clusters" | "cluster" | "managedclusters" | "mcl" => {}
        "works" | "work" | "manifestworks" | "mw" => {
            return crate::deploy::get_works(&client, args.namespace.as_deref()).await;
        }
        "services" | "service" | "svc" if args.clusterset => {
            return crate::services::get_services(&client).await;
        }
        "ingresses" | "ingress" | "multiclusteringresses" | "mci" => {
            return crate::gateway::get_ingresses(&client, args.namespace.as_deref()).await;
        }
        "services" | "service" | "svc" => bail!(
            "atoll get services lists the hub's multi-cluster services: add --clusterset (a cluster's own Services: kubectl get services)"
        ),
        other => {
            bail!("atoll get {other}: `clusters`, `works`, `services --clusterset` or `ingresses`")
        }
    }
    let mcs: Api<ManagedCluster> = Api::all(client);
    let list = match mcs.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "this cluster serves no ManagedClusters (cluster.atoll.io/v1alpha1): is it a hub? `atoll hub` installs them"
        ),
        other => other?,
    };
    let mut rows = vec![
        [
            "NAME",
            "ACCEPTED",
            "JOINED",
            "AVAILABLE",
            "KUBERNETES",
            "CPU",
            "TAINTS",
        ]
        .map(String::from),
    ];
    for mc in list.items {
        let st = |t: &str| {
            mc.condition(t)
                .map_or("", |c| c.status.as_str())
                .to_string()
        };
        let status = mc.status.clone().unwrap_or_default();
        rows.push([
            mc.name_any(),
            mc.spec.hub_accepts_client.to_string(),
            st(CONDITION_JOINED),
            st(CONDITION_AVAILABLE),
            status.version.map(|v| v.kubernetes).unwrap_or_default(),
            status.allocatable.get("cpu").cloned().unwrap_or_default(),
            mc.spec
                .taints
                .iter()
                .map(|t| t.key.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    crate::output::print_table(&rows);
    Ok(())
}
