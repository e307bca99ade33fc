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
    let user = identity.as_ref().map(|i| i.user.clone());
    let result = if bad_token {
        // A token that does not authenticate is refused, never treated as anonymous.
        Err(ApiError::Unauthorized {
            message: "Unauthorized: the bearer token is not valid".into(),
        })
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
    authorize(server, &identity, &rr)?;
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
        Verb::Get => ctx.get(),
        Verb::List => ctx.list(),
        Verb::Watch => return watch::serve(ctx),
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
        // RFC 7234 warn-code 299 with an agent of "-", as kube-apiserver writes them.
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
    Ok(resp)
}

/// RBAC for a resource request; 403 with kube-apiserver's message when denied.
fn authorize(server: &ApiServer, who: &Identity, rr: &ResourceRequest) -> ApiResult<()> {
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
    let attrs = Attributes {
        verb: verb.into(),
        group: rr.group.clone(),
        resource: rr.resource.clone(),
        subresource: rr.subresource.clone().unwrap_or_default(),
        namespace,
        name: rr.name.clone().unwrap_or_default(),
        path: String::new(),
    };
    if server.authorizer.allowed(who, &attrs) {
        return Ok(());
    }
    let what = crate::error::qualified(&rr.group, &attrs.resource_with_sub());
    let message = match &rr.name {
        Some(n) => format!("{what} \"{n}\" is forbidden: {}", attrs.denial(&who.user)),
        None => format!("{what} is forbidden: {}", attrs.denial(&who.user)),
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

/// The list position a `continue` token carries.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
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

    fn name(&self) -> &str {
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
            _ => false,
        };
        let verb_ok = if sub == "token" {
            self.rr.verb == Verb::Create
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

    fn get(&self) -> ApiResult<Response> {
        let entry = self.get_entry(self.name())?;
        if self.rr.subresource.as_deref() != Some("scale") && !self.wants_table() {
            return Ok(bytes_response(
                StatusCode::OK,
                object::stored_bytes(&self.rt, &entry)?,
            ));
        }
        let obj = decode_stored(&self.rt, &entry)?;
        if self.rr.subresource.as_deref() == Some("scale") {
            return Ok(json_response(StatusCode::OK, &self.scale_of(&obj)));
        }
        if self.wants_table() {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or_default();
            let t = crate::table::table(
                &self.rt.strategy.columns(),
                &[obj],
                self.query.get("includeObject").unwrap_or("Metadata"),
                json!({"resourceVersion": rv}),
            );
            return Ok(json_response(StatusCode::OK, &t));
        }
        Ok(json_response(StatusCode::OK, &obj))
    }

    /// Label and field selectors of the request, checked.
    pub fn selectors(&self) -> ApiResult<(LabelSelector, FieldSelector)> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
        let fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse fieldSelector: {e}")))?;
        let known = self.rt.strategy.fields();
        for r in &fields.0 {
            let ok = matches!(r.field.as_str(), "metadata.name" | "metadata.namespace")
                || known.contains(&r.field);
            if !ok {
                let mut all = vec![
                    "metadata.name".to_string(),
                    "metadata.namespace".to_string(),
                ];
                all.extend(known.iter().cloned());
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {} (\"{}\" is not a known field selector: only {})",
                    r.field,
                    r.field,
                    all.iter()
                        .map(|f| format!("\"{f}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok((labels, fields))
    }

    pub fn matches(&self, obj: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        labels.matches(&object::labels_of(obj))
            && fields.matches(|f| match f {
                "metadata.name" => meta_str(obj, "name").map(String::from),
                "metadata.namespace" => {
                    Some(meta_str(obj, "namespace").unwrap_or_default().to_string())
                }
                other => self.rt.strategy.field(obj, other),
            })
    }

    fn list(&self) -> ApiResult<Response> {
        let (labels, fields) = self.selectors()?;
        let limit = match self.query.int("limit")? {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => 0,
        };
        let rv = self.query.get("resourceVersion");
        let rv_match = self.query.get("resourceVersionMatch");
        let (mut at, mut start) = (None, None);
        if let Some(token) = self.query.get("continue") {
            if rv.is_some_and(|v| v != "0") {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let t = decode_continue(token)?;
            at = Some(t.rv);
            start = Some(t.start);
        } else {
            match (rv, rv_match) {
                (None, Some(_)) => {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                (Some(v), Some("Exact")) => {
                    if v == "0" {
                        return Err(ApiError::bad_request(
                            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                        ));
                    }
                    at = Some(object::parse_rv(v)?);
                }
                (Some(v), Some("NotOlderThan") | None) => {
                    let want = if v == "0" { 0 } else { object::parse_rv(v)? };
                    let head = self.server.store.revision();
                    if want > head {
                        return Err(ApiError::gone(format!(
                            "Too large resource version: {want}, current resource version: {head}"
                        )));
                    }
                }
                (_, Some(other)) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid resourceVersionMatch {other:?}: must be \"Exact\" or \"NotOlderThan\""
                    )));
                }
                (None, None) => {}
            }
        }
        let prefix = self.list_prefix();
        if labels.0.is_empty() && fields.0.is_empty() && !self.wants_table() {
            return self.list_unfiltered(&prefix, start, limit, at);
        }
        let mut items = Vec::new();
        let mut revision = at;
        let mut cursor = start.clone();
        let mut next_continue = None;
        loop {
            let page = self
                .server
                .store
                .list(&prefix, cursor.as_deref(), if limit > 0 { limit.max(64) } else { 0 }, revision)
                .map_err(|e| match e {
                    StoreError::Compacted { .. } if start.is_some() => ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results.",
                    ),
                    other => other.into(),
                })?;
            revision = Some(page.revision);
            let mut last_key = None;
            for (key, entry) in &page.items {
                last_key = Some(key.to_string());
                let obj = decode_stored(&self.rt, entry)?;
                if self.matches(&obj, &labels, &fields) {
                    items.push(obj);
                    if limit > 0 && items.len() == limit {
                        break;
                    }
                }
            }
            let page_done =
                !page.more && last_key.as_deref() == page.items.last().map(|(k, _)| &**k);
            if limit > 0 && items.len() == limit {
                // More may follow only if this page or the store has more keys after the last one.
                let more = !page_done || page.more;
                if more && let Some(k) = last_key {
                    next_continue = Some(encode_continue(&ContinueToken {
                        rv: page.revision,
                        start: k,
                    }));
                }
                break;
            }
            if !page.more {
                break;
            }
            cursor = last_key;
        }
        let mut meta = json!({"resourceVersion": revision.unwrap_or(0).to_string()});
        if let Some(c) = next_continue {
            meta["continue"] = json!(c);
        }
        if self.wants_table() {
            let t = crate::table::table(
                &self.rt.strategy.columns(),
                &items,
                self.query.get("includeObject").unwrap_or("Metadata"),
                meta,
            );
            return Ok(json_response(StatusCode::OK, &t));
        }
        let list = json!({
            "kind": format!("{}List", self.rt.kind),
            "apiVersion": self.rt.api_version(),
            "metadata": meta,
            "items": items,
        });
        Ok(json_response(StatusCode::OK, &list))
    }

    /// A list without selectors, as JSON assembled from the stored bytes (nothing decoded).
    fn list_unfiltered(
        &self,
        prefix: &str,
        start: Option<String>,
        limit: usize,
        at: Option<u64>,
    ) -> ApiResult<Response> {
        let page = self.server.store.list(prefix, start.as_deref(), limit, at).map_err(|e| match e {
            StoreError::Compacted { .. } if start.is_some() => ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results.",
            ),
            other => other.into(),
        })?;
        let mut meta = json!({"resourceVersion": page.revision.to_string()});
        if page.more
            && let Some((last, _)) = page.items.last()
        {
            meta["continue"] = json!(encode_continue(&ContinueToken {
                rv: page.revision,
                start: last.to_string()
            }));
        }
        let total: usize = page.items.iter().map(|(_, e)| e.value.len() + 32).sum();
        let mut out = Vec::with_capacity(total + 256);
        out.extend_from_slice(b"{\"kind\":");
        out.extend_from_slice(
            &serde_json::to_vec(&format!("{}List", self.rt.kind)).unwrap_or_default(),
        );
        out.extend_from_slice(b",\"apiVersion\":");
        out.extend_from_slice(&serde_json::to_vec(&self.rt.api_version()).unwrap_or_default());
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(&serde_json::to_vec(&meta).unwrap_or_default());
        out.extend_from_slice(b",\"items\":[");
        for (i, (_, entry)) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&object::stored_bytes(&self.rt, entry)?);
        }
        out.extend_from_slice(b"]}");
        Ok(bytes_response(StatusCode::OK, out))
    }

    fn decode_object(&self, content_type: &str, body: &[u8]) -> ApiResult<Value> {
        let mime = content_type.split(';').next().unwrap_or_default().trim();
        if body.is_empty() {
            return Err(ApiError::bad_request(
                "the request body is empty; an object is required",
            ));
        }
        match mime {
            "" | "application/json" | "application/yaml" | "application/x-yaml" | "text/yaml"
            | "*/*" => object::decode_body(body, content_type),
            crate::protobuf::CONTENT_TYPE => crate::protobuf::decode(body).map_err(|e| {
                ApiError::bad_request(format!("the protobuf body could not be decoded: {e}"))
            }),
            _ => Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {mime:?})"
                ),
            }),
        }
    }

    /// Type-check, canonicalize and validate an object about to be written.
    fn admit(&self, mut obj: Value, old: Option<&Value>) -> ApiResult<Value> {
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), Value::String(self.rt.api_version()));
            m.insert("kind".into(), Value::String(self.rt.kind.clone()));
        }
        crate::services::apply_defaults(&self.rt, &mut obj);
        let input = obj;
        let mut obj = match self.rt.strategy.normalize(&input) {
            Ok(o) => o,
            Err(NormalizeError::Decode(msg)) => {
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {msg}",
                    self.rt.kind, self.rt.version, self.rt.kind
                )));
            }
            Err(NormalizeError::Invalid(causes)) => {
                return Err(ApiError::invalid(
                    &self.rt.group,
                    &self.rt.kind,
                    &name,
                    causes,
                ));
            }
        };
        let unknown = unknown_fields(&input, &obj);
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            match self.query.get("fieldValidation").unwrap_or("Warn") {
                "Strict" => {
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        self.rt.kind,
                        self.rt.version,
                        self.rt.kind,
                        list.join(", ")
                    )));
                }
                "Ignore" => {}
                _ => self.warn(list),
            }
        }
        let mut causes = Vec::new();
        validation::object_meta(
            obj.get("metadata").unwrap_or(&Value::Null),
            self.rt.name_rule,
            self.rt.namespaced,
            &mut causes,
        );
        self.rt.strategy.validate(&obj, old, &mut causes);
        if let Some(old) = old {
            for f in ["uid", "creationTimestamp"] {
                if old.pointer(&format!("/metadata/{f}")) != obj.pointer(&format!("/metadata/{f}"))
                {
                    causes.push(Cause::invalid(
                        format!("metadata.{f}"),
                        meta_str(&obj, f).unwrap_or_default(),
                        "field is immutable",
                    ));
                }
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(
                &self.rt.group,
                &self.rt.kind,
                &name,
                causes,
            ));
        }
        self.check_escalation(&obj, &name)?;
        // Storage version: objects of every served version are stored as one.
        if let Some(m) = obj.as_object_mut() {
            let stored = if self.rt.group.is_empty() {
                self.rt.storage_version.clone()
            } else {
                format!("{}/{}", self.rt.group, self.rt.storage_version)
            };
            m.insert("apiVersion".into(), Value::String(stored));
        }
        Ok(obj)
    }

    /// `serviceaccounts/token`: a signed token for the service account (`kubectl create token`).
    fn token_request(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
        let Some(signer) = self.server.config.token_signer.clone() else {
            return Err(ApiError::bad_request(
                "this server has no service-account signing key; tokens cannot be issued",
            ));
        };
        let name = self.name().to_string();
        let entry = self.get_entry(&name)?;
        let sa = decode_stored(&self.rt, &entry)?;
        let mut request = if body.is_empty() {
            json!({})
        } else {
            self.decode_object(content_type, body)?
        };
        let spec = request.get("spec").cloned().unwrap_or(json!({}));
        let mut audiences: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if audiences.is_empty() {
            audiences.push(crate::authn::API_AUDIENCE.to_string());
        }
        // kube-apiserver's bounds: at least 10 minutes, at most a day here.
        let lifetime = spec
            .get("expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(3600);
        if lifetime < 600 {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                &name,
                vec![Cause::invalid(
                    "spec.expirationSeconds",
                    &lifetime.to_string(),
                    "may not specify a duration less than 10 minutes",
                )],
            ));
        }
        let lifetime = lifetime.min(86_400);
        let (token, exp) = signer
            .issue(
                self.rr.namespace.as_deref().unwrap_or_default(),
                &name,
                meta_str(&sa, "uid").unwrap_or_default(),
                &audiences,
                lifetime,
            )
            .map_err(ApiError::Internal)?;
        let expiration = jiff::Timestamp::from_second(exp)
            .map(|t| t.to_string())
            .unwrap_or_default();
        request["apiVersion"] = json!("authentication.k8s.io/v1");
        request["kind"] = json!("TokenRequest");
        request["spec"] = json!({"audiences": audiences, "expirationSeconds": lifetime, "boundObjectRef": spec.get("boundObjectRef")});
        request["status"] = json!({"token": token, "expirationTimestamp": expiration});
        Ok(json_response(StatusCode::CREATED, &request))
    }

    /// RBAC escalation prevention: nobody grants, through a role or a binding, permissions they
    /// do not hold, unless they may `escalate` (roles) or `bind` (bindings) that role.
    fn check_escalation(&self, obj: &Value, name: &str) -> ApiResult<()> {
        use crate::authz::{Authorizer, RBAC_GROUP, Rule, covers_all};
        if self.rt.group != RBAC_GROUP || Authorizer::is_superuser(&self.identity) {
            return Ok(());
        }
        let authz = &self.server.authorizer;
        let ns = self.rr.namespace.clone().unwrap_or_default();
        let may = |verb: &str, resource: &str, target: &str| {
            authz.allowed(
                &self.identity,
                &Attributes {
                    verb: verb.into(),
                    group: RBAC_GROUP.into(),
                    resource: resource.into(),
                    namespace: ns.clone(),
                    name: target.into(),
                    ..Default::default()
                },
            )
        };
        let (wanted, exempt): (Vec<Rule>, bool) = match self.rt.resource.as_str() {
            "roles" | "clusterroles" => (
                serde_json::from_value(obj.get("rules").cloned().unwrap_or(json!([])))
                    .unwrap_or_default(),
                may("escalate", &self.rt.resource, name),
            ),
            "rolebindings" | "clusterrolebindings" => {
                let kind = obj
                    .pointer("/roleRef/kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let role = obj
                    .pointer("/roleRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let resource = if kind == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                };
                (
                    authz.role_rules(kind, role, &ns).unwrap_or_default(),
                    may("bind", resource, role),
                )
            }
            _ => return Ok(()),
        };
        if exempt || covers_all(&authz.rules(&self.identity, &ns), &wanted) {
            return Ok(());
        }
        Err(ApiError::forbidden(
            &self.rt.group,
            &self.rt.resource,
            name,
            &format!(
                "user \"{}\" (groups={:?}) is attempting to grant RBAC permissions not currently held",
                self.identity.user, self.identity.groups
            ),
        ))
    }

    /// For namespaced creates: the namespace must exist and not be terminating.
    fn check_namespace_open(&self, ns: &str) -> ApiResult<()> {
        let snapshot = self.server.registry.snapshot();
        let Some(ns_rt) = snapshot.get("", "v1", "namespaces") else {
            return Ok(());
        };
        match self.server.store.get(&ns_rt.key(None, ns)) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(e) => {
                let obj = decode_stored(ns_rt, &e)?;
                if obj.pointer("/metadata/deletionTimestamp").is_some() {
                    Err(ApiError::forbidden(
                        &self.rt.group,
                        &self.rt.resource,
                        meta_str(&obj, "name").unwrap_or_default(),
                        &format!(
                            "unable to create new content in namespace {ns} because it is being terminated"
                        ),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn create(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
        let mut obj = self.decode_object(content_type, body)?;
        object::check_type_meta(&obj, &self.rt)?;
        Ok(self
            .create_object(&mut obj)
            .await?
            .response(StatusCode::CREATED))
    }

    /// Create an object from a decoded body (shared by POST and server-side apply).
    pub async fn create_object(&self, obj: &mut Value) -> ApiResult<Written> {
        let dry_run = self.query.dry_run()?;
        let path_ns = self.rr.namespace.clone();
        {
            let meta = meta_mut(obj);
            if self.rt.namespaced {
                match (meta.get("namespace").and_then(Value::as_str), &path_ns) {
                    (Some(body_ns), Some(path_ns)) if !body_ns.is_empty() && body_ns != path_ns => {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ));
                    }
                    (_, Some(path_ns)) => {
                        meta.insert("namespace".into(), json!(path_ns));
                    }
                    (_, None) => {
                        return Err(ApiError::bad_request(
                            "a namespaced resource must be created in a namespace: POST to .../namespaces/NAME/RESOURCE",
                        ));
                    }
                }
            } else {
                meta.remove("namespace");
            }
            let name = meta
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if name.is_empty()
                && let Some(prefix) = meta
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
            {
                let prefix: String = prefix.chars().take(58).collect();
                meta.insert(
                    "name".into(),
                    json!(format!("{prefix}{}", object::name_suffix())),
                );
            }
            if let (Some(url_name), Some(body_name)) =
                (&self.rr.name, meta.get("name").and_then(Value::as_str))
                && url_name != body_name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
                )));
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(object::now()));
            meta.insert("generation".into(), json!(1));
            for f in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                meta.remove(f);
            }
        }
        if self.rt.status_subresource && self.rt.crd.is_some() {
            // With a status subresource, status is written only through it.
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        crate::services::prepare_create(&self.rt, obj);
        if self.is_csr() && obj.get("spec").is_some_and(Value::is_object) {
            // Who asked is the server's record, not the client's claim.
            obj["spec"]["username"] = json!(self.identity.user);
            obj["spec"]["groups"] = json!(self.identity.groups);
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        let name = meta_str(obj, "name").unwrap_or_default().to_string();
        if name.is_empty() {
            let causes = vec![Cause::required("metadata.name")];
            return Err(ApiError::invalid(&self.rt.group, &self.rt.kind, "", causes));
        }
        if let Some(ns) = &path_ns {
            self.check_namespace_open(ns)?;
        }
        if !self.apply {
            crate::managed::track_update(
                None,
                obj,
                &self.manager,
                &self.rt.api_version(),
                "",
                crate::managed::shape_of(&self.rt),
            );
        }
        let mutated = self.admission("CREATE", Some(obj), None, true).await?;
        let mut obj = self.admit(mutated.unwrap_or_else(|| std::mem::take(obj)), None)?;
        self.admission("CREATE", Some(&obj), None, false).await?;
        let ip = crate::services::allocate(&self.server, &self.rt, &mut obj, dry_run)?;
        if dry_run {
            if let Some(ip) = ip {
                self.server.cluster_ips.release(&ip);
            }
            return Ok(Written {
                object: self.output(obj),
                bytes: None,
            });
        }
        let key = self.key(&name);
        match self
            .server
            .store
            .create(&key, encode_for_store(&mut obj))
            .await
        {
            Ok(event) => {
                meta_mut(&mut obj)
                    .insert("resourceVersion".into(), json!(event.revision.to_string()));
                let bytes = (self.rt.version == self.rt.storage_version)
                    .then(|| object::with_resource_version(&event.value, event.revision))
                    .flatten();
                Ok(Written {
                    object: self.output(obj),
                    bytes,
                })
            }
            Err(e) => {
                if let Some(ip) = ip {
                    self.server.cluster_ips.release(&ip);
                }
                Err(match e {
                    StoreError::AlreadyExists(_) => {
                        ApiError::already_exists(&self.rt.group, &self.rt.resource, &name)
                    }
                    other => other.into(),
                })
            }
        }
    }

    /// Run the admission webhooks for this request (see `admission.rs`).
    async fn admission(
        &self,
        operation: &'static str,
        object: Option<&Value>,
        old: Option<&Value>,
        mutating: bool,
    ) -> ApiResult<Option<Value>> {
        let name = object
            .or(old)
            .and_then(|o| meta_str(o, "name"))
            .unwrap_or_else(|| self.name())
            .to_string();
        let req = crate::admission::Request {
            rt: &self.rt,
            operation,
            namespace: self.rr.namespace.as_deref(),
            name: &name,
            subresource: self.rr.subresource.as_deref(),
            object,
            old,
            identity: &self.identity,
            dry_run: self.query.dry_run().unwrap_or(false),
        };
        crate::admission::run(&self.server, &req, mutating).await
    }

    /// The object as the client asked for it: in the requested version.
    fn output(&self, mut obj: Value) -> Value {
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), Value::String(self.rt.api_version()));
        }
        obj
    }

    async fn update(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
        let obj = self.decode_object(content_type, body)?;
        if self.rr.subresource.as_deref() == Some("scale") {
            let replicas = obj.pointer("/spec/replicas").cloned();
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
            return self.write_scale(replicas, rv).await;
        }
        object::check_type_meta(&obj, &self.rt)?;
        let name = self.name().to_string();
        if let Some(body_name) = meta_str(&obj, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if self.rt.namespaced
            && let (Some(body_ns), Some(path_ns)) =
                (meta_str(&obj, "namespace"), &self.rr.namespace)
            && !body_ns.is_empty()
            && body_ns != path_ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let precondition = match meta_str(&obj, "resourceVersion") {
            Some(rv) if !rv.is_empty() => Some(object::parse_rv(rv)?),
            _ => None,
        };
        if self.server.store.get(&self.key(&name)).is_none() {
            return Err(self.not_found(&name));
        }
        let updated = self
            .guaranteed_update(&name, precondition, |_current| Ok(obj.clone()))
            .await?;
        Ok(json_response(StatusCode::OK, &updated))
    }

    async fn patch(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let kind = patch::PatchKind::from_mime(&mime, self.rt.crd.is_some())?;
        if body.is_empty() {
            return Err(ApiError::bad_request("the patch body is empty"));
        }
        if kind == patch::PatchKind::Apply {
            return patch::server_side_apply(self, body).await;
        }
        let patch_doc = object::decode_body(body, "application/json")?;
        if self.rr.subresource.as_deref() == Some("scale") {
            let entry = self.get_entry(self.name())?;
            let scale = self.scale_of(&decode_stored(&self.rt, &entry)?);
            let patched = patch::apply(kind, &scale, &patch_doc)?;
            let rv = patched
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
            let resp = self
                .write_scale(patched.pointer("/spec/replicas").cloned(), rv)
                .await?;
            return Ok(resp);
        }
        let name = self.name().to_string();
        let updated = self
            .guaranteed_update(&name, None, |current| {
                let patched = patch::apply(kind, current, &patch_doc)?;
                // A resourceVersion in the patch is a precondition.
                let want = patched.pointer("/metadata/resourceVersion").and_then(Value::as_str);
                let have = current.pointer("/metadata/resourceVersion").and_then(Value::as_str);
                if let (Some(w), Some(h)) = (want, have)
                    && w != h
                {
                    return Err(ApiError::conflict(&self.rt.group, &self.rt.resource, &name, "the object has been modified; please apply your changes to the latest version and try again"));
                }
                Ok(patched)
            })
            .await?;
        Ok(json_response(StatusCode::OK, &updated))
    }

    /// Read-modify-write with compare-and-swap, retried on conflicts the client did not ask to
    /// see (no `resourceVersion` precondition), as kube-apiserver's `GuaranteedUpdate`.
    pub async fn guaranteed_update(
        &self,
        name: &str,
        precondition: Option<u64>,
        mut change: impl FnMut(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        let dry_run = self.query.dry_run()?;
        let key = self.key(name);
        for _attempt in 0..16 {
            let entry = self
                .server
                .store
                .get(&key)
                .ok_or_else(|| self.not_found(name))?;
            if let Some(p) = precondition
                && p != entry.mod_revision
            {
                return Err(ApiError::conflict(
                    &self.rt.group,
                    &self.rt.resource,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            let current = decode_stored(&self.rt, &entry)?;
            let requested = change(&current)?;
            let mut new = self.merge_update(&current, requested)?;
            crate::services::prepare_update(&self.rt, &current, &mut new);
            if !self.apply {
                let sub = self.rr.subresource.clone().unwrap_or_default();
                crate::managed::track_update(
                    Some(&current),
                    &mut new,
                    &self.manager,
                    &self.rt.api_version(),
                    &sub,
                    crate::managed::shape_of(&self.rt),
                );
            }
            let new = match self
                .admission("UPDATE", Some(&new), Some(&current), true)
                .await?
            {
                Some(mutated) => mutated,
                None => new,
            };
            let mut new = self.admit(new, Some(&current))?;
            self.admission("UPDATE", Some(&new), Some(&current), false)
                .await?;
            meta_mut(&mut new).insert(
                "resourceVersion".into(),
                json!(entry.mod_revision.to_string()),
            );
            // Storage form comparison: a no-op write is not written and keeps its revision.
            let mut cur_cmp = current.clone();
            if let Some(m) = cur_cmp.as_object_mut() {
                m.insert(
                    "apiVersion".into(),
                    new.get("apiVersion").cloned().unwrap_or_default(),
                );
            }
            if new == cur_cmp {
                return Ok(self.output(current));
            }
            let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
                && object::finalizers_of(&new).is_empty()
                && new
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(|a| a.is_empty() || !self.is_namespaces());
            if dry_run {
                return Ok(self.output(new));
            }
            if finalized {
                match self
                    .server
                    .store
                    .delete(&key, Precondition::ModRevision(entry.mod_revision))
                    .await
                {
                    Ok(_) => {
                        crate::services::release(&self.server, &self.rt, &new);
                        return Ok(self.output(new));
                    }
                    Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                    Err(StoreError::Conflict { .. }) => {
                        return Err(ApiError::conflict(
                            &self.rt.group,
                            &self.rt.resource,
                            name,
                            "the object has been modified; please apply your changes to the latest version and try again",
                        ));
                    }
                    Err(StoreError::NotFound(_)) => return Err(self.not_found(name)),
                    Err(e) => return Err(e.into()),
                }
            }
            match self
                .server
                .store
                .update(
                    &key,
                    encode_for_store(&mut new),
                    Precondition::ModRevision(entry.mod_revision),
                )
                .await
            {
                Ok(event) => {
                    meta_mut(&mut new)
                        .insert("resourceVersion".into(), json!(event.revision.to_string()));
                    return Ok(self.output(new));
                }
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(StoreError::Conflict { .. }) => {
                    return Err(ApiError::conflict(
                        &self.rt.group,
                        &self.rt.resource,
                        name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                Err(StoreError::NotFound(_)) => return Err(self.not_found(name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(
            &self.rt.group,
            &self.rt.resource,
            name,
            "too many concurrent writers; try again",
        ))
    }

    /// Combine the stored object with what the client sent, per the subresource written.
    fn merge_update(&self, current: &Value, mut requested: Value) -> ApiResult<Value> {
        if !requested.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        if self.rr.subresource.as_deref() == Some("approval") {
            return self.merge_approval(current, &requested);
        }
        let is_status = self.rr.subresource.as_deref() == Some("status");
        let is_finalize = self.rr.subresource.as_deref() == Some("finalize");
        let mut new = if is_status {
            // Status writes change status only.
            let mut n = current.clone();
            n["status"] = requested.get("status").cloned().unwrap_or(Value::Null);
            if n["status"].is_null()
                && let Some(m) = n.as_object_mut()
            {
                m.remove("status");
            }
            n
        } else if is_finalize {
            let mut n = current.clone();
            n["spec"]["finalizers"] = requested
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            n
        } else {
            if self.rt.status_subresource {
                match current.get("status") {
                    Some(s) => requested["status"] = s.clone(),
                    None => {
                        if let Some(m) = requested.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            requested
        };
        // Fields the server owns keep their stored values.
        let cur_meta = current.get("metadata").cloned().unwrap_or_default();
        let meta = meta_mut(&mut new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match cur_meta.get(f) {
                Some(v) => {
                    meta.insert(f.into(), v.clone());
                }
                None => {
                    meta.remove(f);
                }
            }
        }
        meta.remove("resourceVersion");
        meta.remove("selfLink");
        // Field ownership is the server's record: clients send it back unchanged or not at all.
        if !self.apply {
            match cur_meta.get("managedFields") {
                Some(v) => {
                    meta.insert("managedFields".into(), v.clone());
                }
                None => {
                    meta.remove("managedFields");
                }
            }
        }
        if cur_meta.get("deletionTimestamp").is_some() {
            // Once deleting, finalizers may only be removed.
            let had = object::finalizers_of(current);
            let now = object::finalizers_of(&new);
            if now.iter().any(|f| !had.contains(f)) {
                return Err(ApiError::invalid(
                    &self.rt.group,
                    &self.rt.kind,
                    self.name(),
                    vec![Cause::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        if object::spec_changed(current, &new) {
            let gen_now = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(gen_now + 1));
        }
        Ok(new)
    }

    /// `certificatesigningrequests/approval`: only the Approved/Denied conditions change, and
    /// only for someone who may `approve` for the CSR's signer.
    fn merge_approval(&self, current: &Value, requested: &Value) -> ApiResult<Value> {
        let signer = current
            .pointer("/spec/signerName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let may = |name: &str| {
            self.server.authorizer.allowed(
                &self.identity,
                &Attributes {
                    verb: "approve".into(),
                    group: "certificates.k8s.io".into(),
                    resource: "signers".into(),
                    name: name.into(),
                    ..Default::default()
                },
            )
        };
        let domain_wildcard = format!("{}/*", signer.split('/').next().unwrap_or_default());
        if !may(signer) && !may(&domain_wildcard) {
            return Err(ApiError::forbidden(
                "certificates.k8s.io",
                "signers",
                signer,
                &format!(
                    "user \"{}\" is not permitted to approve requests with signerName \"{signer}\"",
                    self.identity.user
                ),
            ));
        }
        let mut n = current.clone();
        let conditions = requested
            .pointer("/status/conditions")
            .cloned()
            .unwrap_or(json!([]));
        if !n.get("status").is_some_and(Value::is_object) {
            n["status"] = json!({});
        }
        n["status"]["conditions"] = conditions;
        Ok(n)
    }

    fn scale_of(&self, obj: &Value) -> Value {
        let paths = self.rt.scale.as_ref();
        let spec = paths
            .and_then(|p| obj.pointer(&p.spec_replicas))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let status = paths
            .and_then(|p| obj.pointer(&p.status_replicas))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let selector = paths
            .and_then(|p| p.label_selector.as_ref())
            .and_then(|p| obj.pointer(p))
            .map(|s| match s {
                Value::String(s) => s.clone(),
                other => selector_string(other),
            })
            .unwrap_or_default();
        let meta = obj.get("metadata").cloned().unwrap_or_default();
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
            },
            "spec": {"replicas": spec},
            "status": {"replicas": status, "selector": selector},
        })
    }

    async fn write_scale(
        &self,
        replicas: Option<Value>,
        rv: Option<String>,
    ) -> ApiResult<Response> {
        let Some(paths) = self.rt.scale.clone() else {
            return Err(ApiError::no_such_resource());
        };
        let replicas = match replicas.as_ref().and_then(Value::as_i64) {
            Some(r) if r >= 0 => r,
            _ => {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    self.name(),
                    vec![Cause::invalid(
                        "spec.replicas",
                        &replicas.map(|r| r.to_string()).unwrap_or_default(),
                        "must be greater than or equal to 0",
                    )],
                ));
            }
        };
        let precondition = match rv {
            Some(rv) if !rv.is_empty() => Some(object::parse_rv(&rv)?),
            _ => None,
        };
        let name = self.name().to_string();
        // Scale writes the main resource, so status is preserved by `merge_update`.
        let ctx = Ctx {
            rr: ResourceRequest {
                subresource: None,
                ..self.rr.clone()
            },
            ..self.clone_ctx()
        };
        let updated = ctx
            .guaranteed_update(&name, precondition, |current| {
                let mut n = current.clone();
                set_pointer(&mut n, &paths.spec_replicas, json!(replicas));
                Ok(n)
            })
            .await?;
        Ok(json_response(StatusCode::OK, &self.scale_of(&updated)))
    }

    async fn delete(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
        let opts = delete_options(content_type, body, &self.query)?;
        let name = self.name().to_string();
        let (obj, gone) = self.delete_object(&name, &opts).await?;
        Ok(json_response(
            if gone {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            },
            &obj,
        ))
    }

    /// Delete one object: at once, or by marking it when finalizers (or the propagation policy)
    /// must run first. Returns the object and whether it is gone.
    pub async fn delete_object(
        &self,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<(Value, bool)> {
        let dry_run = self.query.dry_run()? || opts.dry_run;
        let key = self.key(name);
        for _ in 0..16 {
            let entry = self
                .server
                .store
                .get(&key)
                .ok_or_else(|| self.not_found(name))?;
            let current = decode_stored(&self.rt, &entry)?;
            if let Some(uid) = &opts.uid
                && meta_str(&current, "uid") != Some(uid)
            {
                return Err(ApiError::conflict(
                    &self.rt.group,
                    &self.rt.resource,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&current, "uid").unwrap_or_default()
                    ),
                ));
            }
            if let Some(rv) = &opts.resource_version
                && *rv != entry.mod_revision.to_string()
            {
                return Err(ApiError::conflict(
                    &self.rt.group,
                    &self.rt.resource,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        entry.mod_revision
                    ),
                ));
            }
            let mut finalizers = object::finalizers_of(&current);
            match opts.propagation.as_deref() {
                Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                    finalizers.push("foregroundDeletion".into())
                }
                Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                    finalizers.push("orphan".into())
                }
                _ => {}
            }
            self.admission("DELETE", None, Some(&current), false)
                .await?;
            let is_namespace = self.rt.group.is_empty() && self.rt.resource == "namespaces";
            let ns_finalizers = is_namespace
                && current
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
            if finalizers.is_empty() && !ns_finalizers {
                if dry_run {
                    return Ok((self.output(current), true));
                }
                match self
                    .server
                    .store
                    .delete(&key, Precondition::ModRevision(entry.mod_revision))
                    .await
                {
                    Ok(_) => {
                        crate::services::release(&self.server, &self.rt, &current);
                        return Ok((self.output(current), true));
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound(_)) => return Err(self.not_found(name)),
                    Err(e) => return Err(e.into()),
                }
            }
            // Graceful: mark for deletion and let finalizers (and controllers) finish it.
            let mut marked = current.clone();
            let already = current.pointer("/metadata/deletionTimestamp").is_some();
            {
                let meta = meta_mut(&mut marked);
                if !already {
                    meta.insert("deletionTimestamp".into(), json!(object::now()));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                meta.insert("finalizers".into(), json!(finalizers));
                meta.remove("resourceVersion");
            }
            if is_namespace {
                marked["status"] = json!({"phase": "Terminating"});
            }
            if marked == {
                let mut c = current.clone();
                meta_mut(&mut c).remove("resourceVersion");
                c
            } {
                return Ok((self.output(current), false));
            }
            if dry_run {
                return Ok((self.output(marked), false));
            }
            match self
                .server
                .store
                .update(
                    &key,
                    encode_for_store(&mut marked),
                    Precondition::ModRevision(entry.mod_revision),
                )
                .await
            {
                Ok(event) => {
                    meta_mut(&mut marked)
                        .insert("resourceVersion".into(), json!(event.revision.to_string()));
                    return Ok((self.output(marked), false));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => return Err(self.not_found(name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(
            &self.rt.group,
            &self.rt.resource,
            name,
            "too many concurrent writers; try again",
        ))
    }

    async fn delete_collection(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
        let opts = delete_options(content_type, body, &self.query)?;
        let (labels, fields) = self.selectors()?;
        let page = self.server.store.list(&self.list_prefix(), None, 0, None)?;
        let mut deleted = Vec::new();
        for (_, entry) in &page.items {
            let obj = decode_stored(&self.rt, entry)?;
            if !self.matches(&obj, &labels, &fields) {
                continue;
            }
            let name = meta_str(&obj, "name").unwrap_or_default().to_string();
            let ctx = Ctx {
                rr: ResourceRequest {
                    namespace: meta_str(&obj, "namespace").map(String::from),
                    name: Some(name.clone()),
                    ..self.rr.clone()
                },
                ..self.clone_ctx()
            };
            match ctx.delete_object(&name, &opts).await {
                Ok((o, _)) => deleted.push(o),
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let list = json!({
            "kind": format!("{}List", self.rt.kind),
            "apiVersion": self.rt.api_version(),
            "metadata": {"resourceVersion": self.server.store.revision().to_string()},
            "items": deleted,
        });
        Ok(json_response(StatusCode::OK, &list))
    }
}

/// Fields of `input` (with non-null values) that canonicalization dropped: unknown fields.
fn unknown_fields(input: &Value, output: &Value) -> Vec<String> {
    fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(am), Value::Object(bm)) => {
                for (k, av) in am {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match bm.get(k) {
                        None if !av.is_null() => out.push(p),
                        Some(bv) => walk(av, bv, &p, out),
                        None => {}
                    }
                }
            }
            (Value::Array(aa), Value::Array(ba)) if aa.len() == ba.len() => {
                for (i, (av, bv)) in aa.iter().zip(ba).enumerate() {
                    walk(av, bv, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(input, output, "", &mut out);
    out
}

/// The parts of `metav1.DeleteOptions` the server honours.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

fn delete_options(content_type: &str, body: &[u8], query: &Query) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions::default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let decoded = if content_type.starts_with(crate::protobuf::CONTENT_TYPE) {
            crate::protobuf::decode(body)
        } else {
            serde_json::from_slice(body).map_err(|e| e.to_string())
        };
        let v: Value = decoded.map_err(|e| {
            ApiError::bad_request(format!("DeleteOptions could not be decoded: {e}"))
        })?;
        opts.propagation = v
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(String::from);
        if opts.propagation.is_none()
            && v.get("orphanDependents").and_then(Value::as_bool) == Some(true)
        {
            opts.propagation = Some("Orphan".into());
        }
        opts.uid = v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from);
        opts.resource_version = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from);
        opts.dry_run = v
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    }
    if let Some(p) = query.get("propagationPolicy") {
        opts.propagation = Some(p.to_string());
    }
    if let Some(p) = &opts.propagation
        && !["Foreground", "Background", "Orphan"].contains(&p.as_str())
    {
        return Err(ApiError::invalid(
            "",
            "DeleteOptions",
            "",
            vec![Cause::not_supported(
                "propagationPolicy",
                p,
                &["Foreground", "Background", "Orphan"],
            )],
        ));
    }
    Ok(opts)
}

fn encode_continue(t: &ContinueToken) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(t).unwrap_or_default())
}

fn decode_continue(s: &str) -> ApiResult<ContinueToken> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            ApiError::bad_request("continue key is not valid: it was not produced by this server")
        })
}

/// Set a JSON-pointer path, creating objects on the way.
pub fn set_pointer(v: &mut Value, pointer: &str, new: Value) {
    let mut cur = v;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let map = match cur.as_object_mut() {
            Some(m) => m,
            None => return,
        };
        if i + 1 == parts.len() {
            map.insert((*p).to_string(), new);
            return;
        }
        cur = map.entry((*p).to_string()).or_insert_with(|| json!({}));
    }
}

/// `metav1.LabelSelector` as a selector string (`a=b,c in (d)`).
fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
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
