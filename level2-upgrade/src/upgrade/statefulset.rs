//! What an upgrade changes in the StatefulSet Level 1 builds, and the pods
//! a reverted StatefulSet leaves behind.
//!
//! Level 1 runs whatever `spec.version` asks for. An upgrade that is rolled
//! back, or a major upgrade that must keep the old server while it
//! migrates, pins the pod template to another image and version instead
//! ([`run_version`]). After such a revert the StatefulSet controller waits
//! for ever on a pod of the abandoned revision that never became ready;
//! [`stuck_pods`] names them so they can be deleted.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use level1_install::api::CONTAINER;
use shared::capability::Observed;
use shared::ext::{PodExt, StatefulSetExt};
use shared::keys::VERSION_ANNOTATION;

/// Makes a StatefulSet Level 1 built run `image`, recorded as `version`
/// (what a rollback, or a major upgrade's pin, changes).
pub fn run_version(sts: &mut StatefulSet, image: &str, version: &str) {
    let Some(template) = sts.spec.as_mut().map(|s| &mut s.template) else {
        return;
    };
    if let Some(container) = template
        .spec
        .as_mut()
        .and_then(|p| p.containers.iter_mut().find(|c| c.name == CONTAINER))
    {
        container.image = Some(image.to_string());
    }
    sts.set_template_annotation(VERSION_ANNOTATION, version);
}

/// The image of the StatefulSet's PostgreSQL container.
pub fn image_of(sts: &StatefulSet) -> Option<String> {
    sts.container_image(CONTAINER)
}

/// Pods a StatefulSet will never replace after its template is reverted:
/// on another revision than its update revision, not ready, not already
/// being deleted. A StatefulSet waits for such a pod for ever.
pub fn stuck_pods(observed: &Observed, sts: &StatefulSet) -> Vec<String> {
    let update_revision = sts.status.as_ref().and_then(|s| s.update_revision.clone());
    observed
        .all::<Pod>()
        .into_iter()
        .filter(|pod| {
            let revision = pod.revision();
            revision.is_some()
                && revision != update_revision.as_deref()
                && !pod.is_ready()
                && !pod.is_deleting()
        })
        .map(|pod| pod.name_any())
        .collect()
}
