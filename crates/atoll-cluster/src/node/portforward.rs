//! `portForward` on the node (the kubelet's `/portForward/NS/POD?ports=...`), which the API
//! server's `pods/portforward` passes its WebSocket upgrade to: each port asked for is a TCP
//! connection to the pod's address and two channels of the `v4.channel.k8s.io` protocol, as
//! the kubelet speaks it: channel `2i` carries port i's data both ways, `2i+1` its errors;
//! each channel's first message is its port number (two bytes, little-endian).

use std::collections::HashMap;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio_tungstenite::tungstenite::Message;

use super::NodeCtx;
use super::exec::{Socket, switch};
use super::logs::{Body, text};

/// The protocols spoken here (binary frames only; the kubelet's base64 variant is not).
const PROTOCOL: &str = "v4.channel.k8s.io";

/// The ports of a `ports=1234,1235` query (repeated `ports=` too), or why not.
pub(crate) fn parse_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if k != "ports" && k != "port" {
            continue;
        }
        for p in super::exec::decode(v)
            .split([',', ' '])
            .filter(|p| !p.is_empty())
        {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("invalid port {p:?}: ports are 1 to 65535")),
            }
        }
    }
    if ports.is_empty() {
        return Err("no ports to forward: give ports=N[,N...]".into());
    }
    Ok(ports)
}

/// A message on channel `channel`.
fn frame(channel: u8, data: &[u8]) -> Message {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    Message::binary(Bytes::from(out))
}

pub(crate) async fn serve(
    ctx: &NodeCtx,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Response<Body> {
    let parts: Vec<&str> = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let [_, namespace, pod] = parts.as_slice() else {
        return text(StatusCode::NOT_FOUND, "not found".into());
    };
    let ports = match parse_ports(req.uri().query().unwrap_or_default()) {
        Ok(p) => p,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    if ports.len() > 127 {
        return text(
            StatusCode::BAD_REQUEST,
            "at most 127 ports in one port-forward".into(),
        );
    }
    let Some(handle) = ctx.running_pod(namespace, pod) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("pod {namespace}/{pod} is not running on this node"),
        );
    };
    let offered: Vec<String> = req
        .headers()
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let Some(key) = req
        .headers()
        .get(http::header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
    else {
        return text(StatusCode::BAD_REQUEST, "Upgrade request required".into());
    };
    if !offered.iter().any(|p| p == PROTOCOL) {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "port-forward speaks {PROTOCOL} over WebSockets; the client offered {offered:?}"
            ),
        );
    }
    let address = handle.pod_ip.clone();
    let who = format!("{namespace}/{pod}");
    switch(&mut req, PROTOCOL, &key, move |ws| async move {
        forward(ws, &address, &ports, &who).await;
    })
}

/// The session: announce each channel, connect each port, pass bytes until the WebSocket
/// closes.
async fn forward(ws: Socket, address: &str, ports: &[u16], who: &str) {
    let (mut sink, mut stream) = ws.split();
    for (i, port) in ports.iter().enumerate() {
        let Ok(data) = u8::try_from(i * 2) else {
            return;
        };
        for channel in [data, data + 1] {
            if sink
                .send(frame(channel, &port.to_le_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    // Everything sent to the client goes through one queue (the sink has one owner).
    let (out, mut queued) = tokio::sync::mpsc::channel::<Message>(64);
    let mut writers: HashMap<u8, OwnedWriteHalf> = HashMap::new();
    for (i, port) in ports.iter().enumerate() {
        let data = (i * 2) as u8;
        match tokio::net::TcpStream::connect((address, *port)).await {
            Ok(conn) => {
                let _ = conn.set_nodelay(true);
                let (mut read, write) = conn.into_split();
                writers.insert(data, write);
                let out = out.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if out.send(frame(data, &buf[..n])).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            Err(e) => {
                let why = format!(
                    "error forwarding port {port} to pod {who}: failed to connect to {address}:{port}: {e}"
                );
                let _ = out.send(frame(data + 1, why.as_bytes())).await;
            }
        }
    }
    drop(out);
    let sending = tokio::spawn(async move {
        while let Some(m) = queued.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    while let Some(Ok(m)) = stream.next().await {
        let data = match m {
            Message::Binary(b) => b,
            // The Python client sends str as text; the bytes are the same.
            Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        if channel % 2 != 0 || payload.is_empty() {
            continue;
        }
        if let Some(w) = writers.get_mut(&channel)
            && w.write_all(payload).await.is_err()
        {
            writers.remove(&channel);
        }
    }
    // The client is gone: the pod's connections close with the writers and readers.
    drop(writers);
    sending.abort();
    tracing::debug!(pod = %who, "port-forward ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query_as_the_kubelet_reads_them() {
        let cases: [(&str, Result<Vec<u16>, ()>); 7] = [
            ("ports=1234,1235", Ok(vec![1234, 1235])),
            ("ports=80&ports=443", Ok(vec![80, 443])),
            ("ports=8080", Ok(vec![8080])),
            ("ports=1234%2C1236", Ok(vec![1234, 1236])),
            ("ports=0", Err(())),
            ("ports=http", Err(())),
            ("", Err(())),
        ];
        for (q, want) in cases {
            assert_eq!(parse_ports(q).map_err(|_| ()), want, "{q:?}");
        }
    }

    #[test]
    fn frames_start_with_their_channel() {
        assert_eq!(
            frame(3, &1234u16.to_le_bytes()),
            Message::binary(Bytes::from_static(&[3, 0xd2, 0x04]))
        );
    }
}
