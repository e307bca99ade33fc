//! `exec` on the node (the kubelet's `/exec`), which the API server's `pods/exec` passes its
//! WebSocket upgrade to: the command runs as a process in the container's context (its
//! environment, working directory and process group, so it goes when the container does) and
//! its streams travel over the Kubernetes channel protocol (`v5.channel.k8s.io`, or
//! `v4.channel.k8s.io`): each binary message starts with its channel, 0 stdin, 1 stdout,
//! 2 stderr, 3 the final `Status`, 4 terminal resizes, 255 (v5) "close this channel".

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::NodeCtx;
use super::logs::{Body, text};
use super::process::{PodHandle, base_env, workdir};

const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// What to run, and which streams the caller wants.
struct Request {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// A query value, percent-decoded (`+` is a space, as in a form).
pub(super) fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: &str) -> Request {
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let flag = |k: &str| {
        pairs
            .iter()
            .any(|(n, v)| n == k && (v == "true" || v == "1"))
    };
    Request {
        command: pairs
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr"),
        tty: flag("tty"),
    }
}

/// The `Sec-WebSocket-Accept` answer to a `Sec-WebSocket-Key` (RFC 6455, section 4.2.2).
fn accept_key(key: &[u8]) -> String {
    use base64::Engine;
    let mut input = key.to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

type Found = (String, String, String, Request, std::sync::Arc<PodHandle>);

/// The running container a request's path names (`/exec|attach/NS/POD/CONTAINER`), with the
/// request's parameters; or the status and message refusing it.
fn running_container(
    ctx: &NodeCtx,
    req: &hyper::Request<hyper::body::Incoming>,
) -> Result<Found, (StatusCode, String)> {
    let parts: Vec<&str> = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let [_, namespace, pod, container] = parts.as_slice() else {
        return Err((StatusCode::NOT_FOUND, "not found".into()));
    };
    let request = parse_query(req.uri().query().unwrap_or_default());
    let Some(handle) = ctx
        .running_pod(namespace, pod)
        .filter(|h| h.container_running(container))
    else {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "container {container} is not running in pod {namespace}/{pod} (it may be starting, restarting or done)"
            ),
        ));
    };
    Ok((
        namespace.to_string(),
        pod.to_string(),
        container.to_string(),
        request,
        handle,
    ))
}

pub(crate) async fn serve(
    ctx: &NodeCtx,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (namespace, pod, container, request, handle) = match running_container(ctx, &req) {
        Ok(found) => found,
        Err((code, why)) => return text(code, why),
    };
    if request.command.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container".into(),
        );
    }
    let (protocol, key) = match handshake(&req) {
        Ok(h) => h,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    // The container's environment, as its own process got it.
    let spec = handle
        .pod
        .spec
        .as_ref()
        .and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|c| c.name == container)
        })
        .cloned();
    let Some(spec) = spec else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not valid for pod {pod}"),
        );
    };
    let own = match super::env::resolve(
        &ctx.client,
        &handle.pod,
        &spec,
        &handle.pod_ip,
        &ctx.host_ip,
    )
    .await
    {
        Ok(e) => e,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.0),
    };
    let mut env = base_env(&handle.dir, &pod, &handle.pod_ip);
    env.extend(own);
    let cwd = workdir(&spec, &handle.dir);
    // In a sandbox the command joins the container's namespaces.
    let command = super::process::in_container(ctx, &handle, &spec, &request.command);
    let v5 = protocol == PROTOCOLS[0];
    let who = format!("{namespace}/{pod}/{container}");
    switch(&mut req, protocol, &key, move |ws| async move {
        let session = Session {
            request,
            command,
            container,
            env,
            cwd,
            v5,
            who,
        };
        run(ws, &handle, session).await;
    })
}

pub(super) type Socket = WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// `attach` (the kubelet's `/attach`): the caller joins a running container that keeps stdin
/// open or has a terminal: its output from now on, its input, its terminal's size.
pub(crate) async fn serve_attach(
    ctx: &NodeCtx,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (namespace, pod, container, request, handle) = match running_container(ctx, &req) {
        Ok(found) => found,
        Err((code, why)) => return text(code, why),
    };
    let joined = {
        let points = handle.attach.lock().unwrap_or_else(|p| p.into_inner());
        points.get(&container).map(|p| Joined {
            input: p.input.clone(),
            output: p.output.subscribe(),
            terminal: p.terminal.as_ref().and_then(|t| t.try_clone().ok()),
            stdin_once: p.stdin_once,
        })
    };
    let Some(joined) = joined else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "container {container} in pod {namespace}/{pod} was started without stdin or tty: there is nothing to attach to (kubectl logs -f shows its output)"
            ),
        );
    };
    let (protocol, key) = match handshake(&req) {
        Ok(h) => h,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let v5 = protocol == PROTOCOLS[0];
    switch(&mut req, protocol, &key, move |ws| {
        attach_session(ws, joined, request, v5)
    })
}

/// What an attach session holds of its container.
struct Joined {
    input: tokio::sync::mpsc::UnboundedSender<Option<Vec<u8>>>,
    output: tokio::sync::broadcast::Receiver<(u8, Vec<u8>)>,
    terminal: Option<std::fs::File>,
    stdin_once: bool,
}

async fn attach_session(ws: Socket, joined: Joined, request: Request, v5: bool) {
    use tokio::sync::broadcast::error::RecvError;
    let Joined {
        input,
        mut output,
        terminal,
        stdin_once,
    } = joined;
    let (mut sink, incoming) = ws.split();
    let mut incoming = incoming.map(|m| m.map(text_as_binary));
    let mut stdin_done = false;
    loop {
        tokio::select! {
            out = output.recv() => match out {
                Ok((channel, data)) => {
                    let wanted = match channel {
                        STDOUT => request.stdout,
                        _ => request.stderr,
                    };
                    if !wanted {
                        continue;
                    }
                    let mut frame = Vec::with_capacity(data.len() + 1);
                    frame.push(channel);
                    frame.extend(data);
                    if sink.send(Message::binary(frame)).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                // The container is done.
                Err(RecvError::Closed) => {
                    let _ = sink.send(Message::binary(status(Ok(0), &[]))).await;
                    close(&mut sink).await;
                    return;
                }
            },
            msg = incoming.next() => match msg {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(&STDIN) if request.stdin => {
                        let _ = input.send(Some(data[1..].to_vec()));
                    }
                    Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => {
                        stdin_done = true;
                        if stdin_once {
                            let _ = input.send(None);
                        }
                    }
                    Some(&RESIZE) => {
                        if let Some(t) = &terminal {
                            resize(t, &data[1..]);
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // The caller left: with stdinOnce, the container's input ends with this session.
    if stdin_once && request.stdin && !stdin_done {
        let _ = input.send(None);
    }
}

/// A client's text message as the binary one it stands for: the Python client sends `str`
/// stdin as text frames (the channel's character, then the text), and kube-apiserver reads
/// both kinds alike.
fn text_as_binary(m: Message) -> Message {
    match m {
        Message::Text(t) => Message::binary(Bytes::copy_from_slice(t.as_bytes())),
        other => other,
    }
}

/// The WebSocket protocol to speak and the client's key, or why the request is refused.
fn handshake(
    req: &hyper::Request<hyper::body::Incoming>,
) -> Result<(&'static str, Vec<u8>), String> {
    let headers = req.headers();
    let offered: Vec<String> = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let Some(key) = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
    else {
        return Err("Upgrade request required".into());
    };
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return Err(format!(
            "none of the offered WebSocket protocols {offered:?} is spoken here ({})",
            PROTOCOLS.join(", ")
        ));
    };
    Ok((protocol, key))
}

/// Switch the connection to a WebSocket and hand it to `session` once upgraded.
pub(super) fn switch<F, Fut>(
    req: &mut hyper::Request<hyper::body::Incoming>,
    protocol: &'static str,
    key: &[u8],
    session: F,
) -> Response<Body>
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        session(ws).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, accept_key(key))
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The command with pipes for the streams asked for, in the container's process group (so
/// that it stops with the container).
fn spawn_with_pipes(
    request: &Request,
    command: &[String],
    env: Vec<(String, String)>,
    cwd: &std::path::Path,
    handle: &PodHandle,
    container: &str,
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(pipe_if(request.stdin))
        .stdout(pipe_if(request.stdout))
        .stderr(pipe_if(request.stderr))
        .kill_on_drop(true);
    let group = std::fs::read_to_string(handle.dir.join("run").join(format!("{container}.pid")))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    match group.map(|g| cmd.process_group(g).spawn()) {
        Some(Ok(child)) => Ok(child),
        // The container's group is gone (it is restarting): a group of its own.
        _ => cmd.process_group(0).spawn(),
    }
}

/// The command on a new pseudo-terminal, as its session's controlling terminal (through
/// util-linux's `setsid --ctty`, which needs no code between fork and exec here). Returns the
/// terminal's master side.
pub(crate) fn spawn_on_terminal(
    command: &[String],
    mut env: Vec<(String, String)>,
    cwd: &std::path::Path,
) -> std::io::Result<(tokio::process::Child, std::fs::File)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        // Not this process's terminal: only the command's.
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?;
    if !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    let mut cmd = tokio::process::Command::new("setsid");
    cmd.arg("--ctty")
        .args(command)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => std::io::Error::new(
            e.kind(),
            "a terminal (-t) needs util-linux's setsid on the node, which is not installed",
        ),
        _ => e,
    })?;
    // The command holds the only handles on the terminal's other side now: when it is done,
    // reading the master side ends.
    drop(cmd);
    Ok((child, std::fs::File::from(master)))
}

/// A resize message (`{"Width": W, "Height": H}`) applied to the terminal.
fn resize(master: &std::fs::File, message: &[u8]) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    if let Ok(size) = serde_json::from_slice::<Size>(message) {
        let _ = rustix::termios::tcsetwinsize(
            master,
            rustix::termios::Winsize {
                ws_row: size.height,
                ws_col: size.width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        );
    }
}

fn pipe_if(wanted: bool) -> std::process::Stdio {
    if wanted {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    }
}

/// The `Status` that ends the stream: success, or why not (kubectl exits with the code).
fn status(outcome: Result<i32, String>, command: &[String]) -> Vec<u8> {
    let body = match outcome {
        Ok(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(code) => serde_json::json!({
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => serde_json::json!({
            "metadata": {}, "status": "Failure", "reason": "InternalError", "message": message,
        }),
    };
    let mut frame = vec![ERROR];
    frame.extend(serde_json::to_vec(&body).unwrap_or_default());
    frame
}

/// One command to run in a container, and how.
struct Session {
    request: Request,
    /// What runs: the request's command, or that command entering the container's sandbox.
    command: Vec<String>,
    container: String,
    env: Vec<(String, String)>,
    cwd: std::path::PathBuf,
    /// `v5.channel.k8s.io`, whose clients may close stdin.
    v5: bool,
    /// `namespace/pod/container`, for logs.
    who: String,
}

async fn run<S>(ws: WebSocketStream<S>, handle: &PodHandle, session: Session)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Session {
        request,
        command,
        container,
        env,
        cwd,
        v5,
        who,
    } = session;
    let (mut sink, incoming) = ws.split();
    let mut incoming = incoming.map(|m| m.map(text_as_binary));
    let program = request.command[0].clone();
    let spawned = if request.tty {
        spawn_on_terminal(&command, env, &cwd).map(|(child, master)| (child, Some(master)))
    } else {
        spawn_with_pipes(&request, &command, env, &cwd, handle, &container)
            .map(|child| (child, None))
    };
    let (mut child, terminal) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            let message = format!("cannot run {program:?} in container {container}: {e}");
            let _ = sink
                .send(Message::binary(status(Err(message), &request.command)))
                .await;
            close(&mut sink).await;
            return;
        }
    };
    tracing::debug!(target = %who, command = ?request.command, tty = request.tty, "exec");
    type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
    type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;
    // Where output comes from, where input goes, and the terminal to resize.
    let (outputs, input, resizer): (Vec<(u8, Reader)>, Option<Writer>, Option<std::fs::File>) =
        match terminal {
            Some(master) => {
                let clone = |f: &std::fs::File| f.try_clone().ok();
                let reader =
                    clone(&master).map(|f| Box::new(tokio::fs::File::from_std(f)) as Reader);
                let writer =
                    clone(&master).map(|f| Box::new(tokio::fs::File::from_std(f)) as Writer);
                (
                    reader.map(|r| (STDOUT, r)).into_iter().collect(),
                    writer.filter(|_| request.stdin),
                    Some(master),
                )
            }
            None => {
                let stderr_channel = if request.stderr { STDERR } else { STDOUT };
                let stdout = child.stdout.take().map(|p| (STDOUT, Box::new(p) as Reader));
                let stderr = child
                    .stderr
                    .take()
                    .map(|p| (stderr_channel, Box::new(p) as Reader));
                let stdin = child.stdin.take().map(|p| Box::new(p) as Writer);
                (stdout.into_iter().chain(stderr).collect(), stdin, None)
            }
        };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(16);
    for (channel, mut pipe) in outputs {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                // A terminal whose last user left reads as an error (EIO): the end, too.
                match pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((channel, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    // Stdin is written by its own task: a child that does not read must not stop the output.
    let (stdin_tx, mut stdin_rx) = tokio::sync::mpsc::unbounded_channel::<Option<Vec<u8>>>();
    if let Some(mut stdin) = input {
        tokio::spawn(async move {
            while let Some(Some(data)) = stdin_rx.recv().await {
                if stdin.write_all(&data).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            // Dropped: the child sees the end of its input.
        });
    }
    let mut exited: Option<Result<i32, String>> = None;
    let mut output_done = false;
    let mut client_gone = false;
    while exited.is_none() || !output_done {
        tokio::select! {
            out = rx.recv(), if !output_done => match out {
                Some((channel, data)) => {
                    let mut frame = Vec::with_capacity(data.len() + 1);
                    frame.push(channel);
                    frame.extend(data);
                    if sink.send(Message::binary(frame)).await.is_err() {
                        client_gone = true;
                        let _ = child.start_kill();
                    }
                }
                None => output_done = true,
            },
            msg = incoming.next(), if !client_gone => match msg {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(&STDIN) => {
                        let _ = stdin_tx.send(Some(data[1..].to_vec()));
                    }
                    // v5: the client closes a channel; stdin is the one it may close.
                    Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => {
                        let _ = stdin_tx.send(None);
                    }
                    Some(&RESIZE) => {
                        if let Some(t) = &resizer {
                            resize(t, &data[1..]);
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The caller went away: so does the command.
                    client_gone = true;
                    let _ = stdin_tx.send(None);
                    let _ = child.start_kill();
                }
                Some(Ok(_)) => {}
            },
            code = child.wait(), if exited.is_none() => {
                exited = Some(code.map(|s| {
                    use std::os::unix::process::ExitStatusExt;
                    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
                }).map_err(|e| e.to_string()));
            }
        }
    }
    if !client_gone {
        let outcome = exited.unwrap_or(Ok(0));
        let _ = sink
            .send(Message::binary(status(outcome, &request.command)))
            .await;
        close(&mut sink).await;
    }
}

/// A normal closure (1000): kubectl takes any other, or none, for an error.
async fn close<S>(sink: &mut S)
where
    S: futures::Sink<Message> + Unpin,
{
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_are_read_as_binary_ones() {
        let stdin = Message::text("\u{0}echo hi\n");
        assert_eq!(
            text_as_binary(stdin),
            Message::binary(b"\x00echo hi\n".to_vec())
        );
        let resize = Message::binary(b"\x04{}".to_vec());
        assert_eq!(text_as_binary(resize.clone()), resize);
        assert_eq!(
            text_as_binary(Message::Ping(Bytes::new())),
            Message::Ping(Bytes::new())
        );
    }

    #[test]
    fn the_handshake_answer_is_rfc_6455s() {
        // The example of RFC 6455, section 1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn commands_come_decoded_and_in_order() {
        let r = parse_query(
            "command=sh&command=-c&command=echo%20a%2Bb%3B%20exit%203&stdin=true&tty=false&command=%zz%",
        );
        assert_eq!(r.command, ["sh", "-c", "echo a+b; exit 3", "%zz%"]);
        assert!(r.stdin && !r.stdout && !r.stderr && !r.tty);
        assert_eq!(decode("caf%C3%A9+x"), "café x");
    }
}
