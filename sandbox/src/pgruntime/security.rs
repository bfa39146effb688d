//! A container's security context, as far as the sandbox can honour it.
//!
//! `runAsNonRoot` is checked as the kubelet checks it before creating a
//! container (`verifyRunAsNonRoot`): with the effective context (the
//! container's fields over the pod's), an explicit `runAsUser: 0` breaks
//! the policy, and without a `runAsUser` the image's user decides (the
//! operator image's is 65532, PostgreSQL's is root); a container that breaks
//! it does not start (`CreateContainerConfigError`, upstream's message).
//!
//! Every process runs as the runtime's unprivileged user (`postgres` when
//! the sandbox is root, else the sandbox's own user), whatever `runAsUser`
//! says, so it is never root on the host: `readOnlyRootFilesystem` (the
//! process can write only its volumes, its working directory and what the
//! host lets any user write) and dropped capabilities (an unprivileged
//! process has none) are accepted as met. One exception of form: when the
//! sandbox is not root, a container in a mount namespace of its own runs
//! as uid 0 of its own user namespace (mapped to the sandbox's user), with
//! its bounding, inheritable and ambient capability sets cleared before the
//! program starts, so it has no capability there either. `allowPrivilegeEscalation: false` becomes
//! `no_new_privs` for a container run in a mount namespace of its own (see
//! [`super::mount_ns`]); seccomp and AppArmor profiles are not applied.

use k8s_openapi::api::core::v1::{Container, Pod};

/// The pod as the kubelet names it in messages (`format.Pod`):
/// `name_namespace(uid)`.
fn format_pod(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

/// Checks `runAsNonRoot` against the effective `runAsUser`, else against
/// the image's user (`None`: unknown, as for a non-numeric user the kubelet
/// cannot verify, which it lets through when no name is given either).
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_uid: Option<i64>,
) -> Result<(), String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(pod_sc.and_then(|s| s.run_as_non_root));
    if non_root != Some(true) {
        return Ok(());
    }
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let breaks = match (run_as_user, image_uid) {
        (Some(0), _) => Some("container's runAsUser breaks non-root policy"),
        (Some(_), _) => None,
        (None, Some(0)) => Some("container has runAsNonRoot and image will run as root"),
        (None, _) => None,
    };
    match breaks {
        Some(why) => Err(format!(
            "{why} (pod: {:?}, container: {})",
            format_pod(pod),
            container.name
        )),
        None => Ok(()),
    }
}

/// Whether the container asks for `no_new_privs`.
pub fn no_new_privileges(container: &Container) -> bool {
    container
        .security_context
        .as_ref()
        .and_then(|s| s.allow_privilege_escalation)
        == Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(pod_sc: serde_json::Value, container_sc: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "op", "namespace": "pgdb-system", "uid": "u1"},
            "spec": {"securityContext": pod_sc,
                "containers": [{"name": "operator", "securityContext": container_sc}]}
        }))
        .expect("a pod");
        let container = pod.spec.as_ref().expect("a spec").containers[0].clone();
        (pod, container)
    }

    #[test]
    fn run_as_non_root_with_run_as_user_zero_is_refused_with_the_kubelet_s_message() {
        let (p, c) = pod(
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({"runAsUser": 0}),
        );
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(65532)),
            Err(
                "container's runAsUser breaks non-root policy (pod: \"op_pgdb-system(u1)\", container: operator)"
                    .to_string()
            )
        );
    }

    #[test]
    fn without_run_as_user_the_image_s_user_decides() {
        let (p, c) = pod(
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({}),
        );
        assert_eq!(verify_run_as_non_root(&p, &c, Some(65532)), Ok(()));
        let refused = verify_run_as_non_root(&p, &c, Some(0)).expect_err("a root image");
        assert!(
            refused.starts_with("container has runAsNonRoot and image will run as root"),
            "{refused}"
        );
        assert_eq!(verify_run_as_non_root(&p, &c, None), Ok(()));
        let (p, c) = pod(
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({"runAsNonRoot": false}),
        );
        assert_eq!(verify_run_as_non_root(&p, &c, Some(0)), Ok(()));
        let (p, c) = pod(
            serde_json::json!({"runAsNonRoot": true, "runAsUser": 999}),
            serde_json::json!({}),
        );
        assert_eq!(verify_run_as_non_root(&p, &c, Some(0)), Ok(()));
    }
}
