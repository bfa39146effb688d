//! `kubectl port-forward`: SPDY/3.1 tunnelled through a websocket
//! (`SPDY/3.1+portforward.k8s.io`), what kubectl 1.31 and later speak by
//! default; direct SPDY, its fallback, is refused saying what to do.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use super::{Cluster, cluster, real_cluster};

const ORDERS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: orders-0, labels: {app: orders}}
spec:
  containers:
  - name: postgres
    image: postgres:15
    env: [{name: POSTGRES_PASSWORD, value: secret}]
    readinessProbe:
      exec: {command: [pg_isready, -h, 127.0.0.1, -p, "5432"]}
---
apiVersion: v1
kind: Service
metadata: {name: orders}
spec:
  selector: {app: orders}
  ports: [{port: 5432}]
"#;

/// Runs `kubectl port-forward TARGET 0:5432` and returns it with the
/// local port it printed (read off the runtime's thread, which serves the
/// sandbox).
async fn start_forward(k: &Cluster, target: &str) -> (std::process::Child, u16) {
    let mut child = k
        .command(&["port-forward", target, "0:5432"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    let stdout = child.stdout.take().expect("stdout");
    // kubectl prints a line per connection: its stdout is read to the
    // end (a closed pipe would kill it with SIGPIPE).
    let (first, line) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = first.send(lines.next().and_then(Result::ok).unwrap_or_default());
        lines.for_each(drop);
    });
    let line = line.await.unwrap_or_default();
    let port = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok());
    let Some(port) = port else {
        let _ = child.kill();
        let out = child.wait_with_output().expect("kubectl output");
        panic!(
            "kubectl printed no forwarding address: {line:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    (child, port)
}

/// Asks the database behind a local port for a number.
async fn ask(port: u16) -> Result<i32, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password("secret")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    let row = client.query_one("select 6*7", &[]).await?;
    Ok(row.get(0))
}

/// Upstream: `kubectl port-forward pod/NAME` and `svc/NAME` (a pod the
/// Service selects) forward each local connection to the pod's port.
#[tokio::test]
async fn port_forward_reaches_the_database_through_a_pod_and_a_service() {
    let k = real_cluster().await;
    let f = k.file("orders.yaml", ORDERS);
    k.ok(&["apply", "-f", &f]).await;
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/orders-0",
        "--timeout=60s",
    ])
    .await;
    for target in ["pod/orders-0", "svc/orders"] {
        let (mut child, port) = start_forward(&k, target).await;
        // Two connections: each is a pair of SPDY streams.
        for _ in 0..2 {
            match ask(port).await {
                Ok(n) => assert_eq!(n, 42, "through {target}"),
                Err(e) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().expect("kubectl output");
                    panic!(
                        "through {target}: {e}\nkubectl said: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// kubectl's fallback, SPDY by a direct upgrade (forced here with
/// `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`), is not served: it fails at
/// once, saying what to do instead.
#[tokio::test]
async fn direct_spdy_port_forward_fails_saying_what_to_do() {
    let k = cluster().await;
    k.ok(&["run", "p", "--image=postgres:16"]).await;
    let mut c = k.command(&["port-forward", "pod/p", "0:5432"]);
    c.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    let r = super::run_to_end(c, None).await;
    assert!(!r.ok, "kubectl port-forward cannot succeed: {}", r.stdout);
    for needle in [
        "only tunnelled through a websocket",
        "jsonpath='{.spec.clusterIP}'",
    ] {
        assert!(r.stderr.contains(needle), "{}", r.stderr);
    }
}
