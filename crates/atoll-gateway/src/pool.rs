//! Upstream HTTP/1.1 connections kept open between requests, per endpoint.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::Body;

/// Idle connections of one endpoint at most; more are closed when their request ends.
const MAX_IDLE: usize = 256;

/// One endpoint's connections between requests, oldest returned first. A connection is
/// put back as soon as its answer's headers are in; it is ready again once hyper has read
/// the answer's body to its end, so the first ready one is taken and the others stay.
#[derive(Debug, Default)]
pub struct Idle {
    conns: Mutex<VecDeque<SendRequest<Body>>>,
}

impl Idle {
    /// An open connection ready for a request, if one is kept.
    pub fn take(&self) -> Option<SendRequest<Body>> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..conns.len() {
            let c = conns.pop_front()?;
            if c.is_ready() {
                return Some(c);
            }
            if !c.is_closed() {
                // Still reading its last answer.
                conns.push_back(c);
            }
        }
        None
    }

    /// Keep `conn` for a later request (closed when too many are kept).
    pub fn give_back(&self, conn: SendRequest<Body>) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if conns.len() < MAX_IDLE {
            conns.push_back(conn);
        }
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
