//! Drift: whether an applied object no longer holds what the work set.
//!
//! The comparison is between the object as the server returned it when it was applied
//! (`applied`, with the server's defaults and normal forms: `0.5` CPU as `500m`, default
//! protocols) and the object as it is now (`live`), at the places the manifest sets
//! (`desired`): a field the manifest does not set may change freely (a controller's status,
//! an HPA's replicas when the manifest leaves them out), one it sets may not.

use serde_json::Value;

/// Whether `live` differs from `applied` anywhere `desired` sets a value.
pub fn drifted(desired: &Value, applied: &Value, live: &Value) -> bool {
    match desired {
        Value::Object(fields) => fields.iter().any(|(k, d)| {
            // What the server owns, and the status, are not the work's to keep.
            if matches!(
                k.as_str(),
                "status"
                    | "resourceVersion"
                    | "uid"
                    | "generation"
                    | "creationTimestamp"
                    | "managedFields"
            ) {
                return false;
            }
            let a = applied.get(k).unwrap_or(&Value::Null);
            let l = live.get(k).unwrap_or(&Value::Null);
            drifted(d, a, l)
        }),
        // Lists are kept whole: an item added, removed or changed by hand is drift.
        _ => applied != live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_what_the_manifest_sets_counts() {
        let desired = json!({"metadata": {"name": "web", "labels": {"app": "web"}},
                             "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "0.5"}}}]}}}});
        // As the server returned it: normalized CPU, a default, a status.
        let applied = json!({"metadata": {"name": "web", "labels": {"app": "web"}, "resourceVersion": "5"},
                             "spec": {"replicas": 2, "revisionHistoryLimit": 10, "template": {"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}}},
                             "status": {"readyReplicas": 0}});
        let mut live = applied.clone();
        live["metadata"]["resourceVersion"] = json!("9");
        live["status"]["readyReplicas"] = json!(2);
        live["spec"]["revisionHistoryLimit"] = json!(3);
        live["metadata"]["labels"]["extra"] = json!("x");
        assert!(
            !drifted(&desired, &applied, &live),
            "status, unset fields and extra labels are free"
        );
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        assert!(drifted(&desired, &applied, &scaled));
        let mut relabelled = live.clone();
        relabelled["metadata"]["labels"]["app"] = json!("other");
        assert!(drifted(&desired, &applied, &relabelled));
        let mut edited = live.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil");
        assert!(drifted(&desired, &applied, &edited), "a list item changed");
        assert!(drifted(&desired, &applied, &Value::Null), "gone");
    }
}
