//! Level 5, Auto Pilot: Level 4 plus the [`autopilot`] module.
//!
//! A level is the level below it plus its own capabilities: level N-1's
//! list, unchanged and first, then level N's. Level 5 keeps a database
//! available without a human: `spec.instances` runs one primary and
//! streaming replicas ([`autopilot::instances`]); a lost primary is fenced
//! and replaced by the replica with the most WAL, a planned move to
//! `spec.primary` loses nothing, and instances that cannot follow are
//! rebuilt ([`autopilot::failover`]), every step decided from what the
//! cluster and the servers say ([`autopilot::topology`]). And it acts on
//! what it measures: replicas scaled on read load, volumes grown before
//! they fill, parameters sized to the resources, a configuration that does
//! not run rolled back, and deviations from a learned baseline reported,
//! each decision explained in status and Events.

pub mod autopilot;

use shared::capability::{Capability, Level};

/// Level 5's capabilities: Level 4's, then the autopilot's.
pub fn capabilities() -> Vec<Box<dyn Capability>> {
    let mut capabilities = level4_insights::capabilities();
    capabilities.push(Box::new(autopilot::Autopilot));
    capabilities.push(Box::new(autopilot::autoscaling::Autoscaler));
    capabilities.push(Box::new(autopilot::autogrow::AutoGrow));
    capabilities.push(Box::new(autopilot::tuning::AutoTuning));
    capabilities.push(Box::new(autopilot::guard::ConfigurationGuard));
    capabilities.push(Box::new(autopilot::anomaly::AnomalyDetector));
    capabilities
}

/// Level 5.
pub fn level() -> Level {
    let level4 = level4_insights::level();
    Level {
        number: 5,
        name: "level5-autopilot",
        capabilities: capabilities(),
        companions: level4.companions,
        insights: level4.insights,
        effective_spec: autopilot::effective::effective_spec,
    }
}
