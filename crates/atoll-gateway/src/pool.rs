//! Upstream HTTP/1.1 connections kept open between requests, per endpoint.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::Body;

/// Idle connections of one endpoint at most; more are closed when their request ends.
const MAX_IDLE: usize = 256;

/// One endpoint's idle connections, most recently used last.
#[derive(Debug, Default)]
pub struct Idle {
    conns: Mutex<Vec<SendRequest<Body>>>,
}

impl Idle {
    /// An open, ready connection, if one is idle.
    pub fn take(&self) -> Option<SendRequest<Body>> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = conns.pop() {
            if c.is_ready() {
                return Some(c);
            }
        }
        None
    }

    /// Keep `conn` for the next request once its current one has ended (spawned: the answer's
    /// body is still being read).
    pub fn give_back(self: &std::sync::Arc<Self>, mut conn: SendRequest<Body>) {
        let idle = self.clone();
        tokio::spawn(async move {
            if conn.ready().await.is_ok() {
                let mut conns = idle.conns.lock().unwrap_or_else(|p| p.into_inner());
                if conns.len() < MAX_IDLE {
                    conns.push(conn);
                }
            }
        });
    }

    pub fn clear(&self) {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("cannot connect to {0}: no answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("cannot speak HTTP/1.1 to {0}: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

/// A new connection to `addr`, its driver spawned (with upgrades, for WebSockets).
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<SendRequest<Body>, ConnectError> {
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Io(addr, e)),
        Err(_) => return Err(ConnectError::Timeout(addr, timeout)),
    };
    // Small requests and answers: no waiting to fill a segment.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Handshake(addr, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}
