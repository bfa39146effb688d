//! `kubectl exec` and `kubectl cp`: the websocket remote-command protocol
//! (`v5.channel.k8s.io`) kubectl 1.30 and later speak, run in the
//! container's context on the real-PostgreSQL runtime.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use super::{Cluster, cluster, real_cluster};

/// A database pod with an env var, a ConfigMap mounted at `/etc/app` and
/// an emptyDir at `/scratch`.
const ORDERS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: app}
data: {greeting: "hello from the volume"}
---
apiVersion: v1
kind: Pod
metadata: {name: orders-0}
spec:
  containers:
  - name: postgres
    image: postgres:15
    env:
    - {name: POSTGRES_PASSWORD, value: secret}
    - {name: GREETING, value: hello-from-the-pod}
    volumeMounts:
    - {name: app, mountPath: /etc/app}
    - {name: scratch, mountPath: /scratch}
    readinessProbe:
      exec: {command: [pg_isready, -h, 127.0.0.1, -p, "5432"]}
  volumes:
  - name: app
    configMap: {name: app}
  - name: scratch
    emptyDir: {}
"#;

/// Starts `orders-0` and waits until its server is ready.
async fn orders(k: &Cluster) {
    let f = k.file("orders.yaml", ORDERS);
    k.ok(&["apply", "-f", &f]).await;
    let pods: Api<Pod> = Api::namespaced(k.sb.client(), "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pod = pods.get("orders-0").await.expect("the pod");
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orders-0 never became ready: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Upstream: `kubectl exec POD -- CMD` runs CMD in the container as its
/// user, with its environment and its mounts; `-i` streams stdin to it;
/// the command's exit code is kubectl's (a `NonZeroExitCode` Status on
/// the error channel).
#[tokio::test]
async fn exec_runs_commands_in_the_containers_context_and_returns_their_exit_code() {
    let k = real_cluster().await;
    orders(&k).await;
    let user =
        k.sb.postgres_runtime()
            .and_then(|rt| rt.run_as())
            .expect("the real runtime runs as a user");
    let out = k
        .ok(&[
            "exec",
            "orders-0",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING\"; id -un; cat /etc/app/greeting; echo; pwd",
        ])
        .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["hello-from-the-pod", &user, "hello from the volume"],
        "{out}"
    );
    assert!(
        lines[3].ends_with("/rootfs"),
        "the working directory is the container's own filesystem: {out}"
    );

    let out = k
        .ok(&[
            "exec",
            "orders-0",
            "--",
            "psql",
            "-U",
            "postgres",
            "-tAc",
            "select 6*7",
        ])
        .await;
    assert_eq!(out.trim(), "42");

    let r = k
        .run_with_input(
            &[
                "exec", "-i", "orders-0", "--", "psql", "-U", "postgres", "-tA",
            ],
            "select 'read from stdin';\n",
        )
        .await;
    assert!(r.ok, "exec -i failed: {}", r.stderr);
    assert_eq!(r.stdout.trim(), "read from stdin");

    let r = k
        .run(&[
            "exec",
            "orders-0",
            "--",
            "sh",
            "-c",
            "echo oops >&2; exit 3",
        ])
        .await;
    assert_eq!(
        r.code,
        Some(3),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert!(r.stderr.contains("oops"), "{}", r.stderr);

    let r = k.run(&["exec", "orders-0", "--", "no-such-command"]).await;
    assert!(!r.ok);
    assert!(
        r.stderr.contains("executable file not found in $PATH"),
        "{}",
        r.stderr
    );
}

/// Upstream: `kubectl exec -it` gives the command a terminal.
#[tokio::test]
async fn exec_with_a_tty_runs_the_command_on_a_terminal() {
    let k = real_cluster().await;
    orders(&k).await;
    let line = k.shell_line(&[
        "exec",
        "-it",
        "orders-0",
        "--",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo on-a-terminal",
    ]);
    // `script` gives kubectl a terminal of its own, as a learner's shell has.
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    let r = super::run_to_end(c, Some(String::new())).await;
    assert!(
        r.stdout.contains("on-a-terminal"),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
}

/// The simulated runtime runs no processes: exec fails at once, saying
/// which runtime runs commands.
#[tokio::test]
async fn exec_on_the_simulated_runtime_says_how_to_run_commands() {
    let k = cluster().await;
    k.ok(&["run", "p", "--image=postgres:16"]).await;
    let r = k.run(&["exec", "p", "--", "psql"]).await;
    assert!(!r.ok, "{}", r.stdout);
    assert!(r.stderr.contains("--runtime postgres"), "{}", r.stderr);
}

/// `kubectl cp` to a pod runs `tar -xmf - -C DIR` through exec: it works
/// for a mount path (the directory is translated to the volume's). From
/// a pod it does not (docs/sandbox.md says why): kubectl finds no entry
/// under the path it asked for.
#[tokio::test]
async fn cp_copies_a_file_into_a_mounted_volume_of_the_pod() {
    let k = real_cluster().await;
    orders(&k).await;
    let local = k.file("notes.txt", "copied in\n");
    k.ok(&["cp", &local, "orders-0:/scratch/notes.txt"]).await;
    let out = k
        .ok(&["exec", "orders-0", "--", "cat", "/scratch/notes.txt"])
        .await;
    assert_eq!(out, "copied in\n");
    let back = k.dir.join("back.txt");
    let _ = k
        .run(&[
            "cp",
            "orders-0:/scratch/notes.txt",
            &back.display().to_string(),
        ])
        .await;
    assert!(
        !back.exists(),
        "copying from a pod works now: docs/sandbox.md should say so"
    );
}
