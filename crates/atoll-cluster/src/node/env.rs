//! A container's environment, as Kubernetes builds it: `envFrom` first, then `env` in order,
//! each value able to refer to the ones before it with `$(VAR)`; `command` and `args` expanded
//! the same way.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};

/// Why a container cannot be started yet (reported as `CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

pub(crate) async fn resolve(
    client: &Client,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut lookups = Lookups::new(client, &namespace);
    // The Services of the namespace first, so that the container's own variables win.
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut vars: Vec<(String, String)> = if links {
        service_links(client, &namespace).await
    } else {
        Vec::new()
    };
    // As the kubelet: every pod is told where the API server is (the `kubernetes` Service),
    // links or not, so that in-cluster clients find it.
    if !(links && namespace == "default") {
        for (k, v) in api_server_links(client).await {
            if !vars.iter().any(|(n, _)| *n == k) {
                vars.push((k, v));
            }
        }
    }
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = vars.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v;
        } else {
            vars.push((k, v));
        }
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match lookups.config_map(&r.name).await? {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if optional => {}
                None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match lookups.secret(&r.name).await? {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if optional => {}
                None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &vars)
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field(pod, &f.field_path, pod_ip, host_ip).ok_or_else(|| {
                    ConfigError(format!(
                        "env {}: unsupported fieldPath {:?}",
                        e.name, f.field_path
                    ))
                })?
            } else if let Some(r) = &src.config_map_key_ref {
                let data = lookups.config_map(&r.name).await?;
                match data.and_then(|d| d.get(&r.key).cloned()) {
                    Some(v) => v,
                    None if r.optional.unwrap_or(false) => continue,
                    None => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            r.key, r.name
                        )));
                    }
                }
            } else if let Some(r) = &src.secret_key_ref {
                let data = lookups.secret(&r.name).await?;
                match data.and_then(|d| d.get(&r.key).cloned()) {
                    Some(v) => v,
                    None if r.optional.unwrap_or(false) => continue,
                    None => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            r.key, r.name
                        )));
                    }
                }
            } else if let Some(r) = &src.resource_field_ref {
                resource_field(container, &r.resource)
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars)
}

pub(crate) fn field(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        other => {
            let (map, key) = if let Some(k) = other.strip_prefix("metadata.labels[") {
                (pod.metadata.labels.as_ref(), k)
            } else if let Some(k) = other.strip_prefix("metadata.annotations[") {
                (pod.metadata.annotations.as_ref(), k)
            } else {
                return None;
            };
            let key = key
                .strip_suffix(']')?
                .trim_matches(|c| c == '\'' || c == '"');
            map.and_then(|m| m.get(key).cloned()).unwrap_or_default()
        }
    })
}

pub(crate) fn resource_field(container: &Container, resource: &str) -> String {
    let (kind, name) = resource.split_once('.').unwrap_or(("", resource));
    container
        .resources
        .as_ref()
        .and_then(|r| match kind {
            "limits" => r.limits.as_ref(),
            _ => r.requests.as_ref(),
        })
        .and_then(|m| m.get(name))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

/// `$(VAR)` expansion as Kubernetes does it: known variables are replaced, unknown references
/// are left as they are, and `$$` stands for a literal `$`.
pub fn expand(input: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// ConfigMaps and Secrets read once per container start.
struct Lookups<'a> {
    client: &'a Client,
    namespace: &'a str,
    config_maps: BTreeMap<String, Option<BTreeMap<String, String>>>,
    secrets: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

impl<'a> Lookups<'a> {
    fn new(client: &'a Client, namespace: &'a str) -> Self {
        Lookups {
            client,
            namespace,
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }

    async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        if let Some(v) = self.config_maps.get(name) {
            return Ok(v.clone());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.namespace);
        let data = api
            .get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("cannot read configmap {name}: {e}")))?
            .map(|cm| cm.data.unwrap_or_default());
        self.config_maps.insert(name.into(), data.clone());
        Ok(data)
    }

    async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        if let Some(v) = self.secrets.get(name) {
            return Ok(v.clone());
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), self.namespace);
        let data = api
            .get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("cannot read secret {name}: {e}")))?
            .map(|s| {
                let mut out: BTreeMap<String, String> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                out.extend(s.string_data.unwrap_or_default());
                out
            });
        self.secrets.insert(name.into(), data.clone());
        Ok(data)
    }
}

/// The variables the kubelet gives a pod for each Service of its namespace with a ClusterIP
/// (`NAME_SERVICE_HOST`, `NAME_SERVICE_PORT`, `NAME_PORT_8080_TCP_ADDR` and the rest, Docker
/// links style). A Service list that fails gives none: the container still starts.
async fn service_links(client: &Client, namespace: &str) -> Vec<(String, String)> {
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), namespace);
    let services = match api.list(&Default::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::debug!(namespace, error = %e, "cannot list Services for service links");
            return Vec::new();
        }
    };
    links_of(services)
}

/// The `KUBERNETES_*` variables, from Service `default/kubernetes`.
async fn api_server_links(client: &Client) -> Vec<(String, String)> {
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), "default");
    match api.get_opt("kubernetes").await {
        Ok(Some(svc)) => links_of(vec![svc]),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read Service default/kubernetes");
            Vec::new()
        }
    }
}

fn links_of(services: Vec<k8s_openapi::api::core::v1::Service>) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec else { continue };
        let Some(ip) = spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None") else {
            continue;
        };
        let ports = spec.ports.unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let prefix = svc
            .metadata
            .name
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        vars.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        vars.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        let protocol = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        vars.push((
            format!("{prefix}_PORT"),
            format!("{}://{ip}:{}", protocol(first).to_lowercase(), first.port),
        ));
        for p in &ports {
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                let name = name.to_uppercase().replace('-', "_");
                vars.push((format!("{prefix}_SERVICE_PORT_{name}"), p.port.to_string()));
            }
            let proto = protocol(p);
            let base = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            vars.push((
                base.clone(),
                format!("{}://{ip}:{}", proto.to_lowercase(), p.port),
            ));
            vars.push((format!("{base}_PROTO"), proto.to_lowercase()));
            vars.push((format!("{base}_PORT"), p.port.to_string()));
            vars.push((format!("{base}_ADDR"), ip.clone()));
        }
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_kubernetes() {
        let vars = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x y".to_string()),
        ];
        assert_eq!(expand("$(A)-$(B)", &vars), "1-x y");
        assert_eq!(expand("$(C) stays", &vars), "$(C) stays");
        assert_eq!(expand("$$(A) escaped", &vars), "$(A) escaped");
        assert_eq!(expand("cost $5 and $(A", &vars), "cost $5 and $(A");
        assert_eq!(expand("", &vars), "");
    }
}
