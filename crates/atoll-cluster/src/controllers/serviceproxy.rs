//! Service proxy (kube-proxy's userspace mode, for clusters on one machine): every TCP port of
//! a Service whose ClusterIP is a loopback address is listened on at that address, and each
//! connection is passed to one of the Service's ready endpoints, taken in turn: a pod matching
//! its selector, at the target port; or, for a Service without a selector (`kubernetes`, one
//! whose endpoints someone else keeps), the ready addresses of its EndpointSlices at the
//! slice's port of the same name. A ClusterIP outside 127.0.0.0/8 (a real cluster's) is left
//! to that cluster's own proxy.
//!
//! Multi-cluster services: each ClusterSetIP of a `ServiceImport` here is listened on too, and
//! a connection goes to a ready endpoint of any exporting cluster (its imported EndpointSlices)
//! that serves the port; with `trafficDistribution: PreferClose`, to this cluster's own while
//! any is ready, else to the others. `sessionAffinity: ClientIP` keeps a client on the
//! endpoint it had, for the affinity's timeout, for Services and imports alike.
//!
//! An imported slice annotated with an east-west gateway (its cluster's endpoints are not
//! directly reachable) is reached through a tunnel to that gateway, made with this cluster's
//! hub identity (the agent's Secret), so the client sees no difference.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use atoll_runtime::relay::relay;

use super::Ctx;
use crate::util::{map_selector_matches, pod_ready};

const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// How long the cluster's hub identity is used before its Secret is read again (the agent
/// rotates it).
const IDENTITY_TTL: Duration = Duration::from_secs(10);

/// Where a connection goes: an endpoint, and the east-west gateway of the endpoint's cluster
/// when it is reached through one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    addr: (Ipv4Addr, u16),
    via: Option<Arc<Via>>,
}

impl Target {
    fn direct(addr: (Ipv4Addr, u16)) -> Target {
        Target { addr, via: None }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Via {
    gateway: String,
    cluster: String,
}

/// This cluster's hub identity for tunnels, read from the agent's Secret and kept a while;
/// one for all the listeners, so they share its TLS sessions and its reads.
#[derive(Default)]
struct Tunnels {
    identity: tokio::sync::Mutex<
        Option<(
            std::time::Instant,
            String,
            Arc<atoll_gateway::tunnel::Identity>,
        )>,
    >,
}

impl Tunnels {
    async fn identity(&self, ctx: &Ctx) -> Result<Arc<atoll_gateway::tunnel::Identity>, String> {
        let mut held = self.identity.lock().await;
        if let Some((read, _, id)) = held.as_ref()
            && read.elapsed() < IDENTITY_TTL
        {
            return Ok(id.clone());
        }
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(ctx.client.clone(), atoll_api::cluster::AGENT_NAMESPACE);
        let kubeconfig = atoll_gateway::tunnel::agent_kubeconfig(
            &secrets,
            atoll_api::cluster::HUB_KUBECONFIG_SECRET,
        )
        .await?;
        // The same identity is kept (and its TLS sessions with it) until it rotates.
        let id = match held.take() {
            Some((_, kc, id)) if kc == kubeconfig => id,
            _ => Arc::new(
                atoll_gateway::tunnel::Identity::from_kubeconfig(&kubeconfig)
                    .map_err(|e| e.to_string())?,
            ),
        };
        *held = Some((std::time::Instant::now(), kubeconfig, id.clone()));
        Ok(id)
    }
}

/// What a listener serves.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Backend {
    Service(String, String),
    Import(String, String),
}

/// A listener: what it serves and the port name, and its accept loop.
struct Listener {
    service: Backend,
    port: String,
    task: tokio::task::JoinHandle<()>,
}

/// Keep the listeners in step with the Services, until the process ends.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let mut listening: HashMap<(Ipv4Addr, u16), Listener> = HashMap::new();
    let mut refused: HashMap<(Ipv4Addr, u16), String> = HashMap::new();
    let tunnels = Arc::new(Tunnels::default());
    loop {
        let mut wanted: HashMap<(Ipv4Addr, u16), (Backend, String)> = HashMap::new();
        for svc in ctx.caches.services.state() {
            // As kube-proxy: a Service labelled for another proxy is that proxy's (the
            // cluster DNS listens at its own ClusterIP).
            if svc.labels().contains_key(PROXY_NAME_LABEL) {
                continue;
            }
            let Some(spec) = svc.spec.as_ref() else {
                continue;
            };
            let Some(ip) = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                .filter(Ipv4Addr::is_loopback)
            else {
                continue;
            };
            let key = Backend::Service(svc.namespace().unwrap_or_default(), svc.name_any());
            for p in spec.ports.iter().flatten() {
                if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                    continue;
                }
                let Ok(port) = u16::try_from(p.port) else {
                    continue;
                };
                wanted.insert(
                    (ip, port),
                    (key.clone(), p.name.clone().unwrap_or_default()),
                );
            }
        }
        for import in ctx.caches.service_imports.state() {
            if import.spec.type_ != atoll_api::mcs::TYPE_CLUSTER_SET_IP {
                continue;
            }
            let Some(ip) = import
                .spec
                .ips
                .first()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                .filter(Ipv4Addr::is_loopback)
            else {
                continue;
            };
            let key = Backend::Import(import.namespace().unwrap_or_default(), import.name_any());
            for p in &import.spec.ports {
                if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                    continue;
                }
                let Ok(port) = u16::try_from(p.port) else {
                    continue;
                };
                wanted.insert((ip, port), (key.clone(), p.name.clone()));
            }
        }
        listening.retain(|addr, l| {
            let keep = wanted
                .get(addr)
                .is_some_and(|(svc, port)| *svc == l.service && *port == l.port);
            if !keep {
                l.task.abort();
            }
            keep
        });
        refused.retain(|addr, _| wanted.contains_key(addr));
        for (addr, (service, port)) in wanted {
            if listening.contains_key(&addr) {
                continue;
            }
            match std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|_| l))
                .and_then(tokio::net::TcpListener::from_std)
            {
                Ok(listener) => {
                    refused.remove(&addr);
                    let task = tokio::spawn(serve(
                        ctx.clone(),
                        tunnels.clone(),
                        listener,
                        service.clone(),
                        port.clone(),
                    ));
                    listening.insert(
                        addr,
                        Listener {
                            service,
                            port,
                            task,
                        },
                    );
                }
                Err(e) => {
                    // Said once per address (a port below 1024 needs privileges).
                    let why = e.to_string();
                    if refused.get(&addr) != Some(&why) {
                        tracing::warn!(service = ?service, address = %format!("{}:{}", addr.0, addr.1), error = %why, "cannot listen for a Service");
                        refused.insert(addr, why);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Accept connections for one Service port and pass each to an endpoint.
async fn serve(
    ctx: Arc<Ctx>,
    tunnels: Arc<Tunnels>,
    listener: tokio::net::TcpListener,
    service: Backend,
    port: String,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let name = match &service {
        Backend::Service(ns, n) | Backend::Import(ns, n) => format!("{ns}/{n}"),
    };
    // Client address -> (endpoint, last used), for ClientIP affinity.
    let mut sticky: HashMap<std::net::IpAddr, (Target, std::time::Instant)> = HashMap::new();
    loop {
        let Ok((inbound, client)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (endpoints, affinity) = match &service {
            Backend::Service(ns, name) => (
                endpoints(&ctx, &(ns.clone(), name.clone()), &port),
                service_affinity(&ctx, ns, name),
            ),
            Backend::Import(ns, name) => import_endpoints(&ctx, ns, name, &port),
        };
        if endpoints.is_empty() {
            // Refused, as a Service without ready endpoints refuses.
            continue;
        }
        let pick = match affinity {
            Some(timeout) => {
                let now = std::time::Instant::now();
                sticky.retain(|_, (_, used)| now.duration_since(*used) < timeout);
                let held = sticky
                    .get(&client.ip())
                    .map(|(e, _)| e.clone())
                    .filter(|e| endpoints.contains(e));
                let e = held.unwrap_or_else(|| {
                    endpoints[next.fetch_add(1, Ordering::Relaxed) % endpoints.len()].clone()
                });
                sticky.insert(client.ip(), (e.clone(), now));
                e
            }
            None => endpoints[next.fetch_add(1, Ordering::Relaxed) % endpoints.len()].clone(),
        };
        let (ctx, tunnels, name) = (ctx.clone(), tunnels.clone(), name.clone());
        // What a client writes goes on at once (no Nagle wait on the hop the proxy adds).
        let _ = inbound.set_nodelay(true);
        tokio::spawn(async move {
            match &pick.via {
                None => {
                    if let Ok(outbound) = tokio::net::TcpStream::connect(pick.addr).await {
                        let _ = outbound.set_nodelay(true);
                        relay(inbound, outbound).await;
                    }
                }
                Some(via) => {
                    let tunnel = match tunnels.identity(&ctx).await {
                        Ok(id) => {
                            atoll_gateway::tunnel::dial(
                                &id,
                                &via.gateway,
                                &via.cluster,
                                SocketAddr::from(pick.addr),
                                &name,
                            )
                            .await
                        }
                        Err(why) => Err(atoll_gateway::tunnel::Error::Identity(why)),
                    };
                    match tunnel {
                        Ok(t) => {
                            relay(inbound, t).await;
                        }
                        Err(e) => {
                            tracing::warn!(service = %name, endpoint = ?pick.addr, error = %e, "cannot reach an endpoint through its cluster's east-west gateway")
                        }
                    }
                }
            }
        });
    }
}

/// The ready endpoints of a Service port: pods in its namespace matching its selector, at the
/// target port (by number, or by the name of a container port).
fn endpoints(ctx: &Ctx, (namespace, name): &(String, String), port: &str) -> Vec<Target> {
    let Some(svc) = ctx
        .caches
        .services
        .get(&ObjectRef::new(name).within(namespace))
    else {
        return Vec::new();
    };
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let Some(service_port) = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.clone().unwrap_or_default() == port)
    else {
        return Vec::new();
    };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        let slices: Vec<_> = ctx
            .caches
            .foreign_slices
            .state()
            .into_iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && s.labels().get(SERVICE_NAME_LABEL) == Some(name)
            })
            .collect();
        return slice_endpoints(slices.iter().map(|s| s.as_ref()), port);
    };
    ctx.caches
        .pods
        .state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
        .filter(|p| map_selector_matches(selector, p.labels()))
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            Some(Target::direct((ip, target_port(service_port, p)?)))
        })
        .collect()
}

/// A Service's ClientIP affinity timeout, if it has one (10800 s unless configured).
fn service_affinity(ctx: &Ctx, namespace: &str, name: &str) -> Option<Duration> {
    let svc = ctx
        .caches
        .services
        .get(&ObjectRef::new(name).within(namespace))?;
    let spec = svc.spec.as_ref()?;
    affinity(
        spec.session_affinity.as_deref(),
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds),
    )
}

fn affinity(kind: Option<&str>, timeout: Option<i32>) -> Option<Duration> {
    (kind == Some("ClientIP"))
        .then(|| Duration::from_secs(u64::try_from(timeout.unwrap_or(10_800)).unwrap_or(10_800)))
}

/// The ready endpoints of an import's port across its exporting clusters (each cluster's at
/// its own port of that name), the local cluster's alone under `PreferClose` while any is
/// ready; and the import's affinity.
fn import_endpoints(
    ctx: &Ctx,
    namespace: &str,
    name: &str,
    port: &str,
) -> (Vec<Target>, Option<Duration>) {
    let Some(import) = ctx
        .caches
        .service_imports
        .get(&ObjectRef::new(name).within(namespace))
    else {
        return (Vec::new(), None);
    };
    let slices: Vec<_> = ctx
        .caches
        .foreign_slices
        .state()
        .into_iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.labels()
                    .get(atoll_api::mcs::LABEL_SERVICE_NAME)
                    .map(String::as_str)
                    == Some(name)
        })
        .collect();
    let prefer = import.spec.traffic_distribution.as_deref() == Some("PreferClose");
    let own = prefer.then(|| local_cluster(ctx)).flatten();
    let by_source = |local: bool| {
        slice_endpoints(
            slices.iter().map(|s| s.as_ref()).filter(|s| {
                let source = s.labels().get(atoll_api::mcs::LABEL_SOURCE_CLUSTER);
                !local || source == own.as_ref()
            }),
            port,
        )
    };
    let endpoints = match own {
        Some(_) => {
            let local = by_source(true);
            if local.is_empty() {
                by_source(false)
            } else {
                local
            }
        }
        None => by_source(false),
    };
    let affinity = affinity(
        import.spec.session_affinity.as_deref(),
        import
            .spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds),
    );
    (endpoints, affinity)
}

/// This cluster's id in its cluster set (ClusterProperty `cluster.clusterset.k8s.io`), as the
/// imported slices name their source.
fn local_cluster(ctx: &Ctx) -> Option<String> {
    ctx.caches
        .cluster_id
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// The ready IPv4 addresses of EndpointSlices, at their port named `port`, each through the
/// east-west gateway its slice names, if any.
fn slice_endpoints<'a>(slices: impl Iterator<Item = &'a EndpointSlice>, port: &str) -> Vec<Target> {
    let mut out = Vec::new();
    for slice in slices.filter(|s| s.address_type == "IPv4") {
        let via = slice
            .annotations()
            .get(atoll_api::mcs::ANNOTATION_SLICE_GATEWAY)
            .zip(slice.labels().get(atoll_api::mcs::LABEL_SOURCE_CLUSTER))
            .map(|(gateway, cluster)| {
                Arc::new(Via {
                    gateway: gateway.clone(),
                    cluster: cluster.clone(),
                })
            });
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == port)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for e in &slice.endpoints {
            // As kube-proxy: an endpoint without conditions is ready.
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            out.extend(
                e.addresses
                    .iter()
                    .filter_map(|a| a.parse::<Ipv4Addr>().ok())
                    .map(|ip| Target {
                        addr: (ip, number),
                        via: via.clone(),
                    }),
            );
        }
    }
    out
}

fn target_port(service_port: &ServicePort, pod: &Pod) -> Option<u16> {
    match &service_port.target_port {
        None => u16::try_from(service_port.port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(family: &str, port: (&str, i32), endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "addressType": family,
            "ports": [{"name": port.0, "port": port.1, "protocol": "TCP"}],
            "endpoints": endpoints.iter().map(|(a, ready)| match ready {
                Some(r) => serde_json::json!({"addresses": [a], "conditions": {"ready": r}}),
                None => serde_json::json!({"addresses": [a]}),
            }).collect::<Vec<_>>(),
        }))
        .expect("an EndpointSlice")
    }

    #[test]
    fn slice_endpoints_are_the_ready_ipv4_addresses_at_the_named_port() {
        type Case = (
            &'static str,
            Vec<EndpointSlice>,
            &'static str,
            Vec<(Ipv4Addr, u16)>,
        );
        let cases: Vec<Case> = vec![
            (
                "ready and unknown count, not-ready does not",
                vec![slice(
                    "IPv4",
                    ("https", 6443),
                    &[
                        ("127.0.0.1", Some(true)),
                        ("127.0.0.2", None),
                        ("127.0.0.3", Some(false)),
                    ],
                )],
                "https",
                vec![
                    (Ipv4Addr::new(127, 0, 0, 1), 6443),
                    (Ipv4Addr::new(127, 0, 0, 2), 6443),
                ],
            ),
            (
                "another port name gives nothing",
                vec![slice("IPv4", ("http", 80), &[("127.0.0.1", Some(true))])],
                "https",
                vec![],
            ),
            (
                "IPv6 slices are not proxied here",
                vec![slice("IPv6", ("", 80), &[("::1", Some(true))])],
                "",
                vec![],
            ),
            (
                "several slices add up",
                vec![
                    slice("IPv4", ("", 80), &[("127.0.0.1", Some(true))]),
                    slice("IPv4", ("", 81), &[("127.0.0.2", Some(true))]),
                ],
                "",
                vec![
                    (Ipv4Addr::new(127, 0, 0, 1), 80),
                    (Ipv4Addr::new(127, 0, 0, 2), 81),
                ],
            ),
        ];
        for (what, slices, port, want) in cases {
            let got: Vec<_> = slice_endpoints(slices.iter(), port)
                .into_iter()
                .map(|t| t.addr)
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn slices_behind_a_gateway_are_reached_through_it() {
        let mut behind = slice("IPv4", ("", 80), &[("127.0.0.5", Some(true))]);
        behind.metadata.annotations = Some(
            [(
                atoll_api::mcs::ANNOTATION_SLICE_GATEWAY.to_string(),
                "127.0.0.1:7443".to_string(),
            )]
            .into(),
        );
        behind.metadata.labels = Some(
            [(
                atoll_api::mcs::LABEL_SOURCE_CLUSTER.to_string(),
                "member1".to_string(),
            )]
            .into(),
        );
        let direct = slice("IPv4", ("", 80), &[("127.0.0.6", Some(true))]);
        let got = slice_endpoints([&behind, &direct].into_iter(), "");
        assert_eq!(
            got,
            vec![
                Target {
                    addr: (Ipv4Addr::new(127, 0, 0, 5), 80),
                    via: Some(Arc::new(Via {
                        gateway: "127.0.0.1:7443".into(),
                        cluster: "member1".into(),
                    })),
                },
                Target::direct((Ipv4Addr::new(127, 0, 0, 6), 80)),
            ]
        );
        // A gateway without a source cluster cannot be checked: not used.
        behind.metadata.labels = None;
        assert_eq!(slice_endpoints([&behind].into_iter(), "")[0].via, None);
    }
}
