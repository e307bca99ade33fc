//! CronJob: a Job from the template at each time of the schedule (in `timeZone`, UTC
//! otherwise), named `NAME-<minutes since the epoch>` so that a time is run once; not when
//! suspended, nor when later than `startingDeadlineSeconds`; with `Forbid` not while one of its
//! Jobs runs (the run starts when it is done, as Kubernetes does), with `Replace` instead of
//! those. Finished Jobs beyond the history limits are deleted, oldest first.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{Timestamp, ToSpan, tz::TimeZone};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use serde_json::json;

use super::update_status;
use super::{Ctx, Key, controller_ref, live};
use crate::Error;

/// The oldest missed time still started: a CronJob that was away longer runs its latest one.
const LOOK_BACK_DAYS: i64 = 7;

fn finished(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    ["Complete", "Failed"].into_iter().find(|t| {
        conditions
            .iter()
            .any(|c| c.type_ == *t && c.status == "True")
    })
}

pub(crate) async fn reconcile(
    ctx: Arc<Ctx>,
    (namespace, name): Key,
) -> Result<Option<Duration>, Error> {
    let Some(cj) = live(&ctx.caches.cronjobs, &namespace, &name) else {
        return Ok(None);
    };
    let spec = cj.spec.clone().unwrap_or_default();
    let status = cj.status.clone().unwrap_or_default();
    let schedule = match atoll_runtime::cron::Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(cronjob = %name, error = %e, "unusable schedule");
            return Ok(None);
        }
    };
    let zone = match spec.time_zone.as_deref().filter(|z| !z.is_empty()) {
        None => TimeZone::UTC,
        Some(z) => match TimeZone::get(z) {
            Ok(tz) => tz,
            Err(e) => {
                tracing::warn!(cronjob = %name, error = %e, "unknown time zone");
                return Ok(None);
            }
        },
    };
    let uid = cj.uid().unwrap_or_default();
    let jobs: Vec<Arc<Job>> = ctx
        .caches
        .jobs
        .state()
        .into_iter()
        .filter(|j| {
            j.metadata.namespace.as_deref() == Some(namespace.as_str())
                && j.owner_references()
                    .iter()
                    .any(|r| r.controller == Some(true) && r.uid == uid)
        })
        .collect();
    let running: Vec<&Arc<Job>> = jobs
        .iter()
        .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .collect();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };

    // Is a time of the schedule due?
    let now = Timestamp::now();
    let local_now = now.to_zoned(zone.clone()).datetime();
    let since = status
        .last_schedule_time
        .as_ref()
        .or(cj.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(now)
        .max(
            now.checked_sub((LOOK_BACK_DAYS * 24).hours())
                .unwrap_or(now),
        );
    let since = since.to_zoned(zone.clone()).datetime();
    let mut last_schedule = status.last_schedule_time.clone();
    let due = schedule
        .last_between(since, local_now)
        .and_then(|t| t.to_zoned(zone.clone()).ok())
        .map(|z| z.timestamp());
    if let Some(due) = due
        && spec.suspend != Some(true)
    {
        let late = (now.as_second() - due.as_second()).max(0);
        let too_late = spec.starting_deadline_seconds.is_some_and(|d| late > d);
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        let blocked = policy == "Forbid" && !running.is_empty();
        if too_late {
            tracing::info!(cronjob = %name, scheduled = %due, "missed a start: later than startingDeadlineSeconds");
        } else if !blocked {
            if policy == "Replace" {
                for j in &running {
                    match jobs_api.delete(&j.name_any(), &background).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            let job = job_for(&cj, due);
            match jobs_api.create(&PostParams::default(), &job).await {
                Ok(_) => {}
                // This time's Job exists already (made before a restart).
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            last_schedule = Some(Time(due));
        }
    }

    // History: the oldest finished Jobs beyond the limits go.
    for (outcome, keep) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished(j) == Some(outcome) && j.metadata.deletion_timestamp.is_none())
            .collect();
        done.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let extra = done.len().saturating_sub(keep.max(0) as usize);
        for j in done.iter().take(extra) {
            match jobs_api.delete(&j.name_any(), &background).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(job = %j.name_any(), error = %e, "cannot delete an old Job")
                }
            }
        }
    }

    // Status: the Jobs running, when one last started and last succeeded.
    let active: Vec<ObjectReference> = running
        .iter()
        .map(|j| ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: Some(j.name_any()),
            namespace: j.namespace(),
            uid: j.uid(),
            resource_version: j.resource_version(),
            ..Default::default()
        })
        .collect();
    let last_successful = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.clone())
        .max_by_key(|t| t.0)
        .or(status.last_successful_time.clone());
    let new_status = json!({
        "active": active,
        "lastScheduleTime": last_schedule,
        "lastSuccessfulTime": last_successful,
    });
    let old_status = json!({
        "active": status.active.unwrap_or_default(),
        "lastScheduleTime": status.last_schedule_time,
        "lastSuccessfulTime": status.last_successful_time,
    });
    if !update_status::<CronJob>(&ctx, &namespace, &name, &new_status, &old_status).await? {
        return Ok(None);
    }
    // Back at the next time of the schedule.
    let next = schedule
        .next_after(local_now)
        .and_then(|t| t.to_zoned(zone).ok())
        .map(|z| z.timestamp());
    Ok(next.map(|t| {
        let wait = (t.as_millisecond() - now.as_millisecond()).max(0) as u64;
        Duration::from_millis(wait + 100).min(Duration::from_secs(3600))
    }))
}

/// The Job for the time `due`: the template, named after the CronJob and the minute.
fn job_for(cj: &CronJob, due: Timestamp) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        "batch.kubernetes.io/cronjob-scheduled-timestamp".into(),
        due.to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", cj.name_any(), due.as_second() / 60)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}
