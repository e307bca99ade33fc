//! `atoll gateway --east-west`: one per member, the way in for other members' Service proxies
//! to this cluster's exported endpoints when the pod networks cannot reach each other.
//!
//! It runs in the member with the member's kubeconfig and takes the cluster's hub identity from
//! the agent's Secret (`atoll-agent/hub-kubeconfig`, reread as the agent rotates it). Over the
//! hub, with that identity, it watches the cluster's own exports (`ExportedService`s in
//! `atoll-cluster-<name>`): their endpoints are the only places a tunnel may go, and the
//! clusters that import them (the hub writes `status.importers`) the only ones let in. A
//! cluster that imports nothing from this one fails the TLS handshake; one that names an
//! endpoint it does not import gets `403` and why.

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use atoll_api::cluster::{AGENT_NAMESPACE, HUB_KUBECONFIG_SECRET, cluster_namespace};
use atoll_api::mcs::ExportedService;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::tunnel::{self, Identity};
use crate::{AccessLog, Error};

/// Time a peer has for its handshake and its `CONNECT` head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the agent's Secret is read for a rotated identity.
const IDENTITY_POLL: Duration = Duration::from_secs(5);

/// Where tunnels may go, and for whom.
#[derive(Debug, Default, PartialEq)]
pub struct Policy {
    /// Each exported endpoint (address and port) and the clusters that import it.
    importers_of: HashMap<SocketAddr, BTreeSet<String>>,
    /// Every cluster that imports anything of this one.
    admitted: BTreeSet<String>,
}

impl Policy {
    /// From this cluster's exports as the hub holds them: their ready endpoints at each of
    /// their ports, open to the clusters the hub says import them.
    pub fn from_exports<'a>(exports: impl IntoIterator<Item = &'a ExportedService>) -> Policy {
        let mut policy = Policy::default();
        for e in exports {
            if e.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let importers: BTreeSet<String> = e
                .status
                .as_ref()
                .map(|s| s.importers.iter().cloned().collect())
                .unwrap_or_default();
            if importers.is_empty() {
                continue;
            }
            policy.admitted.extend(importers.iter().cloned());
            for slice in &e.spec.slices {
                let ports: Vec<u16> = slice
                    .ports
                    .iter()
                    .filter_map(|p| p.port.and_then(|p| u16::try_from(p).ok()))
                    .collect();
                for endpoint in &slice.endpoints {
                    if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    for ip in endpoint
                        .addresses
                        .iter()
                        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
                    {
                        for port in &ports {
                            policy
                                .importers_of
                                .entry(SocketAddr::new(ip, *port))
                                .or_default()
                                .extend(importers.iter().cloned());
                        }
                    }
                }
            }
        }
        policy
    }

    pub fn admits(&self, cluster: &str) -> bool {
        self.admitted.contains(cluster)
    }

    /// May `cluster` open a tunnel to `target`? If not, why not.
    pub fn allows(&self, cluster: &str, target: SocketAddr) -> Result<(), String> {
        match self.importers_of.get(&target) {
            Some(importers) if importers.contains(cluster) => Ok(()),
            Some(_) => Err(format!(
                "{target} is an endpoint of a service cluster {cluster} does not import"
            )),
            None => Err(format!(
                "{target} is not a ready endpoint of a service this cluster exports"
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EastWestOptions {
    pub listen: SocketAddr,
    /// Where the agent keeps the cluster's hub identity.
    pub secret_namespace: String,
    pub secret_name: String,
    pub access_log: AccessLog,
    /// Time to connect to an endpoint.
    pub connect_timeout: Duration,
    /// Time to wait for the agent's identity at the start.
    pub identity_timeout: Duration,
}

impl Default for EastWestOptions {
    fn default() -> Self {
        EastWestOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            secret_namespace: AGENT_NAMESPACE.into(),
            secret_name: HUB_KUBECONFIG_SECRET.into(),
            access_log: AccessLog::Stdout,
            connect_timeout: Duration::from_secs(3),
            identity_timeout: Duration::from_secs(120),
        }
    }
}

pub struct EastWestRunning {
    pub addr: SocketAddr,
    pub cluster: String,
}

/// What the accept loop and the control loops share.
struct State {
    tls: RwLock<Arc<rustls::ServerConfig>>,
    policy: Arc<RwLock<Arc<Policy>>>,
    connect_timeout: Duration,
    access_log: Option<std::sync::Mutex<Box<dyn std::io::Write + Send>>>,
}

impl State {
    fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn admit_fn(policy: &Arc<RwLock<Arc<Policy>>>) -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
    let policy = policy.clone();
    Arc::new(move |cluster: &str| {
        policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .admits(cluster)
    })
}

/// Start the east-west gateway: wait for the cluster's identity, list its exports, serve.
pub async fn start(member: kube::Client, opts: EastWestOptions) -> Result<EastWestRunning, Error> {
    let secrets: Api<Secret> = Api::namespaced(member, &opts.secret_namespace);
    let deadline = Instant::now() + opts.identity_timeout;
    let (kubeconfig, identity) = loop {
        let why = match tunnel::agent_kubeconfig(&secrets, &opts.secret_name).await {
            Ok(kc) => match Identity::from_kubeconfig(&kc) {
                Ok(id) => break (kc, id),
                Err(e) => e.to_string(),
            },
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(Error::Tls(format!(
                "no hub identity in Secret {}/{} after {:?}: {why}",
                opts.secret_namespace, opts.secret_name, opts.identity_timeout
            )));
        }
        tracing::info!(reason = %why, "east-west: waiting for the cluster's hub identity");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let cluster = identity.cluster.clone();
    let policy = Arc::new(RwLock::new(Arc::new(Policy::default())));
    let tls = identity
        .server_config(admit_fn(&policy))
        .map_err(|e| Error::Tls(e.to_string()))?;
    let access_log = crate::open_access_log(&opts.access_log)?;
    let state = Arc::new(State {
        tls: RwLock::new(Arc::new(tls)),
        policy,
        connect_timeout: opts.connect_timeout,
        access_log: access_log.map(std::sync::Mutex::new),
    });
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::Listen(opts.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Listen(opts.listen, e))?;

    // The exports, watched with the cluster's identity; watched anew when it rotates.
    let mut exports = watch_exports(&kubeconfig, &cluster, &state).await?;
    {
        let state = state.clone();
        let cluster = cluster.clone();
        let secret_name = opts.secret_name.clone();
        tokio::spawn(async move {
            let mut current = kubeconfig;
            loop {
                tokio::time::sleep(IDENTITY_POLL).await;
                let Ok(kc) = tunnel::agent_kubeconfig(&secrets, &secret_name).await else {
                    continue;
                };
                if kc == current {
                    continue;
                }
                let identity = match Identity::from_kubeconfig(&kc) {
                    Ok(id) if id.cluster == cluster => id,
                    Ok(id) => {
                        tracing::warn!(was = %cluster, now = %id.cluster, "east-west: the agent's Secret names another cluster now; restart the gateway");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "east-west: the rotated identity is unusable; keeping the old one");
                        continue;
                    }
                };
                match identity.server_config(admit_fn(&state.policy)) {
                    Ok(tls) => {
                        *state.tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tls)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "east-west: cannot use the rotated identity");
                        continue;
                    }
                }
                match watch_exports(&kc, &cluster, &state).await {
                    // The old watch stops as its guards go.
                    Ok(w) => drop(std::mem::replace(&mut exports, w)),
                    Err(e) => {
                        tracing::warn!(error = %e, "east-west: cannot watch the exports with the rotated identity")
                    }
                }
                tracing::info!(%cluster, "east-west: the rotated hub identity is in use");
                current = kc;
            }
        });
    }
    tokio::spawn(accept_loop(listener, state));
    Ok(EastWestRunning { addr, cluster })
}

/// Serve tunnels on `listener` with a fixed identity and policy, no hub involved (the
/// benchmark's gateway, and the tests').
pub fn serve_fixed(
    listener: TcpListener,
    identity: &Identity,
    policy: Policy,
) -> Result<(), Error> {
    let policy = Arc::new(RwLock::new(Arc::new(policy)));
    let tls = identity
        .server_config(admit_fn(&policy))
        .map_err(|e| Error::Tls(e.to_string()))?;
    let state = Arc::new(State {
        tls: RwLock::new(Arc::new(tls)),
        policy,
        connect_timeout: Duration::from_secs(3),
        access_log: None,
    });
    tokio::spawn(accept_loop(listener, state));
    Ok(())
}

/// Watch the cluster's exports on the hub into the policy; the watch stops when the returned
/// guard is dropped.
async fn watch_exports(
    kubeconfig: &str,
    cluster: &str,
    state: &Arc<State>,
) -> Result<(atoll_runtime::AbortOnDrop, atoll_runtime::AbortOnDrop), Error> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig)
        .map_err(|e| Error::Tls(format!("the hub kubeconfig: {e}")))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Tls(format!("the hub kubeconfig: {e}")))?;
    let hub = kube::Client::try_from(config)
        .map_err(|e| Error::Tls(format!("the hub kubeconfig: {e}")))?;
    let api: Api<ExportedService> = Api::namespaced(hub, &cluster_namespace(cluster));
    let changed = Arc::new(Notify::new());
    let (store, writer): (Store<ExportedService>, _) = kube::runtime::reflector::store();
    let watch = {
        let changed = changed.clone();
        atoll_runtime::reflect::reflect_while_held(
            api,
            watcher::Config::default(),
            writer,
            move |_| changed.notify_one(),
        )
    };
    let rebuild = {
        let state = state.clone();
        tokio::spawn(async move {
            let _ = store.wait_until_ready().await;
            loop {
                let policy = Policy::from_exports(store.state().iter().map(|e| e.as_ref()));
                *state.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
                // A change wakes this at once; the second's sleep catches what a relist
                // dropped (the store loses it without a Delete event to notify on).
                let _ = tokio::time::timeout(Duration::from_secs(1), changed.notified()).await;
            }
        })
    };
    Ok((watch, atoll_runtime::AbortOnDrop(rebuild)))
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "east-west: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            serve(tcp, peer, state).await;
        });
    }
}

/// One tunnel: handshake, `CONNECT`, the endpoint, the bytes both ways.
async fn serve(tcp: TcpStream, peer: SocketAddr, state: Arc<State>) {
    let started = Instant::now();
    let config = state.tls.read().unwrap_or_else(|p| p.into_inner()).clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut tls = match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "east-west: handshake failed");
            return;
        }
        Err(_) => return,
    };
    let Some(cluster) = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(tunnel::cluster_of)
    else {
        return;
    };
    let head = match tokio::time::timeout(HEAD_TIMEOUT, tunnel::read_head(&mut tls)).await {
        Ok(Ok(head)) => head,
        Ok(Err(why)) => {
            refuse(&mut tls, 400, &why).await;
            return;
        }
        Err(_) => {
            refuse(&mut tls, 408, "the CONNECT head did not arrive in time").await;
            return;
        }
    };
    let (target, service) = match tunnel::parse_connect(&head) {
        Ok(x) => x,
        Err((code, why)) => {
            refuse(&mut tls, code, &why).await;
            return;
        }
    };
    let log = |code: u16, up: u64, down: u64| {
        state.log(&format!(
            "{} east-west {cluster} {peer} CONNECT {target} {service:?} {code} {up} {down} {}ms",
            k8s_openapi::jiff::Timestamp::now(),
            started.elapsed().as_millis()
        ));
    };
    if let Err(why) = state.policy().allows(&cluster, target) {
        refuse(&mut tls, 403, &why).await;
        log(403, 0, 0);
        return;
    }
    let upstream =
        match tokio::time::timeout(state.connect_timeout, TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                refuse(&mut tls, 502, &format!("cannot connect to {target}: {e}")).await;
                log(502, 0, 0);
                return;
            }
            Err(_) => {
                refuse(&mut tls, 504, &format!("connecting to {target} timed out")).await;
                log(504, 0, 0);
                return;
            }
        };
    let _ = upstream.set_nodelay(true);
    if tls
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let (up, down) = atoll_runtime::relay::relay(tls, upstream).await;
    log(200, up, down);
}

impl State {
    fn log(&self, line: &str) {
        if let Some(out) = &self.access_log {
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(out, "{line}");
        }
    }
}

async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, code: u16, why: &str) {
    let reason = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("{why}\n");
    let answer = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(
        importers: &[&str],
        endpoints: &[(&str, Option<bool>)],
        port: i32,
    ) -> ExportedService {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.atoll.io/v1alpha1",
            "kind": "ExportedService",
            "metadata": {"name": "demo.web", "namespace": "atoll-cluster-member1"},
            "spec": {
                "cluster": "member1", "namespace": "demo", "name": "web",
                "service": {"type": "ClusterSetIP", "ports": [{"port": 80, "protocol": "TCP"}]},
                "slices": [{
                    "addressType": "IPv4",
                    "ports": [{"port": port, "protocol": "TCP"}],
                    "endpoints": endpoints.iter().map(|(a, ready)| match ready {
                        Some(r) => serde_json::json!({"addresses": [a], "conditions": {"ready": r}}),
                        None => serde_json::json!({"addresses": [a]}),
                    }).collect::<Vec<_>>(),
                }],
            },
            "status": {"importers": importers},
        }))
        .expect("an ExportedService")
    }

    /// Real TLS, real sockets: who gets through, and what the others are told.
    #[tokio::test]
    async fn only_importers_get_through_and_only_to_the_gateway_they_meant() {
        use tokio::io::AsyncReadExt;
        let (ca, ids) = tunnel::throwaway_fleet(&["member1", "member2", "member3"]).unwrap();
        let identity = |i: usize| {
            Identity::from_pem(ids[i].0.as_bytes(), ids[i].1.as_bytes(), ca.as_bytes()).unwrap()
        };
        let (gateway, member2, member3) = (identity(0), identity(1), identity(2));
        assert_eq!(gateway.cluster, "member1");
        // The endpoint: an echo server.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let export = export(
            &["member1", "member2"],
            &[(&endpoint.ip().to_string(), Some(true))],
            i32::from(endpoint.port()),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap().to_string();
        serve_fixed(listener, &gateway, Policy::from_exports([&export])).unwrap();

        let mut tunnel = tunnel::dial(&member2, &at, "member1", endpoint, "demo/web")
            .await
            .unwrap();
        tunnel.write_all(b"across the gateway").await.unwrap();
        tunnel.shutdown().await.unwrap();
        let mut echoed = String::new();
        tunnel.read_to_string(&mut echoed).await.unwrap();
        assert_eq!(echoed, "across the gateway");

        // Twice more, the second resuming the TLS session.
        for _ in 0..2 {
            let mut t = tunnel::dial(&member2, &at, "member1", endpoint, "demo/web")
                .await
                .unwrap();
            t.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            t.read_exact(&mut one).await.unwrap();
        }

        let elsewhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        match tunnel::dial(&member2, &at, "member1", elsewhere, "demo/web").await {
            Err(tunnel::Error::Refused(_, why)) => {
                assert!(
                    why.contains("403") && why.contains("not a ready endpoint"),
                    "{why}"
                )
            }
            other => panic!("a target that is not an endpoint: {other:?}"),
        }
        assert!(
            tunnel::dial(&member3, &at, "member1", endpoint, "demo/web")
                .await
                .is_err(),
            "a cluster that imports nothing is refused at the handshake"
        );
        match tunnel::dial(&member2, &at, "member9", endpoint, "demo/web").await {
            Err(tunnel::Error::Handshake(_, e)) => {
                assert!(e.to_string().contains("NotValidForName"), "{e}")
            }
            other => panic!("a gateway of another cluster than meant: {other:?}"),
        }
    }

    #[test]
    fn tunnels_go_only_to_ready_exported_endpoints_of_importers() {
        let web = export(
            &["member1", "member2"],
            &[
                ("127.0.0.5", Some(true)),
                ("127.0.0.6", Some(false)),
                ("127.0.0.7", None),
            ],
            8080,
        );
        let db = export(&["member3"], &[("127.0.0.9", Some(true))], 5432);
        let nobody = export(&[], &[("127.0.0.10", Some(true))], 80);
        let policy = Policy::from_exports([&web, &db, &nobody]);
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        type Case = (&'static str, &'static str, &'static str, bool);
        let cases: &[Case] = &[
            (
                "an importer to a ready endpoint",
                "member2",
                "127.0.0.5:8080",
                true,
            ),
            (
                "an endpoint without conditions is ready",
                "member2",
                "127.0.0.7:8080",
                true,
            ),
            ("not ready", "member2", "127.0.0.6:8080", false),
            (
                "another port of the endpoint",
                "member2",
                "127.0.0.5:22",
                false,
            ),
            (
                "a service the cluster does not import",
                "member2",
                "127.0.0.9:5432",
                false,
            ),
            ("its importer", "member3", "127.0.0.9:5432", true),
            (
                "an export nobody imports",
                "member2",
                "127.0.0.10:80",
                false,
            ),
            ("not an endpoint at all", "member2", "127.0.0.1:6443", false),
        ];
        for (what, cluster, target, ok) in cases {
            assert_eq!(policy.allows(cluster, addr(target)).is_ok(), *ok, "{what}");
        }
        assert!(policy.admits("member2") && policy.admits("member3"));
        assert!(
            !policy.admits("member4"),
            "a cluster importing nothing is not let in"
        );
    }
}
