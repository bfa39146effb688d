//! The operator's own image on the real runtime: `pgdb-operator:<level
//! crate>` runs that level's workspace binary as a node runs the image
//! deploy/ names, with the pod template of deploy/base/operator.yaml (its
//! arguments, POD_NAME and POD_NAMESPACE from the downward API, probes on
//! the named health port, security context), its ServiceAccount's token at
//! `/var/run/secrets/kubernetes.io/serviceaccount` and the API server's
//! HTTPS listener in `KUBERNETES_SERVICE_HOST`/`_PORT`, under the RBAC of
//! deploy/base/rbac.yaml.
//!
//! The operator tests need the level's binary: `cargo build -p
//! level1-install` (they fail saying so without it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope, pinned_kind};
use serde_json::{Value, json};

use super::{create, pod, start, wait_pod, waiting_message, waiting_reason};

/// How long an operator pod, or a database through it, may take.
const OPERATOR_WAIT: Duration = Duration::from_secs(120);
const OPERATOR_NAMESPACE: &str = "pgdb-system";
const LEVEL: &str = "level1-install";

/// The repository's root (the sandbox crate's parent).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The YAML documents of a file under the repository, as JSON.
fn documents(path: &str) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(repo().join(path)).expect("a file of the repository");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Fails, saying how to build it, unless the level's binary is where the
/// runtime looks (the test binary's directory's parent: `target/debug`).
fn require_binary(krate: &str) {
    let exe = std::env::current_exe().expect("the test binary");
    let built = exe
        .ancestors()
        .skip(1)
        .take(2)
        .any(|d| d.join(krate).is_file());
    assert!(
        built,
        "the operator image runs the workspace binary {krate}: build it with `cargo build -p {krate}`"
    );
}

/// Creates an object of any kind the API serves (found by discovery, so a
/// kind a CRD just added is retried until it is served).
async fn create_object(sb: &sandbox::Sandbox, obj: &Value) {
    let api_version = obj["apiVersion"].as_str().expect("an apiVersion");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().expect("a kind"));
    let (resource, caps) = served(sb, &gvk).await;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Cluster => Api::all_with(sb.client(), &resource),
        Scope::Namespaced => Api::namespaced_with(
            sb.client(),
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default"),
            &resource,
        ),
    };
    let object: DynamicObject = serde_json::from_value(obj.clone()).expect("an object");
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("{} {:?} is refused: {e}", gvk.kind, object.metadata.name));
}

/// The API of a kind, once discovery serves it (a kind a CRD just added
/// is waited for).
async fn served(sb: &sandbox::Sandbox, gvk: &GroupVersionKind) -> (ApiResource, ApiCapabilities) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match pinned_kind(&sb.client(), gvk).await {
            Ok(found) => return found,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("{gvk:?} is not served: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Installs what deploy/ installs besides the Deployment: the CRDs, the
/// namespace, the ServiceAccount and its RBAC; returns once PostgresDB is
/// served (an operator started before exits, saying its CRD is missing).
async fn install_crds_and_rbac(sb: &sandbox::Sandbox) {
    for doc in documents("deploy/base/crd.yaml")
        .iter()
        .chain(documents("deploy/base/rbac.yaml").iter())
    {
        create_object(sb, doc).await;
    }
    served(sb, &postgresdb()).await;
}

fn postgresdb() -> GroupVersionKind {
    GroupVersionKind::gvk("pgdb.example.com", "v1", "PostgresDB")
}

/// An operator pod: deploy/base/operator.yaml's pod template, with
/// `image`, named `name`.
fn operator_pod(name: &str, image: &str) -> Pod {
    let deployment = documents("deploy/base/operator.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("deploy/base/operator.yaml holds the Deployment");
    let mut template = deployment["spec"]["template"].clone();
    template["metadata"]["name"] = json!(name);
    template["metadata"]["namespace"] = json!(OPERATOR_NAMESPACE);
    template["spec"]["containers"][0]["image"] = json!(image);
    template["spec"]["terminationGracePeriodSeconds"] = json!(2);
    serde_json::from_value(template).expect("a pod")
}

fn operator_pods(sb: &sandbox::Sandbox) -> Api<Pod> {
    Api::namespaced(sb.client(), OPERATOR_NAMESPACE)
}

/// The pod's status, its Events and its log, for a failure message.
async fn describe(api: &Api<Pod>, name: &str) -> String {
    let pod = api.get_opt(name).await.ok().flatten();
    let namespace = pod
        .as_ref()
        .and_then(|p| p.metadata.namespace.clone())
        .unwrap_or_default();
    let events: Api<Event> = Api::namespaced(api.clone().into_client(), &namespace);
    let events = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .map(|l| {
            l.items
                .iter()
                .map(|e| {
                    format!(
                        "{} {}: {}",
                        e.type_.as_deref().unwrap_or_default(),
                        e.reason.as_deref().unwrap_or_default(),
                        e.message.as_deref().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let log = api
        .logs(name, &Default::default())
        .await
        .unwrap_or_default();
    let others = api
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .map(|p| {
                    format!(
                        "{} {} ready={}{}",
                        p.metadata.name.as_deref().unwrap_or_default(),
                        image_of(p),
                        is_ready(p),
                        if p.metadata.deletion_timestamp.is_some() {
                            " terminating"
                        } else {
                            ""
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    format!(
        "pods of the namespace:\n{others}\nstatus: {}\nevents:\n{events}\nlog:\n{log}",
        serde_json::to_string_pretty(&pod.and_then(|p| p.status)).unwrap_or_default()
    )
}

/// The logs of every container's previous run, from the runtime's work
/// directory (the API does not serve `previous`).
fn previous_logs(sb: &sandbox::Sandbox) -> String {
    let Some(rt) = sb.postgres_runtime() else {
        return String::new();
    };
    let mut out = String::new();
    for pod in std::fs::read_dir(rt.work_dir().join("pods"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for log in std::fs::read_dir(pod.path().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = log.path();
            if path.to_string_lossy().ends_with(".previous.log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                out.push_str(&format!("{}:\n{text}\n", path.display()));
            }
        }
    }
    out
}

/// Waits (at most [`OPERATOR_WAIT`]) until `check` holds for what `read`
/// gives, failing with `what` and the description of pod `pod`.
async fn wait_for<T>(
    api: &Api<Pod>,
    pod: &str,
    what: &str,
    read: impl AsyncFn() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + OPERATOR_WAIT;
    loop {
        if let Some(found) = read().await {
            return found;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out after {OPERATOR_WAIT:?} waiting until {what}\npod {pod}: {}",
                describe(api, pod).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The holder the operator's Lease names, if any.
async fn lease_holder(sb: &sandbox::Sandbox) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(sb.client(), OPERATOR_NAMESPACE);
    leases
        .get_opt("pgdb-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// Whether a holder identity (`<POD_NAME>-<pid>`) is pod `pod`'s.
fn held_by(holder: &str, pod: &str) -> bool {
    holder
        .strip_prefix(pod)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|pid| pid.chars().all(|c| c.is_ascii_digit()))
}

#[tokio::test]
async fn two_operator_pods_of_deploy_s_template_elect_one_leader_that_makes_a_postgresdb_ready_and_hands_over_when_deleted()
 {
    require_binary(LEVEL);
    let sb = start().await;
    install_crds_and_rbac(&sb).await;
    let api = operator_pods(&sb);
    let image = format!("pgdb-operator:{LEVEL}");
    for name in ["operator-a", "operator-b"] {
        api.create(&PostParams::default(), &operator_pod(name, &image))
            .await
            .expect("the operator pod is accepted");
    }
    // Both listen on the health port 8080 (each on its own pod address);
    // the leader is ready, the other one alive and standing by.
    let leader = wait_for(&api, "operator-a", "one operator pod leads", async || {
        let holder = lease_holder(&sb).await?;
        ["operator-a", "operator-b"]
            .into_iter()
            .find(|p| held_by(&holder, p))
    })
    .await;
    let standby = if leader == "operator-a" {
        "operator-b"
    } else {
        "operator-a"
    };
    wait_for(&api, leader, "the leader is ready", async || {
        api.get(leader).await.ok().filter(is_ready)
    })
    .await;
    wait_for(&api, standby, "the other pod stands by", async || {
        let log = api.logs(standby, &Default::default()).await.ok()?;
        log.contains("another replica leads; standing by")
            .then_some(())
    })
    .await;
    let log = api
        .logs(leader, &Default::default())
        .await
        .expect("the leader's log");
    assert!(
        log.contains("acquired the leader lease"),
        "the log shows the operator acting:\n{log}"
    );

    create_object(
        &sb,
        &json!({"apiVersion": "pgdb.example.com/v1", "kind": "PostgresDB",
                "metadata": {"name": "orders", "namespace": "default"},
                "spec": {"version": "15", "storage": {"size": "1Gi"}}}),
    )
    .await;
    let dbs: Api<DynamicObject> = Api::namespaced_with(
        sb.client(),
        "default",
        &ApiResource::from_gvk_with_plural(&postgresdb(), "postgresdbs"),
    );
    wait_for(&api, leader, "PostgresDB orders is Ready", async || {
        let db = dbs.get("orders").await.ok()?;
        let conditions = db.data.pointer("/status/conditions")?.as_array()?.clone();
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    })
    .await;
    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |cs| cs[0].restart_count)
    };
    for name in [leader, standby] {
        let pod = api.get(name).await.expect("the operator pod");
        assert_eq!(
            restarts(&pod),
            0,
            "pod {name} never restarted (its liveness probe reached it)\n{}\nprevious runs' logs:\n{}",
            describe(&api, name).await,
            previous_logs(&sb)
        );
    }

    // The leader goes: the other pod takes the Lease within its 15 s.
    api.delete(leader, &DeleteParams::default())
        .await
        .expect("the leader pod is deleted");
    wait_for(&api, standby, "the other pod takes over", async || {
        let holder = lease_holder(&sb).await?;
        held_by(&holder, standby).then_some(())
    })
    .await;
    wait_for(&api, standby, "the new leader is ready", async || {
        api.get(standby).await.ok().filter(is_ready)
    })
    .await;
    sb.shutdown().await;
}

#[tokio::test]
async fn an_operator_image_whose_binary_is_not_built_cannot_be_pulled_and_the_message_says_how_to_build_it()
 {
    let sb = start().await;
    create(
        &sb,
        pod("unbuilt", "operator", "pgdb-operator:level9-unbuilt"),
    )
    .await;
    let pod = wait_pod(&sb, "unbuilt", "refused an image pull", |p| {
        matches!(
            waiting_reason(p).as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
    })
    .await;
    let message = waiting_message(&pod);
    assert!(
        message.contains("cargo build -p level9-unbuilt"),
        "the message says how to build the binary: {message}"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn a_container_with_run_as_non_root_and_run_as_user_zero_is_not_created_with_the_kubelet_s_message()
 {
    require_binary(LEVEL);
    let sb = start().await;
    let mut root = pod("root", "operator", &format!("pgdb-operator:{LEVEL}"));
    root["spec"]["securityContext"] = json!({"runAsNonRoot": true});
    root["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 0});
    create(&sb, root).await;
    let pod = wait_pod(&sb, "root", "refused", |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let message = waiting_message(&pod);
    assert!(
        message.starts_with("container's runAsUser breaks non-root policy (pod: \"root_default("),
        "{message}"
    );
    assert!(message.ends_with("container: operator)"), "{message}");
    sb.shutdown().await;
}

#[tokio::test]
async fn a_container_whose_mount_path_has_a_dot_dot_component_is_not_created_and_nothing_is_made_on_the_host()
 {
    require_binary(LEVEL);
    let escape = Path::new("/etc/pgdb-sandbox-mount-escape");
    let sb = start().await;
    let mut escaping = pod("escape", "operator", &format!("pgdb-operator:{LEVEL}"));
    escaping["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "scratch", "mountPath": "/run/../etc/pgdb-sandbox-mount-escape"}]);
    escaping["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
    create(&sb, escaping).await;
    let pod = wait_pod(&sb, "escape", "refused", |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let message = waiting_message(&pod);
    let created = escape.exists();
    let _ = std::fs::remove_dir(escape);
    assert!(!created, "{} was created on the host", escape.display());
    assert!(
        message.contains("\"scratch\"")
            && message.contains("\"/run/../etc/pgdb-sandbox-mount-escape\""),
        "the message names the mount and its path: {message}"
    );
    sb.shutdown().await;
}

/// Waits until the pod's last log line is `line`, failing with its log.
async fn wait_last_line(sb: &sandbox::Sandbox, name: &str, line: &str) {
    let api: Api<Pod> = Api::namespaced(sb.client(), "default");
    wait_for(
        &api,
        name,
        &format!("its last log line is {line:?}"),
        async || {
            let log = api.logs(name, &Default::default()).await.ok()?;
            (log.lines().last() == Some(line)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_projected_volume_shows_a_config_map_s_keys_and_the_pod_s_fields_and_follows_the_config_map()
 {
    let sb = start().await;
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
               "data": {"greeting": "hello"}}),
    )
    .await;
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "reader", "labels": {"app": "reader", "tier": "db"}},
               "spec": {"containers": [{"name": "main", "image": "postgres:15",
                   "command": ["sh", "-c", "while true; do echo \"$(cat /etc/podinfo/greeting.txt) $(cat /etc/podinfo/namespace) $(cat /etc/podinfo/labels | tr '\\n' ,)\"; sleep 0.2; done"],
                   "volumeMounts": [{"name": "podinfo", "mountPath": "/etc/podinfo", "readOnly": true}]}],
                   "volumes": [{"name": "podinfo", "projected": {"sources": [
                       {"configMap": {"name": "settings", "items": [{"key": "greeting", "path": "greeting.txt"}]}},
                       {"downwardAPI": {"items": [
                           {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
                           {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}}]}}),
    )
    .await;
    wait_last_line(&sb, "reader", "hello default app=\"reader\",tier=\"db\"").await;
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(sb.client(), "default")
        .patch(
            "settings",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"data": {"greeting": "bonjour"}})),
        )
        .await
        .expect("the configmap is patched");
    wait_last_line(&sb, "reader", "bonjour default app=\"reader\",tier=\"db\"").await;
    sb.shutdown().await;
}

/// The image of a pod's first container.
fn image_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// The operator pods' selector (deploy/'s Deployment's).
fn operator_selector() -> ListParams {
    ListParams::default().labels("app.kubernetes.io/name=pgdb-operator")
}

/// The name of the ready operator pod of `image` that holds the Lease.
async fn leader_with(sb: &sandbox::Sandbox, image: &str) -> Option<String> {
    let holder = lease_holder(sb).await?;
    let pods = operator_pods(sb).list(&operator_selector()).await.ok()?;
    pods.items
        .into_iter()
        .find(|p| {
            held_by(&holder, p.metadata.name.as_deref().unwrap_or_default())
                && image_of(p) == image
                && is_ready(p)
        })
        .and_then(|p| p.metadata.name)
}

/// Whether PostgresDB `default/orders` is Ready.
async fn orders_ready(sb: &sandbox::Sandbox) -> Option<()> {
    let dbs: Api<DynamicObject> = Api::namespaced_with(
        sb.client(),
        "default",
        &ApiResource::from_gvk_with_plural(&postgresdb(), "postgresdbs"),
    );
    let db = dbs.get("orders").await.ok()?;
    let conditions = db.data.pointer("/status/conditions")?.as_array()?.clone();
    conditions
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
        .then_some(())
}

/// deploy/base's CRDs, RBAC and Deployment (Level 1), and a PostgresDB
/// `orders` made Ready through them; gives the leader's name and the
/// database's server pod.
async fn deploy_level1_with_a_database(sb: &sandbox::Sandbox) -> (String, Pod) {
    install_crds_and_rbac(sb).await;
    let deployment = documents("deploy/base/operator.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("deploy/base/operator.yaml holds the Deployment");
    create_object(sb, &deployment).await;
    let api = operator_pods(sb);
    let image = format!("pgdb-operator:{LEVEL}");
    let leader = wait_for(
        &api,
        "pgdb-operator",
        "a ready level 1 pod leads",
        async || leader_with(sb, &image).await,
    )
    .await;
    wait_for(&api, &leader, "two operator pods run", async || {
        let pods = api.list(&operator_selector()).await.ok()?;
        (pods.items.len() == 2).then_some(())
    })
    .await;
    create_object(
        sb,
        &json!({"apiVersion": "pgdb.example.com/v1", "kind": "PostgresDB",
                "metadata": {"name": "orders", "namespace": "default"},
                "spec": {"version": "15", "storage": {"size": "1Gi"}}}),
    )
    .await;
    wait_for(&api, &leader, "PostgresDB orders is Ready", async || {
        orders_ready(sb).await
    })
    .await;
    let server = Api::<Pod>::namespaced(sb.client(), "default")
        .get("orders-0")
        .await
        .expect("the database's pod");
    (leader, server)
}

#[tokio::test]
async fn deploy_s_deployment_runs_two_operator_pods_one_of_which_leads_and_makes_a_postgresdb_ready()
 {
    require_binary(LEVEL);
    let sb = start().await;
    let (leader, _) = deploy_level1_with_a_database(&sb).await;
    let standby = operator_pods(&sb)
        .list(&operator_selector())
        .await
        .expect("the operator pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .find(|n| *n != leader)
        .expect("a second operator pod");
    let api = operator_pods(&sb);
    wait_for(&api, &standby, "the second pod stands by", async || {
        let log = api.logs(&standby, &Default::default()).await.ok()?;
        log.contains("another replica leads; standing by")
            .then_some(())
    })
    .await;
    sb.shutdown().await;
}

#[tokio::test]
async fn deploy_s_deployment_set_to_a_higher_level_s_image_upgrades_the_operator_without_restarting_the_database()
 {
    require_binary(LEVEL);
    require_binary("level2-upgrade");
    let sb = start().await;
    let (leader, server) = deploy_level1_with_a_database(&sb).await;
    let api = operator_pods(&sb);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(sb.client(), OPERATOR_NAMESPACE);
    deployments
        .patch(
            "pgdb-operator",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "replace",
                    "path": "/spec/template/spec/containers/0/image",
                    "value": "pgdb-operator:level2-upgrade"}]))
                .expect("a JSON patch"),
            ),
        )
        .await
        .expect("the Deployment's image is set");
    let new_leader = wait_for(&api, &leader, "a level 2 pod leads", async || {
        leader_with(&sb, "pgdb-operator:level2-upgrade").await
    })
    .await;
    wait_for(&api, &new_leader, "only level 2 pods run", async || {
        let pods = api.list(&operator_selector()).await.ok()?;
        pods.items
            .iter()
            .all(|p| image_of(p) == "pgdb-operator:level2-upgrade")
            .then_some(())
    })
    .await;
    wait_for(
        &api,
        &new_leader,
        "PostgresDB orders is Ready under level 2",
        async || orders_ready(&sb).await,
    )
    .await;
    let after = Api::<Pod>::namespaced(sb.client(), "default")
        .get("orders-0")
        .await
        .expect("the database's pod");
    assert_eq!(
        (after.metadata.uid.clone(), restarts_of(&after)),
        (server.metadata.uid.clone(), restarts_of(&server)),
        "the operator's upgrade restarted no database server"
    );
    sb.shutdown().await;
}

fn restarts_of(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

#[tokio::test]
async fn a_slow_starter_is_not_killed_by_its_liveness_probe_sooner_than_a_kubelet_would_kill_it() {
    let sb = start().await;
    // Up after 4 s; a kubelet probing every 10 s kills it no sooner than
    // 20 s after it started (three failures), the capped period alone
    // would after 2 s.
    let up = json!({"exec": {"command": ["sh", "-c", "test -e \"$HOME/up\""]},
                    "periodSeconds": 10, "failureThreshold": 3});
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "slow"},
               "spec": {"containers": [{"name": "main", "image": "postgres:15",
                   "command": ["sh", "-c", "sleep 4; touch \"$HOME/up\"; echo up; exec sleep 3600"],
                   "livenessProbe": up, "readinessProbe": up}]}}),
    )
    .await;
    let api: Api<Pod> = Api::namespaced(sb.client(), "default");
    let pod = wait_for(&api, "slow", "it is ready", async || {
        api.get("slow").await.ok().filter(is_ready)
    })
    .await;
    assert_eq!(
        restarts_of(&pod),
        0,
        "the liveness probe let it start\n{}",
        describe(&api, "slow").await
    );
    sb.shutdown().await;
}
