//! The version goes from 15 to 16 with `upgrade.allowMajor`, on real data:
//! a level that cannot migrate data swaps the image under it; one that can
//! moves the rows to a new volume and keeps the old volume and the dump.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{ListParams, LogParams, PostParams};
use sandbox::SandboxConfig;

use super::steps::{
    NAME, create_ready, current, is_settled_at, is_true, live_image, patch_spec, rows,
    server_version, statefulset, write_three_rows,
};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct MajorUpgradeWithData;

/// What the old volume and the dump hold, read by a Job that mounts them.
#[derive(Debug, PartialEq)]
pub struct Kept {
    /// `PG_VERSION` of the data directory on the previous data volume.
    pub old_data_version: String,
    /// The rows of `items` in the dump's `COPY` block.
    pub rows_in_dump: i64,
}

/// After the change to 16.
#[derive(Debug, PartialEq)]
pub enum Migration {
    /// Ready at 16.
    Upgraded {
        /// The StatefulSet mounts the 16 volume.
        on_new_volume: bool,
        server_major: String,
        rows: Option<i64>,
        /// `None` when the previous volume or the dump is gone.
        kept: Option<Kept>,
    },
    /// The server crash-loops on a data directory it cannot read.
    Refused { image: String, ready: bool },
}

impl fmt::Display for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Migration::Upgraded {
                on_new_volume,
                server_major,
                rows,
                kept,
            } => write!(
                f,
                "Ready at 16 on {} volume, the server reports {server_major}; {}; the 15 volume and the dump {}",
                if *on_new_volume { "a new" } else { "the old" },
                match rows {
                    Some(rows) => format!("{rows} rows intact"),
                    None => "rows lost".into(),
                },
                match kept {
                    Some(kept) if kept.old_data_version == "15" && kept.rows_in_dump == 3 =>
                        "kept".to_string(),
                    Some(kept) => format!(
                        "kept, holding version {} and {} rows",
                        kept.old_data_version, kept.rows_in_dump
                    ),
                    None => "gone".into(),
                }
            ),
            Migration::Refused { image, ready } => write!(
                f,
                "image swapped to {image}; {}: the server refuses the data directory 15 wrote",
                if *ready { "still Ready" } else { "not Ready" }
            ),
        }
    }
}

impl Scenario for MajorUpgradeWithData {
    type Observation = Migration;
    const NAME: &'static str = "MajorUpgradeWithData";
    const TITLE: &'static str =
        "Its version goes from 15 to 16 with `upgrade.allowMajor` (real PostgreSQL, 3 rows)";

    fn expected(level: LevelId) -> Migration {
        match level {
            LevelId::One => Migration::Refused {
                image: "postgres:16".into(),
                ready: false,
            },
            LevelId::Two | LevelId::Three | LevelId::Four | LevelId::Five => Migration::Upgraded {
                on_new_volume: true,
                server_major: "16".into(),
                rows: Some(3),
                kept: Some(Kept {
                    old_data_version: "15".into(),
                    rows_in_dump: 3,
                }),
            },
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    /// A dump, an initdb, a restore, a verification and a switch.
    fn budget() -> Duration {
        Duration::from_secs(180)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Migration>, Failed> {
        let operator = cluster.run_operator(level);
        let mut db = DbBuilder::manifest(NAME).version("15").build();
        db.spec.upgrade = Some(shared::api::UpgradeSpec {
            allow_major: true,
            ..Default::default()
        });
        create_ready(cluster, db).await?;
        write_three_rows(cluster).await?;
        patch_spec(cluster, serde_json::json!({"version": "16"})).await?;
        let upgraded = cluster
            .eventually(
                cluster.budget(),
                "Ready at 16, or the server refuses the data directory",
                || async {
                    if is_settled_at(&current(cluster).await?, "16") {
                        return Ok(Some(true));
                    }
                    Ok(refuses_old_data(cluster).await?.then_some(false))
                },
            )
            .await?;
        let observed = if upgraded {
            upgraded_outcome(cluster).await?
        } else {
            // A reconcile that began after the crash was seen has ended:
            // its status is what the level makes of it.
            cluster.settle(NAME).await?;
            Migration::Refused {
                image: live_image(cluster).await?.unwrap_or_default(),
                ready: is_true(&current(cluster).await?, "Ready"),
            }
        };
        operator.stop().await;
        Ok(Observed::Seen(observed))
    }
}

/// Whether the database's container exited saying the data directory is
/// not one its server can read (Level 1 swapped the image under it).
async fn refuses_old_data(cluster: &TestCluster) -> Result<bool, Failed> {
    let pods = cluster.api::<Pod>();
    let pod = format!("{NAME}-0");
    let restarted = pods
        .get_opt(&pod)
        .await
        .or_fail(format!("read pod {pod}"))?
        .and_then(|p| p.status?.container_statuses)
        .is_some_and(|c| c.iter().any(|c| c.restart_count > 0));
    if !restarted {
        return Ok(false);
    }
    let params = LogParams {
        previous: true,
        ..Default::default()
    };
    let log = pods
        .logs(&pod, &params)
        .await
        .or_fail(format!("read the previous log of {pod}"))?;
    Ok(log.contains("database files are incompatible with server"))
}

/// After a major upgrade to 16: where the data is, what the server says,
/// whether the rows came along, and what the old volume and the dump hold.
async fn upgraded_outcome(cluster: &TestCluster) -> Result<Migration, Failed> {
    let on_new_volume = statefulset(cluster)
        .await?
        .and_then(|s| s.spec?.template.spec?.volumes)
        .is_some_and(|volumes| {
            volumes.iter().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == format!("{NAME}-data-16"))
            })
        });
    let reports = server_version(cluster).await?;
    let major = current(cluster)
        .await?
        .status
        .and_then(|s| s.upgrade?.major)
        .ok_or_else(|| Failed::new("an upgraded database has no status.upgrade.major"))?;
    Ok(Migration::Upgraded {
        on_new_volume,
        server_major: reports.split('.').next().unwrap_or_default().to_string(),
        rows: rows(cluster).await?,
        kept: inspect_kept(
            cluster,
            &major.previous_data_volume,
            &major.backup_volume,
            &format!("{}.pg_dumpall.sql", major.job),
        )
        .await?,
    })
}

/// What a Job reads from the previous data volume and the dump; `None`
/// when either claim is gone.
async fn inspect_kept(
    cluster: &TestCluster,
    data: &str,
    backup: &str,
    dump: &str,
) -> Result<Option<Kept>, Failed> {
    let claims = cluster
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default())
        .await
        .or_fail("list the claims")?;
    let exists = |name: &str| {
        claims
            .items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(name))
    };
    if !(exists(data) && exists(backup)) {
        return Ok(None);
    }
    // Paths reach the container through its environment, where the
    // sandbox's runtime maps mount paths to the volumes behind them.
    let script = r#"printf 'PG_VERSION=%s\n' "$(cat "$OLD_DATA/pgdata/PG_VERSION")"; printf 'ROWS=%s\n' "$(awk '/^COPY "public"."items"/ {f=1; next} /^\\\.$/ {f=0} f' "$DUMP" | wc -l)""#;
    let job: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "inspect-kept"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "postgres:16",
                "command": ["sh", "-c", script],
                "env": [
                    {"name": "OLD_DATA", "value": "/kept/data"},
                    {"name": "DUMP", "value": format!("/kept/backup/{dump}")},
                ],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/kept/data"},
                    {"name": "backup", "mountPath": "/kept/backup"},
                ],
            }],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": data}},
                {"name": "backup", "persistentVolumeClaim": {"claimName": backup}},
            ],
        }}}
    }))
    .or_fail("build the inspection Job")?;
    let jobs = cluster.api::<Job>();
    jobs.create(&PostParams::default(), &job)
        .await
        .or_fail("create the inspection Job")?;
    cluster
        .eventually(cluster.budget(), "the inspection Job succeeds", || async {
            let status = jobs
                .get("inspect-kept")
                .await
                .or_fail("read the inspection Job")?
                .status
                .unwrap_or_default();
            if status.failed.unwrap_or(0) > 0 {
                return Err(Failed::new(format!(
                    "the inspection Job failed: {status:?}"
                )));
            }
            Ok((status.succeeded == Some(1)).then_some(()))
        })
        .await?;
    let pods = cluster
        .api::<Pod>()
        .list(&ListParams::default().labels("job-name=inspect-kept"))
        .await
        .or_fail("list the inspection Job's pods")?;
    let pod = pods
        .items
        .first()
        .and_then(|p| p.metadata.name.clone())
        .ok_or_else(|| Failed::new("the inspection Job has no pod"))?;
    let log = cluster
        .api::<Pod>()
        .logs(&pod, &LogParams::default())
        .await
        .or_fail(format!("read the log of {pod}"))?;
    let value = |key: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| Failed::new(format!("the inspection printed no {key}: {log}")))
    };
    Ok(Some(Kept {
        old_data_version: value("PG_VERSION")?,
        rows_in_dump: value("ROWS")?
            .parse()
            .or_fail("read the dump's row count")?,
    }))
}
