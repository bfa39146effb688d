//! `kubectl auth can-i`, `kubectl auth whoami`, `kubectl create token`
//! and `--as`: kubectl asking the sandbox's authorizer, as learners check
//! what the operator's ServiceAccount may do.

use super::cluster;

const RBAC: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: default
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
  namespace: default
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: app-reads-pods
  namespace: default
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-reader
subjects:
- kind: ServiceAccount
  name: app
  namespace: default
"#;

const AS_APP: &str = "--as=system:serviceaccount:default:app";

/// Upstream: `kubectl auth can-i VERB RESOURCE --as USER` prints `yes`
/// (exit 0) or `no` (exit 1) from a SelfSubjectAccessReview sent while
/// impersonating; `can-i --list` lists the rules bound to it
/// (SelfSubjectRulesReview); a command run `--as` a ServiceAccount gets the
/// 403 its rights give; `kubectl auth whoami` and `kubectl create token`
/// work.
#[tokio::test]
async fn auth_can_i_as_a_service_account_answers_from_its_role_bindings() {
    let k = cluster().await;
    let manifest = k.file("rbac.yaml", RBAC);
    k.ok(&["apply", "-f", &manifest]).await;

    let yes = k
        .run(&["auth", "can-i", "list", "pods", AS_APP, "-n", "default"])
        .await;
    assert_eq!(
        (yes.code, yes.stdout.trim()),
        (Some(0), "yes"),
        "{}",
        yes.stderr
    );
    let no = k
        .run(&["auth", "can-i", "delete", "pods", AS_APP, "-n", "default"])
        .await;
    assert_eq!(
        (no.code, no.stdout.trim()),
        (Some(1), "no"),
        "{}",
        no.stderr
    );
    let elsewhere = k
        .run(&["auth", "can-i", "list", "pods", AS_APP, "-n", "kube-system"])
        .await;
    assert_eq!(elsewhere.stdout.trim(), "no", "{}", elsewhere.stderr);
    let admin = k.run(&["auth", "can-i", "delete", "nodes"]).await;
    assert_eq!(admin.stdout.trim(), "yes", "{}", admin.stderr);

    k.ok(&["get", "pods", AS_APP, "-n", "default"]).await;
    let refused = k.run(&["get", "configmaps", AS_APP, "-n", "default"]).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains(
            r#"configmaps is forbidden: User "system:serviceaccount:default:app" cannot list resource "configmaps" in API group "" in the namespace "default""#
        ),
        "{}",
        refused.stderr
    );

    let list = k
        .ok(&["auth", "can-i", "--list", AS_APP, "-n", "default"])
        .await;
    let pods_row = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some("pods"))
        .unwrap_or_else(|| panic!("no pods row in:\n{list}"));
    assert!(pods_row.ends_with("[get list]"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.contains("selfsubjectaccessreviews.authorization.k8s.io")),
        "system:basic-user's rules are listed too:\n{list}"
    );

    let whoami = k
        .ok(&[
            "auth",
            "whoami",
            AS_APP,
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .await;
    assert_eq!(whoami, "system:serviceaccount:default:app");
    let token = k.ok(&["create", "token", "app", "-n", "default"]).await;
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
}
