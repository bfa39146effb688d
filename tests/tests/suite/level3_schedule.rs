//! Level 3's backup schedule and retention on the sandbox, on objects
//! only: the schedule creates `PostgresDBBackup` objects and retention
//! deletes them. Taking the backups is the backup controller's work; here
//! the test plays its part where one is needed, setting a backup's status
//! by hand, so what is checked is the schedule's own: deterministic names,
//! one backup per slot, nothing repeated and nothing piled up across an
//! operator restart, and the oldest completed backups deleted as soon as a
//! backup's status changes (the runner watches backups for their database).
//! And the PodDisruptionBudget covering the database's pod, and an invalid
//! schedule refused with the parser's words.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{CustomResourceExt, ResourceExt};
use level3_lifecycle::lifecycle::backups::schedule::{Schedule, backup_name};
use serde_json::json;
use shared::api::{Phase, PostgresDB};
use shared::backup::{BackupPhase, BackupSpec, PostgresDBBackup, RetentionSpec};
use shared::keys::SCHEDULED_FOR_ANNOTATION;
use shared::runner::{self, RunOptions};
use tests::builders::DbBuilder;
use tests::harness::{Failed, Operator, OrFail, TestCluster};
use tokio::sync::oneshot;

/// The schedule's period, in seconds: short, so slots pass during a test.
const EVERY: i64 = 3;

async fn start() -> TestCluster {
    let cluster = match TestCluster::start().await {
        Ok(cluster) => cluster.with_budget(Duration::from_secs(60)),
        Err(error) => panic!("no cluster: {}", shared::reconcile::error_chain(&error)),
    };
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    let crd = PostgresDBBackup::crd();
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("level3-schedule-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|error| panic!("the PostgresDBBackup CRD is not accepted: {error}"));
    let backups = cluster.api::<PostgresDBBackup>();
    cluster
        .eventually(cluster.budget(), "PostgresDBBackups are served", || async {
            Ok(backups.list(&ListParams::default()).await.ok().map(|_| ()))
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    cluster
}

/// Level 3 in-process, watching the test's namespace, as
/// `TestCluster::run_operator` runs the levels the suite knows.
fn run_level3(cluster: &TestCluster) -> Operator {
    let (stop, stopped) = oneshot::channel::<()>();
    let instance = format!("level3-lifecycle-{}", cluster.namespace());
    let options = RunOptions {
        namespace: Some(cluster.namespace().to_string()),
        instance: Some(instance.clone()),
        ..Default::default()
    };
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    let task = tokio::spawn(async move {
        let agent = shared::cli::user_agent("level3-lifecycle");
        let client = shared::cli::connect(Some(&kubeconfig), &agent).await?;
        runner::run(level3_lifecycle::level(), client, options, async move {
            let _ = stopped.await;
        })
        .await
    });
    Operator::InProcess {
        stop: Some(stop),
        task,
        instance,
    }
}

fn scheduled(retention: Option<RetentionSpec>) -> PostgresDB {
    let mut db = DbBuilder::manifest("orders").build();
    db.spec.backup = Some(BackupSpec {
        schedule: Some(format!("*/{EVERY} * * * * *")),
        retention,
        ..Default::default()
    });
    db
}

/// The scheduled backups, by slot (seconds since the epoch).
async fn by_slot(cluster: &TestCluster) -> Result<BTreeMap<i64, PostgresDBBackup>, Failed> {
    let list = cluster
        .api::<PostgresDBBackup>()
        .list(&ListParams::default())
        .await
        .or_fail("list PostgresDBBackups")?;
    let mut slots = BTreeMap::new();
    for backup in list.items {
        let slot: k8s_openapi::jiff::Timestamp = backup
            .annotations()
            .get(SCHEDULED_FOR_ANNOTATION)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| Failed::new(format!("{} has no slot", backup.name_any())))?;
        if let Some(twin) = slots.insert(slot.as_second(), backup.clone()) {
            return Err(Failed::new(format!(
                "two backups for the slot {slot}: {} and {}",
                twin.name_any(),
                backup.name_any()
            )));
        }
    }
    Ok(slots)
}

fn check_names(slots: &BTreeMap<i64, PostgresDBBackup>) {
    for (slot, backup) in slots {
        let at = k8s_openapi::jiff::Timestamp::from_second(*slot).expect("a time");
        assert_eq!(backup.name_any(), backup_name("orders", at));
        assert_eq!(slot % EVERY, 0, "{} is not a slot", backup.name_any());
        assert_eq!(backup.spec.database, "orders");
    }
}

#[tokio::test]
async fn a_schedule_takes_each_slot_once_with_deterministic_names_across_an_operator_restart() {
    let cluster = start().await;
    cluster
        .create(&scheduled(None))
        .await
        .unwrap_or_else(|error| panic!("{}", shared::reconcile::error_chain(&error)));
    let first = run_level3(&cluster);
    cluster
        .eventually(cluster.budget(), "two slots have backups", || async {
            Ok(by_slot(&cluster).await.ok().filter(|s| s.len() >= 2))
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    first.stop().await;
    let before = by_slot(&cluster).await.unwrap_or_else(|f| panic!("{f}"));
    check_names(&before);
    let last = *before.keys().last().expect("two backups");
    // The reconcile wakes at the slot: each backup is created within the
    // second after it (creation times are whole seconds), unless the
    // machine is very busy.
    let latency = before
        .iter()
        .filter_map(|(slot, b)| Some(b.creation_timestamp()?.0.as_second() - slot))
        .max()
        .expect("creation times");
    eprintln!("slot to PostgresDBBackup: at most {latency} s");
    assert!(
        latency < 20,
        "a backup was created {latency} s after its slot"
    );

    // Down for more than two periods: the slots in between are missed.
    tokio::time::sleep(Duration::from_secs(EVERY as u64 * 2 + 2)).await;
    let restarted_at = k8s_openapi::jiff::Timestamp::now().as_second();
    let second = run_level3(&cluster);
    cluster
        .eventually(
            cluster.budget(),
            "a slot after the restart has a backup",
            || async {
                Ok(by_slot(&cluster)
                    .await
                    .ok()
                    .filter(|s| s.keys().any(|slot| *slot > last)))
            },
        )
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    second.stop().await;
    let after = by_slot(&cluster).await.unwrap_or_else(|f| panic!("{f}"));
    check_names(&after);
    for (slot, backup) in &before {
        let now = after.get(slot).map(|b| b.uid());
        assert_eq!(
            now,
            Some(backup.uid()),
            "the backup of slot {slot} was replaced"
        );
    }
    let new: Vec<i64> = after.keys().copied().filter(|s| *s > last).collect();
    assert!(
        new[0] >= restarted_at - EVERY,
        "missed slots were piled up: slots {new:?} after a restart at {restarted_at} (last before: {last})"
    );
    assert!(
        !after.contains_key(&(last + EVERY)),
        "a missed slot was taken"
    );
    cluster.finish().await;
}

#[tokio::test]
async fn retention_deletes_the_oldest_completed_backups_and_keeps_the_newest() {
    let cluster = start().await;
    cluster
        .create(&scheduled(Some(RetentionSpec {
            keep_last: Some(2),
            max_age: None,
        })))
        .await
        .unwrap_or_else(|error| panic!("{}", shared::reconcile::error_chain(&error)));
    let mut bad = DbBuilder::manifest("billing").build();
    bad.spec.backup = Some(BackupSpec {
        schedule: Some("61 * * * *".into()),
        ..Default::default()
    });
    cluster
        .create(&bad)
        .await
        .unwrap_or_else(|error| panic!("{}", shared::reconcile::error_chain(&error)));
    let operator = run_level3(&cluster);
    let taken = cluster
        .eventually(cluster.budget(), "four slots have backups", || async {
            Ok(by_slot(&cluster).await.ok().filter(|s| s.len() >= 4))
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    // Settled and suspended, the database is at rest and the schedule asks
    // for no reconcile: what follows happens only because a backup's change
    // triggers its database's.
    cluster
        .patch_spec("orders", json!({"backup": {"suspend": true}}))
        .await
        .unwrap_or_else(|error| panic!("{}", shared::reconcile::error_chain(&error)));
    cluster
        .wait_for("orders", "settled and suspended", |db| {
            tests::scenarios::is_settled(db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.backup.as_ref())
                    .is_none_or(|b| b.next_scheduled_at.is_none())
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    // The database's one pod is covered by a budget that refuses evicting it.
    let budget = cluster
        .api::<PodDisruptionBudget>()
        .get("orders")
        .await
        .unwrap_or_else(|error| panic!("no PodDisruptionBudget: {error}"));
    let spec = budget.spec.expect("a budget spec");
    assert_eq!(spec.min_available, Some(IntOrString::Int(1)));
    let pod = cluster
        .api::<Pod>()
        .get("orders-0")
        .await
        .unwrap_or_else(|error| panic!("no pod orders-0: {error}"));
    let selected = spec
        .selector
        .and_then(|s| s.match_labels)
        .expect("a label selector");
    for (key, value) in &selected {
        assert_eq!(
            pod.labels().get(key),
            Some(value),
            "the budget misses the pod"
        );
    }
    if let Some(sandbox) = cluster.sandbox_handle() {
        // At rest: a whole period passes without a reconcile beginning
        // (each begins with a GET of the database). The one that follows
        // a status write may still come first, late on a busy machine.
        let counters = sandbox.counters();
        let deadline = tokio::time::Instant::now() + cluster.budget();
        let mut began = counters.get("get", "postgresdbs");
        loop {
            tokio::time::sleep(Duration::from_secs(EVERY as u64 + 1)).await;
            let now = counters.get("get", "postgresdbs");
            if now == began {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a suspended schedule still reconciles: the database never came to rest"
            );
            began = now;
        }
    }
    // The backup controller's part: these four completed, a second after their slot.
    let completed: Vec<(i64, String)> = taken
        .iter()
        .take(4)
        .map(|(slot, backup)| (*slot, backup.name_any()))
        .collect();
    let api = cluster.api::<PostgresDBBackup>();
    for (slot, name) in &completed {
        let done = k8s_openapi::jiff::Timestamp::from_second(slot + 1).expect("a time");
        let status = json!({"status": {
            "phase": BackupPhase::Completed,
            "startedAt": done.to_string(),
            "completedAt": done.to_string(),
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|error| panic!("could not complete {name}: {error}"));
    }
    let newest = completed[3].1.clone();
    let kept = cluster
        .eventually(
            cluster.budget(),
            "two completed backups are left",
            || async {
                let slots = by_slot(&cluster).await?;
                let done: Vec<String> = slots
                    .values()
                    .filter(|b| {
                        b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed)
                    })
                    .map(|b| b.name_any())
                    .collect();
                Ok((done.len() == 2).then_some(done))
            },
        )
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    assert_eq!(kept, [completed[2].1.clone(), newest.clone()]);
    for (_, name) in &completed[..2] {
        let gone = api.get_opt(name).await.expect("read");
        assert!(gone.is_none(), "{name} was kept");
    }
    let db = cluster
        .wait_for("orders", "reporting its newest backup", |db| {
            db.status
                .as_ref()
                .and_then(|s| s.backup.as_ref())
                .and_then(|b| b.last_successful_backup.as_deref())
                == Some(newest.as_str())
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    let summary = db.status.and_then(|s| s.backup).expect("status.backup");
    assert_eq!(summary.next_scheduled_at, None, "suspended");
    // A schedule the parser refuses: the field and the parser's words.
    let parser = Schedule::parse("61 * * * *").expect_err("minute 61").0;
    cluster
        .wait_for("billing", "refused naming spec.backup.schedule", |db| {
            db.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::Invalid)
                    && s.conditions.iter().any(|c| {
                        c.type_ == "Ready"
                            && c.message.contains("spec.backup.schedule")
                            && c.message.contains(&parser)
                    })
            })
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    let refused = by_slot(&cluster).await.unwrap_or_else(|f| panic!("{f}"));
    assert!(refused.values().all(|b| b.spec.database == "orders"));
    operator.stop().await;
    if let Some(sandbox) = cluster.sandbox_handle() {
        let rules = tests::rbac::deployed_rules();
        let denied: Vec<String> = sandbox
            .counters()
            .requests_from("level3-lifecycle/")
            .iter()
            .filter(|request| request.resource != "pods/portforward")
            .filter(|request| !rules.iter().any(|rule| rule.allows(request)))
            .map(tests::rbac::describe)
            .collect();
        assert!(
            denied.is_empty(),
            "deploy/base/rbac.yaml does not grant: {denied:?}"
        );
    }
    cluster.finish().await;
}
