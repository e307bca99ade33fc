//! The HTTPS serving loop of every Atoll endpoint (the API server, the node's log endpoint, the
//! hub's admission webhook): TLS accept, one task per connection, HTTP/1.1 or HTTP/2 (with
//! upgrades), each request answered by a handler made for its connection.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Serve over TLS (`config`) on `listener` until the process ends. For each connection,
/// `connection` is given its TLS state (the client's certificate, if any) and returns the
/// handler of that connection's requests.
pub async fn serve<C, H, Fut, B>(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    connection: C,
) where
    C: Fn(&rustls::ServerConnection) -> H + Send + Sync + 'static,
    H: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let connection = Arc::new(connection);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, connection) = (acceptor.clone(), connection.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let handle = connection(tls.get_ref().1);
            let svc = hyper::service::service_fn(move |req| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(handle(req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
