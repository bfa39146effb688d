//! `pods/exec` at the protocol level: the channels and the closing Status
//! of each websocket subprotocol the sandbox serves, `v5.channel.k8s.io`
//! (what kubectl 1.30 and later pick; `kubectl::exec` drives it) and the
//! `v4.channel.k8s.io` older clients fall back to, which has no way to
//! close stdin.

use futures::{SinkExt, StreamExt};
use sandbox::Sandbox;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use super::{create, postgres_pod, ready, start, wait_pod};

/// What one exec printed, per channel, and its closing Status.
#[derive(Default)]
struct Exec {
    stdout: String,
    stderr: String,
    status: Value,
    /// The subprotocol the server chose.
    protocol: String,
}

/// Runs `command` in pod `db` over the websocket `protocol`, sending
/// `stdin` (then, with v5, closing it).
async fn exec(sb: &Sandbox, protocol: &str, command: &[&str], stdin: Option<&str>) -> Exec {
    let url = sb.url();
    let mut query: Vec<String> = command
        .iter()
        .map(|c| format!("command={}", form(c)))
        .collect();
    query.push("stdout=true&stderr=true".into());
    if stdin.is_some() {
        query.push("stdin=true".into());
    }
    let url = format!(
        "{}/api/v1/namespaces/default/pods/db/exec?{}",
        url.replace("http://", "ws://"),
        query.join("&")
    );
    let mut request = url.into_client_request().expect("a request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protocol.parse().expect("a header value"),
    );
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", sb.admin_token())
            .parse()
            .expect("a header value"),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the exec upgrades");
    let mut out = Exec {
        protocol: response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        ..Default::default()
    };
    if let Some(text) = stdin {
        let mut frame = vec![0u8];
        frame.extend_from_slice(text.as_bytes());
        ws.send(Message::Binary(frame.into()))
            .await
            .expect("stdin sent");
        if out.protocol == "v5.channel.k8s.io" {
            ws.send(Message::Binary(vec![255, 0].into()))
                .await
                .expect("stdin closed");
        }
    }
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Binary(b) = msg else { continue };
        let text = String::from_utf8_lossy(&b[1..]).into_owned();
        match b[0] {
            1 => out.stdout.push_str(&text),
            2 => out.stderr.push_str(&text),
            3 => out.status = serde_json::from_str(&text).expect("a Status"),
            _ => {}
        }
    }
    out
}

fn form(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Upstream: the server picks the client's first supported subprotocol;
/// output arrives on channels 1 and 2 and the exit on channel 3, as a
/// `NonZeroExitCode` Status whose `ExitCode` cause is the code; with v5
/// the client's `[255, 0]` ends the command's stdin.
#[tokio::test]
async fn exec_speaks_v5_and_falls_back_to_v4_with_the_exit_code_on_channel_3() {
    let sb = start().await;
    create(&sb, postgres_pod("db", None)).await;
    wait_pod(&sb, "db", "ready", ready).await;

    let v4 = exec(
        &sb,
        "v4.channel.k8s.io",
        &["sh", "-c", "echo out; echo err >&2; exit 2"],
        None,
    )
    .await;
    assert_eq!(v4.protocol, "v4.channel.k8s.io");
    assert_eq!((v4.stdout.as_str(), v4.stderr.as_str()), ("out\n", "err\n"));
    assert_eq!(v4.status["status"], "Failure");
    assert_eq!(v4.status["reason"], "NonZeroExitCode");
    assert_eq!(v4.status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(v4.status["details"]["causes"][0]["message"], "2");

    let v5 = exec(
        &sb,
        "v5.channel.k8s.io, v4.channel.k8s.io",
        &["psql", "-U", "postgres", "-tA"],
        Some("select 'via stdin';\n"),
    )
    .await;
    assert_eq!(v5.protocol, "v5.channel.k8s.io");
    assert_eq!(v5.stdout, "via stdin\n", "stderr: {}", v5.stderr);
    assert_eq!(v5.status["status"], "Success");
}
