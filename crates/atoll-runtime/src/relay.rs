//! Passing a connection's bytes on: the Service proxy's (direct and through an east-west
//! tunnel) and the east-west gateway's.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Pass bytes both ways until each way is done, each way on its own: a server that answers
/// and closes with the client's bytes unread resets the connection, and the client's bytes
/// then fail to reach it; its answer must still reach the client, as it does with no proxy in
/// between (`copy_bidirectional` gives up both ways at the first error). Returns the bytes
/// passed each way (0 for a way that failed). Callers set `TCP_NODELAY` on their sockets, so
/// the hop they add holds nothing back.
pub async fn relay<A, B>(a: A, b: B) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_in, mut a_out) = tokio::io::split(a);
    let (mut b_in, mut b_out) = tokio::io::split(b);
    let up = async {
        let n = tokio::io::copy(&mut a_in, &mut b_out).await.unwrap_or(0);
        let _ = b_out.shutdown().await;
        n
    };
    let down = async {
        let n = tokio::io::copy(&mut b_in, &mut a_out).await.unwrap_or(0);
        let _ = a_out.shutdown().await;
        n
    };
    tokio::join!(up, down)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A server that answers at once and closes without reading what the client sent (as
    /// `socat ... SYSTEM:'echo ...'`): its answer reaches the client through the relay.
    #[tokio::test]
    async fn an_answer_before_a_reset_reaches_the_client() {
        use tokio::io::AsyncReadExt;
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (server_addr, proxy_addr) = (server.local_addr().unwrap(), proxy.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut c, _)) = server.accept().await {
                let _ = c.write_all(b"pod ip 127.0.0.9\r\n").await;
            }
        });
        tokio::spawn(async move {
            while let Ok((c, _)) = proxy.accept().await {
                let s = tokio::net::TcpStream::connect(server_addr).await.unwrap();
                tokio::spawn(relay(c, s));
            }
        });
        for _ in 0..20 {
            let mut c = tokio::net::TcpStream::connect(proxy_addr).await.unwrap();
            let _ = c.write_all(&[b'x'; 256 * 1024]).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer)).await;
            assert_eq!(String::from_utf8_lossy(&answer), "pod ip 127.0.0.9\r\n");
        }
    }
}
