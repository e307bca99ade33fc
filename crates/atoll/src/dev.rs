//! `atoll dev up|status|down`: a hub and N member clusters on this machine, each an API server
//! with the cluster runtime (scheduler, controllers, node agents), as background processes.
//!
//! Everything lives in one data dir: `dev.json` (what runs, on which ports), `kubeconfig`
//! (contexts `hub`, `member1`..), one directory per cluster (its store and PKI, and its nodes'
//! pod directories) and `logs/`. Ports and pod ranges are derived from the data dir's path, so
//! two environments with different data dirs run side by side; `dev down` then `dev up` on the
//! same dir brings back the same clusters with their objects.

use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct DevArgs {
    #[command(subcommand)]
    command: DevCommand,
}

#[derive(clap::Subcommand)]
enum DevCommand {
    /// Start a hub and N member clusters in the background; returns when all are ready.
    Up(UpArgs),
    /// Show what runs.
    Status(DirArgs),
    /// Stop everything (the data stays; `dev up` brings it back).
    Down(DirArgs),
}

#[derive(clap::Args)]
struct DirArgs {
    /// The environment's directory (default: ~/.atoll/dev).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct UpArgs {
    /// Member clusters besides the hub, 1 to 7 (default 2). An existing environment keeps its shape.
    #[arg(long)]
    clusters: Option<u32>,
    /// Of the members, the last K join in Push mode: no agent, the hub applies their works
    /// with a credential of theirs (default 0).
    #[arg(long)]
    push_clusters: Option<u32>,
    /// Nodes per cluster, 1 to 50 (default 1).
    #[arg(long)]
    nodes: Option<u32>,
    /// `process` (default) runs containers' commands as local processes; `simulated` only
    /// pretends, like kwok.
    #[arg(long)]
    runtime: Option<String>,
    /// The environment's directory (default: ~/.atoll/dev).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Node lease duration in seconds; a node is unreachable once its lease lapses.
    #[arg(long, default_value_t = 40)]
    node_lease_seconds: i32,
    /// Seconds pods stay on an unreachable node unless they tolerate it for longer or shorter.
    #[arg(long, default_value_t = 300)]
    default_toleration_seconds: i64,
    /// Members' cluster lease period on the hub, in seconds (Unknown after 5 missed).
    #[arg(long, default_value_t = 10)]
    cluster_lease_seconds: i32,
    /// Longest life of certificates the clusters' CSR signers issue, in seconds (short values
    /// make agents rotate often).
    #[arg(long, default_value_t = 365 * 86_400)]
    cluster_signing_duration: i64,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    match args.command {
        DevCommand::Up(a) => up(a).await,
        DevCommand::Status(a) => status(&data_dir(a.data_dir)?).await,
        DevCommand::Down(a) => down(&data_dir(a.data_dir)?),
    }
}

fn data_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(d) => d,
        None => PathBuf::from(std::env::var("HOME").context("HOME is not set; pass --data-dir")?)
            .join(".atoll")
            .join("dev"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// The port slot an environment in `dir` tries first: its ports, and with them its pod ranges,
/// are fixed the first time it comes up.
fn home_slot(dir: &Path) -> u16 {
    // FNV-1a of the path: stable across runs and machines.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    20000 + (h % u64::from(PORT_SLOTS)) as u16 * 20
}

/// How many port slots of 20 there are from port 20000.
const PORT_SLOTS: u16 = 360;

/// How many pod ranges there are: each a /15 of 127.16.0.0/8's upper part (127.16.0.0 to
/// 127.255.255.255), a /18 for each of up to 8 clusters (a /24 for each of up to 50 nodes).
/// Slots `POD_RANGES` apart share a range, so a new environment avoids a slot whose range
/// another running environment uses.
const POD_RANGES: u16 = 120;

/// The pod range (cluster CIDR) of cluster `i` of the environment whose ports start at `base_port`.
fn cluster_cidr(base_port: u16, i: usize) -> String {
    let range = u32::from(base_port.saturating_sub(20000) / 20 % POD_RANGES);
    let first =
        u32::from(std::net::Ipv4Addr::new(127, 16, 0, 0)) + (range << 17) + ((i as u32) << 14);
    format!("{}/18", std::net::Ipv4Addr::from(first))
}

/// The Service range (ClusterIPs) of cluster `i` of the environment whose ports start at
/// `base_port`: a loopback /24 below the pod ranges (127.1.0.0 to 127.12.63.255), one per
/// cluster of every slot, so that the cluster's Service proxy can listen on them.
fn service_cidr(base_port: u16, i: usize) -> String {
    let slot = u32::from(base_port.saturating_sub(20000) / 20);
    let first = u32::from(std::net::Ipv4Addr::new(127, 1, 0, 0)) + ((slot * 8 + i as u32) << 8);
    format!("{}/24", std::net::Ipv4Addr::from(first))
}

/// The ClusterSetIP range of the environment whose ports start at `base_port`: a loopback /24
/// of its own between the Service ranges and the pod ranges (127.12.64.0 to 127.13.231.255),
/// so that environments side by side never share a multi-cluster service's address.
fn clusterset_cidr(base_port: u16) -> String {
    let slot = u32::from(base_port.saturating_sub(20000) / 20);
    let first = u32::from(std::net::Ipv4Addr::new(127, 12, 64, 0)) + (slot << 8);
    format!("{}/24", std::net::Ipv4Addr::from(first))
}

/// Where cluster `i`'s DNS listens: kube-dns's ClusterIP (the tenth address of its Service
/// range), port 53 when run as root (so pods' resolv.conf can name it), else port
/// `base_port + 10 + i` of the environment's slot.
fn dns_listen(base_port: u16, i: usize) -> String {
    let cidr = service_cidr(base_port, i);
    let network = cidr.split('/').next().unwrap_or("127.1.0.0");
    let ip = network
        .parse::<std::net::Ipv4Addr>()
        .map(|n| std::net::Ipv4Addr::from(u32::from(n) + 10))
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
    let port = if rustix::process::geteuid().is_root() {
        53
    } else {
        base_port + 10 + i as u16
    };
    format!("{ip}:{port}")
}

/// The hub API server port of a running environment whose slot shares the pod ranges of the
/// slot at `base_port`, if there is one.
fn range_in_use(base_port: u16) -> Option<u16> {
    (1..PORT_SLOTS / POD_RANGES)
        .map(|k| next_slot(base_port, k * POD_RANGES))
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_err())
}

/// The base port `k` slots after `base` (wrapping around).
fn next_slot(base: u16, k: u16) -> u16 {
    20000 + ((base.saturating_sub(20000) / 20 + k) % PORT_SLOTS) * 20
}

/// The first port of a server not running yet that something else holds, with its cluster.
fn taken_port(procs: &[Proc], base_port: u16) -> Option<(u16, String)> {
    procs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.role == "server" && p.pid.is_none())
        .map(|(i, p)| (base_port + i as u16, p.cluster.clone()))
        .find(|(port, _)| std::net::TcpListener::bind(("127.0.0.1", *port)).is_err())
}

fn cluster_names(members: u32) -> Vec<String> {
    std::iter::once("hub".to_string())
        .chain((1..=members).map(|i| format!("member{i}")))
        .collect()
}

fn read_state(dir: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(dir.join("dev.json")).ok()?).ok()
}

/// Whether `pid` is a live process of this environment.
fn alive(pid: i64, dir: &Path) -> bool {
    let running = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(false);
    // Its command line names atoll and this environment's directory (so a recycled pid is not
    // taken for ours). A process in the middle of exec shows an empty command line for a moment:
    // that is one just spawned, alive.
    running
        && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c);
            c.is_empty() || (c.contains("atoll") && c.contains(&*dir.to_string_lossy()))
        })
}

fn running_pids(state: &Value, dir: &Path) -> Vec<(String, i64)> {
    state["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let pid = p["pid"].as_i64()?;
            alive(pid, dir).then(|| (p["name"].as_str().unwrap_or_default().to_string(), pid))
        })
        .collect()
}

/// One background process of the environment.
struct Proc {
    name: String,
    role: &'static str,
    cluster: String,
    args: Vec<String>,
    log: PathBuf,
    /// A node's directory (pod directories, kubeconfig).
    dir: Option<PathBuf>,
    pid: Option<i64>,
}

impl Proc {
    fn to_json(&self) -> Value {
        json!({"name": self.name, "role": self.role, "cluster": self.cluster, "args": self.args,
               "log": self.log, "dir": self.dir, "pid": self.pid})
    }

    fn from_json(v: &Value) -> Option<Proc> {
        Some(Proc {
            name: v["name"].as_str()?.to_string(),
            role: match v["role"].as_str()? {
                "node" => "node",
                "hub" => "hub",
                "agent" => "agent",
                "peering" => "peering",
                "eastwest" => "eastwest",
                _ => "server",
            },
            cluster: v["cluster"].as_str()?.to_string(),
            args: v["args"]
                .as_array()?
                .iter()
                .filter_map(|a| a.as_str().map(String::from))
                .collect(),
            log: PathBuf::from(v["log"].as_str()?),
            dir: v["dir"].as_str().map(PathBuf::from),
            pid: v["pid"].as_i64(),
        })
    }
}

/// The processes of a new environment.
fn plan(dir: &Path, args: &UpArgs, shape: (u32, u32, &str), base_port: u16) -> Vec<Proc> {
    let (members, nodes, runtime) = shape;
    let clusters = cluster_names(members);
    let logs = dir.join("logs");
    let mut procs = Vec::new();
    for (i, c) in clusters.iter().enumerate() {
        procs.push(Proc {
            name: c.clone(),
            role: "server",
            cluster: c.clone(),
            args: vec![
                "server".into(),
                "--data-dir".into(),
                dir.join(c).display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{}", base_port + i as u16),
                "--name".into(),
                c.clone(),
                "--controllers".into(),
                "--cluster-cidr".into(),
                cluster_cidr(base_port, i),
                "--service-cidr".into(),
                service_cidr(base_port, i),
                "--dns-listen".into(),
                dns_listen(base_port, i),
                "--default-toleration-seconds".into(),
                args.default_toleration_seconds.to_string(),
                "--cluster-signing-duration".into(),
                args.cluster_signing_duration.to_string(),
            ],
            log: logs.join(format!("{c}.log")),
            dir: None,
            pid: None,
        });
    }
    for c in &clusters {
        for j in 1..=nodes {
            let name = format!("{c}-node{j}");
            let ndir = dir.join(c).join("nodes").join(&name);
            procs.push(Proc {
                name: name.clone(),
                role: "node",
                cluster: c.clone(),
                args: vec![
                    "node".into(),
                    "--kubeconfig".into(),
                    ndir.join("kubeconfig").display().to_string(),
                    "--name".into(),
                    name.clone(),
                    "--runtime".into(),
                    runtime.to_string(),
                    "--data-dir".into(),
                    ndir.display().to_string(),
                    "--lease-seconds".into(),
                    args.node_lease_seconds.to_string(),
                ],
                log: logs.join(format!("{name}.log")),
                dir: Some(ndir),
                pid: None,
            });
        }
    }
    // The hub's registration controllers, and each member's agent (joined and accepted by
    // `up`, as a user would with `atoll hub token` and `atoll accept`).
    procs.push(Proc {
        name: "hub-controllers".into(),
        role: "hub",
        cluster: "hub".into(),
        args: vec![
            "hub".into(),
            "--kubeconfig".into(),
            dir.join("hub")
                .join("admin.kubeconfig")
                .display()
                .to_string(),
            "--webhook-listen".into(),
            "127.0.0.1:0".into(),
            "--clusterset-ip-range".into(),
            clusterset_cidr(base_port),
        ],
        log: logs.join("hub-controllers.log"),
        dir: None,
        pid: None,
    });
    let push = args.push_clusters.unwrap_or(0) as usize;
    let pull_members = clusters.len().saturating_sub(1).saturating_sub(push);
    for c in clusters.iter().skip(1).take(pull_members) {
        procs.push(Proc {
            name: format!("{c}-agent"),
            role: "agent",
            cluster: c.clone(),
            args: vec![
                "agent".into(),
                "--cluster-name".into(),
                c.clone(),
                "--kubeconfig".into(),
                dir.join(c).join("admin.kubeconfig").display().to_string(),
                "--bootstrap-kubeconfig".into(),
                dir.join(c)
                    .join("bootstrap.kubeconfig")
                    .display()
                    .to_string(),
                "--lease-duration".into(),
                format!("{}s", args.cluster_lease_seconds),
            ],
            log: logs.join(format!("{c}-agent.log")),
            dir: None,
            pid: None,
        });
    }
    // Each Pull member's east-west gateway (it carries the cluster's hub identity, which a
    // Push member, without an agent, has not): other members reach its exported endpoints
    // through it when its ManagedCluster says they are not directly reachable.
    for c in clusters.iter().skip(1).take(pull_members) {
        procs.push(Proc {
            name: format!("{c}-eastwest"),
            role: "eastwest",
            cluster: c.clone(),
            args: vec![
                "gateway".into(),
                "--east-west".into(),
                "--kubeconfig".into(),
                dir.join(c).join("admin.kubeconfig").display().to_string(),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ],
            log: logs.join(format!("{c}-eastwest.log")),
            dir: None,
            pid: None,
        });
    }
    // Each member's peering controllers: members peer with each other, no hub involved.
    for c in clusters.iter().skip(1) {
        procs.push(Proc {
            name: format!("{c}-peering"),
            role: "peering",
            cluster: c.clone(),
            args: vec![
                "peer".into(),
                "controllers".into(),
                "--kubeconfig".into(),
                dir.join(c).join("admin.kubeconfig").display().to_string(),
                "--cluster-id".into(),
                c.clone(),
            ],
            log: logs.join(format!("{c}-peering.log")),
            dir: None,
            pid: None,
        });
    }
    procs
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if let Some(n) = args.clusters {
        anyhow::ensure!(
            (1..=7).contains(&n),
            "--clusters {n}: must be between 1 and 7"
        );
    }
    if let Some(n) = args.nodes {
        anyhow::ensure!(
            (1..=50).contains(&n),
            "--nodes {n}: must be between 1 and 50"
        );
    }
    if let (Some(k), n) = (args.push_clusters, args.clusters.unwrap_or(2)) {
        anyhow::ensure!(
            k <= n,
            "--push-clusters {k}: at most the {n} member cluster(s)"
        );
    }
    if let Some(r) = &args.runtime {
        anyhow::ensure!(
            r == "process" || r == "simulated",
            "--runtime {r}: must be process or simulated"
        );
    }
    let dir = data_dir(args.data_dir.clone())?;
    let previous = read_state(&dir);
    let mut base_port = home_slot(&dir);
    if let Some(state) = &previous {
        base_port = state["basePort"].as_u64().map_or(base_port, |p| p as u16);
    }
    // An existing environment keeps its shape (its data is that shape); `up` only starts what
    // is not running in it.
    let running = previous
        .as_ref()
        .map(|s| running_pids(s, &dir))
        .unwrap_or_default();
    let known: Vec<Proc> = previous
        .as_ref()
        .and_then(|s| s["processes"].as_array())
        .into_iter()
        .flatten()
        .filter_map(Proc::from_json)
        .collect();
    let mut procs = if known.iter().any(|p| p.role == "server") {
        known
    } else {
        let shape = (
            args.clusters.unwrap_or(2),
            args.nodes.unwrap_or(1),
            args.runtime.as_deref().unwrap_or("process"),
        );
        // A new environment takes the first slot, from its directory's on, whose ports are
        // free and whose pod ranges no running environment uses: another environment (or
        // anything else) may hold those of its own slot. Once recorded, the slot is the
        // environment's, and a clash is an error below.
        let probe = if previous.is_none() { PORT_SLOTS } else { 0 };
        let free = (0..probe).find_map(|k| {
            let port = next_slot(base_port, k);
            let procs = plan(&dir, &args, shape, port);
            (taken_port(&procs, port).is_none() && range_in_use(port).is_none())
                .then_some((port, procs))
        });
        match free {
            Some((port, procs)) => {
                base_port = port;
                procs
            }
            None => plan(&dir, &args, shape, base_port),
        }
    };
    for p in &mut procs {
        if !p.pid.is_some_and(|pid| alive(pid, &dir)) {
            p.pid = None;
        }
    }
    let clusters: Vec<String> = procs
        .iter()
        .filter(|p| p.role == "server")
        .map(|p| p.cluster.clone())
        .collect();
    let nodes_per_cluster = procs
        .iter()
        .filter(|p| p.role == "node" && p.cluster == clusters[0])
        .count();
    let runtime = procs
        .iter()
        .find(|p| p.role == "node")
        .and_then(|p| {
            p.args
                .iter()
                .skip_while(|a| *a != "--runtime")
                .nth(1)
                .cloned()
        })
        .unwrap_or_else(|| "process".into());
    let members = clusters.len() as u32 - 1;
    // Members without an agent join in Push mode.
    let push_members: Vec<String> = clusters
        .iter()
        .skip(1)
        .filter(|c| !procs.iter().any(|p| p.role == "agent" && p.cluster == **c))
        .cloned()
        .collect();
    if args.clusters.is_some_and(|n| n != members)
        || args.nodes.is_some_and(|n| n as usize != nodes_per_cluster)
        || args.runtime.as_ref().is_some_and(|r| *r != runtime)
        || args
            .push_clusters
            .is_some_and(|k| k as usize != push_members.len())
    {
        bail!(
            "the environment in {} has {members} member cluster(s) ({} in Push mode) with {nodes_per_cluster} node(s) each ({runtime} runtime), and keeps that shape; \
             use another --data-dir, or `atoll dev down` and remove {} to start over",
            dir.display(),
            push_members.len(),
            dir.display()
        );
    }
    // Every port first, so a collision is reported before anything starts.
    if let Some((port, cluster)) = taken_port(&procs, base_port) {
        bail!(
            "port {port} (the {cluster} API server of the environment in {}) is already in use; stop what holds it, or use another --data-dir",
            dir.display()
        );
    }
    // Likewise its pod ranges: an environment started while this one was down may have taken a
    // slot that shares them, and pods of both listening on one address would clash.
    let own_ranges = procs
        .iter()
        .any(|p| p.args.contains(&cluster_cidr(base_port, 0)));
    let servers_down = procs.iter().any(|p| p.role == "server" && p.pid.is_none());
    if let Some(port) = range_in_use(base_port).filter(|_| own_ranges && servers_down) {
        bail!(
            "the pod ranges of the environment in {} (from {}) are those of the environment whose hub API server listens on port {port}; stop that one (`atoll dev down` in its directory), or use another --data-dir",
            dir.display(),
            cluster_cidr(base_port, 0)
        );
    }
    let exe = std::env::current_exe().context("cannot find the atoll executable")?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let starting = procs.iter().filter(|p| p.pid.is_none()).count();
    if starting == 0 {
        eprintln!(
            "atoll dev: everything in {} is already running",
            dir.display()
        );
    } else if running.is_empty() {
        eprintln!(
            "atoll dev: starting a hub and {members} member cluster(s) in {}",
            dir.display()
        );
    } else {
        eprintln!(
            "atoll dev: restarting {starting} stopped process(es) in {}",
            dir.display()
        );
    }
    // API servers (with their controllers), all at once.
    let mut waits = Vec::new();
    for p in procs
        .iter_mut()
        .filter(|p| p.role == "server" && p.pid.is_none())
    {
        std::fs::create_dir_all(dir.join(&p.cluster))?;
        let (pid, offset) = spawn(&exe, &p.args, &p.log)?;
        p.pid = Some(pid);
        waits.push((p.cluster.clone(), pid, p.log.clone(), offset));
    }
    write_state(&dir, base_port, &clusters, &procs)?;
    for (c, pid, log, offset) in &waits {
        wait_for_line(
            *pid,
            log,
            *offset,
            "ready on",
            &format!("{c} API server"),
            &dir,
        )
        .await?;
    }
    // Node agents, each with its own identity from its cluster's CA. A node (re)started now
    // counts as ready only once it has reported in: after `dev down` its stored status still
    // says Ready.
    let fresh_since = k8s_openapi::jiff::Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(1))
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
    let mut started_nodes = std::collections::HashSet::new();
    for p in procs
        .iter_mut()
        .filter(|p| p.role == "node" && p.pid.is_none())
    {
        started_nodes.insert(p.name.clone());
        let Some(ndir) = p.dir.clone() else { continue };
        std::fs::create_dir_all(&ndir)?;
        let kubeconfig = ndir.join("kubeconfig");
        if !kubeconfig.exists() {
            let i = clusters.iter().position(|c| *c == p.cluster).unwrap_or(0);
            let url = format!("https://127.0.0.1:{}", base_port + i as u16);
            let pki = crate::kubeconfig::existing_pki(&dir.join(&p.cluster))?;
            let text = pki.kubeconfig(
                &url,
                &p.cluster,
                &format!("system:node:{}", p.name),
                &["system:nodes".to_string()],
            )?;
            atoll_apiserver::tls::write_private(&kubeconfig, &text)?;
        }
        let (pid, _) = spawn(&exe, &p.args, &p.log)?;
        p.pid = Some(pid);
    }
    // Registration: the hub's controllers, then each member's agent with a bootstrap token.
    let hub_kubeconfig = dir.join("hub").join("admin.kubeconfig");
    for p in procs
        .iter_mut()
        .filter(|p| p.role == "hub" && p.pid.is_none())
    {
        let (pid, offset) = spawn(&exe, &p.args, &p.log)?;
        p.pid = Some(pid);
        wait_for_line(
            pid,
            &p.log,
            offset,
            "controllers ready",
            "hub's controllers",
            &dir,
        )
        .await?;
    }
    for p in procs
        .iter_mut()
        .filter(|p| p.role == "agent" && p.pid.is_none())
    {
        let boot = dir.join(&p.cluster).join("bootstrap.kubeconfig");
        if !boot.exists() {
            let text = crate::registration::token(&hub_kubeconfig, Duration::from_secs(3600), None)
                .await?;
            atoll_apiserver::tls::write_private(&boot, &text)?;
        }
        let (pid, _) = spawn(&exe, &p.args, &p.log)?;
        p.pid = Some(pid);
    }
    write_state(&dir, base_port, &clusters, &procs)?;
    let kubeconfig = write_kubeconfig(&dir, &clusters)?;
    // Ready: every node Ready with a pod range, in every cluster.
    for c in &clusters {
        let (client, _) = crate::clients::from_path(&dir.join(c).join("admin.kubeconfig")).await?;
        let nodes: Api<Node> = Api::all(client);
        let deadline = Instant::now() + Duration::from_secs(60);
        let prefix = format!("{c}-node");
        loop {
            let ready = nodes
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|n| {
                            let name = n.metadata.name.as_deref().unwrap_or_default();
                            let reported = |c: &k8s_openapi::api::core::v1::NodeCondition| {
                                !started_nodes.contains(name)
                                    || c.last_heartbeat_time
                                        .as_ref()
                                        .is_some_and(|t| t.0 >= fresh_since)
                            };
                            let ready = n
                                .status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().any(|c| {
                                        c.type_ == "Ready" && c.status == "True" && reported(c)
                                    })
                                });
                            let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some();
                            ready
                                && cidr
                                && n.metadata
                                    .name
                                    .as_deref()
                                    .is_some_and(|x| x.starts_with(&prefix))
                        })
                        .count()
                })
                .unwrap_or(0);
            if ready >= nodes_per_cluster {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{c}: only {ready} of {nodes_per_cluster} nodes became Ready within 60 s; see {}",
                    dir.join("logs").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Push members: joined once by the admin holding both kubeconfigs, as a user would with
    // `atoll join --sync-mode Push`; the hub then applies their works and probes them.
    if !push_members.is_empty() {
        let (hub, _) = crate::clients::from_path(&hub_kubeconfig).await?;
        let mcs: kube::Api<atoll_api::cluster::ManagedCluster> = kube::Api::all(hub.clone());
        for m in &push_members {
            if mcs.get_opt(m).await?.is_none() {
                let member_kubeconfig = dir.join(m).join("admin.kubeconfig");
                crate::registration::push_join(
                    &hub,
                    &member_kubeconfig,
                    m,
                    args.cluster_lease_seconds,
                    true,
                )
                .await
                .with_context(|| format!("{m} cannot join in Push mode"))?;
            }
        }
    }
    if clusters.len() > 1 {
        accept_members(&dir, &hub_kubeconfig, &clusters[1..]).await?;
    }
    // The east-west gateways, once their clusters hold their hub identities; each one's
    // address goes on its ManagedCluster (a port picked anew at each start).
    let mut gateways = Vec::new();
    for p in procs
        .iter_mut()
        .filter(|p| p.role == "eastwest" && p.pid.is_none())
    {
        let (pid, offset) = spawn(&exe, &p.args, &p.log)?;
        p.pid = Some(pid);
        gateways.push((p.cluster.clone(), pid, p.log.clone(), offset));
    }
    write_state(&dir, base_port, &clusters, &procs)?;
    if !gateways.is_empty() {
        let (hub, _) = crate::clients::from_path(&hub_kubeconfig).await?;
        let mcs: kube::Api<atoll_api::cluster::ManagedCluster> = kube::Api::all(hub);
        for (c, pid, log, offset) in &gateways {
            let line = wait_for_line(
                *pid,
                log,
                *offset,
                "ready on",
                &format!("{c}'s east-west gateway"),
                &dir,
            )
            .await?;
            let address = line
                .rsplit(' ')
                .next()
                .filter(|a| a.parse::<std::net::SocketAddr>().is_ok())
                .with_context(|| format!("{c}'s east-west gateway said {line:?}"))?;
            let patch = serde_json::json!({"metadata": {"annotations": {
                atoll_api::mcs::ANNOTATION_EAST_WEST_ADDRESS: address,
            }}});
            mcs.patch(
                c,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .with_context(|| format!("cannot record {c}'s east-west gateway on the hub"))?;
        }
    }
    // The peering controllers last: they install their CRDs and roles while nothing else is
    // starting (CRDs applied at once with the agents' slowed their joining).
    let mut peering = Vec::new();
    for p in procs
        .iter_mut()
        .filter(|p| p.role == "peering" && p.pid.is_none())
    {
        let (pid, offset) = spawn(&exe, &p.args, &p.log)?;
        p.pid = Some(pid);
        peering.push((p.cluster.clone(), pid, p.log.clone(), offset));
    }
    write_state(&dir, base_port, &clusters, &procs)?;
    for (c, pid, log, offset) in &peering {
        wait_for_line(
            *pid,
            log,
            *offset,
            "peering controllers ready",
            &format!("{c}'s peering controllers"),
            &dir,
        )
        .await?;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "atoll dev: hub and {} member cluster(s) ready in {took:.1} s ({nodes_per_cluster} node(s) each, {runtime} runtime)",
        clusters.len() - 1,
    );
    println!(
        "  kubeconfig: {} (contexts: {})",
        kubeconfig.display(),
        clusters.join(", ")
    );
    println!(
        "  try:        export KUBECONFIG={}; kubectl --context member1 get nodes",
        kubeconfig.display()
    );
    println!(
        "  status:     atoll dev status --data-dir {}",
        dir.display()
    );
    println!("  stop:       atoll dev down --data-dir {}", dir.display());
    Ok(())
}

/// Start a detached background process with its output appended to `log`; returns its pid and
/// where its output starts in the log.
fn spawn(exe: &Path, args: &[String], log: &Path) -> anyhow::Result<(i64, u64)> {
    use std::os::unix::process::CommandExt;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let offset = out.seek(std::io::SeekFrom::End(0))?;
    let err = out.try_clone()?;
    let child = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C in the terminal that ran `dev up` does not reach it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    Ok((i64::from(child.id()), offset))
}

async fn wait_for_line(
    pid: i64,
    log: &Path,
    offset: u64,
    needle: &str,
    what: &str,
    dir: &Path,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Liveness first: a process that wrote its last words and died after the log was read
        // would otherwise be reported without them.
        let exited = !alive(pid, dir);
        if let Ok(f) = std::fs::File::open(log) {
            let mut r = std::io::BufReader::new(f);
            r.seek(std::io::SeekFrom::Start(offset))?;
            let lines: Vec<String> = r.lines().map_while(Result::ok).collect();
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return Ok(line.clone());
            }
            if exited {
                let tail = lines
                    .iter()
                    .rev()
                    .take(5)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n  ");
                bail!(
                    "the {what} exited before it was ready:\n  {tail}\n(full log: {})",
                    log.display()
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the {what} was not ready within 60 s; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_state(
    dir: &Path,
    base_port: u16,
    clusters: &[String],
    procs: &[Proc],
) -> anyhow::Result<()> {
    let state = json!({
        "clusters": clusters,
        "basePort": base_port,
        "processes": procs.iter().map(Proc::to_json).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("dev.json"), serde_json::to_vec_pretty(&state)?)?;
    Ok(())
}

/// One kubeconfig with a context per cluster, from each server's admin kubeconfig.
fn write_kubeconfig(dir: &Path, clusters: &[String]) -> anyhow::Result<PathBuf> {
    let mut out = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    let mut users = String::from("users:\n");
    let mut contexts = String::from("contexts:\n");
    for c in clusters {
        let admin = std::fs::read_to_string(dir.join(c).join("admin.kubeconfig"))
            .with_context(|| format!("{c} has no admin.kubeconfig"))?;
        let field = |name: &str| -> anyhow::Result<String> {
            admin
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix(&format!("{name}: "))
                        .map(|v| v.trim().to_string())
                })
                .with_context(|| format!("{c}'s admin.kubeconfig has no {name}"))
        };
        out.push_str(&format!(
            "- name: {c}\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n",
            field("server")?,
            field("certificate-authority-data")?
        ));
        users.push_str(&format!(
            "- name: {c}-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            field("client-certificate-data")?,
            field("client-key-data")?
        ));
        contexts.push_str(&format!(
            "- name: {c}\n  context:\n    cluster: {c}\n    user: {c}-admin\n"
        ));
    }
    out.push_str(&users);
    out.push_str(&contexts);
    out.push_str("current-context: hub\n");
    let path = dir.join("kubeconfig");
    atoll_apiserver::tls::write_private(&path, &out)?;
    Ok(path)
}

async fn status(dir: &Path) -> anyhow::Result<()> {
    let Some(state) = read_state(dir) else {
        bail!(
            "no environment in {} (start one with `atoll dev up --data-dir {0}`)",
            dir.display()
        );
    };
    let running: Vec<(String, i64)> = running_pids(&state, dir);
    let base = state["basePort"].as_u64().unwrap_or(0);
    println!(
        "{:<10} {:<26} {:<18} {:<9} NODES",
        "CLUSTER", "API", "DNS", "SERVER"
    );
    for (i, c) in state["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .enumerate()
    {
        let up = running.iter().any(|(n, _)| n == c);
        let nodes = if up {
            match crate::clients::from_path(&dir.join(c).join("admin.kubeconfig")).await {
                Ok((client, _)) => {
                    let api: Api<Node> = Api::all(client);
                    match tokio::time::timeout(
                        Duration::from_secs(3),
                        api.list(&ListParams::default()),
                    )
                    .await
                    {
                        Ok(Ok(l)) => {
                            let ready = l
                                .items
                                .iter()
                                .filter(|n| {
                                    n.status
                                        .as_ref()
                                        .and_then(|s| s.conditions.as_ref())
                                        .is_some_and(|cs| {
                                            cs.iter()
                                                .any(|c| c.type_ == "Ready" && c.status == "True")
                                        })
                                })
                                .count();
                            format!("{ready}/{} Ready", l.items.len())
                        }
                        _ => "unknown".into(),
                    }
                }
                Err(_) => "unknown".into(),
            }
        } else {
            "-".into()
        };
        println!(
            "{:<10} {:<26} {:<18} {:<9} {nodes}",
            c,
            format!("https://127.0.0.1:{}", base + i as u64),
            u16::try_from(base)
                .map(|b| dns_listen(b, i))
                .unwrap_or_default(),
            if up { "running" } else { "stopped" }
        );
    }
    println!("kubeconfig: {}", dir.join("kubeconfig").display());
    Ok(())
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let Some(state) = read_state(dir) else {
        println!("atoll dev: nothing runs in {}", dir.display());
        return Ok(());
    };
    let procs: Vec<&Value> = state["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    // Nodes first (they stop their pods), then the servers.
    for role in ["eastwest", "peering", "agent", "hub", "node", "server"] {
        let pids: Vec<i64> = procs
            .iter()
            .filter(|p| p["role"] == role)
            .filter_map(|p| p["pid"].as_i64())
            .filter(|pid| alive(*pid, dir))
            .collect();
        for pid in &pids {
            signal(*pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while pids.iter().any(|p| alive(*p, dir)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids.iter().filter(|p| alive(**p, dir)) {
            signal(*pid, rustix::process::Signal::KILL);
        }
    }
    // Container processes a killed node agent left behind.
    for p in procs.iter().filter(|p| p["role"] == "node") {
        if let Some(d) = p["dir"].as_str() {
            atoll_cluster::node::kill_leftovers(Path::new(d));
        }
    }
    println!(
        "atoll dev: stopped (data kept in {}; `atoll dev up --data-dir {0}` brings it back)",
        dir.display()
    );
    Ok(())
}

fn signal(pid: i64, sig: rustix::process::Signal) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Accept every member that waits with a CSR, then wait until all are Joined and Available.
async fn accept_members(
    dir: &Path,
    hub_kubeconfig: &Path,
    members: &[String],
) -> anyhow::Result<()> {
    use atoll_api::cluster::{
        CONDITION_AVAILABLE, CONDITION_JOINED, CSR_CLUSTER_LABEL, ManagedCluster,
    };
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    let (hub, _) = crate::clients::from_path(hub_kubeconfig).await?;
    let mcs: Api<ManagedCluster> = Api::all(hub.clone());
    let csrs: Api<CertificateSigningRequest> = Api::all(hub.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut accepted = std::collections::HashSet::new();
    loop {
        let mut ready = 0;
        for m in members {
            let mc = mcs.get_opt(m).await.ok().flatten();
            if mc
                .as_ref()
                .is_some_and(|mc| mc.is(CONDITION_JOINED) && mc.is(CONDITION_AVAILABLE))
            {
                ready += 1;
                continue;
            }
            if mc.is_none() || accepted.contains(m) {
                continue;
            }
            // Its agent has asked: accept it (a cluster joined before needs nothing).
            let waiting = csrs
                .list(&ListParams::default().labels(&format!("{CSR_CLUSTER_LABEL}={m}")))
                .await?
                .items
                .iter()
                .any(|c| !atoll_hub::csr::decided(c));
            if waiting || mc.is_some_and(|mc| mc.spec.hub_accepts_client) {
                if waiting {
                    crate::registration::decide(&hub, m, true).await?;
                }
                accepted.insert(m.clone());
            }
        }
        if ready == members.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {ready} of {} members joined the hub and became Available within 60 s; see {}",
                members.len(),
                dir.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn range(cidr: &str) -> (u32, u32) {
        let (ip, bits) = cidr.split_once('/').expect("a CIDR");
        let first = u32::from(ip.parse::<Ipv4Addr>().expect("an address"));
        let bits: u32 = bits.parse().expect("a prefix length");
        (first, first + (1 << (32 - bits)) - 1)
    }

    #[test]
    fn pod_ranges_of_slots_that_do_not_share_are_disjoint() {
        let mut all = Vec::new();
        for slot in 0..PORT_SLOTS {
            let base = 20000 + slot * 20;
            for i in 0..8 {
                let (first, last) = range(&cluster_cidr(base, i));
                assert!(
                    first >= u32::from(Ipv4Addr::new(127, 16, 0, 0)),
                    "{base} {i}"
                );
                assert!(
                    last <= u32::from(Ipv4Addr::new(127, 255, 255, 255)),
                    "{base} {i}"
                );
                // 50 nodes, a /24 each.
                assert!(last - first + 1 >= 50 * 256);
                all.push((first, last, slot % POD_RANGES));
            }
        }
        all.sort();
        for w in all.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(
                b.0 > a.1 || a.2 == b.2,
                "ranges of slots {} and {} overlap",
                a.2,
                b.2
            );
        }
        // Service ranges: one /24 per cluster of every slot, all below the pod ranges.
        let mut services = std::collections::HashSet::new();
        for slot in 0..PORT_SLOTS {
            for i in 0..8 {
                let (first, last) = range(&service_cidr(20000 + slot * 20, i));
                assert!(first >= u32::from(Ipv4Addr::new(127, 1, 0, 0)));
                assert!(last < u32::from(Ipv4Addr::new(127, 16, 0, 0)));
                assert!(services.insert(first), "slot {slot} cluster {i}");
            }
        }
        // ClusterSetIP ranges: one /24 per slot, clear of the Service and pod ranges.
        let last_service = services.iter().max().copied().unwrap_or_default() + 255;
        let mut sets = std::collections::HashSet::new();
        for slot in 0..PORT_SLOTS {
            let (first, last) = range(&clusterset_cidr(20000 + slot * 20));
            assert!(first > last_service, "slot {slot}");
            assert!(
                last < u32::from(Ipv4Addr::new(127, 16, 0, 0)),
                "slot {slot}"
            );
            assert!(sets.insert(first), "slot {slot}");
        }
        // The slots that share a range are exactly those `range_in_use` looks at.
        let base = next_slot(20000, 7);
        let sharers: Vec<u16> = (1..PORT_SLOTS / POD_RANGES)
            .map(|k| next_slot(base, k * POD_RANGES))
            .collect();
        for slot in 0..PORT_SLOTS {
            let other = 20000 + slot * 20;
            let shares = other != base && cluster_cidr(other, 0) == cluster_cidr(base, 0);
            assert_eq!(shares, sharers.contains(&other), "slot {slot}");
        }
    }
}
