//! The RBAC in `deploy/rbac.yaml` grants what the operator does, no less.
//!
//! The sandbox does not enforce RBAC, but it notes every kind of request
//! each client makes (by its User-Agent). Level 2's binary, the most
//! capable level, runs through a whole life on real PostgreSQL (install,
//! reload, drift repair, a refused change, a major upgrade with its Job and
//! volumes, leader election) and every request it made must be allowed by
//! a rule of the ClusterRole or the leader-election Role. A permission
//! missing there would make the deployed operator fail on a real cluster.
//! Skipped, with a note, when the PostgreSQL 15 or 16 binaries are missing.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{DeleteParams, PostParams};
use sandbox::{PostgresConfig, RequestKind, RuntimeKind, SandboxConfig};
use serde::Deserialize;
use serde_json::json;
use shared::api::{PostgresDB, UpgradePhase};
use tests::builders::DbBuilder;
use tests::harness::TestCluster;
use tests::levels::LevelId;

/// A rule of a Role or ClusterRole.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
}

impl Rule {
    fn allows(&self, request: &RequestKind) -> bool {
        let has = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        has(&self.api_groups, &request.group)
            && has(&self.resources, &request.resource)
            && has(&self.verbs, &request.verb)
    }
}

/// The rules of every Role and ClusterRole in `deploy/rbac.yaml`.
fn deployed_rules() -> Vec<Rule> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rbac.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/rbac.yaml is readable");
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde_yaml::Value::deserialize(document).expect("valid YAML"))
        .filter(|doc| {
            matches!(
                doc.get("kind").and_then(|k| k.as_str()),
                Some("Role" | "ClusterRole")
            )
        })
        .flat_map(|doc| {
            let rules = doc.get("rules").cloned().unwrap_or_default();
            serde_yaml::from_value::<Vec<Rule>>(rules).expect("rules of a role")
        })
        .collect()
}

#[test]
fn the_rule_matcher_needs_group_resource_and_verb_to_match() {
    let rule = Rule {
        api_groups: vec!["apps".into()],
        resources: vec!["statefulsets".into()],
        verbs: vec!["get".into(), "patch".into()],
    };
    let request = |verb: &str, group: &str, resource: &str| RequestKind {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
    };
    assert!(rule.allows(&request("patch", "apps", "statefulsets")));
    assert!(!rule.allows(&request("delete", "apps", "statefulsets")));
    assert!(!rule.allows(&request("patch", "", "statefulsets")));
    assert!(!rule.allows(&request("patch", "apps", "statefulsets/status")));
    assert!(!deployed_rules().is_empty(), "deploy/rbac.yaml has rules");
}

#[tokio::test]
async fn level2_uses_only_what_the_deployed_rbac_grants() {
    let postgres = PostgresConfig::default();
    for major in [15, 16] {
        if let Err(missing) = postgres.binaries.server(major) {
            eprintln!("skipped: {missing}");
            return;
        }
    }
    let config = SandboxConfig {
        runtime_kind: RuntimeKind::Postgres,
        postgres,
        ..Default::default()
    };
    let cluster = match TestCluster::sandbox(config).await {
        Ok(cluster) => cluster,
        Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
    };
    let namespace = cluster.namespace().to_string();
    // As deploy/operator.yaml runs it: with leader election. Inside a
    // cluster it reaches the databases directly, as here.
    let operator = cluster
        .run_binary_with(
            LevelId::Two,
            &[
                "--leader-elect",
                "--lease-namespace",
                &namespace,
                "--database-access",
                "direct",
            ],
        )
        .expect("the level2-upgrade binary starts");

    let mut db = DbBuilder::named("orders").version("15").build();
    db.spec.parameters.insert("work_mem".into(), "4MB".into());
    cluster
        .api::<PostgresDB>()
        .create(&PostParams::default(), &db)
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_for("orders", "Ready at 15", tests::scenarios::is_settled)
        .await;

    // A reload, a repaired deletion, and a refused change.
    cluster
        .patch_spec("orders", json!({"parameters": {"work_mem": "8MB"}}))
        .await
        .expect("patched");
    cluster
        .wait_for("orders", "work_mem applied", |db| {
            tests::scenarios::is_settled(db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.configuration.as_ref())
                    .is_some_and(|c| c.applied)
        })
        .await;
    cluster
        .api::<StatefulSet>()
        .delete("orders", &DeleteParams::default())
        .await
        .expect("deletes the StatefulSet");
    cluster
        .wait_for_object::<StatefulSet>("orders", "the StatefulSet is back", |s| s.is_some())
        .await;
    cluster
        .wait_for(
            "orders",
            "Ready after the repair",
            tests::scenarios::is_settled,
        )
        .await;
    cluster
        .patch_spec("orders", json!({"storage": {"size": "512Mi"}}))
        .await
        .expect("patched");
    cluster
        .wait_for("orders", "the storage shrink refused", |db| {
            db.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "RefusedStorageShrink")
            })
        })
        .await;
    cluster
        .patch_spec("orders", json!({"storage": {"size": "1Gi"}}))
        .await
        .expect("patched");

    // A major upgrade: Job, volumes, fence, switch.
    cluster
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("patched");
    cluster
        .wait_for("orders", "upgraded to 16", |db| {
            db.status.as_ref().is_some_and(|s| {
                s.upgrade
                    .as_ref()
                    .is_some_and(|u| u.phase == UpgradePhase::Complete)
                    && s.current_version.as_deref() == Some("16")
            })
        })
        .await;
    operator.stop().await;

    let sandbox = cluster.sandbox_handle().expect("a sandbox cluster");
    let used = sandbox.counters().requests_from("level2-upgrade/");
    let rules = deployed_rules();
    let denied: BTreeSet<String> = used
        .iter()
        .filter(|request| !rules.iter().any(|rule| rule.allows(request)))
        .map(|r| format!("{} {}/{}", r.verb, r.group, r.resource))
        .collect();
    eprintln!(
        "level2-upgrade made {} kinds of request: {:?}",
        used.len(),
        used.iter()
            .map(|r| format!("{} {}/{}", r.verb, r.group, r.resource))
            .collect::<Vec<_>>()
    );
    assert!(
        used.iter()
            .any(|r| r.resource == "jobs" && r.verb == "patch")
            && used.iter().any(|r| r.resource == "leases"),
        "the operator's requests were noted by its User-Agent: {used:?}"
    );
    assert!(
        denied.is_empty(),
        "deploy/rbac.yaml does not grant: {denied:?}"
    );
    cluster.finish().await;
}
