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
    /// what it uses to each quota's `status.used`. As kube-apiserver's quota admission does,
    /// the creates waiting are judged together, in order, against the quotas as they stand
    /// plus what was admitted before them, and each quota is written once for all of them
    /// (compare-and-swap): a thousand creates side by side cost a few writes, not a thousand
    /// one after another.
    async fn charge_quotas(
        &self,
        ns: &str,
        name: &str,
        obj: &Value,
        dry_run: bool,
    ) -> ApiResult<()> {
        let quotas = self.core_objects("resourcequotas", ns);
        if quotas.is_empty() {
            return Ok(());
        }
        let charge = Charge {
            namespace: ns.to_string(),
            group: self.rt.group.clone(),
            resource: self.rt.resource.clone(),
            name: name.to_string(),
            obj: obj.clone(),
        };
        if dry_run {
            let mut working: Vec<Value> = quotas;
            return judge(&charge, &mut working)
                .map(|_| ())
                .map_err(|why| self.refuse(name, &why));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        lock(&self.server.quota_charges.waiting).push((charge, reply));
        {
            let _turn = self.server.quota_charges.committing.lock().await;
            let batch = std::mem::take(&mut *lock(&self.server.quota_charges.waiting));
            if !batch.is_empty() {
                commit(&self.server, batch).await;
            }
        }
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ApiError::Internal(
                "the quota charge was lost; try again".into(),
            )),
        }
    }
}

/// One create waiting to be charged to its namespace's quotas.
pub(crate) struct Charge {
    namespace: String,
    group: String,
    resource: String,
    name: String,
    obj: Value,
}

type Reply = tokio::sync::oneshot::Sender<ApiResult<()>>;

/// The creates waiting for their quota charge, and the turn to commit them.
#[derive(Default)]
pub struct QuotaCharges {
    waiting: std::sync::Mutex<Vec<(Charge, Reply)>>,
    committing: tokio::sync::Mutex<()>,
}

/// Judge `charge` against `quotas` (their `status.used` as admitted so far): the indexes of
/// the quotas it is charged to, each's used updated, or why not. Nothing changes on refusal.
fn judge(charge: &Charge, quotas: &mut [Value]) -> Result<Vec<(usize, quota::Amounts)>, String> {
    let pod = charge.group.is_empty() && charge.resource == "pods";
    let delta = quota::usage(&charge.group, &charge.resource, &charge.obj);
    let mut charged = Vec::new();
    for (i, q) in quotas.iter().enumerate() {
        if !quota::applies(q, &charge.group, &charge.resource, &charge.obj) {
            continue;
        }
        let used = quota::charge(q, &charge.obj, pod, &delta).map_err(|r| r.to_string())?;
        let limits = quota::amounts(q.pointer("/spec/hard"));
        if limits.keys().any(|k| delta.contains_key(k)) {
            let own: quota::Amounts = delta
                .iter()
                .filter(|(k, _)| limits.contains_key(*k))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            charged.push((i, used, own));
        }
    }
    Ok(charged
        .into_iter()
        .map(|(i, used, own)| {
            quotas[i]["status"]["used"] = quota::resource_list(&used);
            (i, own)
        })
        .collect())
}

/// Judge a batch in order, namespace by namespace, then write each quota once with what its
/// admitted creates use, and answer each create.
async fn commit(server: &Arc<ApiServer>, batch: Vec<(Charge, Reply)>) {
    let snap = server.registry.snapshot();
    let Some(rt) = snap.get("", "v1", "resourcequotas").cloned() else {
        for (_, reply) in batch {
            let _ = reply.send(Ok(()));
        }
        return;
    };
    let mut by_namespace: std::collections::BTreeMap<String, Vec<(Charge, Reply)>> =
        Default::default();
    for (c, r) in batch {
        by_namespace
            .entry(c.namespace.clone())
            .or_default()
            .push((c, r));
    }
    for (ns, charges) in by_namespace {
        let prefix = format!("{}{ns}/", rt.key_prefix());
        let mut quotas: Vec<Value> = server
            .store
            .list(&prefix, None, 0, None)
            .map(|p| {
                p.items
                    .iter()
                    .filter_map(|(_, e)| decode_stored(&rt, e).ok())
                    .collect()
            })
            .unwrap_or_default();
        // What each quota takes, and who waits on it.
        let mut taken: Vec<quota::Amounts> = vec![quota::Amounts::new(); quotas.len()];
        let mut waiting_on: Vec<Vec<usize>> = vec![Vec::new(); quotas.len()];
        let mut answers: Vec<Option<ApiResult<()>>> = Vec::new();
        let mut replies = Vec::new();
        for (i, (charge, reply)) in charges.into_iter().enumerate() {
            match judge(&charge, &mut quotas) {
                Ok(charged) => {
                    for (q, own) in charged {
                        quota::add(&mut taken[q], &own);
                        waiting_on[q].push(i);
                    }
                    answers.push(Some(Ok(())));
                }
                Err(why) => answers.push(Some(Err(ApiError::forbidden(
                    &charge.group,
                    &charge.resource,
                    &charge.name,
                    &why,
                )))),
            }
            replies.push(reply);
        }
        for (q, add) in taken.iter().enumerate() {
            if add.is_empty() {
                continue;
            }
            let qname = meta_str(&quotas[q], "name").unwrap_or_default().to_string();
            let ctx = crate::controllers::internal_ctx(
                server,
                rt.clone(),
                Some(ns.clone()),
                Some(qname.clone()),
                Some("status"),
            );
            // Onto the quota as it is now (a recount may have come between).
            let written = ctx
                .guaranteed_update(&qname, None, |current| {
                    let mut used = quota::amounts(current.pointer("/status/used"));
                    quota::add(&mut used, add);
                    let mut next = current.clone();
                    next["status"]["used"] = quota::resource_list(&used);
                    Ok(next)
                })
                .await;
            match written {
                // A quota deleted meanwhile limits nothing any more.
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => {
                    for i in &waiting_on[q] {
                        answers[*i] = Some(Err(ApiError::Internal(format!(
                            "cannot charge quota {qname}: {e}"
                        ))));
                    }
                }
            }
        }
        for (answer, reply) in answers.into_iter().zip(replies) {
            let _ = reply.send(answer.unwrap_or(Ok(())));
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
