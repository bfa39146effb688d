//! Builders for the objects tests create.

use std::collections::BTreeMap;

use shared::api::{PostgresDB, PostgresDBSpec, ResourcesSpec, StorageSpec};

/// Builds a `PostgresDB`: version 16.4, 1Gi, the default database.
pub struct DbBuilder(PostgresDB);

impl DbBuilder {
    /// A database named `name`.
    pub fn named(name: &str) -> Self {
        let spec = PostgresDBSpec {
            version: "16.4".into(),
            image: None,
            storage: StorageSpec {
                size: "1Gi".into(),
                storage_class_name: None,
            },
            resources: ResourcesSpec::default_for_database(),
            database: Default::default(),
            parameters: BTreeMap::new(),
            paused: false,
            upgrade: None,
        };
        Self(PostgresDB::new(name, spec))
    }

    /// Sets `spec.version`.
    pub fn version(mut self, version: &str) -> Self {
        self.0.spec.version = version.into();
        self
    }

    /// Sets `spec.storage.size`.
    pub fn storage(mut self, size: &str) -> Self {
        self.0.spec.storage.size = size.into();
        self
    }

    /// Sets a postgresql.conf parameter.
    pub fn parameter(mut self, name: &str, value: &str) -> Self {
        self.0.spec.parameters.insert(name.into(), value.into());
        self
    }

    /// The object.
    pub fn build(self) -> PostgresDB {
        self.0
    }
}
