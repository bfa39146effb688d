//! The `pods/exec` subresource: `kubectl exec` runs a command in a running
//! container, its input, output and exit code carried over a websocket.
//!
//! The request is `GET .../pods/NAME/exec?command=psql&command=-c&...`
//! with `container`, `stdin`, `stdout`, `stderr` and `tty`, upgraded to a
//! websocket whose subprotocol is the client's first choice among
//! `v5.channel.k8s.io` and `v4.channel.k8s.io`, what kubectl 1.30 and
//! later speak (client-go's websocket executor; upstream's
//! `k8s.io/apimachinery/pkg/util/remotecommand`). Every binary frame
//! starts with a channel: 0 stdin (client to server), 1 stdout, 2 stderr,
//! 3 the error channel, which carries one `Status` once the command has
//! ended (`Success`, or `Failure` with reason `NonZeroExitCode` and a
//! cause `ExitCode` whose message is the code, from which kubectl takes
//! its own exit code), and 4 terminal resizes (`{"Width":..,"Height":..}`).
//! v5 adds channel 255: the client's `[255, 0]` closes stdin, so
//! `kubectl exec -i ... < file` ends the command's input; with v4 stdin
//! stays open until the websocket closes. With `tty=true` the command
//! runs on a pseudo-terminal sized by the client's first resize (later
//! resizes are not applied: setting a terminal's size needs an ioctl, and
//! the crate has no `unsafe`), stderr goes to the terminal as on a node,
//! and the terminal has no controlling process group, so Ctrl-C reaches
//! the command as a byte, not as SIGINT. When the client goes away the
//! command's process group is killed; while it runs, the runtime knows
//! the group, so its cleanup (shutdown, the watchdog of a killed
//! sandbox) kills it with the pods' processes.
//!
//! What the command runs as, and where, is the pod runtime's answer
//! ([`crate::runtime::PodRuntime::exec`]): the real-PostgreSQL runtime
//! runs it in the container's context (`pgruntime::exec`), the simulated
//! runtime refuses with a message saying how to get one that runs it.
//! Errors a kubelet reports before streaming (no such pod, container or
//! command, a finished pod) are the upgrade request's answer, which
//! kubectl prints.
//!
//! Older kubectl, and kubectl with `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`,
//! speak SPDY (`Upgrade: SPDY/3.1`), which is not served: the answer says
//! to use the websocket protocol.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header, request::Parts};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::registry::ResourceType;
use crate::runtime::PodRuntime;

/// The websocket subprotocols served, newest first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: the client's `[CLOSE, channel]` closes that channel (stdin).
const CLOSE: u8 = 255;

/// How long a tty session waits for the client's first terminal size.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(500);
/// How long output may still arrive once the command has exited (a
/// child it left behind may hold its stdout).
const LINGER: Duration = Duration::from_secs(1);

/// The query of an exec request.
#[derive(Debug, Default, PartialEq)]
struct Options {
    command: Vec<String>,
    container: Option<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn options(query: Option<&str>) -> Result<Options> {
    let mut o = Options::default();
    let truthy = |v: &str| matches!(v, "true" | "1" | "True" | "TRUE");
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "command" => o.command.push(v.into_owned()),
            "container" if !v.is_empty() => o.container = Some(v.into_owned()),
            "stdin" => o.stdin = truthy(&v),
            "stdout" => o.stdout = truthy(&v),
            "stderr" => o.stderr = truthy(&v),
            "tty" => o.tty = truthy(&v),
            _ => {}
        }
    }
    if o.command.is_empty() {
        return Err(Error::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    if !(o.stdin || o.stdout || o.stderr) {
        return Err(Error::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    Ok(o)
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The client's subprotocols, in its order of preference.
fn requested_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The message for a client that does not speak the websocket protocols.
pub fn spdy_refusal() -> String {
    format!(
        "the sandbox serves exec over websockets ({}), which kubectl 1.30 and later use by default, not over SPDY: use kubectl 1.30 or later and leave KUBECTL_REMOTE_COMMAND_WEBSOCKETS unset (kubectl 1.29: set it to true)",
        PROTOCOLS.join(", ")
    )
}

/// Serves `GET|POST .../pods/NAME/exec`: checks the request and asks the
/// runtime for the command, then upgrades and streams (module docs).
pub async fn serve(
    c: &Arc<Cluster>,
    rt: &ResourceType,
    parts: &mut Parts,
    ns: &str,
    name: &str,
) -> Result<Response> {
    let pod = c.get(rt, ns, name)?;
    let opts = options(parts.uri.query())?;
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    let container = match (&opts.container, containers.as_slice()) {
        (Some(c), _) => c.clone(),
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(Error::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    if !containers.contains(&container) {
        return Err(Error::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    if let Some(phase @ ("Succeeded" | "Failed")) =
        pod.pointer("/status/phase").and_then(Value::as_str)
    {
        return Err(Error::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let uid = crate::meta::uid_of(&pod).to_string();
    let command = c
        .runtime
        .exec(&uid, &container, &opts.command)
        .map_err(Error::bad_request)?;
    if !is_websocket(&parts.headers) {
        return Err(Error::bad_request(spdy_refusal()));
    }
    let requested = requested_protocols(&parts.headers);
    let Some(protocol) = requested
        .iter()
        .find(|p| PROTOCOLS.contains(&p.as_str()))
        .cloned()
    else {
        return Err(Error::bad_request(format!(
            "unable to upgrade websocket connection: requested protocol(s) are not supported: {requested:?}; supports {PROTOCOLS:?}"
        )));
    };
    let upgrade = WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|r| Error::bad_request(r.body_text()))?;
    let v5 = protocol == PROTOCOLS[0];
    let runtime = c.runtime.clone();
    Ok(upgrade
        .protocols([protocol])
        .on_upgrade(move |socket| session(socket, command, opts, v5, runtime)))
}

/// The Status the error channel carries once the command has ended.
fn exit_status(argv: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", argv.join(" ")),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The Status for a command that could not be started.
fn start_failure(message: String) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("error executing command in container: {message}"),
        "reason": "InternalError",
        "code": 500,
    })
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(bytes.into())
}

fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}

/// The first terminal size of a resize frame, as a pty wants it.
fn winsize(data: &[u8]) -> Option<nix::pty::Winsize> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let dim = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
    };
    Some(nix::pty::Winsize {
        ws_row: dim("Height")?,
        ws_col: dim("Width")?,
        ws_xpixel: 0,
        ws_ypixel: 0,
    })
}

/// Copies a reader to a channel of the client until it ends.
async fn pump(mut from: impl AsyncRead + Unpin, channel: u8, out: mpsc::Sender<(u8, Vec<u8>)>) {
    let mut buf = vec![0u8; 32 * 1024];
    // A pty's master reads EIO once the command has exited: an end too.
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || out.send((channel, buf[..n].to_vec())).await.is_err() {
            return;
        }
    }
}

/// Writes the client's stdin to the command until the client closes it.
async fn feed(mut to: impl AsyncWrite + Unpin, mut from: mpsc::Receiver<Vec<u8>>) {
    while let Some(data) = from.recv().await {
        if to.write_all(&data).await.is_err() || to.flush().await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// The command's ends the session copies: stdin, stdout, stderr.
type Ends = (
    Option<Box<dyn AsyncWrite + Send + Unpin>>,
    Option<Box<dyn AsyncRead + Send + Unpin>>,
    Option<Box<dyn AsyncRead + Send + Unpin>>,
);

/// Starts the command on pipes, or on a pseudo-terminal of `size`.
fn start(
    mut command: tokio::process::Command,
    opts: &Options,
    tty: Option<nix::pty::Winsize>,
) -> std::io::Result<(tokio::process::Child, Ends)> {
    if let Some(size) = tty {
        let pty = nix::pty::openpty(&size, None).map_err(std::io::Error::from)?;
        let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
        command
            .stdin(slave(&pty.slave)?)
            .stdout(slave(&pty.slave)?)
            .stderr(Stdio::from(pty.slave));
        let child = command.spawn()?;
        // The command's copies of the terminal are its own now; the
        // master reads EIO once every holder of the slave has gone.
        drop(command);
        let writer = tokio::fs::File::from_std(std::fs::File::from(pty.master.try_clone()?));
        let reader = tokio::fs::File::from_std(std::fs::File::from(pty.master));
        let stdin: Option<Box<dyn AsyncWrite + Send + Unpin>> =
            opts.stdin.then(|| Box::new(writer) as _);
        return Ok((child, (stdin, Some(Box::new(reader)), None)));
    }
    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    command
        .stdin(pipe(opts.stdin))
        .stdout(pipe(opts.stdout))
        .stderr(pipe(opts.stderr));
    let mut child = command.spawn()?;
    let stdin = child.stdin.take().map(|s| Box::new(s) as _);
    let stdout = child.stdout.take().map(|s| Box::new(s) as _);
    let stderr = child.stderr.take().map(|s| Box::new(s) as _);
    Ok((child, (stdin, stdout, stderr)))
}

/// Runs the command for an upgraded connection, to its exit status.
async fn session(
    socket: WebSocket,
    command: tokio::process::Command,
    opts: Options,
    v5: bool,
    runtime: Arc<dyn PodRuntime>,
) {
    let (mut sink, mut stream) = socket.split();
    // A terminal is sized by the client's first resize, which kubectl
    // sends at once; stdin arriving before it is kept.
    let mut early = vec![];
    let mut size = None;
    if opts.tty {
        let deadline = tokio::time::Instant::now() + FIRST_SIZE_WAIT;
        while let Ok(Some(Ok(Message::Binary(b)))) =
            tokio::time::timeout_at(deadline, stream.next()).await
        {
            if b.first() == Some(&RESIZE) {
                size = winsize(&b[1..]);
                break;
            }
            early.push(b);
        }
    }
    let tty = opts.tty.then(|| {
        size.unwrap_or(nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        })
    });
    let (mut child, (stdin, stdout, stderr)) = match start(command, &opts, tty) {
        Ok(started) => started,
        Err(e) => {
            let status = start_failure(format!("failed to start {:?}: {e}", opts.command[0]));
            let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
            let _ = sink.send(normal_close()).await;
            let _ = sink.close().await;
            return;
        }
    };
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    if let Some(pgid) = pgid {
        runtime.exec_running(pgid, true);
    }
    let (out, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    let mut pumps = vec![];
    if let Some(s) = stdout {
        pumps.push(tokio::spawn(pump(s, STDOUT, out.clone())));
    }
    if let Some(s) = stderr {
        pumps.push(tokio::spawn(pump(s, STDERR, out.clone())));
    }
    let (to_stdin, stdin_rx) = mpsc::channel::<Vec<u8>>(64);
    let feeder = stdin.map(|s| tokio::spawn(feed(s, stdin_rx)));
    // The client's frames: stdin, its close (v5), resizes; its end.
    let reader = tokio::spawn(async move {
        let mut to_stdin = Some(to_stdin);
        let mut frames =
            futures::stream::iter(early.into_iter().map(|b| Ok(Message::Binary(b)))).chain(stream);
        while let Some(Ok(msg)) = frames.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            match (data.first(), data.get(1)) {
                (Some(&STDIN), _) => {
                    if let Some(tx) = &to_stdin {
                        let _ = tx.send(data[1..].to_vec()).await;
                    }
                }
                (Some(&CLOSE), Some(&STDIN)) if v5 => to_stdin = None,
                _ => {}
            }
        }
    });
    // Frames for the client, until every sender is gone.
    let writer = tokio::spawn(async move {
        while let Some((channel, data)) = out_rx.recv().await {
            if sink.send(frame(channel, &data)).await.is_err() {
                return None;
            }
        }
        Some(sink)
    });
    let reader_abort = reader.abort_handle();
    let status = tokio::select! {
        s = child.wait() => Some(s),
        _ = reader => None,
    };
    let kill = || {
        if let Some(pgid) = pgid {
            crate::pgruntime::process::kill_tree(pgid);
            runtime.exec_running(pgid, false);
        }
    };
    let Some(status) = status else {
        // The client went away: so does the command.
        kill();
        let _ = child.wait().await;
        for p in pumps {
            p.abort();
        }
        return;
    };
    for p in pumps {
        let abort = p.abort_handle();
        if tokio::time::timeout(LINGER, p).await.is_err() {
            abort.abort();
        }
    }
    kill();
    if let Some(f) = feeder {
        f.abort();
    }
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
        }
        Err(_) => 128 + 9,
    };
    let _ = out
        .send((
            ERROR,
            exit_status(&opts.command, code).to_string().into_bytes(),
        ))
        .await;
    drop(out);
    if let Ok(Some(mut sink)) = writer.await {
        // A normal closure: client-go reads it as the end of every
        // stream (a close without a code is an error to it).
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    }
    // The client's answer to the close ends its reader.
    tokio::time::sleep(Duration::from_millis(50)).await;
    reader_abort.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_command_and_its_streams() {
        let o = options(Some(
            "command=psql&command=-c&command=select+1&container=postgres&stdin=true&stdout=true&stderr=true&tty=false",
        ))
        .expect("valid");
        assert_eq!(o.command, ["psql", "-c", "select 1"]);
        assert_eq!(o.container.as_deref(), Some("postgres"));
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        assert!(options(Some("stdout=true")).is_err());
        assert!(options(Some("command=ls")).is_err());
    }

    #[test]
    fn a_non_zero_exit_is_a_failure_whose_cause_is_the_code() {
        assert_eq!(exit_status(&["true".into()], 0)["status"], "Success");
        let s = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }
}
