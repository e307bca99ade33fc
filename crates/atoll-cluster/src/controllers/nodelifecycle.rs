//! Node lifecycle: pod CIDRs for new nodes; a node whose lease lapses is marked `Unknown` and
//! tainted `node.kubernetes.io/unreachable` (NoSchedule and NoExecute); pods on it are evicted
//! once their toleration of that taint runs out; the taints go when the node is Ready again.
//! Pods bound to nodes that no longer exist are deleted (the pod garbage collector).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::Ctx;
use crate::scheduler::tolerates;
use crate::util::{now, record_event};

pub(crate) const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub(crate) const NOT_READY: &str = "node.kubernetes.io/not-ready";
const COMPONENT: &str = "node-controller";

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut evicted: HashSet<String> = HashSet::new();
    loop {
        tick.tick().await;
        let nodes = ctx.caches.nodes.state();
        assign_cidrs(&ctx, &nodes).await;
        for node in &nodes {
            if let Err(e) = check_node(&ctx, node, &mut evicted).await {
                tracing::warn!(node = %node.name_any(), error = %e, "node lifecycle");
            }
        }
        collect_orphans(&ctx, &nodes).await;
    }
}

async fn assign_cidrs(ctx: &Ctx, nodes: &[Arc<Node>]) {
    let Some((base, prefix)) = parse_cidr(&ctx.cfg.cluster_cidr) else {
        tracing::error!(cidr = %ctx.cfg.cluster_cidr, "the cluster CIDR is not an IPv4 range");
        return;
    };
    let used: HashSet<String> = nodes
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
        .collect();
    let slots = if prefix >= 24 {
        1
    } else {
        1u32 << (24 - prefix)
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut taken = used.clone();
    for node in nodes {
        if node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_ref())
            .is_some_and(|c| !c.is_empty())
        {
            continue;
        }
        let Some(cidr) = (0..slots)
            .map(|i| format!("{}/24", Ipv4Addr::from(base + (i << 8))))
            .find(|c| !taken.contains(c))
        else {
            tracing::error!(node = %node.name_any(), "no pod CIDR left in {}", ctx.cfg.cluster_cidr);
            continue;
        };
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match api
            .patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                taken.insert(cidr);
            }
            Err(e) => {
                tracing::warn!(node = %node.name_any(), error = %e, "cannot assign a pod CIDR")
            }
        }
    }
}

fn parse_cidr(cidr: &str) -> Option<(u32, u32)> {
    let (ip, prefix) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    if !(8..=24).contains(&prefix) {
        return None;
    }
    Some((u32::from(ip) & (u32::MAX << (32 - prefix)), prefix))
}

fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

async fn check_node(
    ctx: &Ctx,
    node: &Node,
    evicted: &mut HashSet<String>,
) -> Result<(), kube::Error> {
    let name = node.name_any();
    let api: Api<Node> = Api::all(ctx.client.clone());
    let lease = ctx
        .caches
        .leases
        .get(&ObjectRef::new(&name).within("kube-node-lease"));
    let lease_fresh = lease
        .as_ref()
        .and_then(|l| l.spec.as_ref())
        .is_some_and(|s| {
            let duration = f64::from(s.lease_duration_seconds.unwrap_or(40));
            s.renew_time
                .as_ref()
                .is_some_and(|t| crate::util::age_seconds(&t.0) <= duration)
        });
    // A node that never had a lease gets its grace from its creation.
    let young = lease.is_none()
        && node
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| crate::util::age_seconds(&t.0) < 40.0);
    let mut ready = ready_status(node).unwrap_or_else(|| "Unknown".into());
    if !lease_fresh && !young && ready != "Unknown" {
        let conditions: Vec<_> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|mut c| {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now());
                c
            })
            .collect();
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": conditions}})),
        )
        .await?;
        record_event(
            &ctx.client,
            node,
            "Normal",
            "NodeNotReady",
            &format!("Node {name} status is now: NodeNotReady"),
            COMPONENT,
        )
        .await;
        ready = "Unknown".into();
    }
    // The taints that say why the node cannot be trusted, kept in step with Ready.
    let want: Option<&str> = match ready.as_str() {
        "True" => None,
        "False" => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut desired: Vec<Taint> = taints
        .iter()
        .filter(|t| (t.key != UNREACHABLE && t.key != NOT_READY) || Some(t.key.as_str()) == want)
        .cloned()
        .collect();
    if let Some(key) = want {
        for effect in ["NoSchedule", "NoExecute"] {
            if !desired.iter().any(|t| t.key == key && t.effect == effect) {
                desired.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: Some(now()),
                    value: None,
                });
            }
        }
    }
    if desired != taints {
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": desired}})),
        )
        .await?;
    }
    // Evict what does not tolerate the NoExecute taints (long enough).
    let no_execute: Vec<&Taint> = desired.iter().filter(|t| t.effect == "NoExecute").collect();
    if no_execute.is_empty() {
        return Ok(());
    }
    for pod in ctx.caches.pods.state() {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(name.as_str())
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let key = format!(
            "{}/{}",
            pod.namespace().unwrap_or_default(),
            pod.uid().unwrap_or_default()
        );
        if evicted.contains(&key) {
            continue;
        }
        if should_evict(&pod, &no_execute, ctx.cfg.default_toleration_seconds) {
            let pods: Api<Pod> =
                Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
            match pods.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    evicted.insert(key);
                    record_event(
                        &ctx.client,
                        pod.as_ref(),
                        "Normal",
                        "TaintManagerEviction",
                        &format!(
                            "Marking for deletion Pod {}/{}",
                            pod.namespace().unwrap_or_default(),
                            pod.name_any()
                        ),
                        COMPONENT,
                    )
                    .await;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    evicted.insert(key);
                }
                Err(e) => tracing::warn!(pod = %pod.name_any(), error = %e, "cannot evict"),
            }
        }
    }
    if evicted.len() > 100_000 {
        evicted.clear();
    }
    Ok(())
}

/// Whether the pod's time on a node with these NoExecute taints is up.
fn should_evict(pod: &Pod, taints: &[&Taint], default_seconds: i64) -> bool {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    for taint in taints {
        let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        let seconds = if matching.is_empty() {
            // What DefaultTolerationSeconds would have given the pod.
            if taint.key == UNREACHABLE || taint.key == NOT_READY {
                Some(default_seconds)
            } else {
                Some(0)
            }
        } else if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            None
        } else {
            matching.iter().filter_map(|t| t.toleration_seconds).min()
        };
        let Some(seconds) = seconds else { continue };
        let since = taint
            .time_added
            .as_ref()
            .map(|t| crate::util::age_seconds(&t.0))
            .unwrap_or(f64::MAX);
        if since >= seconds as f64 {
            return true;
        }
    }
    false
}

/// Pods bound to a node that does not exist are deleted at once.
async fn collect_orphans(ctx: &Ctx, nodes: &[Arc<Node>]) {
    let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    for pod in ctx.caches.pods.state() {
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        if names.contains(node) {
            continue;
        }
        // A pod only just bound to a node the cache has not seen yet is given a moment.
        let old = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| crate::util::age_seconds(&t.0) > 40.0);
        if !old {
            continue;
        }
        let api: Api<Pod> =
            Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        if let Err(e) = api.delete(&pod.name_any(), &dp).await {
            tracing::debug!(pod = %pod.name_any(), error = %e, "cannot delete an orphaned pod");
        }
    }
}
