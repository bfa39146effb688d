//! The effective spec: the spec as written, with what the auto pilot
//! decided in its place.
//!
//! Level 5 decides some values itself and records each decision in
//! `status.autopilot`: the instance count ([`autoscaling`]), the volume
//! size ([`autogrow`]), the parameters derived from the resources
//! ([`tuning`]), and the last configuration that ran while a new one is
//! held back ([`guard`]). [`effective_spec`] puts them in a copy of the
//! database; the core hands that copy to every capability
//! (`Level::effective_spec`), so Level 1 renders the derived
//! parameters and the grown size, Level 2 reloads or restarts for them, and
//! the instances module runs the decided count, each as if the spec said
//! so. The spec itself is never edited: a user's change to it is seen at
//! once, and the decisions are data in status a restarted operator reads
//! back.
//!
//! Where it stops: it only reads what was decided; deciding is each
//! module's capability, from what was measured.

use shared::api::PostgresDB;

use super::{autogrow, autoscaling, guard, tuning};

/// The database with the auto pilot's decisions in its spec.
pub fn effective_spec(db: &PostgresDB) -> PostgresDB {
    let mut effective = db.clone();
    if let Some(instances) = autoscaling::effective_instances(db) {
        effective.spec.instances = Some(instances);
    }
    if let Some(size) = autogrow::effective_size(db) {
        effective.spec.storage.size = size;
    }
    let wanted = tuning::effective_parameters(db);
    effective.spec.parameters = guard::effective_parameters(db, wanted);
    effective
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testing::DbBuilder;

    #[test]
    fn a_database_without_autopilot_sections_is_its_own_effective_spec() {
        let db = DbBuilder::named("orders")
            .parameter("work_mem", "8MB")
            .instances(2)
            .build();
        assert_eq!(effective_spec(&db), db);
    }
}
