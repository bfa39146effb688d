//! Anomaly detection (`spec.anomalyDetection`): a baseline learned of each
//! database from the operator's own measurements, and the `Anomaly`
//! condition when a metric leaves its expected range for long enough.
//!
//! (Skeleton: the model is to be written; see the Level 5 part 2 brief.)

use shared::capability::Capability;

/// Anomaly detection.
pub struct AnomalyDetector;

impl Capability for AnomalyDetector {
    fn name(&self) -> &'static str {
        "anomaly-detection"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["anomalyDetection"]
    }
}
