//! Level 2's fixtures for every unit test of the crate, and the tests of
//! the level as a whole: that it is Level 1 plus its own capabilities, and
//! that at rest it writes nothing.

use k8s_openapi::api::apps::v1::StatefulSet;
use level1_install::api::PgVersion;
use shared::api::{PostgresDB, UpgradeSpec};
use shared::capability::Observed;
use shared::keys::CONTROLLER_REVISION_LABEL;
use shared::sql::SqlAnswer;
use shared::testing::{
    DbBuilder, ObservedBuilder, PodBuilder, assert_reads_what_it_applies, at, login_secret,
};

pub(crate) fn v(text: &str) -> PgVersion {
    PgVersion::parse(text).expect("a valid version")
}

/// A database asking for `wanted` while `running` runs, with a
/// `spec.upgrade` whose health timeout is 60s.
pub(crate) fn db(wanted: &str, running: Option<&str>) -> PostgresDB {
    DbBuilder::named("orders")
        .version(wanted)
        .upgrade(Some(UpgradeSpec {
            health_timeout_seconds: 60,
            ..Default::default()
        }))
        .running(running)
        .build()
}

/// What the reconcile reads when pod `orders-0` runs and, if `reports` is
/// given, answers `SHOW server_version` with it (`Err` for no answer).
pub(crate) fn observed_pod(reports: Option<Result<&str, &str>>) -> Observed {
    let pod = PodBuilder::named("orders-0")
        .label(CONTROLLER_REVISION_LABEL, "orders-new")
        .owned_by::<StatefulSet>("orders")
        .phase("Running")
        .ip("10.0.0.7")
        .ready(true)
        .build();
    let mut observed = ObservedBuilder::new().with(&pod).with(&login_secret(
        "orders-superuser",
        "postgres",
        "secret",
    ));
    if let Some(reports) = reports {
        let answer: SqlAnswer = reports
            .map(|v| vec![vec![Some(v.to_string())]])
            .map_err(String::from);
        observed = observed.sql("server_version/orders-0", answer);
    }
    observed.build()
}

#[test]
fn level2_is_level1_plus_the_capabilities_of_its_own_modules() {
    let level1: Vec<&str> = level1_install::api::capabilities()
        .iter()
        .map(|c| c.name())
        .collect();
    let level2: Vec<&str> = crate::capabilities().iter().map(|c| c.name()).collect();
    assert_eq!(
        level2[..level1.len()],
        level1[..],
        "Level 1's come first, unchanged"
    );
    assert_eq!(level2[level1.len()..], ["upgrade", "reload"]);
    assert!(
        crate::level()
            .unimplemented_sections(&db("16.4", None))
            .is_empty()
    );
    assert_eq!(
        level1_install::level().unimplemented_sections(&db("16.4", None)),
        ["upgrade"]
    );
}

#[test]
fn every_object_level2_applies_is_one_it_reads_first() {
    let capabilities = crate::capabilities();
    for database in [
        db("16.4", None),
        db("16.4", Some("16.2")),
        db("16.4", Some("16.4")),
    ] {
        assert_reads_what_it_applies(&capabilities, &database, &observed_pod(None), at(1_000));
    }
}

#[test]
fn the_upgrade_capability_reads_what_a_major_upgrade_applies() {
    // Every phase of a major upgrade, with its volumes and Job.
    let observed = crate::upgrade::major::tests::every_volume_and_the_job();
    for database in crate::upgrade::major::tests::every_phase() {
        assert_reads_what_it_applies(&crate::capabilities(), &database, &observed, at(2_000_000));
    }
}
