//! Leader election beyond a standby standing by
//! (`core_on_sandbox::with_leader_election_a_second_replica_stands_by`):
//! a standby takes over from a leader that died, within the Lease's
//! lifetime, and reconciles; a leader whose Lease another holder took
//! stops acting (docs/level1-install.md: "only the holder of the
//! `pgdb-operator` Lease acts").
//!
//! Replicas run in-process, each with a client of its own whose User-Agent
//! (`replica-<holder>/0`) the sandbox notes with every kind of request it
//! makes, so the test knows who wrote what. A replica dies as a crashed
//! process does: its task is aborted mid-flight, without stepping down,
//! and its Lease renewals stop with it.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams};
use shared::health::Leadership;
use shared::runner::{self, LeaderElection, RunOptions};
use tests::builders::DbBuilder;
use tests::harness::{Failed, OrFail, TestCluster, ensure};
use tests::levels::LevelId;
use tests::scenarios::is_settled;
use tokio::sync::oneshot;

/// The Lease's lifetime in these tests.
const TTL: Duration = Duration::from_secs(6);

/// A replica of Level 1 with leader election on.
struct Replica {
    leading: Leadership,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), shared::Error>>,
}

impl Replica {
    fn start(cluster: &TestCluster, holder: &str) -> Self {
        let leading = Leadership::default();
        let options = RunOptions {
            namespace: Some(cluster.namespace().to_string()),
            leader_election: Some(LeaderElection {
                namespace: cluster.namespace().to_string(),
                lease_name: "pgdb-operator".into(),
                holder: holder.into(),
                ttl: TTL,
            }),
            leading: leading.clone(),
            ..Default::default()
        };
        let kubeconfig = cluster.kubeconfig().to_path_buf();
        let agent = format!("replica-{holder}/0");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let client = shared::cli::connect(Some(&kubeconfig), &agent).await?;
            runner::run(LevelId::One.build(), client, options, async move {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            leading,
            stop: Some(stop),
            task,
        }
    }

    /// Whether it holds the Lease and runs its controller.
    fn leads(&self) -> bool {
        self.leading.get()
    }

    /// Dies as a crashed process does: no step-down, no more renewals.
    async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        drop(self.stop.take());
    }

    /// Stops gracefully and checks that it exited cleanly.
    async fn stop(mut self) -> Result<(), Failed> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            other => Err(Failed::new(format!(
                "the replica did not stop cleanly: {other:?}"
            ))),
        }
    }
}

/// The kinds of write `agent` made, as `verb resource`.
fn writes_by(cluster: &TestCluster, agent: &str) -> Vec<String> {
    cluster
        .sandbox_handle()
        .map(|s| s.counters().requests_from(agent))
        .unwrap_or_default()
        .into_iter()
        .filter(|r| sandbox::counters::WRITE_VERBS.contains(&r.verb.as_str()))
        .map(|r| format!("{} {}", r.verb, r.resource))
        .collect()
}

async fn holder(cluster: &TestCluster) -> Result<Option<String>, Failed> {
    Ok(cluster
        .api::<Lease>()
        .get_opt("pgdb-operator")
        .await
        .or_fail("read the Lease")?
        .and_then(|l| l.spec?.holder_identity))
}

#[tokio::test]
async fn when_the_leader_dies_the_standby_takes_over_within_the_lease_and_reconciles()
-> Result<(), Failed> {
    let cluster = TestCluster::start().await.or_fail("start a sandbox")?;
    let one = Replica::start(&cluster, "one");
    cluster
        .eventually(cluster.budget(), "replica one leads", || async {
            Ok(one.leads().then_some(()))
        })
        .await?;
    let two = Replica::start(&cluster, "two");
    cluster
        .create(&DbBuilder::manifest("orders").build())
        .await
        .or_fail("create the PostgresDB orders")?;
    cluster.wait_for("orders", "Ready", is_settled).await?;
    // The standby has asked for the Lease (it stands by, it did not fail).
    let counters = cluster.sandbox_handle().expect("a sandbox").counters();
    cluster
        .eventually(
            cluster.budget(),
            "replica two asked for the Lease",
            || async {
                Ok(counters
                    .requests_from("replica-two/")
                    .iter()
                    .any(|r| r.resource == "leases")
                    .then_some(()))
            },
        )
        .await?;
    ensure(!two.leads(), || "two replicas lead at once".into())?;
    let by_two = writes_by(&cluster, "replica-two/");
    ensure(by_two.is_empty(), || {
        format!("only the leader writes; the standby wrote {by_two:?}")
    })?;
    let by_one = writes_by(&cluster, "replica-one/");
    ensure(by_one.iter().any(|w| w == "patch statefulsets"), || {
        format!("the leader applied the StatefulSet: {by_one:?}")
    })?;

    one.kill().await;
    let killed = Instant::now();
    cluster
        .eventually(Duration::from_secs(30), "replica two leads", || async {
            Ok(two.leads().then_some(()))
        })
        .await?;
    let took = killed.elapsed();
    eprintln!("replica two took over {took:.1?} after replica one died (Lease lifetime {TTL:?})");
    // The dead leader's Lease lasts at most TTL after its last renewal,
    // which came before its death; the standby asks every third of TTL.
    let bound = TTL + TTL / 3 + Duration::from_secs(1);
    ensure(took <= bound, || {
        format!(
            "the takeover took {took:?}, more than the Lease's lifetime and one retry ({bound:?})"
        )
    })?;
    ensure(holder(&cluster).await?.as_deref() == Some("two"), || {
        "replica two holds the Lease".into()
    })?;
    // The new leader reconciles: a new database comes up, built by it.
    cluster
        .create(&DbBuilder::manifest("billing").build())
        .await
        .or_fail("create the PostgresDB billing")?;
    cluster.wait_for("billing", "Ready", is_settled).await?;
    let by_two = writes_by(&cluster, "replica-two/");
    ensure(by_two.iter().any(|w| w == "patch statefulsets"), || {
        format!("the new leader applied billing's StatefulSet: {by_two:?}")
    })?;
    two.stop().await?;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn a_leader_whose_lease_another_holder_took_stops_acting() -> Result<(), Failed> {
    let cluster = TestCluster::start().await.or_fail("start a sandbox")?;
    let one = Replica::start(&cluster, "one");
    cluster
        .eventually(cluster.budget(), "replica one leads", || async {
            Ok(one.leads().then_some(()))
        })
        .await?;
    cluster
        .create(&DbBuilder::manifest("orders").build())
        .await
        .or_fail("create the PostgresDB orders")?;
    cluster.wait_for("orders", "Ready", is_settled).await?;

    // Another holder takes the Lease, fresh and long, as a replica whose
    // clock says the old one expired would.
    let patch = serde_json::json!({
        "spec": {
            "holderIdentity": "intruder",
            "leaseDurationSeconds": 3600,
            "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
        }
    });
    cluster
        .api::<Lease>()
        .patch(
            "pgdb-operator",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .or_fail("give the Lease to another holder")?;
    let taken = Instant::now();
    let Replica {
        leading,
        task,
        stop,
    } = one;
    let result = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .or_fail("wait for the replica to stop")?
        .or_fail("join the replica's task")?;
    let took = taken.elapsed();
    eprintln!("the leader stopped {took:.1?} after losing its Lease");
    ensure(matches!(result, Err(shared::Error::LostLeadership)), || {
        format!("the replica stops with LostLeadership: {result:?}")
    })?;
    ensure(!leading.get(), || {
        "a replica that lost its Lease no longer acts".into()
    })?;
    ensure(took <= TTL / 3 + Duration::from_secs(2), || {
        format!(
            "it noticed at its next renewal (every {:?}), not after {took:?}",
            TTL / 3
        )
    })?;
    ensure(
        holder(&cluster).await?.as_deref() == Some("intruder"),
        || "the stopping replica leaves the Lease to its holder".into(),
    )?;
    drop(stop);
    cluster.finish().await;
    Ok(())
}
