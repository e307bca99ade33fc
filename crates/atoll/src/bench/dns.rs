//! `atoll bench dns`: `dnsperf` against `atoll dns` and, in the same run, against NSD (the
//! reference authoritative server) serving the same names as a static zone. Each server is
//! one process on core 0 (`taskset`), dnsperf on core 1. The names: 10,000 Services (a tenth
//! of them headless, with three ready endpoints each; another tenth also imported, as
//! ServiceImports with a ClusterSetIP); the queries a mix of A, SRV, NXDOMAIN and
//! `clusterset.local` A. Then how soon an endpoint change is answered: a headless Service's EndpointSlice
//! rewritten through the API, and the DNS asked every millisecond until it answers with the
//! new address.

use std::fmt::Write as _;
use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::registration::{Child, start_server};
use super::{BenchArgs, Phase};

const NAMESPACE: &str = "bench";
/// Every tenth Service is headless.
const HEADLESS_EVERY: usize = 10;

fn endpoint_ip(service: usize, e: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 80, 0, 0)) + (service as u32) * 4 + e as u32)
}

fn cluster_ip(service: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1000 + service as u32)
}

/// Every tenth Service (those ending in 9) is also a multi-cluster service, with this
/// ClusterSetIP.
fn imported(service: usize) -> bool {
    service % 10 == 9
}

fn clusterset_ip(service: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 64, 0, 0)) + service as u32)
}

/// The `clusterset.local` names as a zone file for NSD.
fn clusterset_zone_file(services: usize) -> String {
    let mut z = String::from(
        "$ORIGIN clusterset.local.\n$TTL 5\n@ IN SOA ns.dns.clusterset.local. hostmaster.clusterset.local. 1 7200 1800 86400 5\n@ IN NS ns.dns\nns.dns IN A 127.0.0.1\ndns-version IN TXT \"1.0.0\"\n",
    );
    for i in (0..services).filter(|i| imported(*i)) {
        let _ = writeln!(z, "svc-{i}.{NAMESPACE}.svc IN A {}", clusterset_ip(i));
    }
    z
}

pub(super) fn tool(name: &str) -> anyhow::Result<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()?
        .success();
    if !found {
        bail!(
            "`{name}` is not installed: `apt-get install dnsperf nsd util-linux` (Debian) brings what this benchmark runs"
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    // A port free for both UDP and TCP.
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port")
}

/// The same names as a zone file for NSD.
fn zone_file(services: usize) -> String {
    let mut z = String::from(
        "$ORIGIN cluster.local.\n$TTL 5\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n@ IN NS ns.dns\nns.dns IN A 127.0.0.1\ndns-version IN TXT \"1.0.1\"\n",
    );
    for i in 0..services {
        let name = format!("svc-{i}.{NAMESPACE}.svc");
        if i % HEADLESS_EVERY == 0 {
            for e in 0..3 {
                let ip = endpoint_ip(i, e);
                let host = ip.to_string().replace('.', "-");
                let _ = writeln!(z, "{name} IN A {ip}\n{host}.{name} IN A {ip}");
                let _ = writeln!(
                    z,
                    "_http._tcp.{name} IN SRV 0 33 8080 {host}.{name}.cluster.local."
                );
            }
        } else {
            let _ = writeln!(z, "{name} IN A {}", cluster_ip(i));
            let _ = writeln!(z, "_http._tcp.{name} IN SRV 0 100 80 {name}.cluster.local.");
        }
    }
    z
}

/// dnsperf's input: A for Services (ClusterIP and headless), SRV, NXDOMAIN names, and A for
/// multi-cluster services' `clusterset.local` names.
fn queries(services: usize) -> String {
    let mut q = String::new();
    for i in 0..services {
        let name = format!("svc-{i}.{NAMESPACE}.svc.cluster.local");
        match i % 10 {
            0..=5 => {
                let _ = writeln!(q, "{name} A");
            }
            6 | 7 => {
                let _ = writeln!(q, "_http._tcp.{name} SRV");
            }
            8 => {
                let _ = writeln!(q, "missing-{i}.{NAMESPACE}.svc.cluster.local A");
            }
            _ => {
                let _ = writeln!(q, "svc-{i}.{NAMESPACE}.svc.clusterset.local A");
            }
        }
    }
    q
}

struct Perf {
    qps: f64,
    lost: u64,
    p50_ms: f64,
    p99_ms: f64,
}

/// dnsperf for `secs` at full speed (queries/s), then `secs` paced at `rate` with every
/// query's latency (`-v`), on core 1.
fn dnsperf(port: u16, data: &Path, secs: u64, rate: u64) -> anyhow::Result<Perf> {
    let out = Command::new("taskset")
        .args(["-c", "1", "dnsperf", "-s", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-d")
        .arg(data)
        .args(["-l", &secs.to_string(), "-c", "4", "-q", "200"])
        .output()
        .context("dnsperf runs")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |label: &str| -> Option<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
    };
    let qps: f64 = field("Queries per second")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no queries/s in dnsperf's output: {text}"))?;
    let lost: u64 = field("Queries lost")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let out = Command::new("taskset")
        .args(["-c", "1", "dnsperf", "-v", "-s", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-d")
        .arg(data)
        .args(["-l", &secs.to_string(), "-Q", &rate.to_string()])
        .output()
        .context("dnsperf runs")?;
    // Lines of `-v`: `> NOERROR name type latency`.
    let mut lat: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('>'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
            * 1000.0
    };
    Ok(Perf {
        qps,
        lost,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// One A question over UDP; the addresses answered.
pub(super) fn ask(sock: &UdpSocket, to: SocketAddr, name: &str, id: u16) -> Vec<Ipv4Addr> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if sock.send_to(&q, to).is_err() {
        return vec![];
    }
    let mut buf = [0u8; 1500];
    let Ok((n, _)) = sock.recv_from(&mut buf) else {
        return vec![];
    };
    let Ok(msg) = hickory_proto::op::Message::from_vec(&buf[..n]) else {
        return vec![];
    };
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    for t in ["dnsperf", "nsd", "taskset"] {
        tool(t)?;
    }
    let services = args.objects;
    let say = |s: &str| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let server = start_server(&dir.join("api"), "dns-bench")?;
    let (client, _) = crate::clients::from_path(&dir.join("api").join("admin.kubeconfig")).await?;
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    Api::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    say(&format!("creating {services} Services..."));
    let svc_api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    futures::stream::iter(0..services)
        .map(|i| {
            let (svc_api, slice_api) = (svc_api.clone(), slice_api.clone());
            async move {
                let headless = i % HEADLESS_EVERY == 0;
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": if headless {
                        json!({"clusterIP": "None", "ports": [{"name": "http", "port": 8080}]})
                    } else {
                        json!({"clusterIP": cluster_ip(i).to_string(), "ports": [{"name": "http", "port": 80}]})
                    },
                }))?;
                svc_api.create(&PostParams::default(), &svc).await?;
                if headless {
                    let endpoints: Vec<_> = (0..3)
                        .map(|e| json!({"addresses": [endpoint_ip(i, e).to_string()], "conditions": {"ready": true}}))
                        .collect();
                    let slice: EndpointSlice = serde_json::from_value(json!({
                        "metadata": {"name": format!("svc-{i}-1"), "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
                        "addressType": "IPv4", "endpoints": endpoints,
                        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    }))?;
                    slice_api.create(&PostParams::default(), &slice).await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.clients)
        .try_collect_all()
        .await?;

    say(&format!(
        "creating {} ServiceImports...",
        (0..services).filter(|i| imported(*i)).count()
    ));
    atoll_work::services::install(&client).await?;
    let imports: Api<atoll_api::mcs::v1beta1::ServiceImport> =
        Api::namespaced(client.clone(), NAMESPACE);
    futures::stream::iter((0..services).filter(|i| imported(*i)))
        .map(|i| {
            let imports = imports.clone();
            async move {
                let import = serde_json::from_value(json!({
                    "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": {"type": "ClusterSetIP", "ips": [clusterset_ip(i).to_string()],
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
                }))?;
                imports.create(&PostParams::default(), &import).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.clients)
        .try_collect_all()
        .await?;

    let data = dir.join("queries.txt");
    std::fs::write(&data, queries(services))?;

    // atoll dns, one thread answering, on core 0.
    let atoll_port = free_port()?;
    let mut dns = Command::new("taskset")
        .args(["-c", "0"])
        .arg(std::env::current_exe()?)
        .args(["dns", "--kubeconfig"])
        .arg(dir.join("api").join("admin.kubeconfig"))
        .args([
            "--listen",
            &format!("127.0.0.1:{atoll_port}"),
            "--threads",
            "1",
        ])
        // Nothing is forwarded in this benchmark; an upstream that is ours alone.
        .args(["--upstream", "127.0.0.1:9"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(dns.stdout.take().context("dns stdout")?).read_line(&mut line)?;
    let dns = Child(dns);
    anyhow::ensure!(line.contains("ready"), "atoll dns did not start: {line}");

    // NSD with the same names, one server process, on core 0.
    let nsd_port = free_port()?;
    let nsd_dir = dir.join("nsd");
    std::fs::create_dir_all(&nsd_dir)?;
    std::fs::write(nsd_dir.join("cluster.local.zone"), zone_file(services))?;
    std::fs::write(
        nsd_dir.join("clusterset.local.zone"),
        clusterset_zone_file(services),
    )?;
    let d = nsd_dir.display();
    std::fs::write(
        nsd_dir.join("nsd.conf"),
        format!(
            "server:\n  ip-address: 127.0.0.1@{nsd_port}\n  server-count: 1\n  username: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  hide-version: yes\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\nremote-control:\n  control-enable: no\nzone:\n  name: cluster.local\n  zonefile: cluster.local.zone\nzone:\n  name: clusterset.local\n  zonefile: clusterset.local.zone\n"
        ),
    )?;
    let nsd = Child(
        Command::new("taskset")
            .args(["-c", "0", "nsd", "-d", "-c"])
            .arg(nsd_dir.join("nsd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("nsd starts")?,
    );
    // Both answer before the clock starts.
    let probe = UdpSocket::bind("127.0.0.1:0")?;
    probe.set_read_timeout(Some(Duration::from_millis(200)))?;
    let first = format!("svc-1.{NAMESPACE}.svc.cluster.local");
    let last = (0..services).rfind(|i| imported(*i));
    for (what, port) in [("atoll dns", atoll_port), ("nsd", nsd_port)] {
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while ask(&probe, to, &first, 1) != vec![cluster_ip(1)] {
            anyhow::ensure!(Instant::now() < deadline, "{what} does not answer {first}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // And the last multi-cluster service made, so every import is in the index.
        if let Some(i) = last {
            let name = format!("svc-{i}.{NAMESPACE}.svc.clusterset.local");
            while ask(&probe, to, &name, 2) != vec![clusterset_ip(i)] {
                anyhow::ensure!(Instant::now() < deadline, "{what} does not answer {name}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let secs = 10;
    let rate = 20_000;
    say("dnsperf against NSD...");
    let nsd_perf = dnsperf(nsd_port, &data, secs, rate)?;
    say("dnsperf against atoll dns...");
    let atoll_perf = dnsperf(atoll_port, &data, secs, rate)?;
    drop(nsd);

    // Endpoint changes: each rewrites svc-0's slice to one new address.
    say("endpoint changes...");
    let changes = 200;
    let to = SocketAddr::from(([127, 0, 0, 1], atoll_port));
    probe.set_read_timeout(Some(Duration::from_millis(50)))?;
    let name = format!("svc-0.{NAMESPACE}.svc.cluster.local");
    let mut latencies = Vec::with_capacity(changes);
    let started = Instant::now();
    for c in 0..changes {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 90, 0, 1)) + c as u32);
        let patch = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "svc-0-1", "labels": {"kubernetes.io/service-name": "svc-0"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}]});
        let t0 = Instant::now();
        slice_api
            .patch(
                "svc-0-1",
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&patch),
            )
            .await?;
        let deadline = t0 + Duration::from_secs(10);
        let mut id = 0u16;
        loop {
            id = id.wrapping_add(1);
            if ask(&probe, to, &name, id) == vec![ip] {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "change {c} not answered in 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(t0.elapsed());
    }
    let change = Phase {
        name: "endpoint change answered",
        ops: changes,
        elapsed: started.elapsed(),
        latencies,
    };
    let (_, dns_rss) = super::registration::usage(dns.0.id());
    drop(dns);
    drop(server);

    let ratio = atoll_perf.qps / nsd_perf.qps;
    let p99_change = change.pct(0.99);
    if args.json {
        println!(
            "{}",
            json!({
                "services": services,
                "atoll": {"qps": atoll_perf.qps, "lost": atoll_perf.lost, "p50_ms": atoll_perf.p50_ms, "p99_ms": atoll_perf.p99_ms},
                "nsd": {"qps": nsd_perf.qps, "lost": nsd_perf.lost, "p50_ms": nsd_perf.p50_ms, "p99_ms": nsd_perf.p99_ms},
                "ratio": ratio,
                "change_p50_ms": change.pct(0.5),
                "change_p99_ms": p99_change,
                "dns_rss_bytes": dns_rss,
            })
        );
        return Ok(());
    }
    println!(
        "{services} Services (a tenth headless with 3 endpoints, a tenth imported with a ClusterSetIP); queries 60% A, 20% SRV, 10% NXDOMAIN, 10% clusterset.local A; each server one process on core 0, dnsperf on core 1"
    );
    println!(
        "{:<12} {:>12} {:>8} {:>22}",
        "server", "queries/s", "lost", "latency p50 / p99"
    );
    for (n, p) in [("atoll dns", &atoll_perf), ("NSD", &nsd_perf)] {
        println!(
            "{n:<12} {:>12.0} {:>8} {:>13.3} / {:.3} ms",
            p.qps, p.lost, p.p50_ms, p.p99_ms
        );
    }
    println!(
        "atoll dns / NSD: {ratio:.2}x (goal: at least 0.8x; CoreDNS published 33.7k q/s on 2 vCPUs); latency at {rate} q/s paced"
    );
    println!(
        "endpoint change -> answered: p50 {:.1} ms, p99 {:.1} ms over {changes} changes (goal: p99 under 100 ms); atoll dns RSS {:.1} MiB",
        change.pct(0.5),
        p99_change,
        dns_rss as f64 / 1048576.0
    );
    Ok(())
}

trait TryCollectAll {
    async fn try_collect_all(self) -> anyhow::Result<()>;
}

impl<S> TryCollectAll for S
where
    S: futures::Stream<Item = anyhow::Result<()>>,
{
    async fn try_collect_all(self) -> anyhow::Result<()> {
        let mut s = std::pin::pin!(self);
        while let Some(r) = s.next().await {
            r?;
        }
        Ok(())
    }
}
