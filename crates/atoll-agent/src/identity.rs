//! The agent's identity on the hub: joining with the bootstrap kubeconfig (the
//! ManagedCluster, a key of its own and a CSR, saved in Secret `atoll-agent/hub-kubeconfig`
//! before the CSR is sent so a restart resumes it), adopting the signed certificate, rotating
//! it with the current identity, and noticing that the hub removed the cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use atoll_api::cluster::{
    AGENT_NAMESPACE, CLUSTERS_GROUP, CSR_CLUSTER_LABEL, ManagedCluster, agent_user, cluster_group,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::{AgentConfig, Error, MANAGER, jitter};

/// The identity the agent holds on the hub.
pub(crate) struct Identity {
    /// The user the certificate names (`system:atoll:cluster:<name>:agent`).
    pub(crate) user: String,
    pub(crate) kubeconfig: String,
    pub(crate) client: Client,
    /// When the certificate was issued and expires (seconds since the epoch).
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

/// The hub identity, from the Secret or by joining. Its own cluster may be starting too, and
/// the hub may be away: what fails is retried, except bad configuration.
pub(crate) async fn acquire(member: &Client, cfg: &AgentConfig) -> Result<Identity, Error> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            ensure_namespace(member).await?;
            atoll_work::member::ensure_cluster_id(member, &cfg.cluster_name).await;
            obtain_identity(member, cfg).await
        };
        match attempt.await {
            Ok(id) => return Ok(id),
            Err(e @ Error::Config(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(cluster = %cfg.cluster_name, error = %e, "cannot start; retrying");
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

pub(crate) async fn ensure_namespace(member: &Client) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(member.clone());
    let ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENT_NAMESPACE}});
    api.patch(
        AGENT_NAMESPACE,
        &PatchParams::apply(MANAGER),
        &Patch::Apply(&ns),
    )
    .await?;
    Ok(())
}

pub(crate) async fn client_from(kubeconfig: &str) -> Result<Client, Error> {
    let kc = Kubeconfig::from_yaml(kubeconfig).map_err(Error::config)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(Error::config)?;
    Client::try_from(config).map_err(Error::config)
}

/// (user, not before, not after) of the first client certificate in a kubeconfig (the user is
/// its subject's CN; the times in seconds).
pub(crate) fn certificate_facts(kubeconfig: &str) -> Result<(String, i64, i64), Error> {
    use base64::Engine;
    let kc = Kubeconfig::from_yaml(kubeconfig).map_err(Error::config)?;
    let data = kc
        .auth_infos
        .iter()
        .find_map(|a| a.auth_info.as_ref()?.client_certificate_data.clone())
        .ok_or_else(|| Error::Config("the hub kubeconfig has no client certificate".into()))?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(Error::config)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(Error::config)?;
    let cert = pem.parse_x509().map_err(Error::config)?;
    let user = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((
        user,
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

pub(crate) async fn identity_from(kubeconfig: String) -> Result<Identity, Error> {
    let (user, not_before, not_after) = certificate_facts(&kubeconfig)?;
    let client = client_from(&kubeconfig).await?;
    Ok(Identity {
        user,
        kubeconfig,
        client,
        not_before,
        not_after,
    })
}

pub(crate) fn secret_data(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

pub(crate) async fn save_secret(
    member: &Client,
    cfg: &AgentConfig,
    data: BTreeMap<String, String>,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(member.clone(), AGENT_NAMESPACE);
    let data: BTreeMap<String, ByteString> = data
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(cfg.secret_name.clone()),
            namespace: Some(AGENT_NAMESPACE.into()),
            // Whose it is: another cluster name must not take it for its own.
            labels: Some(BTreeMap::from([(
                CSR_CLUSTER_LABEL.to_string(),
                cfg.cluster_name.clone(),
            )])),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    // The whole Secret is replaced: a pending request and an identity never mix.
    match api.get_opt(&cfg.secret_name).await? {
        Some(old) => {
            let mut s = secret;
            s.metadata.resource_version = old.resource_version();
            api.replace(&cfg.secret_name, &PostParams::default(), &s)
                .await?;
        }
        None => {
            api.create(&PostParams::default(), &secret).await?;
        }
    }
    Ok(())
}

/// The identity from the Secret, or a new one through the bootstrap kubeconfig.
pub(crate) async fn obtain_identity(member: &Client, cfg: &AgentConfig) -> Result<Identity, Error> {
    let secrets: Api<Secret> = Api::namespaced(member.clone(), AGENT_NAMESPACE);
    let mut backoff = Duration::from_secs(1);
    loop {
        let saved = secrets.get_opt(&cfg.secret_name).await?;
        if let Some(owner) = saved
            .as_ref()
            .and_then(|s| s.labels().get(CSR_CLUSTER_LABEL))
            .filter(|owner| **owner != cfg.cluster_name)
        {
            return Err(another_clusters_secret(cfg, owner));
        }
        if let Some(kubeconfig) = saved.as_ref().and_then(|s| secret_data(s, "kubeconfig")) {
            let id = identity_from(kubeconfig).await?;
            if id.user != agent_user(&cfg.cluster_name) {
                let owner = id
                    .user
                    .strip_prefix("system:atoll:cluster:")
                    .and_then(|u| u.strip_suffix(":agent"))
                    .unwrap_or(&id.user);
                return Err(another_clusters_secret(cfg, owner));
            }
            if id.not_after > k8s_openapi::jiff::Timestamp::now().as_second() {
                return Ok(id);
            }
            tracing::warn!(cluster = %cfg.cluster_name, "the saved hub identity has expired; joining again");
        }
        let boot = cfg.bootstrap_kubeconfig.as_deref().ok_or_else(|| {
            Error::Config(format!(
                "cluster {} has no hub identity in Secret {AGENT_NAMESPACE}/{} and no bootstrap kubeconfig was given",
                cfg.cluster_name, cfg.secret_name
            ))
        })?;
        let pending = saved.as_ref().and_then(|s| {
            Some((
                secret_data(s, "pending.key")?,
                secret_data(s, "pending.csr")?,
            ))
        });
        match bootstrap(member, cfg, boot, pending).await {
            Ok(id) => return Ok(id),
            Err(e @ Error::Config(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(cluster = %cfg.cluster_name, error = %e, "joining failed; retrying");
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The Secret holds what another cluster name joined with: this member cluster is registered
/// under that name, and using its identity as another would be refused (or worse, confusing).
pub(crate) fn another_clusters_secret(cfg: &AgentConfig, owner: &str) -> Error {
    Error::Config(format!(
        "Secret {AGENT_NAMESPACE}/{secret} in this cluster holds the hub identity of cluster {owner}, not of {name}: this cluster joined the hub as {owner}. \
         Run the agent with --cluster-name {owner}, or delete the Secret (kubectl -n {AGENT_NAMESPACE} delete secret {secret}) to join under another name",
        secret = cfg.secret_name,
        name = cfg.cluster_name,
    ))
}

/// A new key and a CSR for the cluster's agent identity.
pub(crate) fn new_request(name: &str) -> Result<(String, String), Error> {
    let key = rcgen::KeyPair::generate().map_err(Error::config)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(Error::config)?;
    params.distinguished_name = atoll_runtime::client_subject(
        &agent_user(name),
        &[cluster_group(name), CLUSTERS_GROUP.to_string()],
    )
    .map_err(Error::Config)?;
    let csr = params.serialize_request(&key).map_err(Error::config)?;
    Ok((key.serialize_pem(), csr.pem().map_err(Error::config)?))
}

/// Create a CSR object for `request_pem`; returns its name.
pub(crate) async fn submit(
    hub: &Client,
    name: &str,
    request_pem: &str,
    cfg: &AgentConfig,
) -> Result<String, Error> {
    let csrs: Api<CertificateSigningRequest> = Api::all(hub.clone());
    let mut spec = json!({
        "signerName": "kubernetes.io/kube-apiserver-client",
        "request": ByteString(request_pem.as_bytes().to_vec()),
        "usages": ["client auth", "digital signature"],
    });
    if let Some(s) = cfg.certificate_seconds {
        spec["expirationSeconds"] = json!(s);
    }
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"generateName": format!("{name}-"), "labels": {CSR_CLUSTER_LABEL: name}},
        "spec": spec,
    }))
    .map_err(Error::config)?;
    Ok(csrs.create(&PostParams::default(), &csr).await?.name_any())
}

/// The certificate of a signed CSR; an error if it was denied or failed; `None` while pending.
pub(crate) fn outcome(
    name: &str,
    csr: &CertificateSigningRequest,
) -> Option<Result<String, Error>> {
    let status = csr.status.clone().unwrap_or_default();
    if let Some(cert) = status.certificate {
        return Some(String::from_utf8(cert.0).map_err(Error::config));
    }
    let conds = status.conditions.unwrap_or_default();
    conds
        .iter()
        .any(|c| c.type_ == "Denied" || c.type_ == "Failed")
        .then(|| Err(Error::Denied(name.into())))
}

/// Wait until CSR `csr_name` is signed; the certificate PEM. Until the hub has seen the CSR,
/// reading it is forbidden (polled); then the agent watches it, by name, rather than poll.
pub(crate) async fn wait_signed(hub: &Client, name: &str, csr_name: &str) -> Result<String, Error> {
    use futures::StreamExt;
    let csrs: Api<CertificateSigningRequest> = Api::all(hub.clone());
    let mut logged = false;
    // Polled with back-off while forbidden: thousands of agents joining at once must not
    // keep the hub busy answering them.
    // The hub grants the read within milliseconds of seeing the CSR.
    let mut poll = Duration::from_millis(50);
    loop {
        let csr = match csrs.get_opt(csr_name).await {
            Ok(Some(csr)) => csr,
            // Gone: ask again.
            Ok(None) => return Err(Error::Denied(name.into())),
            Err(kube::Error::Api(e)) if e.code == 403 => {
                tokio::time::sleep(jitter(poll)).await;
                poll = (poll * 3 / 2).min(Duration::from_secs(3));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(done) = outcome(name, &csr) {
            return done;
        }
        if !logged {
            tracing::info!(cluster = %name, csr = %csr_name, "waiting for the hub to accept this cluster (`atoll accept {name}`)");
            logged = true;
        }
        let params = kube::api::WatchParams::default()
            .fields(&format!("metadata.name={csr_name}"))
            .timeout(60);
        let rv = csr.resource_version().unwrap_or_default();
        match csrs.watch(&params, &rv).await {
            Ok(stream) => {
                let mut stream = stream.boxed();
                while let Some(Ok(event)) = stream.next().await {
                    if let kube::core::WatchEvent::Modified(csr) = event
                        && let Some(done) = outcome(name, &csr)
                    {
                        return done;
                    }
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A kubeconfig for the hub (server and CA from `base`) with a client certificate.
pub(crate) fn hub_kubeconfig(
    base: &str,
    cert_pem: &str,
    key_pem: &str,
    user: &str,
) -> Result<String, Error> {
    let (server, ca) = atoll_runtime::kubeconfig_cluster(base).map_err(Error::Config)?;
    Ok(atoll_runtime::kubeconfig(
        "hub",
        &server,
        &ca,
        &user.replace(':', "-"),
        atoll_runtime::Credentials::ClientCertificate { cert_pem, key_pem },
    ))
}

pub(crate) async fn bootstrap(
    member: &Client,
    cfg: &AgentConfig,
    boot: &str,
    pending: Option<(String, String)>,
) -> Result<Identity, Error> {
    let name = &cfg.cluster_name;
    let hub = client_from(boot).await?;
    if register(&hub, cfg).await? {
        tracing::info!(cluster = %name, "created ManagedCluster {name} on the hub");
    }
    let (key, csr_name) = match pending {
        Some(p) => p,
        None => {
            let (key, request) = new_request(name)?;
            let csr_name = submit(&hub, name, &request, cfg).await?;
            tracing::debug!(cluster = %name, csr = %csr_name, "submitted a CSR");
            save_secret(
                member,
                cfg,
                BTreeMap::from([
                    ("pending.key".into(), key.clone()),
                    ("pending.csr".into(), csr_name.clone()),
                ]),
            )
            .await?;
            (key, csr_name)
        }
    };
    let cert = match wait_signed(&hub, name, &csr_name).await {
        Ok(c) => c,
        Err(e) => {
            // Denied or gone: the next attempt makes a new request.
            save_secret(member, cfg, BTreeMap::new()).await?;
            return Err(e);
        }
    };
    tracing::debug!(cluster = %name, csr = %csr_name, "the CSR is signed");
    let kubeconfig = hub_kubeconfig(boot, &cert, &key, &agent_user(name))?;
    adopt(member, cfg, kubeconfig).await
}

/// Create the cluster's ManagedCluster on the hub; false if it exists already.
pub(crate) async fn register(hub: &Client, cfg: &AgentConfig) -> Result<bool, Error> {
    let mcs: Api<ManagedCluster> = Api::all(hub.clone());
    let mut mc = ManagedCluster::new(&cfg.cluster_name, Default::default());
    mc.spec.lease_duration_seconds = cfg.lease_seconds;
    mc.spec.sync_mode = cfg.sync_mode;
    match mcs.create(&PostParams::default(), &mc).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether the hub no longer had this cluster, and now has it again as a new request: its
/// identity is refused because an admin deleted the ManagedCluster (denial or revocation keep
/// it). Asked with the bootstrap identity, which may only create ManagedClusters: creating it
/// is the question, as Open Cluster Management's agent registers a removed cluster again.
pub(crate) async fn registered_again(cfg: &AgentConfig) -> bool {
    let Some(boot) = cfg.bootstrap_kubeconfig.as_deref() else {
        return false;
    };
    let created = async { register(&client_from(boot).await?, cfg).await };
    match created.await {
        Ok(created) => created,
        Err(e) => {
            tracing::debug!(cluster = %cfg.cluster_name, error = %e, "cannot ask the hub with the bootstrap kubeconfig whether this cluster was removed");
            false
        }
    }
}

/// Save a new hub identity in the Secret, then use it.
pub(crate) async fn adopt(
    member: &Client,
    cfg: &AgentConfig,
    kubeconfig: String,
) -> Result<Identity, Error> {
    save_secret(
        member,
        cfg,
        BTreeMap::from([("kubeconfig".into(), kubeconfig.clone())]),
    )
    .await?;
    identity_from(kubeconfig).await
}

/// A new certificate through a CSR made with the current identity (the hub approves renewals).
pub(crate) async fn rotate(
    member: &Client,
    current: &Identity,
    cfg: &AgentConfig,
) -> Result<Identity, Error> {
    let name = &cfg.cluster_name;
    let (key, request) = new_request(name)?;
    let csr_name = submit(&current.client, name, &request, cfg).await?;
    let cert = wait_signed(&current.client, name, &csr_name).await?;
    let kubeconfig = hub_kubeconfig(&current.kubeconfig, &cert, &key, &agent_user(name))?;
    adopt(member, cfg, kubeconfig).await
}
