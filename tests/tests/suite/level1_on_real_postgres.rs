//! Level 1 against the sandbox's real-PostgreSQL runtime: the StatefulSet's
//! pod is a real server, initialised by the image's entrypoint with the
//! operator's ConfigMap and Secrets, and a Job running `pg_dump` is a real
//! pg_dump. Fails, saying how to install them, when no PostgreSQL 15
//! binaries are found.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use sandbox::{PostgresRuntime, Sandbox};
use serde_json::json;
use shared::api::PostgresDB;
use tests::builders::DbBuilder;
use tests::connect::{Role, Route, connect_through, connect_to};
use tests::harness::{Failed, Operator, OrFail, TestCluster, real_postgres};
use tests::levels::LevelId;

/// Long enough for initdb and a first start on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(45);

/// A sandbox running real PostgreSQL, with Level 1 running against it.
struct Cluster {
    inner: TestCluster,
    operator: Operator,
}

impl Cluster {
    async fn start() -> Self {
        let config = real_postgres(&[15]);
        let inner = match TestCluster::sandbox(config).await {
            Ok(cluster) => cluster.with_budget(WAIT),
            Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
        };
        let operator = inner.run_operator(LevelId::One);
        Self { inner, operator }
    }

    fn sandbox(&self) -> &Sandbox {
        self.inner.sandbox_handle().expect("a sandbox cluster")
    }

    fn runtime(&self) -> &PostgresRuntime {
        self.sandbox().postgres_runtime().expect("the real runtime")
    }

    fn namespace(&self) -> &str {
        self.inner.namespace()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        self.inner.api()
    }

    /// Waits until `check` holds; a failure shows the database's status
    /// and Events, and its pod's status and log.
    async fn wait_until<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let waited = self
            .inner
            .eventually(WAIT, what, || async { Ok(check().await.then_some(())) })
            .await;
        if let Err(failed) = waited {
            let pod = self.api::<Pod>().get_opt("orders-0").await.ok().flatten();
            let log = self
                .api::<Pod>()
                .logs("orders-0", &Default::default())
                .await
                .unwrap_or_default();
            panic!(
                "{failed}pod status: {}\npod log:\n{log}",
                serde_json::to_string_pretty(&pod.and_then(|p| p.status)).unwrap_or_default(),
            );
        }
    }

    async fn database_ready(&self) -> bool {
        let db = self
            .inner
            .database("orders")
            .await
            .expect("lists PostgresDBs");
        db.and_then(|d| d.status).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                && s.ready_replicas == 1
        })
    }

    /// Logs in through the Service, as `role`, to `dbname` or the role's own.
    async fn connect(&self, role: Role, dbname: Option<&str>) -> tokio_postgres::Client {
        connect_to(&self.inner, role, "orders", dbname)
            .await
            .expect("the sandbox's Service of orders is reachable")
    }

    async fn stop(self) {
        self.operator.stop().await;
        self.inner.finish().await;
    }
}

async fn count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .expect("counts")
        .get(0)
}

/// Creates the database, waits for it, and writes three rows as its owner.
async fn ready_database_with_rows(cluster: &Cluster) -> tokio_postgres::Client {
    let began = Instant::now();
    cluster
        .api::<PostgresDB>()
        .create(
            &PostParams::default(),
            &DbBuilder::manifest("orders").version("15").build(),
        )
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_until("the database is Ready", || cluster.database_ready())
        .await;
    eprintln!("a PostgresDB became Ready in {:.1?}", began.elapsed());
    let client = cluster.connect(Role::Owner, None).await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three');",
        )
        .await
        .expect("the owner writes rows");
    client
}

fn alive(pid: i32) -> bool {
    sandbox::pgruntime::process::alive(pid)
}

#[tokio::test]
async fn a_real_database_keeps_its_rows_when_its_pod_is_replaced_and_stops_when_deleted() {
    let cluster = Cluster::start().await;
    let client = ready_database_with_rows(&cluster).await;
    assert_eq!(count(&client).await, 3);
    drop(client);

    let rt = cluster.runtime();
    let first_pids = rt.pids(cluster.namespace(), "orders-0");
    assert_eq!(first_pids.len(), 1, "one server process");
    let pods = cluster.api::<Pod>();
    let old_uid = pods.get("orders-0").await.expect("the pod exists").uid();
    pods.delete("orders-0", &DeleteParams::default())
        .await
        .expect("deletes");
    cluster
        .wait_until(
            "a new pod replaces the deleted one and is Ready",
            || async {
                let pod = pods.get_opt("orders-0").await.ok().flatten();
                let replaced_and_ready = pod.is_some_and(|p| {
                    p.uid() != old_uid
                        && p.status.and_then(|s| s.conditions).is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                });
                replaced_and_ready && cluster.database_ready().await
            },
        )
        .await;
    assert!(
        first_pids.iter().all(|&p| !alive(p)),
        "the old server stopped"
    );
    let client = cluster.connect(Role::Owner, None).await;
    assert_eq!(count(&client).await, 3, "the rows outlived the pod");
    drop(client);

    let second_pids = rt.pids(cluster.namespace(), "orders-0");
    assert!(!second_pids.is_empty());
    cluster
        .api::<PostgresDB>()
        .delete("orders", &DeleteParams::default())
        .await
        .expect("deletes");
    cluster
        .wait_until("the database's processes are gone", || async {
            rt.all_pids().is_empty() && second_pids.iter().all(|&p| !alive(p))
        })
        .await;
    cluster.stop().await;
}

#[tokio::test]
async fn a_pg_dump_job_backs_up_a_real_database_and_the_dump_restores_into_another() {
    let cluster = Cluster::start().await;
    let client = ready_database_with_rows(&cluster).await;
    drop(client);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "backups"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("a claim");
    cluster
        .api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &claim)
        .await
        .expect("the claim is accepted");
    // The superuser dumps the application database over the Service, then
    // restores it into a new database, as a backup and a restore Job would.
    let job = |name: &str, script: &str| -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main", "image": "postgres:15",
                    "command": ["sh", "-c", script],
                    "env": [
                        {"name": "PGHOST", "value": "orders"},
                        {"name": "PGUSER", "value": "postgres"},
                        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "orders-superuser", "key": "password"}}},
                    ],
                    "volumeMounts": [{"name": "backups", "mountPath": "/backups"}],
                }],
                "volumes": [{"name": "backups", "persistentVolumeClaim": {"claimName": "backups"}}],
            }}}
        }))
        .expect("a job")
    };
    let jobs = cluster.api::<Job>();
    let pods: Api<Pod> = cluster.api();
    let inner = &cluster.inner;
    let run = |name: &'static str, script: &'static str| {
        let jobs = jobs.clone();
        let pods = pods.clone();
        let job = job(name, script);
        async move {
            jobs.create(&PostParams::default(), &job)
                .await
                .expect("the Job is accepted");
            let succeeded = inner
                .eventually(WAIT, &format!("Job {name} succeeds"), || async {
                    let status = jobs
                        .get(name)
                        .await
                        .or_fail(format!("read Job {name}"))?
                        .status
                        .unwrap_or_default();
                    if status.failed.unwrap_or(0) > 0 {
                        return Err(Failed::new(format!("Job {name} failed: {status:?}")));
                    }
                    Ok((status.succeeded == Some(1)).then_some(()))
                })
                .await;
            if let Err(failed) = succeeded {
                let mut logs = String::new();
                for p in pods
                    .list(&ListParams::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default()
                {
                    if p.name_any().starts_with(name) {
                        logs += &pods
                            .logs(&p.name_any(), &Default::default())
                            .await
                            .unwrap_or_default();
                    }
                }
                panic!("{failed}logs of Job {name}:\n{logs}");
            }
        }
    };
    run(
        "backup",
        "pg_dump --dbname app --file /backups/app.sql && test -s /backups/app.sql",
    )
    .await;
    run(
        "restore",
        "psql -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE restored' && psql -v ON_ERROR_STOP=1 -q -d restored -f /backups/app.sql",
    )
    .await;
    let restored = cluster.connect(Role::Superuser, Some("restored")).await;
    assert_eq!(count(&restored).await, 3, "the dump restored every row");
    let name: String = restored
        .query_one("SELECT name FROM items WHERE id = 2", &[])
        .await
        .expect("reads")
        .get(0);
    assert_eq!(name, "two");
    cluster.stop().await;
}

#[tokio::test]
async fn the_database_answers_through_a_port_forward_as_it_does_on_kind() {
    let cluster = Cluster::start().await;
    drop(ready_database_with_rows(&cluster).await);
    let forwarded = connect_through(
        &cluster.inner,
        Role::Owner,
        "orders",
        None,
        Route::PortForward,
    )
    .await
    .expect("the credentials and the Service exist");
    let row = forwarded
        .query_one("SELECT count(*), host(inet_server_addr()) FROM items", &[])
        .await
        .expect("the same server answers over the port-forward");
    let (rows, server): (i64, Option<String>) = (row.get(0), row.get(1));
    assert_eq!(rows, 3, "the rows written through the Service");
    let pod_ip = cluster
        .api::<Pod>()
        .get("orders-0")
        .await
        .expect("the pod")
        .status
        .and_then(|s| s.pod_ip);
    assert_eq!(
        server, pod_ip,
        "the port-forward reaches the pod's own address"
    );
    cluster.stop().await;
}
