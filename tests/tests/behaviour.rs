//! Every scenario against every level; the outcomes must be the expected
//! ones, and on the sandbox they must be what docs/behaviour-matrix.md says.

use std::collections::BTreeMap;

use futures::future::join_all;
use tests::harness::TestCluster;
use tests::levels::LevelId;
use tests::matrix;
use tests::scenarios::Scenario;

async fn observe(scenario: Scenario, level: LevelId) -> ((Scenario, LevelId), String) {
    let cluster = match TestCluster::start_with(scenario.sandbox_config()).await {
        Ok(cluster) => cluster,
        Err(error) => panic!("no cluster: {}", shared::reconcile::error_chain(&error)),
    };
    let mut outcome = scenario.run(&cluster, level).await;
    // Whatever the scenario made the operator do, its deployed RBAC must grant.
    let denied = tests::rbac::ungranted(&cluster, level);
    if !denied.is_empty() {
        outcome += &format!("; deploy/rbac.yaml does not grant {denied:?}");
    }
    cluster.finish().await;
    ((scenario, level), outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_level_does_what_the_behaviour_matrix_says() {
    let external = std::env::var_os("PGDB_TEST_KUBECONFIG").is_some();
    // PGDB_SCENARIOS=MinorUpgrade,AtRest runs only those (and skips the matrix check).
    let only = std::env::var("PGDB_SCENARIOS").ok();
    let selected: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| {
            only.as_deref()
                .is_none_or(|only| only.split(',').any(|name| name == format!("{s:?}")))
        })
        .collect();
    let runs = selected
        .into_iter()
        .flat_map(|s| LevelId::ALL.into_iter().map(move |l| observe(s, l)));
    let observed: BTreeMap<(Scenario, LevelId), String> =
        join_all(runs).await.into_iter().collect();

    let not_run: Vec<String> = observed
        .iter()
        .filter(|(_, outcome)| {
            outcome.starts_with("not run") || outcome.starts_with("not measured")
        })
        .map(|((scenario, level), outcome)| {
            format!("{scenario:?} / level {}: {outcome}", level.number())
        })
        .collect();
    if !not_run.is_empty() {
        eprintln!("on this cluster:\n{}", not_run.join("\n"));
    }

    let mismatches: Vec<String> = observed
        .iter()
        // On a real cluster, scenarios that need the sandbox say "not run" or
        // "not measured" and are skipped.
        .filter(|(_, outcome)| {
            !(external && (outcome.starts_with("not run") || outcome.starts_with("not measured")))
        })
        .filter(|((scenario, level), outcome)| outcome.as_str() != scenario.expected(*level))
        .map(|((scenario, level), outcome)| {
            format!(
                "{} / level {}:\n  expected: {}\n  observed: {outcome}",
                scenario.title(),
                level.number(),
                scenario.expected(*level)
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "levels did not behave as expected:\n{}",
        mismatches.join("\n")
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
        "{} is out of date; regenerate it with `PGDB_UPDATE_MATRIX=1 cargo test -p tests --test behaviour`",
        matrix::PATH
    );
}
