//! "Passwords are generated once ... They are never logged"
//! (docs/level1-install.md), and Level 2 "never logs that password"
//! (docs/level2-upgrade.md): a representative life of Level 2's binary on
//! real PostgreSQL with every log captured at trace level, scanned for
//! every password the operator generated.
//!
//! The life: one database installed at 15, a reloadable parameter changed
//! (the operator logs in as the superuser to reload), and a major upgrade
//! to 16 (its Job logs in with the superuser's password); another database
//! installed at 16.2 and rolled out to 16.4 (the version probe logs in).
//! The logs scanned: the operator binary's stdout and stderr
//! (`RUST_LOG=trace`), and every pod's log the API serves (the servers,
//! their first-start scripts, the upgrade Job). A password is looked for
//! as itself and as the base64 a Secret carries it in.

use std::time::Duration;

use serde_json::json;
use shared::api::{ConfigurationMethod, UpgradePhase};
use tests::builders::DbBuilder;
use tests::harness::{Failed, OrFail, TestCluster, ensure, real_postgres};
use tests::leaks::{leaks, passwords, pod_logs};
use tests::levels::LevelId;
use tests::scenarios::is_settled;
use tests::scenarios::steps::is_settled_at;

/// A first start, a reload, a 15 to 16 migration and a minor rollout, on
/// a busy two-core machine, at the same time.
const BUDGET: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_generated_password_appears_in_any_log_through_install_reload_and_both_upgrades()
-> Result<(), Failed> {
    let config = real_postgres(&[15, 16]);
    for minor in [2, 4] {
        ensure(
            config.postgres.binaries.server_for(16, Some(minor)).is_ok(),
            || {
                format!(
                    "this test rolls out 16.2 to 16.4 and PostgreSQL 16.{minor} is missing; \
                 install it with `scripts/install-postgres.sh 16.{minor}`"
                )
            },
        )?;
    }
    let cluster = TestCluster::sandbox(config)
        .await
        .or_fail("start a real-PostgreSQL sandbox")?
        .with_budget(BUDGET);
    let operator = cluster
        .run_binary_env(LevelId::Two, &[], &[("RUST_LOG", "trace")])
        .or_fail("start Level 2's binary")?;

    cluster
        .create(&DbBuilder::manifest("orders").version("15").build())
        .await
        .or_fail("create orders")?;
    cluster
        .create(&DbBuilder::manifest("shop").version("16.2").build())
        .await
        .or_fail("create shop")?;
    cluster
        .wait_for("orders", "Ready at 15", |db| is_settled_at(db, "15"))
        .await?;
    cluster
        .wait_for("shop", "Ready at 16.2", |db| is_settled_at(db, "16.2"))
        .await?;

    // The first pods' logs (their first-start scripts) go with them when
    // the upgrades replace them: read at each stage.
    let mut logs = pod_logs(&cluster).await?;

    // A reload: Level 2 logs in as the superuser to run pg_reload_conf().
    cluster
        .patch_spec("orders", json!({"parameters": {"work_mem": "8MB"}}))
        .await
        .or_fail("change work_mem")?;
    cluster
        .wait_for("orders", "reloaded with work_mem", |db| {
            is_settled(db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.configuration.as_ref())
                    .is_some_and(|c| {
                        c.applied
                            && c.applied_by == ConfigurationMethod::Reload
                            && c.changed.iter().any(|p| p == "work_mem")
                    })
        })
        .await?;

    logs.extend(pod_logs(&cluster).await?);

    // Both upgrades at once: a migration Job that logs in to the old
    // server, and a minor rollout whose probe logs in to the new one.
    cluster
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true}}),
        )
        .await
        .or_fail("ask for 16")?;
    cluster
        .patch_spec("shop", json!({"version": "16.4"}))
        .await
        .or_fail("ask for 16.4")?;
    cluster
        .wait_for("shop", "Ready at 16.4", |db| is_settled_at(db, "16.4"))
        .await?;
    cluster
        .wait_for("orders", "upgraded to 16", |db| {
            is_settled_at(db, "16")
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.upgrade.as_ref())
                    .is_some_and(|u| u.phase == UpgradePhase::Complete)
        })
        .await?;

    let passwords = passwords(&cluster).await?;
    let names: Vec<&str> = passwords.iter().map(|p| p.origin.as_str()).collect();
    ensure(
        [
            "Secret orders-credentials",
            "Secret orders-superuser",
            "Secret shop-credentials",
            "Secret shop-superuser",
        ]
        .iter()
        .all(|n| names.contains(n)),
        || format!("every generated password is read: {names:?}"),
    )?;
    logs.extend(pod_logs(&cluster).await?);
    ensure(
        logs.iter().any(|(name, _)| name.contains("-upgrade-")),
        || "the upgrade Job's log is among those scanned".into(),
    )?;
    let output = operator
        .output()
        .ok_or_else(|| Failed::new("a binary has output"))?
        .or_fail("read the operator's output")?;
    let lines = output.lines().count();
    eprintln!(
        "scanned {lines} lines of the operator's output and {} pod logs for {} passwords",
        logs.len(),
        passwords.len()
    );
    // Trace level indeed: the output holds the reconciles' details.
    ensure(output.contains("TRACE") || output.contains("DEBUG"), || {
        format!("the operator logged at trace level ({lines} lines)")
    })?;
    logs.push(("the operator's output".into(), output));
    let found = leaks(&passwords, &logs);
    ensure(found.is_empty(), || {
        format!("passwords in logs:\n{}", found.join("\n"))
    })?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}
