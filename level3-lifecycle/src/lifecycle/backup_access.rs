//! What a backup Job needs to exist before it runs: a role to log in as,
//! its password, and (for the volume destination) the backup volume.
//!
//! Backups never log in as the superuser. A dedicated role,
//! [`BACKUP_ROLE`], logs in with a password kept in the Secret
//! [`backup_credentials_secret`] and reads everything through
//! `pg_read_all_data` (PostgreSQL 14 and later) with `BYPASSRLS` (pg_dump
//! refuses to dump a table under row-level security otherwise) and
//! `CONNECT` on every database. It writes nothing.
//!
//! The role is checked by logging in as it ([`PROBE`]): a login that
//! fails (no role yet, or a password that differs from the Secret's) or a
//! missing privilege runs [`SETUP_STATEMENT`] as the superuser. The
//! password never reaches the server: its SCRAM-SHA-256 verifier
//! ([`verifier`], computed here with a random salt, as psql's `\password`
//! does) is a bound parameter of `set_config`
//! (`shared::sql::SessionSettings`), which the statement reads with
//! `current_setting`. So neither SQL text nor what crosses the wire (or a
//! trace of it) holds the password.
//!
//! The backup volume ([`backup_volume`]) is a PVC that nothing owns and
//! the core never prunes (it carries `pgdb.example.com/volume: backup`):
//! deleting the database keeps its backups, as Level 2 keeps its
//! pre-upgrade dump. Only `spec.deletionPolicy: Delete` deletes it.
//!
//! All of this exists only when the database uses backups: `spec.backup`
//! is set, a `PostgresDBBackup` of it exists (one created by hand), or
//! `spec.deletionPolicy` is BackupThenDelete. The last is asked for ahead:
//! the final backup is taken while the database is being deleted, when
//! the reconcile runs only the finalize steps (no object of this module is
//! created and no role set up then), so all must be ready before.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{ApiResource, ObjectMeta};
use level1_install::api::Names;
use level1_install::install::generate_password;
use level2_upgrade::logins;
use shared::api::PostgresDB;
use shared::backup::{DeletionPolicy, PostgresDBBackup};
use shared::capability::{Capability, Desired, Observed, Query};
use shared::error::Error;
use shared::ext::PvcExt;
use shared::keys::VOLUME_LABEL;
use shared::sql::{SessionSettings, SqlAction, SqlAnswer, SqlProbe};
use shared::volumes::{VolumeRole, claim_spec};

use super::names::{BACKUP_ROLE, backup_credentials_secret, backup_volume};

/// Name of the probe logging in as the backup role.
pub const PROBE: &str = "backup_role";

/// Asked as the backup role: whether it holds `pg_read_all_data` (true
/// where the major has no such role), how many databases it cannot
/// connect to, and whether it bypasses row-level security.
pub const PROBE_STATEMENT: &str = "SELECT \
     (CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pg_read_all_data') \
           THEN pg_catalog.pg_has_role('pg_read_all_data', 'MEMBER') ELSE true END)::text, \
     (SELECT count(*) FROM pg_catalog.pg_database \
       WHERE datallowconn AND NOT pg_catalog.has_database_privilege(oid, 'CONNECT'))::text, \
     (SELECT rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = current_user)::text";

/// The session setting carrying the password's SCRAM verifier to
/// [`SETUP_STATEMENT`].
pub const PASSWORD_SETTING: &str = "pgdb.backup_verifier";

/// Run as the superuser: creates the backup role or brings it back to
/// what backups need (login, read-only, the Secret's password, read
/// access to all data, CONNECT on every database).
pub const SETUP_STATEMENT: &str = r#"DO $setup$
DECLARE
  password text := current_setting('pgdb.backup_verifier');
  db record;
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgdb_backup') THEN
    CREATE ROLE pgdb_backup;
  END IF;
  EXECUTE format('ALTER ROLE pgdb_backup WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS PASSWORD %L', password);
  IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pg_read_all_data') THEN
    GRANT pg_read_all_data TO pgdb_backup;
  END IF;
  FOR db IN SELECT datname FROM pg_catalog.pg_database WHERE datallowconn LOOP
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO pgdb_backup', db.datname);
  END LOOP;
END
$setup$"#;

/// Event reason when [`SETUP_STATEMENT`] ran.
pub const ROLE_READY: &str = "BackupRoleReady";

/// The backup-access capability.
pub struct BackupAccess;

/// Whether the database uses backups: `spec.backup`, a
/// `PostgresDBBackup` of it (labelled with its instance label), or a
/// deletion policy that takes a final backup.
pub fn uses_backups(db: &PostgresDB, observed: &Observed) -> bool {
    db.spec.backup.is_some()
        || db.spec.deletion_policy == Some(DeletionPolicy::BackupThenDelete)
        || observed
            .all::<PostgresDBBackup>()
            .iter()
            .any(|b| b.spec.database == db.name_any())
}

/// Whether backups of `db` go to the backup volume (the default).
pub fn volume_destination(db: &PostgresDB) -> bool {
    db.spec
        .backup
        .as_ref()
        .is_none_or(|b| b.destination.s3.is_none())
}

/// The backup role's credentials: the existing password is kept (the
/// role was set up with it).
pub fn backup_secret(
    db: &PostgresDB,
    existing: Option<&Secret>,
    new_password: impl FnOnce() -> String,
) -> Secret {
    let password = secret_password(existing).unwrap_or_else(new_password);
    let data = BTreeMap::from([
        ("username".to_string(), BACKUP_ROLE.to_string()),
        ("password".to_string(), password),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(backup_credentials_secret(&db.name_any())),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The SCRAM-SHA-256 verifier of `password`, as the server stores it
/// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`): `ALTER
/// ROLE ... PASSWORD` given one stores it as it is.
pub fn verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

fn secret_password(secret: Option<&Secret>) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get("password")?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|p| !p.is_empty())
}

/// The backup volume: `spec.backup.destination.volume`'s size and class,
/// else the data volume's size and the cluster's default class. A live
/// claim keeps its class (a claim cannot change it) and a larger request
/// (a claim cannot shrink).
pub fn backup_claim(
    db: &PostgresDB,
    live: Option<&PersistentVolumeClaim>,
) -> PersistentVolumeClaim {
    let volume = db
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.destination.volume.clone())
        .unwrap_or_default();
    let wanted = volume.size.unwrap_or_else(|| db.spec.storage.size.clone());
    let size = match live.and_then(requested_size) {
        Some(live_size)
            if shared::quantity::compare(&live_size, &wanted)
                == Some(std::cmp::Ordering::Greater) =>
        {
            live_size
        }
        _ => wanted,
    };
    let class = match live {
        Some(claim) => claim.storage_class(),
        None => volume.storage_class_name,
    };
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(backup_volume(&db.name_any())),
            labels: Some(BTreeMap::from([(
                VOLUME_LABEL.to_string(),
                VolumeRole::Backup.label().to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(claim_spec(&size, class)),
        ..Default::default()
    }
}

fn requested_size(claim: &PersistentVolumeClaim) -> Option<String> {
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    requests.get("storage").map(|Quantity(q)| q.clone())
}

/// What the probe's answer says about the role: `None` when the server was
/// not asked (nothing to decide), `Some(true)` when the role is as backups
/// need it.
pub fn role_ready(answer: Option<&SqlAnswer>) -> Option<bool> {
    let rows = match answer? {
        Err(_) => return Some(false),
        Ok(rows) => rows,
    };
    let row = rows.first()?;
    let text = |i: usize| row.get(i).and_then(|v| v.as_deref());
    Some(text(0) == Some("true") && text(1) == Some("0") && text(2) == Some("true"))
}

impl Capability for BackupAccess {
    fn name(&self) -> &'static str {
        "backup-access"
    }

    fn owned_kinds(&self) -> Vec<ApiResource> {
        vec![ApiResource::erase::<Secret>(&())]
    }

    fn observe(&self, db: &PostgresDB) -> Vec<Query> {
        let name = db.name_any();
        vec![
            Query::named::<Secret>(backup_credentials_secret(&name)),
            Query::named::<Secret>(Names::of(db).superuser),
            Query::named::<PersistentVolumeClaim>(backup_volume(&name)),
            Query::labelled::<Pod>(),
            Query::labelled::<PostgresDBBackup>(),
        ]
    }

    fn sql_probes(&self, db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
        if !uses_backups(db, observed) {
            return Vec::new();
        }
        let secret = observed.get::<Secret>(&backup_credentials_secret(&db.name_any()));
        let (Some(password), Some(mut target)) = (
            secret_password(secret.as_ref()),
            logins::primary_target(db, observed),
        ) else {
            return Vec::new();
        };
        target.user = BACKUP_ROLE.into();
        target.password = password;
        vec![SqlProbe {
            name: PROBE.into(),
            target,
            statement: PROBE_STATEMENT,
        }]
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        if !uses_backups(db, observed) {
            return Ok(());
        }
        let name = db.name_any();
        let existing = observed.get::<Secret>(&backup_credentials_secret(&name));
        desired.add(&backup_secret(db, existing.as_ref(), generate_password))?;
        if volume_destination(db) {
            let live = observed.get::<PersistentVolumeClaim>(&backup_volume(&name));
            desired.add_unowned(&backup_claim(db, live.as_ref()))?;
        }
        // The role is set up with the password the Secret already holds:
        // a Secret created in this reconcile is set up in the next one.
        if role_ready(observed.sql(PROBE)) == Some(false)
            && let Some(password) = secret_password(existing.as_ref())
            && let Some(target) = logins::primary_target(db, observed)
        {
            desired.run_sql(SqlAction {
                target,
                statement: SETUP_STATEMENT,
                reason: ROLE_READY.into(),
                message: format!(
                    "set up role {BACKUP_ROLE} for backups (LOGIN, pg_read_all_data, BYPASSRLS, CONNECT on every database) with the password in Secret {}",
                    backup_credentials_secret(&name)
                ),
                settings: SessionSettings(vec![(PASSWORD_SETTING, verifier(&password))]),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::backup::{BackupDestination, BackupSpec, BackupVolume, S3Destination};
    use shared::testing::{DbBuilder, ObservedBuilder, PodBuilder, login_secret};

    fn with_backup(spec: Option<BackupSpec>) -> PostgresDB {
        let mut db = DbBuilder::named("orders").version("16").build();
        db.spec.backup = spec;
        db
    }

    fn running_server() -> ObservedBuilder {
        ObservedBuilder::new()
            .with(&login_secret("orders-superuser", "postgres", "super"))
            .with(
                &PodBuilder::named("orders-0")
                    .owned_by::<k8s_openapi::api::apps::v1::StatefulSet>("orders")
                    .phase("Running")
                    .ip("10.0.0.7")
                    .build(),
            )
    }

    fn desired(db: &PostgresDB, observed: &Observed) -> Desired {
        let mut desired = Desired::default();
        BackupAccess
            .desire(db, observed, shared::testing::at(0), &mut desired)
            .expect("desires");
        desired
    }

    fn names(desired: &Desired) -> Vec<String> {
        desired
            .objects()
            .iter()
            .map(|o| format!("{}/{}", o.resource.kind, o.name))
            .collect()
    }

    #[test]
    fn a_database_to_back_up_before_deleting_gets_the_credentials_and_the_volume_beforehand() {
        let db = DbBuilder::named("orders")
            .version("16")
            .deletion_policy(DeletionPolicy::BackupThenDelete)
            .build();
        assert_eq!(
            names(&desired(&db, &running_server().build())),
            [
                "Secret/orders-backup-credentials",
                "PersistentVolumeClaim/orders-backups"
            ]
        );
    }

    #[test]
    fn a_database_without_backups_gets_nothing() {
        let db = with_backup(None);
        let observed = running_server().build();
        assert!(desired(&db, &observed).objects().is_empty());
        assert!(BackupAccess.sql_probes(&db, &observed).is_empty());
    }

    #[test]
    fn spec_backup_brings_the_credentials_and_an_unowned_backup_volume_of_the_data_size() {
        let db = with_backup(Some(BackupSpec::default()));
        let desired = desired(&db, &running_server().build());
        assert_eq!(
            names(&desired),
            [
                "Secret/orders-backup-credentials",
                "PersistentVolumeClaim/orders-backups"
            ]
        );
        let claim = &desired.objects()[1];
        assert!(!claim.owned, "deleting the database keeps its backups");
        assert_eq!(claim.value["metadata"]["labels"][VOLUME_LABEL], "backup");
        assert_eq!(
            claim.value["spec"]["resources"]["requests"]["storage"],
            db.spec.storage.size.as_str()
        );
        assert_eq!(
            desired.objects()[0].value["data"]["username"],
            serde_json::to_value(ByteString(BACKUP_ROLE.as_bytes().to_vec())).expect("encodes")
        );
    }

    #[test]
    fn backup_then_delete_prepares_the_final_backup_s_access_while_the_database_lives() {
        let mut db = with_backup(None);
        db.spec.deletion_policy = Some(DeletionPolicy::BackupThenDelete);
        let observed = running_server().build();
        assert_eq!(
            names(&desired(&db, &observed)),
            [
                "Secret/orders-backup-credentials",
                "PersistentVolumeClaim/orders-backups"
            ]
        );
        db.spec.deletion_policy = Some(DeletionPolicy::Delete);
        assert!(desired(&db, &observed).objects().is_empty());
    }

    #[test]
    fn a_hand_made_backup_of_the_database_is_enough_to_need_access() {
        let db = with_backup(None);
        let mut backup = PostgresDBBackup::new(
            "by-hand",
            shared::backup::PostgresDBBackupSpec {
                database: "orders".into(),
            },
        );
        backup.metadata.namespace = Some("default".into());
        let observed = running_server().with(&backup).build();
        assert_eq!(desired(&db, &observed).objects().len(), 2);
    }

    #[test]
    fn an_s3_destination_needs_no_backup_volume_and_a_given_volume_size_is_used() {
        let s3 = with_backup(Some(BackupSpec {
            destination: BackupDestination {
                s3: Some(S3Destination {
                    endpoint: "http://s3:9000".into(),
                    bucket: "backups".into(),
                    credentials_secret: "s3".into(),
                    ..Default::default()
                }),
                volume: None,
            },
            ..Default::default()
        }));
        assert_eq!(
            names(&desired(&s3, &running_server().build())),
            ["Secret/orders-backup-credentials"]
        );
        let sized = with_backup(Some(BackupSpec {
            destination: BackupDestination {
                volume: Some(BackupVolume {
                    size: Some("5Gi".into()),
                    storage_class_name: Some("fast".into()),
                }),
                s3: None,
            },
            ..Default::default()
        }));
        let claim = backup_claim(&sized, None);
        let spec = claim.spec.expect("spec");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.resources.and_then(|r| r.requests).expect("requests")["storage"],
            Quantity("5Gi".into())
        );
    }

    #[test]
    fn the_password_is_kept_and_only_its_scram_verifier_reaches_the_setup_as_a_setting() {
        let db = with_backup(Some(BackupSpec::default()));
        let observed = running_server()
            .with(&login_secret(
                "orders-backup-credentials",
                BACKUP_ROLE,
                "kept-pw",
            ))
            .sql(
                PROBE,
                Err("password authentication failed for user \"pgdb_backup\"".into()),
            )
            .build();
        let probes = BackupAccess.sql_probes(&db, &observed);
        assert_eq!(probes.len(), 1);
        assert_eq!(probes[0].target.user, BACKUP_ROLE);
        assert_eq!(probes[0].target.password, "kept-pw");
        let desired = desired(&db, &observed);
        assert_eq!(
            desired.objects()[0].value["data"]["password"],
            serde_json::to_value(ByteString(b"kept-pw".to_vec())).expect("encodes")
        );
        let sql = desired.sql();
        assert_eq!(sql.len(), 1);
        assert_eq!(sql[0].target.user, "postgres");
        assert_eq!(sql[0].statement, SETUP_STATEMENT);
        assert!(!sql[0].statement.contains("kept-pw"));
        // Only the password's SCRAM verifier crosses the wire.
        let SessionSettings(settings) = &sql[0].settings;
        assert_eq!(settings.len(), 1);
        assert_eq!(settings[0].0, PASSWORD_SETTING);
        assert!(
            settings[0].1.starts_with("SCRAM-SHA-256$4096:"),
            "{settings:?}"
        );
        assert!(!format!("{:?}", sql[0]).contains("kept-pw"));
    }

    #[test]
    fn a_role_as_backups_need_it_is_left_alone_and_a_missing_privilege_is_granted() {
        let db = with_backup(Some(BackupSpec::default()));
        let answer = |read_all: &str, no_connect: &str| {
            running_server()
                .with(&login_secret(
                    "orders-backup-credentials",
                    BACKUP_ROLE,
                    "pw",
                ))
                .sql(
                    PROBE,
                    Ok(vec![vec![
                        Some(read_all.into()),
                        Some(no_connect.into()),
                        Some("true".into()),
                    ]]),
                )
                .build()
        };
        assert!(desired(&db, &answer("true", "0")).sql().is_empty());
        assert_eq!(desired(&db, &answer("false", "0")).sql().len(), 1);
        assert_eq!(desired(&db, &answer("true", "2")).sql().len(), 1);
        // Not asked (no server yet): nothing to decide.
        let unasked = running_server()
            .with(&login_secret(
                "orders-backup-credentials",
                BACKUP_ROLE,
                "pw",
            ))
            .build();
        assert!(desired(&db, &unasked).sql().is_empty());
    }

    #[test]
    fn a_larger_live_backup_volume_is_not_shrunk() {
        let db = with_backup(Some(BackupSpec::default()));
        let mut live = backup_claim(&db, None);
        if let Some(spec) = live.spec.as_mut() {
            spec.resources = Some(shared::volumes::storage_request("100Gi"));
            spec.storage_class_name = Some("standard".into());
        }
        let claim = backup_claim(&db, Some(&live));
        let spec = claim.spec.expect("spec");
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(
            spec.resources.and_then(|r| r.requests).expect("requests")["storage"],
            Quantity("100Gi".into())
        );
    }
}
