//! What the levels read again and again from the objects they observe.
//!
//! The Kubernetes types are deep trees of `Option`s: a StatefulSet's
//! template annotations, a claim's storage request, a pod's readiness. These
//! extension traits read each of them in one place, and say whether a
//! StatefulSet has rolled out as a typed verdict with the reason it has not
//! ([`Rollout`]), so every level asks the same question the same way. They
//! only read (and, for a pod template's annotations, set) fields; deciding
//! what a reading means is the capabilities' business.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;

use crate::conditions::ConditionStatus;
use crate::keys::{CONTROLLER_REVISION_LABEL, JOB_NAME_LABEL};

/// Whether a StatefulSet runs its current template on every replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// The controller saw the latest spec and every replica runs its template.
    Done,
    /// Not yet, and why (for a condition message).
    Pending(String),
}

impl Rollout {
    /// Whether the rollout is done.
    pub fn is_done(&self) -> bool {
        matches!(self, Rollout::Done)
    }
}

/// Readings of a StatefulSet.
pub trait StatefulSetExt {
    /// `spec.replicas`, 1 when unset (the Kubernetes default).
    fn replicas(&self) -> i32;
    /// Replicas whose pods pass their readiness probe.
    fn ready_replicas(&self) -> i32;
    /// Replicas running the current template.
    fn updated_replicas(&self) -> i32;
    /// Whether every replica runs the current template, and why not.
    fn rollout(&self) -> Rollout;
    /// An annotation of the pod template.
    fn template_annotation(&self, key: &str) -> Option<&str>;
    /// Sets an annotation of the pod template, when the template has
    /// annotations (those the levels build always do).
    fn set_template_annotation(&mut self, key: &str, value: &str);
    /// The image of the pod template's container named `container`.
    fn container_image(&self, container: &str) -> Option<String>;
    /// The storage request of the volume claim template named `template`.
    fn claim_template_request(&self, template: &str) -> Option<String>;
    /// The PVCs the pod template mounts through its own volumes (not
    /// through claim templates).
    fn template_claims(&self) -> Vec<String>;
}

impl StatefulSetExt for StatefulSet {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn ready_replicas(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    }

    fn updated_replicas(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.updated_replicas)
            .unwrap_or(0)
    }

    fn rollout(&self) -> Rollout {
        let status = self.status.clone().unwrap_or_default();
        let replicas = self.replicas();
        let updated = self.updated_replicas();
        if status.observed_generation < self.metadata.generation {
            return Rollout::Pending(format!(
                "{updated}/{replicas} pods run the current template (the StatefulSet controller has not seen generation {} yet)",
                self.metadata.generation.unwrap_or_default()
            ));
        }
        if updated < replicas {
            return Rollout::Pending(format!(
                "{updated}/{replicas} pods run the current template"
            ));
        }
        if status.update_revision.is_some() && status.current_revision != status.update_revision {
            return Rollout::Pending(format!(
                "{updated}/{replicas} pods run the current template (revision {} replaces {})",
                status.update_revision.unwrap_or_default(),
                status.current_revision.unwrap_or_default()
            ));
        }
        Rollout::Done
    }

    fn template_annotation(&self, key: &str) -> Option<&str> {
        self.spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    fn set_template_annotation(&mut self, key: &str, value: &str) {
        if let Some(annotations) = self
            .spec
            .as_mut()
            .and_then(|s| s.template.metadata.as_mut())
            .and_then(|m| m.annotations.as_mut())
        {
            annotations.insert(key.to_string(), value.to_string());
        }
    }

    fn container_image(&self, container: &str) -> Option<String> {
        let containers = &self.spec.as_ref()?.template.spec.as_ref()?.containers;
        containers
            .iter()
            .find(|c| c.name == container)?
            .image
            .clone()
    }

    fn claim_template_request(&self, template: &str) -> Option<String> {
        self.spec
            .as_ref()?
            .volume_claim_templates
            .as_ref()?
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some(template))?
            .storage_request()
    }

    fn template_claims(&self) -> Vec<String> {
        self.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref()?.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|v| Some(v.persistent_volume_claim.as_ref()?.claim_name.clone()))
            .collect()
    }
}

/// Readings of a PersistentVolumeClaim.
pub trait PvcExt {
    /// `spec.resources.requests.storage`, as written.
    fn storage_request(&self) -> Option<String>;
    /// `spec.storageClassName`.
    fn storage_class(&self) -> Option<String>;
    /// Whether it is being deleted.
    fn is_deleting(&self) -> bool;
}

impl PvcExt for PersistentVolumeClaim {
    fn storage_request(&self) -> Option<String> {
        self.spec
            .as_ref()?
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage")
            .map(|q| q.0.clone())
    }

    fn storage_class(&self) -> Option<String> {
        self.spec.as_ref()?.storage_class_name.clone()
    }

    fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

/// Readings of a Pod.
pub trait PodExt {
    /// `status.phase` ("Pending", "Running", "Succeeded", "Failed").
    fn phase(&self) -> Option<&str>;
    /// Whether its Ready condition is True.
    fn is_ready(&self) -> bool;
    /// Whether it is Running with a container running.
    fn has_running_container(&self) -> bool;
    /// Whether it has finished (Succeeded or Failed).
    fn is_finished(&self) -> bool;
    /// Whether it is being deleted.
    fn is_deleting(&self) -> bool;
    /// The StatefulSet revision it runs (its controller-revision-hash label).
    fn revision(&self) -> Option<&str>;
    /// The Job it belongs to (its job-name label).
    fn job(&self) -> Option<&str>;
    /// Whether an owner of kind `kind` named `name` owns it.
    fn is_owned_by(&self, kind: &str, name: &str) -> bool;
}

impl PodExt for Pod {
    fn phase(&self) -> Option<&str> {
        self.status.as_ref()?.phase.as_deref()
    }

    fn is_ready(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "Ready" && ConditionStatus::parse(&c.status) == ConditionStatus::True
                })
            })
    }

    fn has_running_container(&self) -> bool {
        self.phase() == Some("Running")
            && self
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                })
    }

    fn is_finished(&self) -> bool {
        matches!(self.phase(), Some("Succeeded" | "Failed"))
    }

    fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    fn revision(&self) -> Option<&str> {
        self.labels()
            .get(CONTROLLER_REVISION_LABEL)
            .map(String::as_str)
    }

    fn job(&self) -> Option<&str> {
        self.labels().get(JOB_NAME_LABEL).map(String::as_str)
    }

    fn is_owned_by(&self, kind: &str, name: &str) -> bool {
        self.owner_references()
            .iter()
            .any(|o| o.kind == kind && o.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};

    fn sts(
        generation: i64,
        observed: i64,
        updated: i32,
        current: &str,
        update: &str,
    ) -> StatefulSet {
        let mut sts = StatefulSet {
            spec: Some(StatefulSetSpec {
                replicas: Some(2),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(observed),
                updated_replicas: Some(updated),
                current_revision: Some(current.into()),
                update_revision: Some(update.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        sts.metadata.generation = Some(generation);
        sts
    }

    #[test]
    fn a_rollout_is_done_when_every_replica_runs_the_observed_template() {
        assert_eq!(sts(3, 3, 2, "r2", "r2").rollout(), Rollout::Done);
    }

    #[test]
    fn a_rollout_pending_says_why() {
        let unseen = sts(4, 3, 2, "r2", "r2").rollout();
        assert!(matches!(&unseen, Rollout::Pending(why) if why.contains("generation 4")));
        let partial = sts(3, 3, 1, "r2", "r2").rollout();
        assert_eq!(
            partial,
            Rollout::Pending("1/2 pods run the current template".into())
        );
        let moving = sts(3, 3, 2, "r1", "r2").rollout();
        assert!(matches!(&moving, Rollout::Pending(why) if why.contains("r2 replaces r1")));
    }
}
