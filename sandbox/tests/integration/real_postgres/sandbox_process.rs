//! The sandbox as its own process (`pgdb-sandbox --runtime postgres`), as
//! a learner runs it: its watchdog (a sandbox killed outright, SIGKILL, so
//! no `Drop` and no `shutdown`, still leaves no PostgreSQL server behind)
//! and what it logs (never a password).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use sandbox::pgruntime::process::alive;

use super::{WAIT, pod_ip, postgres_pod, ready, wait_until};

/// The command line of a process, its arguments joined by spaces.
fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The parent of a process.
fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The server listening on `ip` (its postmaster's command line says so)
/// and the processes it started.
fn server_processes(ip: &str) -> Vec<i32> {
    let flag = format!("listen_addresses={ip} ");
    let pids = all_pids();
    let postmasters: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&p| format!("{} ", cmdline(p)).contains(&flag))
        .collect();
    let children = pids
        .iter()
        .copied()
        .filter(|&p| parent(p).is_some_and(|pp| postmasters.contains(&pp)));
    postmasters.iter().copied().chain(children).collect()
}

/// `pgdb-sandbox` on the real runtime, killed when the test ends, with
/// everything it has printed so far (its log, at debug level).
struct SandboxProcess {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl SandboxProcess {
    fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A client of the sandbox, from the kubeconfig it wrote.
    async fn pods(&self, kubeconfig: &Path) -> Api<Pod> {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(kubeconfig).expect("the kubeconfig reads"),
            &Default::default(),
        )
        .await
        .expect("the kubeconfig is usable");
        Api::namespaced(kube::Client::try_from(config).expect("a client"), "default")
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pgdb-sandbox --runtime postgres` (logging at debug level) and
/// waits until it says where its kubeconfig is.
fn start_sandbox_process(kubeconfig: &Path) -> SandboxProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgdb-sandbox"))
        .args(["--runtime", "postgres", "--kubeconfig"])
        .arg(kubeconfig)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pgdb-sandbox starts");
    let output = Arc::new(Mutex::new(String::new()));
    // Both streams are read to the end, so that it never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout: Box<dyn std::io::Read + Send> =
        Box::new(child.stdout.take().expect("stdout is piped"));
    let stderr: Box<dyn std::io::Read + Send> =
        Box::new(child.stderr.take().expect("stderr is piped"));
    for stream in [stdout, stderr] {
        let (tx, output) = (tx.clone(), output.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut all = output.lock().unwrap_or_else(|e| e.into_inner());
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
        });
    }
    let process = SandboxProcess { child, output };
    let deadline = std::time::Instant::now() + WAIT;
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        if line.starts_with("Kubeconfig:") {
            return process;
        }
    }
    panic!(
        "pgdb-sandbox did not serve within {WAIT:?}; it said:\n{}",
        process.output()
    );
}

/// Waits until the pod is Ready.
async fn wait_ready(pods: &Api<Pod>, name: &str) -> Pod {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pod = pods.get(name).await.expect("the API answers");
        if ready(&pod) {
            return pod;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod {name} not Ready within {WAIT:?}: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sandbox-{what}-{}-{:08x}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// Upstream has nothing to compare: this pins the sandbox's own promise
/// (docs/sandbox.md, "Cleanup"): a watchdog per sandbox notices its process
/// is gone and kills the servers it started and removes its directory.
#[tokio::test]
async fn a_killed_sandbox_process_leaves_no_postgres_server_behind() {
    let dir = temp_dir("watchdog");
    let kubeconfig = dir.join("kubeconfig");
    let mut process = start_sandbox_process(&kubeconfig);
    let pods = process.pods(&kubeconfig).await;
    let pod = serde_json::from_value(postgres_pod("db", None)).expect("a pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("the pod is created");
    let pod = wait_ready(&pods, "db").await;
    let ip = pod_ip(&pod);
    let server = server_processes(&ip);
    assert!(!server.is_empty(), "no server process listens on {ip}");
    // The work directory of the sandbox whose pods are 127.X.*.
    let octet = ip.split('.').nth(1).expect("a 127.X address");
    let work: PathBuf = std::env::temp_dir()
        .join("pgdb-sandbox")
        .join(format!("127.{octet}"));
    assert!(work.is_dir(), "{} is the sandbox's", work.display());
    // SIGKILL: no destructor, no shutdown; only the watchdog is left.
    process.child.kill().expect("pgdb-sandbox is killed");
    process.child.wait().expect("pgdb-sandbox is reaped");
    wait_until(
        "the server's processes are gone and the work directory removed",
        || !server.iter().any(|&p| alive(p)) && !work.exists(),
        || {
            let left: Vec<String> = server
                .iter()
                .filter(|&&p| alive(p))
                .map(|&p| format!("{p}: {}", cmdline(p)))
                .collect();
            format!(
                "still running: {left:?}; {} exists: {}",
                work.display(),
                work.exists()
            )
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default()
}

/// The sandbox's promise (docs/sandbox.md, "Restarts and logs"): passwords
/// reach processes only through their environment, and nothing is logged
/// with them: neither the sandbox's own log (at debug level) nor the pod's.
/// The password comes from a Secret, as the operators pass it, and the
/// server is shown to use it.
#[tokio::test]
async fn a_password_from_a_secret_reaches_the_server_and_no_log() {
    let dir = temp_dir("passwords");
    let kubeconfig = dir.join("kubeconfig");
    let process = start_sandbox_process(&kubeconfig);
    let pods = process.pods(&kubeconfig).await;
    let password = format!("pw{:08x}{:08x}", rand_suffix(), std::process::id());
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(pods.clone().into_client(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "creds"},
                "stringData": {"password": password}}))
            .expect("a Secret"),
        )
        .await
        .expect("the Secret is created");
    let mut pod = postgres_pod("db", None);
    pod["spec"]["containers"][0]["env"][0] = serde_json::json!({"name": "POSTGRES_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}});
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).expect("a pod"),
    )
    .await
    .expect("the pod is created");
    let pod = wait_ready(&pods, "db").await;
    let out = tokio::process::Command::new("psql")
        .args([
            "-X",
            "-t",
            "-A",
            "-h",
            &pod_ip(&pod),
            "-U",
            "postgres",
            "-d",
            "shop",
        ])
        .args(["-c", "select 1"])
        .env("PGPASSWORD", &password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .await
        .expect("psql runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1",
        "the server does not accept the Secret's password: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod_log = pods
        .logs("db", &Default::default())
        .await
        .expect("the pod's log is served");
    assert!(!pod_log.is_empty());
    assert!(
        !pod_log.contains(&password),
        "the pod's log holds the password:\n{pod_log}"
    );
    let sandbox_log = process.output();
    assert!(
        sandbox_log.contains("DEBUG") || sandbox_log.contains("INFO"),
        "the sandbox logged nothing:\n{sandbox_log}"
    );
    assert!(
        !sandbox_log.contains(&password),
        "the sandbox's log holds the password:\n{sandbox_log}"
    );
    drop(process);
    let _ = std::fs::remove_dir_all(&dir);
}
