//! Names and labels of the objects the operator creates for a `PostgresDB`.
//!
//! Every child is named after its database and carries the same labels, so
//! the operator can find what it owns with one label selector and watch only
//! those objects, whatever else lives in the cluster. Kubernetes limits names
//! and label values, and a StatefulSet adds its own suffixes: the longest
//! database name that works everywhere is checked here, once.

use std::collections::BTreeMap;

use crate::keys::{APP_INSTANCE_LABEL, APP_NAME_LABEL, INSTANCE_LABEL, MANAGED_BY_LABEL};

/// The value of `app.kubernetes.io/name` on every child.
pub const APP_NAME: &str = "postgresdb";
/// The value of `app.kubernetes.io/managed-by` on every child: the same for
/// all levels, so one level can take over what another created.
pub const MANAGED_BY: &str = "pgdb-operator";

/// The label selector matching every object any level manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// The label selector matching the children of one database.
pub fn instance_selector(db_name: &str) -> String {
    format!("{INSTANCE_LABEL}={db_name}")
}

/// Labels carried by every child of the database `db_name`.
pub fn common_labels(db_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_NAME_LABEL.to_string(), APP_NAME.to_string()),
        (APP_INSTANCE_LABEL.to_string(), db_name.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (INSTANCE_LABEL.to_string(), db_name.to_string()),
    ])
}

/// The longest `PostgresDB` name the derived objects can carry: a
/// StatefulSet's pods get a `controller-revision-hash` label of the
/// StatefulSet's name plus `-` and a hash of up to 10 characters, and label
/// values stop at 63 characters.
pub const MAX_NAME_LENGTH: usize = 52;

/// Why a `PostgresDB` name cannot be used for its children, if it cannot.
///
/// Services need a DNS-1035 label (lowercase letters, digits and `-`,
/// starting with a letter), a stricter rule than the DNS-1123 subdomain the
/// API server accepts for a custom resource's name.
pub fn name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_NAME_LENGTH {
        return Some(format!(
            "name is {} characters long; at most {MAX_NAME_LENGTH} fit the names and 63-character label values derived from it",
            name.len()
        ));
    }
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let starts_with_letter = name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid_chars || !starts_with_letter || name.ends_with('-') {
        return Some(format!(
            "{name:?} is not a DNS-1035 label (lowercase letters, digits and '-', starting with a letter and ending with a letter or digit), which Service names require"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_lowercase_name_is_accepted() {
        assert_eq!(name_problem("orders-db"), None);
        assert_eq!(name_problem(&"a".repeat(MAX_NAME_LENGTH)), None);
    }

    #[test]
    fn a_name_longer_than_the_derived_names_allow_is_refused_with_its_length() {
        let problem = name_problem(&"a".repeat(MAX_NAME_LENGTH + 1));
        assert!(problem.is_some_and(|p| p.contains("53 characters")));
    }

    #[test]
    fn names_a_service_cannot_carry_are_refused() {
        for bad in ["db.one", "1db", "db-", "Db"] {
            assert!(name_problem(bad).is_some(), "{bad} accepted");
        }
    }

    #[test]
    fn every_child_carries_the_instance_and_managed_by_labels() {
        let labels = common_labels("orders");
        assert_eq!(
            labels.get(INSTANCE_LABEL).map(String::as_str),
            Some("orders")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
    }
}
