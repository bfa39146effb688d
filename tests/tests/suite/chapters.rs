//! Executable chapters: every block a chapter marks runnable
//! (`<!-- runnable -->` before a fenced `sh` block, its expected output in
//! the fenced `text` block after it; see `tests::course`) is run in order,
//! by `sh` with real kubectl, against a fresh sandbox of the chapter's own
//! with the chapter's level running (in-process; a level with insights
//! serves `/metrics` at the address `$METRICS` names, as the tour does),
//! and its output must match. A chapter
//! whose commands or outputs drift from the software fails here. So does a
//! chapter whose behaviour-matrix rows differ from the generated matrix,
//! and a chapter's "write it yourself" exercise is checked here when no
//! other test checks it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sandbox::Sandbox;
use shared::health::Readiness;
use shared::runner::{self, RunOptions};
use tests::course::{
    METRICS_INTERVAL, METRICS_VARIABLE, Runnable, matches, runnable_blocks, serve_metrics,
};
use tests::harness::install_crd;
use tests::levels::LevelId;

/// The chapters, each with the level it is run against.
const CHAPTERS: [(&str, LevelId); 6] = [
    ("docs/lab.md", LevelId::One),
    ("docs/level1-install.md", LevelId::One),
    ("docs/level2-upgrade.md", LevelId::Two),
    ("docs/level3-lifecycle.md", LevelId::Three),
    ("docs/level4-insights.md", LevelId::Four),
    ("docs/level5-autopilot.md", LevelId::Five),
];

/// How long one block may take: more than the sum of its own `kubectl
/// wait` timeouts (the major upgrade's block waits up to 180 s and then
/// 60 s), so a block fails on its own bounds, with the chapter's message,
/// and this one only catches a block that hangs. A bound on a failure,
/// not a timing: a run under heavy load took over 180 s for that block.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(420);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs one chapter; the failures it found, each naming its line.
async fn run_chapter(path: &str, level: LevelId) -> Result<usize, String> {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join(path))
        .map_err(|e| format!("{path}: cannot read: {e}"))?;
    let blocks = runnable_blocks(&text).map_err(|e| format!("{path}: {e}"))?;
    if blocks.is_empty() {
        return Ok(0);
    }
    // Real PostgreSQL, as the tour runs it when the binaries are installed.
    let sandbox = Sandbox::start(tests::scenarios::real_postgres())
        .await
        .map_err(|e| format!("{path}: the sandbox did not start: {e}"))?;
    let tag = path.replace(['/', '.'], "-");
    let kubeconfig =
        std::env::temp_dir().join(format!("pgdb-{tag}-{}.kubeconfig", std::process::id()));
    sandbox
        .write_kubeconfig(&kubeconfig)
        .map_err(|e| format!("{path}: cannot write the kubeconfig: {e}"))?;
    install_crd(&sandbox.client())
        .await
        .map_err(|e| format!("{path}: {}", shared::reconcile::error_chain(&e)))?;
    // A level with insights serves /metrics, as the tour does (the blocks
    // read its address from $METRICS), and measures as often.
    let built = level.build();
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let served = serve_metrics(&built, local, Readiness::default())
        .await
        .map_err(|e| format!("{path}: {}", shared::reconcile::error_chain(&e)))?;
    let options = RunOptions {
        metrics: served.as_ref().map(|s| s.metrics.clone()),
        metrics_interval: Some(METRICS_INTERVAL),
        ..Default::default()
    };
    let metrics_address = served.as_ref().map(|s| s.address.to_string());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(runner::run(built, sandbox.client(), options, async move {
        let _ = stopped.await;
    }));
    let mut result = Ok(blocks.len());
    for block in &blocks {
        let metrics = metrics_address.as_deref();
        if let Err(failure) = run_block(&root, &kubeconfig, metrics, &tag, block).await {
            result = Err(format!("{path}:{}: {failure}", block.line));
            break;
        }
    }
    let _ = stop.send(());
    let _ = operator.await;
    if let Some(served) = served {
        served.server.abort();
    }
    sandbox.shutdown().await;
    let _ = std::fs::remove_file(&kubeconfig);
    result
}

/// Runs a block's commands as one `sh` script (so a variable set by one
/// command is there for the next, as in the learner's shell) and compares
/// what they printed together (stdout and stderr) with the block's
/// expected output.
async fn run_block(
    root: &Path,
    kubeconfig: &Path,
    metrics: Option<&str>,
    tag: &str,
    block: &Runnable,
) -> Result<(), String> {
    let script = format!("exec 2>&1\n{}\n", block.commands.join("\n"));
    // The output goes to a file, so a block that hangs still shows how far it got.
    let log = std::env::temp_dir().join(format!(
        "pgdb-{tag}-{}-{}.out",
        std::process::id(),
        block.line
    ));
    let file =
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    // A process group of its own, so a block that hangs is stopped with
    // every command it started.
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(root)
        .env("KUBECONFIG", kubeconfig)
        .envs(metrics.map(|address| (METRICS_VARIABLE, address)))
        .env("PATH", tests::tools::search_path())
        .stdout(std::process::Stdio::from(file))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run sh (and kubectl): {e}"))?;
    let finished = tokio::time::timeout(BLOCK_TIMEOUT, child.wait()).await;
    if finished.is_err()
        && let Some(pid) = child.id()
    {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
    }
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    if finished.is_err() {
        return Err(format!(
            "the block did not finish within {BLOCK_TIMEOUT:?}; it printed:\n{output}{}",
            cluster_diagnosis(root, kubeconfig).await
        ));
    }
    if matches(&block.expected, &output) {
        Ok(())
    } else {
        Err(format!(
            "the output differs from the chapter's.\ncommands:\n  {}\nexpected:\n{}\nprinted:\n{output}{}",
            block.commands.join("\n  "),
            block.expected.join("\n"),
            cluster_diagnosis(root, kubeconfig).await
        ))
    }
}

/// What the chapter's cluster says about why a block printed something
/// else (a failover, a probe that failed, a refusal): its latest Events
/// and the last lines each pod's containers logged.
async fn cluster_diagnosis(root: &Path, kubeconfig: &Path) -> String {
    const LINES: usize = 30;
    const LOG_LINES: &str = "--tail=20";
    let mut text = match kubectl(
        root,
        kubeconfig,
        &["get", "events", "--sort-by=.lastTimestamp"],
    )
    .await
    {
        Ok(listed) => {
            let lines: Vec<&str> = listed.lines().collect();
            let last = &lines[lines.len().saturating_sub(LINES)..];
            format!("\nthe cluster's latest Events:\n{}", last.join("\n"))
        }
        Err(why) => format!("\n(the Events could not be listed: {why})"),
    };
    let pods = kubectl(root, kubeconfig, &["get", "pods", "-o", "name"]).await;
    match pods {
        Ok(pods) => {
            for pod in pods.lines() {
                let logged = kubectl(
                    root,
                    kubeconfig,
                    &["logs", pod, "--all-containers", "--prefix", LOG_LINES],
                )
                .await
                .unwrap_or_else(|why| format!("(not read: {why})"));
                text += &format!("\nthe last lines {pod} logged:\n{}", logged.trim_end());
            }
        }
        Err(why) => text += &format!("\n(the pods could not be listed: {why})"),
    }
    text
}

/// Runs kubectl against the chapter's cluster, bounded in time; what it
/// printed, or why not.
async fn kubectl(root: &Path, kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let ran = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("kubectl")
            .args(args)
            .arg("--request-timeout=10s")
            .current_dir(root)
            .env("KUBECONFIG", kubeconfig)
            .env("PATH", tests::tools::search_path())
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match ran {
        // kubectl says "No resources found" on stderr.
        Ok(Ok(out)) if out.status.success() && out.stdout.is_empty() => {
            Ok(String::from_utf8_lossy(&out.stderr).into())
        }
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into()),
        Ok(Ok(out)) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("kubectl did not finish within 20 s".into()),
    }
}

/// Level 1's "write it yourself" exercise: whatever the learner writes,
/// `kubectl get pgdb` must show the version asked for and the one running.
#[test]
fn kubectl_get_pgdb_shows_the_requested_and_the_running_version() {
    use kube::CustomResourceExt;
    let crd = shared::api::PostgresDB::crd();
    let columns: Vec<(String, String)> = crd
        .spec
        .versions
        .iter()
        .flat_map(|v| v.additional_printer_columns.iter().flatten())
        .map(|c| (c.name.clone(), c.json_path.clone()))
        .collect();
    for path in [".spec.version", ".status.currentVersion"] {
        assert!(
            columns.iter().any(|(_, p)| p == path),
            "no printer column shows {path}; the columns are {columns:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_runnable_block_of_the_chapters_prints_what_the_chapter_shows() {
    let kubectl = std::process::Command::new("sh")
        .args(["-c", "kubectl version --client"])
        .env("PATH", tests::tools::search_path())
        .output();
    assert!(
        kubectl.is_ok_and(|o| o.status.success()),
        "the chapters' commands need kubectl on PATH (scripts/install-tools.sh installs it)"
    );
    let began = Instant::now();
    // PGDB_CHAPTERS=docs/level4-insights.md runs only those.
    let only = std::env::var("PGDB_CHAPTERS").ok();
    let runs = CHAPTERS
        .iter()
        .filter(|(path, _)| {
            only.as_deref()
                .is_none_or(|only| only.split(',').any(|p| p == *path))
        })
        .map(|&(path, level)| async move { (path, run_chapter(path, level).await) });
    let mut failures = Vec::new();
    for (path, result) in futures::future::join_all(runs).await {
        match result {
            Ok(n) => eprintln!("{path}: {n} runnable blocks as written"),
            Err(failure) => failures.push(failure),
        }
    }
    eprintln!("chapters run in {:.1?}", began.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The cells of a Markdown table row.
fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split(" | ")
        .map(|c| c.trim().to_string())
        .collect()
}

/// A chapter's table of its level's behaviour-matrix rows (first cell
/// ending in the scenario's name, as in "... (`EditedChild`)", one column
/// per level) must say what docs/behaviour-matrix.md says, which the
/// behaviour suite checks against what it observed.
#[test]
fn the_chapters_matrix_rows_are_the_behaviour_matrixs() {
    let root = repo_root();
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let matrix = read("docs/behaviour-matrix.md");
    let observed: std::collections::HashMap<String, Vec<String>> = matrix
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Scenario"))
        .map(|l| {
            let mut row = cells(l);
            let title = row.remove(0);
            (title, row)
        })
        .collect();
    let mut problems = Vec::new();
    for (path, _) in CHAPTERS {
        let mut levels: Vec<usize> = Vec::new();
        let mut rows = 0;
        for line in read(path).lines() {
            if line.starts_with("| Scenario |") {
                levels = cells(line)
                    .iter()
                    .skip(1)
                    .filter_map(|c| c.strip_prefix("Level ")?.split(' ').next()?.parse().ok())
                    .collect();
                continue;
            }
            if !line.starts_with('|') {
                levels.clear();
            }
            if levels.is_empty() {
                continue;
            }
            let row = cells(line);
            let Some(name) = row
                .first()
                .filter(|_| line.starts_with("| "))
                .and_then(|c| c.strip_suffix("`)"))
                .and_then(|c| c.rsplit_once("(`"))
                .map(|(_, name)| name.to_string())
                .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric()))
            else {
                continue;
            };
            rows += 1;
            let Some(entry) = tests::scenarios::find(&name) else {
                problems.push(format!("{path}: no scenario is named {name}"));
                continue;
            };
            let Some(cells_observed) = observed.get(entry.title) else {
                problems.push(format!("{path}: the matrix has no row {:?}", entry.title));
                continue;
            };
            for (cell, level) in row.iter().skip(1).zip(&levels) {
                let expected = cells_observed.get(level - 1).map(String::as_str);
                if expected != Some(cell.as_str()) {
                    problems.push(format!(
                        "{path}: {name}, level {level}: the chapter says {cell:?}, the matrix {expected:?}"
                    ));
                }
            }
        }
        if path != "docs/lab.md" && rows == 0 {
            problems.push(format!("{path}: no behaviour-matrix rows"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
