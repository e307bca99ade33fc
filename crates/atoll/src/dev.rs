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
    /// Member clusters besides the hub (at most 7).
    #[arg(long, default_value_t = 2)]
    clusters: u32,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// `process` runs containers' commands as local processes; `simulated` only pretends.
    #[arg(long, default_value = "process")]
    runtime: String,
    /// The environment's directory (default: ~/.atoll/dev).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Node lease duration in seconds; a node is unreachable once its lease lapses.
    #[arg(long, default_value_t = 40)]
    node_lease_seconds: i32,
    /// Seconds pods stay on an unreachable node unless they tolerate it for longer or shorter.
    #[arg(long, default_value_t = 300)]
    default_toleration_seconds: i64,
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

/// Ports and pod ranges for an environment, fixed the first time it comes up.
fn layout_for(dir: &Path) -> (u16, u8) {
    // FNV-1a of the path: stable across runs and machines.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let base_port = 20000 + (h % 400) as u16 * 20;
    let octet = 16 + ((h / 400) % 28) as u8 * 8;
    (base_port, octet)
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
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("atoll") && c.contains(&*dir.to_string_lossy())
        })
        .unwrap_or(false)
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
            .unwrap_or(false)
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

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    anyhow::ensure!(
        (1..=7).contains(&args.clusters),
        "--clusters must be between 1 and 7"
    );
    anyhow::ensure!(
        (1..=50).contains(&args.nodes),
        "--nodes must be between 1 and 50"
    );
    anyhow::ensure!(
        args.runtime == "process" || args.runtime == "simulated",
        "--runtime {}: must be process or simulated",
        args.runtime
    );
    let dir = data_dir(args.data_dir.clone())?;
    let previous = read_state(&dir);
    if let Some(state) = &previous
        && !running_pids(state, &dir).is_empty()
    {
        bail!(
            "an environment is already running in {} (see `atoll dev status --data-dir {0}`; stop it with `atoll dev down --data-dir {0}`)",
            dir.display()
        );
    }
    let (mut base_port, mut octet) = layout_for(&dir);
    if let Some(state) = &previous {
        base_port = state["basePort"].as_u64().map_or(base_port, |p| p as u16);
        octet = state["cidrOctet"].as_u64().map_or(octet, |o| o as u8);
    }
    let clusters = cluster_names(args.clusters);
    // Every port first, so a collision is reported before anything starts.
    for (i, c) in clusters.iter().enumerate() {
        let port = base_port + i as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!(
                "port {port} (the {c} API server of the environment in {}) is already in use; stop what holds it, or use another --data-dir",
                dir.display()
            );
        }
    }
    let exe = std::env::current_exe().context("cannot find the atoll executable")?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut processes = Vec::new();
    let mut urls = Vec::new();
    eprintln!(
        "atoll dev: starting {} clusters in {}",
        clusters.len(),
        dir.display()
    );
    // API servers (with their controllers), all at once.
    let mut servers = Vec::new();
    for (i, c) in clusters.iter().enumerate() {
        let port = base_port + i as u16;
        let cdir = dir.join(c);
        std::fs::create_dir_all(&cdir)?;
        let log_path = logs.join(format!("{c}.log"));
        let cidr = format!("127.{}.0.0/16", octet + i as u8);
        let child = spawn(
            &exe,
            &[
                "server".into(),
                "--data-dir".into(),
                cdir.display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--name".into(),
                c.clone(),
                "--controllers".into(),
                "--cluster-cidr".into(),
                cidr,
                "--default-toleration-seconds".into(),
                args.default_toleration_seconds.to_string(),
            ],
            &log_path,
        )?;
        processes.push(json!({"name": c, "role": "server", "cluster": c, "pid": child.0}));
        servers.push((c.clone(), child, log_path));
        urls.push(format!("https://127.0.0.1:{port}"));
    }
    write_state(&dir, &args, base_port, octet, &clusters, &processes)?;
    for (c, (pid, offset), log) in &servers {
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
    // Node agents, each with its own identity from its cluster's CA.
    for (i, c) in clusters.iter().enumerate() {
        let cdir = dir.join(c);
        let pki = load_pki(&cdir)?;
        for j in 1..=args.nodes {
            let name = format!("{c}-node{j}");
            let ndir = cdir.join("nodes").join(&name);
            std::fs::create_dir_all(&ndir)?;
            let kubeconfig = ndir.join("kubeconfig");
            if !kubeconfig.exists() {
                let text = pki.kubeconfig(
                    &urls[i],
                    c,
                    &format!("system:node:{name}"),
                    &["system:nodes".to_string()],
                )?;
                atoll_apiserver::tls::write_private(&kubeconfig, &text)?;
            }
            let log_path = logs.join(format!("{name}.log"));
            let (pid, _) = spawn(
                &exe,
                &[
                    "node".into(),
                    "--kubeconfig".into(),
                    kubeconfig.display().to_string(),
                    "--name".into(),
                    name.clone(),
                    "--runtime".into(),
                    args.runtime.clone(),
                    "--data-dir".into(),
                    ndir.display().to_string(),
                    "--lease-seconds".into(),
                    args.node_lease_seconds.to_string(),
                ],
                &log_path,
            )?;
            processes
                .push(json!({"name": name, "role": "node", "cluster": c, "pid": pid, "dir": ndir}));
        }
    }
    write_state(&dir, &args, base_port, octet, &clusters, &processes)?;
    let kubeconfig = write_kubeconfig(&dir, &clusters)?;
    // Ready: every node Ready with a pod range, in every cluster.
    for c in &clusters {
        let (client, _) = crate::clients::from_path(&dir.join(c).join("admin.kubeconfig")).await?;
        let nodes: Api<Node> = Api::all(client);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = nodes
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|n| {
                            let ready = n
                                .status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                });
                            let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some();
                            ready
                                && cidr
                                && n.metadata
                                    .name
                                    .as_deref()
                                    .is_some_and(|x| x.starts_with(&format!("{c}-node")))
                        })
                        .count()
                })
                .unwrap_or(0);
            if ready >= args.nodes as usize {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{c}: only {ready} of {} nodes became Ready within 60 s; see {}",
                    args.nodes,
                    logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "atoll dev: hub and {} member cluster(s) ready in {took:.1} s ({} node(s) each, {} runtime)",
        args.clusters, args.nodes, args.runtime
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
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(f) = std::fs::File::open(log) {
            let mut r = std::io::BufReader::new(f);
            r.seek(std::io::SeekFrom::Start(offset))?;
            let lines: Vec<String> = r.lines().map_while(Result::ok).collect();
            if lines.iter().any(|l| l.contains(needle)) {
                return Ok(());
            }
            if !alive(pid, dir) {
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

fn load_pki(cdir: &Path) -> anyhow::Result<atoll_apiserver::Pki> {
    let pki_dir = cdir.join("pki");
    let hosts = std::fs::read_to_string(pki_dir.join("server.hosts")).unwrap_or_default();
    let hosts: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    Ok(atoll_apiserver::Pki::load_or_create(&pki_dir, &hosts)?)
}

fn write_state(
    dir: &Path,
    args: &UpArgs,
    base_port: u16,
    octet: u8,
    clusters: &[String],
    processes: &[Value],
) -> anyhow::Result<()> {
    let state = json!({
        "clusters": clusters,
        "nodes": args.nodes,
        "runtime": args.runtime,
        "basePort": base_port,
        "cidrOctet": octet,
        "processes": processes,
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
    println!("{:<10} {:<26} {:<9} NODES", "CLUSTER", "API", "SERVER");
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
            "{:<10} {:<26} {:<9} {nodes}",
            c,
            format!("https://127.0.0.1:{}", base + i as u64),
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
    for role in ["node", "server"] {
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
