//! `pgdb-tour --scenario NAME --level N`: one behaviour scenario, run live
//! on a sandbox of its own (or the cluster `PGDB_TEST_KUBECONFIG` names),
//! with what it observed printed in full, beside the behaviour matrix's
//! cell and what the level is expected to do. The behaviour suite runs the
//! same scenario; this shows its answer instead of "ok".

use shared::reconcile::error_chain;
use tests::harness::TestCluster;
use tests::scenarios;

/// Runs the scenario; `Ok(true)` when the level did what it is expected to.
pub async fn run(name: &str, level: u8) -> Result<bool, String> {
    let names = || {
        scenarios::all()
            .iter()
            .map(|e| format!("  {:<22} {}", e.name, e.title))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if name == "list" {
        println!("{}", names());
        println!("  {:<22} PrimaryPodDeleted, by another name", "failover");
        return Ok(true);
    }
    // `--scenario failover`: the primary's pod deleted while a client
    // writes; at Level 5 a replica is promoted.
    let name = if name == "failover" {
        "PrimaryPodDeleted"
    } else {
        name
    };
    let Some(entry) = scenarios::find(name) else {
        return Err(format!(
            "no scenario is named {name}; there are:\n{}",
            names()
        ));
    };
    let level = crate::level_of(level)?;
    let cluster = TestCluster::start_with((entry.sandbox_config)())
        .await
        .map_err(|e| format!("no cluster: {}", error_chain(&e)))?
        .with_budget((entry.budget)());
    println!("Scenario {}: {}", entry.name, entry.title);
    println!("Level {} ({})", level.number(), level.name());
    println!(
        "Watch it:  KUBECONFIG={} kubectl -n {} get pgdb,sts,pods,events -w\n",
        cluster.kubeconfig().display(),
        cluster.namespace()
    );
    let outcome = entry.run(&cluster, level).await;
    cluster.finish().await;
    let outcome = outcome.map_err(|failed| format!("the run failed: {failed}"))?;
    match &outcome.seen {
        Some(seen) => println!("Observed:\n{seen}\n"),
        None => println!("Not observed: {}\n", outcome.observed),
    }
    println!("Matrix cell: {}", outcome.observed);
    println!("Expected:    {}", outcome.expected);
    println!(
        "{}",
        if outcome.matches {
            "As expected: the behaviour matrix (docs/behaviour-matrix.md) shows this cell."
        } else {
            "NOT as expected."
        }
    );
    if let Some(difference) = &outcome.difference {
        println!("{difference}");
    }
    Ok(outcome.matches)
}
