//! The `process` runtime: each container's command runs as a local process.
//!
//! A pod gets a directory (`ROOT/pods/<namespace>_<name>_<uid>`) holding its volumes, its
//! containers' logs and their pid files, and one loopback address from the node's range. Each
//! container is supervised by its own task: start, probe, restart per `restartPolicy` with
//! back-off, stop with SIGTERM then SIGKILL after the grace period. A status writer turns the
//! containers' state into the pod's `status` and patches it when it changes.
//!
//! Volumes are prepared by the volumes module. With a sandbox (a root agent) each container
//! sees them at their mount paths, and the pod's resolv.conf and hosts; without one a volume
//! mounted at `/etc/config` is at `etc/config` under the pod directory, which is the
//! container's working directory and `$POD_DIR`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use rustix::process::{Pid, Signal};
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::{NodeCtx, PodUpdate, env, probe, sandbox, volumes};
use crate::util::now;

/// A pod running here, as the log endpoint and the agent's shutdown see it.
pub(crate) struct PodHandle {
    pub dir: PathBuf,
    /// Running containers that keep stdin open or have a terminal, by name.
    pub attach: Mutex<HashMap<String, AttachPoint>>,
    /// The pod as it was started, and its address (for `exec`, which runs in its context).
    pub pod: Pod,
    pub pod_ip: String,
    pub containers: Mutex<Vec<CState>>,
    /// The pod's volumes and files, once written.
    pub prepared: Mutex<volumes::Prepared>,
    changed: Notify,
    stop: watch::Sender<Option<Stop>>,
    done: watch::Sender<bool>,
}

/// Where `kubectl attach` (and `kubectl run -i`) meets a running container: its input, its
/// output as it comes, and its terminal.
pub(crate) struct AttachPoint {
    /// Bytes for the container's stdin; `None` ends its input.
    pub input: tokio::sync::mpsc::UnboundedSender<Option<Vec<u8>>>,
    /// (channel, bytes): 1 stdout (and a terminal's output), 2 stderr.
    pub output: tokio::sync::broadcast::Sender<(u8, Vec<u8>)>,
    /// The terminal's master side, for resizes.
    pub terminal: Option<std::fs::File>,
    /// `stdinOnce`: the first attach session's end closes stdin.
    pub stdin_once: bool,
}

#[derive(Clone, Copy, Debug)]
struct Stop {
    grace: Duration,
    /// The agent is stopping, not the pod: leave the pod in the API.
    shutdown: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct CState {
    pub name: String,
    /// What kind of container it is: init containers run (and sidecars start) first.
    kind: Kind,
    image: String,
    pub state: State,
    last: Option<ContainerStateTerminated>,
    ready: bool,
    started: bool,
    restarts: i32,
    /// It has stopped for good (restart policy says no more).
    finished: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Runs to completion, in order, before the next one and the app containers.
    Init,
    /// An init container with `restartPolicy: Always`: started in order, runs as long as the
    /// pod (Kubernetes' native sidecars).
    Sidecar,
    App,
}

#[derive(Clone, Debug)]
pub(crate) enum State {
    Waiting { reason: String, message: String },
    Running { since: Time },
    Terminated(ContainerStateTerminated),
}

impl PodHandle {
    pub(crate) fn container_running(&self, name: &str) -> bool {
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|c| c.name == name && matches!(c.state, State::Running { .. }))
    }

    /// Stop the pod's processes because the agent is stopping; wait until they are.
    pub(crate) async fn stop_for_shutdown(&self) {
        let _ = self.stop.send(Some(Stop {
            grace: Duration::from_secs(5),
            shutdown: true,
        }));
        let mut done = self.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
    }

    fn update(&self, idx: usize, f: impl FnOnce(&mut CState)) {
        if let Some(c) = self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(idx)
        {
            f(c);
        }
        self.changed.notify_one();
    }
}

pub(crate) fn pod_dir(root: &Path, pod: &Pod) -> PathBuf {
    root.join("pods").join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
}

/// Kill the process groups recorded in pid files under `pods` (a previous agent's).
pub(crate) fn kill_leftovers(pods: &Path) {
    let Ok(dirs) = std::fs::read_dir(pods) else {
        return;
    };
    for d in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(d.path().join("run")) else {
            continue;
        };
        for f in files.flatten() {
            if let Some(pid) = std::fs::read_to_string(f.path())
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .and_then(Pid::from_raw)
            {
                let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            }
            let _ = std::fs::remove_file(f.path());
        }
    }
}

pub(crate) async fn run_pod(ctx: Arc<NodeCtx>, root: PathBuf, mut rx: watch::Receiver<PodUpdate>) {
    let PodUpdate { pod, gone } = rx.borrow_and_update().clone();
    let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let dir = pod_dir(&root, &pod);
    if gone {
        return;
    }
    // A pod that finished, or whose deletion began while no agent ran, is not started again.
    if crate::util::pod_finished(&pod) || pod.metadata.deletion_timestamp.is_some() {
        loop {
            let PodUpdate { pod, gone } = rx.borrow_and_update().clone();
            if gone {
                break;
            }
            if pod.metadata.deletion_timestamp.is_some() {
                super::finish_deletion(&ctx, &pod).await;
                break;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let wanted = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    let Some(pod_ip) = ctx
        .ips
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .allocate(wanted.as_deref())
    else {
        tracing::error!(pod = %key, "the node's pod range is exhausted");
        return;
    };
    // Init containers (and sidecars) first, in order, then the app containers: indexes into
    // the handle's states are indexes into this list.
    let spec = pod.spec.clone().unwrap_or_default();
    let containers: Vec<(Kind, Container)> = spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let kind = if c.restart_policy.as_deref() == Some("Always") {
                Kind::Sidecar
            } else {
                Kind::Init
            };
            (kind, c)
        })
        .chain(spec.containers.into_iter().map(|c| (Kind::App, c)))
        .collect();
    let initializing = containers.iter().any(|(k, _)| *k != Kind::App);
    let (stop_tx, _) = watch::channel(None);
    let (done_tx, _) = watch::channel(false);
    let handle = Arc::new(PodHandle {
        dir: dir.clone(),
        attach: Mutex::default(),
        pod: pod.clone(),
        pod_ip: pod_ip.clone(),
        containers: Mutex::new(
            containers
                .iter()
                .map(|(kind, c)| CState {
                    name: c.name.clone(),
                    kind: *kind,
                    image: c.image.clone().unwrap_or_default(),
                    state: State::Waiting {
                        // As the kubelet says of a pod that has init containers to run.
                        reason: if initializing {
                            "PodInitializing".into()
                        } else {
                            "ContainerCreating".into()
                        },
                        message: String::new(),
                    },
                    last: None,
                    ready: false,
                    started: false,
                    restarts: 0,
                    finished: false,
                })
                .collect(),
        ),
        prepared: Mutex::default(),
        changed: Notify::new(),
        stop: stop_tx,
        done: done_tx,
    });
    // Restart counts survive agent restarts through the pod's own status.
    if let Some(statuses) = pod.status.as_ref().map(|s| {
        let init = s.init_container_statuses.iter().flatten();
        init.chain(s.container_statuses.iter().flatten())
            .cloned()
            .collect::<Vec<_>>()
    }) {
        let mut cs = handle.containers.lock().unwrap_or_else(|p| p.into_inner());
        for c in cs.iter_mut() {
            if let Some(s) = statuses.iter().find(|s| s.name == c.name) {
                c.restarts = s.restart_count;
            }
        }
    }
    ctx.running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone(), handle.clone());
    let writer = tokio::spawn(write_status(
        ctx.clone(),
        handle.clone(),
        pod.clone(),
        pod_ip.clone(),
    ));
    handle.changed.notify_one();

    // Volumes first; a missing ConfigMap or Secret keeps the pod waiting, as in Kubernetes.
    let mut stop_rx = handle.stop.subscribe();
    let mut stopped_early = None;
    let mut renewer = None;
    loop {
        match volumes::prepare(&ctx, &pod, &dir, &pod_ip).await {
            Ok(prepared) => {
                renewer = Some(tokio::spawn(volumes::renew_tokens(
                    ctx.clone(),
                    pod.clone(),
                    prepared.tokens.clone(),
                )));
                *handle.prepared.lock().unwrap_or_else(|p| p.into_inner()) = prepared;
                break;
            }
            Err(message) => {
                for i in 0..containers.len() {
                    handle.update(i, |c| {
                        c.state = State::Waiting {
                            reason: "ContainerCreating".into(),
                            message: message.clone(),
                        }
                    });
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            r = rx.changed() => {
                let u = rx.borrow_and_update().clone();
                if r.is_err() || u.gone || u.pod.metadata.deletion_timestamp.is_some() {
                    stopped_early = Some(u);
                    break;
                }
            }
            _ = stop_rx.changed() => { stopped_early = Some(PodUpdate { pod: pod.clone(), gone: true }); break; }
        }
    }

    // Then the containers: init containers one after another, each to completion (sidecars
    // until started), then the app containers together; all of it while watching for the pod's
    // deletion, which the init phase must not hold up.
    let mut supervisors = Vec::new();
    let mut early_shutdown = false;
    if stopped_early.is_none() {
        let start = start_containers(&ctx, &handle, &pod, &containers, &pod_ip, &mut supervisors);
        tokio::pin!(start);
        loop {
            tokio::select! {
                () = &mut start => break,
                r = rx.changed() => {
                    let u = rx.borrow_and_update().clone();
                    if r.is_err() || u.gone || u.pod.metadata.deletion_timestamp.is_some() {
                        let grace = u.pod.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0) as u64;
                        let shutdown = r.is_err();
                        let grace = if shutdown { 5 } else { grace };
                        let _ = handle.stop.send(Some(Stop { grace: Duration::from_secs(grace), shutdown }));
                        // The init container being run stops too; then nothing more starts.
                        start.as_mut().await;
                        early_shutdown = shutdown;
                        stopped_early = Some(if shutdown { PodUpdate { pod: pod.clone(), gone: false } } else { u });
                        break;
                    }
                }
            }
        }
    }
    // Wait for the pod's deletion (or the agent's shutdown).
    let mut shutdown = early_shutdown;
    let last = match stopped_early {
        Some(u) => u,
        None => loop {
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        // The agent dropped its pod watch: it is stopping, the pod is not.
                        let _ = handle.stop.send(Some(Stop { grace: Duration::from_secs(5), shutdown: true }));
                        shutdown = true;
                        break PodUpdate { pod: pod.clone(), gone: false };
                    }
                    let u = rx.borrow_and_update().clone();
                    if u.gone || u.pod.metadata.deletion_timestamp.is_some() {
                        let grace = u.pod.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0) as u64;
                        let _ = handle.stop.send(Some(Stop { grace: Duration::from_secs(grace), shutdown: false }));
                        break u;
                    }
                }
                _ = stop_rx.changed() => {
                    shutdown = stop_rx.borrow().is_some_and(|s| s.shutdown);
                    break PodUpdate { pod: pod.clone(), gone: false };
                }
            }
        },
    };
    if shutdown {
        // The agent stops, not the pod: the pod's status stays as it was, for the agent's return.
        writer.abort();
    }
    for s in supervisors {
        let _ = s.await;
    }
    if let Some(r) = renewer {
        r.abort();
    }
    if !shutdown {
        // One last status with every container terminated, then the pod goes.
        handle.changed.notify_one();
        tokio::time::sleep(Duration::from_millis(20)).await;
        writer.abort();
    }
    ctx.running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    if !shutdown {
        ctx.ips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(&pod_ip);
        if !last.gone {
            super::finish_deletion(&ctx, &last.pod).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = handle.done.send(true);
}

/// Start a container that keeps stdin open (`stdin: true`) or runs on a terminal (`tty: true`):
/// its output read here, written to its log and offered to attach sessions; its input fed
/// from them.
fn spawn_interactive(
    handle: &PodHandle,
    container: &Container,
    program: &str,
    argv: &[String],
    env: &[(String, String)],
    log_path: &Path,
) -> std::io::Result<tokio::process::Child> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
    type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    let cwd = workdir(container, &handle.dir);
    let tty = container.tty == Some(true);
    let (child, sources, sink, terminal): (_, Vec<(u8, Reader)>, Option<Writer>, _) = if tty {
        let command: Vec<String> = std::iter::once(program.to_string())
            .chain(argv.iter().cloned())
            .collect();
        let (child, master) = super::exec::spawn_on_terminal(&command, env.to_vec(), &cwd)?;
        let reader = tokio::fs::File::from_std(master.try_clone()?);
        let writer = tokio::fs::File::from_std(master.try_clone()?);
        (
            child,
            vec![(1, Box::new(reader) as Reader)],
            Some(Box::new(writer) as Writer),
            Some(master),
        )
    } else {
        let mut child = tokio::process::Command::new(program)
            .args(argv)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()?;
        let mut sources: Vec<(u8, Reader)> = Vec::new();
        if let Some(out) = child.stdout.take() {
            sources.push((1, Box::new(out)));
        }
        if let Some(err) = child.stderr.take() {
            sources.push((2, Box::new(err)));
        }
        let sink = child.stdin.take().map(|i| Box::new(i) as Writer);
        (child, sources, sink, None)
    };
    let (output, _) = tokio::sync::broadcast::channel(1024);
    for (channel, mut source) in sources {
        let output = output.clone();
        let mut log = tokio::fs::File::from_std(log.try_clone()?);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            // A terminal whose process is gone reads as an error (EIO): the end too.
            while let Ok(n) = source.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let _ = log.write_all(&buf[..n]).await;
                let _ = output.send((channel, buf[..n].to_vec()));
            }
        });
    }
    let (input, mut input_rx) = tokio::sync::mpsc::unbounded_channel::<Option<Vec<u8>>>();
    if let Some(mut sink) = sink {
        tokio::spawn(async move {
            while let Some(message) = input_rx.recv().await {
                let data = match message {
                    Some(data) => data,
                    // The end of input: a terminal reads it as ^D; a pipe is closed.
                    None if tty => vec![4],
                    None => break,
                };
                if sink.write_all(&data).await.is_err() || sink.flush().await.is_err() {
                    break;
                }
            }
        });
    }
    handle
        .attach
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            container.name.clone(),
            AttachPoint {
                input,
                output,
                terminal,
                stdin_once: container.stdin_once == Some(true),
            },
        );
    Ok(child)
}

/// The environment a container's processes start with, before the container's own: POD_IP
/// and friends are there for `$(POD_IP)` too.
/// Images whose ENTRYPOINT their `args` go to, which the process runtime cannot run (it
/// does not pull images): by repository, without registry, `library/` or tag.
const ENTRYPOINT_IMAGES: [&str; 9] = [
    "alpine/socat",
    "curlimages/curl",
    "nginx",
    "postgres",
    "redis",
    "mysql",
    "mongo",
    "registry.k8s.io/e2e-test-images/agnhost",
    "e2e-test-images/agnhost",
];

/// An image reference's repository: `docker.io/library/nginx:1.25` -> `nginx`.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    // A tag follows the last `:` after the last `/` (a registry may have a port).
    let image = match (image.rfind(':'), image.rfind('/')) {
        (Some(c), Some(s)) if c > s => &image[..c],
        (Some(c), None) => &image[..c],
        _ => image,
    };
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    image.strip_prefix("library/").unwrap_or(image)
}

/// What a container runs, images not being pulled: `command` with `args`; `args` alone as
/// the whole command line, the rule that fits most base images (busybox, alpine, debian,
/// python: no ENTRYPOINT, so `args` replace their CMD); or why nothing can run.
fn command_line(container: &Container) -> Result<Vec<String>, String> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let image = container.image.clone().unwrap_or_default();
    if !command.is_empty() {
        return Ok(command.into_iter().chain(args).collect());
    }
    if args.is_empty() {
        return Err(format!(
            "the process runtime runs a container's command and does not run images; set `command` for container {:?} (image {image:?} is only recorded)",
            container.name
        ));
    }
    if ENTRYPOINT_IMAGES.contains(&repository(&image)) {
        return Err(format!(
            "image {image:?} runs its `args` through an ENTRYPOINT the process runtime does not have; set `command` for container {:?}",
            container.name
        ));
    }
    Ok(args)
}

pub(crate) fn base_env(dir: &Path, pod_name: &str, pod_ip: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        ("HOME".into(), dir.display().to_string()),
        ("HOSTNAME".into(), pod_name.to_string()),
        ("POD_IP".into(), pod_ip.to_string()),
        ("POD_DIR".into(), dir.display().to_string()),
    ];
    if let Ok(lang) = std::env::var("LANG") {
        env.push(("LANG".into(), lang));
    }
    env
}

/// The directory a container's processes start in: its `workingDir` if that exists here,
/// else the pod directory.
pub(crate) fn workdir(container: &Container, dir: &Path) -> PathBuf {
    container
        .working_dir
        .as_ref()
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| dir.to_path_buf())
}

/// Start the pod's containers in Kubernetes' order: each init container run to completion
/// (restarted on failure unless the pod's policy is `Never`), each sidecar until it has
/// started, then the app containers. Returns once the app containers are started, or an init
/// container failed for good, or the pod is stopping.
async fn start_containers(
    ctx: &Arc<NodeCtx>,
    handle: &Arc<PodHandle>,
    pod: &Pod,
    containers: &[(Kind, Container)],
    pod_ip: &str,
    supervisors: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    let spawn = |idx: usize, kind: Kind, c: &Container| {
        tokio::spawn(supervise(
            ctx.clone(),
            handle.clone(),
            pod.clone(),
            idx,
            c.clone(),
            pod_ip.to_string(),
            kind,
        ))
    };
    let state = |idx: usize| {
        handle
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(idx)
            .cloned()
    };
    for (idx, (kind, c)) in containers.iter().enumerate() {
        if handle.stop.borrow().is_some() {
            return;
        }
        match kind {
            Kind::Init => {
                let _ = spawn(idx, *kind, c).await;
                let completed = state(idx)
                    .is_some_and(|s| matches!(&s.state, State::Terminated(t) if t.exit_code == 0));
                if !completed {
                    return;
                }
            }
            Kind::Sidecar => {
                supervisors.push(spawn(idx, *kind, c));
                // The next container starts once this one has (its startup probe passed).
                while !state(idx)
                    .is_some_and(|s| s.started && matches!(s.state, State::Running { .. }))
                {
                    if handle.stop.borrow().is_some() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Kind::App => supervisors.push(spawn(idx, *kind, c)),
        }
    }
}

/// Run one container for as long as the pod lives, restarting it per the pod's policy (an
/// init container: until it completes).
async fn supervise(
    ctx: Arc<NodeCtx>,
    handle: Arc<PodHandle>,
    pod: Pod,
    idx: usize,
    container: Container,
    pod_ip: String,
    kind: Kind,
) {
    let mut stop_rx = handle.stop.subscribe();
    let pod_policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    // A sidecar always restarts; an init container restarts only on failure, and not at all
    // under `Never` (as the kubelet does).
    let policy = match (kind, pod_policy.as_str()) {
        (Kind::Sidecar, _) => "Always".to_string(),
        (Kind::Init, "Never") => "Never".to_string(),
        (Kind::Init, _) => "OnFailure".to_string(),
        (Kind::App, p) => p.to_string(),
    };
    let logs = handle.dir.join("logs");
    let run_dir = handle.dir.join("run");
    let _ = std::fs::create_dir_all(&logs);
    let _ = std::fs::create_dir_all(&run_dir);
    let log_path = logs.join(format!("{}.log", container.name));
    let previous_path = logs.join(format!("{}.previous.log", container.name));
    let pid_path = run_dir.join(format!("{}.pid", container.name));
    let mut backoff = Duration::from_secs(1);
    let stopped = |rx: &watch::Receiver<Option<Stop>>| *rx.borrow();
    loop {
        if let Some(_s) = stopped(&stop_rx) {
            return;
        }
        // The environment (ConfigMaps and Secrets may not exist yet).
        let env = match env::resolve(&ctx.client, &pod, &container, &pod_ip, &ctx.host_ip).await {
            Ok(e) => e,
            Err(e) => {
                handle.update(idx, |c| {
                    c.state = State::Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message: e.0.clone(),
                    }
                });
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = stop_rx.changed() => return,
                }
            }
        };
        let mut full_env = base_env(&handle.dir, &pod.name_any(), &pod_ip);
        full_env.extend(env.iter().cloned());
        let mut argv: Vec<String> = match command_line(&container) {
            Ok(line) => line.iter().map(|a| env::expand(a, &full_env)).collect(),
            Err(message) => {
                handle.update(idx, |c| {
                    c.state = State::Waiting {
                        reason: "NoCommand".into(),
                        message,
                    }
                });
                let _ = stop_rx.changed().await;
                return;
            }
        };
        let program = argv.remove(0);
        // In a sandbox the command is started by `unshare` and `atoll __sandbox`.
        let command = match &ctx.sandbox {
            Some(host) => sandboxed(host, &handle, &pod, &container, &program, &argv, &full_env),
            None => Ok((program.clone(), argv.clone())),
        };
        // The previous run's log is kept for `kubectl logs --previous`.
        if log_path.exists() {
            // Removed first: during back-off `previous` is a hard link to this very log, and a
            // rename onto a link of the same file does nothing.
            let _ = std::fs::remove_file(&previous_path);
            let _ = std::fs::rename(&log_path, &previous_path);
        }
        // A container that keeps stdin open (or has a terminal) is attached to through the
        // node; its output passes through here on its way to the log.
        let interactive = container.stdin == Some(true) || container.tty == Some(true);
        let spawned = match &command {
            Err(e) => Err(std::io::Error::new(std::io::ErrorKind::NotFound, e.clone())),
            Ok((program, argv)) if interactive => {
                spawn_interactive(&handle, &container, program, argv, &full_env, &log_path)
            }
            Ok((program, argv)) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .and_then(|out| {
                    let err = out.try_clone()?;
                    let workdir = workdir(&container, &handle.dir);
                    tokio::process::Command::new(program)
                        .args(argv)
                        .env_clear()
                        .envs(full_env.iter().map(|(k, v)| (k, v)))
                        .current_dir(workdir)
                        .stdin(std::process::Stdio::null())
                        .stdout(out)
                        .stderr(err)
                        .process_group(0)
                        .spawn()
                }),
        };
        let started_at = Instant::now();
        let exit = match spawned {
            Err(e) => {
                let message = format!("exec {program:?}: {e}");
                let _ = std::fs::write(&log_path, format!("{message}\n"));
                handle.update(idx, |c| {
                    c.state = State::Waiting {
                        reason: "RunContainerError".into(),
                        message: message.clone(),
                    };
                    c.ready = false;
                });
                Err(message)
            }
            Ok(mut child) => {
                let pid = child
                    .id()
                    .and_then(|p| i32::try_from(p).ok())
                    .and_then(Pid::from_raw);
                if let Some(p) = pid {
                    let _ = std::fs::write(&pid_path, p.as_raw_nonzero().to_string());
                }
                let has_startup = container.startup_probe.is_some();
                handle.update(idx, |c| {
                    c.state = State::Running { since: now() };
                    c.started = !has_startup;
                    c.ready = !has_startup && container.readiness_probe.is_none();
                });
                let (kill_tx, mut kill_rx) = tokio::sync::mpsc::channel::<String>(1);
                // Exec probes run in the container's sandbox.
                let mut probed = container.clone();
                for p in [
                    &mut probed.startup_probe,
                    &mut probed.readiness_probe,
                    &mut probed.liveness_probe,
                ]
                .into_iter()
                .flatten()
                {
                    if let Some(command) = p.exec.as_mut().and_then(|e| e.command.as_mut()) {
                        *command = in_container(&ctx, &handle, &container, command);
                    }
                }
                let probes = tokio::spawn(run_probes(
                    handle.clone(),
                    idx,
                    probed,
                    pod_ip.clone(),
                    full_env.clone(),
                    kill_tx,
                ));
                let grace_default = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
                    .max(0) as u64;
                let outcome = tokio::select! {
                    s = child.wait() => s.map(exit_code).map_err(|e| e.to_string()),
                    _ = stop_rx.changed() => {
                        let grace = stop_rx.borrow().map(|s| s.grace).unwrap_or_default();
                        Ok(terminate(&mut child, pid, grace).await)
                    }
                    Some(why) = kill_rx.recv() => {
                        tracing::info!(container = %container.name, reason = ?why, "restarting container after a failed probe");
                        Ok(terminate(&mut child, pid, Duration::from_secs(grace_default)).await)
                    }
                };
                probes.abort();
                let _ = std::fs::remove_file(&pid_path);
                if interactive {
                    // Attach sessions see the end once the last output is through.
                    handle
                        .attach
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&container.name);
                }
                outcome
            }
        };
        let code = match &exit {
            Ok(c) => *c,
            Err(_) => 128,
        };
        let finished_at = now();
        let terminated = ContainerStateTerminated {
            exit_code: code,
            reason: Some(match &exit {
                Ok(0) => "Completed".into(),
                Ok(137) => "Error".into(),
                Ok(_) => "Error".into(),
                Err(_) => "ContainerCannotRun".into(),
            }),
            message: exit.as_ref().err().cloned(),
            started_at: Some(Time(
                k8s_openapi::jiff::Timestamp::now()
                    .checked_sub(
                        k8s_openapi::jiff::SignedDuration::try_from(started_at.elapsed())
                            .unwrap_or_default(),
                    )
                    .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
            )),
            finished_at: Some(finished_at),
            ..Default::default()
        };
        let stopping = stopped(&stop_rx).is_some();
        let restart = !stopping
            && match policy.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
        handle.update(idx, |c| {
            c.ready = false;
            c.state = State::Terminated(terminated.clone());
            c.finished = !restart;
        });
        if !restart {
            // An init container that is done is done: the pod goes on (or has failed).
            if !stopping && kind != Kind::Init {
                let _ = stop_rx.changed().await;
            }
            return;
        }
        // Back off before the restart: 1 s doubling to 5 min, reset after 10 minutes of running.
        if started_at.elapsed() > Duration::from_secs(600) {
            backoff = Duration::from_secs(1);
        }
        // As with the kubelet, while the container waits to restart both `kubectl logs` and
        // `kubectl logs --previous` show the run that just ended (the restart renames it).
        let _ = std::fs::remove_file(&previous_path);
        if std::fs::hard_link(&log_path, &previous_path).is_err() {
            let _ = std::fs::copy(&log_path, &previous_path);
        }
        handle.update(idx, |c| {
            c.last = Some(terminated.clone());
            c.restarts += 1;
            c.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "back-off {}s restarting failed container={} pod={}",
                    backoff.as_secs(),
                    container.name,
                    pod.name_any()
                ),
            };
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop_rx.changed() => {
                handle.update(idx, |c| { c.state = State::Terminated(terminated.clone()); c.finished = true; });
                return;
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
    }
}

/// `argv` as it runs in a running container's sandbox (`kubectl exec`, exec probes): through
/// `nsenter` into the namespaces of the container's main process, in its working directory.
/// Without a sandbox, or with the container not running, `argv` itself.
pub(crate) fn in_container(
    ctx: &NodeCtx,
    handle: &PodHandle,
    container: &Container,
    argv: &[String],
) -> Vec<String> {
    let pid = ctx.sandbox.as_ref().and_then(|_| {
        std::fs::read_to_string(
            handle
                .dir
                .join("run")
                .join(format!("{}.pid", container.name)),
        )
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    });
    match pid {
        Some(pid) => {
            let cwd = container
                .working_dir
                .as_deref()
                .filter(|w| w.starts_with('/'))
                .map_or_else(|| handle.dir.clone(), PathBuf::from);
            sandbox::join_argv(pid, &cwd, argv)
        }
        None => argv.to_vec(),
    }
}

/// The command that starts a container in its sandbox, with the plan it follows written
/// under `sandbox/` in the pod directory.
fn sandboxed(
    host: &sandbox::Host,
    handle: &PodHandle,
    pod: &Pod,
    container: &Container,
    program: &str,
    argv: &[String],
    env: &[(String, String)],
) -> Result<(String, Vec<String>), String> {
    // A command that is not there is said so before the container starts, as a runtime says
    // it (a path is looked for in the container's view, by the sandbox).
    if !program.contains('/') {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("/usr/local/bin:/usr/bin:/bin");
        if !std::env::split_paths(path).any(|d| d.join(program).is_file()) {
            return Err(format!("executable file not found in $PATH ({path})"));
        }
    }
    let prepared = handle
        .prepared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let plan = sandbox::plan(&handle.dir, &prepared, pod, container)?;
    std::fs::create_dir_all(&plan.stage)
        .map_err(|e| format!("cannot make {}: {e}", plan.stage.display()))?;
    let tmp = sandbox::private_tmp(&handle.dir, &container.name);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&tmp)
            .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)))
            .map_err(|e| format!("cannot make {}: {e}", tmp.display()))?;
    }
    let plan_path = handle
        .dir
        .join("sandbox")
        .join(format!("{}.json", container.name));
    let text = serde_json::to_vec(&plan).map_err(|e| e.to_string())?;
    std::fs::write(&plan_path, text)
        .map_err(|e| format!("cannot write {}: {e}", plan_path.display()))?;
    let command: Vec<String> = std::iter::once(program.to_string())
        .chain(argv.iter().cloned())
        .collect();
    let mut wrapped = sandbox::start_argv(host, &plan_path, &command);
    let first = wrapped.remove(0);
    Ok((first, wrapped))
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// SIGTERM to the container's process group, SIGKILL after `grace`.
async fn terminate(child: &mut tokio::process::Child, pid: Option<Pid>, grace: Duration) -> i32 {
    if let Some(p) = pid {
        let _ = rustix::process::kill_process_group(p, Signal::TERM);
    }
    let code = match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(s)) => exit_code(s),
        _ => {
            if let Some(p) = pid {
                let _ = rustix::process::kill_process_group(p, Signal::KILL);
            }
            let _ = child.start_kill();
            child.wait().await.map(exit_code).unwrap_or(137)
        }
    };
    // Whatever else the container started in its group goes with it, and is gone before the
    // pod is (a signal is delivered after kill returns; a process forked as the group was
    // signalled escapes the first one).
    if let Some(p) = pid {
        for _ in 0..100 {
            if rustix::process::kill_process_group(p, Signal::KILL).is_err()
                || !group_alive(p.as_raw_nonzero().get())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    code
}

/// Whether a process of group `pgid` still runs (zombies, which whoever adopted them reaps,
/// do not count).
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        pgrp == Some(pgid) && state != "Z" && state != "X"
    })
}

/// Startup, then readiness and liveness probes for one run of a container.
async fn run_probes(
    handle: Arc<PodHandle>,
    idx: usize,
    container: Container,
    pod_ip: String,
    env: Vec<(String, String)>,
    kill: tokio::sync::mpsc::Sender<String>,
) {
    let dir = handle.dir.clone();
    let period = |p: &k8s_openapi::api::core::v1::Probe| {
        Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64)
    };
    let delay = |p: &k8s_openapi::api::core::v1::Probe| {
        Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)
    };
    if let Some(p) = &container.startup_probe {
        tokio::time::sleep(delay(p)).await;
        let threshold = p.failure_threshold.unwrap_or(3).max(1);
        let mut failures = 0;
        loop {
            if probe::check(p, &container, &pod_ip, &env, &dir).await {
                break;
            }
            failures += 1;
            if failures >= threshold {
                let _ = kill.send("startup probe failed".into()).await;
                return;
            }
            tokio::time::sleep(period(p)).await;
        }
        let ready_now = container.readiness_probe.is_none();
        handle.update(idx, |c| {
            c.started = true;
            c.ready = ready_now;
        });
    }
    let readiness = async {
        let Some(p) = &container.readiness_probe else {
            return;
        };
        tokio::time::sleep(delay(p)).await;
        let (need_ok, need_fail) = (
            p.success_threshold.unwrap_or(1).max(1),
            p.failure_threshold.unwrap_or(3).max(1),
        );
        let (mut ok, mut fail) = (0, 0);
        loop {
            if probe::check(p, &container, &pod_ip, &env, &dir).await {
                ok += 1;
                fail = 0;
                if ok >= need_ok {
                    handle.update(idx, |c| c.ready = true);
                }
            } else {
                fail += 1;
                ok = 0;
                if fail >= need_fail {
                    handle.update(idx, |c| c.ready = false);
                }
            }
            tokio::time::sleep(period(p)).await;
        }
    };
    let liveness = async {
        let Some(p) = &container.liveness_probe else {
            return;
        };
        tokio::time::sleep(delay(p)).await;
        let need_fail = p.failure_threshold.unwrap_or(3).max(1);
        let mut fail = 0;
        loop {
            if probe::check(p, &container, &pod_ip, &env, &dir).await {
                fail = 0;
            } else {
                fail += 1;
                if fail >= need_fail {
                    let _ = kill.send("liveness probe failed".into()).await;
                    return;
                }
            }
            tokio::time::sleep(period(p)).await;
        }
    };
    tokio::join!(readiness, liveness);
}

/// Patch the pod's status whenever the containers' state changes.
async fn write_status(ctx: Arc<NodeCtx>, handle: Arc<PodHandle>, pod: Pod, pod_ip: String) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let name = pod.name_any();
    let mut last_sent: Option<serde_json::Value> = None;
    let mut transitions: BTreeMap<String, (String, Time)> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            Some((
                c.type_.clone(),
                (c.status.clone(), c.last_transition_time.clone()?),
            ))
        })
        .collect();
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(now);
    loop {
        handle.changed.notified().await;
        // Let a burst of changes settle into one write.
        tokio::time::sleep(Duration::from_millis(10)).await;
        if handle.stop.borrow().is_some_and(|s| s.shutdown) {
            return;
        }
        let cs = handle
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let status = pod_status(
            &pod,
            &cs,
            &pod_ip,
            &ctx.host_ip,
            &start_time,
            &mut transitions,
        );
        let body = json!({"status": status});
        if last_sent.as_ref() == Some(&body) {
            continue;
        }
        for attempt in 0..5u32 {
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) => {
                    tracing::debug!(pod = %name, error = %e, attempt, "status update failed");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        last_sent = Some(body);
    }
}

fn pod_status(
    pod: &Pod,
    cs: &[CState],
    pod_ip: &str,
    host_ip: &str,
    start_time: &Time,
    transitions: &mut BTreeMap<String, (String, Time)>,
) -> PodStatus {
    let (init, app): (Vec<&CState>, Vec<&CState>) = cs.iter().partition(|c| c.kind != Kind::App);
    let exit_ok = |c: &CState| matches!(&c.state, State::Terminated(t) if t.exit_code == 0);
    // Initialized: every init container completed, every sidecar started.
    let initialized = init.iter().all(|c| match c.kind {
        Kind::Sidecar => c.started && matches!(c.state, State::Running { .. }),
        _ => exit_ok(c),
    });
    let init_failed = init
        .iter()
        .any(|c| c.kind == Kind::Init && c.finished && !exit_ok(c));
    let all_done = !app.is_empty() && app.iter().all(|c| c.finished);
    let ever_ran = app
        .iter()
        .any(|c| c.restarts > 0 || matches!(c.state, State::Running { .. } | State::Terminated(_)));
    let phase = if init_failed {
        "Failed"
    } else if all_done {
        if app.iter().all(|c| exit_ok(c)) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if ever_ran {
        "Running"
    } else {
        "Pending"
    };
    // Sidecars count towards readiness, as app containers do.
    let all_ready = !app.is_empty()
        && initialized
        && cs.iter().filter(|c| c.kind != Kind::Init).all(|c| c.ready)
        && !all_done;
    let mut condition = |type_: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let entry = transitions
            .entry(type_.to_string())
            .or_insert_with(|| (status.to_string(), now()));
        if entry.0 != status {
            *entry = (status.to_string(), now());
        }
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: Some(entry.1.clone()),
            reason: (!ok).then(|| match type_ {
                "Initialized" => "ContainersNotInitialized".into(),
                _ if all_done || init_failed => "PodCompleted".into(),
                _ => "ContainersNotReady".into(),
            }),
            ..Default::default()
        }
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", true),
        condition("Initialized", initialized),
        condition("Ready", all_ready),
        condition("ContainersReady", all_ready),
        condition("PodScheduled", true),
    ];
    let status_of = |c: &&CState| ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: String::new(),
        container_id: Some(format!("atoll-process://{}", c.name)),
        ready: c.ready,
        started: Some(c.started && matches!(c.state, State::Running { .. })),
        restart_count: c.restarts,
        last_state: c.last.clone().map(|t| ContainerState {
            terminated: Some(t),
            ..Default::default()
        }),
        state: Some(match &c.state {
            State::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: (!message.is_empty()).then(|| message.clone()),
                }),
                ..Default::default()
            },
            State::Running { since } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(since.clone()),
                }),
                ..Default::default()
            },
            State::Terminated(t) => ContainerState {
                terminated: Some(t.clone()),
                ..Default::default()
            },
        }),
        ..Default::default()
    };
    let _ = pod;
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.into()),
        pod_ip: Some(pod_ip.into()),
        pod_ips: Some(vec![PodIP { ip: pod_ip.into() }]),
        start_time: Some(start_time.clone()),
        container_statuses: Some(app.iter().map(status_of).collect()),
        init_container_statuses: (!init.is_empty()).then(|| init.iter().map(status_of).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_runs_its_command_or_its_args() {
        let c = |image: &str, command: &[&str], args: &[&str]| Container {
            name: "c".into(),
            image: Some(image.into()),
            command: (!command.is_empty()).then(|| command.iter().map(|s| s.to_string()).collect()),
            args: (!args.is_empty()).then(|| args.iter().map(|s| s.to_string()).collect()),
            ..Container::default()
        };
        let cases: [(&str, Container, Option<&[&str]>); 6] = [
            (
                "command and args",
                c("busybox", &["sh"], &["-c", "true"]),
                Some(&["sh", "-c", "true"]),
            ),
            (
                "args alone",
                c("busybox:1.36", &[], &["sh", "-c", "true"]),
                Some(&["sh", "-c", "true"]),
            ),
            (
                "args alone, a registry with a port",
                c("127.0.0.1:5000/debian:12", &[], &["true"]),
                Some(&["true"]),
            ),
            ("neither", c("python:3", &[], &[]), None),
            (
                "an image with an entrypoint",
                c("docker.io/library/nginx:1.25", &[], &["-g", "daemon off;"]),
                None,
            ),
            (
                "an entrypoint image with a command",
                c("alpine/socat:1.7.4.4", &["socat"], &["-V"]),
                Some(&["socat", "-V"]),
            ),
        ];
        for (case, container, want) in cases {
            let got = command_line(&container);
            match want {
                Some(w) => assert_eq!(
                    got.as_deref().ok(),
                    Some(&w.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]),
                    "{case}"
                ),
                None => assert!(got.is_err(), "{case}: {got:?}"),
            }
        }
        assert_eq!(
            repository("registry.k8s.io/e2e-test-images/agnhost:2.53"),
            "registry.k8s.io/e2e-test-images/agnhost"
        );
        assert_eq!(repository("nginx@sha256:abc"), "nginx");
    }

    #[test]
    fn a_group_is_alive_while_a_process_of_it_runs() {
        let own = rustix::process::getpgrp().as_raw_nonzero().get();
        assert!(group_alive(own));
        // Process groups are named after a process; no process has this number.
        assert!(!group_alive(i32::MAX - 7));
    }
}
