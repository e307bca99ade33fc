//! Deletes: at once, or marked for finalizers and the garbage collector; and collections.

use super::*;

impl Ctx {
    pub(crate) async fn delete(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
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
            // A pod on a node is deleted gracefully: marked, so its node agent can stop it
            // within the grace period, then deleted by the agent with a zero grace period.
            let pod_grace = if self.is_pods() {
                graceful_pod_seconds(&current, opts.grace_period)
            } else {
                None
            };
            if finalizers.is_empty() && !ns_finalizers && pod_grace.is_none() {
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
                    Err(e) => match self.cas_failure(e, name, true) {
                        None => continue,
                        Some(err) => return Err(err),
                    },
                }
            }
            // Graceful: mark for deletion and let finalizers (and controllers) finish it.
            let mut marked = current.clone();
            let already = current.pointer("/metadata/deletionTimestamp").is_some();
            {
                let meta = meta_mut(&mut marked);
                let current_grace = meta
                    .get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                match pod_grace {
                    Some(grace) if !already || grace < current_grace => {
                        let at = jiff::Timestamp::now()
                            .checked_add(jiff::SignedDuration::from_secs(grace))
                            .unwrap_or_else(|_| jiff::Timestamp::now());
                        meta.insert(
                            "deletionTimestamp".into(),
                            json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                        );
                        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                    Some(_) => {}
                    None if !already => {
                        meta.insert("deletionTimestamp".into(), json!(object::now()));
                        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                    }
                    None => {
                        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                    }
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
                Err(e) => match self.cas_failure(e, name, true) {
                    None => continue,
                    Some(err) => return Err(err),
                },
            }
        }
        Err(self.too_contended(name))
    }

    pub(crate) async fn delete_collection(
        &self,
        content_type: &str,
        body: &[u8],
    ) -> ApiResult<Response> {
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

/// The parts of `metav1.DeleteOptions` the server honours.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
    /// `gracePeriodSeconds`: how long a running pod gets to stop (0: at once).
    pub grace_period: Option<i64>,
}

/// The grace period a pod's deletion gets, when it must be graceful: it is on a node, not
/// finished, and neither the caller nor the pod asked for zero.
fn graceful_pod_seconds(pod: &Value, requested: Option<i64>) -> Option<i64> {
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return None;
    }
    let grace = requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    (grace > 0).then_some(grace)
}

pub(crate) fn delete_options(
    content_type: &str,
    body: &[u8],
    query: &Query,
) -> ApiResult<DeleteOptions> {
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
        opts.grace_period = v.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.dry_run = v
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    }
    if let Some(g) = query.get("gracePeriodSeconds") {
        opts.grace_period = Some(g.parse().map_err(|_| {
            ApiError::bad_request(format!("gracePeriodSeconds: {g:?} is not a number"))
        })?);
    }
    if opts.grace_period.is_some_and(|g| g < 0) {
        opts.grace_period = Some(0);
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
