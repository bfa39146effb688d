//! A ServiceMonitor per database, when `monitoring.coreos.com/v1` is
//! served. (Stub: H3 builds it.)

use shared::capability::Capability;

/// The monitor capability.
pub struct Monitor;

impl Capability for Monitor {
    fn name(&self) -> &'static str {
        "monitor"
    }
}
