//! The admission plugins built into the server, in kube-apiserver's order: `LimitRanger`
//! defaults pods before the mutating webhooks; `LimitRanger`'s bounds, `PodSecurity` and
//! `ResourceQuota` (last) judge creates after the validating webhooks. The rules are pure
//! functions in `limitrange.rs`, `podsecurity.rs` and `quota.rs`; this reads the namespace's
//! objects they need and charges quotas.

use super::*;
use crate::podsecurity::{self, Level};
use crate::quota;

impl Ctx {
    /// The stored objects of core/v1 `resource` in `namespace`.
    fn core_objects(&self, resource: &str, namespace: &str) -> Vec<Value> {
        let snap = self.server.registry.snapshot();
        let Some(rt) = snap.get("", "v1", resource) else {
            return Vec::new();
        };
        let prefix = format!("{}{namespace}/", rt.key_prefix());
        let Ok(page) = self.server.store.list(&prefix, None, 0, None) else {
            return Vec::new();
        };
        page.items
            .iter()
            .filter_map(|(_, e)| decode_stored(rt, e).ok())
            .collect()
    }

    fn refuse(&self, name: &str, why: &str) -> ApiError {
        ApiError::forbidden(&self.rt.group, &self.rt.resource, name, why)
    }

    /// `LimitRanger`'s defaults, for a pod about to be created.
    pub(crate) fn limit_defaults(&self, obj: &mut Value) {
        if !self.is_pods() || self.rr.subresource.is_some() {
            return;
        }
        let Some(ns) = self.rr.namespace.as_deref() else {
            return;
        };
        let ranges = self.core_objects("limitranges", ns);
        if ranges.is_empty() {
            return;
        }
        let set = crate::limitrange::apply_defaults(obj, &ranges);
        if !set.is_empty() {
            let annotations = &mut meta_mut(obj)
                .entry("annotations")
                .or_insert_with(|| json!({}));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(
                    "kubernetes.io/limit-ranger".into(),
                    json!(format!("LimitRanger plugin set: {}", set.join("; "))),
                );
            }
        }
    }

    /// The built-in validating plugins for a create: LimitRange bounds and Pod Security for
    /// pods, Pod Security warnings for workload templates, then ResourceQuota.
    pub(crate) async fn admit_create(&self, obj: &Value, dry_run: bool) -> ApiResult<()> {
        let Some(ns) = self.rr.namespace.clone() else {
            return Ok(());
        };
        if self.rr.subresource.is_some() {
            return Ok(());
        }
        let name = meta_str(obj, "name").unwrap_or_default().to_string();
        if self.is_pods() {
            let ranges = self.core_objects("limitranges", &ns);
            let broken = crate::limitrange::violations(obj, &ranges);
            if !broken.is_empty() {
                return Err(self.refuse(&name, &broken.join(", ")));
            }
        }
        self.pod_security(&ns, &name, obj)?;
        self.charge_quotas(&ns, &name, obj, dry_run).await
    }

    fn pod_security(&self, ns: &str, name: &str, obj: &Value) -> ApiResult<()> {
        let pod = self.is_pods();
        let template = podsecurity::template_pointer(&self.rt.group, &self.rt.resource);
        if !pod && template.is_none() {
            return Ok(());
        }
        let snap = self.server.registry.snapshot();
        let Some(ns_rt) = snap.get("", "v1", "namespaces") else {
            return Ok(());
        };
        let Some(namespace) = self
            .server
            .store
            .get(&ns_rt.key(None, ns))
            .and_then(|e| decode_stored(ns_rt, &e).ok())
        else {
            return Ok(());
        };
        let (meta, spec) = match template {
            Some(p) => {
                let t = obj.pointer(p).cloned().unwrap_or_default();
                (
                    t.get("metadata").cloned().unwrap_or_default(),
                    t.get("spec").cloned().unwrap_or_default(),
                )
            }
            None => (
                obj.get("metadata").cloned().unwrap_or_default(),
                obj.get("spec").cloned().unwrap_or_default(),
            ),
        };
        let (warn, warn_version) = podsecurity::namespace_level(&namespace, podsecurity::WARN);
        let (enforce, enforce_version) =
            podsecurity::namespace_level(&namespace, podsecurity::ENFORCE);
        if pod && enforce > Level::Privileged {
            let broken = podsecurity::violations(enforce, &meta, &spec);
            if !broken.is_empty() {
                return Err(self.refuse(
                    name,
                    &format!(
                        "violates {}",
                        podsecurity::describe(enforce, &enforce_version, &broken)
                    ),
                ));
            }
        }
        // Workload templates are warned of the enforced level too: their pods would be
        // refused.
        let mut warned = Vec::new();
        for (level, version) in [(warn, warn_version), (enforce, enforce_version)] {
            if level == Level::Privileged || (pod && level == enforce) {
                continue;
            }
            let broken = podsecurity::violations(level, &meta, &spec);
            if !broken.is_empty() {
                warned.push(format!(
                    "would violate {}",
                    podsecurity::describe(level, &version, &broken)
                ));
            }
        }
        warned.dedup();
        if !warned.is_empty() {
            self.warn(warned);
        }
        Ok(())
    }

    /// ResourceQuota: refuse a create that would exceed a quota of the namespace, else add
    /// what it uses to each quota's `status.used` (compare-and-swap, so concurrent creates
    /// cannot both take the last of a quota).
    async fn charge_quotas(
        &self,
        ns: &str,
        name: &str,
        obj: &Value,
        dry_run: bool,
    ) -> ApiResult<()> {
        if self.core_objects("resourcequotas", ns).is_empty() {
            return Ok(());
        }
        let _turn = self.server.quota_charges.lock().await;
        let quotas = self.core_objects("resourcequotas", ns);
        let group = self.rt.group.clone();
        let resource = self.rt.resource.clone();
        let pod = self.is_pods();
        let delta = quota::usage(&group, &resource, obj);
        let applying: Vec<&Value> = quotas
            .iter()
            .filter(|q| quota::applies(q, &group, &resource, obj))
            .collect();
        // Every quota is judged before any is charged.
        for q in &applying {
            quota::charge(q, obj, pod, &delta).map_err(|r| self.refuse(name, &r.to_string()))?;
        }
        if dry_run {
            return Ok(());
        }
        let snap = self.server.registry.snapshot();
        let Some(rt) = snap.get("", "v1", "resourcequotas").cloned() else {
            return Ok(());
        };
        for q in applying {
            let spec_hard = quota::amounts(q.pointer("/spec/hard"));
            if !spec_hard.keys().any(|k| delta.contains_key(k)) {
                continue;
            }
            let qname = meta_str(q, "name").unwrap_or_default().to_string();
            let ctx = crate::controllers::internal_ctx(
                &self.server,
                rt.clone(),
                Some(ns.to_string()),
                Some(qname.clone()),
                Some("status"),
            );
            let charged = ctx
                .guaranteed_update(&qname, None, |current| {
                    let used = quota::charge(current, obj, pod, &delta)
                        .map_err(|r| self.refuse(name, &r.to_string()))?;
                    let mut next = current.clone();
                    next["status"]["used"] = quota::resource_list(&used);
                    Ok(next)
                })
                .await;
            match charged {
                // A quota deleted meanwhile limits nothing any more.
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
