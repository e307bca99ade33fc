//! The generic REST machinery: one implementation of get, list, create, update, patch, delete
//! and deletecollection for every resource, with the `status` and `scale` subresources.
//!
//! Kind-specific behaviour comes only from the resource's [`Strategy`](crate::registry::Strategy)
//! and the few hooks in [`hooks`]; nothing here is written per kind.

use std::sync::Arc;

use atoll_store::{Entry, Precondition, StoreError};
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::authz::Attributes;
use crate::error::{ApiError, ApiResult, Cause};
use crate::object::{self, decode_stored, encode_for_store, meta_mut, meta_str};
use crate::registry::{NormalizeError, ResourceType};
use crate::request::{self, Query, ResourceRequest, Verb};
use crate::selector::{FieldSelector, LabelSelector};
use crate::tls::Identity;
use crate::{ApiServer, discovery, patch, validation, watch};

mod delete;
mod plugins;
mod read;
mod subresource;
mod write;

pub use delete::DeleteOptions;
pub use plugins::QuotaCharges;
pub use subresource::set_pointer;

/// Entry point for every request.
pub async fn handle(server: Arc<ApiServer>, req: Request) -> Response {
    // Client certificates first (the TLS layer put the identity there), then bearer tokens.
    let mut bad_token = false;
    let identity = match req.extensions().get::<Identity>() {
        Some(id) => Some(id.clone()),
        None => bearer_token(req.headers()).and_then(|token| {
            let id = crate::authn::authenticate_token(&server, &token);
            bad_token = id.is_none();
            id
        }),
    };
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    let impersonated = match &identity {
        Some(id) if !bad_token => impersonate(&server, id, req.headers()),
        _ => Ok(None),
    };
    let (identity, impersonated) = match impersonated {
        Ok(Some(as_whom)) => (Some(as_whom), Ok(())),
        Ok(None) => (identity, Ok(())),
        Err(e) => (identity, Err(e)),
    };
    let user = identity.as_ref().map(|i| i.user.clone());
    let result = if bad_token {
        // A token that does not authenticate is refused, never treated as anonymous.
        Err(ApiError::Unauthorized {
            message: "Unauthorized: the bearer token is not valid".into(),
        })
    } else if let Err(e) = impersonated {
        Err(e)
    } else {
        route(&server, req, &path, &query, identity).await
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code().as_u16(), error = %e, "request failed");
            e.into_response()
        }
    };
    if let Some(audit) = &server.audit {
        audit.record(
            user.as_deref(),
            &method,
            &path,
            &query,
            resp.status().as_u16(),
        );
    }
    resp
}

/// The identity a request impersonates, if it asks to and its requester may.
fn impersonate(
    server: &ApiServer,
    requester: &Identity,
    headers: &http::HeaderMap,
) -> ApiResult<Option<Identity>> {
    let Some(req) = crate::impersonation::parse(headers).map_err(ApiError::bad_request)? else {
        return Ok(None);
    };
    for attrs in crate::impersonation::checks(&req) {
        if !server.authorizer.allowed(requester, &attrs) {
            let what = if attrs.subresource.is_empty() {
                attrs.resource.clone()
            } else {
                format!("{}/{}", attrs.resource, attrs.subresource)
            };
            let scope = if attrs.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", attrs.namespace)
            };
            return Err(ApiError::Forbidden {
                subject: Box::new(crate::error::Subject {
                    group: String::new(),
                    kind: attrs.resource.clone(),
                    name: attrs.name.clone(),
                }),
                message: format!(
                    "{} \"{}\" is forbidden: User \"{}\" cannot impersonate resource \"{what}\" in API group \"\" {scope}",
                    attrs.resource, attrs.name, requester.user
                ),
            });
        }
    }
    Ok(Some(crate::impersonation::identity(&req)))
}

async fn route(
    server: &Arc<ApiServer>,
    req: Request,
    path: &str,
    query: &Query,
    identity: Option<Identity>,
) -> ApiResult<Response> {
    // Health and version are open to anyone, as kube-apiserver's default RBAC allows.
    match path {
        "/healthz" | "/livez" | "/readyz" => return Ok(health(query)),
        "/version" | "/version/" => {
            return Ok(json_response(StatusCode::OK, &discovery::version()));
        }
        _ => {}
    }
    let Some(identity) = identity else {
        return Err(ApiError::Unauthorized {
            message: "Unauthorized".into(),
        });
    };
    for p in ["/healthz/", "/livez/", "/readyz/"] {
        if path.starts_with(p) {
            return Ok(health(query));
        }
    }
    let accept = header_str(req.headers(), header::ACCEPT);
    let rr = request::parse(req.method(), path, query)?;
    if rr.is_none() {
        // Discovery, OpenAPI and other paths: authorized as non-resource URLs.
        let attrs = Attributes {
            verb: req.method().as_str().to_lowercase(),
            path: path.to_string(),
            ..Default::default()
        };
        if !server.authorizer.allowed(&identity, &attrs) {
            return Err(ApiError::Forbidden {
                subject: Box::default(),
                message: format!("forbidden: {}", attrs.denial(&identity.user)),
            });
        }
    }
    if let Some(resp) = discovery::serve(server, path, &accept)? {
        return Ok(resp);
    }
    let Some(rr) = rr else {
        return Err(ApiError::no_such_resource());
    };
    authorize(server, &identity, &rr, query)?;
    let snapshot = server.registry.snapshot();
    let Some(rt) = snapshot.get(&rr.group, &rr.version, &rr.resource).cloned() else {
        return Err(ApiError::no_such_resource());
    };
    if rr.namespace.is_some() && !rt.namespaced {
        return Err(ApiError::no_such_resource());
    }
    let content_type = header_str(req.headers(), header::CONTENT_TYPE);
    // Field manager of non-apply writes: the fieldManager parameter, else the client's name.
    let manager = match query.get("fieldManager") {
        Some(m) => m.to_string(),
        None => {
            let ua = header_str(req.headers(), header::USER_AGENT);
            let name = ua.split('/').next().unwrap_or_default().trim().to_string();
            if name.is_empty() {
                "unknown".to_string()
            } else {
                name
            }
        }
    };
    if manager.len() > 128 {
        return Err(ApiError::bad_request(
            "fieldManager must be no more than 128 characters",
        ));
    }
    let ctx = Ctx {
        server: server.clone(),
        rt,
        rr,
        query: query.clone(),
        accept,
        manager,
        apply: content_type.starts_with("application/apply-patch"),
        warnings: Default::default(),
        identity,
    };
    if ctx.rt.review {
        if ctx.rr.verb != Verb::Create || ctx.rr.name.is_some() {
            return Err(ApiError::MethodNotAllowed {
                message: format!("{} can only be created", ctx.rt.resource),
            });
        }
        let (ct, body) = read_body(&ctx.server, req).await?;
        let review = ctx.decode_object(&ct, &body)?;
        object::check_type_meta(&review, &ctx.rt)?;
        return crate::reviews::answer(&ctx, &ctx.identity, review);
    }
    ctx.check_subresource()?;
    let result = match ctx.rr.verb {
        Verb::Get if ctx.rr.subresource.as_deref() == Some("log") => {
            return crate::podlog::serve(&ctx).await;
        }
        Verb::Get | Verb::Create if ctx.rr.subresource.as_deref() == Some("exec") => {
            return crate::podlog::exec(&ctx, req).await;
        }
        Verb::Get | Verb::Create if ctx.rr.subresource.as_deref() == Some("attach") => {
            return crate::podlog::attach(&ctx, req).await;
        }
        Verb::Get | Verb::Create if ctx.rr.subresource.as_deref() == Some("portforward") => {
            return crate::podlog::portforward(&ctx, req).await;
        }
        Verb::Get => ctx.get(),
        Verb::List => ctx.list(),
        Verb::Watch => return watch::serve(ctx),
        Verb::Create if ctx.rr.subresource.as_deref() == Some("binding") => {
            let (ct, body) = read_body(&ctx.server, req).await?;
            ctx.bind(&ct, &body).await
        }
        Verb::Create if ctx.rr.subresource.as_deref() == Some("token") => {
            let (ct, body) = read_body(&ctx.server, req).await?;
            ctx.token_request(&ct, &body)
        }
        Verb::Create => {
            let (ct, body) = read_body(&ctx.server, req).await?;
            ctx.create(&ct, &body).await
        }
        Verb::Update => {
            let (ct, body) = read_body(&ctx.server, req).await?;
            ctx.update(&ct, &body).await
        }
        Verb::Patch => {
            let (ct, body) = read_body(&ctx.server, req).await?;
            ctx.patch(&ct, &body).await
        }
        Verb::Delete => {
            let (ct, body) = read_body(&ctx.server, req).await?;
            ctx.delete(&ct, &body).await
        }
        Verb::DeleteCollection => {
            let (ct, body) = read_body(&ctx.server, req).await?;
            ctx.delete_collection(&ct, &body).await
        }
    };
    let mut resp = result?;
    for w in ctx
        .warnings
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        // RFC 7234 warn-code 299 with an agent of "-", the text a quoted-string with `"` and
        // `\` escaped and control characters left out, as kube-apiserver writes them.
        let quoted: String = w
            .chars()
            .filter(|c| !c.is_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let text = format!("299 - \"{quoted}\"");
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
    Ok(resp)
}

/// The name in a field selector that is exactly `metadata.name=X` (or `==`).
fn single_name(query: &crate::request::Query) -> Option<String> {
    let sel = query.get("fieldSelector")?;
    let value = sel
        .strip_prefix("metadata.name==")
        .or_else(|| sel.strip_prefix("metadata.name="))?;
    (!value.is_empty() && !value.contains(',')).then(|| value.to_string())
}

/// RBAC for a resource request; 403 with kube-apiserver's message when denied.
fn authorize(
    server: &ApiServer,
    who: &Identity,
    rr: &ResourceRequest,
    query: &crate::request::Query,
) -> ApiResult<()> {
    let verb = match rr.verb {
        Verb::Get => "get",
        Verb::List => "list",
        Verb::Watch => "watch",
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Patch => "patch",
        Verb::Delete => "delete",
        Verb::DeleteCollection => "deletecollection",
    };
    // The namespace object is authorized in its own namespace, as kube-apiserver does.
    let namespace = match (&rr.namespace, rr.resource.as_str(), &rr.name) {
        (Some(ns), _, _) => ns.clone(),
        (None, "namespaces", Some(name)) if rr.group.is_empty() => name.clone(),
        _ => String::new(),
    };
    // Running a command in a pod is a `create` of `pods/exec` whatever the method (a
    // WebSocket arrives as a GET), as kube-apiserver authorizes it since 1.30.
    let verb = if rr.group.is_empty()
        && rr.resource == "pods"
        && matches!(
            rr.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        ) {
        "create"
    } else {
        verb
    };
    let attrs = Attributes {
        verb: verb.into(),
        group: rr.group.clone(),
        resource: rr.resource.clone(),
        subresource: rr.subresource.clone().unwrap_or_default(),
        namespace,
        // A list or watch of one object by `fieldSelector=metadata.name=X` is authorized as a
        // request for X, as kube-apiserver does, so `resourceNames` rules cover it (a client
        // may then watch the one object it may read).
        name: rr.name.clone().unwrap_or_else(|| match rr.verb {
            Verb::List | Verb::Watch => single_name(query).unwrap_or_default(),
            _ => String::new(),
        }),
        path: String::new(),
    };
    // A node is narrowed to its own objects first (Node authorizer, NodeRestriction).
    let refusal = crate::noderestriction::node_of(who)
        .and_then(|node| crate::noderestriction::check_request(server, node, &attrs));
    if refusal.is_none() && server.authorizer.allowed(who, &attrs) {
        return Ok(());
    }
    let what = crate::error::qualified(&rr.group, &attrs.resource_with_sub());
    let why = match refusal {
        Some(r) => format!("{}: {r}", attrs.denial(&who.user)),
        None => attrs.denial(&who.user),
    };
    let message = match &rr.name {
        Some(n) => format!("{what} \"{n}\" is forbidden: {why}"),
        None => format!("{what} is forbidden: {why}"),
    };
    Err(ApiError::Forbidden {
        subject: Box::new(crate::error::Subject {
            group: rr.group.clone(),
            kind: rr.resource.clone(),
            name: rr.name.clone().unwrap_or_default(),
        }),
        message,
    })
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn health(query: &Query) -> Response {
    let body = if query.flag("verbose") {
        "[+]ping ok\n[+]etcd ok\n[+]poststarthook/crd-informer-synced ok\nhealthz check passed\n"
    } else {
        "ok"
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn read_body(server: &ApiServer, req: Request) -> ApiResult<(String, bytes::Bytes)> {
    let ct = header_str(req.headers(), header::CONTENT_TYPE);
    let limit = server.config.max_body_bytes;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large(limit));
    }
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    match limited.collect().await {
        Ok(c) => Ok((ct, c.to_bytes())),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large(limit))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body failed: {e}"
        ))),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::RequestEntityTooLarge {
        message: format!("the request body is larger than the server's limit of {limit} bytes"),
    }
}

/// An object just written: as a value, and when possible as the exact bytes to send.
pub struct Written {
    pub object: Value,
    pub bytes: Option<Vec<u8>>,
}

impl Written {
    pub fn response(self, code: StatusCode) -> Response {
        match self.bytes {
            Some(b) => bytes_response(code, b),
            None => json_response(code, &self.object),
        }
    }
}

pub fn bytes_response(code: StatusCode, body: Vec<u8>) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

/// Everything a handler needs about one resource request.
pub struct Ctx {
    pub server: Arc<ApiServer>,
    pub rt: Arc<ResourceType>,
    pub rr: ResourceRequest,
    pub query: Query,
    pub accept: String,
    /// Who owns the fields this request sets (`metadata.managedFields`).
    pub manager: String,
    /// Whether this is a server-side apply, which records field ownership itself.
    pub apply: bool,
    /// Warnings for the client (`Warning` response headers), e.g. unknown fields.
    pub warnings: std::sync::Mutex<Vec<String>>,
    /// Who is asking.
    pub identity: Identity,
}

impl Ctx {
    fn clone_ctx(&self) -> Ctx {
        Ctx {
            server: self.server.clone(),
            rt: self.rt.clone(),
            rr: self.rr.clone(),
            query: self.query.clone(),
            accept: self.accept.clone(),
            manager: self.manager.clone(),
            apply: self.apply,
            warnings: Default::default(),
            identity: self.identity.clone(),
        }
    }

    fn warn(&self, messages: Vec<String>) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(messages);
    }

    fn is_csr(&self) -> bool {
        self.rt.group == "certificates.k8s.io" && self.rt.resource == "certificatesigningrequests"
    }

    fn is_namespaces(&self) -> bool {
        self.rt.group.is_empty() && self.rt.resource == "namespaces"
    }

    pub(crate) fn name(&self) -> &str {
        self.rr.name.as_deref().unwrap_or_default()
    }

    pub fn key(&self, name: &str) -> String {
        self.rt.key(self.rr.namespace.as_deref(), name)
    }

    /// Prefix of the keys a list or watch covers (one namespace or all).
    pub fn list_prefix(&self) -> String {
        match &self.rr.namespace {
            Some(ns) => format!("{}{ns}/", self.rt.key_prefix()),
            None => self.rt.key_prefix(),
        }
    }

    /// 409 for a write whose resourceVersion no longer matches the stored object.
    fn modified(&self, name: &str) -> ApiError {
        ApiError::conflict(
            &self.rt.group,
            &self.rt.resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 when a read-modify-write lost the race to other writers every time it tried.
    fn too_contended(&self, name: &str) -> ApiError {
        ApiError::conflict(
            &self.rt.group,
            &self.rt.resource,
            name,
            "too many concurrent writers; try again",
        )
    }

    /// A compare-and-swap write that failed: `None` means read again and retry (the object
    /// changed under a write the client did not pin to a version), otherwise the client's error.
    fn cas_failure(&self, e: StoreError, name: &str, retry: bool) -> Option<ApiError> {
        match e {
            StoreError::Conflict { .. } if retry => None,
            StoreError::Conflict { .. } => Some(self.modified(name)),
            StoreError::NotFound(_) => Some(self.not_found(name)),
            other => Some(other.into()),
        }
    }

    pub(crate) fn is_pods(&self) -> bool {
        self.rt.group.is_empty() && self.rt.resource == "pods"
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.rt.group, &self.rt.resource, name)
    }

    fn check_subresource(&self) -> ApiResult<()> {
        let Some(sub) = &self.rr.subresource else {
            return Ok(());
        };
        let ok = match sub.as_str() {
            "status" => self.rt.status_subresource,
            "scale" => self.rt.scale.is_some(),
            "finalize" => self.rt.group.is_empty() && self.rt.resource == "namespaces",
            "token" => self.rt.group.is_empty() && self.rt.resource == "serviceaccounts",
            "approval" => self.is_csr(),
            "binding" | "log" | "exec" | "attach" | "portforward" => self.is_pods(),
            _ => false,
        };
        let verb_ok = if sub == "token" || sub == "binding" {
            self.rr.verb == Verb::Create
        } else if sub == "exec" || sub == "attach" || sub == "portforward" {
            // GET for a WebSocket, POST for SPDY.
            matches!(self.rr.verb, Verb::Get | Verb::Create)
        } else if sub == "log" {
            self.rr.verb == Verb::Get
        } else {
            matches!(self.rr.verb, Verb::Get | Verb::Update | Verb::Patch)
        };
        if !ok {
            return Err(ApiError::no_such_resource());
        }
        if !verb_ok {
            return Err(ApiError::MethodNotAllowed {
                message: format!(
                    "the server does not allow this method on the requested resource ({}/{sub})",
                    self.rt.resource
                ),
            });
        }
        Ok(())
    }

    pub fn wants_table(&self) -> bool {
        self.accept.contains("as=Table")
    }

    fn get_entry(&self, name: &str) -> ApiResult<Entry> {
        self.server
            .store
            .get(&self.key(name))
            .ok_or_else(|| self.not_found(name))
    }
}

/// A streaming body for watch responses.
pub fn streaming(content_type: &str, body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
