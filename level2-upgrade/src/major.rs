//! The MajorUpgrade capability: a new major version, offline, verified,
//! reversible.
//!
//! A data directory of one major cannot be read by the next, so a major
//! upgrade (15 to 16) is a migration, carried out only when
//! `spec.upgrade.allowMajor` is true:
//!
//! 1. **Migrating.** The StatefulSet stays on the old image (Level 1 would
//!    swap it), the read-write Service selects no pod (writes stop), and a
//!    Job of the new image makes the old server read-only (see
//!    [`crate::write_fence`]), dumps every database of the old server with
//!    `pg_dumpall` to a backup volume, initialises the new major on a new
//!    data volume, restores the dump into it, and compares every database,
//!    old against new: each user table's row count and a checksum of its
//!    rows, each sequence's position, the materialized views that exist,
//!    and the large objects' count and checksum. Any error or difference
//!    fails the Job.
//! 2. **Switching.** Once the Job succeeded, the StatefulSet runs the new
//!    image on the new volume and the Service selects the pod again.
//! 3. **Complete** when the pod is ready at the new version, within
//!    `healthTimeoutSeconds`; the previous data volume and the dump are kept
//!    for `retentionHours`, and setting `spec.version` back to the previous
//!    version until then switches back to them.
//!
//! A failed or stuck Job, a new major that is not ready in time, and a
//! change of `spec.version` during the migration all roll back: old image,
//! old volume, Service open, write fence lifted. Nothing is deleted then:
//! the Job and the volumes stay as evidence.
//!
//! The new data lives on a PVC of the operator's, `<db>-data-<major>`:
//! a StatefulSet's claim templates cannot change, and its claim-template
//! volume takes precedence over a pod-template volume of the same name, so
//! the new PVC is mounted through a pod-template volume named
//! `data-<major>` at the same path. Which PVC is current is read from the
//! cluster: `<db>-data-<major>` of the running major once a migration into
//! it was verified (an annotation on the PVC), else the claim template's.
//!
//! Every decision is a pure function of the database, what was observed and
//! the time ([`progress`], [`plan`]): a restarted operator reads
//! `status.upgrade`, the PVCs, the Job and the live StatefulSet and carries on.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec, Service, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{ApiResource, ObjectMeta};
use shared::api::{MajorUpgradeStatus, PostgresDB, UpgradePhase, UpgradeStatus};
use shared::apply::resource_of;
use shared::capability::{
    ApplyReport, Capability, Desired, Observed, Query, SpecProblem, StatusDraft,
};
use shared::conditions::{Assessment, PROGRESSING, READY};
use shared::error::Error;
use shared::names::{INSTANCE_LABEL, MANAGED_BY};
use shared::quantity;
use shared::sql::SqlProbe;

use crate::upgrade::{VersionChange, classify};
use crate::upgrade::{image_of, running_version, seconds_since, settings};
use level1_install::objects;
use level1_install::objects::{
    CONTAINER, DATA_MOUNT, DATA_VOLUME, Names, PGDATA, PORT, VERSION_ANNOTATION,
};
use level1_install::version::PgVersion;

/// Level 2's major upgrade capability.
pub struct MajorUpgrade;

/// Label of the operator's volumes saying what they hold: `data` or `backup`.
pub const VOLUME_LABEL: &str = "pgdb.example.com/volume";
/// Label of the operator's volumes: the major version they were made for.
pub const MAJOR_LABEL: &str = "pgdb.example.com/major";
/// Annotation of a data PVC a migration was verified into: the Job's name.
pub const VERIFIED_ANNOTATION: &str = "pgdb.example.com/verified-by";
/// Annotation of a kept PVC: when it may be deleted (RFC 3339).
pub const RETAIN_UNTIL_ANNOTATION: &str = "pgdb.example.com/retain-until";
/// Annotation of the Job: the attempt (`status.upgrade.startedAt`) it belongs to.
pub const ATTEMPT_ANNOTATION: &str = "pgdb.example.com/attempt";
/// Selector label the fenced read-write Service requires, which no pod has.
pub const FENCE_LABEL: &str = "pgdb.example.com/fenced-by";
/// The Job's container.
pub const JOB_CONTAINER: &str = "upgrade";
/// Where the Job mounts the backup volume.
pub const BACKUP_MOUNT: &str = "/var/lib/postgresql/backup";
/// Where the Job keeps its socket, password file and lists (an emptyDir).
pub const WORK_MOUNT: &str = "/var/run/pgdb-upgrade";
/// The file on the new volume saying a migration into it has not completed.
pub const INCOMPLETE_MARKER: &str = ".pgdb-migration-incomplete";

/// What the Job runs, in the new major's image: dump, initdb, restore,
/// verify. Paths and hosts come from its environment.
pub const MIGRATION_SCRIPT: &str = r#"set -eu
umask 077
STEP="starting"
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
finish() {
  code=$?
  trap - EXIT
  if [ -e "$WORK_DIR/server-started" ]; then
    pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop >/dev/null 2>&1 || true
  fi
  if [ "$code" -ne 0 ]; then
    [ -s "$WORK_DIR/message" ] || printf '%s failed (exit %s); see the log of this Job' "$STEP" "$code" > "$WORK_DIR/message"
    if [ -s "$WORK_DIR/server.log" ]; then log "server log:"; tail -n 20 "$WORK_DIR/server.log" >&2; fi
  fi
  if [ -s "$WORK_DIR/message" ]; then cat "$WORK_DIR/message" > /dev/termination-log 2>/dev/null || true; fi
  exit "$code"
}
trap finish EXIT
# Stopped (a deadline, a cancelled upgrade): end at the current command
# rather than run on through the grace period; the EXIT trap cleans up.
trap 'exit 143' TERM INT
fail() { printf '%s' "$*" > "$WORK_DIR/message"; log "FAILED: $*"; exit 1; }
# run CMD...: runs CMD; when it fails, the step fails with its last error lines.
run() {
  if "$@" 2> "$WORK_DIR/stderr"; then
    cat "$WORK_DIR/stderr" >&2
  else
    cat "$WORK_DIR/stderr" >&2
    fail "$STEP failed: $(grep -v '^[[:space:]]*$' "$WORK_DIR/stderr" | tail -n 3 | tr '\n' ' ')"
  fi
}

STEP="checking the new data volume"
log "$STEP"
case "$PGDATA" in "$DATA_MOUNT"/?*) ;; *) fail "PGDATA $PGDATA is not inside $DATA_MOUNT" ;; esac
if [ -e "$PGDATA" ] && [ ! -e "$DATA_MOUNT/.pgdb-migration-incomplete" ] && [ -n "$(ls -A "$PGDATA")" ]; then
  fail "PVC $DATA_CLAIM already holds a data directory from an earlier migration that completed and may have served clients; it is not overwritten. Delete that PVC to retry the upgrade"
fi
: > "$DATA_MOUNT/.pgdb-migration-incomplete"
rm -rf "$PGDATA"

# The fenced Service stops only the clients that use it: the old server
# itself refuses writes from here on, so none it acknowledges can miss the dump.
STEP="fencing writes to $FROM_VERSION (default_transaction_read_only)"
log "$STEP"
run psql -X -q -At -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET default_transaction_read_only = on" -c "SELECT pg_reload_conf()"
# A reload reaches the server's processes a moment later: wait until a new session is read-only.
tries=0
until [ "$(psql -X -At -c 'SHOW default_transaction_read_only' 2>/dev/null)" = "on" ]; do
  tries=$((tries + 1))
  [ "$tries" -lt 50 ] || fail "$STEP failed: new sessions are still read-write after 10s"
  sleep 0.2
done

STEP="stopping client connections to $FROM_VERSION"
log "$STEP"
run psql -X -q -At -v ON_ERROR_STOP=1 -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"

STEP="dumping every database of $FROM_VERSION with pg_dumpall"
log "$STEP to $DUMP_FILE"
run pg_dumpall --quote-all-identifiers --file="$DUMP_FILE.partial"
mv "$DUMP_FILE.partial" "$DUMP_FILE"
log "the dump has $(wc -c < "$DUMP_FILE") bytes"

STEP="initialising the $TO_VERSION data directory"
log "$STEP"
printf '%s\n' "$PGPASSWORD" > "$WORK_DIR/pwfile"
run initdb --pgdata="$PGDATA" --username=postgres --pwfile="$WORK_DIR/pwfile" --auth-local=trust --auth-host=scram-sha-256 $POSTGRES_INITDB_ARGS
rm -f "$WORK_DIR/pwfile"
printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"

STEP="starting $TO_VERSION on the new volume"
log "$STEP (unix socket only)"
run pg_ctl --pgdata="$PGDATA" --wait --timeout=600 --log="$WORK_DIR/server.log" --options="-c listen_addresses='' -c unix_socket_directories='$WORK_DIR'" start
: > "$WORK_DIR/server-started"

STEP="restoring the dump into $TO_VERSION"
log "$STEP"
# The superuser exists in a new cluster: its CREATE ROLE is the one
# statement of the dump that must not run (its ALTER ROLE still does).
restore() {
  sed -e '/^CREATE ROLE postgres;$/d' -e '/^CREATE ROLE "postgres";$/d' "$DUMP_FILE" |
    psql -X -q -v ON_ERROR_STOP=1 --host="$WORK_DIR" --dbname=postgres --file=- > /dev/null
}
run restore

STEP="analysing the restored databases"
log "$STEP"
run vacuumdb --all --analyze-only --quiet --host="$WORK_DIR"

STEP="verifying every user table, sequence, materialized view and large object"
log "$STEP"
# Tables: row count and checksum. Sequences: position. Materialized views:
# that they exist (a restore refreshes them, so a stale one's rows differ by
# design, and may leave one unpopulated that depends on an unpopulated one).
# Large objects: count and checksum.
cat > "$WORK_DIR/checksums.sql" <<'SQL'
SELECT statement FROM (
  SELECT 1 AS part, n.nspname AS schema, c.relname AS name,
         CASE c.relkind
           WHEN 'r' THEN format('SELECT %L, %L, count(*), coalesce(sum((''x'' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0) FROM ONLY %I.%I AS t',
                                current_database(), n.nspname || '.' || c.relname, n.nspname, c.relname)
           WHEN 'S' THEN format('SELECT %L, %L, last_value, is_called FROM %I.%I',
                                current_database(), 'sequence ' || n.nspname || '.' || c.relname, n.nspname, c.relname)
           ELSE format('SELECT %L, %L',
                       current_database(), 'materialized view ' || n.nspname || '.' || c.relname)
         END AS statement
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'S', 'm')
    AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
  UNION ALL
  SELECT 2, '', '', format('SELECT %L, %L, count(*), coalesce(sum((''x'' || left(md5(lo_get(oid)), 16))::bit(64)::bigint::numeric), 0) FROM pg_largeobject_metadata',
                           current_database(), 'large objects')
) AS checks
ORDER BY part, schema, name
\gexec
SQL
# checksums [--host=...]: "database|name" per database, then per database
# "database|schema.table|rows|checksum" per user table,
# "database|sequence schema.name|last_value|is_called" per sequence,
# "database|materialized view schema.name" per materialized view,
# and "database|large objects|count|checksum".
checksums() {
  psql -X -At -v ON_ERROR_STOP=1 "$@" --dbname=postgres -c "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1" > "$WORK_DIR/databases" || return 1
  while IFS= read -r db; do
    printf 'database|%s\n' "$db"
    psql -X -At -v ON_ERROR_STOP=1 "$@" --dbname="$db" --file="$WORK_DIR/checksums.sql" || return 1
  done < "$WORK_DIR/databases"
}
run checksums > "$WORK_DIR/old.txt"
run checksums --host="$WORK_DIR" > "$WORK_DIR/new.txt"
if ! cmp -s "$WORK_DIR/old.txt" "$WORK_DIR/new.txt"; then
  diff "$WORK_DIR/old.txt" "$WORK_DIR/new.txt" >&2 || true
  fail "verification failed: the restored $TO_VERSION differs from $FROM_VERSION (database|object|values, < $FROM_VERSION, > $TO_VERSION): $(diff "$WORK_DIR/old.txt" "$WORK_DIR/new.txt" | grep '^[<>]' | head -n 4 | tr '\n' ' ')"
fi
summary=$(awk -F'|' '
  $2 ~ /^materialized view / { m++; next }
  NF == 2 { d++; next }
  $2 ~ /^sequence / { s++; next }
  $2 == "large objects" { l += $3; next }
  { t++; r += $(NF - 1) }
  END { printf "%d databases, %d tables, %d rows, %d sequences, %d materialized views, %d large objects", d, t, r, s, m, l }' "$WORK_DIR/new.txt")

STEP="stopping $TO_VERSION"
log "$STEP"
run pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop
rm -f "$WORK_DIR/server-started" "$DATA_MOUNT/.pgdb-migration-incomplete"
sync
printf 'verified %s: rows and checksums of every user table and large object, sequence positions and the materialized views match between %s and %s' "$summary" "$FROM_VERSION" "$TO_VERSION" > "$WORK_DIR/message"
log "$(cat "$WORK_DIR/message")"
"#;

/// The operator's PVC for the data directory of `major`.
pub fn data_claim(db_name: &str, major: u32) -> String {
    format!("{db_name}-data-{major}")
}

/// The operator's PVC for the dump taken before upgrading to `major`.
pub fn backup_claim(db_name: &str, major: u32) -> String {
    format!("{db_name}-backup-{major}")
}

/// The Job of the attempt started at `started_at`: a short hash of the
/// attempt keeps each attempt's Job (and its log) apart, within the 63
/// characters a Job's name may have.
pub fn job_name(db_name: &str, to_major: u32, started_at: &str) -> String {
    // FNV-1a: stable across builds and platforms, which is all that matters here.
    let hash = format!("{db_name}/{started_at}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let suffix = format!("-upgrade-{to_major}-{:05x}", hash & 0xf_ffff);
    let keep = 63usize.saturating_sub(suffix.len()).min(db_name.len());
    format!("{}{suffix}", db_name[..keep].trim_end_matches('-'))
}

fn rounded(now: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

fn is_ours(claim: &PersistentVolumeClaim) -> bool {
    claim.labels().contains_key(VOLUME_LABEL)
}

/// The PVC holding the data directory of `major`: the operator's
/// `<db>-data-<major>` once a migration into it was verified, else the
/// StatefulSet's claim-template PVC.
pub fn data_claim_of(db: &PostgresDB, observed: &Observed, major: u32) -> String {
    let names = Names::of(db);
    let ours = data_claim(&names.primary, major);
    let verified = observed
        .get::<PersistentVolumeClaim>(&ours)
        .is_some_and(|c| c.annotations().contains_key(VERIFIED_ANNOTATION));
    if verified { ours } else { names.data_claim(0) }
}

/// The major a claim name of [`data_claim`]'s form is for.
fn major_of_claim(db_name: &str, claim: &str) -> Option<u32> {
    claim
        .strip_prefix(&format!("{db_name}-data-"))?
        .parse()
        .ok()
}

/// What happened to the major upgrade in this reconcile, for Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A migration starts.
    Started,
    /// The Job verified the restored data; the StatefulSet switches.
    Verified,
    /// The new major is ready.
    Completed,
    /// The Job failed, did not start, or the new major was not ready in time.
    RolledBack,
    /// `spec.version` changed during the migration or the switch.
    Cancelled,
    /// `spec.version` went back to the previous major after completion.
    ReturnedToPrevious,
}

/// The major upgrade after this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The status, with `major` set; `None` when no major upgrade concerns
    /// the database (the minor-upgrade capability owns `status.upgrade`).
    pub upgrade: Option<UpgradeStatus>,
    /// Whether the status was recorded by an earlier reconcile (a Job is
    /// only created for a recorded attempt, whose name is known).
    pub recorded: bool,
    /// What changed in this reconcile.
    pub transition: Option<Transition>,
}

impl Progress {
    fn unchanged(upgrade: Option<UpgradeStatus>) -> Self {
        Self {
            upgrade,
            recorded: true,
            transition: None,
        }
    }

    /// The upgrade and its major part, if any.
    pub fn parts(&self) -> Option<(&UpgradeStatus, &MajorUpgradeStatus)> {
        let up = self.upgrade.as_ref()?;
        Some((up, up.major.as_ref()?))
    }

    /// The phase, if a major upgrade concerns the database.
    pub fn phase(&self) -> Option<UpgradePhase> {
        self.parts().map(|(up, _)| up.phase)
    }

    /// Whether the upgrade is for the version the spec asks for (not a
    /// closed or superseded attempt).
    pub fn is_current(&self, db: &PostgresDB) -> bool {
        self.parts()
            .is_some_and(|(up, major)| up.to_version == db.spec.version && !major.closed)
    }
}

/// How the upgrade Job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// No such Job.
    Absent,
    /// Its pod has not started running (why, when known).
    Pending(String),
    /// Its pod runs.
    Running,
    /// It succeeded; the verification summary.
    Succeeded(String),
    /// It failed; why.
    Failed(String),
}

/// The pods of the Job `job`, among the observed pods.
fn job_pods(observed: &Observed, job: &str) -> Vec<Pod> {
    observed
        .all::<Pod>()
        .into_iter()
        .filter(|p| p.labels().get("job-name").map(String::as_str) == Some(job))
        .collect()
}

fn termination_message(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        let terminated = statuses
            .iter()
            .find(|c| c.name == JOB_CONTAINER)?
            .state
            .as_ref()?
            .terminated
            .as_ref()?;
        terminated
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| m.chars().take(1000).collect())
    })
}

/// How the Job named `name` stands, from the Job and its pods.
pub fn job_outcome(observed: &Observed, name: &str) -> JobOutcome {
    let Some(job) = observed.get::<Job>(name) else {
        return JobOutcome::Absent;
    };
    let pods = job_pods(observed, name);
    let status = job.status.unwrap_or_default();
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    // A Job marked to fail (past its deadline, say) has failed, even if its
    // pod, stopping within its grace period, still exits 0.
    if let Some(failed) = condition("Failed").or_else(|| condition("FailureTarget")) {
        if failed.reason.as_deref() == Some("DeadlineExceeded") {
            return JobOutcome::Failed(format!(
                "the migration ran longer than spec.upgrade.migrationTimeoutSeconds: Kubernetes stopped Job {name} and deleted its pod (DeadlineExceeded)"
            ));
        }
        return JobOutcome::Failed(termination_message(&pods).unwrap_or_else(|| {
            format!(
                "Job {name} failed: {} (see kubectl logs job/{name})",
                failed.message.clone().unwrap_or_default()
            )
        }));
    }
    if condition("Complete").is_some() || status.succeeded.unwrap_or(0) > 0 {
        return JobOutcome::Succeeded(termination_message(&pods).unwrap_or_else(|| {
            format!(
                "Job {name} restored and verified every user table (see kubectl logs job/{name})"
            )
        }));
    }
    if status.failed.unwrap_or(0) > 0 {
        return JobOutcome::Failed(
            termination_message(&pods)
                .unwrap_or_else(|| format!("Job {name} failed (see kubectl logs job/{name})")),
        );
    }
    let running = pods.iter().any(|p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            && p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                })
    });
    if running {
        return JobOutcome::Running;
    }
    let waiting = pods.iter().find_map(|p| {
        let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            Some(format!(
                "pod {}: {}: {}",
                p.name_any(),
                waiting.reason.clone().unwrap_or_default(),
                waiting.message.clone().unwrap_or_default()
            ))
        })
    });
    JobOutcome::Pending(waiting.unwrap_or_else(|| format!("Job {name} has no running pod")))
}

/// Whether the StatefulSet has rolled out a template of `version` that
/// mounts `claim`, and its pod is ready.
pub fn serving(observed: &Observed, db: &PostgresDB, version: &str, claim: &str) -> bool {
    let names = Names::of(db);
    let Some(sts) = observed.get::<StatefulSet>(&names.primary) else {
        return false;
    };
    let Some(spec) = sts.spec.as_ref() else {
        return false;
    };
    let annotated = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(VERSION_ANNOTATION))
        .map(String::as_str)
        == Some(version);
    let mounts = spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == claim)
            })
        });
    let replicas = spec.replicas.unwrap_or(1);
    let status = sts.status.clone().unwrap_or_default();
    let rolled_out = status.observed_generation >= sts.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= replicas
        && (status.update_revision.is_none() || status.current_revision == status.update_revision);
    annotated && mounts && rolled_out && status.ready_replicas.unwrap_or(0) >= replicas
}

/// Whether asking for `spec.version` goes back to the major a completed
/// upgrade came from while its data volume is kept (or is doing so): the
/// version check lets this "downgrade" through, as it returns to data that
/// major wrote.
pub fn returns_to_previous_major(db: &PostgresDB, observed: &Observed) -> bool {
    let Some(up) = db.status.as_ref().and_then(|s| s.upgrade.as_ref()) else {
        return false;
    };
    let Some(major) = up.major.as_ref() else {
        return false;
    };
    let (Some(from), Some(wanted)) = (
        PgVersion::parse(&up.from_version),
        PgVersion::parse(&db.spec.version),
    ) else {
        return false;
    };
    let back = matches!(
        classify(from, wanted),
        VersionChange::Same | VersionChange::Minor
    );
    let allowed = settings(db).allow_major;
    let kept = observed
        .get::<PersistentVolumeClaim>(&major.previous_data_volume)
        .is_some_and(|c| c.metadata.deletion_timestamp.is_none());
    back && allowed
        && match up.phase {
            UpgradePhase::Complete => kept,
            UpgradePhase::RolledBack => major.switched_at.is_some(),
            _ => false,
        }
}

/// The major upgrade after this reconcile: started, advanced, rolled back,
/// or left as it was.
pub fn progress(db: &PostgresDB, observed: &Observed, now: jiff::Timestamp) -> Progress {
    let previous = db
        .status
        .as_ref()
        .and_then(|s| s.upgrade.clone())
        // Rolling is the minor capability's, whatever it carries.
        .filter(|u| u.major.is_some() && u.phase != UpgradePhase::Rolling);
    if db.spec.paused {
        return Progress::unchanged(previous);
    }
    let wanted = db.spec.version.clone();
    if let Some(up) = previous.clone()
        && up.to_version == wanted
        && !up.major.as_ref().is_some_and(|m| m.closed)
    {
        return advance(db, observed, up, now);
    }
    if let Some(mut up) = previous.clone()
        && up.to_version != wanted
    {
        let major = up.major.get_or_insert_with(Default::default);
        match up.phase {
            UpgradePhase::Migrating | UpgradePhase::Switching => {
                major.failure = Some(format!(
                    "cancelled: spec.version changed to {wanted} during the {}",
                    if up.phase == UpgradePhase::Migrating {
                        "migration"
                    } else {
                        "switch"
                    }
                ));
                major.closed = true;
                up.phase = UpgradePhase::RolledBack;
                return Progress {
                    upgrade: Some(up),
                    recorded: true,
                    transition: Some(Transition::Cancelled),
                };
            }
            UpgradePhase::Complete if returns_to_previous_major(db, observed) => {
                major.failure = Some(format!(
                    "rolled back on request: spec.version is {wanted}; {} runs again on PVC {}, and what was written to {} since the switch stays on PVC {}",
                    up.from_version, major.previous_data_volume, up.to_version, major.data_volume
                ));
                major.closed = true;
                up.phase = UpgradePhase::RolledBack;
                return Progress {
                    upgrade: Some(up),
                    recorded: true,
                    transition: Some(Transition::ReturnedToPrevious),
                };
            }
            _ => {}
        }
    }
    if let Some(started) = start(db, observed, now) {
        return Progress {
            upgrade: Some(started),
            recorded: false,
            transition: Some(Transition::Started),
        };
    }
    // History: a rolled-back attempt whose target the spec no longer asks
    // for is closed, so asking for it again starts a new attempt.
    Progress::unchanged(previous.map(|mut up| {
        if up.phase == UpgradePhase::RolledBack
            && up.to_version != wanted
            && let Some(major) = up.major.as_mut()
        {
            major.closed = true;
        }
        up
    }))
}

/// A new major upgrade, when the spec asks for another major than runs and allows it.
fn start(db: &PostgresDB, observed: &Observed, now: jiff::Timestamp) -> Option<UpgradeStatus> {
    let running = running_version(db)?;
    let wanted = PgVersion::parse(&db.spec.version).filter(|v| v.is_supported())?;
    if classify(running, wanted) != VersionChange::Major || !settings(db).allow_major {
        return None;
    }
    let names = Names::of(db);
    let started_at = rounded(now).to_string();
    let from_version = running.to_string();
    let from_image = observed
        .get::<StatefulSet>(&names.primary)
        .as_ref()
        .and_then(image_of)
        .unwrap_or_else(|| running.official_image());
    Some(UpgradeStatus {
        from_version,
        from_image,
        to_version: db.spec.version.clone(),
        phase: UpgradePhase::Migrating,
        observed_downtime_seconds: 0,
        unready_since: None,
        major: Some(MajorUpgradeStatus {
            previous_data_volume: data_claim_of(db, observed, running.major),
            data_volume: data_claim(&names.primary, wanted.major),
            backup_volume: backup_claim(&names.primary, wanted.major),
            job: job_name(&names.primary, wanted.major, &started_at),
            to_image: db
                .spec
                .image
                .clone()
                .unwrap_or_else(|| wanted.official_image()),
            ..Default::default()
        }),
        started_at,
    })
}

/// One step of the current attempt.
fn advance(
    db: &PostgresDB,
    observed: &Observed,
    mut up: UpgradeStatus,
    now: jiff::Timestamp,
) -> Progress {
    let timeout = i64::from(settings(db).health_timeout_seconds);
    let mut transition = None;
    let Some(major) = up.major.as_mut() else {
        return Progress::unchanged(Some(up));
    };
    match up.phase {
        UpgradePhase::Migrating => match job_outcome(observed, &major.job) {
            JobOutcome::Succeeded(summary) => {
                up.phase = UpgradePhase::Switching;
                major.verified = Some(summary);
                major.switched_at = Some(rounded(now).to_string());
                transition = Some(Transition::Verified);
            }
            JobOutcome::Failed(why) => {
                up.phase = UpgradePhase::RolledBack;
                major.failure = Some(why);
                transition = Some(Transition::RolledBack);
            }
            JobOutcome::Pending(why) if seconds_since(Some(&up.started_at), now) > timeout => {
                up.phase = UpgradePhase::RolledBack;
                major.failure = Some(format!(
                    "the upgrade Job {} did not start within {timeout}s (spec.upgrade.healthTimeoutSeconds): {why}",
                    major.job
                ));
                transition = Some(Transition::RolledBack);
            }
            JobOutcome::Absent | JobOutcome::Pending(_) | JobOutcome::Running => {}
        },
        UpgradePhase::Switching => {
            // Ready is not enough: the server must say it runs the new major.
            if serving(observed, db, &up.to_version, &major.data_volume)
                && crate::upgrade::confirm_servers(db, observed, &up.to_version).is_ok()
            {
                up.phase = UpgradePhase::Complete;
                let hours = i64::from(settings(db).retention_hours);
                major.retain_until = rounded(now)
                    .checked_add(jiff::SignedDuration::from_hours(hours))
                    .ok()
                    .map(|t| t.to_string());
                transition = Some(Transition::Completed);
            } else if seconds_since(major.switched_at.as_deref(), now) > timeout {
                up.phase = UpgradePhase::RolledBack;
                major.failure = Some(format!(
                    "{} on PVC {} was not ready within {timeout}s of the switch (spec.upgrade.healthTimeoutSeconds)",
                    up.to_version, major.data_volume
                ));
                transition = Some(Transition::RolledBack);
            }
        }
        UpgradePhase::Rolling | UpgradePhase::Complete | UpgradePhase::RolledBack => {}
    }
    Progress {
        upgrade: Some(up),
        recorded: true,
        transition,
    }
}

/// The desired objects of a major upgrade, as changes to what the lower
/// capabilities built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Run the StatefulSet on this image and version annotation (the old
    /// major, while migrating or rolled back).
    pub pin: Option<(String, String)>,
    /// Mount this PVC (and the major it holds) at the data directory instead
    /// of the claim template's.
    pub mount: Option<(String, u32)>,
    /// The read-write Service selects no pod.
    pub fence: bool,
    /// PVCs to apply (unowned).
    pub claims: Vec<PersistentVolumeClaim>,
    /// The Job to apply.
    pub job: Option<Job>,
    /// Pods to delete, with why.
    pub delete_pods: Vec<(String, String)>,
    /// PVCs to delete, with why.
    pub delete_claims: Vec<(String, String)>,
    /// Events: (warning, reason, message).
    pub notes: Vec<(bool, String, String)>,
}

/// A PVC of the operator's (`role` is `data` or `backup`): the spec's size,
/// the live class when it exists. It keeps the verification annotation it
/// has (applying without it would remove it), gets one when `verified_by`
/// names the Job, and carries `retain_until` only when given: applied
/// without it, a retention set earlier is lifted.
pub fn operator_claim(
    db: &PostgresDB,
    observed: &Observed,
    name: &str,
    role: &str,
    major: u32,
    retain_until: Option<&str>,
    verified_by: Option<&str>,
) -> PersistentVolumeClaim {
    let live = observed.get::<PersistentVolumeClaim>(name);
    let mut annotations: BTreeMap<String, String> = live
        .as_ref()
        .map(|c| c.annotations().clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == VERIFIED_ANNOTATION)
        .collect();
    if let Some(job) = verified_by {
        annotations.insert(VERIFIED_ANNOTATION.into(), job.into());
    }
    if let Some(until) = retain_until {
        annotations.insert(RETAIN_UNTIL_ANNOTATION.into(), until.into());
    }
    let storage_class_name = match &live {
        Some(c) => c.spec.as_ref().and_then(|s| s.storage_class_name.clone()),
        None => db.spec.storage.storage_class_name.clone(),
    };
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                (VOLUME_LABEL.to_string(), role.to_string()),
                (MAJOR_LABEL.to_string(), major.to_string()),
            ])),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(db.spec.storage.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn claim_volume(name: &str, claim: &str) -> Volume {
    Volume {
        name: name.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: None,
        }),
        ..Default::default()
    }
}

/// The labels of the Job's pod: the instance label (so the operator reads
/// the pod and its termination message) but not the labels the Services
/// and the StatefulSet select.
pub fn job_pod_labels(db: &PostgresDB) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE_LABEL.to_string(), db.name_any()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            "major-upgrade".to_string(),
        ),
    ])
}

/// The Job that dumps, restores and verifies. Built only from the recorded
/// status and names, so it stays the same while it runs (a Job's template
/// cannot change); `suspend` stops an abandoned one.
pub fn migration_job(db: &PostgresDB, up: &UpgradeStatus, suspend: bool) -> Option<Job> {
    let major = up.major.as_ref()?;
    let names = Names::of(db);
    let namespace = db.namespace().unwrap_or_else(|| "default".into());
    let old_server = format!("{}-0.{}.{namespace}.svc", names.primary, names.headless);
    let env = vec![
        objects::env("PGHOST", &old_server),
        objects::env("PGPORT", &PORT.to_string()),
        objects::env("PGUSER", "postgres"),
        objects::secret_env("PGPASSWORD", &names.superuser, "password"),
        objects::env("PGDATABASE", "postgres"),
        objects::env("PGCONNECT_TIMEOUT", "15"),
        objects::env("PGDATA", PGDATA),
        objects::env("DATA_MOUNT", DATA_MOUNT),
        objects::env("DATA_CLAIM", &major.data_volume),
        objects::env("WORK_DIR", WORK_MOUNT),
        objects::env(
            "DUMP_FILE",
            &format!("{BACKUP_MOUNT}/{}.pg_dumpall.sql", major.job),
        ),
        objects::env("FROM_VERSION", &up.from_version),
        objects::env("TO_VERSION", &up.to_version),
        objects::env("POSTGRES_INITDB_ARGS", "--data-checksums"),
    ];
    let container = Container {
        name: JOB_CONTAINER.into(),
        image: Some(major.to_image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), MIGRATION_SCRIPT.into()]),
        env: Some(env),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_MOUNT.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "backup".into(),
                mount_path: BACKUP_MOUNT.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "work".into(),
                mount_path: WORK_MOUNT.into(),
                ..Default::default()
            },
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(objects::container_security()),
        ..Default::default()
    };
    Some(Job {
        metadata: ObjectMeta {
            name: Some(major.job.clone()),
            annotations: Some(BTreeMap::from([(
                ATTEMPT_ANNOTATION.to_string(),
                up.started_at.clone(),
            )])),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/component".to_string(),
                "major-upgrade".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            // Mutable on a Job, unlike its template: the spec's current value.
            active_deadline_seconds: settings(db).migration_timeout_seconds.map(i64::from),
            suspend: Some(suspend),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_pod_labels(db)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    enable_service_links: Some(false),
                    security_context: Some(objects::pod_security()),
                    volumes: Some(vec![
                        claim_volume("data", &major.data_volume),
                        claim_volume("backup", &major.backup_volume),
                        Volume {
                            name: "work".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn job_finished(observed: &Observed, name: &str) -> bool {
    matches!(
        job_outcome(observed, name),
        JobOutcome::Succeeded(_) | JobOutcome::Failed(_)
    )
}

fn exists(observed: &Observed, claim: &str) -> bool {
    observed
        .get::<PersistentVolumeClaim>(claim)
        .is_some_and(|c| c.metadata.deletion_timestamp.is_none())
}

fn expired(claim: &PersistentVolumeClaim, now: jiff::Timestamp) -> bool {
    claim
        .annotations()
        .get(RETAIN_UNTIL_ANNOTATION)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|until| until <= now)
}

/// The claims the live StatefulSet's template mounts (pod-template volumes).
fn live_claims(observed: &Observed, db: &PostgresDB) -> Vec<String> {
    observed
        .get::<StatefulSet>(&Names::of(db).primary)
        .and_then(|s| s.spec?.template.spec?.volumes)
        .into_iter()
        .flatten()
        .filter_map(|v| Some(v.persistent_volume_claim?.claim_name))
        .collect()
}

/// What the objects must look like, given the progress.
pub fn plan(
    db: &PostgresDB,
    observed: &Observed,
    progress: &Progress,
    now: jiff::Timestamp,
) -> Plan {
    let names = Names::of(db);
    let mut plan = Plan::default();
    let current = progress.is_current(db);
    let template_claim = names.data_claim(0);

    // Which data volume is mounted.
    let claim = match progress.parts() {
        Some((up, major)) => match up.phase {
            UpgradePhase::Switching | UpgradePhase::Complete => major.data_volume.clone(),
            _ => major.previous_data_volume.clone(),
        },
        None => {
            let major = running_version(db)
                .or_else(|| PgVersion::parse(&db.spec.version))
                .map(|v| v.major);
            major.map_or(template_claim.clone(), |m| data_claim_of(db, observed, m))
        }
    };
    if claim != template_claim
        && let Some(major) = major_of_claim(&names.primary, &claim)
    {
        plan.mount = Some((claim.clone(), major));
    }

    let Some((up, major)) = progress.parts() else {
        // No major upgrade: keep the current operator volume growing with
        // the spec, and let expired volumes go.
        if let Some((claim, m)) = &plan.mount
            && exists(observed, claim)
        {
            plan.claims
                .push(operator_claim(db, observed, claim, "data", *m, None, None));
        }
        return with_cleanup(db, observed, plan, now);
    };
    let to_major = PgVersion::parse(&up.to_version).map_or(0, |v| v.major);
    let from_major = PgVersion::parse(&up.from_version).map_or(0, |v| v.major);
    let backup =
        |name: &str, until| operator_claim(db, observed, name, "backup", to_major, until, None);
    let data = |name: &str, major, until, verified_by| {
        operator_claim(db, observed, name, "data", major, until, verified_by)
    };

    match up.phase {
        UpgradePhase::Migrating if current => {
            plan.pin = Some((up.from_image.clone(), up.from_version.clone()));
            plan.fence = true;
            plan.claims.push(backup(&major.backup_volume, None));
            plan.claims
                .push(data(&major.data_volume, to_major, None, None));
            if progress.recorded {
                plan.job = migration_job(db, up, false);
            }
        }
        UpgradePhase::Switching => {
            plan.claims.push(backup(&major.backup_volume, None));
            plan.claims
                .push(data(&major.data_volume, to_major, None, Some(&major.job)));
        }
        UpgradePhase::Complete => {
            plan.claims
                .push(data(&major.data_volume, to_major, None, Some(&major.job)));
            let until = major.retain_until.as_deref();
            let keep = |claim: &str| {
                observed
                    .get::<PersistentVolumeClaim>(claim)
                    .is_some_and(|c| c.metadata.deletion_timestamp.is_none() && !expired(&c, now))
            };
            if keep(&major.backup_volume) {
                plan.claims.push(backup(&major.backup_volume, until));
            }
            if major.previous_data_volume != template_claim && keep(&major.previous_data_volume) {
                plan.claims
                    .push(data(&major.previous_data_volume, from_major, until, None));
            }
        }
        UpgradePhase::Migrating | UpgradePhase::RolledBack => {
            if current {
                plan.pin = Some((up.from_image.clone(), up.from_version.clone()));
            }
            // The previous volume serves again: it is not to be deleted.
            if major.previous_data_volume != template_claim
                && exists(observed, &major.previous_data_volume)
            {
                plan.claims
                    .push(data(&major.previous_data_volume, from_major, None, None));
            }
            // An abandoned Job that still runs (or waits to) is stopped.
            if observed.get::<Job>(&major.job).is_some() && !job_finished(observed, &major.job) {
                plan.job = migration_job(db, up, true);
                for pod in job_pods(observed, &major.job) {
                    let done = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .is_some_and(|p| p == "Succeeded" || p == "Failed");
                    if !done && pod.metadata.deletion_timestamp.is_none() {
                        plan.delete_pods.push((
                            pod.name_any(),
                            format!("the major upgrade to {} was abandoned", up.to_version),
                        ));
                    }
                }
            }
            // After a switch, a pod stuck on the new revision is never
            // replaced by the StatefulSet once its template is reverted.
            if major.switched_at.is_some() {
                delete_stuck_pods(db, observed, major, &up.to_version, &mut plan);
            }
        }
        UpgradePhase::Rolling => {}
    }

    match progress.transition {
        Some(Transition::Started) => plan.notes.push((
            false,
            "MajorUpgradeStarted".into(),
            format!(
                "upgrading {} to {}: writes stop (Service {} selects no pod) while a Job dumps every database to PVC {}, restores them into {} on PVC {} and verifies every user table",
                up.from_version, up.to_version, names.primary, major.backup_volume, up.to_version, major.data_volume
            ),
        )),
        Some(Transition::Verified) => plan.notes.push((
            false,
            "MajorUpgradeVerified".into(),
            format!(
                "Job {}: {}; switching the StatefulSet to {} on PVC {}",
                major.job,
                major.verified.clone().unwrap_or_default(),
                up.to_version,
                major.data_volume
            ),
        )),
        Some(Transition::Completed) => plan.notes.push((
            false,
            "MajorUpgradeComplete".into(),
            format!(
                "{} runs on PVC {}; {}",
                up.to_version,
                major.data_volume,
                retention_text(db, up, major)
            ),
        )),
        Some(Transition::Cancelled) | Some(Transition::ReturnedToPrevious) => plan.notes.push((
            false,
            "MajorUpgradeRolledBack".into(),
            major.failure.clone().unwrap_or_default(),
        )),
        // Failures are reported by the Progressing condition's Warning.
        Some(Transition::RolledBack) | None => {}
    }
    if matches!(up.phase, UpgradePhase::Complete) {
        return with_cleanup(db, observed, plan, now);
    }
    plan
}

/// Adds the deletion of the operator's PVCs whose retention has passed and
/// that nothing mounts.
fn with_cleanup(
    db: &PostgresDB,
    observed: &Observed,
    mut plan: Plan,
    now: jiff::Timestamp,
) -> Plan {
    let names = Names::of(db);
    let template_claim = names.data_claim(0);
    let mounted = plan.mount.as_ref().map(|(c, _)| c.clone());
    let live = live_claims(observed, db);
    let mut deleted = Vec::new();
    for claim in observed.all::<PersistentVolumeClaim>() {
        let name = claim.name_any();
        if !is_ours(&claim)
            || claim.metadata.deletion_timestamp.is_some()
            || !expired(&claim, now)
            || name == template_claim
            || mounted.as_deref() == Some(name.as_str())
            || live.contains(&name)
        {
            continue;
        }
        plan.claims
            .retain(|c| c.metadata.name.as_deref() != Some(name.as_str()));
        let what = match claim.labels().get(VOLUME_LABEL).map(String::as_str) {
            Some("backup") => "the pre-upgrade dump",
            _ => "a previous major's data",
        };
        plan.delete_claims
            .push((name.clone(), format!("its retention ({what}) passed")));
        deleted.push(format!("{name} ({what})"));
    }
    if !deleted.is_empty() {
        let template_note = if exists(observed, &template_claim) && mounted.is_some() {
            format!(
                "; PVC {template_claim} is kept: it is the StatefulSet's claim-template volume, which the StatefulSet would recreate (see docs/level2-upgrade.md to free it)"
            )
        } else {
            String::new()
        };
        plan.notes.push((
            false,
            "RetentionExpired".into(),
            format!(
                "deleted PVC {} after spec.upgrade.retentionHours{template_note}",
                deleted.join(", PVC ")
            ),
        ));
    }
    plan
}

/// Pods stuck on the new major's revision once the template is reverted.
fn delete_stuck_pods(
    db: &PostgresDB,
    observed: &Observed,
    major: &MajorUpgradeStatus,
    to_version: &str,
    plan: &mut Plan,
) {
    let names = Names::of(db);
    let Some(live) = observed.get::<StatefulSet>(&names.primary) else {
        return;
    };
    if live_claims(observed, db).contains(&major.data_volume) {
        return; // not reverted yet
    }
    for pod in crate::upgrade::stuck_pods(observed, &live) {
        plan.delete_pods.push((
            pod,
            format!("stuck on the rolled-back {to_version} revision"),
        ));
    }
}

fn retention_text(db: &PostgresDB, up: &UpgradeStatus, major: &MajorUpgradeStatus) -> String {
    let template_claim = Names::of(db).data_claim(0);
    let until = major.retain_until.clone().unwrap_or_default();
    let previous = if major.previous_data_volume == template_claim {
        format!(
            "PVC {} ({}'s data) is kept (it is the StatefulSet's claim-template volume: only an administrator deletes it)",
            major.previous_data_volume, up.from_version
        )
    } else {
        format!(
            "PVC {} ({}'s data) is kept until {until}",
            major.previous_data_volume, up.from_version
        )
    };
    format!(
        "{previous}; PVC {} (the dump) is kept until {until}; until then, setting spec.version to {} switches back to the previous data",
        major.backup_volume, up.from_version
    )
}

/// Applies a plan to the desired state Level 1 (and the minor upgrade) built.
pub fn apply_plan(db: &PostgresDB, plan: Plan, desired: &mut Desired) -> Result<(), Error> {
    let names = Names::of(db);
    if plan.pin.is_some() || plan.mount.is_some() {
        desired.modify::<StatefulSet>(&names.primary, |sts| {
            if let Some((image, version)) = &plan.pin {
                crate::upgrade::run_version(sts, image, version);
            }
            let Some(template) = sts.spec.as_mut().map(|s| &mut s.template) else {
                return;
            };
            if let Some((claim, major)) = &plan.mount
                && let Some(pod) = template.spec.as_mut()
            {
                let volume = format!("{DATA_VOLUME}-{major}");
                for container in pod.containers.iter_mut().filter(|c| c.name == CONTAINER) {
                    for mount in container.volume_mounts.iter_mut().flatten() {
                        if mount.mount_path == DATA_MOUNT {
                            mount.name = volume.clone();
                        }
                    }
                }
                let volumes = pod.volumes.get_or_insert_with(Vec::new);
                volumes.retain(|v| v.name != volume);
                volumes.push(claim_volume(&volume, claim));
            }
        })?;
    }
    if plan.fence {
        desired.modify::<Service>(&names.primary, |svc| {
            if let Some(selector) = svc.spec.as_mut().and_then(|s| s.selector.as_mut()) {
                selector.insert(FENCE_LABEL.to_string(), "major-upgrade".to_string());
            }
        })?;
    }
    for claim in &plan.claims {
        desired.add_unowned(claim)?;
    }
    if let Some(job) = &plan.job {
        desired.add(job)?;
    }
    for (pod, reason) in plan.delete_pods {
        desired.delete::<Pod>(&pod, reason);
    }
    for (claim, reason) in plan.delete_claims {
        desired.delete::<PersistentVolumeClaim>(&claim, reason);
    }
    for (warning, reason, message) in plan.notes {
        desired.note(warning, &reason, message);
    }
    Ok(())
}

/// The Ready and Progressing conditions of a major upgrade.
fn assess_conditions(
    db: &PostgresDB,
    observed: &Observed,
    progress: &Progress,
    status: &mut StatusDraft,
) {
    let Some((up, major)) = progress.parts() else {
        return;
    };
    let names = Names::of(db);
    let timeout = settings(db).health_timeout_seconds;
    let current = progress.is_current(db);
    match up.phase {
        UpgradePhase::Migrating if current => {
            status.conditions.set(
                READY,
                Assessment::no(
                    "MajorUpgradeMigrating",
                    format!(
                        "writes are stopped: Service {} selects no pod while {} is migrated to {}",
                        names.primary, up.from_version, up.to_version
                    ),
                ),
            );
            status.conditions.set(
                PROGRESSING,
                Assessment::yes(
                    "MajorUpgradeMigrating",
                    format!(
                        "since {}: Job {} dumps {} to PVC {}, restores it into {} on PVC {} and verifies every user table",
                        up.started_at,
                        major.job,
                        up.from_version,
                        major.backup_volume,
                        up.to_version,
                        major.data_volume
                    ),
                ),
            );
        }
        UpgradePhase::Switching => {
            status.conditions.set(
                PROGRESSING,
                Assessment::yes(
                    "MajorUpgradeSwitching",
                    format!(
                        "{}; the StatefulSet runs {} on PVC {} since {} and must be ready within {timeout}s",
                        major.verified.clone().unwrap_or_default(),
                        up.to_version,
                        major.data_volume,
                        major.switched_at.clone().unwrap_or_default()
                    ),
                ),
            );
        }
        UpgradePhase::Complete => {
            let now = status.now.unwrap_or_else(jiff::Timestamp::now);
            let until = major.retain_until.clone().unwrap_or_default();
            let passed = until
                .parse::<jiff::Timestamp>()
                .is_ok_and(|until| until <= now);
            let retention = if passed {
                let template_claim = names.data_claim(0);
                let previous = format!("{}'s data", up.from_version);
                let volumes = [
                    (&major.backup_volume, "the dump"),
                    (&major.previous_data_volume, previous.as_str()),
                ];
                let fates: Vec<String> = volumes
                    .into_iter()
                    .map(|(claim, what)| {
                        if *claim == template_claim {
                            format!("PVC {claim} ({what}) is kept: it is the StatefulSet's claim-template volume (see docs/level2-upgrade.md to free it)")
                        } else if exists(observed, claim) {
                            format!("PVC {claim} ({what}) is being deleted")
                        } else {
                            format!("PVC {claim} ({what}) was deleted")
                        }
                    })
                    .collect();
                format!("The retention passed at {until}: {}", fates.join("; "))
            } else {
                retention_text(db, up, major)
            };
            status.conditions.set(
                PROGRESSING,
                Assessment::no(
                    "MajorUpgradeComplete",
                    format!(
                        "{} to {} complete: {}. {retention}",
                        up.from_version,
                        up.to_version,
                        major.verified.clone().unwrap_or_default()
                    ),
                ),
            );
        }
        UpgradePhase::RolledBack => {
            let evidence = format!(
                "Job {}, PVC {} (the dump) and PVC {} are kept for inspection",
                major.job, major.backup_volume, major.data_volume
            );
            let assessment = Assessment::no(
                "MajorUpgradeRolledBack",
                format!(
                    "{} to {} rolled back: {}. {} runs on PVC {}; {evidence}{}",
                    up.from_version,
                    up.to_version,
                    major.failure.clone().unwrap_or_default(),
                    up.from_version,
                    major.previous_data_volume,
                    if major.closed {
                        String::new()
                    } else {
                        format!(
                            ". To retry, set spec.version to {}, fix the cause, then set it to {} again",
                            up.from_version, up.to_version
                        )
                    }
                ),
            );
            status.conditions.set(
                PROGRESSING,
                if major.closed {
                    assessment
                } else {
                    assessment.warn()
                },
            );
        }
        UpgradePhase::Migrating | UpgradePhase::Rolling => {}
    }
}

impl Capability for MajorUpgrade {
    fn name(&self) -> &'static str {
        "major-upgrade"
    }

    fn owned_kinds(&self) -> Vec<ApiResource> {
        vec![resource_of::<Job>()]
    }

    fn observe(&self, db: &PostgresDB) -> Vec<Query> {
        let names = Names::of(db);
        vec![
            Query::named::<StatefulSet>(&names.primary),
            Query::named::<Service>(&names.primary),
            Query::labelled::<PersistentVolumeClaim>(),
            Query::labelled::<Pod>(),
            Query::labelled::<Job>(),
        ]
    }

    fn sql_probes(&self, db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
        crate::write_fence::probes(db, observed)
    }

    fn validate(&self, db: &PostgresDB, observed: &Observed) -> Vec<SpecProblem> {
        let wanted = &db.spec.storage.size;
        observed
            .all::<PersistentVolumeClaim>()
            .into_iter()
            .filter(|c| is_ours(c) && c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| {
                let size = c
                    .spec
                    .as_ref()?
                    .resources
                    .as_ref()?
                    .requests
                    .as_ref()?
                    .get("storage")?
                    .0
                    .clone();
                (quantity::compare(wanted, &size) == Some(std::cmp::Ordering::Less)).then(|| {
                    SpecProblem::new(
                        "spec.storage.size",
                        "RefusedStorageShrink",
                        format!(
                            "{wanted} is smaller than PVC {} ({size}); volumes cannot shrink without losing data",
                            c.name_any()
                        ),
                    )
                })
            })
            .take(1)
            .collect()
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        let now = jiff::Timestamp::now();
        let progress = progress(db, observed, now);
        // The Job the status names stays, finished or not, as the evidence
        // the status points to; the core prunes an earlier attempt's Job.
        if let Some((_, major)) = progress.parts() {
            desired.keep::<Job>(&major.job);
        }
        for action in crate::write_fence::actions(db, observed) {
            desired.run_sql(action);
        }
        apply_plan(db, plan(db, observed, &progress, now), desired)
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        // A minor rollout the Upgrade capability has just started owns
        // status.upgrade from now on.
        let previous = db.status.as_ref().and_then(|s| s.upgrade.as_ref());
        if let Some(minor) = status.fields.upgrade.as_ref()
            && minor.major.is_none()
            && Some(minor) != previous
        {
            return;
        }
        let now = status.now.unwrap_or_else(jiff::Timestamp::now);
        let progress = progress(db, observed, now);
        if let Some(up) = &progress.upgrade {
            status.fields.upgrade = Some(up.clone());
        }
        assess_conditions(db, observed, &progress, status);
    }
}
