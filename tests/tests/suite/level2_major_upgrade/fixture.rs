//! The fixture of Level 2's major-upgrade tests: a real-PostgreSQL sandbox
//! with Level 2 running, waits that show the upgrade's Job and pods when
//! they fail, and the data written at 15 to compare after an upgrade.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use shared::api::{PostgresDB, UpgradePhase};
use tests::builders::DbBuilder;
use tests::connect::{Role, connect_to};
use tests::harness::{Operator, TestCluster, real_postgres};
use tests::levels::LevelId;

/// Long enough for a first start, or a dump, restore, verification and
/// switch, on a busy two-core machine.
pub(super) const WAIT: Duration = Duration::from_secs(180);

pub(super) struct Cluster {
    pub(super) inner: TestCluster,
    pub(super) operator: Option<Operator>,
}

impl Cluster {
    /// A real-PostgreSQL sandbox with Level 2 running; fails when the
    /// majors' binaries are missing, saying how to install them.
    pub(super) async fn start(majors: &[u32]) -> Self {
        let config = real_postgres(majors);
        let inner = match TestCluster::sandbox(config).await {
            Ok(cluster) => cluster.with_budget(WAIT),
            Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
        };
        let operator = Some(inner.run_operator(LevelId::Two));
        Self { inner, operator }
    }

    pub(super) fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        self.inner.api()
    }

    pub(super) async fn database(&self) -> Option<PostgresDB> {
        self.inner
            .database("orders")
            .await
            .expect("lists PostgresDBs")
    }

    /// The database's status, its Events, every pod's state, and the logs
    /// of the upgrade Job's pods and of the database pod.
    pub(super) async fn diagnose(&self) -> String {
        let db = self.database().await;
        let mut text = format!(
            "database status: {}\n{}",
            serde_json::to_string_pretty(&db.and_then(|d| d.status)).unwrap_or_default(),
            self.inner.diagnosis().await
        );
        if let Ok(Some(sts)) = self.api::<StatefulSet>().get_opt("orders").await {
            let managers: Vec<String> = sts
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .map(|m| format!("{:?} {:?}", m.manager, m.operation))
                .collect();
            text += &format!(
                "StatefulSet orders: managed by {managers:?}; template volumes {}\n",
                serde_json::to_string(&sts.spec.and_then(|s| s.template.spec).map(|p| p.volumes))
                    .unwrap_or_default()
            );
        }
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for pod in pods {
            let name = pod.name_any();
            text += &format!(
                "pod {name}: {}\n",
                serde_json::to_string(
                    &pod.status
                        .as_ref()
                        .map(|s| (&s.phase, &s.container_statuses))
                )
                .unwrap_or_default()
            );
            if name.contains("-upgrade-") || name == "orders-0" {
                let log = self
                    .api::<Pod>()
                    .logs(&name, &Default::default())
                    .await
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                text += &format!(
                    "log of {name} (last lines):\n{}\n",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        text
    }

    /// Polls `check` until it holds, failing with [`Cluster::diagnose`].
    pub(super) async fn wait_until<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let waited = self
            .inner
            .eventually(WAIT, what, || async { Ok(check().await.then_some(())) })
            .await;
        if let Err(failed) = waited {
            panic!("{failed}{}", self.diagnose().await);
        }
    }

    pub(super) async fn condition(&self, type_: &str) -> Option<(String, String, String)> {
        let status = self.database().await?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status, c.reason, c.message))
    }

    pub(super) async fn ready_at(&self, version: &str) -> bool {
        let Some(status) = self.database().await.and_then(|d| d.status) else {
            return false;
        };
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            && status.ready_replicas == 1
            && status.current_version.as_deref() == Some(version)
    }

    pub(super) async fn upgrade_phase(&self) -> Option<UpgradePhase> {
        self.database()
            .await?
            .status?
            .upgrade
            .filter(|u| u.major.is_some())
            .map(|u| u.phase)
    }

    /// (host address, user, password, dbname) from a credentials Secret;
    /// the superuser's connect to `postgres`.
    /// Logs in through the Service with the Secret's credentials.
    pub(super) async fn connect_as(
        &self,
        secret: &str,
        dbname: Option<&str>,
    ) -> tokio_postgres::Client {
        let role = if secret.ends_with("credentials") {
            Role::Owner
        } else {
            Role::Superuser
        };
        connect_to(&self.inner, role, "orders", dbname)
            .await
            .unwrap_or_else(|| panic!("the sandbox's Service of orders is reachable as {secret}"))
    }

    pub(super) async fn claim_exists(&self, name: &str) -> bool {
        self.api::<PersistentVolumeClaim>()
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .is_some()
    }

    pub(super) async fn stop(self) {
        if let Some(operator) = self.operator {
            operator.stop().await;
        }
        let denied = tests::rbac::ungranted(&self.inner, LevelId::Two);
        assert!(
            denied.is_empty(),
            "deploy/base/rbac.yaml does not grant what Level 2 did: {denied:?}"
        );
        self.inner.finish().await;
    }
}

pub(super) async fn scalar(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .query_one(&format!("SELECT ({sql})::text"), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Creates `orders` at 15, waits for it, and writes rows as its owner into
/// two tables, and as the superuser into a second database.
pub(super) async fn database_at_15_with_rows(cluster: &Cluster) {
    database_with_rows(cluster, "15").await;
}

/// [`database_at_15_with_rows`] at `version`.
pub(super) async fn database_with_rows(cluster: &Cluster, version: &str) {
    let began = Instant::now();
    cluster
        .api::<PostgresDB>()
        .create(
            &PostParams::default(),
            &DbBuilder::manifest("orders").version(version).build(),
        )
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_until(&format!("the database is Ready at {version}"), || {
            cluster.ready_at(version)
        })
        .await;
    eprintln!(
        "orders became Ready at {version} in {:.1?}",
        began.elapsed()
    );
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three');
             CREATE TABLE lines (id bigint PRIMARY KEY, item int REFERENCES items, amount numeric(10,2), at timestamptz);
             INSERT INTO lines SELECT g, 1 + g % 3, g * 1.25, '2026-01-01'::timestamptz + g * interval '1 minute'
               FROM generate_series(1, 500) g;
             CREATE SEQUENCE invoice_numbers START 1000;
             SELECT nextval('invoice_numbers') FROM generate_series(1, 3);
             CREATE MATERIALIZED VIEW item_totals AS SELECT item, sum(amount) AS total FROM lines GROUP BY item;
             SELECT lo_from_bytea(0, 'a scanned invoice');",
        )
        .await
        .expect("the owner writes rows");
    let superuser = cluster.connect_as("orders-superuser", None).await;
    superuser
        .batch_execute("CREATE DATABASE reports")
        .await
        .expect("the superuser creates a database");
    let reports = cluster
        .connect_as("orders-superuser", Some("reports"))
        .await;
    reports
        .batch_execute(
            "CREATE TABLE totals (day date PRIMARY KEY, total numeric);
             INSERT INTO totals VALUES ('2026-01-01', 42.5), ('2026-01-02', 7);",
        )
        .await
        .expect("rows in a second database");
}

/// What the owner's and the reports' tables hold, to compare before and after.
pub(super) async fn contents(cluster: &Cluster) -> Vec<String> {
    let owner = cluster.connect_as("orders-credentials", None).await;
    let reports = cluster
        .connect_as("orders-superuser", Some("reports"))
        .await;
    vec![
        scalar(&owner, "SELECT count(*) FROM items").await,
        scalar(
            &owner,
            "SELECT string_agg(name, ',' ORDER BY id) FROM items",
        )
        .await,
        scalar(&owner, "SELECT count(*) FROM lines").await,
        scalar(&owner, "SELECT sum(amount) FROM lines").await,
        scalar(&reports, "SELECT sum(total) FROM totals").await,
        scalar(&owner, "SELECT last_value FROM invoice_numbers").await,
        scalar(&owner, "SELECT sum(total) FROM item_totals").await,
        scalar(
            &owner,
            "SELECT string_agg(convert_from(lo_get(oid), 'UTF8'), ',') FROM pg_largeobject_metadata",
        )
        .await,
    ]
}

/// The server's version, asked as the owner.
pub(super) async fn server_version(cluster: &Cluster) -> String {
    let owner = cluster.connect_as("orders-credentials", None).await;
    scalar(&owner, "current_setting('server_version')").await
}
