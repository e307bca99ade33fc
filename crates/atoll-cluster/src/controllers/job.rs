//! Job: run pods from the template until enough of them succeed (`completions`, at most
//! `parallelism` at a time), or too many fail (`backoffLimit`), or time runs out
//! (`activeDeadlineSeconds`); then the Job is Complete or Failed, its remaining pods are
//! stopped, and after `ttlSecondsAfterFinished` it is deleted (its pods with it).
//!
//! Succeeded and failed pods are counted from the pods that exist (kube-controller-manager
//! tracks them with a pod finalizer so that deleting a finished pod does not lose its count;
//! here a deleted finished pod is no longer counted).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PropagationPolicy};
use serde_json::json;

use super::update_status;
use super::{BURST, Ctx, Key, create_pods, delete_pods, live, pod_of, pods_controlled_by};
use crate::Error;
use crate::util::{now, pod_ready};

/// The first wait before a failed pod is replaced; doubled per failure, at most six minutes
/// (as kube-controller-manager's).
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// A pod of the Job that still runs (or is about to): not finished, not going.
fn running(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed")
}

fn seconds_since(t: &Time) -> f64 {
    crate::util::age_seconds(&t.0)
}

/// When the pod stopped (its last container's finish), for the back-off.
fn finished_at(p: &Pod) -> Option<Time> {
    p.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
        .max_by_key(|t| t.0)
}

fn condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

pub(crate) async fn reconcile(
    ctx: Arc<Ctx>,
    (namespace, name): Key,
) -> Result<Option<Duration>, Error> {
    let Some(job) = live(&ctx.caches.jobs, &namespace, &name) else {
        return Ok(None);
    };
    let uid = job.uid().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let pods = pods_controlled_by(&ctx, &namespace, &uid);
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| running(p)).collect();
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i32;
    let failed_pods = pods.iter().filter(|p| phase(p) == "Failed").count() as i32;
    // Under OnFailure the kubelet restarts failing containers in place: those count too.
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restarts: i32 = if on_failure {
        active
            .iter()
            .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
            .flatten()
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    // What counts against backoffLimit (status.failed counts only the failed pods).
    let failures = failed_pods + restarts;
    let finished = condition(&job, "Complete") || condition(&job, "Failed");
    let mut conditions = status.conditions.clone().unwrap_or_default();
    let mut completion_time = status.completion_time.clone();
    let mut start_time = status.start_time.clone();
    let mut requeue: Option<Duration> = None;

    if finished {
        stop(&ctx, &job, &active).await;
        return ttl(&ctx, &job, &namespace, &name).await;
    }
    if spec.suspend == Some(true) {
        stop(&ctx, &job, &active).await;
        set(
            &mut conditions,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
        );
    } else {
        if condition(&job, "Suspended") {
            set(
                &mut conditions,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
            );
        }
        let started = start_time.get_or_insert_with(now).clone();
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let deadline = spec.active_deadline_seconds.map(|s| s as f64);
        let elapsed = seconds_since(&started);
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let done = match completions {
            Some(c) => succeeded >= c,
            // A work queue: done when one succeeded and the others have stopped.
            None => succeeded > 0 && active.is_empty(),
        };
        let failure = if failures > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".to_string(),
            ))
        } else if deadline.is_some_and(|d| elapsed >= d) {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline".to_string(),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            // As kube-controller-manager (1.31+): the failure target first, then Failed once
            // the pods are gone.
            set(&mut conditions, "FailureTarget", "True", reason, &message);
            stop(&ctx, &job, &active).await;
            set(&mut conditions, "Failed", "True", reason, &message);
            completion_time = None;
        } else if done {
            let msg = "Reached expected number of succeeded pods";
            set(
                &mut conditions,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                msg,
            );
            stop(&ctx, &job, &active).await;
            set(
                &mut conditions,
                "Complete",
                "True",
                "CompletionsReached",
                msg,
            );
            completion_time = Some(now());
        } else {
            // Pods still wanted, at most `parallelism` at a time; after failures, wait.
            let wanted = match completions {
                Some(c) => parallelism.min(c - succeeded),
                None if succeeded > 0 => 0,
                None => parallelism,
            }
            .max(0) as usize;
            let missing = wanted.saturating_sub(active.len()).min(BURST);
            let wait = if failures > 0 {
                let doublings = (failures - 1).clamp(0, 10) as u32;
                let delay = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX);
                let last = pods
                    .iter()
                    .filter(|p| phase(p) == "Failed")
                    .filter_map(|p| finished_at(p))
                    .max_by_key(|t| t.0)
                    .map_or(f64::MAX, |t| seconds_since(&t));
                (delay.as_secs_f64() - last).max(0.0)
            } else {
                0.0
            };
            if missing > 0 && wait > 0.0 {
                requeue = Some(Duration::from_secs_f64(wait + 0.05));
            } else if missing > 0 {
                create(&ctx, &job, missing).await?;
            }
            if let Some(d) = deadline {
                let left = Duration::from_secs_f64((d - elapsed).max(0.0) + 0.05);
                requeue = Some(requeue.map_or(left, |r| r.min(left)));
            }
        }
    }
    // Status from what the cache now shows.
    let pods = pods_controlled_by(&ctx, &namespace, &uid);
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| running(p)).collect();
    let new_status = json!({
        "active": active.len(),
        "ready": active.iter().filter(|p| pod_ready(p)).count(),
        "succeeded": succeeded,
        "failed": failed_pods,
        "startTime": start_time,
        "completionTime": completion_time,
        "conditions": conditions,
    });
    let old_status = json!({
        "active": status.active.unwrap_or(0),
        "ready": status.ready.unwrap_or(0),
        "succeeded": status.succeeded.unwrap_or(0),
        "failed": status.failed.unwrap_or(0),
        "startTime": status.start_time,
        "completionTime": status.completion_time,
        "conditions": status.conditions.unwrap_or_default(),
    });
    if !update_status::<Job>(&ctx, &namespace, &name, &new_status, &old_status).await? {
        return Ok(None);
    }
    Ok(requeue)
}

/// Set a condition, keeping its transition time when its status does not change.
fn set(conditions: &mut Vec<JobCondition>, type_: &str, status: &str, reason: &str, message: &str) {
    let t = now();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(t.clone());
            }
            c.status = status.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
            c.last_probe_time = Some(t);
        }
        None => conditions.push(JobCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_probe_time: Some(t.clone()),
            last_transition_time: Some(t),
        }),
    }
}

/// Stop (delete) the Job's pods that still run.
async fn stop(ctx: &Ctx, job: &Job, active: &[&Arc<Pod>]) {
    let names: Vec<String> = active.iter().map(|p| p.name_any()).collect();
    let namespace = job.namespace().unwrap_or_default();
    let owner = format!("Job {namespace}/{}", job.name_any());
    delete_pods(ctx, &namespace, &names, &owner).await;
}

/// A finished Job with `ttlSecondsAfterFinished` is deleted that long after it finished.
async fn ttl(ctx: &Ctx, job: &Job, namespace: &str, name: &str) -> Result<Option<Duration>, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(None);
    };
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .filter_map(|c| c.last_transition_time.clone())
        .max_by_key(|t| t.0);
    let since = finished.map_or(0.0, |t| seconds_since(&t));
    let left = ttl as f64 - since;
    if left > 0.0 {
        return Ok(Some(Duration::from_secs_f64(left + 0.05)));
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match jobs.delete(name, &dp).await {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn create(ctx: &Ctx, job: &Job, n: usize) -> Result<(), Error> {
    let namespace = job.namespace().unwrap_or_default();
    let owner = format!("Job {namespace}/{}", job.name_any());
    let template = pod_of(job, job.spec.as_ref().map(|s| s.template.clone()));
    let created = create_pods(ctx, &namespace, vec![template; n], &owner).await;
    if created.len() < n {
        return Err(Error::Config(format!(
            "created {} of {n} pods for {owner}",
            created.len()
        )));
    }
    Ok(())
}
