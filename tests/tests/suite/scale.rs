//! Many databases at once: a few hundred `PostgresDB`s created together
//! all become Ready, the API keeps answering while the operator and the
//! built-in controllers work through them, and once they are Ready nothing
//! is written, by the operator or by the control plane. Correctness, not
//! time: the budgets are generous; `pgdb-bench` measures the time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;
use shared::api::PostgresDB;
use tests::builders::DbBuilder;
use tests::harness::{Failed, OrFail, TestCluster, ensure};
use tests::levels::LevelId;
use tests::scenarios::is_settled;

const DATABASES: usize = 200;
/// How long the API may take to answer one request while the databases
/// converge; far above what it takes, far below a starved server's silence
/// (a server whose controllers starve its requests never answers). 5 s was
/// missed once with builds running beside the suite (a load average of 15).
const ANSWER_WITHIN: Duration = Duration::from_secs(15);
/// A window longer than the controllers' resync, in which nothing may be written.
const AT_REST: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_databases_created_at_once_all_become_ready_while_the_api_answers_and_then_nothing_is_written()
-> Result<(), Failed> {
    // Sized to the work, not to a quiet machine: 23 s in a debug build on
    // two idle cores, but with builds running beside it (a load average of
    // 15) only 40 of the 200 were Ready after 90 s. The budget only bounds
    // a failure; a pass is as quick as the machine allows.
    let cluster = match TestCluster::start().await {
        Ok(c) => c.with_budget(Duration::from_secs(420)),
        Err(error) => panic!("no cluster: {}", shared::reconcile::error_chain(&error)),
    };
    let Some(sandbox) = cluster.sandbox_handle() else {
        return Ok(());
    };
    let operator = cluster.run_operator(LevelId::One);

    // A client that keeps asking a plain question throughout.
    let done = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(AtomicU64::new(0));
    let probe = {
        let (done, slowest) = (done.clone(), slowest.clone());
        let namespaces: Api<Namespace> = Api::all(cluster.client());
        tokio::spawn(async move {
            let mut failures = vec![];
            while !done.load(Ordering::Relaxed) {
                let start = Instant::now();
                match tokio::time::timeout(ANSWER_WITHIN, namespaces.list(&ListParams::default()))
                    .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => failures.push(e.to_string()),
                    Err(_) => failures.push(format!("no answer within {ANSWER_WITHIN:?}")),
                }
                slowest.fetch_max(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            failures
        })
    };

    let names: Vec<String> = (0..DATABASES).map(|i| format!("db-{i}")).collect();
    let created = futures::stream::iter(&names)
        .map(|name| {
            let db = DbBuilder::manifest(name).build();
            let cluster = &cluster;
            async move { cluster.create(&db).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for result in created {
        result.or_fail("create a PostgresDB")?;
    }
    let databases: Api<PostgresDB> = cluster.api();
    cluster
        .eventually(
            cluster.budget(),
            &format!("all {DATABASES} databases are Ready"),
            || async {
                let list = databases
                    .list(&ListParams::default())
                    .await
                    .or_fail("list the PostgresDBs")?;
                let ready = list.items.iter().filter(|db| is_settled(db)).count();
                Ok((ready == DATABASES).then_some(()))
            },
        )
        .await?;
    done.store(true, Ordering::Relaxed);
    let failures = probe.await.or_fail("join the probe")?;
    ensure(failures.is_empty(), || {
        format!("the API did not answer throughout: {failures:?}")
    })?;

    // At rest: the operator's reconciles end, then a window longer than
    // the controllers' resync passes without a write from anyone.
    cluster.settle(&names[0]).await?;
    let (requests, store) = (
        sandbox.counters().snapshot(),
        sandbox.cluster().store.writes(),
    );
    tokio::time::sleep(AT_REST).await;
    let written = tests::harness::Writes::between(&requests, &sandbox.counters().snapshot());
    let stored = sandbox.cluster().store.writes();
    ensure(written.total() == 0, || {
        format!("requests wrote at rest: {written:?}")
    })?;
    ensure(stored == store, || {
        format!("the store changed at rest: {store:?} then {stored:?}")
    })?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}
