//! The quota controller (kube-controller-manager's `resourcequota` controller): each
//! ResourceQuota's `status.hard` follows its spec and `status.used` is recounted from what the
//! namespace holds, so what admission charged for a create that then failed, and what deleted
//! or finished objects released, is given back. A quota is counted as soon as it is written
//! (admission refuses what it limits until then); every quota is recounted every second.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{internal_ctx, watch_forever};
use crate::ApiServer;
use crate::error::ApiError;
use crate::object::{decode_stored, meta_str};
use crate::quota;

const RECOUNT: Duration = Duration::from_secs(1);

pub async fn quota_loop(server: Arc<ApiServer>) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let prefix = "/core/resourcequotas/";
    {
        let server = server.clone();
        let changed = changed.clone();
        tokio::spawn(watch_quotas(server, prefix, changed));
    }
    let mut tick = tokio::time::interval(RECOUNT);
    let mut lower = Lowered::new();
    loop {
        // A write to a quota (admission's charges are such writes) recounts only quotas
        // whose limits changed: recounting a charged quota while the object it was charged
        // for is still on its way to storage would give the charge back too early.
        let only_changed = tokio::select! {
            _ = changed.notified() => true,
            _ = tick.tick() => false,
        };
        recount_all(&server, only_changed, &mut lower).await;
    }
}

async fn watch_quotas(
    server: Arc<ApiServer>,
    prefix: &'static str,
    changed: Arc<tokio::sync::Notify>,
) {
    watch_forever(&server, prefix, async move |_events| changed.notify_one()).await;
}

/// Counts lower than what a quota holds, by quota, from the last recount. A lower count is
/// written only when two recounts a second apart agree: an object admission has charged for
/// may be a moment from storage, and giving its charge back early would let a create past
/// the limit.
type Lowered = std::collections::HashMap<(String, String), Value>;

async fn recount_all(server: &Arc<ApiServer>, only_changed: bool, lower: &mut Lowered) {
    let snap = server.registry.snapshot();
    let Some(rt) = snap.get("", "v1", "resourcequotas").cloned() else {
        return;
    };
    let Ok(page) = server.store.list(&rt.key_prefix(), None, 0, None) else {
        return;
    };
    let quotas: Vec<Value> = page
        .items
        .iter()
        .filter_map(|(_, e)| decode_stored(&rt, e).ok())
        .collect();
    // Counts held back for quotas that are gone go too.
    if !only_changed {
        let present: std::collections::HashSet<(String, String)> = quotas
            .iter()
            .map(|q| {
                (
                    meta_str(q, "namespace").unwrap_or_default().to_string(),
                    meta_str(q, "name").unwrap_or_default().to_string(),
                )
            })
            .collect();
        lower.retain(|k, _| present.contains(k));
    }
    for q in quotas {
        if only_changed && q.pointer("/status/hard") == q.pointer("/spec/hard") {
            continue;
        }
        let ns = meta_str(&q, "namespace").unwrap_or_default().to_string();
        let name = meta_str(&q, "name").unwrap_or_default().to_string();
        let used = count(server, &q, &ns);
        let hard = q.pointer("/spec/hard").cloned().unwrap_or_default();
        let held = quota::amounts(q.pointer("/status/used"));
        let key = (ns.clone(), name.clone());
        let used_list = quota::resource_list(&used);
        if used.iter().any(|(k, v)| held.get(k).is_some_and(|h| v < h))
            && lower.get(&key) != Some(&used_list)
        {
            lower.insert(key, used_list);
            continue;
        }
        lower.remove(&key);
        let used = used_list;
        if q.pointer("/status/hard") == Some(&hard) && q.pointer("/status/used") == Some(&used) {
            continue;
        }
        let ctx = internal_ctx(
            server,
            rt.clone(),
            Some(ns.clone()),
            Some(name.clone()),
            Some("status"),
        );
        let result = ctx
            .guaranteed_update(&name, None, |current| {
                let mut next = current.clone();
                next["status"] = serde_json::json!({"hard": hard, "used": used});
                Ok(next)
            })
            .await;
        match result {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(namespace = %ns, quota = %name, error = %e, "quota status update failed")
            }
        }
    }
}

/// What the namespace's objects use of what `q` limits.
fn count(server: &ApiServer, q: &Value, ns: &str) -> quota::Amounts {
    let hard = quota::amounts(q.pointer("/spec/hard"));
    let snap = server.registry.snapshot();
    let mut used: quota::Amounts = hard.keys().map(|k| (k.clone(), 0)).collect();
    let mut seen = std::collections::HashSet::new();
    for rt in snap.resources.values().filter(|r| r.namespaced) {
        if !seen.insert((rt.group.clone(), rt.resource.clone())) {
            continue;
        }
        if !hard
            .keys()
            .any(|k| quota::counts_resource(k, &rt.group, &rt.resource))
        {
            continue;
        }
        let Ok(page) = server
            .store
            .list(&format!("{}{ns}/", rt.key_prefix()), None, 0, None)
        else {
            continue;
        };
        let objects: Vec<Value> = page
            .items
            .iter()
            .filter_map(|(_, e)| decode_stored(rt, e).ok())
            .collect();
        quota::add(
            &mut used,
            &quota::used_by(q, &rt.group, &rt.resource, &objects),
        );
    }
    used
}
