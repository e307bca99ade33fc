//! The order manifests are applied in: what others need first (namespaces and CRDs, then
//! RBAC, service accounts and quotas, config, services, workloads, then webhooks), as Open
//! Cluster Management ranks them; kinds it does not know come last, and the order of the
//! manifest list is kept within a rank.

/// The rank of a kind (lower is applied first).
pub fn rank(group: &str, kind: &str) -> u32 {
    match (group, kind) {
        ("", "Namespace") | ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "PriorityClass") | ("scheduling.k8s.io", "PriorityClass") => 0,
        ("rbac.authorization.k8s.io", _) => 1,
        ("", "ServiceAccount" | "ResourceQuota" | "LimitRange") => 2,
        ("policy", "PodDisruptionBudget") | ("networking.k8s.io", "NetworkPolicy") => 2,
        ("", "Secret" | "ConfigMap" | "PersistentVolumeClaim" | "PersistentVolume") => 3,
        ("storage.k8s.io", _) => 3,
        ("", "Service" | "Endpoints") | ("discovery.k8s.io", "EndpointSlice") => 4,
        ("networking.k8s.io", "Ingress" | "IngressClass") => 4,
        ("apps", _) | ("batch", _) | ("", "Pod" | "ReplicationController") => 5,
        ("autoscaling", _) => 5,
        ("admissionregistration.k8s.io", _) | ("apiregistration.k8s.io", "APIService") => 6,
        _ => 1000,
    }
}

/// Indices of `kinds` (group, kind) in the order to apply them: by rank, stable.
pub fn apply_order(kinds: &[(String, String)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..kinds.len()).collect();
    idx.sort_by_key(|i| rank(&kinds[*i].0, &kinds[*i].1));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_crds_first_workloads_late_unknown_last_and_stable() {
        let kinds: Vec<(String, String)> = [
            ("apps", "Deployment"),
            ("example.com", "Widget"),
            ("", "Service"),
            ("", "Namespace"),
            ("rbac.authorization.k8s.io", "RoleBinding"),
            ("", "ConfigMap"),
            ("apiextensions.k8s.io", "CustomResourceDefinition"),
            ("", "ServiceAccount"),
            ("apps", "StatefulSet"),
            (
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
            ),
        ]
        .iter()
        .map(|(g, k)| (g.to_string(), k.to_string()))
        .collect();
        let order: Vec<&str> = apply_order(&kinds)
            .iter()
            .map(|i| kinds[*i].1.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "Namespace",
                "CustomResourceDefinition",
                "RoleBinding",
                "ServiceAccount",
                "ConfigMap",
                "Service",
                "Deployment",
                "StatefulSet",
                "ValidatingWebhookConfiguration",
                "Widget"
            ]
        );
    }
}
