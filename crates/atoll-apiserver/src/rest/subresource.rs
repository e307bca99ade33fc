//! Subresources with their own shapes: `scale`, `serviceaccounts/token` and `pods/binding`.

use super::*;

impl Ctx {
    /// `serviceaccounts/token`: a signed token for the service account (`kubectl create token`).
    pub(crate) fn token_request(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
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
        let namespace = self.rr.namespace.clone().unwrap_or_default();
        let bound = self.bound_pod(&namespace, &name, spec.get("boundObjectRef"))?;
        let (token, exp) = signer
            .issue(
                &namespace,
                &name,
                meta_str(&sa, "uid").unwrap_or_default(),
                &audiences,
                lifetime,
                bound.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
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

    /// The pod a token is to be bound to (name, uid), checked as kube-apiserver checks it: the
    /// pod exists (with the uid named, if one is), runs as this service account, and, for a
    /// node, is bound to that node. A node may ask only for tokens bound to its pods.
    fn bound_pod(
        &self,
        namespace: &str,
        account: &str,
        reference: Option<&Value>,
    ) -> ApiResult<Option<(String, String)>> {
        let node = crate::noderestriction::node_of(&self.identity);
        let Some(reference) = reference.filter(|r| !r.is_null()) else {
            return match node {
                Some(node) => Err(ApiError::forbidden(
                    "",
                    "serviceaccounts/token",
                    account,
                    &format!("node \"{node}\" may only request tokens bound to its own pods"),
                )),
                None => Ok(None),
            };
        };
        let kind = reference
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let pod_name = reference
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind != "Pod" {
            // kube-apiserver also binds to Secrets and Nodes; Atoll binds to pods only.
            return Err(ApiError::bad_request(format!(
                "boundObjectRef.kind {kind:?}: tokens can be bound to a Pod only"
            )));
        }
        if pod_name.is_empty() {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                account,
                vec![Cause::required("spec.boundObjectRef.name")],
            ));
        }
        let pod = self
            .server
            .store
            .get(&format!("/core/pods/{namespace}/{pod_name}"))
            .and_then(|e| serde_json::from_slice::<Value>(&e.value).ok())
            .ok_or_else(|| ApiError::not_found("", "pods", pod_name))?;
        let uid = meta_str(&pod, "uid").unwrap_or_default().to_string();
        if let Some(wanted) = reference.get("uid").and_then(Value::as_str)
            && !wanted.is_empty()
            && wanted != uid
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                pod_name,
                &format!("the pod's uid is {uid}, not {wanted}"),
            ));
        }
        let runs_as = pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        if runs_as != account {
            return Err(ApiError::bad_request(format!(
                "pod {pod_name:?} runs as service account {runs_as:?}, not {account:?}"
            )));
        }
        if let Some(node) = node
            && pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node)
        {
            return Err(ApiError::forbidden(
                "",
                "serviceaccounts/token",
                account,
                &format!("node \"{node}\" may only request tokens bound to its own pods"),
            ));
        }
        Ok(Some((pod_name.to_string(), uid)))
    }

    /// `pods/binding`: the scheduler's way to set `spec.nodeName`, once.
    pub(crate) async fn bind(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
        let name = self.name().to_string();
        let binding = self.decode_object(content_type, body)?;
        let target = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let target_kind = binding
            .pointer("/target/kind")
            .and_then(Value::as_str)
            .unwrap_or("Node");
        if target.is_empty() || (target_kind != "Node" && !target_kind.is_empty()) {
            return Err(ApiError::invalid(
                "",
                "Binding",
                &name,
                vec![Cause::required("target.name")],
            ));
        }
        if let Some(bound_name) = binding.pointer("/metadata/name").and_then(Value::as_str)
            && bound_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the binding ({bound_name}) does not match the pod ({name})"
            )));
        }
        let key = self.key(&name);
        for _ in 0..16 {
            let entry = self.get_entry(&name)?;
            let mut pod = decode_stored(&self.rt, &entry)?;
            if let Some(uid) = binding.pointer("/metadata/uid").and_then(Value::as_str)
                && meta_str(&pod, "uid") != Some(uid)
            {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &name,
                    "the pod's UID does not match the binding's",
                ));
            }
            let current = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !current.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods/binding",
                    &name,
                    &format!("pod {name} is already assigned to node \"{current}\""),
                ));
            }
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::conflict(
                    "",
                    "pods/binding",
                    &name,
                    &format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            set_pointer(&mut pod, "/spec/nodeName", json!(target));
            meta_mut(&mut pod).remove("resourceVersion");
            match self
                .server
                .store
                .update(
                    &key,
                    encode_for_store(&mut pod),
                    Precondition::ModRevision(entry.mod_revision),
                )
                .await
            {
                Ok(_) => {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success", "code": 201});
                    return Ok(json_response(StatusCode::CREATED, &status));
                }
                Err(e) => match self.cas_failure(e, &name, true) {
                    None => continue,
                    Some(err) => return Err(err),
                },
            }
        }
        Err(self.too_contended(&name))
    }

    pub(crate) fn scale_of(&self, obj: &Value) -> Value {
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
                // A ReplicationController's selector is a plain label map.
                Value::Object(m) if self.rt.kind == "ReplicationController" => m
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(","),
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

    pub(crate) async fn write_scale(
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
pub(crate) fn selector_string(sel: &Value) -> String {
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
