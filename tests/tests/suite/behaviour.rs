//! Every scenario against every level; the observations must be the
//! expected ones, and on the sandbox they must be what
//! docs/behaviour-matrix.md says.
//!
//! The same runs check "passwords are never logged" (docs/level1-install.md,
//! docs/level2-upgrade.md) for every scenario and level: the test process's
//! logs are captured at trace level (the in-process operators, the
//! sandboxes, the libraries; and the output of any operator binary a
//! scenario starts), each run reads the passwords its Secrets hold and its
//! pods' logs before its cluster goes, and no password may appear in any
//! of those logs.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::future::join_all;
use tests::harness::{TestCluster, logs};
use tests::leaks::{Password, leaks, passwords, pod_logs};
use tests::levels::LevelId;
use tests::matrix;
use tests::scenarios::{self, Entry, Outcome};

/// What a run leaves to scan for passwords: the passwords its Secrets
/// held at its end, and its pods' logs then.
#[derive(Default)]
struct Traces {
    passwords: Vec<Password>,
    pod_logs: Vec<(String, String)>,
}

/// The run's passwords (named by run) and pod logs.
async fn traces(cluster: &TestCluster, run: &str) -> Result<Traces, String> {
    let read = async {
        let mut passwords = passwords(cluster).await?;
        for p in &mut passwords {
            p.origin = format!("{} ({run})", p.origin);
        }
        let pod_logs = pod_logs(cluster)
            .await?
            .into_iter()
            .map(|(name, log)| (format!("{name} ({run})"), log))
            .collect();
        Ok::<_, tests::harness::Failed>(Traces {
            passwords,
            pod_logs,
        })
    };
    read.await
        .map_err(|failed| format!("reading its passwords and pod logs failed: {failed}"))
}

/// Runs `scenario` against `level` on a cluster of its own, once the
/// harness grants one (so its budget starts then), and checks that the
/// deployed RBAC grants whatever the level did. Also returns what the run
/// leaves to scan for passwords.
async fn observe(scenario: &Entry, level: LevelId) -> (Result<Outcome, String>, Traces) {
    let cluster = match TestCluster::start_with((scenario.sandbox_config)()).await {
        Ok(cluster) => cluster.with_budget((scenario.budget)()),
        Err(error) => {
            let why = format!("no cluster: {}", shared::reconcile::error_chain(&error));
            return (Err(why), Traces::default());
        }
    };
    let began = Instant::now();
    let outcome = scenario.run(&cluster, level).await;
    eprintln!(
        "{} / level {}: {:.1?}",
        scenario.name,
        level.number(),
        began.elapsed()
    );
    let run = format!("{} / level {}", scenario.name, level.number());
    let traces = traces(&cluster, &run).await;
    let denied = tests::rbac::ungranted(&cluster, level);
    cluster.finish().await;
    let (outcome, traces) = match (outcome, traces) {
        (Err(failed), _) => (Err(failed.to_string()), Traces::default()),
        (Ok(_), Err(why)) => (Err(why), Traces::default()),
        (Ok(outcome), Ok(traces)) => (Ok(outcome), traces),
    };
    if !denied.is_empty() && outcome.is_ok() {
        let why = format!("deploy/base/rbac.yaml does not grant {denied:?}");
        return (Err(why), traces);
    }
    (outcome, traces)
}

/// Where any run's password appears in the captured logs or any run's pod
/// logs; fails unless the capture holds the operators' trace-level lines.
fn passwords_in_logs(traces: &[Traces]) -> Result<Vec<String>, String> {
    let passwords: Vec<Password> = traces.iter().flat_map(|t| t.passwords.clone()).collect();
    let mut scanned = logs::captured();
    let process = scanned
        .first()
        .map(|(_, text)| text.clone())
        .unwrap_or_default();
    if !(process.contains("status updated") && process.contains(" TRACE ")) {
        return Err(format!(
            "the captured log does not hold the operators' lines at trace level \
             ({} bytes captured)",
            process.len()
        ));
    }
    if passwords.is_empty() {
        return Err("no run left a generated password to look for".into());
    }
    scanned.extend(traces.iter().flat_map(|t| t.pod_logs.clone()));
    let lines: usize = scanned.iter().map(|(_, text)| text.lines().count()).sum();
    eprintln!(
        "scanned {lines} log lines ({} logs) for {} generated passwords",
        scanned.len(),
        passwords.len()
    );
    Ok(leaks(&passwords, &scanned))
}

/// The order the runs (every scenario against every level) ask for their
/// clusters in, which the harness grants first come, first served: the
/// longest first, so that the last runs to start are short ones and no
/// long run starts once the others are done. A scenario's budget is its
/// length's proxy (sized to its work), and a higher level does more of it
/// (Level 3 takes the backups lower levels do not; Level 4 measures too).
/// The matrix keeps the scenarios' order.
fn schedule(scenarios: &[Entry]) -> Vec<(&Entry, LevelId)> {
    let mut runs: Vec<(&Entry, LevelId)> = scenarios
        .iter()
        .flat_map(|s| LevelId::ALL.into_iter().map(move |l| (s, l)))
        .collect();
    runs.sort_by_key(|(s, l)| std::cmp::Reverse(((s.budget)(), *l)));
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_level_does_what_the_behaviour_matrix_says() {
    if let Err(why) = logs::capture() {
        panic!("the operators' logs cannot be captured: {why}");
    }
    let external = std::env::var_os("PGDB_TEST_KUBECONFIG").is_some();
    // PGDB_SCENARIOS=MinorUpgrade,AtRest runs only those (and skips the matrix check).
    let only = std::env::var("PGDB_SCENARIOS").ok();
    let selected: Vec<Entry> = scenarios::all()
        .into_iter()
        .filter(|s| {
            only.as_deref()
                .is_none_or(|only| only.split(',').any(|name| name == s.name))
        })
        .collect();
    let results = join_all(
        schedule(&selected)
            .into_iter()
            .map(|(s, l)| async move { ((s.name, s.title, l), observe(s, l).await) }),
    )
    .await;

    let mut problems = Vec::new();
    let mut traces = Vec::new();
    let results: Vec<_> = results
        .into_iter()
        .map(|(run, (result, left))| {
            traces.push(left);
            (run, result)
        })
        .collect();
    match passwords_in_logs(&traces) {
        Ok(found) if found.is_empty() => {}
        Ok(found) => problems.push(format!(
            "generated passwords appear in logs:\n{}",
            found.join("\n")
        )),
        Err(why) => problems.push(format!("the password scan could not run: {why}")),
    }
    let mut not_run = Vec::new();
    let mut observed: BTreeMap<(&'static str, LevelId), String> = BTreeMap::new();
    for ((name, title, level), result) in results {
        match result {
            Err(failure) => problems.push(format!(
                "{title} / level {}: the run failed:\n{failure}",
                level.number()
            )),
            // On a real cluster, scenarios that need the sandbox say why
            // they did not run; on the sandbox every scenario runs.
            Ok(outcome) if outcome.not_run => {
                not_run.push(format!(
                    "{name} / level {}: {}",
                    level.number(),
                    outcome.observed
                ));
                if !external {
                    problems.push(format!(
                        "{title} / level {}: {}",
                        level.number(),
                        outcome.observed
                    ));
                }
                observed.insert((name, level), outcome.observed);
            }
            Ok(outcome) => {
                if !outcome.matches {
                    problems.push(format!(
                        "{title} / level {}:\n  expected: {}\n  observed: {}\n{}",
                        level.number(),
                        outcome.expected,
                        outcome.observed,
                        outcome.difference.as_deref().unwrap_or_default()
                    ));
                }
                observed.insert((name, level), outcome.observed);
            }
        }
    }
    if !not_run.is_empty() {
        eprintln!(
            "{} runs not possible on this cluster:\n{}",
            not_run.len(),
            not_run.join("\n")
        );
    }
    assert!(
        problems.is_empty(),
        "levels did not behave as expected:\n{}",
        problems.join("\n")
    );

    if external || only.is_some() {
        return; // the committed matrix describes every scenario on the sandbox
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/behaviour-matrix.md");
    let rendered = matrix::render(&observed);
    if std::env::var_os("PGDB_UPDATE_MATRIX").is_some() {
        std::fs::write(path, &rendered).expect("docs/ is writable");
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{} is out of date; regenerate it with `PGDB_UPDATE_MATRIX=1 cargo test -p tests --test suite behaviour`",
        matrix::PATH
    );
}
