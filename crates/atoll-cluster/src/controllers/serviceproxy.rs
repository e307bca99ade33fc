//! Service proxy (kube-proxy's userspace mode, for clusters on one machine): every TCP port of
//! a Service whose ClusterIP is a loopback address is listened on at that address, and each
//! connection is passed to one of the Service's ready endpoints, taken in turn: a pod matching
//! its selector, at the target port; or, for a Service without a selector (`kubernetes`, one
//! whose endpoints someone else keeps), the ready addresses of its EndpointSlices at the
//! slice's port of the same name. A ClusterIP outside 127.0.0.0/8 (a real cluster's) is left
//! to that cluster's own proxy.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::Ctx;
use crate::util::{map_selector_matches, pod_ready};

const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A listener: the Service's key and port name, and its accept loop.
struct Listener {
    service: (String, String),
    port: String,
    task: tokio::task::JoinHandle<()>,
}

/// Keep the listeners in step with the Services, until the process ends.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let mut listening: HashMap<(Ipv4Addr, u16), Listener> = HashMap::new();
    let mut refused: HashMap<(Ipv4Addr, u16), String> = HashMap::new();
    loop {
        let mut wanted: HashMap<(Ipv4Addr, u16), ((String, String), String)> = HashMap::new();
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
            let key = (svc.namespace().unwrap_or_default(), svc.name_any());
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
                    let task =
                        tokio::spawn(serve(ctx.clone(), listener, service.clone(), port.clone()));
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
                        tracing::warn!(service = %format!("{}/{}", service.0, service.1), address = %format!("{}:{}", addr.0, addr.1), error = %why, "cannot listen for a Service");
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
    listener: tokio::net::TcpListener,
    service: (String, String),
    port: String,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let endpoints = endpoints(&ctx, &service, &port);
        if endpoints.is_empty() {
            // Refused, as a Service without ready endpoints refuses.
            continue;
        }
        let pick = endpoints[next.fetch_add(1, Ordering::Relaxed) % endpoints.len()];
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(pick).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// The ready endpoints of a Service port: pods in its namespace matching its selector, at the
/// target port (by number, or by the name of a container port).
fn endpoints(ctx: &Ctx, (namespace, name): &(String, String), port: &str) -> Vec<(Ipv4Addr, u16)> {
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
            Some((ip, target_port(service_port, p)?))
        })
        .collect()
}

/// The ready IPv4 addresses of EndpointSlices, at their port named `port`.
fn slice_endpoints<'a>(
    slices: impl Iterator<Item = &'a EndpointSlice>,
    port: &str,
) -> Vec<(Ipv4Addr, u16)> {
    let mut out = Vec::new();
    for slice in slices.filter(|s| s.address_type == "IPv4") {
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
                    .map(|ip| (ip, number)),
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
            assert_eq!(slice_endpoints(slices.iter(), port), want, "{what}");
        }
    }
}
