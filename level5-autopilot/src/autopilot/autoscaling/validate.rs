//! `spec.autoscaling`'s bad input, each refused naming the field: bounds
//! outside 1 to [`MAX_INSTANCES`] or crossed, a target or window out of
//! range, and bounds that would let a scale-in break another section
//! (synchronous replication waiting for more replicas than `minInstances`
//! leaves, a `spec.primary` the scale-in would remove).

use shared::api::PostgresDB;
use shared::capability::SpecProblem;
use shared::ha::MAX_INSTANCES;

use crate::autopilot::names::ordinal_of;

/// The reason of every refusal here.
pub const INVALID_AUTOSCALING: &str = "InvalidAutoscaling";

/// What is wrong with `spec.autoscaling` (nothing without it).
pub fn problems(db: &PostgresDB) -> Vec<SpecProblem> {
    let Some(spec) = db.spec.autoscaling.as_ref() else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let mut refuse = |field: &str, message: String| {
        problems.push(SpecProblem::new(
            format!("spec.autoscaling.{field}"),
            INVALID_AUTOSCALING,
            message,
        ));
    };
    for (field, value) in [
        ("minInstances", spec.min_instances),
        ("maxInstances", spec.max_instances),
    ] {
        if !(1..=MAX_INSTANCES).contains(&value) {
            refuse(
                field,
                format!("{field} is {value}: a database runs 1 to {MAX_INSTANCES} instances"),
            );
        }
    }
    if spec.min_instances > spec.max_instances {
        refuse(
            "minInstances",
            format!(
                "minInstances {} is above maxInstances {}: set minInstances at most maxInstances",
                spec.min_instances, spec.max_instances
            ),
        );
    }
    if !(1..=100).contains(&spec.target_connections_percent) {
        refuse(
            "targetConnectionsPercent",
            format!(
                "targetConnectionsPercent is {}: a target is 1 to 100 percent of the usable connections",
                spec.target_connections_percent
            ),
        );
    }
    if spec.scale_out_stabilization_seconds > 3600 {
        refuse(
            "scaleOutStabilizationSeconds",
            format!(
                "scaleOutStabilizationSeconds is {}: at most 3600",
                spec.scale_out_stabilization_seconds
            ),
        );
    }
    if spec.scale_in_stabilization_seconds > 86_400 {
        refuse(
            "scaleInStabilizationSeconds",
            format!(
                "scaleInStabilizationSeconds is {}: at most 86400",
                spec.scale_in_stabilization_seconds
            ),
        );
    }
    if let Some(replication) = db.spec.replication.as_ref().filter(|r| r.synchronous) {
        let needed = i64::from(replication.synchronous_replicas) + 1;
        if i64::from(spec.min_instances) < needed {
            refuse(
                "minInstances",
                format!(
                    "synchronous replication waits for {} replica(s), so a scale-in to minInstances {} would make commits wait for ever: \
                     set minInstances to at least {needed}",
                    replication.synchronous_replicas, spec.min_instances
                ),
            );
        }
    }
    if let Some(primary) = db.spec.primary.as_deref()
        && let Some(ordinal) = ordinal_of(db, primary)
        && i64::from(ordinal) >= i64::from(spec.min_instances)
    {
        refuse(
            "minInstances",
            format!(
                "spec.primary is {primary}, which a scale-in to minInstances {} would remove: \
                 set minInstances to at least {} or name a lower instance",
                spec.min_instances,
                i64::from(ordinal) + 1
            ),
        );
    }
    problems
}
