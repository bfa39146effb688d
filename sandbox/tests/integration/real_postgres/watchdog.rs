//! The watchdog: a sandbox whose process is killed outright (SIGKILL, so
//! no `Drop` and no `shutdown`) still leaves no PostgreSQL server behind.
//! The sandbox runs as its own process here (`pgdb-sandbox --runtime
//! postgres`), so the test can kill it and watch what remains.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// `pgdb-sandbox` on the real runtime, killed when the test ends.
struct SandboxProcess(Child);

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `pgdb-sandbox --runtime postgres` and waits until it says where
/// its kubeconfig is.
fn start_sandbox_process(kubeconfig: &Path) -> SandboxProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgdb-sandbox"))
        .args(["--runtime", "postgres", "--kubeconfig"])
        .arg(kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pgdb-sandbox starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let process = SandboxProcess(child);
    // Its output is read to the end, so that it never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut said = String::new();
    let deadline = std::time::Instant::now() + WAIT;
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        if line.starts_with("Kubeconfig:") {
            return process;
        }
        said.push_str(&line);
        said.push('\n');
    }
    panic!("pgdb-sandbox did not serve within {WAIT:?}; it said:\n{said}");
}

/// Upstream has nothing to compare: this pins the sandbox's own promise
/// (docs/sandbox.md, "Cleanup"): a watchdog per sandbox notices its process
/// is gone and kills the servers it started and removes its directory.
#[tokio::test]
async fn a_killed_sandbox_process_leaves_no_postgres_server_behind() {
    let dir = std::env::temp_dir().join(format!(
        "sandbox-watchdog-{}-{:08x}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let kubeconfig = dir.join("kubeconfig");
    let mut process = start_sandbox_process(&kubeconfig);
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).expect("the kubeconfig reads"),
        &Default::default(),
    )
    .await
    .expect("the kubeconfig is usable");
    let pods: Api<Pod> =
        Api::namespaced(kube::Client::try_from(config).expect("a client"), "default");
    let pod = serde_json::from_value(postgres_pod("db", None)).expect("a pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("the pod is created");
    let deadline = tokio::time::Instant::now() + WAIT;
    let pod = loop {
        let pod = pods.get("db").await.expect("the API answers");
        if ready(&pod) {
            break pod;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod db not Ready within {WAIT:?}: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
    process.0.kill().expect("pgdb-sandbox is killed");
    process.0.wait().expect("pgdb-sandbox is reaped");
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
