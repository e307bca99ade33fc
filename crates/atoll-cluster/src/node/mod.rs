//! The node agent: Atoll's kubelet.
//!
//! It registers its `Node` (capacity, allocatable, addresses, where its log endpoint is),
//! renews its `Lease` in `kube-node-lease`, keeps its `Ready` condition, and runs every pod bound
//! to it with one of two runtimes:
//! - `process`: each container's command runs as a local process in its own process group, with
//!   its pod's environment, volumes as files, its own loopback IP, probes, restarts and logs;
//! - `simulated`: pods become Running and Ready without any process (kwok's idea, for scale).
//!
//! A node's pod IPs come from `spec.podCIDR`, which the node-lifecycle controller assigns from
//! the cluster's range in 127.0.0.0/8, so every pod of every cluster gets its own address.

mod env;
mod exec;
mod logs;
mod portforward;
mod probe;
mod process;
mod sandbox;
mod volumes;

/// `atoll __sandbox PLAN -- COMMAND...`: how a container of a root node agent starts (see the
/// sandbox module); returns only on failure.
pub fn sandbox_main(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    sandbox::enter::main(args)
}

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use crate::Error;
use crate::util::{now, now_micro};

/// The field manager the node agent writes as.
const MANAGER: &str = "atoll-node";

/// Stop the container processes a node agent left behind under `root` (it was killed).
pub fn kill_leftovers(root: &std::path::Path) {
    process::kill_leftovers(&root.join("pods"));
}

/// How pods on this node are run.
#[derive(Clone, Debug)]
pub enum Runtime {
    /// Real local processes; pod directories (volumes, logs) under `root`.
    Process { root: PathBuf },
    /// No processes: pods are reported Running and Ready at once.
    Simulated,
}

/// Everything a node agent needs to know about itself.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub runtime: Runtime,
    /// Capacity (and allocatable): CPU and memory as Kubernetes quantities, and a pod count.
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    /// Extra labels for the Node.
    pub labels: BTreeMap<String, String>,
    /// How long the node's lease lasts; it is renewed every quarter of that.
    pub lease_seconds: i32,
    /// A fixed pod range, instead of waiting for the node-lifecycle controller to assign one.
    pub pod_cidr: Option<String>,
    /// The cluster CA (DER), which signs the API server's client certificate for logs; also
    /// a pod's `ca.crt` next to its service-account token.
    pub cluster_ca: Vec<Vec<u8>>,
    /// The cluster DNS server pods resolve with (the kubelet's `--cluster-dns`); by default
    /// the ClusterIP of Service `kube-system/kube-dns`, read at each pod's start.
    pub cluster_dns: Option<String>,
    /// The cluster's DNS zone (the kubelet's `--cluster-domain`).
    pub cluster_domain: String,
}

impl NodeConfig {
    /// A node named `name` with this machine's CPU and memory as its capacity.
    pub fn from_machine(name: &str, runtime: Runtime) -> NodeConfig {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or_else(|| "4Gi".to_string(), |kb| format!("{kb}Ki"));
        NodeConfig {
            name: name.into(),
            runtime,
            cpu: cpus.to_string(),
            memory,
            pods: 110,
            labels: BTreeMap::new(),
            lease_seconds: 40,
            pod_cidr: None,
            cluster_ca: Vec::new(),
            cluster_dns: None,
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// What the agent's parts share.
pub(crate) struct NodeCtx {
    pub client: Client,
    pub cfg: NodeConfig,
    pub pods_api: Api<Pod>,
    /// Pod IPs in use, from the node's range.
    pub ips: Mutex<IpPool>,
    /// Running pods by `namespace/name`, for the log and exec endpoint.
    pub running: Mutex<HashMap<String, Arc<process::PodHandle>>>,
    /// The node's address (also the host IP of its pods).
    pub host_ip: String,
    /// Port and certificate SHA-256 of the log endpoint.
    pub log_endpoint: Option<(u16, String)>,
    /// How containers are sandboxed; none when the agent may not (not root).
    pub sandbox: Option<sandbox::Host>,
}

impl NodeCtx {
    /// The pod `namespace/name` if it runs here.
    pub(crate) fn running_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<process::PodHandle>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }
}

/// Pod addresses from a range in 127.0.0.0/8.
pub(crate) struct IpPool {
    base: u32,
    size: u32,
    used: std::collections::HashSet<u32>,
    next: u32,
}

impl IpPool {
    fn new(cidr: &str) -> Result<IpPool, Error> {
        let bad = || {
            Error::Config(format!(
                "pod CIDR {cidr:?} is not an IPv4 range like 127.20.1.0/24"
            ))
        };
        let (ip, prefix) = cidr.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u32 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let size = 1u32 << (32 - prefix);
        Ok(IpPool {
            base: u32::from(ip) & !(size - 1),
            size,
            used: Default::default(),
            next: 2,
        })
    }

    fn contains(&self, ip: &str) -> Option<u32> {
        let ip: Ipv4Addr = ip.parse().ok()?;
        let off = u32::from(ip).checked_sub(self.base)?;
        (off > 1 && off < self.size - 1).then_some(off)
    }

    /// Reserve `wanted` if it is ours and free, or else the next free address.
    fn allocate(&mut self, wanted: Option<&str>) -> Option<String> {
        if let Some(off) = wanted.and_then(|w| self.contains(w))
            && self.used.insert(off)
        {
            return Some(Ipv4Addr::from(self.base + off).to_string());
        }
        // .0 is the network, .1 the node's own, the last the broadcast address.
        for _ in 0..self.size {
            let off = self.next;
            self.next = if self.next + 1 >= self.size - 1 {
                2
            } else {
                self.next + 1
            };
            if self.used.insert(off) {
                return Some(Ipv4Addr::from(self.base + off).to_string());
            }
        }
        None
    }

    fn release(&mut self, ip: &str) {
        if let Some(off) = self.contains(ip) {
            self.used.remove(&off);
        }
    }
}

/// Run a node agent until `shutdown` resolves; then stop its pods' processes (they come back
/// when the agent does) and return.
pub async fn run(
    client: Client,
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let name = cfg.name.clone();
    if let Runtime::Process { root } = &cfg.runtime {
        std::fs::create_dir_all(root.join("pods"))
            .map_err(Error::io(format!("cannot create {}", root.display())))?;
        // Processes a previous run of this agent left behind (it was killed) are stopped now;
        // their pods are started again below, as a kubelet restarts containers after a reboot.
        process::kill_leftovers(&root.join("pods"));
    }
    let log_server = match &cfg.runtime {
        Runtime::Process { .. } => Some(logs::LogServer::start(&cfg.cluster_ca).await?),
        Runtime::Simulated => None,
    };
    let host_ip = "127.0.0.1".to_string();
    let log_endpoint = log_server.as_ref().map(|l| (l.port, l.cert_sha256.clone()));
    register(&client, &cfg, &host_ip, log_endpoint.as_ref()).await?;
    let cidr = match &cfg.pod_cidr {
        Some(c) => c.clone(),
        None => wait_for_pod_cidr(&client, &name).await?,
    };
    let sandbox = match &cfg.runtime {
        Runtime::Process { .. } => match sandbox::available() {
            Ok(host) => {
                tracing::info!(node = %name, "containers run in a sandbox: a private mount namespace with the pod's resolv.conf, hosts and volumes at their mountPath");
                Some(host)
            }
            Err(why) => {
                tracing::warn!(node = %name, "{why}");
                None
            }
        },
        Runtime::Simulated => None,
    };
    let ctx = Arc::new(NodeCtx {
        sandbox,
        pods_api: Api::all(client.clone()),
        client: client.clone(),
        ips: Mutex::new(IpPool::new(&cidr)?),
        running: Mutex::new(HashMap::new()),
        host_ip,
        log_endpoint,
        cfg,
    });
    if let Some(server) = log_server {
        server.serve(ctx.clone());
    }
    let heartbeat = tokio::spawn(heartbeat(ctx.clone()));
    tracing::info!(node = %name, %cidr, "node agent ready");
    let sync = sync_pods(ctx.clone());
    tokio::pin!(sync);
    let result = tokio::select! {
        r = &mut sync => r,
        _ = shutdown => Ok(()),
    };
    heartbeat.abort();
    // Stop what runs here; the pods stay bound and restart with the agent. The pod watch (and
    // with it every pod worker's update channel) is dropped only after, so that no worker
    // mistakes the agent stopping for its pod being deleted.
    let handles: Vec<_> = ctx
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    futures::future::join_all(handles.iter().map(|h| h.stop_for_shutdown())).await;

    result
}

fn node_object(cfg: &NodeConfig, host_ip: &str, log: Option<&(u16, String)>) -> Node {
    let mut labels = cfg.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), cfg.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert(
        "kubernetes.io/arch".into(),
        std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64"),
    );
    let runtime = match cfg.runtime {
        Runtime::Process { .. } => "process",
        Runtime::Simulated => "simulated",
    };
    labels.insert("node.atoll.io/runtime".into(), runtime.into());
    let mut annotations = BTreeMap::new();
    if let Some((_, sha)) = log {
        annotations.insert(
            atoll_api::KUBELET_SERVING_CERT_ANNOTATION.to_string(),
            sha.clone(),
        );
    }
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", cfg.cpu.clone()),
        ("memory", cfg.memory.clone()),
        ("pods", cfg.pods.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: cfg.pod_cidr.clone(),
            pod_cidrs: cfg.pod_cidr.clone().map(|c| vec![c]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: host_ip.into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: cfg.name.clone(),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: log.map_or(0, |l| i32::from(l.0)),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: std::env::consts::ARCH.into(),
                operating_system: "linux".into(),
                os_image: "Atoll embedded node".into(),
                kernel_version: String::new(),
                kubelet_version: "v1.33.0-atoll".into(),
                kube_proxy_version: String::new(),
                container_runtime_version: format!(
                    "atoll-{runtime}://{}",
                    atoll_api::ATOLL_VERSION
                ),
                machine_id: String::new(),
                system_uuid: String::new(),
                boot_id: String::new(),
                ..Default::default()
            }),
            conditions: Some(ready_conditions()),
            ..Default::default()
        }),
    }
}

fn ready_conditions() -> Vec<NodeCondition> {
    let cond = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now()),
        last_transition_time: Some(now()),
    };
    vec![
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        cond(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        cond(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
}

/// Create the Node, or bring an existing one up to date (labels, capacity, endpoint, Ready).
async fn register(
    client: &Client,
    cfg: &NodeConfig,
    host_ip: &str,
    log: Option<&(u16, String)>,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = node_object(cfg, host_ip, log);
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let meta = json!({"metadata": {"labels": node.metadata.labels, "annotations": node.metadata.annotations}});
            nodes
                .patch(&cfg.name, &PatchParams::default(), &Patch::Merge(&meta))
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    let status = json!({"status": node.status});
    nodes
        .patch_status(&cfg.name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

async fn wait_for_pod_cidr(client: &Client, name: &str) -> Result<String, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut waited = 0;
    loop {
        let node = nodes.get(name).await?;
        if let Some(c) = node.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
            return Ok(c);
        }
        if waited == 20 {
            tracing::warn!(
                node = name,
                "still waiting for a pod CIDR: is the node-lifecycle controller running (atoll server --controllers)?"
            );
        }
        waited += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Renew the lease every quarter of its duration; re-post Ready when the node lost it (its
/// lease had lapsed and the node-lifecycle controller marked it Unknown).
async fn heartbeat(ctx: Arc<NodeCtx>) {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let name = ctx.cfg.name.clone();
    let period = Duration::from_millis((ctx.cfg.lease_seconds.max(1) as u64) * 250);
    loop {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some("kube-node-lease".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(name.clone()),
                lease_duration_seconds: Some(ctx.cfg.lease_seconds),
                renew_time: Some(now_micro()),
                ..Default::default()
            }),
        };
        let patch = Patch::Apply(&lease);
        let pp = PatchParams::apply(MANAGER).force();
        if let Err(e) = leases.patch(&name, &pp, &patch).await {
            tracing::warn!(node = %name, error = %e, "cannot renew the node lease");
        }
        match nodes.get_opt(&name).await {
            Ok(Some(node)) => {
                let ready = node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if !ready {
                    let status = json!({"status": {"conditions": ready_conditions()}});
                    if let Err(e) = nodes
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                    {
                        tracing::warn!(node = %name, error = %e, "cannot post Ready");
                    }
                }
            }
            Ok(None) => {
                // Deleted under us: register again, as a kubelet does.
                let log = ctx.log_endpoint.as_ref();
                if let Err(e) = register(&ctx.client, &ctx.cfg, &ctx.host_ip, log).await {
                    tracing::warn!(node = %name, error = %e, "cannot re-register the node");
                }
            }
            Err(e) => tracing::warn!(node = %name, error = %e, "cannot read the node"),
        }
        tokio::time::sleep(period).await;
    }
}

/// One worker per pod bound here, fed the pod's latest state.
struct Worker {
    tx: watch::Sender<PodUpdate>,
}

#[derive(Clone)]
pub(crate) struct PodUpdate {
    pub pod: Pod,
    /// The pod is no longer in the API (deleted with no grace period).
    pub gone: bool,
}

async fn sync_pods(ctx: Arc<NodeCtx>) -> Result<(), Error> {
    let selector = format!("spec.nodeName={}", ctx.cfg.name);
    let config = watcher::Config::default().fields(&selector);
    let mut events = watcher(ctx.pods_api.clone(), config).boxed();
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut seen_in_relist: Option<std::collections::HashSet<String>> = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(node = %ctx.cfg.name, error = %e, "pod watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        match event {
            watcher::Event::Init => seen_in_relist = Some(Default::default()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                if let Some(seen) = &mut seen_in_relist {
                    seen.insert(pod.uid().unwrap_or_default());
                }
                dispatch(&ctx, &mut workers, pod, false);
            }
            watcher::Event::Delete(pod) => dispatch(&ctx, &mut workers, pod, true),
            watcher::Event::InitDone => {
                // Pods that vanished while the watch was down are gone.
                if let Some(seen) = seen_in_relist.take() {
                    for (uid, w) in &workers {
                        if !seen.contains(uid) {
                            let pod = w.tx.borrow().pod.clone();
                            let _ = w.tx.send(PodUpdate { pod, gone: true });
                        }
                    }
                }
            }
        }
        workers.retain(|_, w| !w.tx.is_closed());
    }
    Ok(())
}

fn dispatch(ctx: &Arc<NodeCtx>, workers: &mut HashMap<String, Worker>, pod: Pod, gone: bool) {
    let uid = pod.uid().unwrap_or_default();
    if let Some(w) = workers.get(&uid)
        && !w.tx.is_closed()
    {
        let _ = w.tx.send(PodUpdate { pod, gone });
        return;
    }
    if gone {
        return;
    }
    let (tx, rx) = watch::channel(PodUpdate { pod, gone });
    let ctx = ctx.clone();
    match ctx.cfg.runtime.clone() {
        Runtime::Simulated => {
            tokio::spawn(simulate_pod(ctx, rx));
        }
        Runtime::Process { root } => {
            tokio::spawn(process::run_pod(ctx, root, rx));
        }
    }
    workers.insert(uid, Worker { tx });
}

/// The simulated runtime: Running and Ready at once; gone at once when deleted.
async fn simulate_pod(ctx: Arc<NodeCtx>, mut rx: watch::Receiver<PodUpdate>) {
    let mut reported = false;
    let mut ip: Option<String> = None;
    loop {
        let PodUpdate { pod, gone } = rx.borrow_and_update().clone();
        if gone || pod.metadata.deletion_timestamp.is_some() {
            if let Some(ip) = &ip {
                ctx.ips
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .release(ip);
            }
            if !gone {
                finish_deletion(&ctx, &pod).await;
            }
            return;
        }
        if !reported && !crate::util::pod_ready(&pod) {
            let wanted = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            ip = ctx
                .ips
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .allocate(wanted.as_deref());
            let status = simulated_status(&pod, ip.as_deref(), &ctx.host_ip);
            let patch = json!({"status": status});
            let api: Api<Pod> =
                Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
            match api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => reported = true,
                Err(e) => {
                    tracing::debug!(pod = %pod.name_any(), error = %e, "status update failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        } else if !reported {
            reported = true;
            ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            if let Some(i) = &ip {
                ctx.ips
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .allocate(Some(i));
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn simulated_status(pod: &Pod, ip: Option<&str>, host_ip: &str) -> PodStatus {
    let t = now();
    let cond = |type_: &str| PodCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: Some(t.clone()),
        ..Default::default()
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let running =
        |c: &k8s_openapi::api::core::v1::Container| k8s_openapi::api::core::v1::ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            ready: true,
            started: Some(true),
            restart_count: 0,
            state: Some(k8s_openapi::api::core::v1::ContainerState {
                running: Some(k8s_openapi::api::core::v1::ContainerStateRunning {
                    started_at: Some(t.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
    // Init containers have completed at once; sidecars (restartPolicy Always) run.
    let init: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            if c.restart_policy.as_deref() == Some("Always") {
                return running(c);
            }
            k8s_openapi::api::core::v1::ContainerStatus {
                ready: true,
                started: Some(false),
                state: Some(k8s_openapi::api::core::v1::ContainerState {
                    terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                        exit_code: 0,
                        reason: Some("Completed".into()),
                        started_at: Some(t.clone()),
                        finished_at: Some(t.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..running(c)
            }
        })
        .collect();
    PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![
            cond("PodReadyToStartContainers"),
            cond("Initialized"),
            cond("ContainersReady"),
            cond("Ready"),
            cond("PodScheduled"),
        ]),
        host_ip: Some(host_ip.into()),
        pod_ip: ip.map(String::from),
        pod_ips: ip.map(|i| vec![PodIP { ip: i.into() }]),
        start_time: Some(t.clone()),
        container_statuses: Some(spec.containers.iter().map(running).collect()),
        init_container_statuses: (!init.is_empty()).then_some(init),
        ..Default::default()
    }
}

/// The last step of a graceful deletion: the pod has stopped here, so remove it from the API
/// (grace period zero, only this very pod by UID).
pub(crate) async fn finish_deletion(ctx: &NodeCtx, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    for attempt in 0..5 {
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), error = %e, attempt, "cannot finish the pod's deletion");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
}
