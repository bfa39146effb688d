//! Deep insights: what the operator tells people and monitoring systems
//! about itself and each database.
//!
//! - [`collector`]: a companion that measures every database on an
//!   interval (SQL and the kubelet's volume stats) into the shared
//!   readings;
//! - [`series`]: the readings as Prometheus series at `/metrics`;
//! - [`thresholds`]: where a figure becomes a symptom, one definition used
//!   by the conditions and by the alerts;
//! - [`symptoms`]: the symptoms as conditions, Events on transitions and
//!   `status.insights`;
//! - [`monitor`]: a ServiceMonitor per database, when that API is served;
//! - [`monitoring`]: the operator-wide PrometheusRule and Grafana
//!   dashboard.

pub mod collector;
pub mod monitor;
pub mod monitoring;
pub mod series;
pub mod symptoms;
pub mod thresholds;
