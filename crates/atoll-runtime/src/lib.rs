//! Plumbing Atoll's controllers share, whatever cluster they act on: timestamps, events,
//! quantities, client-certificate subjects and kubeconfigs.

pub mod cron;
pub mod https;
pub mod jsonpath;
pub mod quantity;
pub mod queue;
pub mod reflect;
pub mod relay;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

/// Stops a task when dropped: a task that lives as long as whatever holds this.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

pub fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Seconds since `t` (negative if it lies ahead).
pub fn age_seconds(t: &k8s_openapi::jiff::Timestamp) -> f64 {
    let d = k8s_openapi::jiff::Timestamp::now().duration_since(*t);
    d.as_secs_f64()
}

/// Record a core/v1 Event about `obj` (best effort: a lost event is logged, never fatal).
pub async fn record_event<K>(
    client: &Client,
    obj: &K,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let namespace = obj.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", obj.name_any())),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).to_string()),
            kind: Some(K::kind(&()).to_string()),
            name: Some(obj.name_any()),
            namespace: obj.namespace(),
            uid: obj.uid(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        first_timestamp: Some(now()),
        last_timestamp: Some(now()),
        count: Some(1),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        ..Default::default()
    };
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, reason, "could not record an event");
    }
}

/// The subject of a Kubernetes client certificate: CN = the user, O = its groups (at most two).
///
/// rcgen keeps one value per attribute type, so the second group goes in under the O attribute's
/// OID spelled as a custom type: the certificate then carries two O attributes, as Kubernetes
/// reads groups. More than two groups is an error rather than a silently dropped group.
pub fn client_subject(cn: &str, groups: &[String]) -> Result<rcgen::DistinguishedName, String> {
    use rcgen::DnType;
    if groups.len() > 2 {
        return Err(format!(
            "a client certificate carries at most 2 groups here, not {} ({groups:?})",
            groups.len()
        ));
    }
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(g) = groups.first() {
        dn.push(DnType::OrganizationName, g.as_str());
    }
    if let Some(g) = groups.get(1) {
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 10]), g.as_str());
    }
    Ok(dn)
}

/// The user (CN) and groups (each O) of a client certificate that has been verified, as
/// Kubernetes reads them; `None` if it has no CN.
pub fn certificate_subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some((user, groups))
}

/// The user and groups a CSR asks for, if it is a request for a client certificate of the
/// API server (`kubernetes.io/kube-apiserver-client`, client-auth usages only); else why not.
pub fn client_csr_subject(
    spec: &k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec,
) -> Result<(String, std::collections::BTreeSet<String>), String> {
    const SIGNER: &str = "kubernetes.io/kube-apiserver-client";
    if spec.signer_name != SIGNER {
        return Err(format!("signer {:?} is not {SIGNER}", spec.signer_name));
    }
    let usages = spec.usages.clone().unwrap_or_default();
    if !usages.iter().any(|u| u == "client auth")
        || usages.iter().any(|u| {
            !["client auth", "digital signature", "key encipherment"].contains(&u.as_str())
        })
    {
        return Err(format!(
            "usages {usages:?} are not those of a client certificate"
        ));
    }
    request_subject(&spec.request.0)
}

/// The CN and the set of O of a PEM certificate request (a CSR's `spec.request`): the user and
/// groups it asks for; an error if it does not parse or has not exactly one CN.
pub fn request_subject(pem: &[u8]) -> Result<(String, std::collections::BTreeSet<String>), String> {
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM: {e}"))?;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| format!("not a certificate request: {e}"))?;
    let subject = &req.certification_request_info.subject;
    let cn = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect::<Vec<_>>();
    let [cn] = cn.as_slice() else {
        return Err("the subject must have exactly one CN".into());
    };
    let orgs = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(String::from))
        .collect();
    Ok((cn.to_string(), orgs))
}

/// How the user of a kubeconfig authenticates.
pub enum Credentials<'a> {
    /// A client certificate and its key, both PEM.
    ClientCertificate { cert_pem: &'a str, key_pem: &'a str },
    /// A bearer token.
    Token(&'a str),
}

/// A kubeconfig with one cluster, one user and one context, the cluster and context named
/// `name`; `ca_data` is the CA as a kubeconfig's `certificate-authority-data` (base64 PEM).
pub fn kubeconfig(
    name: &str,
    server: &str,
    ca_data: &str,
    user: &str,
    creds: Credentials,
) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let auth = match creds {
        Credentials::ClientCertificate { cert_pem, key_pem } => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert_pem),
            b64(key_pem)
        ),
        Credentials::Token(t) => format!("    token: {t}\n"),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_data}\nusers:\n- name: {user}\n  user:\n{auth}contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {user}\ncurrent-context: {name}\n"
    )
}

/// The server and `certificate-authority-data` of a kubeconfig's current cluster (its first,
/// without a current context).
pub fn kubeconfig_cluster(yaml: &str) -> Result<(String, String), String> {
    let kc =
        kube::config::Kubeconfig::from_yaml(yaml).map_err(|e| format!("not a kubeconfig: {e}"))?;
    let current = kc
        .current_context
        .as_ref()
        .and_then(|c| kc.contexts.iter().find(|x| &x.name == c))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kc
        .clusters
        .iter()
        .find(|c| current.as_ref().is_none_or(|n| &c.name == n))
        .and_then(|c| c.cluster.clone())
        .ok_or("the kubeconfig names no cluster")?;
    let server = cluster.server.ok_or("the kubeconfig names no server")?;
    Ok((
        server,
        cluster.certificate_authority_data.unwrap_or_default(),
    ))
}
