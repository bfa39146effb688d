//! Level 5's instances on real PostgreSQL 15: replicas clone the primary
//! and stream through a slot each; the read-write Service selects the
//! primary alone and `<name>-ro` the replicas; scaling down keeps the
//! primary and drops the slots of the instances scaled away; a Level 4 →
//! Level 5 swap restarts nothing, and a replica added afterwards streams;
//! synchronous replication makes a commit wait while no replica streams,
//! and turning it on restarts nothing.
//!
//! Level 5 runs in-process, reaching the servers directly (the sandbox's
//! pod IPs are loopback addresses of this machine); the test reads the
//! servers the same way, as the superuser.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::ResourceExt;
use shared::runner::RunOptions;
use shared::sql::DatabaseAccess;
use tests::builders::DbBuilder;
use tests::connect::{Role, connect, login};
use tests::harness::{Operator, TestCluster};
use tests::levels::LevelId;

/// First starts and clones of real servers on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(240);

async fn cluster() -> TestCluster {
    TestCluster::real_postgres_15(WAIT).await
}

fn level(cluster: &TestCluster, level: LevelId) -> Operator {
    cluster.run_operator_with(
        level,
        RunOptions {
            database_access: DatabaseAccess::Direct,
            ..Default::default()
        },
    )
}

fn ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod named `name` once it is ready.
async fn ready_pod(cluster: &TestCluster, name: &str) -> Pod {
    match cluster
        .wait_for_object::<Pod>(name, "ready", |pod| pod.is_some_and(is_ready))
        .await
    {
        Ok(Some(pod)) => pod,
        Ok(None) => panic!("pod {name} vanished"),
        Err(failed) => panic!("{failed}"),
    }
}

/// The addresses the Service `name` routes to now.
async fn endpoints(cluster: &TestCluster, name: &str) -> BTreeSet<String> {
    cluster
        .api::<Endpoints>()
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|e| e.subsets)
        .into_iter()
        .flatten()
        .flat_map(|s| s.addresses.unwrap_or_default())
        .map(|a| a.ip)
        .collect()
}

/// Waits until the Service `name` routes to exactly `ips`.
async fn wait_endpoints(cluster: &TestCluster, name: &str, ips: &[String]) {
    let wanted: BTreeSet<String> = ips.iter().cloned().collect();
    let waited = cluster
        .eventually(
            WAIT,
            &format!("Service {name} routes to {wanted:?}"),
            || async { Ok((endpoints(cluster, name).await == wanted).then_some(())) },
        )
        .await;
    if let Err(failed) = waited {
        panic!(
            "{failed}\nit routes to {:?}",
            endpoints(cluster, name).await
        );
    }
}

/// A superuser session on the server of the pod at `ip`, to database
/// `dbname` of database `name`.
async fn session(
    cluster: &TestCluster,
    name: &str,
    ip: &str,
    dbname: &str,
) -> tokio_postgres::Client {
    let mut config = login(cluster, Role::Superuser, name, Some(dbname))
        .await
        .expect("the superuser's Secret exists");
    config.host(ip);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connects to {ip}: {e}"));
    tokio::spawn(connection);
    client
}

/// One text answer of `sql` on the server at `ip`, `None` when it fails.
async fn answer(cluster: &TestCluster, name: &str, ip: &str, sql: &str) -> Option<String> {
    let mut config = login(cluster, Role::Superuser, name, Some("app")).await?;
    config.host(ip);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(connection);
    let row = client.query_one(sql, &[]).await.ok()?;
    row.try_get::<_, Option<String>>(0).ok().flatten()
}

/// Waits until `sql` answers `expected` on the server at `ip`.
async fn wait_answer(cluster: &TestCluster, name: &str, ip: &str, sql: &str, expected: &str) {
    let waited = cluster
        .eventually(
            WAIT,
            &format!("{sql} answers {expected} on {ip}"),
            || async {
                Ok(
                    (answer(cluster, name, ip, sql).await.as_deref() == Some(expected))
                        .then_some(()),
                )
            },
        )
        .await;
    if let Err(failed) = waited {
        panic!(
            "{failed}\nit answers {:?}",
            answer(cluster, name, ip, sql).await
        );
    }
}

/// Writes a row through the read-write Service.
async fn write_row(cluster: &TestCluster, name: &str, body: &str) {
    let owner = connect(cluster, Role::Owner, name)
        .await
        .expect("the owner's Secret exists");
    owner
        .batch_execute("CREATE TABLE IF NOT EXISTS notes (body text)")
        .await
        .expect("creates the table");
    owner
        .execute("INSERT INTO notes VALUES ($1)", &[&body])
        .await
        .expect("writes a row");
}

const HAS_ROW: &str = "SELECT count(*)::text FROM notes WHERE body = 'hello'";
const SLOTS: &str = "SELECT coalesce(string_agg(slot_name::text, ',' ORDER BY slot_name), '') FROM pg_replication_slots";

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |c| c.iter().map(|c| c.restart_count).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_stream_from_the_primary_and_scaling_down_keeps_it_and_drops_the_slots() {
    let cluster = cluster().await;
    let operator = level(&cluster, LevelId::Five);
    let db = DbBuilder::manifest("orders")
        .version("15")
        .instances(3)
        .build();
    cluster.create(&db).await.expect("creates the database");
    let primary = ready_pod(&cluster, "orders-0").await;
    let replicas = [
        ready_pod(&cluster, "orders-1").await,
        ready_pod(&cluster, "orders-2").await,
    ];
    let primary = ready_pod(&cluster, &primary.name_any()).await;
    let primary_ip = ip(&primary).expect("the primary's IP");
    let replica_ips: Vec<String> = replicas.iter().filter_map(ip).collect();
    wait_endpoints(&cluster, "orders", std::slice::from_ref(&primary_ip)).await;
    wait_endpoints(&cluster, "orders-ro", &replica_ips).await;
    let mut all = replica_ips.clone();
    all.push(primary_ip.clone());
    wait_endpoints(&cluster, "orders-r", &all).await;

    write_row(&cluster, "orders", "hello").await;
    for replica in &replica_ips {
        wait_answer(&cluster, "orders", replica, HAS_ROW, "1").await;
        wait_answer(
            &cluster,
            "orders",
            replica,
            "SELECT status FROM pg_stat_wal_receiver",
            "streaming",
        )
        .await;
    }
    wait_answer(
        &cluster,
        "orders",
        &primary_ip,
        SLOTS,
        "instance_1,instance_2",
    )
    .await;
    // Level 4's collector, asking the primary, gets each replica's replay
    // lag by its pod's name (the replicas' application_name).
    let lags = session(&cluster, "orders", &primary_ip, "postgres")
        .await
        .query(
            level4_insights::insights::collector::measure::COLLECT_SQL,
            &[],
        )
        .await
        .expect("the collector's statement runs on the primary");
    let mut lagging: Vec<String> = lags
        .iter()
        .filter(|row| row.get::<_, Option<String>>(0).as_deref() == Some("replication"))
        .filter_map(|row| row.get::<_, Option<String>>(1))
        .collect();
    lagging.sort();
    assert_eq!(lagging, ["orders-1", "orders-2"], "replication rows");
    let uid = primary.uid();

    cluster
        .patch_spec("orders", serde_json::json!({"instances": 2}))
        .await
        .expect("scales to 2");
    wait_answer(&cluster, "orders", &primary_ip, SLOTS, "instance_1").await;
    wait_endpoints(&cluster, "orders-ro", &replica_ips[..1]).await;
    cluster
        .patch_spec("orders", serde_json::json!({"instances": 1}))
        .await
        .expect("scales to 1");
    wait_answer(&cluster, "orders", &primary_ip, SLOTS, "").await;
    wait_endpoints(&cluster, "orders-ro", &[]).await;
    let kept = ready_pod(&cluster, "orders-0").await;
    assert_eq!(kept.uid(), uid, "scaling down touched the primary's pod");
    wait_endpoints(&cluster, "orders", std::slice::from_ref(&primary_ip)).await;
    wait_answer(&cluster, "orders", &primary_ip, HAS_ROW, "1").await;
    operator.stop().await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_4_database_taken_over_by_level_5_restarts_nothing_and_then_takes_a_replica() {
    let cluster = cluster().await;
    let level4 = level(&cluster, LevelId::Four);
    let db = DbBuilder::manifest("orders").version("15").build();
    cluster.create(&db).await.expect("creates the database");
    let before = ready_pod(&cluster, "orders-0").await;
    write_row(&cluster, "orders", "hello").await;
    level4.stop().await;

    let level5 = level(&cluster, LevelId::Five);
    // Level 5 reconciles the database: its status is assessed anew.
    let waited = cluster
        .wait_for("orders", "assessed by Level 5", |db| {
            db.status
                .as_ref()
                .is_some_and(|s| s.high_availability.is_some())
        })
        .await;
    if let Err(failed) = waited {
        panic!("{failed}");
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = ready_pod(&cluster, "orders-0").await;
    assert_eq!(after.uid(), before.uid(), "the swap recreated the pod");
    assert_eq!(
        restarts(&after),
        restarts(&before),
        "the swap restarted the server"
    );

    cluster
        .patch_spec("orders", serde_json::json!({"instances": 2}))
        .await
        .expect("adds a replica");
    let replica = ready_pod(&cluster, "orders-1").await;
    let replica_ip = ip(&replica).expect("the replica's IP");
    wait_answer(&cluster, "orders", &replica_ip, HAS_ROW, "1").await;
    let primary = ready_pod(&cluster, "orders-0").await;
    wait_endpoints(&cluster, "orders", &[ip(&primary).expect("an IP")]).await;
    level5.stop().await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_commit_waits_while_no_replica_streams_and_turning_it_on_restarts_nothing() {
    let cluster = cluster().await;
    let operator = level(&cluster, LevelId::Five);
    let db = DbBuilder::manifest("orders")
        .version("15")
        .instances(2)
        .build();
    cluster.create(&db).await.expect("creates the database");
    let _ = ready_pod(&cluster, "orders-0").await;
    let replica = ready_pod(&cluster, "orders-1").await;
    let primary = ready_pod(&cluster, "orders-0").await;
    let primary_ip = ip(&primary).expect("an IP");
    let replica_ip = ip(&replica).expect("an IP");
    write_row(&cluster, "orders", "hello").await;
    wait_answer(&cluster, "orders", &replica_ip, HAS_ROW, "1").await;

    cluster
        .patch_spec(
            "orders",
            serde_json::json!({"replication": {"synchronous": true, "synchronousReplicas": 1}}),
        )
        .await
        .expect("turns synchronous replication on");
    wait_answer(
        &cluster,
        "orders",
        &primary_ip,
        "SELECT current_setting('synchronous_standby_names')",
        "ANY 1 (*)",
    )
    .await;
    wait_answer(
        &cluster,
        "orders",
        &primary_ip,
        "SELECT sync_state FROM pg_stat_replication",
        "quorum",
    )
    .await;
    for (before, name) in [(&primary, "orders-0"), (&replica, "orders-1")] {
        let after = ready_pod(&cluster, name).await;
        assert_eq!(after.uid(), before.uid(), "turning it on recreated {name}");
        assert_eq!(
            restarts(&after),
            restarts(before),
            "turning it on restarted {name}"
        );
    }

    // The replica stops answering: a commit waits for it.
    let runtime = cluster
        .sandbox_handle()
        .and_then(|s| s.postgres_runtime())
        .expect("the real runtime");
    assert!(runtime.pause(cluster.namespace(), "orders-1", None, true));
    let writer = session(&cluster, "orders", &primary_ip, "app").await;
    let commit = tokio::spawn(async move {
        writer
            .execute("INSERT INTO notes VALUES ('waited')", &[])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !commit.is_finished(),
        "a synchronous commit returned with no replica streaming"
    );
    assert!(runtime.pause(cluster.namespace(), "orders-1", None, false));
    let done = tokio::time::timeout(WAIT, commit)
        .await
        .expect("the commit returns once the replica streams again")
        .expect("the writer's task ends");
    assert_eq!(done, Ok(()));

    // At rest, the operator writes nothing: no role label, Service or
    // configuration applied again.
    let sandbox = cluster.sandbox_handle().expect("the sandbox");
    sandbox.counters().reset();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let counted = sandbox.counters().snapshot();
    let written: Vec<_> = counted
        .iter()
        .filter(|((verb, resource), n)| {
            **n > 0
                && ["patch", "create", "update", "delete"].contains(&verb.as_str())
                && ["pods", "services", "configmaps", "secrets", "statefulsets"]
                    .contains(&resource.as_str())
        })
        .collect();
    assert!(written.is_empty(), "written at rest: {written:?}");

    // Turning it off is reloaded too, and restarts nothing.
    cluster
        .patch_spec(
            "orders",
            serde_json::json!({"replication": {"synchronous": false}}),
        )
        .await
        .expect("turns synchronous replication off");
    wait_answer(
        &cluster,
        "orders",
        &primary_ip,
        "SELECT current_setting('synchronous_standby_names')",
        "",
    )
    .await;
    for (before, name) in [(&primary, "orders-0"), (&replica, "orders-1")] {
        let after = ready_pod(&cluster, name).await;
        assert_eq!(after.uid(), before.uid(), "turning it off recreated {name}");
        assert_eq!(
            restarts(&after),
            restarts(before),
            "turning it off restarted {name}"
        );
    }
    operator.stop().await;
    cluster.finish().await;
}

/// The termination message of `pod`'s last failed start, when there is one.
fn last_failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let terminated = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| status.state.as_ref()?.terminated.as_ref())?;
    terminated.message.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_volume_is_wiped_clones_the_primary_again_and_a_primary_s_never_starts_empty()
 {
    let cluster = cluster().await;
    let operator = level(&cluster, LevelId::Five);
    let db = DbBuilder::manifest("orders")
        .version("15")
        .instances(2)
        .failover(shared::ha::FailoverSpec {
            delay_seconds: 3600,
        })
        .build();
    cluster.create(&db).await.expect("creates the database");
    let _ = ready_pod(&cluster, "orders-0").await;
    let _ = ready_pod(&cluster, "orders-1").await;
    write_row(&cluster, "orders", "hello").await;
    let runtime = cluster
        .sandbox_handle()
        .and_then(|s| s.postgres_runtime())
        .expect("the real runtime");
    let ns = cluster.namespace().to_string();

    // The replica's disk is wiped and its server dies: it starts again as
    // a fresh clone of the primary, with the row.
    runtime
        .delete_volume_data(&ns, "data-orders-1")
        .expect("wipes the replica's volume");
    // Killed if it still runs: a server whose files vanish may die of it
    // first (a busy machine widens that moment). Either way its container
    // restarts, which the wait below requires.
    let _still_running = runtime.kill_container(&ns, "orders-1", None, sandbox::KillKind::Crash);
    let waited = cluster
        .wait_for_object::<Pod>("orders-1", "restarted and ready", |pod| {
            pod.is_some_and(|p| restarts(p) >= 1 && is_ready(p))
        })
        .await;
    let replica = match waited {
        Ok(Some(pod)) => pod,
        other => panic!("{other:?}"),
    };
    let replica_ip = ip(&replica).expect("an IP");
    wait_answer(&cluster, "orders", &replica_ip, HAS_ROW, "1").await;
    wait_answer(
        &cluster,
        "orders",
        &replica_ip,
        "SELECT status FROM pg_stat_wal_receiver",
        "streaming",
    )
    .await;

    // The primary's disk is wiped and its server dies: it refuses to start
    // as a new, empty database, and says why (no failover here: its delay
    // is an hour, so the refusal is what the pod shows).
    runtime
        .delete_volume_data(&ns, "data-orders-0")
        .expect("wipes the primary's volume");
    assert!(runtime.kill_container(&ns, "orders-0", None, sandbox::KillKind::Crash));
    let waited = cluster
        .wait_for_object::<Pod>("orders-0", "refusing to start", |pod| {
            pod.and_then(last_failure)
                .is_some_and(|m| m.contains("refusing to start as the primary"))
        })
        .await;
    if let Err(failed) = waited {
        panic!("{failed}");
    }
    let primary = cluster
        .api::<Pod>()
        .get("orders-0")
        .await
        .expect("reads the pod");
    assert!(!is_ready(&primary), "a primary with a lost volume serves");
    operator.stop().await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_created_with_synchronous_replication_starts_and_its_replica_becomes_synchronous()
 {
    let cluster = cluster().await;
    let operator = level(&cluster, LevelId::Five);
    let mut db = DbBuilder::manifest("orders")
        .version("15")
        .instances(2)
        .build();
    db.spec.replication = Some(shared::ha::ReplicationSpec {
        synchronous: true,
        synchronous_replicas: 1,
    });
    cluster.create(&db).await.expect("creates the database");
    let _ = ready_pod(&cluster, "orders-1").await;
    let primary = ready_pod(&cluster, "orders-0").await;
    let primary_ip = ip(&primary).expect("an IP");
    wait_answer(
        &cluster,
        "orders",
        &primary_ip,
        "SELECT sync_state FROM pg_stat_replication",
        "quorum",
    )
    .await;
    write_row(&cluster, "orders", "hello").await;
    operator.stop().await;
    cluster.finish().await;
}
