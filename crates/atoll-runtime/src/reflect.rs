//! A kube-rs reflector that also calls back on every change: what the controllers of the hub
//! and the agent build their caches and work queues from.

use futures::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};

/// Keep `writer`'s store in sync with the objects `wc` selects, calling `on_change` for each
/// object applied, deleted or listed again; watch errors are retried with back-off (logged
/// at debug: a kind whose CRD is not installed yet retries quietly).
pub fn reflect<K>(
    api: Api<K>,
    wc: watcher::Config,
    writer: Writer<K>,
    on_change: impl Fn(&K) + Send + 'static,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    tokio::spawn(keep(api, wc, writer, on_change));
}

/// [`reflect`], for as long as the returned guard is held (a watch of something that may
/// go, such as one namespace of a peer).
pub fn reflect_while_held<K>(
    api: Api<K>,
    wc: watcher::Config,
    writer: Writer<K>,
    on_change: impl Fn(&K) + Send + 'static,
) -> crate::AbortOnDrop
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    crate::AbortOnDrop(tokio::spawn(keep(api, wc, writer, on_change)))
}

async fn keep<K>(
    api: Api<K>,
    wc: watcher::Config,
    writer: Writer<K>,
    on_change: impl Fn(&K) + Send + 'static,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = reflector::reflector(writer, watcher(api, wc)).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(
                watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o),
            ) => on_change(&o),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(kind = %K::kind(&()), error = %e, "watch failed; retrying")
            }
        }
    }
}

/// A store of what `wc` selects, kept by [`reflect`], that wakes `changed` on every change:
/// the caches of controllers that rebuild or reconcile on any change.
pub fn notifying_store<K>(
    api: Api<K>,
    wc: watcher::Config,
    changed: &std::sync::Arc<tokio::sync::Notify>,
) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let changed = changed.clone();
    reflect(api, wc, writer, move |_| changed.notify_one());
    store
}
