//! Watches of the hub's objects into caches, and the loop that builds the configuration from
//! them whenever one changes (and every second, for leases that lapse without a change).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use atoll_api::cluster::{CLUSTER_LEASE, ManagedCluster};
use atoll_api::clusterset::{ManagedClusterSet, ManagedClusterSetBinding};
use atoll_api::ingress::MultiClusterIngress;
use atoll_api::mcs::ExportedService;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::Shared;
use crate::config::{World, build};
use crate::status::Writer;

/// The caches of what the configuration is built from.
pub(crate) struct Watched {
    shared: Arc<Shared>,
    changed: Arc<Notify>,
    grace_periods: f64,
    ingresses: Store<MultiClusterIngress>,
    exports: Store<ExportedService>,
    clusters: Store<ManagedCluster>,
    sets: Store<ManagedClusterSet>,
    bindings: Store<ManagedClusterSetBinding>,
    leases: Store<Lease>,
    secrets: Store<Secret>,
}

fn watch<K>(client: &Client, wc: watcher::Config, changed: &Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    atoll_runtime::reflect::notifying_store(Api::<K>::all(client.clone()), wc, changed)
}

pub(crate) fn start(client: Client, shared: Arc<Shared>, grace_periods: f64) -> Watched {
    let changed = Arc::new(Notify::new());
    let all = watcher::Config::default;
    Watched {
        ingresses: watch(&client, all(), &changed),
        exports: watch(&client, all(), &changed),
        clusters: watch(&client, all(), &changed),
        sets: watch(&client, all(), &changed),
        bindings: watch(&client, all(), &changed),
        leases: watch(
            &client,
            all().fields(&format!("metadata.name={CLUSTER_LEASE}")),
            &changed,
        ),
        secrets: watch(&client, all().fields("type=kubernetes.io/tls"), &changed),
        shared,
        changed,
        grace_periods,
    }
}

impl Watched {
    /// Resolves once every cache has listed what exists.
    pub(crate) async fn synced(&self) {
        let _ = self.ingresses.wait_until_ready().await;
        let _ = self.exports.wait_until_ready().await;
        let _ = self.clusters.wait_until_ready().await;
        let _ = self.sets.wait_until_ready().await;
        let _ = self.bindings.wait_until_ready().await;
        let _ = self.leases.wait_until_ready().await;
        let _ = self.secrets.wait_until_ready().await;
    }

    fn world(&self) -> World {
        let leases: HashMap<String, k8s_openapi::jiff::Timestamp> = self
            .leases
            .state()
            .iter()
            .filter_map(|l| {
                let cluster = l.namespace()?.strip_prefix("atoll-cluster-")?.to_string();
                let renewed = l.spec.as_ref()?.renew_time.as_ref()?.0;
                Some((cluster, renewed))
            })
            .collect();
        World {
            ingresses: self.ingresses.state(),
            exports: self.exports.state(),
            clusters: self.clusters.state(),
            sets: self.sets.state(),
            bindings: self.bindings.state(),
            leases,
            secrets: self.secrets.state(),
            now: k8s_openapi::jiff::Timestamp::now(),
            grace_periods: self.grace_periods,
        }
    }

    /// Build the configuration and put it in force.
    pub(crate) fn rebuild_now(&self) -> Arc<crate::config::Config> {
        let config = build(&self.world(), &self.shared.registry);
        self.shared.swap(config);
        self.shared.metrics.reloads.fetch_add(1, Ordering::Relaxed);
        self.shared.config()
    }

    /// Rebuild on every change (a burst of changes makes one rebuild) and every second; write
    /// the ingresses' status after each.
    pub(crate) async fn run(self, mut status: Option<Writer>) {
        loop {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.changed.notified()).await;
            // Let a burst of events (a relist, a batch of slices) land first.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let config = self.rebuild_now();
            if let Some(w) = status.as_mut() {
                w.write(&config.reports, &self.ingresses).await;
            }
        }
    }
}
