//! Level 4, Deep Insights: Level 3 plus the [`insights`] module.
//!
//! A level is the level below it plus its own capabilities: level N-1's
//! list, unchanged and first, then level N's. Level 4 tells people and
//! monitoring systems how the operator and each database are doing: the
//! operator's own metrics and every database's health figures at
//! `/metrics` ([`insights::series`], measured by [`insights::collector`]),
//! a ServiceMonitor per database ([`insights::monitor`]), symptom-based
//! alerts with runbooks and a Grafana dashboard ([`insights::monitoring`]),
//! and the same symptoms as conditions, Events and `status.insights` for
//! users without Prometheus ([`insights::symptoms`]).

pub mod insights;

use shared::capability::{Capability, Insights, Level};

/// Level 4's capabilities: Level 3's, then the insights'.
pub fn capabilities() -> Vec<Box<dyn Capability>> {
    let mut capabilities = level3_lifecycle::capabilities();
    capabilities.push(Box::new(insights::symptoms::Symptoms));
    capabilities.push(Box::new(insights::monitor::Monitor));
    capabilities
}

/// Level 4.
pub fn level() -> Level {
    let mut companions = level3_lifecycle::level().companions;
    companions.push(insights::collector::companion());
    companions.push(insights::monitoring::companion());
    Level {
        number: 4,
        name: "level4-insights",
        capabilities: capabilities(),
        companions,
        insights: Some(Insights {
            database_series: insights::series::database_series,
        }),
        effective_spec: shared::capability::as_written,
    }
}
