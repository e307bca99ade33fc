//! A ManifestWork's status from what applying its manifests gave: per manifest its
//! `resourceMeta`, conditions (`Applied`, `Available`, `StatusFeedbackSynced`, and Atoll's
//! `Progressing`/`Degraded` from the kind's health rule) and feedback; for the work, the same
//! conditions summed up with the generation they are for, with Open Cluster Management's
//! reasons. Pure: the time is given.

use atoll_api::work::{
    CONDITION_APPLIED, CONDITION_AVAILABLE, CONDITION_DEGRADED, CONDITION_FEEDBACK_SYNCED,
    CONDITION_PROGRESSING, FeedbackValue, ManifestCondition, ManifestResourceMeta,
    ManifestResourceStatus, ManifestWorkStatus, ObservedCondition, StatusFeedback,
};

use crate::feedback::Health;

/// What became of one manifest.
#[derive(Debug, Clone)]
pub struct ManifestResult {
    pub meta: ManifestResourceMeta,
    /// Applied (or, read only, found), or why not.
    pub applied: Result<(), String>,
    /// Whether the object exists in the cluster.
    pub exists: bool,
    pub feedback: Result<Vec<FeedbackValue>, String>,
    /// The kind's health; `None` when there is no object to judge.
    pub health: Option<Health>,
    /// A Job or Pod that ran to completion.
    pub finished: bool,
}

fn cond(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: &str,
) -> ObservedCondition {
    ObservedCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: now.into(),
        observed_generation: Some(generation),
    }
}

/// Keep each condition's transition time where its status did not change.
fn carry_times(new: &mut [ObservedCondition], old: &[ObservedCondition]) {
    for c in new {
        if let Some(o) = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
}

fn name_of(m: &ManifestResourceMeta) -> String {
    let kind = if m.kind.is_empty() {
        "manifest"
    } else {
        &m.kind
    };
    match (m.namespace.is_empty(), m.name.is_empty()) {
        (_, true) => format!("{kind} #{}", m.ordinal),
        (true, false) => format!("{kind} {}", m.name),
        (false, false) => format!("{kind} {}/{}", m.namespace, m.name),
    }
}

/// The work's status for `results` (in manifest order), at `generation`; `old` keeps the
/// transition times of conditions that did not change.
pub fn work_status(
    results: &[ManifestResult],
    generation: i64,
    old: Option<&ManifestWorkStatus>,
    now: &str,
) -> ManifestWorkStatus {
    let old_manifests = old
        .map(|o| o.resource_status.manifests.clone())
        .unwrap_or_default();
    let mut manifests = Vec::with_capacity(results.len());
    for r in results {
        let mut conditions = vec![
            match &r.applied {
                Ok(()) => cond(
                    CONDITION_APPLIED,
                    true,
                    "AppliedManifestComplete",
                    "Apply manifest complete".into(),
                    generation,
                    now,
                ),
                Err(why) => cond(
                    CONDITION_APPLIED,
                    false,
                    "AppliedManifestFailed",
                    why.clone(),
                    generation,
                    now,
                ),
            },
            if r.exists {
                cond(
                    CONDITION_AVAILABLE,
                    true,
                    "ResourceAvailable",
                    "Resource is available".into(),
                    generation,
                    now,
                )
            } else if r.meta.resource.is_empty() {
                cond(
                    CONDITION_AVAILABLE,
                    false,
                    "IncompleteResourceMeta",
                    "the manifest does not say what it is (apiVersion, kind, name)".into(),
                    generation,
                    now,
                )
            } else {
                cond(
                    CONDITION_AVAILABLE,
                    false,
                    "ResourceNotAvailable",
                    "Resource is not available".into(),
                    generation,
                    now,
                )
            },
        ];
        match &r.feedback {
            Ok(v) if !v.is_empty() => conditions.push(cond(
                CONDITION_FEEDBACK_SYNCED,
                true,
                "StatusFeedbackSynced",
                String::new(),
                generation,
                now,
            )),
            Ok(_) => {}
            Err(why) => conditions.push(cond(
                CONDITION_FEEDBACK_SYNCED,
                false,
                "StatusFeedbackSyncFailed",
                why.clone(),
                generation,
                now,
            )),
        }
        if let Some(h) = &r.health {
            let (progressing, degraded, message) = match h {
                Health::Ready => (false, false, String::new()),
                Health::Progressing(m) => (true, false, m.clone()),
                Health::Degraded(m) => (false, true, m.clone()),
            };
            conditions.push(cond(
                CONDITION_PROGRESSING,
                progressing,
                if progressing {
                    "Progressing"
                } else {
                    "ProgressingCompleted"
                },
                if progressing {
                    message.clone()
                } else {
                    String::new()
                },
                generation,
                now,
            ));
            conditions.push(cond(
                CONDITION_DEGRADED,
                degraded,
                if degraded { "Degraded" } else { "NotDegraded" },
                if degraded { message } else { String::new() },
                generation,
                now,
            ));
        }
        if let Some(o) = old_manifests
            .iter()
            .find(|o| o.resource_meta.ordinal == r.meta.ordinal)
        {
            carry_times(&mut conditions, &o.conditions);
        }
        manifests.push(ManifestCondition {
            resource_meta: r.meta.clone(),
            status_feedback: StatusFeedback {
                values: r.feedback.clone().unwrap_or_default(),
            },
            conditions,
        });
    }

    // The work as a whole: any manifest failing fails it; unknown before anything is known.
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.applied
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", name_of(&r.meta)))
        })
        .collect();
    let missing: Vec<String> = results
        .iter()
        .filter(|r| !r.exists)
        .map(|r| name_of(&r.meta))
        .collect();
    let progressing: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.health {
            Some(Health::Progressing(m)) => Some(format!("{}: {m}", name_of(&r.meta))),
            _ => None,
        })
        .collect();
    let degraded: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.health {
            Some(Health::Degraded(m)) => Some(format!("{}: {m}", name_of(&r.meta))),
            _ => None,
        })
        .collect();
    let mut conditions = vec![
        if failed.is_empty() {
            cond(
                CONDITION_APPLIED,
                true,
                "AppliedManifestWorkComplete",
                "Apply manifest work complete".into(),
                generation,
                now,
            )
        } else {
            cond(
                CONDITION_APPLIED,
                false,
                "AppliedManifestWorkFailed",
                format!(
                    "Failed to apply {} of {} manifests: {}",
                    failed.len(),
                    results.len(),
                    failed.join("; ")
                ),
                generation,
                now,
            )
        },
        if missing.is_empty() {
            cond(
                CONDITION_AVAILABLE,
                true,
                "ResourcesAvailable",
                "All resources are available".into(),
                generation,
                now,
            )
        } else {
            cond(
                CONDITION_AVAILABLE,
                false,
                "ResourcesNotAvailable",
                format!(
                    "{} of {} resources are not available: {}",
                    missing.len(),
                    results.len(),
                    missing.join(", ")
                ),
                generation,
                now,
            )
        },
        cond(
            CONDITION_PROGRESSING,
            !progressing.is_empty(),
            if progressing.is_empty() {
                "ResourcesReady"
            } else {
                "ResourcesProgressing"
            },
            progressing.join("; "),
            generation,
            now,
        ),
        cond(
            CONDITION_DEGRADED,
            !degraded.is_empty(),
            if degraded.is_empty() {
                "ResourcesHealthy"
            } else {
                "ResourcesDegraded"
            },
            degraded.join("; "),
            generation,
            now,
        ),
    ];
    let has_jobs = results.iter().any(|r| r.meta.kind == "Job");
    if has_jobs {
        let all_done = results
            .iter()
            .filter(|r| r.meta.kind == "Job")
            .all(|r| r.finished);
        conditions.push(cond(
            "Complete",
            all_done,
            if all_done {
                "WorkComplete"
            } else {
                "WorkNotComplete"
            },
            String::new(),
            generation,
            now,
        ));
    }
    if let Some(o) = old {
        carry_times(&mut conditions, &o.conditions);
    }
    ManifestWorkStatus {
        conditions,
        resource_status: ManifestResourceStatus { manifests },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        ordinal: i32,
        kind: &str,
        applied: Result<(), String>,
        health: Option<Health>,
    ) -> ManifestResult {
        ManifestResult {
            meta: ManifestResourceMeta {
                ordinal,
                group: "apps".into(),
                version: "v1".into(),
                kind: kind.into(),
                resource: if kind.is_empty() {
                    String::new()
                } else {
                    format!("{}s", kind.to_lowercase())
                },
                name: if kind.is_empty() {
                    String::new()
                } else {
                    "web".into()
                },
                namespace: if kind.is_empty() {
                    String::new()
                } else {
                    "demo".into()
                },
            },
            exists: applied.is_ok(),
            applied,
            feedback: Ok(vec![]),
            health,
            finished: false,
        }
    }

    fn get<'a>(s: &'a ManifestWorkStatus, t: &str) -> &'a ObservedCondition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn one_bad_manifest_fails_the_work_naming_it_while_the_rest_apply() {
        let results = vec![
            result(0, "Deployment", Ok(()), Some(Health::Ready)),
            result(1, "", Err("manifest 1 has no kind".into()), None),
        ];
        let s = work_status(&results, 3, None, "t0");
        let applied = get(&s, "Applied");
        assert_eq!(
            (applied.status.as_str(), applied.reason.as_str()),
            ("False", "AppliedManifestWorkFailed")
        );
        assert!(
            applied
                .message
                .contains("manifest #1: manifest 1 has no kind"),
            "{}",
            applied.message
        );
        assert_eq!(applied.observed_generation, Some(3));
        assert_eq!(s.resource_status.manifests[0].conditions[0].status, "True");
        assert_eq!(
            s.resource_status.manifests[1].conditions[1].reason,
            "IncompleteResourceMeta"
        );
    }

    #[test]
    fn health_sums_up_and_times_carry_over() {
        let results = vec![result(
            0,
            "Deployment",
            Ok(()),
            Some(Health::Progressing("1 of 2".into())),
        )];
        let s1 = work_status(&results, 1, None, "t0");
        assert_eq!(get(&s1, "Progressing").status, "True");
        assert_eq!(get(&s1, "Applied").status, "True");
        let s2 = work_status(&results, 1, Some(&s1), "t1");
        assert_eq!(
            get(&s2, "Applied").last_transition_time,
            "t0",
            "unchanged: time kept"
        );
        let ready = vec![result(0, "Deployment", Ok(()), Some(Health::Ready))];
        let s3 = work_status(&ready, 1, Some(&s2), "t2");
        assert_eq!(get(&s3, "Progressing").status, "False");
        assert_eq!(get(&s3, "Progressing").last_transition_time, "t2");
        let degraded = vec![result(
            0,
            "Job",
            Ok(()),
            Some(Health::Degraded("Job failed".into())),
        )];
        let s4 = work_status(&degraded, 1, None, "t3");
        assert_eq!(get(&s4, "Degraded").status, "True");
        assert_eq!(get(&s4, "Complete").status, "False");
    }
}
