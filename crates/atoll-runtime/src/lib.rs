//! Plumbing Atoll's controllers share, whatever cluster they act on: timestamps, events,
//! quantities and client-certificate subjects.

pub mod quantity;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

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
