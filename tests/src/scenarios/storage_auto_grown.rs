//! A database with `storage.autoGrow` (80%, +50%, at most 2Gi) whose data
//! volume fills: the sandbox's volume-fill fault shrinks the volume's
//! tmpfs to what it holds, so a new block fails with ENOSPC and the
//! kubelet's stats say it is full.
//!
//! Below Level 5 the section is not implemented: the claim stays 1Gi, the
//! volume stays full and a 1 MB write fails. Level 5 measures the volume
//! (Level 4's reading, every second here), grows the claim to 1536Mi with
//! a `StorageGrown` Event, the volume's quota grows with the claim, and the
//! write commits.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use sandbox::SandboxConfig;
use shared::autopilot::autogrow::AutoGrowSpec;
use shared::runner::RunOptions;

use super::steps::{NAME, condition, create_ready};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::connect::{Role, connect};
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct StorageAutoGrown;

/// The claim of the primary's volume.
const CLAIM: &str = "data-orders-0";

/// What became of the full volume.
#[derive(Debug, PartialEq)]
pub struct Growth {
    /// Whether the level implements `spec.storage.autoGrow`.
    pub implemented: bool,
    /// The claim's request at the end.
    pub claim: String,
    /// Whether the volume's filesystem is the claim's size (its quota
    /// followed the claim; a full volume is only as large as what it holds).
    pub quota_follows: bool,
    /// The reason of the Normal Event reporting a growth, if one came.
    pub event: Option<String>,
    /// Whether a 1 MB write commits at the end.
    pub write_commits: bool,
}

impl fmt::Display for Growth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.implemented {
            write!(f, "`storage.autoGrow` not implemented; ")?;
        }
        write!(
            f,
            "claim {}{}; {}; a 1 MB write {}",
            self.claim,
            self.event
                .as_ref()
                .map_or(String::new(), |e| format!(" (Normal {e})")),
            if self.quota_follows {
                "volume as large as the claim"
            } else {
                "volume still full"
            },
            if self.write_commits {
                "commits"
            } else {
                "fails"
            }
        )
    }
}

fn request(claim: Option<&PersistentVolumeClaim>) -> Option<String> {
    Some(
        claim?
            .spec
            .as_ref()?
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage")?
            .0
            .clone(),
    )
}

/// Whether a 1 MB row commits on `session`.
async fn write_commits(session: &tokio_postgres::Client) -> bool {
    session
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS filler (body text); \
             INSERT INTO filler SELECT string_agg(md5(i::text), '') FROM generate_series(1, 32768) i;",
        )
        .await
        .is_ok()
}

/// The size of the filesystem of the claim's volume, in bytes (`statfs`).
fn volume_size(runtime: &sandbox::PostgresRuntime, ns: &str) -> Result<u64, Failed> {
    let dir = runtime
        .volume_path(ns, CLAIM)
        .ok_or_else(|| Failed::new(format!("claim {CLAIM} is not bound")))?;
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%S %b"])
        .arg(&dir)
        .output()
        .or_fail(format!("stat -f {}", dir.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace().map(|n| n.parse::<u64>().ok());
    match (fields.next().flatten(), fields.next().flatten()) {
        (Some(block), Some(blocks)) => Ok(block * blocks),
        _ => Err(Failed::new(format!("stat -f said {text:?}"))),
    }
}

impl Scenario for StorageAutoGrown {
    type Observation = Growth;
    const NAME: &'static str = "StorageAutoGrown";
    const TITLE: &'static str =
        "Its data volume fills, with `storage.autoGrow` set (real PostgreSQL, volume-fill fault)";

    fn expected(level: LevelId) -> Growth {
        match level {
            LevelId::One | LevelId::Two | LevelId::Three | LevelId::Four => Growth {
                implemented: false,
                claim: "1Gi".into(),
                quota_follows: false,
                event: None,
                write_commits: false,
            },
            LevelId::Five => Growth {
                implemented: true,
                claim: "1536Mi".into(),
                quota_follows: true,
                event: Some("StorageGrown".into()),
                write_commits: true,
            },
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> Duration {
        Duration::from_secs(120)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Growth>, Failed> {
        let Some(runtime) = cluster.sandbox_handle().and_then(|s| s.postgres_runtime()) else {
            return Ok(Observed::NotRun(
                "not run (needs the sandbox's real runtime to fill a volume)".into(),
            ));
        };
        let operator = cluster.run_operator_with(
            level,
            RunOptions {
                metrics_interval: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        );
        let db = DbBuilder::manifest(NAME)
            .version("15")
            .storage("1Gi")
            .auto_grow(AutoGrowSpec {
                threshold_percent: 80,
                increase_percent: 50,
                max_size: "2Gi".into(),
            })
            .build();
        let db = create_ready(cluster, db).await?;
        let implemented = condition(&db, "SpecImplemented").is_some_and(|(s, _)| s == "True");
        // A session opened before the volume fills (a full volume may
        // refuse new ones).
        let session = connect(cluster, Role::Owner, NAME)
            .await
            .ok_or_else(|| Failed::new("the database has no Service or owner's Secret"))?;
        let ns = cluster.namespace().to_string();
        let full = runtime
            .fill_volume(&ns, CLAIM, true)
            .or_fail(format!("fill the volume of {CLAIM}"))?;
        if full != sandbox::pgruntime::VolumeFull::NoSpace {
            operator.stop().await;
            return Ok(Observed::NotRun(
                "not run (the sandbox is not root: its volumes are not tmpfs)".into(),
            ));
        }
        let claims = cluster.api::<PersistentVolumeClaim>();
        let (event, write_commits) = if implemented {
            // The level says it grows volumes: wait for the growth, and for
            // a write to commit on the grown volume.
            cluster
                .wait_for_object::<PersistentVolumeClaim>(CLAIM, "grown", |c| {
                    request(c).is_some_and(|r| r != "1Gi")
                })
                .await?;
            let event = cluster
                .wait_for_event(NAME, "a growth", |e| e.starts_with("Normal StorageGrown"))
                .await?;
            cluster
                .eventually(cluster.budget(), "a 1 MB write commits", || async {
                    // The server may have restarted meanwhile: a new session.
                    let Some(session) = connect(cluster, Role::Owner, NAME).await else {
                        return Ok(None);
                    };
                    Ok(write_commits(&session).await.then_some(()))
                })
                .await?;
            (super::edited_child::reason_of(&event), true)
        } else {
            (None, write_commits(&session).await)
        };
        let claim = claims
            .get_opt(CLAIM)
            .await
            .or_fail(format!("read {CLAIM}"))?;
        let size = volume_size(runtime, &ns)?;
        let claim = request(claim.as_ref())
            .ok_or_else(|| Failed::new(format!("{CLAIM} has no storage request")))?;
        let claim_bytes = match claim.as_str() {
            "1Gi" => 1 << 30,
            "1536Mi" => 1536 << 20,
            _ => 0,
        };
        runtime
            .fill_volume(&ns, CLAIM, false)
            .or_fail(format!("empty the volume of {CLAIM}"))?;
        operator.stop().await;
        Ok(Observed::Seen(Growth {
            implemented,
            claim,
            quota_follows: size == claim_bytes,
            event,
            write_commits,
        }))
    }
}
