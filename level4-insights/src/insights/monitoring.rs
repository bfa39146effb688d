//! The operator-wide monitoring objects: one PrometheusRule of
//! symptom-based alerts and the Grafana dashboard's ConfigMap, in the
//! operator's namespace. (Stub: H4 builds it.)

use shared::capability::{Companion, CompanionContext, CompanionRun};

/// The monitoring companion.
pub fn companion() -> Companion {
    Companion {
        name: "monitoring",
        run,
    }
}

fn run(context: CompanionContext) -> CompanionRun {
    Box::pin(async move {
        context.shutdown.cancelled().await;
        Ok(())
    })
}
