//! Cluster sets: the built-in `default` and `global` kept as they should be, each set's
//! `ClusterSetEmpty` condition and member count, each binding's `Bound` condition.
//!
//! The built-in sets are recreated when deleted and their selector put back when edited, at
//! once from the watch and every 10 s besides, unless annotated
//! `cluster.atoll.io/autoupdate: "false"` (Open Cluster Management's behaviour).

use std::sync::Arc;
use std::time::Duration;

use atoll_api::cluster::{Condition, set_condition};
use atoll_api::clusterset::{
    AUTOUPDATE_ANNOTATION, CONDITION_BOUND, CONDITION_CLUSTERSET_EMPTY, ManagedClusterSet,
    ManagedClusterSetBinding, ManagedClusterSetStatus, builtin_set_spec,
};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::index::Key;
use crate::{Error, Hub, now_rfc3339};

/// How often the built-in sets are checked besides on every change to them.
pub const BUILTIN_RESYNC: Duration = Duration::from_secs(10);

fn cond(type_: &str, status: &str, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: now_rfc3339(),
    }
}

/// Keep built-in set `name` as it should be (also run every 10 s by [`resync_builtins`]).
pub async fn reconcile_builtin(hub: Arc<Hub>, name: String) -> Result<Option<Duration>, Error> {
    let Some(spec) = builtin_set_spec(&name) else {
        return Ok(None);
    };
    let api: Api<ManagedClusterSet> = Api::all(hub.client.clone());
    // Read from the server, not the index: a deletion must be seen even if the watch lags.
    match api.get_opt(&name).await? {
        None => {
            let set = ManagedClusterSet::new(&name, spec);
            match api.create(&PostParams::default(), &set).await {
                Ok(_) => tracing::info!(set = %name, "created the built-in cluster set"),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Some(set) => {
            let pinned = set
                .annotations()
                .get(AUTOUPDATE_ANNOTATION)
                .is_some_and(|v| v == "false");
            if !pinned && set.spec != spec && set.metadata.deletion_timestamp.is_none() {
                // A whole update, not a merge patch: merging `{}` into an edited selector would
                // leave the edit in place. A conflict retries from the next read.
                let mut fixed = set.clone();
                fixed.spec = spec;
                api.replace(&name, &PostParams::default(), &fixed).await?;
                tracing::info!(set = %name, "reverted an edit of the built-in cluster set's selector");
            }
        }
    }
    Ok(None)
}

/// Check the built-in sets every 10 s, whatever the watch says.
pub async fn resync_builtins(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(BUILTIN_RESYNC);
    loop {
        tick.tick().await;
        for name in [
            atoll_api::clusterset::DEFAULT_SET,
            atoll_api::clusterset::GLOBAL_SET,
        ] {
            hub.builtins.add(name.to_string());
        }
    }
}

/// A set's member count and `ClusterSetEmpty` condition.
pub async fn reconcile_set(hub: Arc<Hub>, name: String) -> Result<Option<Duration>, Error> {
    let (set, members) = {
        let ix = hub.index.lock();
        let Some(set) = ix.sets.get(&name).cloned() else {
            return Ok(None);
        };
        let members = ix
            .clusters
            .values()
            .filter(|c| set.selects(&c.labels))
            .count();
        (set, members)
    };
    let mut conditions = set
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let c = if members == 0 {
        cond(
            CONDITION_CLUSTERSET_EMPTY,
            "True",
            "NoClusterMatched",
            "No ManagedCluster selected".into(),
        )
    } else {
        cond(
            CONDITION_CLUSTERSET_EMPTY,
            "False",
            "ClustersSelected",
            format!("{members} ManagedClusters selected"),
        )
    };
    set_condition(&mut conditions, c);
    let status = ManagedClusterSetStatus {
        conditions,
        member_count: members as i32,
    };
    if set.status.as_ref() == Some(&status) {
        return Ok(None);
    }
    let api: Api<ManagedClusterSet> = Api::all(hub.client.clone());
    match api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
    {
        Ok(updated) => {
            hub.index.lock().sets.insert(name, Arc::new(updated));
            Ok(None)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A binding's `Bound` condition: whether its set exists.
pub async fn reconcile_binding(hub: Arc<Hub>, key: Key) -> Result<Option<Duration>, Error> {
    let (binding, exists) = {
        let ix = hub.index.lock();
        let Some(b) = ix.bindings.get(&key).cloned() else {
            return Ok(None);
        };
        let exists = ix.sets.contains_key(&b.spec.cluster_set);
        (b, exists)
    };
    let mut conditions = binding
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let set = &binding.spec.cluster_set;
    let c = if exists {
        cond(
            CONDITION_BOUND,
            "True",
            "ClusterSetBound",
            format!("ManagedClusterSet {set} is bound to namespace {}", key.0),
        )
    } else {
        cond(
            CONDITION_BOUND,
            "False",
            "ClusterSetNotFound",
            format!("ManagedClusterSet {set} does not exist; create it or delete this binding"),
        )
    };
    if !set_condition(&mut conditions, c) {
        return Ok(None);
    }
    let api: Api<ManagedClusterSetBinding> = Api::namespaced(hub.client.clone(), &key.0);
    match api
        .patch_status(
            &key.1,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": conditions}})),
        )
        .await
    {
        Ok(updated) => {
            hub.index.lock().upsert_binding(Arc::new(updated));
            Ok(None)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
