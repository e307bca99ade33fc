//! Writes: create, update and patch through one read-modify-write path, with admission,
//! defaulting, validation, escalation checks and field ownership.

use super::*;

impl Ctx {
    pub(crate) fn decode_object(&self, content_type: &str, body: &[u8]) -> ApiResult<Value> {
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
    pub(crate) fn admit(&self, mut obj: Value, old: Option<&Value>) -> ApiResult<Value> {
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if old.is_none()
            && let Some(node) = crate::noderestriction::node_of(&self.identity)
            && let Some(why) =
                crate::noderestriction::check_create(node, &self.rt.group, &self.rt.resource, &obj)
        {
            return Err(ApiError::Forbidden {
                subject: Box::new(crate::error::Subject {
                    group: self.rt.group.clone(),
                    kind: self.rt.resource.clone(),
                    name: name.clone(),
                }),
                message: format!(
                    "{} \"{name}\" is forbidden: {why}",
                    crate::error::qualified(&self.rt.group, &self.rt.resource)
                ),
            });
        }
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

    /// RBAC escalation prevention: nobody grants, through a role or a binding, permissions they
    /// do not hold, unless they may `escalate` (roles) or `bind` (bindings) that role.
    pub(crate) fn check_escalation(&self, obj: &Value, name: &str) -> ApiResult<()> {
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
    pub(crate) fn check_namespace_open(&self, ns: &str) -> ApiResult<()> {
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

    pub(crate) async fn create(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
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
        self.limit_defaults(obj);
        let mutated = self.admission("CREATE", Some(obj), None, true).await?;
        let mut obj = self.admit(mutated.unwrap_or_else(|| std::mem::take(obj)), None)?;
        self.admission("CREATE", Some(&obj), None, false).await?;
        self.admit_create(&obj, dry_run).await?;
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
        self.make_way_for_service(&key).await;
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

    /// Whether the object this request names is a Service that Atoll derived from a
    /// multi-cluster service (label `networking.atoll.io/derived-from`).
    fn names_derived_service(&self) -> bool {
        self.rt.group.is_empty()
            && self.rt.resource == "services"
            && self.rr.subresource.is_none()
            && self
                .server
                .store
                .get(&self.key(self.name()))
                .and_then(|e| serde_json::from_slice::<Value>(&e.value).ok())
                .is_some_and(|o| o.pointer(DERIVED_LABEL_POINTER).is_some())
    }

    /// A Service created where a multi-cluster service's derived Service holds the name takes
    /// the name: the derived one (label `networking.atoll.io/derived-from`, made by Atoll's
    /// agent, which then names it `<name>-clusterset`) is removed first, so a cluster that
    /// starts serving an imported service is not refused its own Service.
    async fn make_way_for_service(&self, key: &str) {
        if !(self.rt.group.is_empty() && self.rt.resource == "services") {
            return;
        }
        let Some(entry) = self.server.store.get(key) else {
            return;
        };
        let Ok(existing) = serde_json::from_slice::<Value>(&entry.value) else {
            return;
        };
        if existing.pointer(DERIVED_LABEL_POINTER).is_none() {
            return;
        }
        if self
            .server
            .store
            .delete(key, Precondition::ModRevision(entry.mod_revision))
            .await
            .is_ok()
        {
            crate::services::release(&self.server, &self.rt, &existing);
        }
    }

    /// Run the admission webhooks for this request (see `admission.rs`).
    pub(crate) async fn admission(
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
    pub(crate) fn output(&self, mut obj: Value) -> Value {
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), Value::String(self.rt.api_version()));
        }
        obj
    }

    pub(crate) async fn update(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
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

    pub(crate) async fn patch(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
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
        // A user's `kubectl apply` of a Service whose name a derived one holds: the user's
        // Service takes the name, as a create would (the derived one steps aside).
        if kind == patch::PatchKind::Apply {
            if self.names_derived_service()
                && object::decode_body(body, "application/apply-patch+yaml")
                    .is_ok_and(|c| c.pointer(DERIVED_LABEL_POINTER).is_none())
            {
                self.make_way_for_service(&self.key(self.name())).await;
            }
            return patch::server_side_apply(self, body).await;
        }
        if kind == patch::PatchKind::Strategic
            && self.names_derived_service()
            && let Some(mut manifest) = kubectl_applied(body)
        {
            object::check_type_meta(&manifest, &self.rt)?;
            let name = self.name().to_string();
            if let Some(n) = meta_str(&manifest, "name")
                && n != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            meta_mut(&mut manifest).insert("name".into(), json!(name));
            let written = self.create_object(&mut manifest).await?;
            return Ok(written.response(StatusCode::OK));
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
                let want = patched
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str);
                let have = current
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str);
                if let (Some(w), Some(h)) = (want, have)
                    && w != h
                {
                    return Err(self.modified(&name));
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
                return Err(self.modified(name));
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
            // A pod still within its grace period is gone only when its node agent deletes it.
            let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
                && object::finalizers_of(&new).is_empty()
                && new
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .is_none_or(|g| g == 0 || !self.is_pods())
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
                    Err(e) => match self.cas_failure(e, name, precondition.is_none()) {
                        None => continue,
                        Some(err) => return Err(err),
                    },
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
                Err(e) => match self.cas_failure(e, name, precondition.is_none()) {
                    None => continue,
                    Some(err) => return Err(err),
                },
            }
        }
        Err(self.too_contended(name))
    }

    /// Combine the stored object with what the client sent, per the subresource written.
    pub(crate) fn merge_update(&self, current: &Value, mut requested: Value) -> ApiResult<Value> {
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
    pub(crate) fn merge_approval(&self, current: &Value, requested: &Value) -> ApiResult<Value> {
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
}

/// Fields of `input` (with non-null values) that canonicalization dropped: unknown fields.
pub(crate) fn unknown_fields(input: &Value, output: &Value) -> Vec<String> {
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

/// Where a derived Service (one Atoll made for a multi-cluster service) has its label.
const DERIVED_LABEL_POINTER: &str = "/metadata/labels/networking.atoll.io~1derived-from";

/// The manifest of a client-side `kubectl apply`, from the last-applied configuration its
/// strategic merge patch carries (with that annotation, as kubectl keeps it).
fn kubectl_applied(body: &[u8]) -> Option<Value> {
    const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
    let patch: Value = serde_json::from_slice(body).ok()?;
    let text = patch
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    let mut manifest: Value = serde_json::from_str(text).ok()?;
    manifest.as_object()?;
    let annotations = meta_mut(&mut manifest)
        .entry("annotations")
        .or_insert_with(|| json!({}));
    annotations
        .as_object_mut()?
        .insert(LAST_APPLIED.into(), json!(text));
    Some(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubectl_apply_is_known_by_its_last_applied_configuration() {
        let manifest = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"db","namespace":"demo"},"spec":{"clusterIP":"None"}}"#;
        let applied = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": manifest}}, "spec": {"clusterIP": "None"}});
        let got = kubectl_applied(applied.to_string().as_bytes()).expect("a kubectl apply");
        assert_eq!(got["spec"], json!({"clusterIP": "None"}));
        assert_eq!(
            got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            manifest
        );
        for (case, body) in [
            ("a label", json!({"metadata": {"labels": {"a": "b"}}})),
            (
                "not JSON",
                json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{"}}}),
            ),
            (
                "not an object",
                json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "[1]"}}}),
            ),
        ] {
            assert!(
                kubectl_applied(body.to_string().as_bytes()).is_none(),
                "{case}"
            );
        }
    }
}
