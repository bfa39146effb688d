//! Every scenario against every level; the observations must be the
//! expected ones, and on the sandbox they must be what
//! docs/behaviour-matrix.md says.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::future::join_all;
use tests::harness::TestCluster;
use tests::levels::LevelId;
use tests::matrix;
use tests::scenarios::{self, Entry, Outcome};

/// Runs `scenario` against `level` on a cluster of its own, once the
/// harness grants one (so its budget starts then), and checks that the
/// deployed RBAC grants whatever the level did.
async fn observe(scenario: &Entry, level: LevelId) -> Result<Outcome, String> {
    let cluster = TestCluster::start_with((scenario.sandbox_config)())
        .await
        .map_err(|error| format!("no cluster: {}", shared::reconcile::error_chain(&error)))?
        .with_budget((scenario.budget)());
    let began = Instant::now();
    let outcome = scenario.run(&cluster, level).await;
    eprintln!(
        "{} / level {}: {:.1?}",
        scenario.name,
        level.number(),
        began.elapsed()
    );
    let denied = tests::rbac::ungranted(&cluster, level);
    cluster.finish().await;
    let outcome = outcome.map_err(|failed| failed.to_string())?;
    if !denied.is_empty() {
        return Err(format!("deploy/rbac.yaml does not grant {denied:?}"));
    }
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_level_does_what_the_behaviour_matrix_says() {
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
    let runs = selected.iter().flat_map(|s| {
        LevelId::ALL
            .into_iter()
            .map(move |l| async move { ((s.name, s.title, l), observe(s, l).await) })
    });
    let results = join_all(runs).await;

    let mut problems = Vec::new();
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
