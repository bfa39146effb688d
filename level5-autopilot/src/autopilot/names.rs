//! The names Level 5 adds to Level 1's (`level1_install::api::Names`).

use kube::ResourceExt;
use shared::api::PostgresDB;

/// The role PostgreSQL replicas log in as to stream WAL.
pub const REPLICATION_USER: &str = "streaming_replica";

/// Names of the objects Level 5 adds for a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaNames {
    /// Read-only Service: the replicas (`<name>-ro`).
    pub read_only: String,
    /// Any-instance Service (`<name>-r`).
    pub any: String,
    /// The ConfigMap recording which instance is the primary, read by each
    /// instance when it starts (`<name>-roles`).
    pub roles: String,
    /// The Secret holding the replication login (`<name>-replication`).
    pub replication: String,
}

impl HaNames {
    /// The names for `db`.
    pub fn of(db: &PostgresDB) -> Self {
        let name = db.name_any();
        Self {
            read_only: format!("{name}-ro"),
            any: format!("{name}-r"),
            roles: format!("{name}-roles"),
            replication: format!("{name}-replication"),
        }
    }
}

/// The physical replication slot the primary keeps for the instance with
/// `ordinal` (`instance_<ordinal>`): slot names allow only `[a-z0-9_]`,
/// and the ordinal is what is unique within the database.
pub fn slot(ordinal: u32) -> String {
    format!("instance_{ordinal}")
}

/// The ordinal of one of `db`'s pods (`<name>-<ordinal>`).
pub fn ordinal_of(db: &PostgresDB, pod: &str) -> Option<u32> {
    pod.strip_prefix(db.name_any().as_str())?
        .strip_prefix('-')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testing::DbBuilder;

    #[test]
    fn a_pod_name_gives_its_ordinal_and_another_database_s_pod_none() {
        let db = DbBuilder::named("orders").build();
        assert_eq!(ordinal_of(&db, "orders-2"), Some(2));
        assert_eq!(ordinal_of(&db, "orders-x"), None);
        assert_eq!(ordinal_of(&db, "ordersx-1"), None);
        assert_eq!(slot(2), "instance_2");
    }
}
