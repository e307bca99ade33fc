//! `atoll bench gateway`: `wrk` through `atoll gateway` and, in the same run, through nginx
//! (Debian's) proxying to the same upstream, both with one worker, keep-alive on both sides,
//! small answers; then the same over TLS. The upstream is one nginx worker answering `ok`.
//!
//! The gateway is configured as in use: a MultiClusterIngress on a hub (an `atoll server` with
//! the hub's CRDs) routes the host to a Service one cluster exports, its endpoint the upstream.

use std::time::Duration;

use anyhow::Context;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::BenchArgs;
use super::http::{Wrk, nginx, wrk};
use super::registration::start_server;

const HOST: &str = "bench.example";
/// The upstream, the nginx proxy's plain and TLS listeners.
const UPSTREAM: &str = "127.24.0.1:8080";
const NGINX_PLAIN: &str = "127.24.0.2:8080";
const NGINX_TLS: &str = "127.24.0.2:8443";

async fn apply(client: &kube::Client, obj: Value) -> anyhow::Result<()> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().unwrap_or_default();
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let plural = match kind {
        "MultiClusterIngress" => "multiclusteringresses".to_string(),
        "ManagedClusterSetBinding" => "managedclustersetbindings".to_string(),
        "ExportedService" => "exportedservices".to_string(),
        other => format!("{}s", other.to_ascii_lowercase()),
    };
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply("atoll-bench").force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("cannot apply {kind} {name}"))?;
    Ok(())
}

fn row(what: &str, w: &Wrk) -> String {
    format!(
        "{what:<26} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   errors {}",
        w.rps, w.p50_ms, w.p99_ms, w.errors
    )
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    for t in ["wrk", "nginx"] {
        super::dns::tool(t)?;
    }
    let say = |s: &str| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    say(
        "atoll bench gateway: wrk -t1 -c32 -d10s through atoll gateway and through nginx, one worker each, to one upstream nginx worker",
    );
    let tmp = tempfile::tempdir()?;
    let hub_dir = tmp.path().join("hub");
    let _server = start_server(&hub_dir, "hub")?;
    let (client, _) = crate::clients::from_path(&hub_dir.join("admin.kubeconfig")).await?;
    atoll_hub::install(&client).await?;

    // A cluster `c1` in the set `default`, live (its lease renewed, an hour long), exporting
    // bench/web with the upstream as its one endpoint; the set bound to `bench`.
    let cert = rcgen::generate_simple_self_signed(vec![HOST.to_string()])?;
    let (crt, key) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
    std::fs::write(&crt, cert.cert.pem())?;
    std::fs::write(&key, cert.signing_key.serialize_pem())?;
    let b64 = |s: String| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let (ip, port) = UPSTREAM.split_once(':').context("an address")?;
    for obj in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "atoll-cluster-c1"}}),
        json!({"apiVersion": "cluster.atoll.io/v1alpha1", "kind": "ManagedCluster",
               "metadata": {"name": "c1", "labels": {"cluster.atoll.io/clusterset": "default"}},
               "spec": {"hubAcceptsClient": true, "leaseDurationSeconds": 3600}}),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "cluster-lease", "namespace": "atoll-cluster-c1"},
               "spec": {"renewTime": now}}),
        json!({"apiVersion": "cluster.atoll.io/v1alpha1", "kind": "ManagedClusterSetBinding",
               "metadata": {"name": "default", "namespace": "bench"}, "spec": {"clusterSet": "default"}}),
        json!({"apiVersion": "networking.atoll.io/v1alpha1", "kind": "ExportedService",
               "metadata": {"name": "bench.web", "namespace": "atoll-cluster-c1"},
               "spec": {"cluster": "c1", "namespace": "bench", "name": "web",
                        "service": {"type": "ClusterSetIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
                        "slices": [{"addressType": "IPv4",
                                    "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
                                    "ports": [{"name": "http", "port": port.parse::<i32>()?, "protocol": "TCP"}]}]}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": "bench-tls", "namespace": "bench"},
               "data": {"tls.crt": b64(cert.cert.pem()), "tls.key": b64(cert.signing_key.serialize_pem())}}),
        // A tls entry without hosts: the default certificate (wrk sends the address as SNI).
        json!({"apiVersion": "networking.atoll.io/v1alpha1", "kind": "MultiClusterIngress",
               "metadata": {"name": "web", "namespace": "bench"},
               "spec": {"tls": [{"secretName": "bench-tls"}],
                        "rules": [{"host": HOST, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
    ] {
        apply(&client, obj).await?;
    }

    let _upstream = nginx(
        tmp.path(),
        "upstream",
        &format!(
            "server {{ listen {UPSTREAM}; access_log off; keepalive_requests 1000000; location / {{ return 200 \"ok\\n\"; }} }}\n"
        ),
    )?;
    let _proxy = nginx(
        tmp.path(),
        "proxy",
        &format!(
            "upstream web {{ server {UPSTREAM}; keepalive 64; keepalive_requests 1000000; }}\n\
             server {{ listen {NGINX_PLAIN}; listen {NGINX_TLS} ssl; server_name {HOST}; access_log off;\n\
               keepalive_requests 1000000;\n\
               ssl_certificate {crt}; ssl_certificate_key {key};\n\
               location / {{ proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $host; }} }}\n",
            crt = crt.display(),
            key = key.display(),
        ),
    )?;
    let running = atoll_gateway::start(
        client,
        atoll_gateway::Options {
            listen: Some("127.24.0.3:8080".parse()?),
            tls_listen: Some("127.24.0.3:8443".parse()?),
            threads: 1,
            access_log: atoll_gateway::AccessLog::Off,
            write_status: false,
            ..Default::default()
        },
    )
    .await?;
    let gw = running.addr.context("the gateway's address")?;
    let gw_tls = running.tls_addr.context("the gateway's TLS address")?;

    // Both answer before anything is timed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for url in [format!("http://{gw}/"), format!("http://{NGINX_PLAIN}/")] {
        loop {
            let out = std::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    &format!("Host: {HOST}"),
                    &url,
                ])
                .output()?;
            if out.stdout == b"200" {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{url} does not answer 200"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    say("plain HTTP...");
    let nginx_plain = wrk(&format!("http://{NGINX_PLAIN}/"), Some(HOST))?;
    let gw_plain = wrk(&format!("http://{gw}/"), Some(HOST))?;
    say("TLS...");
    let nginx_tls = wrk(&format!("https://{NGINX_TLS}/"), Some(HOST))?;
    let gw_tls_run = wrk(&format!("https://{gw_tls}/"), Some(HOST))?;
    say("east-west...");
    let (ew_direct, ew_tunnel) = east_west().await?;
    let ratio = gw_plain.rps / nginx_plain.rps.max(1.0);
    let ratio_tls = gw_tls_run.rps / nginx_tls.rps.max(1.0);
    let overhead = 1.0 - ew_tunnel.rps / ew_direct.rps.max(1.0);

    if args.json {
        let fig = |w: &Wrk| json!({"rps": w.rps, "p50_ms": w.p50_ms, "p99_ms": w.p99_ms, "errors": w.errors});
        println!(
            "{}",
            json!({
                "gateway": fig(&gw_plain), "nginx": fig(&nginx_plain), "ratio": ratio,
                "gateway_tls": fig(&gw_tls_run), "nginx_tls": fig(&nginx_tls), "ratio_tls": ratio_tls,
                "east_west": fig(&ew_tunnel), "direct": fig(&ew_direct), "east_west_overhead": overhead,
            })
        );
    } else {
        println!(
            "atoll bench gateway (wrk -t1 -c32 -d10s, keep-alive, one worker each, answers of 3 bytes)"
        );
        println!("  {}", row("atoll gateway", &gw_plain));
        println!("  {}", row("nginx (reference)", &nginx_plain));
        println!(
            "  ratio {ratio:.2} (goal >= 1.0), p99 {:+.2} ms against nginx (goal <= 0)",
            gw_plain.p99_ms - nginx_plain.p99_ms
        );
        println!("  {}", row("atoll gateway, TLS", &gw_tls_run));
        println!("  {}", row("nginx, TLS (reference)", &nginx_tls));
        println!(
            "  ratio {ratio_tls:.2} (goal >= 1.0), p99 {:+.2} ms against nginx (goal <= 0)",
            gw_tls_run.p99_ms - nginx_tls.p99_ms
        );
        println!("  {}", row("through east-west", &ew_tunnel));
        println!("  {}", row("direct (reference)", &ew_direct));
        println!(
            "  east-west overhead {:.0}% of direct's requests/s (goal < 20%), p99 {:+.2} ms",
            overhead * 100.0,
            ew_tunnel.p99_ms - ew_direct.p99_ms
        );
    }
    Ok(())
}

/// The east-west path against the direct one, as a member's Service proxy takes them: a
/// forwarder that connects each client connection straight to the upstream, and one that
/// tunnels it through an east-west gateway (mutual TLS, `CONNECT`) with a cluster's identity.
/// Both relay with the same code; wrk keeps its connections alive.
async fn east_west() -> anyhow::Result<(Wrk, Wrk)> {
    use atoll_gateway::eastwest::{Policy, serve_fixed};
    use atoll_gateway::tunnel::{Identity, dial, throwaway_fleet};
    use atoll_runtime::relay::relay;
    use std::net::SocketAddr;
    use std::sync::Arc;
    let (ca, ids) = throwaway_fleet(&["member1", "member2"]).map_err(anyhow::Error::msg)?;
    let identity = |i: usize| {
        Identity::from_pem(ids[i].0.as_bytes(), ids[i].1.as_bytes(), ca.as_bytes())
            .context("a throwaway identity")
    };
    let (gateway_id, member2) = (identity(0)?, Arc::new(identity(1)?));
    let upstream: SocketAddr = UPSTREAM.parse()?;
    let export: atoll_api::mcs::ExportedService = serde_json::from_value(json!({
        "apiVersion": "networking.atoll.io/v1alpha1", "kind": "ExportedService",
        "metadata": {"name": "demo.web", "namespace": "atoll-cluster-member1"},
        "spec": {
            "cluster": "member1", "namespace": "demo", "name": "web",
            "service": {"type": "ClusterSetIP", "ports": [{"port": 80, "protocol": "TCP"}]},
            "slices": [{"addressType": "IPv4", "ports": [{"port": upstream.port(), "protocol": "TCP"}],
                        "endpoints": [{"addresses": [upstream.ip().to_string()]}]}],
        },
        "status": {"importers": ["member2"]},
    }))?;
    let gateway = tokio::net::TcpListener::bind("127.24.0.3:0").await?;
    let gateway_addr = gateway.local_addr()?.to_string();
    serve_fixed(gateway, &gateway_id, Policy::from_exports([&export]))?;

    let direct = tokio::net::TcpListener::bind("127.24.0.4:0").await?;
    let tunneled = tokio::net::TcpListener::bind("127.24.0.5:0").await?;
    let (direct_addr, tunneled_addr) = (direct.local_addr()?, tunneled.local_addr()?);
    let direct_task = tokio::spawn(async move {
        while let Ok((c, _)) = direct.accept().await {
            tokio::spawn(async move {
                let _ = c.set_nodelay(true);
                if let Ok(u) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = u.set_nodelay(true);
                    relay(c, u).await;
                }
            });
        }
    });
    let tunneled_task = tokio::spawn(async move {
        while let Ok((c, _)) = tunneled.accept().await {
            let (member2, gateway_addr) = (member2.clone(), gateway_addr.clone());
            tokio::spawn(async move {
                let _ = c.set_nodelay(true);
                if let Ok(t) = dial(&member2, &gateway_addr, "member1", upstream, "demo/web").await
                {
                    relay(c, t).await;
                }
            });
        }
    });
    // wrk waits on a thread of its own: the forwarders and the gateway have the runtime's.
    let run = |url: String| tokio::task::spawn_blocking(move || wrk(&url, Some(HOST)));
    let through = run(format!("http://{tunneled_addr}/")).await??;
    let straight = run(format!("http://{direct_addr}/")).await??;
    direct_task.abort();
    tunneled_task.abort();
    anyhow::ensure!(
        through.errors == 0 && through.rps > 0.0,
        "requests through the east-west gateway failed: {} errors",
        through.errors
    );
    Ok((straight, through))
}
