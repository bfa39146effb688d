//! The `pods/portforward` subresource: TCP connections to a pod's ports
//! through the API server, as kube-rs's `Api::<Pod>::portforward` (and
//! client-go's websocket port-forward) make them.
//!
//! On a cluster the API server hands the request to the pod's kubelet,
//! whose container runtime dials `localhost:<port>` inside the pod's
//! network namespace and copies bytes both ways. The request is
//! `GET .../pods/NAME/portforward?ports=5432,8080` upgraded to a websocket
//! whose subprotocol is the client's first choice among
//! `v4.channel.k8s.io` (binary frames) and `v4.base64.channel.k8s.io`
//! (text frames, base64); a request naming only others is refused. Every
//! frame starts with a channel number: the i-th port of `ports` has data
//! channel 2i and error channel 2i+1, and the server's first frame on each
//! carries the port as two little-endian bytes. What the client sends on a
//! data channel reaches the pod's port, what the pod answers comes back on
//! it. When the connection to the port fails (nothing listens) or the copy
//! ends in an error, the error channel carries the kubelet's message,
//! `error forwarding port 5432 to pod <sandbox>, uid : failed to execute
//! portforward in network namespace ...: connect: connection refused ...`,
//! and that port is done. When one direction of a port's copy ends, the
//! other gets a second to finish (as containerd does); when every port is
//! done the server closes the websocket.
//!
//! Pods of the real runtime listen on their pod IP, a loopback address of
//! the host, so the sandbox dials `podIP:port`. Pods of the simulated
//! runtime (or of a runtime whose pod IPs are not loopback addresses) run
//! no processes and have made-up addresses that are never dialled: every
//! port reports connection refused, as a pod in which nothing listens does.
//! A pod the runtime does not run (not started yet, or finished) is an
//! error of the upgrade request itself (500, `failed to find sandboxID for
//! pod ...`), as the kubelet answers.
//!
//! kubectl's `port-forward` speaks SPDY/3.1, tunnelled through a websocket
//! (subprotocol `SPDY/3.1+portforward.k8s.io`, kubectl 1.31 and later by
//! default) or, as its fallback, by a direct `Upgrade: SPDY/3.1` of a
//! POST; it never uses the channel protocols above. The tunnelled form is
//! served ([`spdy`]: the ports come in each stream's headers, so
//! the request has no `ports`); the direct one gets 400 with a message
//! saying to use the tunnelled one, and what to do without forwarding
//! (connect to the Service's ClusterIP or the pod's IP, which are
//! addresses of the host), which kubectl prints.

pub mod spdy;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header, request::Parts};
use axum::response::Response;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::registry::ResourceType;

/// The websocket subprotocols served, binary first.
pub const PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

/// How long a port's connection is given to open.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the other direction of a copy may go on once one has ended.
const LINGER: Duration = Duration::from_secs(1);

/// Where a pod's ports are.
#[derive(Debug, Clone)]
enum Target {
    /// A pod of the real runtime: dial this address.
    Dial(IpAddr),
    /// Nothing listens: every port is refused, nothing is dialled.
    Nothing,
}

/// The pod a forward goes to, as error messages name it.
#[derive(Debug, Clone)]
pub(crate) struct PodRef {
    /// The sandbox id the runtime names the pod by (its uid here).
    sandbox: String,
    /// The pod IP, named in messages.
    ip: String,
    target: Target,
}

impl PodRef {
    /// The kubelet's (containerd's) message for a port that cannot be
    /// reached.
    fn dial_error(&self, port: u16, why: &str) -> String {
        let sandbox = &self.sandbox;
        format!(
            "error forwarding port {port} to pod {sandbox}, uid : failed to execute portforward in network namespace \"/var/run/netns/cni-{sandbox}\": failed to connect to localhost:{port} inside namespace \"{sandbox}\", IPv4: dial tcp4 {}:{port}: {why} IPv6 dial tcp6 [::1]:{port}: {why} ",
            self.ip
        )
    }

    /// Connects to `port` of the pod, or the kubelet's message for why not.
    pub(crate) async fn dial(
        &self,
        port: u16,
        limit: Duration,
    ) -> std::result::Result<tokio::net::TcpStream, String> {
        let ip = match self.target {
            Target::Dial(ip) => ip,
            Target::Nothing => return Err(self.dial_error(port, "connect: connection refused")),
        };
        match tokio::time::timeout(limit, tokio::net::TcpStream::connect((ip, port))).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(self.dial_error(port, &go_error(&e))),
            Err(_) => Err(self.dial_error(port, "i/o timeout")),
        }
    }

    /// The kubelet's message for a forward that ended in an error.
    pub(crate) fn copy_error(&self, port: u16, e: &std::io::Error) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid : {}",
            self.sandbox,
            go_error(e)
        )
    }
}

/// An I/O error in Go's words (what the kubelet's messages contain).
fn go_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        ErrorKind::TimedOut => "i/o timeout".into(),
        ErrorKind::ConnectionReset => "read: connection reset by peer".into(),
        _ => e.to_string(),
    }
}

/// The ports of the query: every `ports` parameter, comma-separated.
fn ports(query: Option<&str>) -> Result<Vec<u16>> {
    let mut out = vec![];
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if k != "ports" {
            continue;
        }
        if v.is_empty() {
            return Err(Error::bad_request(
                "query parameter \"port\" cannot be empty",
            ));
        }
        for p in v.split(',') {
            let port: u16 = p
                .trim()
                .parse()
                .map_err(|_| Error::bad_request(format!("unable to parse {v:?} as a port")))?;
            if port == 0 {
                return Err(Error::bad_request(format!("port {v:?} must be > 0")));
            }
            out.push(port);
        }
    }
    if out.is_empty() {
        return Err(Error::bad_request("query parameter \"port\" is required"));
    }
    Ok(out)
}

/// What kubectl prints when its SPDY port-forward is refused: what to do
/// instead.
pub fn spdy_refusal() -> String {
    format!(
        "the sandbox serves kubectl port-forward's SPDY only tunnelled through a websocket, which kubectl 1.31 and later use by default: use kubectl 1.31 or later and leave KUBECTL_PORT_FORWARD_WEBSOCKETS unset. There is no need to forward, though: with the real-PostgreSQL runtime a Service's ClusterIP and a pod's IP are addresses of this host, so connect to them directly, e.g. psql -h \"$(kubectl get svc NAME -o jsonpath='{{.spec.clusterIP}}')\" -p 5432 (or a pod's .status.podIP); programs can forward with a websocket client (kube-rs Api::<Pod>::portforward, subprotocol {})",
        PROTOCOLS[0]
    )
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

/// Serves `GET|POST .../pods/NAME/portforward`: checks the request, then
/// upgrades it and forwards (see the module docs).
pub async fn serve(
    c: &Arc<Cluster>,
    rt: &ResourceType,
    parts: &mut Parts,
    ns: &str,
    name: &str,
) -> Result<Response> {
    let pod = c.get(rt, ns, name)?;
    if !is_websocket(&parts.headers) {
        let spdy = parts
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_uppercase().starts_with("SPDY/"));
        if spdy {
            return Err(Error::bad_request(spdy_refusal()));
        }
        // What the API server's upgrade-aware proxy answers to a plain request.
        return Err(Error::bad_request("Upgrade request required"));
    }
    // The protocol first: kubectl's SPDY tunnelled in a websocket sends no
    // `ports` (they travel inside SPDY), and the protocol is what to report.
    let requested = requested_protocols(&parts.headers);
    let protocol = match requested.iter().find(|p| PROTOCOLS.contains(&p.as_str())) {
        Some(p) => Some(p.clone()),
        None if requested.is_empty() => None,
        None if requested.iter().any(|p| p == spdy::PORT_FORWARD_PROTOCOL) => {
            Some(spdy::PORT_FORWARD_PROTOCOL.to_string())
        }
        None => {
            return Err(Error::bad_request(format!(
                "unable to upgrade websocket connection: requested protocol(s) are not supported: {requested:?}; supports {PROTOCOLS:?}"
            )));
        }
    };
    let spdy = protocol.as_deref() == Some(spdy::PORT_FORWARD_PROTOCOL);
    // SPDY carries its ports in each stream's headers.
    let ports = if spdy {
        vec![]
    } else {
        ports(parts.uri.query())?
    };
    let uid = crate::meta::uid_of(&pod).to_string();
    // A finished pod's sandbox is gone, whether or not the runtime has
    // dropped its record yet (the pod's phase is written first).
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if finished || c.runtime.status(&uid).is_none() {
        return Err(Error::internal(format!(
            "failed to find sandboxID for pod \"{name}_{ns}({uid})\""
        )));
    }
    let target = match c
        .runtime
        .pod_ip(&uid)
        .and_then(|ip| ip.parse::<IpAddr>().ok())
    {
        Some(ip) if ip.is_loopback() => Target::Dial(ip),
        _ => Target::Nothing,
    };
    let pod_ref = PodRef {
        sandbox: uid,
        ip: pod
            .pointer("/status/podIP")
            .and_then(Value::as_str)
            .unwrap_or("127.0.0.1")
            .to_string(),
        target,
    };
    let upgrade = WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|r| Error::bad_request(r.body_text()))?;
    if spdy {
        let upgrade = upgrade.protocols([spdy::PORT_FORWARD_PROTOCOL]);
        return Ok(upgrade.on_upgrade(move |socket| spdy::serve_port_forward(socket, pod_ref)));
    }
    let base64 = protocol.as_deref() == Some(PROTOCOLS[1]);
    let upgrade = match protocol {
        Some(p) => upgrade.protocols([p]),
        None => upgrade,
    };
    Ok(upgrade.on_upgrade(move |socket| forward(socket, ports, pod_ref, base64)))
}

/// A frame on a channel, in the negotiated encoding.
fn frame(channel: u8, data: &[u8], base64: bool) -> Message {
    if base64 {
        let text = format!(
            "{}{}",
            char::from(b'0' + channel),
            base64::engine::general_purpose::STANDARD.encode(data)
        );
        Message::Text(text.into())
    } else {
        let mut bytes = Vec::with_capacity(data.len() + 1);
        bytes.push(channel);
        bytes.extend_from_slice(data);
        Message::Binary(bytes.into())
    }
}

/// The channel and data of a client frame, if it is one.
fn unframe(msg: Message, base64: bool) -> Option<(u8, Vec<u8>)> {
    match msg {
        Message::Binary(b) if !b.is_empty() => Some((b[0], b[1..].to_vec())),
        Message::Text(t) if base64 && !t.is_empty() => {
            let channel = t.as_bytes()[0].checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(&t.as_bytes()[1..])
                .ok()?;
            Some((channel, data))
        }
        _ => None,
    }
}

/// Runs the forward of an upgraded connection until every port is done.
async fn forward(socket: WebSocket, ports: Vec<u16>, pod: PodRef, base64: bool) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    // Each channel's first frame names its port.
    for (i, port) in ports.iter().enumerate() {
        let channel = (2 * i) as u8;
        for ch in [channel, channel + 1] {
            if sink
                .send(frame(ch, &port.to_le_bytes(), base64))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let mut to_ports = vec![];
    let mut tasks = vec![];
    for (i, port) in ports.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
        to_ports.push(tx);
        tasks.push(tokio::spawn(forward_port(
            (2 * i) as u8,
            *port,
            pod.clone(),
            rx,
            out.clone(),
        )));
    }
    drop(out);
    // The client's frames go to their ports; its end of the websocket is
    // the end of every port's input.
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            let Some((channel, data)) = unframe(msg, base64) else {
                continue;
            };
            if channel % 2 == 0
                && let Some(tx) = to_ports.get(usize::from(channel / 2))
            {
                let _ = tx.send(data).await;
            }
        }
    });
    // Frames for the client, until every port's task has finished.
    while let Some((channel, data)) = out_rx.recv().await {
        if sink.send(frame(channel, &data, base64)).await.is_err() {
            break;
        }
    }
    // Closes the websocket, or completes the close the client began
    // (flushing the answer tungstenite queued).
    let _ = sink.close().await;
    for t in tasks {
        t.abort();
    }
    // The client's answer to a close the server began ends the reader.
    let abort = reader.abort_handle();
    if tokio::time::timeout(LINGER, reader).await.is_err() {
        abort.abort();
    }
}

/// Forwards one port: dials it, then copies both ways; failures go to the
/// port's error channel (`channel + 1`).
async fn forward_port(
    channel: u8,
    port: u16,
    pod: PodRef,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<(u8, Vec<u8>)>,
) {
    let error = |message: String| (channel + 1, message.into_bytes());
    let ip = match pod.target {
        Target::Dial(ip) => ip,
        Target::Nothing => {
            let _ = out
                .send(error(pod.dial_error(port, "connect: connection refused")))
                .await;
            return;
        }
    };
    let tcp = match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((ip, port)))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = out.send(error(pod.dial_error(port, &go_error(&e)))).await;
            return;
        }
        Err(_) => {
            let _ = out.send(error(pod.dial_error(port, "i/o timeout"))).await;
            return;
        }
    };
    let (mut read, mut write) = tcp.into_split();
    let to_pod = async move {
        while let Some(data) = from_client.recv().await {
            write.write_all(&data).await?;
        }
        write.shutdown().await
    };
    let out2 = out.clone();
    let from_pod = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = read.read(&mut buf).await?;
            if n == 0 || out2.send((channel, buf[..n].to_vec())).await.is_err() {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    tokio::pin!(to_pod);
    tokio::pin!(from_pod);
    // The first direction to end decides; the other gets a moment.
    let first = tokio::select! {
        r = &mut to_pod => {
            let _ = tokio::time::timeout(LINGER, &mut from_pod).await;
            r
        }
        r = &mut from_pod => {
            let _ = tokio::time::timeout(LINGER, &mut to_pod).await;
            r
        }
    };
    if let Err(e) = first {
        let _ = out.send(error(pod.copy_error(port, &e))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_every_ports_parameter_and_must_be_numbers_above_zero() {
        assert_eq!(
            ports(Some("ports=5432%2C8080&ports=9")).ok(),
            Some(vec![5432, 8080, 9])
        );
        for bad in [
            None,
            Some("ports="),
            Some("ports=x"),
            Some("ports=0"),
            Some("ports=70000"),
        ] {
            let e = ports(bad).expect_err("refused");
            assert_eq!(e.status().code, 400, "{bad:?}");
        }
    }

    #[test]
    fn frames_carry_their_channel_first_in_both_encodings() {
        let Message::Binary(b) = frame(3, &[1, 2], false) else {
            panic!("binary");
        };
        assert_eq!(&b[..], &[3, 1, 2]);
        let Message::Text(t) = frame(3, b"hi", true) else {
            panic!("text");
        };
        assert_eq!(t.as_str(), "3aGk=");
        assert_eq!(unframe(Message::Text(t), true), Some((3, b"hi".to_vec())));
    }
}
