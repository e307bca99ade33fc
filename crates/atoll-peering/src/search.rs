//! Browsing `SearchDomain`s: what DNS publishes becomes ForeignClusters (`discoveredBy: DNS`,
//! `Discovered=True`); one that is no longer published is marked `Discovered=False`, never
//! deleted, as it may be peered with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use atoll_api::peering::{
    CONDITION_DISCOVERED, DiscoveredBy, ForeignCluster, ForeignClusterSpec, PeeringEnabled,
    SearchDomain,
};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::discovery::{self, Published};
use crate::{Error, condition};

const DOMAIN_ANNOTATION: &str = "peering.atoll.io/search-domain";

/// Record what a browse of `domain` found: ForeignClusters made or brought up to date, and
/// those of the domain no longer published marked. Returns how many were found (not counting
/// this cluster).
pub async fn record(
    local: &Client,
    domain: &str,
    found: &[Published],
    me: &str,
    auto_peer: bool,
) -> Result<usize, Error> {
    let fcs: Api<ForeignCluster> = Api::all(local.clone());
    let mut count = 0;
    for p in found.iter().filter(|p| p.cluster_id != me) {
        if atoll_api::cluster::check_cluster_name(&p.cluster_id).is_err() {
            tracing::warn!(domain, cluster = %p.cluster_id, "skipping a published cluster whose id is not a DNS label");
            continue;
        }
        count += 1;
        let fc = match fcs.get_opt(&p.cluster_id).await? {
            Some(fc) => {
                if fc.spec.discovered_by == DiscoveredBy::Dns
                    && (fc.spec.api_server_url != p.api_server_url
                        || fc.spec.ca_sha256 != p.ca_sha256)
                {
                    let patch = json!({"spec": {"apiServerURL": p.api_server_url, "caSHA256": p.ca_sha256}});
                    fcs.patch(
                        &p.cluster_id,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?
                } else {
                    fc
                }
            }
            None => {
                let mut fc = ForeignCluster::new(
                    &p.cluster_id,
                    ForeignClusterSpec {
                        cluster_id: p.cluster_id.clone(),
                        api_server_url: p.api_server_url.clone(),
                        ca_sha256: p.ca_sha256.clone(),
                        outgoing_peering: if auto_peer {
                            PeeringEnabled::Yes
                        } else {
                            PeeringEnabled::Auto
                        },
                        incoming_peering: PeeringEnabled::Auto,
                        discovered_by: DiscoveredBy::Dns,
                    },
                );
                fc.metadata.annotations =
                    Some([(DOMAIN_ANNOTATION.to_string(), domain.to_string())].into());
                tracing::info!(domain, cluster = %p.cluster_id, "discovered a peer");
                fcs.create(&PostParams::default(), &fc).await?
            }
        };
        set_discovered(
            &fcs,
            &fc,
            true,
            "FoundByDNS",
            format!("published in DNS domain {domain} ({})", p.api_server_url),
        )
        .await?;
    }
    // Those of this domain no longer there.
    for fc in fcs.list(&ListParams::default()).await?.items {
        let ours = fc.spec.discovered_by == DiscoveredBy::Dns
            && fc.annotations().get(DOMAIN_ANNOTATION).map(String::as_str) == Some(domain);
        if ours && !found.iter().any(|p| p.cluster_id == fc.spec.cluster_id) {
            set_discovered(
                &fcs,
                &fc,
                false,
                "Vanished",
                format!(
                    "no longer published in DNS domain {domain}; kept, as it may be peered with"
                ),
            )
            .await?;
        }
    }
    Ok(count)
}

async fn set_discovered(
    fcs: &Api<ForeignCluster>,
    fc: &ForeignCluster,
    ok: bool,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let mut conditions = fc
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if atoll_api::peering::set_condition(
        &mut conditions,
        condition(CONDITION_DISCOVERED, ok, reason, message),
    ) {
        fcs.patch_status(
            &fc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": conditions}})),
        )
        .await?;
    }
    Ok(())
}

/// Browse every SearchDomain every `period` (and when one changes).
pub(crate) async fn run(local: Client, me: String, period: Duration) {
    use futures::StreamExt;
    let kick = Arc::new(tokio::sync::Notify::new());
    {
        let kick = kick.clone();
        let api: Api<SearchDomain> = Api::all(local.clone());
        tokio::spawn(async move {
            let stream = kube::runtime::watcher(api, Default::default());
            let stream = kube::runtime::WatchStreamExt::default_backoff(stream);
            futures::pin_mut!(stream);
            while let Some(e) = stream.next().await {
                if e.is_ok() {
                    kick.notify_one();
                }
            }
        });
    }
    let api: Api<SearchDomain> = Api::all(local.clone());
    loop {
        let _ = tokio::time::timeout(period, kick.notified()).await;
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for sd in list.items {
            let server = if sd.spec.server.is_empty() {
                discovery::system_resolver()
                    .ok_or_else(|| "no nameserver in /etc/resolv.conf: set spec.server".to_string())
            } else {
                sd.spec
                    .server
                    .parse::<SocketAddr>()
                    .map_err(|_| format!("spec.server {:?} is not IP:PORT", sd.spec.server))
            };
            let result = match server {
                Ok(server) => match discovery::browse(&sd.spec.domain, server).await {
                    Ok((found, broken)) => {
                        match record(&local, &sd.spec.domain, &found, &me, sd.spec.auto_peer).await
                        {
                            Ok(n) => Ok((n, broken)),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let (found, cond) = match result {
                Ok((n, broken)) if broken.is_empty() => (
                    n,
                    condition(
                        "Ready",
                        true,
                        "Browsed",
                        format!("{n} peer(s) published in {}", sd.spec.domain),
                    ),
                ),
                Ok((n, broken)) => (
                    n,
                    condition(
                        "Ready",
                        true,
                        "SomeBroken",
                        format!("{n} peer(s) found; skipped: {}", broken.join("; ")),
                    ),
                ),
                Err(e) => (0, condition("Ready", false, "BrowseFailed", e)),
            };
            let mut conditions = sd
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let changed = atoll_api::peering::set_condition(&mut conditions, cond);
            if changed || sd.status.as_ref().map(|s| s.found) != Some(found as i32) {
                let _ = api
                    .patch_status(
                        &sd.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(
                            &json!({"status": {"found": found, "conditions": conditions}}),
                        ),
                    )
                    .await;
            }
        }
    }
}
