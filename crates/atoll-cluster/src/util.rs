//! Small helpers the controllers share: timestamps, conditions, events.

pub(crate) use atoll_runtime::{age_seconds, now, now_micro, record_event};

/// Whether a pod is Ready (its `Ready` condition is True).
pub(crate) fn pod_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// When a pod last became Ready.
pub(crate) fn pod_ready_since(
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Option<k8s_openapi::jiff::Timestamp> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether a pod has finished (it will not run again).
pub(crate) fn pod_finished(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Does `labels` match a map selector (a Service's), which must not be empty?
pub(crate) fn map_selector_matches(
    selector: &std::collections::BTreeMap<String, String>,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
