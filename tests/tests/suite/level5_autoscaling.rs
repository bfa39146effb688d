//! Level 5's replica autoscaling on real PostgreSQL 15: a read-only pgbench
//! load of 10 clients on a database allowed one to two instances, with a
//! target of 50% of the 17 connections `max_connections: 20` leaves
//! clients, scales out to a replica at once (no scale-out window); the
//! load's next rounds, which prefer the `-ro` Service, are served by the
//! new replica; once the load stops, the scale-in window (20 s) passes and
//! the database is back to one instance. Each decision is in
//! `status.autopilot.autoscaling` and in an Event with the figures, and
//! the spec is never edited.
//!
//! Level 5 runs in-process, reaching the servers directly (the sandbox's
//! pod IPs are loopback addresses of this machine); pgbench and the test
//! reach them the same way.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use shared::runner::RunOptions;
use shared::sql::DatabaseAccess;
use tests::connect::{Role, login};
use tests::harness::TestCluster;
use tests::levels::LevelId;
use tests::scenarios::is_settled;
use tests::scenarios::read_load_scaled::{
    ReadLoad, autoscaling, database, decided, init_pgbench, pgbench_sessions_on,
};

/// First starts and clones of real servers on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(240);

async fn cluster() -> TestCluster {
    TestCluster::real_postgres_15(WAIT).await
}

/// The number of rows of `pgbench_accounts` on the server of pod `pod`.
async fn accounts_on(cluster: &TestCluster, pod: &str) -> Option<i64> {
    let ip = cluster
        .api::<Pod>()
        .get_opt(pod)
        .await
        .ok()??
        .status?
        .pod_ip?;
    let mut config = login(cluster, Role::Owner, "orders", None).await?;
    config.host(&ip);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .ok()?;
    row.try_get::<_, i64>(0).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_load_scales_out_to_a_replica_that_serves_reads_and_back_in_after_the_window() {
    let cluster = cluster().await;
    let operator = cluster.run_operator_with(
        LevelId::Five,
        RunOptions {
            database_access: DatabaseAccess::Direct,
            ..Default::default()
        },
    );
    cluster
        .create(&database())
        .await
        .expect("creates the database");
    let started = cluster
        .wait_for("orders", "Ready, autoscaled at one instance", |db| {
            is_settled(db)
                && decided(db).is_some_and(|d| d.instances == 1 && d.last_decision.is_none())
        })
        .await;
    if let Err(failed) = started {
        panic!("{failed}");
    }
    init_pgbench(&cluster, "orders")
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));

    let load = ReadLoad::start(&cluster, "orders")
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    let scaled = cluster
        .wait_for("orders", "scaled out to two instances", |db| {
            decided(db).is_some_and(|d| d.instances == 2)
        })
        .await
        .unwrap_or_else(|failed| {
            panic!(
                "{failed}\npgbench rounds {:?}, last failure {:?}",
                load.rounds(),
                load.last_error()
            )
        });
    let decision = decided(&scaled)
        .and_then(|d| d.last_decision)
        .expect("the decision is recorded");
    assert_eq!((decision.from, decision.to), (1, 2));
    assert!(
        decision.connections_percent >= 55,
        "measured {}%",
        decision.connections_percent
    );
    let event = cluster
        .wait_for_event("orders", "ScaledOut", |e| {
            e.starts_with("Normal ScaledOut:")
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    for figure in [
        "from 1 to 2 instances",
        "on the primary orders-0",
        "of 17 usable client connections",
        "above the target of 50%",
    ] {
        assert!(event.contains(figure), "{figure:?} missing from {event}");
    }
    // The spec is not edited: the count is the autoscaler's, in status.
    assert_eq!(scaled.spec.instances, None);
    assert_eq!(scaled.spec.autoscaling, Some(autoscaling()));

    // The new replica serves reads: it holds pgbench's data, and the
    // load's sessions reach it through the `-ro` Service.
    let served = cluster
        .eventually(WAIT, "orders-1 serves pgbench's reads", || async {
            let rows = accounts_on(&cluster, "orders-1").await;
            let sessions = pgbench_sessions_on(&cluster, "orders-1").await;
            Ok((rows == Some(100_000) && sessions.is_some_and(|n| n > 0)).then_some(()))
        })
        .await;
    if let Err(failed) = served {
        panic!(
            "{failed}\npgbench rounds {:?}, last failure {:?}",
            load.rounds(),
            load.last_error()
        );
    }
    assert!(
        load.rounds().iter().any(|r| r == "orders-ro"),
        "rounds {:?}",
        load.rounds()
    );
    load.stop().await;

    let back = cluster
        .wait_for("orders", "scaled back in to one instance", |db| {
            decided(db).is_some_and(|d| d.instances == 1)
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    let autoscaled = decided(&back).expect("recorded");
    let decision = autoscaled.last_decision.expect("the decision is recorded");
    assert_eq!((decision.from, decision.to), (2, 1));
    assert_eq!(autoscaled.pending, None);
    let event = cluster
        .wait_for_event("orders", "ScaledIn", |e| e.starts_with("Normal ScaledIn:"))
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    for figure in [
        "from 2 to 1 instances",
        "on the replica orders-1",
        "below the target of 50%",
        "(20 s stabilisation window)",
    ] {
        assert!(event.contains(figure), "{figure:?} missing from {event}");
    }
    let gone = cluster
        .wait_for_object::<Pod>("orders-1", "gone", |pod| pod.is_none())
        .await;
    if let Err(failed) = gone {
        panic!("{failed}");
    }
    assert_eq!(back.spec.instances, None);
    operator.stop().await;
    cluster.finish().await;
}
