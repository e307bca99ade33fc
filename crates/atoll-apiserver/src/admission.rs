//! Admission webhooks (admissionregistration.k8s.io/v1): mutating webhooks run before schema
//! validation, validating webhooks after it, each called over HTTPS with an `AdmissionReview`
//! v1, as kube-apiserver does, so a hub's own webhooks behave the same on both servers.
//!
//! # Guarantees
//! - Rules (operations, groups, versions, resources with subresources, scope), namespace and
//!   object selectors decide which webhooks see a request.
//! - A webhook that cannot be reached, times out (`timeoutSeconds`, default 10) or answers
//!   nonsense refuses the request under `failurePolicy: Fail` (the default) and is skipped under
//!   `Ignore`. A denial is a 403 (or the code the webhook gives) with the webhook's message.
//! - Webhooks with side effects are not called for dry-run requests; the request is refused.
//!
//! # Caveats
//! - `clientConfig.service` is reached at a ready address of the Service's Endpoints (numeric
//!   target ports only); the webhook's certificate must name `<service>.<namespace>.svc`.
//! - Admission configuration objects themselves are never sent to webhooks.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::error::{ApiError, ApiResult};
use crate::registry::ResourceType;
use crate::selector::LabelSelector;
use crate::tls::Identity;

pub const GROUP: &str = "admissionregistration.k8s.io";

/// What is being admitted.
pub struct Request<'a> {
    pub rt: &'a ResourceType,
    pub operation: &'static str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub subresource: Option<&'a str>,
    pub object: Option<&'a Value>,
    pub old: Option<&'a Value>,
    pub identity: &'a Identity,
    pub dry_run: bool,
}

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rule_matches(rule: &Value, req: &Request) -> bool {
    let has = |list: Vec<&str>, want: &str| list.iter().any(|x| *x == "*" || *x == want);
    let resource = match req.subresource {
        Some(s) => format!("{}/{s}", req.rt.resource),
        None => req.rt.resource.clone(),
    };
    let resources = strs(rule.get("resources"));
    let resource_ok = resources.iter().any(|r| {
        *r == "*/*"
            || *r == resource
            || (*r == "*" && req.subresource.is_none())
            || r.split_once('/').is_some_and(|(a, b)| {
                (a == "*" || a == req.rt.resource) && (b == "*" || Some(b) == req.subresource)
            })
    });
    let scope = rule.get("scope").and_then(Value::as_str).unwrap_or("*");
    let scope_ok = match scope {
        "Namespaced" => req.rt.namespaced,
        "Cluster" => !req.rt.namespaced,
        _ => true,
    };
    has(strs(rule.get("operations")), req.operation)
        && has(strs(rule.get("apiGroups")), &req.rt.group)
        && has(strs(rule.get("apiVersions")), &req.rt.version)
        && resource_ok
        && scope_ok
}

fn selector_matches(
    selector: Option<&Value>,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    match selector {
        None => true,
        Some(s) => LabelSelector::from_json(s)
            .map(|s| s.matches(labels))
            .unwrap_or(false),
    }
}

fn namespace_labels(
    server: &ApiServer,
    req: &Request,
) -> std::collections::BTreeMap<String, String> {
    let ns = match (
        req.namespace,
        req.rt.group.is_empty() && req.rt.resource == "namespaces",
    ) {
        (Some(ns), _) => ns.to_string(),
        (None, true) => req.name.to_string(),
        _ => return Default::default(),
    };
    server
        .store
        .get(&format!("/core/namespaces/{ns}"))
        .and_then(|e| serde_json::from_slice::<Value>(&e.value).ok())
        .map(|o| crate::object::labels_of(&o))
        .unwrap_or_default()
}

/// The webhooks of one kind (mutating or validating) that apply to the request.
fn matching(server: &ApiServer, req: &Request, mutating: bool) -> ApiResult<Vec<Value>> {
    if req.rt.group == GROUP {
        return Ok(Vec::new());
    }
    let resource = if mutating {
        "mutatingwebhookconfigurations"
    } else {
        "validatingwebhookconfigurations"
    };
    let page = server
        .store
        .list(&format!("/{GROUP}/{resource}/"), None, 0, None)?;
    let mut out = Vec::new();
    for (_, entry) in &page.items {
        let Ok(config) = serde_json::from_slice::<Value>(&entry.value) else {
            continue;
        };
        for hook in config
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let rules_ok = hook
                .get("rules")
                .and_then(Value::as_array)
                .is_some_and(|rs| rs.iter().any(|r| rule_matches(r, req)));
            if !rules_ok {
                continue;
            }
            let ns_selector = hook
                .get("namespaceSelector")
                .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
            let scoped =
                req.rt.namespaced || (req.rt.group.is_empty() && req.rt.resource == "namespaces");
            if scoped && !selector_matches(ns_selector, &namespace_labels(server, req)) {
                continue;
            }
            let obj_selector = hook
                .get("objectSelector")
                .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
            let labels_of = |o: Option<&Value>| o.map(crate::object::labels_of).unwrap_or_default();
            if obj_selector.is_some()
                && !selector_matches(obj_selector, &labels_of(req.object))
                && !selector_matches(obj_selector, &labels_of(req.old))
            {
                continue;
            }
            out.push(hook.clone());
        }
    }
    Ok(out)
}

fn review(req: &Request, uid: &str) -> Value {
    let kind = json!({"group": req.rt.group, "version": req.rt.version, "kind": req.rt.kind});
    let resource =
        json!({"group": req.rt.group, "version": req.rt.version, "resource": req.rt.resource});
    let mut r = json!({
        "uid": uid, "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
        "name": req.name, "operation": req.operation,
        "userInfo": {"username": req.identity.user, "groups": req.identity.groups},
        "object": req.object, "oldObject": req.old, "dryRun": req.dry_run,
    });
    if let Some(ns) = req.namespace {
        r["namespace"] = json!(ns);
    }
    if let Some(s) = req.subresource {
        r["subResource"] = json!(s);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r})
}

/// POST the review to the webhook's URL over HTTPS, trusting its `caBundle`.
/// Where a webhook is reached: the address to connect to, the name its certificate must
/// carry, and the request path.
struct Target {
    host: String,
    port: u16,
    server_name: String,
    path: String,
}

/// `clientConfig.url`, or `clientConfig.service` resolved through the Service's port and a
/// ready address of its Endpoints; the certificate must then name `<service>.<namespace>.svc`.
fn target(server: &ApiServer, cfg: &Value) -> Result<Target, String> {
    if let Some(url) = cfg.get("url").and_then(Value::as_str) {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("webhook url {url:?} must use https"));
        }
        let host = uri
            .host()
            .ok_or("webhook url has no host")?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        return Ok(Target {
            port: uri.port_u16().unwrap_or(443),
            server_name: host.clone(),
            host,
            path: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
        });
    }
    let svc = cfg
        .get("service")
        .ok_or("clientConfig needs url or service")?;
    let (ns, name) = (
        svc.get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        svc.get("name").and_then(Value::as_str).unwrap_or_default(),
    );
    let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443);
    let load = |resource: &str| -> Result<Value, String> {
        let e = server
            .store
            .get(&format!("/core/{resource}/{ns}/{name}"))
            .ok_or_else(|| format!("{resource} {ns}/{name} not found"))?;
        serde_json::from_slice(&e.value).map_err(|e| e.to_string())
    };
    let service = load("services")?;
    let target_port = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("port").and_then(Value::as_u64) == Some(port))
        })
        .and_then(|p| {
            p.get("targetPort")
                .and_then(Value::as_u64)
                .or(p.get("port").and_then(Value::as_u64))
        })
        .ok_or_else(|| format!("service {ns}/{name} has no numeric target for port {port}"))?;
    let endpoints = load("endpoints")?;
    let ip = endpoints
        .pointer("/subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|s| {
            s.get("addresses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .find_map(|a| a.get("ip").and_then(Value::as_str).map(String::from))
        .ok_or_else(|| format!("service {ns}/{name} has no ready endpoints"))?;
    Ok(Target {
        host: ip,
        port: u16::try_from(target_port).map_err(|_| "target port out of range".to_string())?,
        server_name: format!("{name}.{ns}.svc"),
        path: svc
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or("/")
            .to_string(),
    })
}

/// Connections to webhooks kept open between calls, as kube-apiserver's HTTP transport keeps
/// them: a TLS handshake per admitted object would cost both sides more than the review.
#[derive(Default)]
pub struct WebhookConnections {
    idle: std::sync::Mutex<std::collections::HashMap<Endpoint, Vec<Sender>>>,
    configs: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Arc<rustls::ClientConfig>>>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
/// Where a webhook is: host, port, the name its certificate must carry, its CA bundle.
type Endpoint = (String, u16, String, Vec<u8>);

/// Idle connections kept per webhook endpoint.
const IDLE_PER_ENDPOINT: usize = 16;

impl WebhookConnections {
    fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The TLS client configuration trusting `ca_pem` (made once per bundle).
    fn config(&self, ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(c) = Self::lock(&self.configs).get(ca_pem) {
            return Ok(c.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(c.map_err(|e| format!("caBundle: {e}"))?)
                .map_err(|e| format!("caBundle: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let mut configs = Self::lock(&self.configs);
        // Bundles come from a handful of webhook configurations; a bound keeps a churn of
        // them from growing this.
        if configs.len() > 64 {
            configs.clear();
        }
        configs.insert(ca_pem.to_vec(), tls.clone());
        Ok(tls)
    }

    /// An open connection to `endpoint`: an idle one, else a new one.
    async fn connection(&self, endpoint: &Endpoint) -> Result<Sender, String> {
        loop {
            let idle = Self::lock(&self.idle).get_mut(endpoint).and_then(Vec::pop);
            let Some(mut s) = idle else { break };
            if !s.is_closed() && s.ready().await.is_ok() {
                return Ok(s);
            }
        }
        let (host, port, server_name, ca) = endpoint;
        let tls = self.config(ca)?;
        let name = rustls::pki_types::ServerName::try_from(server_name.clone())
            .map_err(|e| format!("server name {server_name:?}: {e}"))?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(sender)
    }

    fn put_back(&self, endpoint: Endpoint, sender: Sender) {
        let mut idle = Self::lock(&self.idle);
        let list = idle.entry(endpoint).or_default();
        if list.len() < IDLE_PER_ENDPOINT {
            list.push(sender);
        }
    }
}

/// POST the review to the webhook over HTTPS, trusting its `caBundle`.
async fn call(server: &ApiServer, hook: &Value, body: Vec<u8>) -> Result<Value, String> {
    let cfg = hook.get("clientConfig").cloned().unwrap_or_default();
    let Target {
        host,
        port,
        server_name,
        path,
    } = target(server, &cfg)?;
    let ca = match cfg.get("caBundle").and_then(Value::as_str) {
        Some(ca) => base64::engine::general_purpose::STANDARD
            .decode(ca)
            .map_err(|e| format!("caBundle: {e}"))?,
        None => Vec::new(),
    };
    let endpoint: Endpoint = (host.clone(), port, server_name, ca);
    let pool = &server.webhook_connections;
    let mut sender = pool.connection(&endpoint).await?;
    let request = http::Request::post(path.as_str())
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    pool.put_back(endpoint, sender);
    if !status.is_success() {
        return Err(format!("the webhook answered {status}"));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("the webhook's answer is not JSON: {e}"))
}

/// Run the mutating (`mutating = true`) or validating webhooks on a request. Returns the
/// object as mutated (mutating webhooks) or unchanged.
pub async fn run(
    server: &ApiServer,
    req: &Request<'_>,
    mutating: bool,
) -> ApiResult<Option<Value>> {
    let hooks = matching(server, req, mutating)?;
    let mut object = req.object.cloned();
    for hook in hooks {
        let name = hook
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("unnamed")
            .to_string();
        let side_effects = hook
            .get("sideEffects")
            .and_then(Value::as_str)
            .unwrap_or("Unknown");
        if req.dry_run && !matches!(side_effects, "None" | "NoneOnDryRun") {
            return Err(ApiError::bad_request(format!(
                "admission webhook {name:?} does not support dry run"
            )));
        }
        let fail_closed = hook.get("failurePolicy").and_then(Value::as_str) != Some("Ignore");
        let timeout = hook
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(10)
            .clamp(1, 30);
        let uid = uuid::Uuid::new_v4().to_string();
        let current = Request {
            object: object.as_ref(),
            ..*req
        };
        let body = serde_json::to_vec(&review(&current, &uid)).unwrap_or_default();
        let answer =
            match tokio::time::timeout(Duration::from_secs(timeout), call(server, &hook, body))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(format!("the webhook did not answer within {timeout}s")),
            };
        let response = match answer.and_then(|a| {
            a.get("response")
                .cloned()
                .ok_or_else(|| "the answer has no response".to_string())
        }) {
            Ok(r) => r,
            Err(why) if fail_closed => {
                return Err(ApiError::WebhookFailed {
                    message: format!(
                        "Internal error occurred: failed calling webhook {name:?}: {why}"
                    ),
                });
            }
            Err(why) => {
                tracing::warn!(webhook = %name, error = %why, "webhook failed; ignored by its failurePolicy");
                continue;
            }
        };
        if response.get("allowed").and_then(Value::as_bool) != Some(true) {
            let message = response
                .pointer("/status/message")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            let code = response
                .pointer("/status/code")
                .and_then(Value::as_u64)
                .unwrap_or(403);
            return Err(ApiError::AdmissionDenied {
                code: u16::try_from(code).unwrap_or(403),
                message: format!("admission webhook {name:?} denied the request: {message}"),
            });
        }
        if mutating && let Some(patch) = response.get("patch").and_then(Value::as_str) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(patch)
                .map_err(|e| ApiError::WebhookFailed {
                    message: format!("webhook {name:?} sent a patch that is not base64: {e}"),
                })?;
            let ops: json_patch::Patch =
                serde_json::from_slice(&bytes).map_err(|e| ApiError::WebhookFailed {
                    message: format!("webhook {name:?} sent a patch that is not a JSON patch: {e}"),
                })?;
            if let Some(obj) = object.as_mut() {
                json_patch::patch(obj, &ops).map_err(|e| ApiError::WebhookFailed {
                    message: format!("webhook {name:?} sent a patch that does not apply: {e}"),
                })?;
            }
        }
    }
    Ok(object)
}
