//! The scheduler: binds each pending pod to the node that fits it best.
//!
//! Filters: the node is Ready and schedulable, its `NoSchedule`/`NoExecute` taints are
//! tolerated, `nodeSelector` and required node affinity match, and the pod's requests fit in
//! what is left of the node's allocatable. Score: least allocated (CPU and memory), ties going
//! to the node with fewer pods. Binding is a `pods/binding` create; the decision is assumed in
//! the cache at once so that binds can run in parallel without overcommitting a node. A pod
//! that fits nowhere gets `PodScheduled=False` and a `FailedScheduling` event, and is tried
//! again when a node changes or a pod goes away (no sooner than its back-off: 1 s doubling to
//! 10 s, as kube-scheduler), and at least every 30 seconds. Reports are not repeated for an
//! unchanged reason, and come at most every 5 s per pod: a backlog of pods waiting for nodes
//! must not turn every node change into a write per pod.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, Node, NodeSelectorRequirement, ObjectReference, Pod, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::quantity::Resources;
use crate::util::record_event;

/// The scheduler name pods ask for (or leave empty).
pub const SCHEDULER_NAME: &str = "default-scheduler";
const PARALLEL_BINDS: usize = 64;
const RETRY_UNSCHEDULABLE: Duration = Duration::from_secs(30);
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The least time between two reports for one pod with different reasons.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// A report with an unchanged reason is repeated only this often.
const REPORT_SAME_EVERY: Duration = Duration::from_secs(300);

/// A pod that fitted nowhere at its last attempt.
struct Unschedulable {
    at: Instant,
    backoff: Duration,
    /// The last reason reported and when.
    reported: Option<(String, Instant)>,
}

struct NodeInfo {
    node: Arc<Node>,
    allocatable: Resources,
    requested: Resources,
    /// What scheduling depends on; a change retries unschedulable pods.
    signature: String,
}

struct Placed {
    node: String,
    req: Resources,
    /// Bound by us, not yet seen bound in the watch.
    assumed: bool,
}

#[derive(Default)]
struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    placed: HashMap<String, Placed>,
    pending: HashMap<String, Arc<Pod>>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    unschedulable: HashMap<String, Unschedulable>,
    /// When something last changed that may let unschedulable pods fit.
    changed_at: Option<Instant>,
    /// Whether `changed_at` moved since unschedulable pods were last looked at.
    retry_due: bool,
}

enum Input {
    Pod(Box<watcher::Event<Pod>>),
    Node(Box<watcher::Event<Node>>),
}

/// The result of one bind, sent back to the loop.
struct BindResult {
    uid: String,
    outcome: Result<(), kube::Error>,
}

/// Run the scheduler until the process ends.
pub async fn run(client: Client) -> Result<(), Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pod_events =
        watcher(pods, watcher::Config::default()).map(|e| e.map(|e| Input::Pod(Box::new(e))));
    let node_events =
        watcher(nodes, watcher::Config::default()).map(|e| e.map(|e| Input::Node(Box::new(e))));
    let mut inputs = futures::stream::select(pod_events.boxed(), node_events.boxed());
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<BindResult>();
    let binds = Arc::new(tokio::sync::Semaphore::new(PARALLEL_BINDS));
    let mut cache = Cache::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            input = inputs.next() => {
                match input {
                    None => return Ok(()),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "scheduler watch failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Some(Ok(i)) => cache.apply(i),
                }
                // Take everything already waiting before deciding.
                while let Some(Some(Ok(i))) = futures::FutureExt::now_or_never(inputs.next()) {
                    cache.apply(i);
                }
            }
            Some(done) = done_rx.recv() => cache.bind_done(done),
            _ = tick.tick() => cache.retry_due = true,
        }
        if cache.retry_due {
            cache.retry_due = false;
            cache.requeue_unschedulable(Instant::now());
        }
        while let Some(uid) = cache.queue.pop_front() {
            cache.queued.remove(&uid);
            let Some(pod) = cache.pending.get(&uid).cloned() else {
                continue;
            };
            match cache.choose(&pod) {
                Ok(node) => {
                    let req = Resources::of_pod(&pod);
                    cache.place(&uid, node.clone(), req, true);
                    let permit = binds.clone().acquire_owned().await;
                    let client = client.clone();
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        let outcome = bind(&client, &pod, &node).await;
                        drop(permit);
                        let _ = done.send(BindResult { uid, outcome });
                    });
                }
                Err(message) => {
                    if cache.failed(&uid, &message) {
                        let client = client.clone();
                        tokio::spawn(
                            async move { report_unschedulable(&client, &pod, &message).await },
                        );
                    }
                }
            }
        }
    }
}

async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name_any()),
            uid: pod.uid(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        },
    };
    api.create_subresource::<Binding, serde_json::Value>(
        "binding",
        &pod.name_any(),
        &PostParams::default(),
        &binding,
    )
    .await
    .map(|_| ())
}

async fn report_unschedulable(client: &Client, pod: &Pod, message: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let already = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message));
    if !already {
        let status = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastTransitionTime": crate::util::now(),
        }]}});
        if let Err(e) = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&status),
            )
            .await
        {
            tracing::debug!(pod = %pod.name_any(), error = %e, "cannot set PodScheduled=False");
        }
    }
    record_event(
        client,
        pod,
        "Warning",
        "FailedScheduling",
        message,
        SCHEDULER_NAME,
    )
    .await;
}

impl Cache {
    /// Something changed that may let unschedulable pods fit.
    fn changed(&mut self) {
        self.changed_at = Some(Instant::now());
        self.retry_due = true;
    }

    /// Queue the unschedulable pods whose back-off is over and that something changed for
    /// since their last attempt, or whose last attempt is older than the periodic retry.
    fn requeue_unschedulable(&mut self, now: Instant) {
        let changed_at = self.changed_at;
        let due: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|(_, u)| {
                let since = now.saturating_duration_since(u.at);
                (changed_at.is_some_and(|c| c > u.at) && since >= u.backoff)
                    || since >= RETRY_UNSCHEDULABLE
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in due {
            // Kept in `unschedulable` (for its back-off) until it binds or fails again.
            if let Some(u) = self.unschedulable.get_mut(&uid) {
                u.at = now;
            }
            self.enqueue(uid);
        }
    }

    /// Record a failed attempt; whether to report it (a new reason, and not too soon).
    fn failed(&mut self, uid: &str, message: &str) -> bool {
        let now = Instant::now();
        let u = self
            .unschedulable
            .entry(uid.to_string())
            .and_modify(|u| u.backoff = (u.backoff * 2).min(BACKOFF_MAX))
            .or_insert(Unschedulable {
                at: now,
                backoff: BACKOFF_INITIAL,
                reported: None,
            });
        u.at = now;
        let report = match &u.reported {
            None => true,
            Some((m, at)) if m == message => now.duration_since(*at) >= REPORT_SAME_EVERY,
            Some((_, at)) => now.duration_since(*at) >= REPORT_EVERY,
        };
        if report {
            u.reported = Some((message.to_string(), now));
        }
        report
    }

    fn enqueue(&mut self, uid: String) {
        if self.queued.insert(uid.clone()) {
            self.queue.push_back(uid);
        }
    }

    fn place(&mut self, uid: &str, node: String, req: Resources, assumed: bool) {
        self.unplace(uid);
        if let Some(n) = self.nodes.get_mut(&node) {
            n.requested.add(&req);
        }
        self.placed
            .insert(uid.to_string(), Placed { node, req, assumed });
    }

    fn unplace(&mut self, uid: &str) {
        if let Some(p) = self.placed.remove(uid)
            && let Some(n) = self.nodes.get_mut(&p.node)
        {
            n.requested.sub(&p.req);
        }
    }

    fn apply(&mut self, input: Input) {
        match input {
            Input::Pod(e) => self.apply_pod(*e),
            Input::Node(e) => self.apply_node(*e),
        }
    }

    fn apply_pod(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => self.pod_seen(pod),
            watcher::Event::Delete(pod) => {
                let uid = pod.uid().unwrap_or_default();
                self.pending.remove(&uid);
                self.unschedulable.remove(&uid);
                if self.placed.contains_key(&uid) {
                    self.unplace(&uid);
                    self.changed();
                }
            }
            _ => {}
        }
    }

    fn apply_node(&mut self, event: watcher::Event<Node>) {
        match event {
            watcher::Event::Apply(node) | watcher::Event::InitApply(node) => {
                let name = node.name_any();
                let allocatable =
                    Resources::of_node(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
                let signature = node_signature(&node);
                let requested = self.placed.values().filter(|p| p.node == name).fold(
                    Resources::default(),
                    |mut acc, p| {
                        acc.add(&p.req);
                        acc
                    },
                );
                let changed = self
                    .nodes
                    .get(&name)
                    .is_none_or(|n| n.signature != signature);
                self.nodes.insert(
                    name,
                    NodeInfo {
                        node: Arc::new(node),
                        allocatable,
                        requested,
                        signature,
                    },
                );
                if changed {
                    self.changed();
                }
            }
            watcher::Event::Delete(node) => {
                self.nodes.remove(&node.name_any());
            }
            _ => {}
        }
    }

    fn pod_seen(&mut self, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        if crate::util::pod_finished(&pod) {
            // A finished pod holds no resources.
            self.pending.remove(&uid);
            if self.placed.contains_key(&uid) {
                self.unplace(&uid);
                self.changed();
            }
            return;
        }
        if let Some(node) = node {
            self.pending.remove(&uid);
            self.unschedulable.remove(&uid);
            let req = Resources::of_pod(&pod);
            if self
                .placed
                .get(&uid)
                .is_none_or(|p| p.node != node || p.assumed)
            {
                self.place(&uid, node, req, false);
            }
            return;
        }
        if self.placed.get(&uid).is_some_and(|p| p.assumed) {
            // Our bind is in flight; this is an older state of the pod.
            return;
        }
        let ours = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME);
        if !ours || pod.metadata.deletion_timestamp.is_some() {
            self.pending.remove(&uid);
            return;
        }
        self.pending.insert(uid.clone(), Arc::new(pod));
        if !self.unschedulable.contains_key(&uid) {
            self.enqueue(uid);
        }
    }

    fn bind_done(&mut self, done: BindResult) {
        match done.outcome {
            Ok(()) => {}
            // Already bound (the watch will say where) or gone.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                if self.placed.get(&done.uid).is_some_and(|p| p.assumed) {
                    self.unplace(&done.uid);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "bind failed; the pod will be scheduled again");
                if self.placed.get(&done.uid).is_some_and(|p| p.assumed) {
                    self.unplace(&done.uid);
                }
                self.enqueue(done.uid);
            }
        }
    }

    /// The best node for `pod`, or why none fits.
    fn choose(&self, pod: &Pod) -> Result<String, String> {
        let req = Resources::of_pod(pod);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(i64, i64, &str)> = None;
        for (name, info) in &self.nodes {
            if let Err(why) = fits(pod, &req, info) {
                *reasons.entry(why).or_default() += 1;
                continue;
            }
            let score = least_allocated(&info.allocatable, &info.requested, &req);
            let pods = info.requested.pods;
            let better = match best {
                None => true,
                Some((s, p, _)) => score > s || (score == s && pods < p),
            };
            if better {
                best = Some((score, pods, name));
            }
        }
        if let Some((_, _, name)) = best {
            return Ok(name.to_string());
        }
        let total = self.nodes.len();
        if total == 0 {
            return Err("0/0 nodes are available: no nodes registered.".into());
        }
        let detail: Vec<String> = reasons
            .iter()
            .map(|(why, n)| format!("{n} {why}"))
            .collect();
        Err(format!(
            "0/{total} nodes are available: {}.",
            detail.join(", ")
        ))
    }
}

fn node_signature(node: &Node) -> String {
    let spec = node.spec.as_ref();
    let ready = node_ready(node);
    json!([
        node.metadata.labels,
        spec.and_then(|s| s.taints.clone()),
        spec.and_then(|s| s.unschedulable),
        node.status.as_ref().and_then(|s| s.allocatable.clone()),
        ready,
    ])
    .to_string()
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn least_allocated(alloc: &Resources, requested: &Resources, req: &Resources) -> i64 {
    let free = |cap: i64, used: i64| {
        if cap <= 0 {
            0
        } else {
            ((cap - used).max(0) * 100) / cap
        }
    };
    (free(alloc.cpu_millis, requested.cpu_millis + req.cpu_millis)
        + free(alloc.memory, requested.memory + req.memory))
        / 2
}

fn fits(pod: &Pod, req: &Resources, info: &NodeInfo) -> Result<(), String> {
    let node = &info.node;
    placement(pod, node)?;
    if !node_ready(node) {
        return Err("node(s) were not ready".into());
    }
    let alloc = &info.allocatable;
    let used = &info.requested;
    if used.pods + 1 > alloc.pods {
        return Err("Too many pods".into());
    }
    if req.cpu_millis > 0 && used.cpu_millis + req.cpu_millis > alloc.cpu_millis {
        return Err("Insufficient cpu".into());
    }
    if req.memory > 0 && used.memory + req.memory > alloc.memory {
        return Err("Insufficient memory".into());
    }
    Ok(())
}

/// Whether the pod may go to the node at all: its taints (and `unschedulable`) tolerated,
/// its labels matching the pod's `nodeSelector` and required node affinity. (The DaemonSet
/// controller asks this too, to know which nodes want a daemon pod.)
pub(crate) fn placement(pod: &Pod, node: &Node) -> Result<(), String> {
    let spec = pod.spec.as_ref();
    let tolerations: &[Toleration] = spec.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    let node_spec = node.spec.as_ref();
    if node_spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        let t = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerated(&t, tolerations) {
            return Err("node(s) were unschedulable".into());
        }
    }
    for taint in node_spec.and_then(|s| s.taints.as_deref()).unwrap_or(&[]) {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !tolerated(taint, tolerations)
        {
            let value = taint
                .value
                .as_deref()
                .map(|v| format!(": {v}"))
                .unwrap_or_default();
            return Err(format!(
                "node(s) had untolerated taint {{{}{value}}}",
                taint.key
            ));
        }
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = spec.and_then(|s| s.node_selector.as_ref())
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    if let Some(required) = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        let name = node.name_any();
        let any = required.node_selector_terms.iter().any(|term| {
            let exprs_ok = term
                .match_expressions
                .iter()
                .flatten()
                .all(|e| requirement_matches(e, labels.get(&e.key).map(String::as_str)));
            let fields_ok = term.match_fields.iter().flatten().all(|e| {
                let value = (e.key == "metadata.name").then_some(name.as_str());
                requirement_matches(e, value)
            });
            let empty = term.match_expressions.as_ref().is_none_or(|v| v.is_empty())
                && term.match_fields.as_ref().is_none_or(|v| v.is_empty());
            !empty && exprs_ok && fields_ok
        });
        if !any {
            return Err("node(s) didn't match Pod's node affinity/selector".into());
        }
    }
    Ok(())
}

fn requirement_matches(e: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = e.values.as_deref().unwrap_or(&[]);
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if e.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether any toleration tolerates `taint`.
pub(crate) fn tolerated(taint: &Taint, tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

pub(crate) fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let exists = t.operator.as_deref() == Some("Exists");
    match t.key.as_deref() {
        None | Some("") => exists,
        Some(k) if k != taint.key => false,
        Some(_) => {
            exists || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, extra: serde_json::Value) -> watcher::Event<Node> {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"zone": "a"}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        });
        json_patch_merge(&mut n, extra);
        watcher::Event::Apply(serde_json::from_value(n).unwrap())
    }

    fn pod(name: &str, extra: serde_json::Value) -> Pod {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]},
        });
        json_patch_merge(&mut p, extra);
        serde_json::from_value(p).unwrap()
    }

    fn json_patch_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    json_patch_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn cache_with(nodes: Vec<watcher::Event<Node>>) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.apply_node(n);
        }
        c
    }

    #[test]
    fn filters_say_why_nothing_fits() {
        let c = cache_with(vec![
            node(
                "tainted",
                json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
            ),
            node("cordoned", json!({"spec": {"unschedulable": true}})),
            node(
                "down",
                json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
            ),
            node("small", json!({"status": {"allocatable": {"cpu": "100m"}}})),
            node("elsewhere", json!({"metadata": {"labels": {"zone": "b"}}})),
        ]);
        let p = pod("p", json!({"spec": {"nodeSelector": {"zone": "a"}}}));
        let err = c.choose(&p).unwrap_err();
        assert_eq!(
            err,
            "0/5 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were not ready, 1 node(s) were unschedulable."
        );
        assert_eq!(c.choose(&pod("r", json!({}))).unwrap(), "elsewhere");
        let p = pod(
            "q",
            json!({"spec": {"nodeSelector": {"zone": "a"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}]}}),
        );
        assert_eq!(c.choose(&p).unwrap(), "tainted");
        let big = pod(
            "big",
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]}}),
        );
        let err = c.choose(&big).unwrap_err();
        assert!(err.contains("Insufficient cpu"), "{err}");
    }

    #[test]
    fn least_allocated_spreads_and_assumed_pods_count() {
        let mut c = cache_with(vec![node("n1", json!({})), node("n2", json!({}))]);
        let mut placed = Vec::new();
        for i in 0..4 {
            let p = pod(&format!("p{i}"), json!({}));
            let n = c.choose(&p).unwrap();
            c.place(&p.uid().unwrap(), n.clone(), Resources::of_pod(&p), true);
            placed.push(n);
        }
        assert_eq!(
            placed.iter().filter(|n| *n == "n1").count(),
            2,
            "{placed:?}"
        );
        // Two more fit (3 pods each at most), then none.
        for i in 4..6 {
            let p = pod(&format!("p{i}"), json!({}));
            let n = c.choose(&p).unwrap();
            c.place(&p.uid().unwrap(), n, Resources::of_pod(&p), true);
        }
        let err = c.choose(&pod("p6", json!({}))).unwrap_err();
        assert_eq!(err, "0/2 nodes are available: 2 Too many pods.");
        // A pod going away frees its place.
        c.apply_pod(watcher::Event::Delete(pod("p0", json!({}))));
        assert!(c.choose(&pod("p6", json!({}))).is_ok());
    }

    #[test]
    fn unschedulable_pods_back_off_and_reports_are_not_repeated() {
        let mut c = Cache::default();
        assert!(c.failed("u", "0/1 nodes are available: 1 Insufficient cpu."));
        // The same reason again is not reported again; a new one only after REPORT_EVERY.
        assert!(!c.failed("u", "0/1 nodes are available: 1 Insufficient cpu."));
        assert!(!c.failed("u", "0/2 nodes are available: 2 Insufficient cpu."));
        assert_eq!(c.unschedulable["u"].backoff, BACKOFF_INITIAL * 4);
        for _ in 0..10 {
            c.failed("u", "x");
        }
        assert_eq!(c.unschedulable["u"].backoff, BACKOFF_MAX);
        // A change is not a retry before the back-off is over...
        let at = c.unschedulable["u"].at;
        c.changed_at = Some(at + Duration::from_millis(1));
        c.requeue_unschedulable(at + Duration::from_secs(1));
        assert!(c.queue.is_empty());
        // ... and is one after it.
        c.requeue_unschedulable(at + BACKOFF_MAX);
        assert_eq!(c.queue.iter().collect::<Vec<_>>(), ["u"]);
        // Without a change, the periodic retry still comes.
        let mut c = Cache::default();
        c.failed("v", "y");
        let at = c.unschedulable["v"].at;
        c.requeue_unschedulable(at + BACKOFF_MAX);
        assert!(c.queue.is_empty());
        c.requeue_unschedulable(at + RETRY_UNSCHEDULABLE);
        assert_eq!(c.queue.len(), 1);
    }
}
