//! Active health checks: a TCP connection to every endpoint of every route at each interval.
//! An endpoint that stops accepting takes no requests after a few failed checks, and takes
//! them again after one good one.

use std::sync::Arc;
use std::time::Duration;

use crate::Shared;

pub(crate) async fn run(shared: Arc<Shared>, interval: Duration) {
    let timeout = interval.min(Duration::from_secs(1));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let checks = shared.registry.all().into_iter().map(|e| async move {
            let ok = matches!(
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(e.addr)).await,
                Ok(Ok(_))
            );
            if e.checked(ok) {
                if ok {
                    tracing::info!(endpoint = %e.addr, "endpoint passes its health checks again");
                } else {
                    tracing::info!(endpoint = %e.addr, "endpoint fails its health checks; it takes no requests");
                    e.idle.clear();
                }
            }
        });
        futures::future::join_all(checks).await;
    }
}
