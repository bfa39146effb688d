//! Authorization as kube-apiserver's RBAC authorizer does it, seen by a
//! ServiceAccount's client: what its Role and ClusterRole bindings allow,
//! upstream's exact 403 for the rest, resourceNames, a binding to a missing
//! role (grants nothing), the default discovery and self-review roles,
//! impersonation and SubjectAccessReview.

use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use sandbox::Sandbox;
use serde_json::{Value, json};

use crate::common::{api_err, create, named, sandbox};

const SA_USER: &str = "system:serviceaccount:default:app";

/// A Role (in `default`) or ClusterRole named `name` with `rules`.
fn role<K: serde::de::DeserializeOwned>(name: &str, rules: Value) -> K {
    serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).expect("a role")
}

/// A (Cluster)RoleBinding of the ServiceAccount `default/app` to `role_kind`
/// `role_name`.
fn binding<K: serde::de::DeserializeOwned>(name: &str, role_kind: &str, role_name: &str) -> K {
    binding_to(
        name,
        role_kind,
        role_name,
        json!({"kind": "ServiceAccount", "name": "app", "namespace": "default"}),
    )
}

/// A (Cluster)RoleBinding of `subject` to `role_kind` `role_name`.
fn binding_to<K: serde::de::DeserializeOwned>(
    name: &str,
    role_kind: &str,
    role_name: &str,
    subject: Value,
) -> K {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": [subject],
    }))
    .expect("a binding")
}

/// Creates, in `namespace`, the Role `role_name` with `rules` and the
/// RoleBinding `binding_name` of the ServiceAccount `default/app` to it.
async fn grant(sb: &Sandbox, namespace: &str, binding_name: &str, role_name: &str, rules: Value) {
    create(
        &Api::<Role>::namespaced(sb.client(), namespace),
        &role(role_name, rules),
    )
    .await;
    create(
        &Api::<RoleBinding>::namespaced(sb.client(), namespace),
        &binding(binding_name, "Role", role_name),
    )
    .await;
}

/// The ServiceAccount `default/app` and a client with its token.
async fn app_client(sb: &Sandbox) -> kube::Client {
    create(
        &Api::<ServiceAccount>::default_namespaced(sb.client()),
        &named("app"),
    )
    .await;
    client(sb, &app_token(sb), None)
}

/// A token of the ServiceAccount `default/app`.
fn app_token(sb: &Sandbox) -> String {
    sandbox::auth::service_account_token(sb.cluster(), "default", "app", None, 3600, &[])
        .expect("a token")
}

/// A client sending `token`, and `Impersonate-User: <user>` when
/// `impersonate` names one.
fn client(sb: &Sandbox, token: &str, impersonate: Option<&str>) -> kube::Client {
    let mut config = kube::Config::new(sb.url().parse().expect("a URL"));
    config.auth_info.token = Some(token.to_string().into());
    config.auth_info.impersonate = impersonate.map(Into::into);
    kube::Client::try_from(config).expect("a client")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}}))
    .expect("a Pod")
}

/// The admin's SubjectAccessReview of whether the ServiceAccount
/// `default/app` (with its groups) may `verb` `resource` in `namespace`
/// (empty: cluster-wide): its answer.
async fn review(
    sb: &Sandbox,
    namespace: &str,
    verb: &str,
    resource: &str,
) -> SubjectAccessReviewStatus {
    let ask: SubjectAccessReview = serde_json::from_value(json!({"spec": {
        "user": SA_USER,
        "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"],
        "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": resource},
    }}))
    .expect("a SubjectAccessReview");
    Api::<SubjectAccessReview>::all(sb.client())
        .create(&PostParams::default(), &ask)
        .await
        .expect("answered")
        .status
        .expect("a status")
}

fn forbidden_message<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> String {
    let s = api_err(r);
    assert_eq!(
        (s.code, s.reason.as_str()),
        (403, "Forbidden"),
        "{}",
        s.message
    );
    s.message
}

/// Upstream: a RoleBinding grants its Role's rules in its namespace only;
/// anything else is 403 with the message naming the user, verb, resource
/// (with its subresource), API group and namespace or cluster scope; every
/// authenticated identity may use discovery (system:discovery) but not
/// other paths.
#[tokio::test]
async fn a_service_account_does_what_its_role_allows_and_gets_upstreams_403_for_the_rest() {
    let sb = sandbox().await;
    let app = app_client(&sb).await;
    grant(
        &sb,
        "default",
        "app-reads-pods",
        "pod-reader",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]),
    )
    .await;
    create(&Api::<Pod>::default_namespaced(sb.client()), &pod("p")).await;

    let pods = Api::<Pod>::default_namespaced(app.clone());
    assert_eq!(
        pods.list(&ListParams::default())
            .await
            .expect("listed")
            .items
            .len(),
        1
    );
    pods.get("p").await.expect("got");
    assert_eq!(
        forbidden_message(
            Api::<Pod>::namespaced(app.clone(), "kube-system")
                .list(&ListParams::default())
                .await
        ),
        format!(
            r#"pods is forbidden: User "{SA_USER}" cannot list resource "pods" in API group "" in the namespace "kube-system""#
        )
    );
    assert_eq!(
        forbidden_message(pods.create(&PostParams::default(), &pod("q")).await),
        format!(
            r#"pods is forbidden: User "{SA_USER}" cannot create resource "pods" in API group "" in the namespace "default""#
        )
    );
    assert_eq!(
        forbidden_message(pods.logs("p", &Default::default()).await),
        format!(
            r#"pods "p" is forbidden: User "{SA_USER}" cannot get resource "pods/log" in API group "" in the namespace "default""#
        )
    );
    assert_eq!(
        forbidden_message(
            Api::<Node>::all(app.clone())
                .list(&ListParams::default())
                .await
        ),
        format!(
            r#"nodes is forbidden: User "{SA_USER}" cannot list resource "nodes" in API group "" at the cluster scope"#
        )
    );
    app.list_api_groups().await.expect("discovery is allowed");
    app.list_core_api_resources("v1")
        .await
        .expect("discovery is allowed");
    let metrics = http::Request::get("/metrics")
        .body(vec![])
        .expect("a request");
    assert_eq!(
        forbidden_message(app.request_text(metrics).await),
        format!(r#"forbidden: User "{SA_USER}" cannot get path "/metrics""#)
    );
}

/// Upstream: resourceNames limit a rule to the named objects (a list
/// narrowed by `metadata.name` counts as that name); a ClusterRole grants
/// in one namespace through a RoleBinding and everywhere through a
/// ClusterRoleBinding; `*/sub` matches the subresource of any resource.
#[tokio::test]
async fn resource_names_and_cluster_roles_grant_as_upstream() {
    let sb = sandbox().await;
    let app = app_client(&sb).await;
    grant(&sb, "default", "one-config", "one-config", json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["allowed"], "verbs": ["get", "list"]}])).await;
    let configmaps = Api::<ConfigMap>::default_namespaced(sb.client());
    for name in ["allowed", "other"] {
        create(&configmaps, &named(name)).await;
    }
    let as_app = Api::<ConfigMap>::default_namespaced(app.clone());
    as_app.get("allowed").await.expect("the named ConfigMap");
    assert_eq!(
        forbidden_message(as_app.get("other").await),
        format!(
            r#"configmaps "other" is forbidden: User "{SA_USER}" cannot get resource "configmaps" in API group "" in the namespace "default""#
        )
    );
    as_app
        .list(&ListParams::default().fields("metadata.name=allowed"))
        .await
        .expect("a list narrowed to the named ConfigMap");
    forbidden_message(as_app.list(&ListParams::default()).await);

    create(
        &Api::<ClusterRole>::all(sb.client()),
        &role(
            "node-and-status-reader",
            json!([
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
                {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["get"]},
            ]),
        ),
    )
    .await;
    forbidden_message(
        Api::<Node>::all(app.clone())
            .list(&ListParams::default())
            .await,
    );
    create(
        &Api::<RoleBinding>::namespaced(sb.client(), "kube-system"),
        &binding("in-kube-system", "ClusterRole", "node-and-status-reader"),
    )
    .await;
    forbidden_message(
        Api::<Node>::all(app.clone())
            .list(&ListParams::default())
            .await,
    );
    create(
        &Api::<Pod>::namespaced(sb.client(), "kube-system"),
        &pod("s"),
    )
    .await;
    Api::<Pod>::namespaced(app.clone(), "kube-system")
        .get_status("s")
        .await
        .expect("a ClusterRole bound in kube-system grants pods/status there");
    forbidden_message(
        Api::<Pod>::namespaced(app.clone(), "kube-system")
            .get("s")
            .await,
    );
    create(&Api::<Pod>::default_namespaced(sb.client()), &pod("d")).await;
    assert_eq!(
        forbidden_message(
            Api::<Pod>::default_namespaced(app.clone())
                .get_status("d")
                .await
        ),
        format!(
            r#"pods "d" is forbidden: User "{SA_USER}" cannot get resource "pods/status" in API group "" in the namespace "default""#
        ),
        "a RoleBinding grants in its own namespace only"
    );
    create(
        &Api::<ClusterRoleBinding>::all(sb.client()),
        &binding("everywhere", "ClusterRole", "node-and-status-reader"),
    )
    .await;
    Api::<Node>::all(app)
        .list(&ListParams::default())
        .await
        .expect("a ClusterRoleBinding grants cluster-scoped lists");
}

/// Upstream: a binding whose role does not exist grants nothing, and the
/// refusal says so; once the role exists the same binding grants it.
#[tokio::test]
async fn a_binding_to_a_missing_role_grants_nothing_until_the_role_exists() {
    let sb = sandbox().await;
    let app = app_client(&sb).await;
    create(
        &Api::<RoleBinding>::default_namespaced(sb.client()),
        &binding("dangling", "Role", "later"),
    )
    .await;
    let pods = Api::<Pod>::default_namespaced(app);
    assert_eq!(
        forbidden_message(pods.list(&ListParams::default()).await),
        format!(
            r#"pods is forbidden: User "{SA_USER}" cannot list resource "pods" in API group "" in the namespace "default": RBAC: role.rbac.authorization.k8s.io "later" not found"#
        )
    );
    create(
        &Api::<Role>::default_namespaced(sb.client()),
        &role(
            "later",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
        ),
    )
    .await;
    pods.list(&ListParams::default())
        .await
        .expect("the role now exists");
}

/// Upstream: impersonating needs the `impersonate` verb on users (or the
/// ServiceAccount) and groups, which the admin has; an impersonated
/// ServiceAccount acts with exactly its own rights, its ServiceAccount
/// groups included.
#[tokio::test]
async fn only_those_allowed_to_impersonate_may_act_as_someone_else() {
    let sb = sandbox().await;
    let _app = app_client(&sb).await;
    let admin_as_app = client(&sb, sb.admin_token(), Some(SA_USER));
    assert_eq!(
        forbidden_message(
            Api::<Pod>::default_namespaced(admin_as_app)
                .list(&ListParams::default())
                .await
        ),
        format!(
            r#"pods is forbidden: User "{SA_USER}" cannot list resource "pods" in API group "" in the namespace "default""#
        )
    );
    let token = app_token(&sb);
    // An impersonated ServiceAccount has its ServiceAccount groups, so
    // bindings to them apply.
    create(
        &Api::<Role>::default_namespaced(sb.client()),
        &role(
            "config-reader",
            json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]),
        ),
    )
    .await;
    create(
        &Api::<RoleBinding>::default_namespaced(sb.client()),
        &binding_to(
            "namespace-accounts-read-config",
            "Role",
            "config-reader",
            json!({"kind": "Group", "name": "system:serviceaccounts:default", "apiGroup": "rbac.authorization.k8s.io"}),
        ),
    )
    .await;
    Api::<ConfigMap>::default_namespaced(client(&sb, sb.admin_token(), Some(SA_USER)))
        .list(&ListParams::default())
        .await
        .expect("the impersonated ServiceAccount is in system:serviceaccounts:default");
    let app_as_admin = client(&sb, &token, Some("kubernetes-admin"));
    assert_eq!(
        forbidden_message(
            Api::<Pod>::default_namespaced(app_as_admin)
                .list(&ListParams::default())
                .await
        ),
        format!(
            r#"users "kubernetes-admin" is forbidden: User "{SA_USER}" cannot impersonate resource "users" in API group "" at the cluster scope"#
        )
    );
}

/// Upstream's SubjectAccessReview: the admin asks whether another identity
/// may do something, and gets RBAC's answer without acting.
#[tokio::test]
async fn a_subject_access_review_answers_for_the_identity_it_names() {
    let sb = sandbox().await;
    let _app = app_client(&sb).await;
    grant(
        &sb,
        "default",
        "app-reads-pods",
        "pod-reader",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
    )
    .await;
    let status = review(&sb, "default", "list", "pods").await;
    assert!(status.allowed);
    assert_eq!(
        status.reason.as_deref(),
        Some(
            r#"RBAC: allowed by RoleBinding "app-reads-pods/default" of Role "pod-reader" to ServiceAccount "app/default""#
        )
    );
    assert!(!review(&sb, "default", "delete", "pods").await.allowed);
    let reviews = Api::<SubjectAccessReview>::all(sb.client());
    let status = api_err(reviews.list(&ListParams::default()).await);
    assert_eq!(status.code, 405, "reviews are create-only");
}

/// Upstream's SubjectAccessReview for a ClusterRoleBinding: a binding to
/// a ClusterRole that does not exist is named in the refusal's reason, and
/// the one that allows names itself, its ClusterRole and the subject.
#[tokio::test]
async fn a_subject_access_review_names_the_cluster_role_binding_that_allows_or_is_missing_its_role()
{
    let sb = sandbox().await;
    let _app = app_client(&sb).await;
    let cluster_bindings = Api::<ClusterRoleBinding>::all(sb.client());
    create(
        &cluster_bindings,
        &binding("dangling", "ClusterRole", "missing"),
    )
    .await;
    let no = review(&sb, "", "list", "nodes").await;
    assert_eq!(
        (no.allowed, no.reason.as_deref()),
        (
            false,
            Some(r#"RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found"#)
        )
    );
    create(
        &Api::<ClusterRole>::all(sb.client()),
        &role(
            "node-lister",
            json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]),
        ),
    )
    .await;
    create(
        &cluster_bindings,
        &binding("app-lists-nodes", "ClusterRole", "node-lister"),
    )
    .await;
    let yes = review(&sb, "", "list", "nodes").await;
    assert!(yes.allowed);
    assert_eq!(
        yes.reason.as_deref(),
        Some(
            r#"RBAC: allowed by ClusterRoleBinding "app-lists-nodes" of ClusterRole "node-lister" to ServiceAccount "app/default""#
        )
    );
}

/// Upstream's RequestInfo takes `fieldSelector=metadata.name=X` as the
/// request's name for list and watch only: a create or a deletecollection
/// carrying one is authorized without a name, so a rule limited by
/// resourceNames does not allow it.
#[tokio::test]
async fn a_field_selector_names_only_lists_and_watches_for_resource_names() {
    let sb = sandbox().await;
    let app = app_client(&sb).await;
    grant(&sb, "default", "x-only", "x-only", json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["x"], "verbs": ["create", "deletecollection", "list"]}])).await;
    let post =
        http::Request::post("/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name=x")
            .header("content-type", "application/json")
            .body(
                serde_json::to_vec(
                    &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
                )
                .expect("JSON"),
            )
            .expect("a request");
    forbidden_message(app.request_text(post).await);
    let as_app = Api::<ConfigMap>::default_namespaced(app.clone());
    forbidden_message(
        as_app
            .delete_collection(
                &Default::default(),
                &ListParams::default().fields("metadata.name=x"),
            )
            .await,
    );
    as_app
        .list(&ListParams::default().fields("metadata.name=x"))
        .await
        .expect("a list narrowed to x is allowed");
}

/// Upstream's RequestInfo: a request for the namespace `foo` itself
/// (`/api/v1/namespaces/foo`) is in the namespace `foo`, so a RoleBinding
/// there granting `get namespaces` lets its subject read that namespace,
/// and no other.
#[tokio::test]
async fn a_role_binding_in_a_namespace_grants_reading_that_namespace_itself() {
    let sb = sandbox().await;
    let app = app_client(&sb).await;
    for name in ["foo", "bar"] {
        create(&Api::<Namespace>::all(sb.client()), &named(name)).await;
    }
    grant(
        &sb,
        "foo",
        "ns-reader",
        "ns-reader",
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]),
    )
    .await;
    let namespaces = Api::<Namespace>::all(app);
    namespaces.get("foo").await.expect("its own namespace");
    assert_eq!(
        forbidden_message(namespaces.get("bar").await),
        format!(
            r#"namespaces "bar" is forbidden: User "{SA_USER}" cannot get resource "namespaces" in API group "" in the namespace "bar""#
        )
    );
}

/// Upstream's RBAC validation: a ClusterRoleBinding binds only a
/// ClusterRole, a RoleBinding a Role or ClusterRole of the RBAC group, and
/// a binding's roleRef cannot change (422 naming the field).
#[tokio::test]
async fn a_bindings_role_ref_is_validated_and_immutable_as_upstream() {
    let sb = sandbox().await;
    let invalid = |s: kube::core::Status| {
        assert_eq!(
            (s.code, s.reason.as_str()),
            (422, "Invalid"),
            "{}",
            s.message
        );
        s.message
    };
    let cluster_bindings = Api::<ClusterRoleBinding>::all(sb.client());
    let message = invalid(api_err(
        cluster_bindings
            .create(&PostParams::default(), &binding("to-a-role", "Role", "r"))
            .await,
    ));
    assert!(
        message.contains(
            r#"roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole""#
        ),
        "{message}"
    );
    let bindings = Api::<RoleBinding>::default_namespaced(sb.client());
    let message = invalid(api_err(
        bindings
            .create(
                &PostParams::default(),
                &binding("to-a-secret", "Secret", "r"),
            )
            .await,
    ));
    assert!(
        message.contains("roleRef.kind: Unsupported value"),
        "{message}"
    );
    create(&bindings, &binding("changing", "Role", "r")).await;
    let mut changed = bindings.get("changing").await.expect("the binding");
    changed.role_ref.kind = "ClusterRole".into();
    let message = invalid(api_err(
        bindings
            .replace("changing", &PostParams::default(), &changed)
            .await,
    ));
    assert!(message.contains("roleRef: Invalid value"), "{message}");
    assert!(message.contains("cannot change roleRef"), "{message}");
}
