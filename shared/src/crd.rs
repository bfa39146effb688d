//! The CustomResourceDefinition, generated from the Rust types.
//!
//! `deploy/base/crd.yaml` is this function's output, committed so it can be
//! applied with kubectl; a test fails when the two differ. The API server
//! only accepts *structural* schemas (every node typed, no references), and
//! [`structural_violations`] checks the generated one the same way.

use kube::CustomResourceExt;
use serde_json::Value;

use crate::api::PostgresDB;
use crate::backup::PostgresDBBackup;
use crate::error::Error;

/// The CRDs as YAML, with a header saying where they come from: the
/// `PostgresDB`, then (served from Level 3 on, harmless below) the
/// `PostgresDBBackup`, as two documents of one stream, so one `kubectl
/// apply -f` installs what every level needs.
pub fn crd_yaml() -> Result<String, Error> {
    let body = serde_yaml::to_string(&PostgresDB::crd()).map_err(Error::Yaml)?;
    let backup = serde_yaml::to_string(&PostgresDBBackup::crd()).map_err(Error::Yaml)?;
    Ok(format!(
        "# Generated from shared/src/api.rs and shared/src/backup.rs by `level1-install crd`; do not edit.\n{body}---\n{backup}"
    ))
}

/// Where a schema is not structural, as JSON paths; empty when it is.
///
/// Checks what the API server checks: every node has a `type` (unless it
/// is `x-kubernetes-int-or-string` or `x-kubernetes-preserve-unknown-fields`),
/// there are no `$ref`s, and `additionalProperties` and `properties` are not
/// used together.
pub fn structural_violations(schema: &Value) -> Vec<String> {
    let mut violations = Vec::new();
    walk(schema, "", &mut violations);
    violations
}

fn walk(node: &Value, path: &str, violations: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        violations.push(format!("{path}: not an object"));
        return;
    };
    let exempt = map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !map.contains_key("type") && !exempt {
        violations.push(format!("{path}: no type"));
    }
    if map.contains_key("$ref") {
        violations.push(format!("{path}: $ref is not allowed"));
    }
    if map.contains_key("properties")
        && map
            .get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(false))
    {
        violations.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    if let Some(properties) = map.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            walk(child, &format!("{path}.{name}"), violations);
        }
    }
    if let Some(items) = map.get("items") {
        walk(items, &format!("{path}[]"), violations);
    }
    if let Some(additional) = map.get("additionalProperties").filter(|a| a.is_object()) {
        walk(additional, &format!("{path}{{}}"), violations);
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        // Inside these, types are optional but must agree; the generated
        // schema does not use them at all, which is what we check.
        if map.contains_key(keyword) {
            violations.push(format!(
                "{path}: {keyword} is not used by this CRD's schema"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        let crd = serde_json::to_value(PostgresDB::crd()).expect("the CRD serialises");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn the_generated_schema_is_structural() {
        assert_eq!(structural_violations(&schema()), Vec::<String>::new());
    }

    #[test]
    fn a_node_without_a_type_is_reported() {
        let bad = serde_json::json!({"type": "object", "properties": {"spec": {"properties": {}}}});
        assert_eq!(structural_violations(&bad), [".spec: no type"]);
    }

    #[test]
    fn the_schema_validates_what_can_be_checked_statically() {
        let spec = &schema()["properties"]["spec"];
        assert!(
            spec["properties"]["version"]["pattern"].is_string(),
            "version has a pattern"
        );
        assert!(
            spec["properties"]["storage"]["properties"]["size"]["pattern"].is_string(),
            "size has a pattern"
        );
        let required: Vec<&str> = spec["required"]
            .as_array()
            .expect("required list")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            required.contains(&"version") && required.contains(&"storage"),
            "{required:?}"
        );
        assert_eq!(
            spec["properties"]["database"]["properties"]["name"]["maxLength"],
            63
        );
    }

    #[test]
    fn fields_carry_their_doc_comments_for_kubectl_explain() {
        let spec = &schema()["properties"]["spec"];
        let description = spec["properties"]["version"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(description.contains("major version"), "{description}");
    }

    #[test]
    fn the_resource_has_the_names_and_columns_users_type() {
        let crd = PostgresDB::crd();
        assert_eq!(crd.spec.group, "pgdb.example.com");
        assert_eq!(crd.spec.names.plural, "postgresdbs");
        assert_eq!(crd.spec.names.short_names, Some(vec!["pgdb".to_string()]));
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Requested",
                "Running",
                "Phase",
                "Ready",
                "Connections",
                "Max",
                "Storage%",
                "Last Backup",
                "Instances",
                "Primary",
                "Age"
            ]
        );
        // The insights' columns show with `kubectl get pgdb -o wide` only.
        let wide: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority == Some(1))
            .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            wide,
            [
                ("Connections", "integer", ".status.insights.connections"),
                ("Max", "integer", ".status.insights.maxConnections"),
                ("Storage%", "integer", ".status.insights.storageUsedPercent"),
                ("Last Backup", "date", ".status.insights.lastBackupTime"),
            ]
        );
    }

    #[test]
    fn the_backup_resource_is_structural_and_has_the_names_and_columns_users_type() {
        let crd = PostgresDBBackup::crd();
        let value = serde_json::to_value(&crd).expect("the CRD serialises");
        let schema = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_eq!(structural_violations(schema), Vec::<String>::new());
        assert_eq!(crd.spec.names.plural, "postgresdbbackups");
        assert_eq!(
            crd.spec.names.short_names,
            Some(vec!["pgbackup".to_string()])
        );
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Database", "Phase", "Size", "Age"]);
    }

    #[test]
    fn the_committed_crd_yaml_holds_both_resources() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/base/crd.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(committed.contains("name: postgresdbs.pgdb.example.com"));
        assert!(committed.contains("name: postgresdbbackups.pgdb.example.com"));
    }

    #[test]
    fn the_committed_crd_yaml_matches_the_rust_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/base/crd.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let generated = crd_yaml().expect("the CRD renders");
        assert!(
            committed == generated,
            "deploy/base/crd.yaml is out of date; regenerate it with `cargo run -p level1-install -- crd > deploy/base/crd.yaml`"
        );
    }
}
