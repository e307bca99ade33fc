//! `atoll peer`: peering between clusters (no hub). Each subcommand acts on the cluster its
//! `--kubeconfig`/`--context` name: the provider for `token`, `approve` and `refuse`, the
//! consumer for `add`, `request`, `offload`; `controllers` runs in every cluster that peers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use atoll_api::peering::{
    CONDITION_AUTHENTICATED, CONDITION_NEGOTIATED, CONDITION_REACHABLE,
    CONDITION_VIRTUAL_NODE_READY, ForeignCluster, NamespaceOffloading, OFFLOADING_NAME,
    PEERING_BOOTSTRAP_GROUP, PEERING_NAMESPACE, ResourceOffer, ResourceRequest, peer_namespace,
    tenant_namespace,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::registration::parse_duration;

#[derive(clap::Args)]
pub struct PeerArgs {
    #[command(subcommand)]
    command: PeerCommand,
}

/// The cluster a subcommand acts on.
#[derive(clap::Args, Clone)]
struct Target {
    /// The kubeconfig of the cluster this acts on (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Its context (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
}

#[derive(clap::Subcommand)]
enum PeerCommand {
    /// Run this cluster's peering controllers (provider and consumer sides).
    Controllers(ControllersArgs),
    /// On a provider: mint a peering token and print the `atoll peer add` line to run
    /// against the consumer.
    Token {
        #[command(flatten)]
        target: Target,
        /// How long the token may be used.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// On a consumer: peer with a provider (a ForeignCluster and its token).
    Add(AddArgs),
    /// On a consumer: ask a peer for resources.
    Request(RequestArgs),
    /// On a provider under the Manual policy: grant a consumer's request.
    Approve {
        #[command(flatten)]
        target: Target,
        /// The consumer's cluster id.
        name: String,
    },
    /// On a provider under the Manual policy: refuse a consumer's request.
    Refuse {
        #[command(flatten)]
        target: Target,
        name: String,
    },
    /// On a consumer: offload a namespace to its peers (a NamespaceOffloading).
    Offload(OffloadArgs),
    /// End a peering, on this cluster's side and on the peer's: as consumer, cordon and
    /// drain the virtual node, remove the namespaces offloaded there and give up the identity;
    /// as provider, remove the consumer's tenant and namespaces. Ends clean here also when the
    /// peer is gone.
    Remove {
        #[command(flatten)]
        target: Target,
        name: String,
        /// How long to wait for the pods on the virtual node to go, and for the peer.
        #[arg(long, default_value = "30s")]
        timeout: String,
    },
    /// Print the DNS records that publish this cluster (and the peers it knows) under a domain,
    /// as a zone file for any DNS server.
    Zone {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        domain: String,
    },
    /// Browse a DNS domain for peers once: what is published becomes ForeignClusters.
    Discover {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        domain: String,
        /// The DNS server to ask (IP:PORT; default: the first nameserver of /etc/resolv.conf).
        #[arg(long)]
        dns: Option<String>,
    },
    /// Each peer: role, the state of each step, the grant, the virtual node.
    List {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
struct ControllersArgs {
    #[command(flatten)]
    target: Target,
    /// This cluster's id (a DNS label); default: its ClusterProperty cluster.clusterset.k8s.io.
    #[arg(long)]
    cluster_id: Option<String>,
    /// Where peers reach this cluster's API server (default: the kubeconfig's server).
    #[arg(long)]
    advertise_url: Option<String>,
    /// How requests are answered: `Auto` (a share of allocatable) or `Manual`.
    #[arg(long, default_value = "Auto")]
    policy: String,
    /// Under `Auto`: the percent of allocatable CPU, memory and pods peers may hold together.
    #[arg(long, default_value_t = 50)]
    share: u32,
    /// How long an offer holds unless renewed.
    #[arg(long, default_value = "5m")]
    offer_ttl: String,
    /// How often each provider's reachability is checked.
    #[arg(long, default_value = "2s")]
    probe_period: String,
}

#[derive(clap::Args)]
struct AddArgs {
    #[command(flatten)]
    target: Target,
    /// The provider's cluster id (the ForeignCluster's name); learnt from the provider when
    /// not given.
    name: Option<String>,
    /// The provider's API server.
    #[arg(long)]
    url: Option<String>,
    /// The peering token from `atoll peer token`.
    #[arg(long)]
    token: String,
    /// The provider CA's pin (`sha256:<hex>`).
    #[arg(long = "ca-sha256")]
    ca_sha256: Option<String>,
    /// How long to wait for the identity; 0 to return at once.
    #[arg(long, default_value = "60s")]
    timeout: String,
}

#[derive(clap::Args)]
struct RequestArgs {
    #[command(flatten)]
    target: Target,
    /// The provider (ForeignCluster name).
    name: String,
    #[arg(long)]
    cpu: Option<String>,
    #[arg(long)]
    memory: Option<String>,
    #[arg(long)]
    pods: Option<String>,
    /// Extended resources, `K=V` (`nvidia.com/gpu=1`); repeatable.
    #[arg(long = "resource")]
    resources: Vec<String>,
    /// How long to wait for the answer; 0 to return at once.
    #[arg(long, default_value = "30s")]
    timeout: String,
}

#[derive(clap::Args)]
struct OffloadArgs {
    #[command(flatten)]
    target: Target,
    namespace: String,
    /// Where its pods run: LocalAndRemote, Local or Remote.
    #[arg(long, default_value = "LocalAndRemote")]
    strategy: String,
    /// How its remote namespaces are named: DefaultName, EnforceSameName or SelectedName.
    #[arg(long, default_value = "DefaultName")]
    mapping: String,
    /// The remote name under SelectedName.
    #[arg(long)]
    remote_name: Option<String>,
}

async fn client(t: &Target) -> anyhow::Result<(Client, kube::Config)> {
    crate::clients::from_flags(t.kubeconfig.as_deref(), t.context.as_deref()).await
}

pub async fn run(args: PeerArgs) -> anyhow::Result<()> {
    match args.command {
        PeerCommand::Controllers(a) => controllers(a).await,
        PeerCommand::Token { target, ttl } => token(&target, &ttl).await,
        PeerCommand::Add(a) => add(a).await,
        PeerCommand::Request(a) => request(a).await,
        PeerCommand::Approve { target, name } => decide(&target, &name, "Approved").await,
        PeerCommand::Refuse { target, name } => decide(&target, &name, "Refused").await,
        PeerCommand::Offload(a) => offload(a).await,
        PeerCommand::List { target } => list(&target).await,
        PeerCommand::Zone { target, domain } => zone(&target, &domain).await,
        PeerCommand::Discover {
            target,
            domain,
            dns,
        } => discover(&target, &domain, dns.as_deref()).await,
        PeerCommand::Remove {
            target,
            name,
            timeout,
        } => remove(&target, &name, &timeout).await,
    }
}

/// The CA (PEM) and server a client config trusts.
fn ca_and_server(config: &kube::Config) -> anyhow::Result<(String, String)> {
    let certs = config.root_cert.as_ref().context(
        "the kubeconfig gives no CA (certificate-authority-data): peers pin this cluster's CA",
    )?;
    let mut pem = String::new();
    for der in certs {
        let Some(p) = der_to_pem(der) else { continue };
        pem.push_str(&p);
    }
    Ok((
        pem,
        config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string(),
    ))
}

fn der_to_pem(der: &[u8]) -> Option<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).ok()?);
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    Some(out)
}

/// This cluster's id as its controllers publish it, or as its ClusterProperty says.
async fn own_id(client: &Client) -> anyhow::Result<String> {
    if let Some(cm) = Api::<ConfigMap>::namespaced(client.clone(), "kube-public")
        .get_opt(atoll_peering::INFO_CONFIGMAP)
        .await?
        && let Some(id) = cm.data.and_then(|d| d.get("clusterID").cloned())
    {
        return Ok(id);
    }
    let props: Api<atoll_api::cluster::ClusterProperty> = Api::all(client.clone());
    match props.get_opt(atoll_api::cluster::CLUSTER_ID_PROPERTY).await {
        Ok(Some(p)) => Ok(p.spec.value),
        _ => bail!(
            "this cluster has no id: run `atoll peer controllers --cluster-id ID` against it (or give it ClusterProperty {})",
            atoll_api::cluster::CLUSTER_ID_PROPERTY
        ),
    }
}

async fn controllers(a: ControllersArgs) -> anyhow::Result<()> {
    let (client, config) = client(&a.target).await?;
    let (ca_pem, server) = ca_and_server(&config)?;
    let cluster_id = match a.cluster_id {
        Some(id) => id,
        None => {
            let props: Api<atoll_api::cluster::ClusterProperty> = Api::all(client.clone());
            props
                .get_opt(atoll_api::cluster::CLUSTER_ID_PROPERTY)
                .await
                .ok()
                .flatten()
                .map(|p| p.spec.value)
                .context("give --cluster-id: this cluster has no ClusterProperty cluster.clusterset.k8s.io")?
        }
    };
    let policy = match a.policy.as_str() {
        "Auto" => atoll_peering::Policy::Auto { share: a.share },
        "Manual" => atoll_peering::Policy::Manual,
        other => bail!("--policy {other}: must be Auto or Manual"),
    };
    anyhow::ensure!(
        a.share <= 100,
        "--share {} is more than 100 percent",
        a.share
    );
    let cfg = atoll_peering::PeeringConfig {
        cluster_id,
        api_server_url: a.advertise_url.unwrap_or(server),
        ca_pem,
        policy,
        offer_ttl: parse_duration(&a.offer_ttl)?,
        probe_period: parse_duration(&a.probe_period)?,
        certificate_seconds: None,
    };
    tokio::select! {
        r = atoll_peering::run(client, cfg, || println!("peering controllers ready")) => Ok(r?),
        _ = crate::clients::terminated() => Ok(()),
    }
}

async fn token(target: &Target, ttl: &str) -> anyhow::Result<()> {
    let (client, config) = client(target).await?;
    let ttl = parse_duration(ttl)?;
    let (ca_pem, server) = ca_and_server(&config)?;
    let pin = atoll_peering::pin::of_pem(&ca_pem).context("the kubeconfig's CA does not parse")?;
    let info = Api::<ConfigMap>::namespaced(client.clone(), "kube-public")
        .get_opt(atoll_peering::INFO_CONFIGMAP)
        .await?
        .and_then(|c| c.data)
        .context("this cluster runs no peering controllers (kube-public/atoll-peering is missing): start `atoll peer controllers` against it first")?;
    let id = info.get("clusterID").cloned().unwrap_or_default();
    let url = info.get("apiServerURL").cloned().unwrap_or(server);
    let token = crate::registration::mint_bootstrap_token(
        &client,
        ttl,
        PEERING_BOOTSTRAP_GROUP,
        "atoll peer token: one consumer may peer with this cluster",
    )
    .await?;
    println!("atoll peer add {id} --url {url} --token {token} --ca-sha256 {pin}");
    Ok(())
}

async fn add(a: AddArgs) -> anyhow::Result<()> {
    let (client, _) = client(&a.target).await?;
    let fcs: Api<ForeignCluster> = Api::all(client.clone());
    let existing = match &a.name {
        Some(n) => fcs.get_opt(n).await?,
        None => None,
    };
    let url = a
        .url
        .clone()
        .or_else(|| existing.as_ref().map(|f| f.spec.api_server_url.clone()))
        .filter(|u| !u.is_empty())
        .context("--url is required (the provider's API server) unless the ForeignCluster was discovered")?;
    let pin = a
        .ca_sha256
        .clone()
        .or_else(|| existing.as_ref().map(|f| f.spec.ca_sha256.clone()))
        .filter(|p| !p.is_empty())
        .context("--ca-sha256 is required (printed by `atoll peer token`)")?;
    let pin = atoll_peering::pin::normalize(&pin).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        a.token
            .split_once('.')
            .is_some_and(|(i, s)| i.len() == 6 && s.len() == 16),
        "--token {:?} is not a peering token (`abcdef.0123456789abcdef`, printed by `atoll peer token`)",
        a.token
    );
    let name = match a.name.clone() {
        Some(n) => n,
        None => {
            // Learnt from the provider, over a connection its pinned CA vouches for.
            let ca = atoll_peering::fetch_ca(&url, &pin)
                .await
                .map_err(|f| anyhow::anyhow!("{}", f.message))?;
            atoll_peering::provider_info(&url, &ca, &a.token)
                .await
                .map_err(|f| anyhow::anyhow!("{}", f.message))?
                .cluster_id
        }
    };
    atoll_api::cluster::check_cluster_name(&name).map_err(anyhow::Error::msg)?;
    let token_secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-token"), "namespace": PEERING_NAMESPACE,
                     "labels": {atoll_api::peering::REMOTE_CLUSTER_ID_LABEL: name}},
        "type": "Opaque",
        "stringData": {"token": a.token},
    }))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), PEERING_NAMESPACE);
    let pp = PatchParams::apply("atoll-peer").force();
    secrets
        .patch(&format!("{name}-token"), &pp, &Patch::Apply(&token_secret))
        .await
        .context("cannot store the token: does this cluster run `atoll peer controllers` (namespace atoll-peering)?")?;
    let mut spec =
        json!({"clusterID": name, "apiServerURL": url, "caSHA256": pin, "outgoingPeering": "Yes"});
    if let Some(fc) = &existing {
        spec["clusterID"] = json!(fc.spec.cluster_id);
        spec["discoveredBy"] = serde_json::to_value(fc.spec.discovered_by)?;
    }
    // Stamped, so that adding again with a new token starts a new attempt at once.
    let fc = json!({"apiVersion": "peering.atoll.io/v1alpha1", "kind": "ForeignCluster",
                    "metadata": {"name": name, "annotations": {"peering.atoll.io/added-at": atoll_runtime::now_micro()}},
                    "spec": spec});
    let fc = fcs.patch(&name, &pp, &Patch::Apply(&fc)).await?;
    // What an earlier attempt said is no answer to this one.
    if let Some(status) = &fc.status {
        let kept: Vec<_> = status
            .conditions
            .iter()
            .filter(|c| c.type_ != CONDITION_AUTHENTICATED)
            .collect();
        fcs.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": kept}})),
        )
        .await?;
    }
    println!("foreigncluster.peering.atoll.io/{name} configured");
    let timeout = parse_duration(&a.timeout)?;
    if timeout.is_zero() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let fc = fcs.get(&name).await?;
        if let Some(c) = condition(&fc, CONDITION_AUTHENTICATED) {
            let line = format!("{}: {}", c.reason, c.message);
            if c.status == "True" {
                println!("authenticated: {}", c.message);
                return Ok(());
            }
            // Failures that waiting does not fix end the command; the controllers retry.
            if [
                "CAPinMismatch",
                "TokenInvalid",
                "Refused",
                "ClusterIDMismatch",
                "InvalidPin",
                "NotAPeer",
            ]
            .contains(&c.reason.as_str())
            {
                bail!("peering with {name} is refused: {}", c.message);
            }
            if line != last {
                eprintln!("waiting: {line}");
                last = line;
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{name} is not authenticated after {timeout:?}: `kubectl get fc {name} -o yaml` says where it stands"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition<'a>(
    fc: &'a ForeignCluster,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    fc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

async fn request(a: RequestArgs) -> anyhow::Result<()> {
    let (client, _) = client(&a.target).await?;
    let fc = Api::<ForeignCluster>::all(client.clone())
        .get_opt(&a.name)
        .await?
        .with_context(|| format!("no peer {}: `atoll peer add` it first", a.name))?;
    let me = own_id(&client).await?;
    let mut resources = BTreeMap::new();
    for (k, v) in [("cpu", &a.cpu), ("memory", &a.memory), ("pods", &a.pods)] {
        if let Some(v) = v {
            resources.insert(k.to_string(), v.clone());
        }
    }
    for kv in &a.resources {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--resource {kv:?}: want NAME=QUANTITY (nvidia.com/gpu=1)"))?;
        resources.insert(k.to_string(), v.to_string());
    }
    for (k, v) in &resources {
        anyhow::ensure!(
            atoll_peering::grant::amount(k, v).is_some(),
            "{k}={v}: {v:?} is not a quantity (2, 500m, 4Gi)"
        );
    }
    let ns = peer_namespace(&fc.spec.cluster_id);
    let rr = json!({
        "apiVersion": "peering.atoll.io/v1alpha1", "kind": "ResourceRequest",
        "metadata": {"name": me, "namespace": ns},
        "spec": {"consumerClusterID": me, "providerClusterID": fc.spec.cluster_id, "resources": resources},
    });
    let api: Api<ResourceRequest> = Api::namespaced(client.clone(), &ns);
    api.patch(
        &me,
        &PatchParams::apply("atoll-peer").force(),
        &Patch::Apply(&rr),
    )
    .await
    .with_context(|| {
        format!(
            "cannot write the request in {ns}: is {} authenticated (`atoll peer list`)?",
            a.name
        )
    })?;
    println!("resourcerequest.peering.atoll.io/{me} configured in {ns}");
    let timeout = parse_duration(&a.timeout)?;
    if timeout.is_zero() {
        return Ok(());
    }
    let generation = api.get(&me).await?.metadata.generation;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let rr = api.get(&me).await?;
        let s = rr.status.clone().unwrap_or_default();
        let answered = rr.metadata.generation == generation
            && ["Accepted", "Refused", "ManualActionRequired"].contains(&s.phase.as_str())
            && s.reason != "Replicated";
        if answered {
            println!("{}: {} ({})", s.phase, s.message, s.reason);
            if s.phase == "Refused" {
                bail!("provider {} refused the request: {}", a.name, s.message);
            }
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "no answer from {} after {timeout:?} (phase {:?})",
                a.name,
                s.phase
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn decide(target: &Target, consumer: &str, decision: &str) -> anyhow::Result<()> {
    let (client, _) = client(target).await?;
    let ns = tenant_namespace(consumer);
    let api: Api<ResourceRequest> = Api::namespaced(client, &ns);
    let list = api.list(&ListParams::default()).await?;
    anyhow::ensure!(
        !list.items.is_empty(),
        "consumer {consumer} has no request here (namespace {ns})"
    );
    for rr in list.items {
        api.patch_status(
            &rr.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"decision": decision}})),
        )
        .await?;
        println!(
            "resourcerequest.peering.atoll.io/{} {}",
            rr.name_any(),
            decision.to_lowercase()
        );
    }
    Ok(())
}

async fn offload(a: OffloadArgs) -> anyhow::Result<()> {
    let (client, _) = client(&a.target).await?;
    for (flag, v, allowed) in [
        (
            "--strategy",
            &a.strategy,
            &["LocalAndRemote", "Local", "Remote"][..],
        ),
        (
            "--mapping",
            &a.mapping,
            &["DefaultName", "EnforceSameName", "SelectedName"][..],
        ),
    ] {
        anyhow::ensure!(
            allowed.contains(&v.as_str()),
            "{flag} {v}: must be one of {}",
            allowed.join(", ")
        );
    }
    if a.mapping == "SelectedName" {
        anyhow::ensure!(
            a.remote_name.is_some(),
            "--mapping SelectedName needs --remote-name"
        );
    }
    let mut spec =
        json!({"namespaceMappingStrategy": a.mapping, "podOffloadingStrategy": a.strategy});
    if let Some(r) = &a.remote_name {
        spec["remoteNamespaceName"] = json!(r);
    }
    let nso = json!({"apiVersion": "peering.atoll.io/v1alpha1", "kind": "NamespaceOffloading",
                     "metadata": {"name": OFFLOADING_NAME, "namespace": a.namespace}, "spec": spec});
    let api: Api<NamespaceOffloading> = Api::namespaced(client, &a.namespace);
    api.patch(
        OFFLOADING_NAME,
        &PatchParams::apply("atoll-peer").force(),
        &Patch::Apply(&nso),
    )
    .await?;
    println!(
        "namespaceoffloading.peering.atoll.io/{OFFLOADING_NAME} configured in {}",
        a.namespace
    );
    Ok(())
}

async fn list(target: &Target) -> anyhow::Result<()> {
    let (client, _) = client(target).await?;
    let fcs = Api::<ForeignCluster>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let mut rows = vec![
        [
            "NAME",
            "ROLE",
            "AUTHENTICATED",
            "NEGOTIATED",
            "NODE",
            "REACHABLE",
            "GRANT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for fc in &fcs.items {
        let state = |t: &str| {
            condition(fc, t).map_or("-".to_string(), |c| {
                if c.status == "True" {
                    "True".into()
                } else {
                    format!("False ({})", c.reason)
                }
            })
        };
        let offers: Api<ResourceOffer> =
            Api::namespaced(client.clone(), &peer_namespace(&fc.spec.cluster_id));
        let grant = offers
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .flat_map(|o| {
                        o.spec
                            .resource_quota
                            .hard
                            .iter()
                            .map(|(k, v)| format!("{k}={}", v.0))
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        rows.push(vec![
            fc.name_any(),
            fc.status
                .as_ref()
                .map(|s| s.role.clone())
                .unwrap_or_default(),
            state(CONDITION_AUTHENTICATED),
            state(CONDITION_NEGOTIATED),
            state(CONDITION_VIRTUAL_NODE_READY),
            state(CONDITION_REACHABLE),
            if grant.is_empty() { "-".into() } else { grant },
        ]);
    }
    crate::output::print_table(&rows);
    Ok(())
}

async fn remove(target: &Target, name: &str, timeout: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
    use kube::api::DeleteParams;
    let timeout = parse_duration(timeout)?;
    let (client, _) = client(target).await?;
    let fcs: Api<ForeignCluster> = Api::all(client.clone());
    let fc = fcs
        .get_opt(name)
        .await?
        .with_context(|| format!("no peer {name} (`atoll peer list`)"))?;
    let pid = fc.spec.cluster_id.clone();
    let me = own_id(&client).await?;
    let gone = |r: Result<(), kube::Error>| match r {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    };
    // As its provider: the consumer's tenant (its requests, offers and rights) and the
    // namespaces offloaded for it go; the controllers collect the rest.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(&tenant_namespace(&pid)).await?.is_some() {
        gone(
            namespaces
                .delete(&tenant_namespace(&pid), &DeleteParams::default())
                .await
                .map(|_| ()),
        )?;
        let offloaded = namespaces
            .list(
                &ListParams::default()
                    .labels(&format!("{}={pid}", atoll_api::peering::TENANT_LABEL)),
            )
            .await?;
        for ns in offloaded.items {
            gone(
                namespaces
                    .delete(&ns.name_any(), &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )?;
            println!("namespace/{} deleted (offloaded for {pid})", ns.name_any());
        }
        println!(
            "namespace/{} deleted: {pid} is no longer a consumer here",
            tenant_namespace(&pid)
        );
    }
    // As its consumer.
    let node_name = atoll_api::peering::virtual_node_name(name);
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(&node_name).await?.is_some() {
        nodes
            .patch(
                &node_name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"unschedulable": true}})),
            )
            .await?;
        println!("node/{node_name} cordoned");
    }
    let identity = Api::<Secret>::namespaced(client.clone(), PEERING_NAMESPACE)
        .get_opt(&format!("{name}-identity"))
        .await?
        .and_then(|s| {
            s.data?
                .get("kubeconfig")
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        });
    // Draining: the pods there are deleted; their controllers make them again elsewhere, and
    // the peering controllers delete their copies in the provider before letting them go.
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node_name}"));
    for p in pods.list(&on_node).await?.items {
        let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
        gone(
            api.delete(&p.name_any(), &DeleteParams::default())
                .await
                .map(|_| ()),
        )?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = pods.list(&on_node).await?.items;
        if left.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!(
                "warning: {} pod(s) on {node_name} did not go within {timeout:?} (is {name} unreachable?): removing them here; their copies there go with the namespaces",
                left.len()
            );
            for p in left {
                let api: Api<Pod> =
                    Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                };
                gone(api.delete(&p.name_any(), &dp).await.map(|_| ()))?;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The controllers stop working on this peering.
    gone(fcs.delete(name, &DeleteParams::default()).await.map(|_| ()))?;
    println!("foreigncluster.peering.atoll.io/{name} deleted");
    // The provider's side, with the identity while it still works: the tenant namespace goes
    // (and with it everything the provider keeps for this cluster, and the identity's rights).
    if let Some(kubeconfig) = identity {
        let ended = async {
            let (remote, _) = crate::clients::from_yaml(&kubeconfig).await?;
            let remote_ns: Api<Namespace> = Api::all(remote);
            match remote_ns
                .delete(&tenant_namespace(&me), &DeleteParams::default())
                .await
            {
                Ok(_) => anyhow::Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                // The API's own message, not the client's debug dump.
                Err(kube::Error::Api(e)) => Err(anyhow::anyhow!("{}", e.message)),
                Err(e) => Err(e.into()),
            }
        };
        match tokio::time::timeout(timeout, ended).await {
            Ok(Ok(())) => println!(
                "{name}: tenant namespace {} deleted; the identity of {me} there has no rights left",
                tenant_namespace(&me)
            ),
            Ok(Err(e)) => eprintln!(
                "warning: cannot end the peering on {name} ({e:#}): its admin ends it with `atoll peer remove {me}` there"
            ),
            Err(_) => eprintln!(
                "warning: {name} does not answer: its admin ends the peering with `atoll peer remove {me}` there"
            ),
        }
    }
    // What this cluster kept for the peering.
    gone(
        nodes
            .delete(&node_name, &DeleteParams::default())
            .await
            .map(|_| ()),
    )?;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-node-lease");
    gone(
        leases
            .delete(&node_name, &DeleteParams::default())
            .await
            .map(|_| ()),
    )?;
    gone(
        namespaces
            .delete(&peer_namespace(&pid), &DeleteParams::default())
            .await
            .map(|_| ()),
    )?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), PEERING_NAMESPACE);
    for s in [format!("{name}-identity"), format!("{name}-token")] {
        gone(
            secrets
                .delete(&s, &DeleteParams::default())
                .await
                .map(|_| ()),
        )?;
    }
    let nsos: Api<NamespaceOffloading> = Api::all(client.clone());
    for nso in nsos.list(&ListParams::default()).await?.items {
        let Some(status) = &nso.status else { continue };
        if status.clusters.iter().any(|c| c.cluster_id == pid) {
            let clusters: Vec<_> = status
                .clusters
                .iter()
                .filter(|c| c.cluster_id != pid)
                .collect();
            let api: Api<NamespaceOffloading> =
                Api::namespaced(client.clone(), &nso.namespace().unwrap_or_default());
            api.patch_status(
                OFFLOADING_NAME,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"clusters": clusters}})),
            )
            .await?;
        }
    }
    println!("peering with {name} removed");
    Ok(())
}

async fn zone(target: &Target, domain: &str) -> anyhow::Result<()> {
    let (client, _) = client(target).await?;
    let info = Api::<ConfigMap>::namespaced(client.clone(), "kube-public")
        .get_opt(atoll_peering::INFO_CONFIGMAP)
        .await?
        .and_then(|c| c.data)
        .context(
            "this cluster runs no peering controllers (kube-public/atoll-peering is missing)",
        )?;
    let field = |k: &str| info.get(k).cloned().unwrap_or_default();
    let mut clusters = vec![atoll_peering::discovery::Published {
        cluster_id: field("clusterID"),
        api_server_url: field("apiServerURL"),
        ca_sha256: field("caSHA256"),
    }];
    for fc in Api::<ForeignCluster>::all(client)
        .list(&ListParams::default())
        .await?
        .items
    {
        if !fc.spec.api_server_url.is_empty() && !fc.spec.ca_sha256.is_empty() {
            clusters.push(atoll_peering::discovery::Published {
                cluster_id: fc.spec.cluster_id.clone(),
                api_server_url: fc.spec.api_server_url.clone(),
                ca_sha256: fc.spec.ca_sha256.clone(),
            });
        }
    }
    print!(
        "{}",
        atoll_peering::discovery::zone(domain, &clusters).map_err(anyhow::Error::msg)?
    );
    Ok(())
}

async fn discover(target: &Target, domain: &str, dns: Option<&str>) -> anyhow::Result<()> {
    let (client, _) = client(target).await?;
    let server: std::net::SocketAddr = match dns {
        Some(d) => d
            .parse()
            .with_context(|| format!("--dns {d:?}: want IP:PORT (127.0.0.1:5353)"))?,
        None => atoll_peering::discovery::system_resolver()
            .context("no nameserver in /etc/resolv.conf: give --dns IP:PORT")?,
    };
    let (found, broken) = atoll_peering::discovery::browse(domain, server)
        .await
        .map_err(anyhow::Error::msg)?;
    for b in &broken {
        eprintln!("warning: skipped {b}");
    }
    let me = own_id(&client).await?;
    atoll_peering::search::record(&client, domain, &found, &me, false).await?;
    let mut rows = vec![["NAME", "URL", "CA-SHA256"].map(String::from).to_vec()];
    for p in found.iter().filter(|p| p.cluster_id != me) {
        rows.push(vec![
            p.cluster_id.clone(),
            p.api_server_url.clone(),
            p.ca_sha256.clone(),
        ]);
    }
    crate::output::print_table(&rows);
    Ok(())
}
